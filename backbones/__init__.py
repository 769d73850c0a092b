"""Quantizers, the quantized conv layer and BiNealNet. ``import backbones`` needs no OpenMMLab and
loads no torch until a module is asked for (the presets, the precision vocabulary and the errors are
plain data, so `bench --help` stays fast); ``backbones.openmmlab`` registers BiNealNet into the
MMDetection / MMSegmentation registries."""
from __future__ import annotations

import importlib

from .errors import BenchError, DataError  # noqa: F401
from .precision import KINDS, PRECISIONS  # noqa: F401
from .presets import PRESETS, VARIANTS, precision_of, preset_kwargs  # noqa: F401

#: name -> the submodule that defines it, imported at first use (module __getattr__, PEP 562)
_LAZY = {"BiNealNet": "binealnet", "BasicBlock": "binealnet", "QConv2d": "layers", "QConvTranspose2d": "layers",
         "Quantizer": "quantizers", "FloatQuantizer": "quantizers", "Int8Quantizer": "quantizers",
         "BinaryWeightQuantizer": "quantizers", "BinaryActivationQuantizer": "quantizers", "sign": "quantizers"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(name: str, variant: str | None = None, **overrides):
    """Build a preset backbone by name (``binealnet``, ``int8``, ``fp32``) with keyword overrides."""
    from .binealnet import BiNealNet
    return BiNealNet(**preset_kwargs(name, variant, **overrides))


__all__ = ["BiNealNet", "BasicBlock", "QConv2d", "QConvTranspose2d", "Quantizer", "FloatQuantizer", "Int8Quantizer",
           "BinaryWeightQuantizer", "BinaryActivationQuantizer", "sign", "build", "PRESETS", "PRECISIONS", "KINDS",
           "VARIANTS", "preset_kwargs", "precision_of", "BenchError", "DataError"]
