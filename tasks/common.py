"""What every task shares, in one place: the backbone config (preset + variant + width), the
optimizer wrapper (AMP, parameter groups), default hooks, environment. Task files call these and
keep only what is truly theirs (data, model head, metric)."""
from __future__ import annotations

import math

import torch

import backbones

from .base import BenchError, DataError

#: ImageNet's per-channel mean and std on 0-255 pixels (mmdet / mmseg's data preprocessors take this
#: scale; divide by 255 for images on [0, 1]): every task whose backbone has the ImageNet stem
IMAGENET_MEAN, IMAGENET_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

#: images beyond this are refused from their header, before any decoding (a decompression bomb,
#: or not the data this suite expects); PIL's own guard stops only at 179 Mpx, with a traceback
MAX_IMAGE_PIXELS = 64_000_000


def check_image(path, what: str = "image", decode: bool = True) -> tuple[tuple[int, int], str]:
    """((width, height), mode) of an image file, decoded in full when ``decode`` (so a truncated
    file fails here, not mid-training); one DataError naming the file for anything else."""
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} is not a file")
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            if size[0] * size[1] > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: {what} of {size[0]}x{size[1]} px refused (over {MAX_IMAGE_PIXELS / 1e6:.0f} "
                                "Mpx: a decompression bomb, or not data for this suite)")
            if decode:
                im.load()
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {what} refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read {what} ({e.__class__.__name__}: {e})") from None
    return size, mode


def check_width(width):
    if width is not None and not (isinstance(width, (int, float)) and math.isfinite(width) and 0 < width <= 16):
        raise BenchError(f"--width must be a number in (0, 16]; got {width!r}")
    return width


def backbone_kwargs(task, backbone: str, variant=None, width=None, schedule=None, **extra) -> dict:
    """BiNealNet keyword arguments: the preset, the seed variant, the width (the user's, else the
    task's default for this preset at ``schedule``: ``backbones.presets.default_width``), then
    ``extra`` (stem, out_indices...)."""
    check_width(width)
    try:
        if width is None:
            width = backbones.presets.default_width(task.NAME, backbone, schedule)
        return backbones.preset_kwargs(backbone, variant, width=width, **extra)
    except ValueError as e:
        raise BenchError(str(e)) from None


def check_head_precision(precision: str) -> str:
    """A dense task's neck and head precision: one of ``backbones.KINDS``, one recorded choice for all three backbones."""
    if precision not in backbones.KINDS:
        raise BenchError(f"head precision must be one of {backbones.KINDS}; got {precision!r}")
    return precision


def pretrained(init_from) -> dict | None:
    """``init_cfg`` that loads the backbone.* weights of a checkpoint of ours (``--init-from``)."""
    from pathlib import Path

    from .base import DataError
    if not init_from:
        return None
    if not Path(init_from).is_file():
        raise DataError(f"{init_from}: --init-from checkpoint not found (expected a .pth written by `bench run`)")
    return dict(type="Pretrained", checkpoint=str(init_from), prefix="backbone.")


def backbone_channels(kwargs: dict) -> list[int]:
    """Output channels of the stages in ``out_indices``, without allocating weights."""
    plain = {k: v for k, v in kwargs.items() if k not in ("type", "init_cfg")}
    with torch.device("meta"):
        return list(backbones.BiNealNet(**plain).out_channels)


def unwrap(model):
    """The model inside mmengine's DDP / FSDP wrapper (itself when not wrapped)."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def optim_wrapper(device: str, optimizer: dict, aux_lr_mult: float = 1.0, clip_grad: dict | None = None) -> dict:
    """A task's own optimizer (used when no recipe is named): bf16 AMP on CUDA; parameter groups by
    kind (see ``tasks.recipes``): no decay on quantizer parameters, norms and biases; the latent
    weights of binary convs decayed like every other weight; quantizer parameters at ``lr * aux_lr_mult``."""
    from . import recipes
    return recipes.optim_wrapper(device, optimizer, aux_lr_mult, optimizer.get("weight_decay", 0.0), clip_grad)


def loader_workers(device: str, workers: int) -> dict:
    """DataLoader settings that keep a GPU fed: ``workers`` processes kept alive across epochs, and
    pinned memory for the copy to CUDA."""
    return dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=device == "cuda")


def default_hooks(log_interval: int = 20) -> dict:
    """mmengine's default hooks with a checkpoint every epoch (the last two kept, for --resume)."""
    return dict(timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=log_interval),
                param_scheduler=dict(type="ParamSchedulerHook"),
                checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=2, save_last=True),
                sampler_seed=dict(type="DistSamplerSeedHook"))


def runtime(seed: int, device: str) -> dict:
    """The seed and environment keys of every task's Runner config."""
    return dict(randomness=dict(seed=seed, deterministic=False), env_cfg=env_cfg(device))


def env_cfg(device: str) -> dict:
    cuda = device == "cuda"
    return dict(cudnn_benchmark=cuda, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                dist_cfg=dict(backend="nccl" if cuda else "gloo"))


def quantized_model(model_cfg: dict) -> dict:
    """Wrap a model config so that, after the model's own ``init_weights``, every quantized layer's
    data-dependent scales follow its current weights (see ``backbones.openmmlab.QuantScalesAfterInit``)."""
    return dict(type="QuantScalesAfterInit", model=model_cfg)
