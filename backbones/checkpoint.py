"""Loading a checkpoint into a backbone (``init_cfg`` / ``pretrained`` / ``--init-from``), through mmengine's
``load_checkpoint`` (its schemes: local files, ``torchvision://``, ``open-mmlab://``, URLs)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch


def load_backbone_weights(module: torch.nn.Module, path, prefix: str | None = "backbone.") -> dict:
    """Copy the ``prefix*`` tensors of checkpoint ``path`` (``prefix`` None: every tensor, keys as they
    are) into ``module``; returns what was loaded, skipped for shape and missing. Mismatches are
    reported (a warning), never silently dropped."""
    import backbones.openmmlab  # noqa: F401  (mmengine's local scheme for our own checkpoints under torch >= 2.6)
    from mmengine.runner.checkpoint import load_checkpoint
    if "://" not in str(path) and not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected a .pth file written by `bench run`)")
    revise = [(f"^{re.escape(prefix)}", "")] if prefix else []
    own = {k: v.shape for k, v in module.state_dict().items()}
    ckpt = load_checkpoint(module, str(path), map_location="cpu", strict=False, logger="silent", revise_keys=revise)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    src = {k[len(prefix or ""):]: v for k, v in state.items() if k.startswith(prefix or "")}
    if not src:
        raise ValueError(f"{path}: no tensors under prefix {prefix!r} (keys look like {list(state)[:3]})")
    loaded = {k for k, v in src.items() if k in own and own[k] == v.shape}
    shape_mismatch = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k])}"
                      for k, v in src.items() if k in own and k not in loaded]
    missing = sorted(set(own) - loaded)
    # a layer whose learned scales came from the checkpoint keeps them: the model-wide scale reset
    # after init (QuantScalesAfterInit) would otherwise overwrite them with mean|W|
    for name, m in module.named_modules():
        if hasattr(m, "scales_from_checkpoint"):
            m.scales_from_checkpoint = f"{name}.weight_quantizer.beta".lstrip(".") in loaded
    if shape_mismatch or missing:
        warnings.warn(f"{path}: loaded {len(loaded)} tensors; {len(shape_mismatch)} shape mismatches "
                      f"({'; '.join(shape_mismatch[:5])}); {len(missing)} left at init ({missing[:5]})")
    return {"loaded": len(loaded), "shape_mismatch": shape_mismatch, "missing": missing}
