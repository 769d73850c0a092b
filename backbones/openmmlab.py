"""BiNealNet in the OpenMMLab registries: the one module that touches mmcv / mmdet / mmseg.

Configs load it with ``custom_imports=dict(imports=['backbones.openmmlab'], allow_failed_imports=False)``
and then use ``backbone=dict(type='BiNealNet', ...)``. Importing it also

1. supplies mmcv's compiled ops from ``backbones/mmcv_ext.py`` where mmcv-lite has none (a real
   compiled ``mmcv._ext`` still wins), before anything imports ``mmcv.ops``;
2. lets mmengine 0.10.7 load its own checkpoints (resume, ``load_from``, ``init_model``) under
   torch >= 2.6, whose ``torch.load`` defaults to weights-only.

``import backbones`` alone never imports this module.
"""
from __future__ import annotations

import errno
import importlib
import os

from . import mmcv_ext

mmcv_ext.install()  # must precede any import of mmcv.ops (mmdet.models and mmseg.models import it)

import torch  # noqa: E402
from mmengine.registry import MODELS as ENGINE_MODELS  # noqa: E402
from mmengine.runner.checkpoint import CheckpointLoader  # noqa: E402

from .binealnet import BiNealNet  # noqa: E402
from .errors import BenchError  # noqa: E402
from .layers import qconv, qdeconv, reset_quantizer_scales  # noqa: E402


def load_from_local(filename, map_location=None):
    """mmengine's local-file checkpoint scheme, loading in full (``weights_only=False``).

    mmengine's Runner writes ``message_hub`` with ``HistoryBuffer`` objects and numpy scalars and
    dtypes, which torch >= 2.6's weights-only unpickler rejects (allow-listing them one by one did
    not get through). These are our own trusted checkpoints; only this scheme changes, so other
    ``torch.load`` calls in the process keep torch's default.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(filename, map_location=map_location, weights_only=False)


# '' is the catch-all prefix mmengine registers for local paths; Runner.resume / load_from,
# load_checkpoint, init_model and init_cfg=Pretrained all go through CheckpointLoader
CheckpointLoader.register_scheme(prefixes="", loader=load_from_local, force=True)


def _atomic_put(self, obj: bytes, filepath) -> None:
    """mmengine's local ``put`` (checkpoints, dumps), atomic: a temporary file in the same folder,
    fsync, rename. A full disk or a kill mid-save leaves the previous file, never a truncated one."""
    from .files import AtomicFile
    folder = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    try:
        with AtomicFile(filepath) as f:
            f.write(obj)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BenchError(f"{folder}: disk full while writing {os.path.basename(filepath)}; "
                             f"{_last_good(folder)} (free some space, then rerun with --resume)") from None
        raise


def _last_good(folder) -> str:
    """What a run stopped by a full disk still has: the checkpoint last_checkpoint names, if any."""
    try:
        with open(os.path.join(folder, "last_checkpoint")) as f:
            return f"the last good checkpoint is kept: {f.read().strip()}"
    except OSError:
        return "the files already there are kept"


from mmengine.fileio.backends.local_backend import LocalBackend  # noqa: E402

LocalBackend.put = _atomic_put


def _registries():
    """MODELS of mmengine and of whichever of mmdet / mmseg is installed (a task needs only one)."""
    out = {"mmengine": ENGINE_MODELS}
    for pkg in ("mmdet", "mmseg"):
        try:
            out[pkg] = importlib.import_module(f"{pkg}.registry").MODELS
        except ModuleNotFoundError as e:
            if e.name != pkg:  # installed but broken: say so
                raise
    return out


def QuantScalesAfterInit(model: dict):
    """Build ``model`` (any registered type) so that its ``init_weights`` ends by setting every
    quantized layer's data-dependent scales (binary beta = mean|W|) from the weights the model's
    own init left. The Runner calls ``init_weights`` after building and before loading a
    checkpoint, so a resumed or pretrained run keeps its saved scales."""
    from mmengine.registry import MODELS
    built = MODELS.build(model)
    own_init = built.init_weights

    def init_weights():
        own_init()
        reset_quantizer_scales(built)

    built.init_weights = init_weights
    return built


REGISTRIES = _registries()
for _registry in REGISTRIES.values():
    # force=True: re-importing (custom_imports, importlib.reload) replaces rather than raises
    _registry.register_module(name="BiNealNet", module=BiNealNet, force=True)
    _registry.register_module(name="QuantScalesAfterInit", module=QuantScalesAfterInit, force=True)
# mmcv's build_conv_layer / build_upsample_layer look layer types up in mmengine's MODELS (children
# see it): conv_cfg=dict(type='QConv', w='binary'|'int8'|'fp32', a=...) makes any stock neck/head quantized
ENGINE_MODELS.register_module(name="QConv", module=qconv, force=True)
ENGINE_MODELS.register_module(name="QDeconv", module=qdeconv, force=True)

__all__ = ["BiNealNet", "REGISTRIES", "load_from_local", "QuantScalesAfterInit"]
