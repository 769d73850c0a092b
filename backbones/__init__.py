"""Quantizers, the quantized conv layer and BiNealNet. ``import backbones`` needs no OpenMMLab;
``backbones.openmmlab`` registers BiNealNet into the MMDetection / MMSegmentation registries."""
from __future__ import annotations

from .binealnet import PRECISIONS, BasicBlock, BiNealNet
from .layers import QConv2d, QConvTranspose2d
from .quantizers import (BinaryActivationQuantizer, BinaryWeightQuantizer, FloatQuantizer, Int8Quantizer,
                         Quantizer, sign)

#: named presets: the three backbones every task compares (ImageNet stem by default)
PRESETS = {
    # the seed's best: binary, 1.5x, 3x3 downsample convs, PReLU slope clipped at >= 0
    "binealnet": dict(precision="binary", width=1.5, downsample_kernel=3, clip_slope=True),
    "int8": dict(precision="int8", width=1.0, downsample_kernel=1),
    "fp32": dict(precision="fp32", width=1.0, downsample_kernel=1),
}

#: the seed's ablation rows as overrides of one backbone (width 1.5), with the accuracy the public
#: CIFAR-10 reproduction reported (400 epochs); cumulative as in the seed's log
SEED_VARIANTS = {
    "fp32": (dict(precision="fp32", downsample_kernel=1, clip_slope=False), 0.9479),
    "binary-weights": (dict(precision="binary-weights", downsample_kernel=1, clip_slope=False), 0.9485),
    "binary-activations": (dict(precision="binary-activations", downsample_kernel=1, clip_slope=False), 0.922),
    "binary": (dict(precision="binary", downsample_kernel=1, clip_slope=False), 0.9112),
    "binary-ds3": (dict(precision="binary", downsample_kernel=3, clip_slope=False), 0.9214),
    "binary-ds3-clip": (dict(precision="binary", downsample_kernel=3, clip_slope=True), 0.9235),
    "binary-ds3-clip-scales-after": (dict(precision="binary", downsample_kernel=3, clip_slope=True,
                                          scales_after=True), 0.9076),
    "binary-ds3-clip-lr0.1": (dict(precision="binary", downsample_kernel=3, clip_slope=True,
                                   aux_lr_mult=0.1), 0.9102),
}


def build(name: str, **overrides) -> BiNealNet:
    """Build a preset backbone by name (``binealnet``, ``int8``, ``fp32``) with keyword overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(PRESETS)}")
    return BiNealNet(**{**PRESETS[name], **overrides})


__all__ = ["BiNealNet", "BasicBlock", "QConv2d", "QConvTranspose2d", "Quantizer", "FloatQuantizer", "Int8Quantizer",
           "BinaryWeightQuantizer", "BinaryActivationQuantizer", "sign", "build", "PRESETS", "PRECISIONS",
           "SEED_VARIANTS"]
