"""The named backbones every task compares, the seed's ablation variants, and the one function that
turns a name into BiNealNet keyword arguments. Plain data: importing it costs nothing."""
from __future__ import annotations

#: named presets: the three backbones every task compares (ImageNet stem by default)
PRESETS = {
    # the seed's best: binary, 1.5x, 3x3 downsample convs, PReLU slope clipped at >= 0
    "binealnet": dict(precision="binary", width=1.5, downsample_kernel=3, clip_slope=True),
    "int8": dict(precision="int8", width=1.0, downsample_kernel=1),
    "fp32": dict(precision="fp32", width=1.0, downsample_kernel=1),
}

#: the seed's ablation rows as overrides of one backbone (width 1.5), cumulative as in the seed's
#: log; the accuracies the public reproduction reported are kept where tables are made (bench/reference.py)
VARIANTS = {
    "fp32": dict(precision="fp32", downsample_kernel=1, clip_slope=False),
    "binary-weights": dict(precision="binary-weights", downsample_kernel=1, clip_slope=False),
    "binary-activations": dict(precision="binary-activations", downsample_kernel=1, clip_slope=False),
    "binary": dict(precision="binary", downsample_kernel=1, clip_slope=False),
    "binary-ds3": dict(precision="binary", downsample_kernel=3, clip_slope=False),
    "binary-ds3-clip": dict(precision="binary", downsample_kernel=3, clip_slope=True),
    "binary-ds3-clip-scales-after": dict(precision="binary", downsample_kernel=3, clip_slope=True, scales_after=True),
    "binary-ds3-clip-lr0.1": dict(precision="binary", downsample_kernel=3, clip_slope=True, aux_lr_mult=0.1),
}


def preset_kwargs(name: str, variant: str | None = None, **overrides) -> dict:
    """BiNealNet keyword arguments of preset ``name`` with seed ``variant`` and ``overrides`` (None
    values ignored) applied; the one place that validates a backbone or variant name."""
    if name not in PRESETS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(PRESETS)}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return {**PRESETS[name], **(VARIANTS[variant] if variant else {}),
            **{k: v for k, v in overrides.items() if v is not None}}


def precision_of(name: str) -> str:
    """The precision of preset ``name`` ('binary', 'int8', 'fp32'): tables find BNN and INT8 rows by it."""
    return PRESETS[name]["precision"]
