"""Deployment: a trained BiNealNet run on real low-bit kernels, exported at its true size.

* ``binary`` (BiNealNet): every stage conv is the packed XOR/popcount conv of ``bitconv.cpp``
  (built on first use, cached outside the repository); activations stay NHWC float between
  convs, the activation quantizer's b0/PReLU/b1 run inside the packing (float, before the sign),
  BN is folded into the per-output-channel scale beta*gamma*bn_w/std and bias, the Bi-Real
  residuals are added in the conv's epilogue. The stem conv stays float, as trained: fp32, or bf16 where the
  CPU computes it natively (``stem``, see ``STEM_PRECISIONS``); its max-pool runs in the kernels, NHWC.
* ``int8``: real INT8 convs (``torch.ops.quantized``, x86 backend): per-channel int8 weights are
  the fake-quant integers, BN folded into their scales; activations quint8 with the trained
  per-tensor scales. A conv followed by BN+ReLU writes its output straight at the next conv's input
  scale (the fake-quant model quantizes exactly there); a conv whose output is added to a residual
  is requantized at a scale observed on calibration images (``calib``), the one extra rounding.
* ``fp32``: the same graph with BN folded into float convs.

``deploy(model)`` returns a runnable ``nn.Module``; ``save``/``load`` write and read one file of plain
tensors (packed 1-bit weights as 64-bit words, INT8 weights as int8), loadable with
``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

from ._ext import KernelUnavailable, available
from .model import (FORMAT, STEM_PRECISIONS, DeployedBackbone, DeployedClassifier, DeployError, deploy,
                    deploy_backbone, load, save, stem_precision, unsupported_reason)

__all__ = ["KernelUnavailable", "available", "FORMAT", "STEM_PRECISIONS", "DeployedBackbone", "DeployedClassifier",
           "DeployError", "deploy", "deploy_backbone", "load", "save", "stem_precision", "unsupported_reason"]
