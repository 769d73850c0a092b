"""`bench`: run, compare, ablate, eval, report, cost, list. Every command has --help."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import backbones
import tasks

from .errors import BenchError

EPILOG = ("Cost convention: BOPs = MACs x w_bits x a_bits over layers below 16 bits; "
          "OPs = FP MACs + BOPs/64. Records go to results/<task>/<run>.json; `bench report` rebuilds the tables.")


def _task_options(task_name):
    try:
        return tasks.get(task_name).TASK_OPTIONS
    except (ValueError, ImportError):
        return {}


def _add_run_args(p, with_backbone=True):
    p.add_argument("--task", required=True, choices=sorted(tasks.TASKS), help="which task to train and evaluate")
    if with_backbone:
        p.add_argument("--backbone", default="binealnet", help=f"one of {sorted(backbones.PRESETS)} (default binealnet)")
        p.add_argument("--variant", default=None,
                       help=f"a seed ablation row applied to the backbone: {', '.join(backbones.SEED_VARIANTS)}")
    p.add_argument("--data", default=None, help="dataset root (default: the task's embedded sample in data/)")
    p.add_argument("--schedule", default="smoke", help="smoke (seconds) | short (minutes on CPU) | paper | "
                                                       "task-specific ones, see `bench list` (default smoke)")
    p.add_argument("--epochs", type=int, default=None, help="override the schedule's epochs")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training device (AMP bf16 on cuda)")
    p.add_argument("--work-dir", default=None, help="checkpoints and logs (default work_dirs/<task>/<run>)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted run from its last checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm", "mpi"],
                   help="multi-GPU: torchrun --nproc-per-node N -m bench.cli run ... --launcher pytorch")
    p.add_argument("--results-dir", default=None, help="where records go (default results/)")
    _add_task_option_flags(p)


def _add_task_option_flags(p):
    """Every task's TASK_OPTIONS as a flag (e.g. --model, --width, --init-from)."""
    seen = {}
    for t in tasks.TASKS:
        for k, spec in _task_options(t).items():
            seen.setdefault(k, (spec, []))[1].append(t)
    g = p.add_argument_group("task options (see `bench list`)")
    for k, (spec, owners) in seen.items():
        g.add_argument("--" + k.replace("_", "-"), dest="opt_" + k, default=None, metavar=k.upper(),
                       choices=spec.get("choices"), help=f"[{', '.join(owners)}] {spec.get('help', '')}")


def _parse_opts(task_name, args):
    known = _task_options(task_name)
    out = {}
    for dest, v in vars(args).items():
        if not dest.startswith("opt_") or v is None:
            continue
        k = dest[4:]
        if k not in known:
            raise BenchError(f"--{k.replace('_', '-')} is not an option of task {task_name}; "
                             f"its options: {sorted(known) or 'none'}")
        try:
            out[k] = known[k].get("type", str)(v)
        except (ValueError, KeyError):
            raise BenchError(f"--{k.replace('_', '-')} {v!r}: not a valid value") from None
    return out


def _run_kwargs(a):
    kw = dict(data=a.data, schedule=a.schedule, epochs=a.epochs, device=a.device, resume=a.resume, seed=a.seed,
              launcher=a.launcher, **_parse_opts(a.task, a))
    if a.results_dir:
        kw["results_dir"] = Path(a.results_dir)
    return kw


def _print_record(rec, path):
    if not rec:
        return
    m = rec["metric"]
    print(f"{rec['task']} {rec['backbone']}{' ' + rec['variant'] if rec['variant'] else ''}: "
          f"{m['name']} = {m['value']:.4f}   OPs = {rec['cost']['ops'] / 1e6:.2f} M   "
          f"BOPs = {rec['cost']['bops'] / 1e9:.3f} G   ({rec['schedule']}, {rec['epochs']} epochs, "
          f"{rec['wall_s']:.0f} s)  -> {path}")


def cmd_run(a):
    from .runner import run
    _print_record(*run(a.task, a.backbone, variant=a.variant, work_dir=a.work_dir, **_run_kwargs(a)))


def cmd_compare(a):
    from .results import RESULTS_DIR, report
    from .runner import run
    kw = _run_kwargs(a)
    for b in a.backbones.split(","):
        _print_record(*run(a.task, b.strip(), **kw))
    for p in report(kw.get("results_dir", RESULTS_DIR)):
        print("wrote", p)


def cmd_ablate(a):
    from .results import RESULTS_DIR, report
    from .runner import run
    kw = _run_kwargs(a)
    rows = []
    for v in (a.variants.split(",") if a.variants else backbones.SEED_VARIANTS):
        rec, path = run(a.task, "binealnet", variant=v, **kw)
        _print_record(rec, path)
        rows.append((v, rec["metric"]["value"], backbones.SEED_VARIANTS[v][1]))
    print(f"\n{'variant':32s} {'measured':>9s} {'seed (400 ep)':>14s}")
    for v, got, seed in rows:
        print(f"{v:32s} {got:9.4f} {seed:14.4f}")
    report(kw.get("results_dir", RESULTS_DIR))


