"""What every task shares, in one place: the backbone config (preset + variant + width), the
optimizer wrapper (AMP, parameter groups), default hooks, environment. Task files call these and
keep only what is truly theirs (data, model head, metric)."""
from __future__ import annotations

import math

import torch

import backbones

from .base import BenchError

def check_width(width):
    if width is not None and not (isinstance(width, (int, float)) and math.isfinite(width) and 0 < width <= 16):
        raise BenchError(f"--width must be a number in (0, 16]; got {width!r}")
    return width


def backbone_kwargs(task, backbone: str, variant=None, width=None, **extra) -> dict:
    """BiNealNet keyword arguments: the preset, the seed variant, the width (the user's, else the
    task's default for this preset, else the preset's own), then ``extra`` (stem, out_indices...)."""
    check_width(width)
    width = width if width is not None else task.DEFAULT_WIDTH.get(backbone)
    try:
        return backbones.preset_kwargs(backbone, variant, width=width, **extra)
    except ValueError as e:
        raise BenchError(str(e)) from None


def backbone_channels(kwargs: dict) -> list[int]:
    """Output channels of the stages in ``out_indices``, without allocating weights."""
    plain = {k: v for k, v in kwargs.items() if k not in ("type", "init_cfg")}
    with torch.device("meta"):
        return list(backbones.BiNealNet(**plain).out_channels)


def optim_wrapper(device: str, optimizer: dict, aux_lr_mult: float = 1.0, clip_grad: dict | None = None) -> dict:
    """A task's own optimizer (used when no recipe is named): bf16 AMP on CUDA; parameter groups by
    kind (see ``tasks.recipes``): no decay on quantizer parameters, norms and biases; the latent
    weights of binary convs decayed like every other weight; quantizer parameters at ``lr * aux_lr_mult``."""
    from . import recipes
    return recipes.optim_wrapper(device, optimizer, aux_lr_mult, optimizer.get("weight_decay", 0.0), clip_grad)


def default_hooks(log_interval: int = 20) -> dict:
    """mmengine's default hooks with a checkpoint every epoch (the last two kept, for --resume)."""
    return dict(timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=log_interval),
                param_scheduler=dict(type="ParamSchedulerHook"),
                checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=2, save_last=True),
                sampler_seed=dict(type="DistSamplerSeedHook"))


def env_cfg(device: str) -> dict:
    cuda = device == "cuda"
    return dict(cudnn_benchmark=cuda, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                dist_cfg=dict(backend="nccl" if cuda else "gloo"))


def quantized_model(model_cfg: dict) -> dict:
    """Wrap a model config so that, after the model's own ``init_weights``, every quantized layer's
    data-dependent scales follow its current weights (see ``backbones.openmmlab.QuantScalesAfterInit``)."""
    return dict(type="QuantScalesAfterInit", model=model_cfg)
