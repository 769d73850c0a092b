"""One benchmark run: task config -> mmengine Runner (train, test) -> cost -> JSON record."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

import backbones
import tasks
from tasks import common
from tasks.recipes import TASK_DEFAULT

from . import rundir
from .errors import BenchError
from .provenance import commit, device_name, versions
from .reference import SEED_CIFAR10_TOP1
from .records import RESULTS_DIR, atomic_write, check_writable, identity, portable, run_name, write_record

REPO = Path(__file__).resolve().parent.parent


def check_args(task_name, backbone, variant, schedule, epochs, device):
    """Every bad option becomes one clear line before anything is built."""
    task = tasks.get(task_name)
    if backbone in task.BASELINES:
        if variant is not None:
            raise BenchError(f"{backbone} is a reference row of {task_name} with no backbone; it takes no --variant")
    else:
        try:
            backbones.preset_kwargs(backbone, variant)
        except ValueError as e:
            raise BenchError(f"{e}" + (f" (or a reference row of {task_name}: {', '.join(task.BASELINES)})"
                                       if task.BASELINES else "")) from None
    if schedule not in task.SCHEDULES:
        raise BenchError(f"unknown schedule {schedule!r} for {task_name}; expected one of {sorted(task.SCHEDULES)}")
    if epochs is not None and epochs < 1:
        raise BenchError(f"--epochs must be >= 1; got {epochs}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device visible to torch")
    return task


def prepare_cfg(cfg, resume=False, launcher="none", seed=0, desc="training"):
    """What the runner adds to every task's config: hooks the task did not set itself (a task's
    own choice wins), the NaN stop, the progress bar, the resume state, and their imports."""
    cfg.launcher = launcher
    cfg.resume = bool(resume)
    # mmengine keys its logger and visualizer by experiment name, the start second by default: a second
    # run started in the same second would get the first's, writing into the first's (maybe removed) work dir
    import uuid
    cfg.setdefault("experiment_name", f"bench-{uuid.uuid4().hex[:8]}")
    if resume:  # the run's own last checkpoint holds the weights; load_from (a QAT start) would be resumed instead
        cfg.load_from = None
    hooks = cfg.get("default_hooks") or {}
    for k, v in common.default_hooks().items():
        hooks.setdefault(k, v)
    cfg.default_hooks = hooks
    if cfg.get("train_dataloader") is not None:
        cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [
            dict(type="StopOnNonFiniteLoss"), dict(type="ProgressBarHook", desc=desc),
            dict(type="ResumableRunState", seed=seed)]
    cfg.custom_imports = dict(imports=["bench.hooks"] + list(cfg.get("custom_imports", {}).get("imports", [])),
                              allow_failed_imports=False)
    # Config.fromfile would import these; a Config built in Python must do it itself
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    return cfg


def build_task_model(task_name, backbone, schedule, data=None, **task_opts):
    """(task module, the task's full model) as `bench run` would train it on ``data`` (default: the
    embedded sample; the class count comes from it), without data loaders: for cost counting."""
    task = check_args(task_name, backbone, None, schedule, None, "cpu")
    import backbones.openmmlab  # noqa: F401
    from mmengine.registry import MODELS, init_default_scope

    root = Path(data) if data else task.DEFAULT_DATA
    task.validate_data(root)
    cfg = task.build_config(backbone, root, schedule, REPO / "work_dirs" / "cost", 0,
                            **task.options_with_defaults(task_opts))
    from mmengine.utils import import_modules_from_strings
    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    return task, MODELS.build(cfg.model)


@contextlib.contextmanager
def console_to(log: Path | None):
    """Send what a run prints (mmengine's log, its warnings) to ``log`` instead of the console; the full
    mmengine log is in the work dir either way. None: leave the console alone (``--verbose``)."""
    if log is None:
        yield
        return
    import logging
    import sys
    with open(log, "a") as f:
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:  # mmengine's loggers bound their console handler to the file: warnings only, to the console
            from mmengine.logging import MMLogger
            for logger in list(MMLogger._instance_dict.values()) + [logging.root]:
                for h in logger.handlers:
                    if isinstance(h, logging.StreamHandler) and h.stream is f:
                        h.setStream(sys.stdout)
                        h.setLevel(logging.WARNING)


def _quiet_paramwise_log(runner):
    """mmengine logs one line per parameter with a paramwise option (hundreds here); drop those."""
    import logging
    f = logging.Filter()
    f.filter = lambda rec: not str(rec.msg).startswith("paramwise_options")
    runner.logger.addFilter(f)


def _inputs(task, schedule, device, batch=1):
    xs = task.example_inputs(schedule, device)
    return tuple(torch.cat([x] * batch) if batch > 1 else x for x in xs)


def measure_cost(task, schedule, model, device):
    from .cost import count_cost
    return count_cost(model, _inputs(task, schedule, device),
                      forward=lambda m, xs: task.forward_for_cost(m, *xs)).to_dict()


#: throughput is measured at this batch (stated in the record and the tables)
THROUGHPUT_BATCH = 8


def measure_speed(task, schedule, model, device, seconds=1.5) -> dict:
    """Batch-1 latency (median ms) and throughput (img/s at ``THROUGHPUT_BATCH``) of the network's
    forward without post-processing, on the run's device (fake-quant arithmetic, not deployed kernels)."""
    import statistics

    def timed(xs):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        task.forward_for_cost(model, *xs)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    was_training = model.training
    model.eval()
    out = {}
    with torch.no_grad():
        for batch in (1, THROUGHPUT_BATCH):
            xs = _inputs(task, schedule, device, batch)
            for _ in range(2):  # warm-up (and the eval-mode border cache)
                timed(xs)
            t_end = time.perf_counter() + seconds
            times = []
            while time.perf_counter() < t_end or len(times) < 3:
                times.append(timed(xs))
            out[batch] = statistics.median(times)
    model.train(was_training)
    return {"latency_ms_b1": out[1] * 1e3, "throughput_img_s": THROUGHPUT_BATCH / out[THROUGHPUT_BATCH],
            "throughput_batch": THROUGHPUT_BATCH, "postprocess": False,  # forward_for_cost stops before NMS / matching
            "device": device_name(device), "threads": torch.get_num_threads()}


def resolve_recipe(task, backbone, recipe_name, teacher):
    """The recipe a run uses (the user's, else the task's default for this backbone, else None:
    the task's own optimizer), checked against the backbone and the teacher."""
    from tasks import recipes
    name = recipe_name or task.DEFAULT_RECIPES.get(backbone)
    if backbone in task.BASELINES:
        for flag, given in (("--recipe", recipe_name), ("--teacher", teacher)):
            if given:
                raise BenchError(f"{backbone} is a reference row; it takes no {flag}")
        return None
    if name is None:  # the task's own optimizer: a --teacher would be silently unused
        recipes.check(None, backbone, teacher)
        return None
    recipe = recipes.get(name)  # None: task-default, named
    if recipe is not None and not recipe_name and not teacher and recipe.without_teacher:
        # a task's default that distils, run alone (`bench compare` trains and passes the teacher)
        import sys
        print(f"bench: {task.NAME}'s default recipe for {backbone} is {name}, which distils from an fp32 teacher; "
              f"none given, so training with {recipe.without_teacher} (give --teacher CKPT, or use bench compare)",
              file=sys.stderr)
        recipe = recipes.get(recipe.without_teacher)
    recipes.check(recipe, backbone, teacher)
    return recipe


def _teacher(task, teacher, schedule, data_root, device):
    """Check a teacher checkpoint (same task, an fp32 run) and return (its model config, its record args)."""
    ckpt = Path(teacher)
    meta = rundir.run_args(ckpt, "--teacher")
    if meta.get("task") != task.NAME:
        raise BenchError(f"--teacher {ckpt} is a {meta.get('task')} run, not {task.NAME}")
    if meta.get("backbone") != "fp32" or meta.get("variant"):
        raise BenchError(f"--teacher {ckpt} is a {meta.get('backbone')} run; the teacher is the task's fp32 model")
    cfg = task.build_config("fp32", data_root, schedule, ckpt.parent, meta.get("seed", 0), device=device,
                            **task.options_with_defaults(meta.get("task_options", {})))
    return cfg.model, meta


def run(task_name, backbone, variant=None, data=None, schedule="smoke", epochs=None, device="cpu", work_dir=None,
        resume=False, seed=0, launcher="none", results_dir=RESULTS_DIR, recipe=None, teacher=None, verbose=False,
        **task_opts) -> tuple[dict, Path]:
    """Train + test one (task, backbone, variant) and write its record; returns (record, path). Unless
    ``verbose``, mmengine's console output goes to ``<work dir>/console.log`` and only a progress bar shows."""
    task = check_args(task_name, backbone, variant, schedule, epochs, device)
    task_opts = {k: v for k, v in task_opts.items() if v is not None}  # as given: names the run
    resolved = task.options_with_defaults(task_opts)
    the_recipe = resolve_recipe(task, backbone, recipe, teacher)
    import backbones.openmmlab  # noqa: F401  (mmcv ops stand-in, checkpoint loading fix, registration)
    from mmengine.dist import get_rank
    from mmengine.runner import Runner

    data_root = Path(data) if data else task.DEFAULT_DATA
    task.validate_data(data_root)
    # the work dir is named after the resolved config, so the config is built first and pointed at it after
    cfg = task.build_config(backbone, data_root, schedule, Path(work_dir or REPO / "work_dirs"), seed, epochs=epochs,
                            device=device, variant=variant, **resolved)  # writes nothing: bad options fail here
    # nothing to train: a reference row without a training loop (bicubic, SIFT; detection's
    # frozen-random trains its neck and head), or a recipe that only calibrates (PTQ)
    untrained = cfg.get("train_cfg") is None
    teacher_meta = None
    if the_recipe is not None:
        from tasks import recipes
        if the_recipe.distill:
            teacher_model, teacher_meta = _teacher(task, teacher, schedule, data_root, device)
            task.add_teacher(cfg, teacher_model, str(Path(teacher).resolve()))
        elif the_recipe.from_teacher:
            teacher_meta = _teacher(task, teacher, schedule, data_root, device)[1]
            from mmengine.registry import init_default_scope
            init_default_scope(cfg.get("default_scope", "mmengine"))
            rundir.check_fits(cfg.model, Path(teacher), "--teacher",
                              "; the teacher must be this task's fp32 run at the same width and options")
        recipes.apply(cfg, the_recipe, device, teacher)
        untrained = untrained or not the_recipe.train
    init_meta = _check_init_from(cfg, Path(resolved["init_from"])) if resolved.get("init_from") else None
    ident = identity(task_name, backbone, variant, cfg.get("bench", {}), the_recipe.name if the_recipe else TASK_DEFAULT,
                     schedule, 0 if untrained else cfg.train_cfg.max_epochs, data_root.name, seed, resolved, init_meta,
                     teacher_meta)
    name = run_name(ident)
    work_dir = Path(work_dir) if work_dir else REPO / "work_dirs" / task_name / name
    cfg.work_dir = str(work_dir)
    if resume:
        rundir.resumable_checkpoint(work_dir)
    launch = _distributed(cfg, launcher, device)
    first = launch["rank"] == 0  # one process checks, locks and writes; all of them train
    if first:
        check_writable(Path(results_dir) / task_name)
    cfg = prepare_cfg(cfg, resume, launcher, seed, desc=f"{backbone}{'-' + variant if variant else ''} seed {seed}")
    fresh = not work_dir.exists()
    work_dir.mkdir(parents=True, exist_ok=True)
    args = dict(run=name, task=task_name, backbone=backbone, variant=variant, data=str(data_root), schedule=schedule,
                epochs=epochs, seed=seed, task_options=task_opts, recipe=the_recipe.name if the_recipe else recipe,
                teacher=str(teacher) if teacher else None)
    if first:
        check_writable(work_dir)
        lock = _lock(work_dir)  # noqa: F841  (held until this process ends)
        atomic_write(work_dir / "bench_run.json", json.dumps(args, indent=1))

    args["commit"] = commit()
    t0 = time.time()
    with _discarded_on_failure(work_dir, fresh and first), console_to(None if verbose else work_dir / "console.log"):
        runner = Runner.from_cfg(cfg)
        _quiet_paramwise_log(runner)
        if first and not untrained:
            check_free_space(work_dir, Path(results_dir), common.unwrap(runner.model))
        if not untrained:
            runner.train()
        metrics = runner.test()
    state = next((h for h in runner.hooks if type(h).__name__ == "ResumableRunState"), None)
    parts = state.parts() if state is not None and not untrained else [time.time() - t0]
    wall = sum(parts)
    if get_rank() != 0:
        return {}, None
    model = common.unwrap(runner.model)
    record = make_record(task, args, cfg, metrics, model, device, wall, name, 0 if untrained else runner.max_epochs)
    record["identity"] = ident
    record["wall_s_parts"] = parts  # more than one after --resume
    if not untrained:  # end to end: data loading, validation and the final test included
        seen = runner.train_loop.max_iters * cfg.train_dataloader.batch_size * launch["world_size"]
        record["train_samples_per_s"] = seen / wall if wall > 0 else None
    if state is not None and not untrained:
        record["history"] = state.history  # per-epoch train losses and validations (bench/hooks.py)
    record["launch"] = {k: v for k, v in launch.items() if k != "rank"}
    if os.environ.get("BENCH_CAMPAIGN"):  # started by `bench campaign`: its manifest, run id and spec hash
        record["campaign"] = json.loads(os.environ["BENCH_CAMPAIGN"])
    if init_meta is not None:  # the pretrained backbone's run: its data, schedule and time are part of this one's
        record["init_from"] = {"checkpoint": str(resolved["init_from"]), "run_id": ident["init_from"], "run": init_meta,
                               "wall_s": init_meta.get("wall_s")}
    # the run's own time beside its checkpoints: a student's record adds its teacher's
    atomic_write(work_dir / "bench_run.json", json.dumps(dict(args, wall_s=wall), indent=1))
    if teacher_meta is not None:
        record["teacher"] = {"checkpoint": str(teacher), "run_id": ident["teacher"], "run": teacher_meta,
                             "wall_s": teacher_meta.get("wall_s")}
    try:
        return record, write_record(record, results_dir)
    except (BenchError, OSError) as e:  # a full or vanished results folder: the finished run is not lost
        kept = work_dir / "record.json"
        atomic_write(kept, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
        raise BenchError(f"could not write the record to {results_dir} ({e}); the finished run's record is kept "
                         f"at {kept} (copy it into {Path(results_dir) / task_name}/ and run `bench report`)") from None


@contextlib.contextmanager
def _discarded_on_failure(work_dir: Path, made_here: bool):
    """A run that fails before its first checkpoint (data the loaders refuse, a checkpoint that does
    not fit) removes the work dir it made: no lock, config, logs or bench_run.json are left behind."""
    try:
        yield
    except Exception:
        if made_here and not any(work_dir.glob("*.pth")):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def _distributed(cfg, launcher, device) -> dict:
    """Multi-process training through mmengine: ``torchrun --nproc-per-node N -m bench.cli run ...
    --launcher pytorch``, gloo on CPU, NCCL on CUDA. The schedule's batch is the global batch: each
    process takes its share, so N processes train on what one process would (same lr, same epochs)."""
    if launcher == "none":
        return {"launcher": "none", "rank": 0, "world_size": 1}
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise BenchError(f"--launcher {launcher}: RANK/WORLD_SIZE are not set; start the run with "
                         "torchrun --nproc-per-node N -m bench.cli run ... --launcher pytorch")
    import torch.distributed as dist
    world = int(os.environ["WORLD_SIZE"])
    loader = cfg.get("train_dataloader")
    if loader is not None and loader.batch_size % world:
        raise BenchError(f"the schedule's batch of {loader.batch_size} does not split over {world} processes; "
                         "use a process count that divides it")
    if not dist.is_initialized():
        # mmengine's own init calls torch.cuda.set_device, which fails without a GPU: start gloo here
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cpu":  # mmengine would pass device_ids=[LOCAL_RANK], which DDP refuses for a CPU module
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=cfg.get("find_unused_parameters", False))
    if loader is not None:
        loader.batch_size //= world
        # each process's BatchNorm statistics see only its share: average them every epoch, so the
        # model every process evaluates (and the one checkpointed) is one model
        cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [dict(type="SyncBuffersHook")]
    return {"launcher": launcher, "rank": dist.get_rank(), "world_size": world,
            "batch_per_process": loader.batch_size if loader is not None else None}


#: a checkpoint holds the weights and up to two optimizer slots per weight (Adam); the last two
#: are kept and a third is written beside them before the oldest goes
CHECKPOINT_COPIES = 3 * 3
LOG_MARGIN = 64 << 20
RECORD_MARGIN = 8 << 20


def check_free_space(work_dir: Path, results_dir: Path, model) -> None:
    """Fail before training, not in the middle of a checkpoint, when a disk is too full for the run."""
    import shutil
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for folder, need, what in ((work_dir, CHECKPOINT_COPIES * weights + LOG_MARGIN, "checkpoints and logs"),
                               (results_dir, RECORD_MARGIN, "the record")):
        probe = next(p for p in (folder, *folder.parents) if p.exists())
        free = shutil.disk_usage(probe).free
        if free < need:
            raise BenchError(f"{folder}: {free / 2**20:.0f} MiB free, this run needs about {need / 2**20:.0f} MiB "
                             f"for {what}; free some space or choose another folder")


def _lock(work_dir: Path):
    """One bench run per work dir at a time (two would share checkpoints and logs)."""
    import fcntl
    f = open(work_dir / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise BenchError(f"{work_dir}: another bench run is using this work dir (wait for it, or give --work-dir "
                         "or --seed to run beside it)") from None
    return f


def _backbone_of(model):
    """The model's backbone module (the shortest module path ending in 'backbone')."""
    named = [(n, m) for n, m in model.named_modules() if n.split(".")[-1] == "backbone"]
    return min(named, key=lambda nm: len(nm[0]))[1] if named else None


def _check_init_from(cfg, ckpt: Path) -> dict:
    """--init-from: the checkpoint's backbone.* tensors must be exactly this model's backbone (same
    preset, width and stem), else mmengine would load what fits and only log the rest. Returns the
    checkpoint's run (its bench_run.json) for the record."""
    from mmengine.registry import MODELS, init_default_scope
    meta = rundir.run_args(ckpt, "--init-from")
    state = rundir.checked_state(ckpt, "--init-from")
    init_default_scope(cfg.get("default_scope", "mmengine"))
    own = _backbone_of(MODELS.build(cfg.model)).state_dict()
    theirs = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    bad = [f"{k}: {tuple(theirs[k].shape) if k in theirs else 'absent'} vs {tuple(v.shape)}"
           for k, v in own.items() if k not in theirs or theirs[k].shape != v.shape]
    bad += [f"{k}: not in this backbone" for k in theirs if k not in own]
    if bad:
        raise BenchError(f"--init-from {ckpt}: its backbone does not fit this model ({len(bad)} tensors differ, e.g. "
                         f"{'; '.join(bad[:3])}); it is a {meta.get('backbone')} {meta.get('task')} run: use a run of "
                         "the same preset and width with the ImageNet stem, e.g. `bench run --task classification "
                         "--schedule pretrain-short --backbone B`")
    return meta


def make_record(task, args, cfg, metrics, model, device, wall, name, epochs) -> dict:
    schedule = args["schedule"]
    m = task.METRIC
    if m["key"] not in metrics:
        raise BenchError(f"metric {m['key']!r} missing from evaluation output {sorted(metrics)}")
    value = float(metrics[m["key"]])
    secondary = {k.split("/")[-1]: _jsonable(metrics[k]) for k in task.SECONDARY_KEYS if k in metrics}
    variant = args["variant"]
    return {
        "run": name, "task": task.NAME, "backbone": args["backbone"], "variant": variant,
        "metric": {"name": m["name"], "value": value, "higher_is_better": m["higher_is_better"],
                   "secondary": secondary},
        "cost": measure_cost(task, schedule, model, device),
        "cost_input": [list(x.shape) for x in task.example_inputs(schedule)],
        # smoke runs are checks, not measurements: time a few calls, not 1.5 s per batch size
        "speed": measure_speed(task, schedule, model, device, seconds=0.0 if schedule == "smoke" else 1.5),
        "schedule": schedule, "schedule_label": task.SCHEDULES[schedule].get("label", schedule), "epochs": epochs,
        "seed": args["seed"], "data": task.data_info(args["data"], schedule, **task.options_with_defaults(args["task_options"])),
        "task_options": {k: v for k, v in args["task_options"].items() if v is not None},
        "task_options_resolved": task.options_with_defaults(args["task_options"]),
        "seed_reported": SEED_CIFAR10_TOP1.get(variant) if variant and task.NAME == "classification" else None,
        "recipe": cfg.get("bench", {}).get("recipe") or {"name": TASK_DEFAULT, "optimizer": _optimizer(cfg)},
        "config": json.loads(json.dumps(cfg.to_dict(), default=str)),
        "commit": args.get("commit") or commit(), "versions": versions(), "device": device_name(device), "wall_s": wall,
        "command": _command(args, device),
    }


def _optimizer(cfg):
    ow = cfg.get("optim_wrapper") or {}
    return json.loads(json.dumps(ow.get("optimizer"), default=str))


def _jsonable(v):
    """Metric values as JSON: floats, or lists/dicts of floats (per-class IoU, MMA per threshold)."""
    if v is None:
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _command(args, device) -> str:
    """The `bench run` line that reproduces a run (eval records add evaluated_checkpoint)."""
    flags = {k: args.get(k) for k in ("task", "backbone", "variant", "data", "schedule", "epochs", "seed", "recipe",
                                      "teacher")}
    flags.update(device=device, **args["task_options"])
    return "bench run " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items() if v is not None)


def evaluate(task_name, checkpoint, data, device="cpu", results_dir=RESULTS_DIR) -> tuple[dict, Path]:
    """Test a trained run's checkpoint on another dataset; written as a record of its own."""
    import backbones.openmmlab  # noqa: F401
    from mmengine.runner import Runner

    ckpt = Path(checkpoint)
    args = rundir.run_args(ckpt, "bench eval")
    if args.get("task") != task_name:
        raise BenchError(f"{ckpt} is a {args.get('task')} run, not {task_name}")
    rundir.checked_state(ckpt, "bench eval")
    data_root = Path(data)
    work_dir = ckpt.parent / f"eval_{data_root.name}"
    task, cfg = rundir.rebuild_config(ckpt, args, data=data_root, work_dir=work_dir, device=device)
    evaluated_run = dict(args)
    args["data"] = str(data_root)
    resolved = task.options_with_defaults(args["task_options"])
    epochs = args["epochs"] or task.SCHEDULES[args["schedule"]]["epochs"]  # what the checkpoint's run trained
    ident = identity(task_name, args["backbone"], args["variant"], cfg.get("bench", {}), TASK_DEFAULT, args["schedule"],
                     epochs, data_root.name, args["seed"], resolved, evaluated_run=evaluated_run)
    name = run_name(ident)
    cfg = prepare_cfg(cfg, False, "none")
    t0 = time.time()
    with _discarded_on_failure(work_dir, not work_dir.exists()):
        runner = Runner.from_cfg(cfg)
        rundir.load_into(runner, ckpt, f"the {task_name} model built for {data_root}")
        check_writable(Path(results_dir) / task_name)
        metrics = runner.test()
    record = make_record(task, args, cfg, metrics, common.unwrap(runner.model), device, time.time() - t0, name, epochs)
    record.update(identity=ident, evaluated_checkpoint=str(ckpt), evaluated_run=evaluated_run)
    return record, write_record(record, results_dir)