def cmd_eval(a):
    from .runner import evaluate
    kw = {"results_dir": Path(a.results_dir)} if a.results_dir else {}
    _print_record(*evaluate(a.task, a.checkpoint, a.data, device=a.device, **kw))


def cmd_report(a):
    from .results import RESULTS_DIR, report
    for p in report(Path(a.results_dir) if a.results_dir else RESULTS_DIR):
        print("wrote", p)


def cmd_cost(a):
    import torch

    from .cost import count_cost, format_table
    try:
        shape = tuple(int(s) for s in (a.input or "1x3x224x224").lower().split("x"))
    except ValueError:
        raise BenchError(f"--input expects NxCxHxW like 1x3x224x224; got {a.input!r}") from None
    if a.backbone not in backbones.PRESETS:
        raise BenchError(f"unknown backbone {a.backbone!r}; expected one of {sorted(backbones.PRESETS)}")
    if a.task:  # the whole task model (e.g. a detector, split into backbone / neck / head)
        from .runner import build_task_model
        task, model = build_task_model(a.task, a.backbone, a.schedule, a.data, **_parse_opts(a.task, a))
        x = torch.zeros(shape if a.input else task.cost_input(a.schedule))
        print(format_table(count_cost(model, x, forward=task.cost_forward)))
        return
    overrides = dict(stem=a.stem) if a.stem else {}
    if a.opt_width:
        overrides["width"] = float(a.opt_width)
    model = backbones.build(a.backbone, **overrides)
    print(format_table(count_cost(model, torch.zeros(shape))))


def cmd_list(a):
    print("tasks:")
    for t in tasks.TASKS:
        mod = tasks.get(t)
        print(f"  {t:16s} metric {mod.METRIC['name']}; default data {mod.DEFAULT_DATA}")
        for s, spec in mod.SCHEDULES.items():
            print(f"    schedule {s:8s} {spec.get('label', '')}")
        for k, spec in getattr(mod, "TASK_OPTIONS", {}).items():
            print(f"    --{k.replace('_', '-'):15s} {spec.get('help', '')}")
    print("backbones:")
    for b, kw in backbones.PRESETS.items():
        print(f"  {b:16s} {kw}")
    print("variants (seed ablation rows, applied to binealnet; seed's CIFAR-10 accuracy at 400 epochs):")
    for v, (kw, acc) in backbones.SEED_VARIANTS.items():
        print(f"  {v:32s} {acc:.4f}  {kw}")
    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if shared.is_dir():
        print(f"datasets in {shared}:")
        for d in sorted(shared.iterdir()):
            print(f"  {d.name}")


def build_parser():
    p = argparse.ArgumentParser(prog="bench", description="BiNealBench: is a binary network a better deal than "
                                "INT8, task by task? Train, evaluate and cost BiNealNet / INT8 / FP32 backbones.",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train + evaluate one backbone on one task, write its record", epilog=EPILOG)
    _add_run_args(r)
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help="binealnet, int8 and fp32 with the same head, data and schedule; then report")
    _add_run_args(c, with_backbone=False)
    c.add_argument("--backbones", default="binealnet,int8,fp32", help="comma-separated (default all three)")
    c.set_defaults(func=cmd_compare)
    ab = sub.add_parser("ablate", help="the seed's ablation rows as variants of binealnet, beside its accuracies")
    _add_run_args(ab, with_backbone=False)
    ab.add_argument("--variants", default=None, help="comma-separated subset (default all)")
    ab.set_defaults(func=cmd_ablate)
    e = sub.add_parser("eval", help="evaluate a trained run's checkpoint on another dataset (writes a record)")
    e.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
    e.add_argument("--checkpoint", required=True, help="a .pth in a bench run's work dir")
    e.add_argument("--data", required=True, help="dataset root to evaluate on")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    e.add_argument("--results-dir", default=None)
    e.set_defaults(func=cmd_eval)
    rp = sub.add_parser("report", help="rebuild results/<task>.md, .png and results/README.md from the records")
    rp.add_argument("--results-dir", default=None)
    rp.set_defaults(func=cmd_report)
    co = sub.add_parser("cost", help="per-layer MACs / BOPs / OPs table of a backbone", epilog=EPILOG)
    co.add_argument("--backbone", default="binealnet")
    co.add_argument("--input", default=None, help="NxCxHxW (default 1x3x224x224, or the task schedule's input)")
    co.add_argument("--stem", default=None, choices=["imagenet", "cifar"], help="override the preset's stem")
    co.add_argument("--task", default=None, choices=sorted(tasks.TASKS),
                    help="count the whole task model (head, neck) instead of the bare backbone")
    co.add_argument("--schedule", default="short", help="with --task: the schedule whose input size is used")
    co.add_argument("--data", default=None, help="with --task: dataset root (class count; default the embedded one)")
    _add_task_option_flags(co)
    co.set_defaults(func=cmd_cost)
    ls = sub.add_parser("list", help="tasks, schedules, task options, backbones, variants, datasets")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
