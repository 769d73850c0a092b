"""Loading our own checkpoints into a backbone (``init_cfg`` / ``--init-from``)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch


def load_backbone_weights(module: torch.nn.Module, path, prefix: str = "backbone.") -> dict:
    """Copy ``prefix*`` tensors of checkpoint ``path`` into ``module``; returns what was loaded,
    skipped for shape and missing. Mismatches are reported (a warning), never silently dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected a .pth file written by `bench run`)")
    # our own trusted checkpoints: they hold numpy/mmengine objects that weights_only refuses
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    src = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not src:
        raise ValueError(f"{path}: no tensors under prefix {prefix!r} (keys look like {list(state)[:3]})")
    own = module.state_dict()
    loaded, shape_mismatch = {}, []
    for k, v in src.items():
        if k in own and own[k].shape == v.shape:
            loaded[k] = v
        elif k in own:
            shape_mismatch.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    missing = sorted(set(own) - set(loaded))
    module.load_state_dict(loaded, strict=False)
    # a layer whose learned scales came from the checkpoint keeps them: the model-wide scale reset
    # after init (QuantScalesAfterInit) would otherwise overwrite them with mean|W|
    for name, m in module.named_modules():
        if hasattr(m, "scales_from_checkpoint"):
            m.scales_from_checkpoint = f"{name}.weight_quantizer.beta".lstrip(".") in loaded
    if shape_mismatch or missing:
        warnings.warn(f"{path}: loaded {len(loaded)} tensors; {len(shape_mismatch)} shape mismatches "
                      f"({'; '.join(shape_mismatch[:5])}); {len(missing)} left at init ({missing[:5]})")
    return {"loaded": len(loaded), "shape_mismatch": shape_mismatch, "missing": missing}
