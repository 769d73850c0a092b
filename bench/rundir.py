"""Reading a run directory, the one place that does it: the ``bench_run.json`` that `bench run` writes
beside its checkpoints, the config rebuilt from it, and its checkpoints (found, checked to fit,
loaded with mmengine's loaders). Eval, deploy, resume, teachers, ``--init-from`` and the
diagnostics all come through here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import BenchError

REPO = Path(__file__).resolve().parent.parent


def run_args(ckpt, what: str) -> dict:
    """The bench_run.json beside checkpoint ``ckpt`` (task, backbone, options), or one clear error
    (``what``: the flag or command asking, for the message)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise BenchError(f"{what} {ckpt}: checkpoint not found (expected a .pth written by `bench run`)")
    meta = ckpt.parent / "bench_run.json"
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{meta}: missing or unreadable ({e}); {what} needs the bench_run.json that `bench run` "
                         "writes beside its checkpoints") from None


def state_dict(ckpt) -> dict | None:
    """The weights of a checkpoint of ours, or None when it is truncated, not a checkpoint or unreadable."""
    import torch
    try:
        loaded = torch.load(ckpt, map_location="cpu", weights_only=False)  # our own, trusted: numpy/mmengine objects
    except Exception:  # truncated, not a checkpoint, unreadable: all mean "cannot use it"
        return None
    return loaded["state_dict"] if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict) else None


def readable(ckpt) -> bool:
    return state_dict(ckpt) is not None


def resumable_checkpoint(work_dir: Path) -> Path:
    """The checkpoint --resume will use: the last one if it loads, else the newest one that does
    (last_checkpoint is rewritten to it, and we say so)."""
    from .records import atomic_write
    last = work_dir / "last_checkpoint"
    if not last.is_file():
        raise BenchError(f"--resume: no checkpoint to resume from in {work_dir} (run without --resume first)")
    named = Path(last.read_text().strip())
    if readable(named):
        return named
    for cand in sorted(work_dir.glob("epoch_*.pth"), key=lambda p: -int(p.stem.split("_")[1])):
        if cand != named and readable(cand):
            print(f"bench: {named} is damaged (truncated or not a checkpoint); resuming from {cand} instead",
                  file=sys.stderr)
            atomic_write(last, str(cand))
            return cand
    raise BenchError(f"--resume: {named} is damaged and no earlier checkpoint in {work_dir} loads; "
                     "start again without --resume")


def data_root(args: dict, task) -> Path:
    """The dataset a run trained on (its bench_run.json's ``data``; relative paths from the repository)."""
    root = Path(args["data"]) if args.get("data") else task.DEFAULT_DATA
    if not root.is_absolute() and not root.exists():
        root = REPO / root
    return root


def rebuild_config(ckpt, args: dict, *, data=None, work_dir=None, device="cpu", backbone=None):
    """(task, config) of the run that wrote ``ckpt``, rebuilt from its ``args`` (bench_run.json):
    on its own data, or on ``data`` (evaluating elsewhere; checked first), writing to ``work_dir``
    (default: the checkpoint's folder); ``backbone`` overrides the run's (a teacher is rebuilt as fp32)."""
    import tasks
    task = tasks.get(args["task"])
    root = Path(data) if data else data_root(args, task)
    task.validate_data(root)
    cfg = task.build_config(backbone or args["backbone"], root, args["schedule"], Path(work_dir or Path(ckpt).parent),
                            args.get("seed", 0), epochs=args.get("epochs"), device=device,
                            variant=None if backbone else args.get("variant"),
                            **task.options_with_defaults(args.get("task_options", {})))
    return task, cfg


def load_model(ckpt, what: str):
    """(args, config, the trained model in eval mode) of checkpoint ``ckpt``: its run's model rebuilt
    and loaded strictly with mmengine's ``load_checkpoint``."""
    import backbones.openmmlab  # noqa: F401  (registrations, checkpoint loading)
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    args = run_args(ckpt, what)
    _, cfg = rebuild_config(ckpt, args)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    try:
        load_checkpoint(model, str(ckpt), map_location="cpu", strict=True, logger="silent")
    except (RuntimeError, KeyError) as e:
        raise BenchError(f"{ckpt}: does not fit the model its bench_run.json describes ({str(e)[:300]})") from None
    return args, cfg, model.eval()


def load_into(runner, ckpt, fits_what: str) -> None:
    """Load ``ckpt`` into a built mmengine Runner, strictly: a checkpoint whose shapes do not fit
    (another class count, width) is one error naming ``fits_what``, not a log line."""
    try:
        runner.load_checkpoint(str(ckpt), map_location="cpu", strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise BenchError(f"{ckpt}: does not fit {fits_what} ({'; '.join(first[:3])[:400]})") from None


def checked_state(ckpt, what: str) -> dict:
    """The weights of ``ckpt``; one clear error when it cannot be read."""
    state = state_dict(ckpt)
    if state is None:
        raise BenchError(f"{what} {ckpt}: not a readable checkpoint (truncated, or not a .pth written by `bench run`)")
    return state


def check_fits(model_cfg, ckpt, what: str, hint: str = "") -> None:
    """Every tensor of ``ckpt`` must fit the model ``model_cfg`` builds (same names and shapes; the
    model may hold more, e.g. an INT8 model's quantizer state beside an FP32 checkpoint's weights)."""
    from mmengine.registry import MODELS
    own = MODELS.build(model_cfg).state_dict()
    state = checked_state(ckpt, what)
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape) if k in own else 'absent'}"
           for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad or not state:
        raise BenchError(f"{what} {ckpt}: does not fit this model ({len(bad)} tensors differ, e.g. "
                         f"{'; '.join(bad[:3]) or 'no state_dict'}){hint}")


def dumped_config(work_dir: Path):
    """The config a run's Runner dumped into its work dir (the last part's, after --resume)."""
    from mmengine.config import Config
    dumped = sorted(Path(work_dir).glob("2*.py"))  # <timestamp>.py, one per (resumed) part
    if not dumped:
        raise BenchError(f"{work_dir}: no dumped config (<timestamp>.py); expected the work dir of a bench run")
    return Config.fromfile(dumped[-1])


def last_checkpoint(work_dir: Path) -> Path:
    """The run's last saved checkpoint (mmengine's ``last_checkpoint`` pointer)."""
    pointer = Path(work_dir) / "last_checkpoint"
    if not pointer.is_file():
        raise BenchError(f"{work_dir}: no last_checkpoint; expected the work dir of a bench run that saved one")
    return Path(pointer.read_text().strip())
