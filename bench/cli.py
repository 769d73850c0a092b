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


def _task_or_none(name):
    try:
        return tasks.get(name) if name else None
    except BenchError:
        return None  # argparse's choices= says it is unknown


def _add_run_args(p, task, with_backbone=True):
    p.add_argument("--task", required=True, choices=tasks.names(), help="which task to train and evaluate")
    if with_backbone:
        rows = f" or a reference row: {', '.join(task.BASELINES)}" if task and task.BASELINES else ""
        p.add_argument("--backbone", default="binealnet", help=f"one of {sorted(backbones.PRESETS)}{rows} "
                                                                "(default binealnet)")
        p.add_argument("--variant", default=None, choices=sorted(backbones.VARIANTS), metavar="VARIANT",
                       help=f"a seed ablation row applied to the backbone: {', '.join(backbones.VARIANTS)}")
    p.add_argument("--data", default=None, help="dataset root (default: the task's embedded sample in data/)")
    p.add_argument("--schedule", default="smoke",
                   help="smoke (seconds) | short (minutes on CPU) | task-specific ones: "
                        + (", ".join(task.SCHEDULES) if task else "see `bench list`") + " (default smoke)")
    p.add_argument("--epochs", type=_int_at_least(1), default=None, help="override the schedule's epochs")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training device (AMP bf16 on cuda)")
    p.add_argument("--work-dir", default=None, help="checkpoints and logs (default work_dirs/<task>/<run>)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted run from its last checkpoint")
    p.add_argument("--seed", type=_int_at_least(0), default=None, help="random seed (default 0)")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch"],
                   help="multi-process training: torchrun --nproc-per-node N -m bench.cli run ... --launcher pytorch "
                        "(gloo on CPU, NCCL on CUDA); the schedule's batch is the global batch, split over the N")
    p.add_argument("--results-dir", default=None, help="where records go (default results/)")
    p.add_argument("--verbose", action="store_true", help="show mmengine's full log on the console (default: a "
                                                           "progress bar; the log goes to <work dir>/console.log)")
    defaults = ", ".join(f"{b}={r}" for b, r in task.DEFAULT_RECIPES.items()) if task else ""
    p.add_argument("--recipe", default=None,
                   help="how the backbone is trained (tasks/recipes.py; see `bench list`); with compare/ablate "
                        "also per backbone: binealnet=adamw-kd,int8=ptq. Default: the task's "
                        + (f"({defaults})" if defaults else "own optimizer"))
    p.add_argument("--teacher", default=None, help="a trained fp32 checkpoint of this task: distilled from "
                                                     "(adamw-kd, reactnet) or turned into INT8 (qat, ptq)")
    _add_task_option_flags(p, task)


def _int_at_least(lo):
    def parse(v):
        try:
            n = int(v)
        except ValueError:
            n = lo - 1
        if n < lo:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {lo}; got {v!r}")
        return n
    parse.__name__ = f"int>={lo}"
    return parse


def _seed_list(v):
    parse = _int_at_least(0)
    seeds = [parse(x.strip()) for x in v.split(",")]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is listed twice: {v!r}")
    return seeds


def _option_type(name, spec):
    conv = spec.get("type", str)

    def parse(v):
        try:
            return conv(v)
        except (ValueError, KeyError, TypeError):
            raise argparse.ArgumentTypeError(f"not a valid value for --{name}: {v!r}") from None
    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _add_task_option_flags(p, task):
    """The chosen task's own options as flags (parsed after --task, so tasks never collide)."""
    if task is None:
        p.epilog = ((p.epilog or "") + " Task options: give --task first, e.g. `bench run --task detection "
                    "--help`, or see `bench list`.").strip()
        return
    if not task.OPTIONS:
        return
    g = p.add_argument_group(f"options of task {task.NAME}")
    for k, spec in task.OPTIONS.items():
        flag = k.replace("_", "-")
        choices = spec.get("choices")
        default = spec.get("default")
        g.add_argument("--" + flag, dest="opt_" + k, default=None, metavar=k.upper() if not choices else None,
                       type=_option_type(flag, spec) if not choices else str, choices=choices,
                       help=f"{spec.get('help', '')}" + (f" (default {default})" if default is not None else ""))


def _parse_opts(task_name, args):
    """The task options the user gave (typed); the task fills in its defaults."""
    task = tasks.get(task_name)
    out = {}
    for dest, v in vars(args).items():
        if dest.startswith("opt_") and v is not None:
            k = dest[4:]
            out[k] = task.OPTIONS[k].get("type", str)(v) if task.OPTIONS[k].get("choices") else v
    return out


def _recipes(spec, backbone_names):
    """--recipe NAME (every backbone) or binealnet=NAME,int8=NAME (per backbone; others: default)."""
    if not spec:
        return {}
    if "=" not in spec:
        return {b: spec for b in backbone_names}
    out = {}
    for part in spec.split(","):
        b, _, r = part.partition("=")
        if b.strip() not in backbone_names:
            raise BenchError(f"--recipe {spec!r}: {b.strip()!r} is not one of the backbones run ({backbone_names})")
        out[b.strip()] = r.strip()
    return out


def _run_kwargs(a):
    kw = dict(data=a.data, schedule=a.schedule, epochs=a.epochs, device=a.device, resume=a.resume, seed=a.seed or 0,
              launcher=a.launcher, teacher=a.teacher, verbose=a.verbose, **_parse_opts(a.task, a))
    if a.results_dir:
        kw["results_dir"] = Path(a.results_dir)
    return kw


def _print_record(rec, path):
    if not rec:
        return
    m = rec["metric"]
    print(f"{rec['task']} {rec['backbone']}{' ' + rec['variant'] if rec['variant'] else ''}: "
          f"{m['name']} = {tasks.get(rec['task']).format_metric(m['name'], m['value'])}   OPs = {rec['cost']['ops'] / 1e6:.2f} M   "
          f"BOPs = {rec['cost']['bops'] / 1e9:.3f} G   ({rec['schedule']}, {rec['epochs']} epochs, "
          f"{rec['wall_s']:.0f} s)  -> {path}")


def cmd_run(a):
    from .runner import run
    _print_record(*run(a.task, a.backbone, variant=a.variant, work_dir=a.work_dir,
                       recipe=_recipes(a.recipe, [a.backbone]).get(a.backbone), **_run_kwargs(a)))


def cmd_compare(a):
    from .records import RESULTS_DIR
    from .tables import report
    from tasks.recipes import get as get_recipe

    from .runner import run
    kw = _run_kwargs(a)
    names = [b.strip() for b in a.backbones.split(",")]
    recipes = _recipes(a.recipe, names)
    task = tasks.get(a.task)
    def uses_teacher(b):
        name = recipes.get(b) or task.DEFAULT_RECIPES.get(b)
        r = get_recipe(name) if name and b not in task.BASELINES else None
        return bool(r) and (r.distill or r.from_teacher)
    needs_teacher = [b for b in names if b != "fp32" and uses_teacher(b)]
    if needs_teacher and not kw["teacher"]:
        # the teacher is this comparison's own fp32 run: train it first and hand its checkpoint on
        if "fp32" in names:
            names = ["fp32"] + [b for b in names if b != "fp32"]
        elif any(b in recipes for b in needs_teacher):  # asked for by name (a default falls back by itself)
            raise BenchError(f"{', '.join(needs_teacher)}: their recipes need the fp32 model; add fp32 to "
                             "--backbones or give --teacher")
        else:
            needs_teacher = []
    given_teacher = kw.pop("teacher")
    if a.seeds is not None and a.seed is not None:
        raise BenchError("give --seed or --seeds, not both")
    seeds = a.seeds if a.seeds is not None else [kw["seed"]]
    widths = [kw.get("width")]
    if a.widths is not None:  # a width sweep: each width a whole comparison (its own fp32 teacher included)
        from .tradeoff import parse_widths
        if "width" not in task.OPTIONS:
            raise BenchError(f"task {a.task} has no width option: --widths does not apply")
        if kw.get("width") is not None:
            raise BenchError("give --width or --widths, not both")
        widths = parse_widths(a.widths)
    if not a.verbose:
        print(f"bench compare: {a.task}, {', '.join(names)} at schedule {a.schedule}, seed(s) "
              f"{', '.join(map(str, seeds))}; each run's log: work_dirs/{a.task}/<run>/console.log (--verbose: here)")
    done = []
    for width in widths:
        if width is not None:
            kw["width"] = width
        for seed in seeds:  # each seed is a whole comparison, its own fp32 teacher included
            kw["seed"], teacher = seed, given_teacher
            for b in names:
                rec, path = run(a.task, b, recipe=recipes.get(b), teacher=teacher if uses_teacher(b) else None, **kw)
                _print_record(rec, path)
                done.append(rec)
                if b == "fp32" and needs_teacher and not teacher:
                    teacher = (Path(rec["config"]["work_dir"]) / "last_checkpoint").read_text().strip()
    written = report(kw.get("results_dir", RESULTS_DIR))
    if a.verbose:
        for p in written:
            print("wrote", p)
    else:
        print(f"tables rebuilt from every record: {', '.join(str(p) for p in written if p.suffix == '.md')}")
    from .tables import console_table
    print(console_table([r for r in done if r]))


def cmd_ablate(a):
    from .records import RESULTS_DIR
    from .tables import report
    from .runner import run
    kw = _run_kwargs(a)
    from .reference import SEED_CIFAR10_TOP1
    rows = []
    for v in (a.variants.split(",") if a.variants else backbones.VARIANTS):
        rec, path = run(a.task, "binealnet", variant=v, recipe=a.recipe, **kw)
        _print_record(rec, path)
        rows.append((v, rec["metric"]["value"], SEED_CIFAR10_TOP1[v]))
    print(f"\n{'variant':32s} {'measured':>9s} {'seed (400 ep)':>14s}")
    for v, got, seed in rows:
        print(f"{v:32s} {got:9.4f} {seed:14.4f}")
    report(kw.get("results_dir", RESULTS_DIR))


def cmd_eval(a):
    from .runner import evaluate
    kw = {"results_dir": Path(a.results_dir)} if a.results_dir else {}
    _print_record(*evaluate(a.task, a.checkpoint, a.data, device=a.device, **kw))


def cmd_report(a):
    from .records import RESULTS_DIR
    from .tables import report
    folder = Path(a.results_dir) if a.results_dir else RESULTS_DIR
    written = report(folder)
    if not written:
        print(f"bench report: nothing to report: no records in {folder}/<task>/*.json (`bench run` writes them)")
    for p in written:
        print("wrote", p)


def cmd_cost(a):
    import torch

    from .cost import count_cost, format_table
    try:
        shape = tuple(int(s) for s in (a.input or "1x3x224x224").lower().split("x"))
    except ValueError:
        raise BenchError(f"--input expects NxCxHxW like 1x3x224x224; got {a.input!r}") from None
    if a.task:  # the whole task model (e.g. a detector, split into backbone / neck / head)
        from .runner import build_task_model
        task, model = build_task_model(a.task, a.backbone, a.schedule, a.data, **_parse_opts(a.task, a))
        xs = (torch.zeros(shape),) if a.input else task.example_inputs(a.schedule)
        report = count_cost(model, xs, forward=lambda m, xs: task.forward_for_cost(m, *xs))
    else:
        try:
            model = backbones.build(a.backbone, stem=a.stem, width=a.width)
        except ValueError as e:
            raise BenchError(str(e)) from None
        report = count_cost(model, torch.zeros(shape))
    print(format_table(report))
    if a.cycles:
        from .cycles import count_cycles, format_cycles
        print()
        print(format_cycles(count_cycles(report, a.k_binary)))


def cmd_deploy(a):
    from .deploy import run
    run(a)


def cmd_campaign(a):
    import datetime as dt
    import time

    from . import campaign as cg
    from .results import RESULTS_DIR
    m = cg.load_manifest(a.manifest)
    if a.work_root:
        m.work_root = Path(a.work_root).resolve()
    results = Path(a.results_dir) if a.results_dir else RESULTS_DIR
    try:
        sessions = {int(x) for x in a.session.split(",")} if a.session else None
    except ValueError:
        raise BenchError(f"--session expects numbers like 1 or 1,2; got {a.session!r}") from None
    if a.prepare:
        return cg.prepare(m, sessions)
    start = time.time()
    deadline = start + a.budget_s if a.budget_s is not None else float("inf")
    if a.until:
        deadline = min(deadline, cg.parse_until(a.until, dt.datetime.now()).timestamp())
    if deadline <= start:
        raise BenchError(f"the deadline is already past ({a.until or f'--budget-s {a.budget_s}'})")
    print(cg.format_plan(cg.plan(m, results, sessions, a.device, a.smoke), a.parallel, a.budget_s))
    if a.dry_run:
        return
    env = None
    if a.wheels:
        env = cg.install_wheels(Path(a.wheels))
        cg.unpack_data(m, sessions)
    rows = cg.execute(m, results, deadline, a.parallel, sessions, a.device, a.smoke, env)
    print(f"\n{'run':36s} {'state':>9s} {'wall':>7s}  note")
    for r in rows:
        wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") else ""
        print(f"{r['id']:36s} {r['state']:>9s} {wall:>7s}  {r['note']}")
    if a.pack:
        print("packed", cg.pack(m, rows, results, Path(a.pack), start))
    if any(r["state"] in ("recorded",) for r in rows):
        from .results import report
        report(results)


def cmd_roofline(a):
    from .roofline import main as roofline_main
    roofline_main(["--backbones", a.backbones, "--size", str(a.size), "--ghz", str(a.ghz)])


def cmd_list(a):
    from .reference import SEED_CIFAR10_TOP1, SEED_SOURCE
    print("tasks:")
    for t, task in tasks.TASKS.items():
        print(f"  {t:16s} {task.DESCRIPTION}; metric {task.METRIC['name']}; default data {task.DEFAULT_DATA}")
        for s, spec in task.SCHEDULES.items():
            print(f"    schedule {s:8s} {spec.get('label', '')}")
        for k, spec in task.OPTIONS.items():
            print(f"    --{k.replace('_', '-'):15s} {spec.get('help', '')}")
        if task.BASELINES:
            print(f"    reference rows (--backbone): {', '.join(task.BASELINES)}")
        if task.DEFAULT_RECIPES:
            print(f"    default recipes: {', '.join(f'{b}={r}' for b, r in task.DEFAULT_RECIPES.items())}")
    from tasks.recipes import RECIPES, TASK_DEFAULT
    print("recipes (--recipe; tasks/recipes.py):")
    for r in RECIPES.values():
        print(f"  {r.name:12s} {r.description}")
    print(f"  {TASK_DEFAULT:12s} the task's own optimizer and lr schedule (what a backbone without a default "
          "recipe trains with)")
    print("backbones:")
    for b, kw in backbones.PRESETS.items():
        print(f"  {b:16s} {kw}")
    print(f"variants (seed ablation rows, applied to binealnet; {SEED_SOURCE}):")
    for v, kw in backbones.VARIANTS.items():
        print(f"  {v:32s} {SEED_CIFAR10_TOP1[v]:.4f}  {kw}")
    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if shared.is_dir():
        print(f"datasets in {shared}:")
        for d in sorted(shared.iterdir()):
            print(f"  {d.name}")


def _task_in(argv) -> str | None:
    """The value of --task in argv (``--task X`` or ``--task=X``), read before the real parse so
    that only that task's options are added."""
    for i, tok in enumerate(argv):
        if tok == "--task" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--task="):
            return tok.split("=", 1)[1]
    return None


def build_parser(task_name=None, cmd=None):
    task = _task_or_none(task_name)
    p = argparse.ArgumentParser(prog="bench", description="BiNealBench: is a binary network a better deal than "
                                "INT8, task by task? Train, evaluate and cost BiNealNet / INT8 / FP32 backbones.",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train + evaluate one backbone on one task, write its record", epilog=EPILOG)
    _add_run_args(r, task)
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help="binealnet, int8 and fp32 with the same head, data and schedule; then report")
    _add_run_args(c, task, with_backbone=False)
    default_rows = ",".join(list(backbones.PRESETS) + list(task.BASELINES if task else ()))
    c.add_argument("--backbones", default=default_rows, help=f"comma-separated (default {default_rows})")
    c.add_argument("--widths", default=None, metavar="W,W,...",
                   help="a width sweep: every backbone at each width (e.g. 0.5,1.0,1.5,2.0); records carry the width; "
                   "python -m bench.tradeoff then draws the fronts and iso-cost columns")
    c.add_argument("--seeds", type=_seed_list, default=None, metavar="S,S,...",
                   help="run the whole comparison once per seed, e.g. 0,1,2 (instead of --seed); the tables add "
                        "a mean row over the seeds")
    c.set_defaults(func=cmd_compare)
    ab = sub.add_parser("ablate", help="the seed's ablation rows as variants of binealnet, beside its accuracies")
    _add_run_args(ab, task, with_backbone=False)
    ab.add_argument("--variants", default=None, help="comma-separated subset (default all)")
    ab.set_defaults(func=cmd_ablate)
    e = sub.add_parser("eval", help="evaluate a trained run's checkpoint on another dataset (writes a record)")
    e.add_argument("--task", required=True, choices=tasks.names())
    e.add_argument("--checkpoint", required=True, help="a .pth in a bench run's work dir")
    e.add_argument("--data", required=True, help="dataset root to evaluate on")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    e.add_argument("--results-dir", default=None)
    e.set_defaults(func=cmd_eval)
    rp = sub.add_parser("report", help="rebuild results/<task>.md, .png and results/README.md from the records")
    rp.add_argument("--results-dir", default=None)
    rp.set_defaults(func=cmd_report)
    co = sub.add_parser("cost", help="per-layer MACs / BOPs / OPs table of a backbone or a whole task model",
                        epilog=EPILOG)
    co.add_argument("--backbone", default="binealnet")
    co.add_argument("--input", default=None, help="NxCxHxW (default 1x3x224x224, or the task's example input)")
    co.add_argument("--stem", default=None, choices=["imagenet", "cifar"], help="override the preset's stem")
    co.add_argument("--task", default=None, choices=tasks.names(),
                    help="count the whole task model (head, neck) instead of the bare backbone")
    co.add_argument("--schedule", default="short", help="with --task: the schedule whose input size is used")
    co.add_argument("--data", default=None, help="with --task: dataset root (class count; default the embedded one)")
    co.add_argument("--cycles", action="store_true", help="also systolic-array cycles per layer (SCALE-Sim v3, "
                    "32x32 weight-stationary; see bench/cycles.py)")
    co.add_argument("--k-binary", type=int, default=32, help="with --cycles: XNOR-popcount MACs per binary PE per "
                    "cycle (an INT8 PE does 1)")
    if task is None:
        co.add_argument("--width", type=float, default=None, help="backbone width multiplier")
    _add_task_option_flags(co, task)
    co.set_defaults(func=cmd_cost)
    dp = sub.add_parser("deploy", help="classification checkpoints on real INT8 / packed 1-bit kernels: export, size, "
                        "latency, deployed top-1 (results/deploy/, results/deploy.md)")
    if cmd == "deploy":  # its flags come with its module (torch and the kernels): loaded only when asked for
        from .deploy import add_args as _deploy_args
        _deploy_args(dp)
    dp.set_defaults(func=cmd_deploy)
    cp = sub.add_parser("campaign", help="run a manifest's runs (campaigns/*.toml) in dependency order, several at "
                        "once, until a deadline; records in results/ are its state, so a later call continues")
    cp.add_argument("manifest", help="a campaign manifest, e.g. campaigns/gpu.toml")
    cp.add_argument("--session", default=None, help="only the runs of these sessions, e.g. 1 or 1,2 (default all)")
    cp.add_argument("--parallel", type=_int_at_least(1), default=1, help="runs at once on the one device (default 1)")
    cp.add_argument("--budget-s", type=float, default=None, help="start nothing new after this many seconds, and "
                    "stop the runs still going just before it (they resume next time)")
    cp.add_argument("--until", default=None, help="the same as a deadline: HH:MM today or an ISO date-time")
    cp.add_argument("--dry-run", action="store_true", help="print the plan, each run's state and estimate; run nothing")
    cp.add_argument("--smoke", action="store_true", help="every schedule replaced by smoke, on the CPU, on the "
                    "embedded samples: the whole flow in minutes")
    cp.add_argument("--device", default=None, choices=["cpu", "cuda"], help="override the manifest's device")
    cp.add_argument("--results-dir", default=None, help="where records go and are looked up (default results/)")
    cp.add_argument("--work-root", default=None, help="runs' work dirs go to WORK_ROOT/<manifest name>/<run id> "
                    "(default work_dirs/campaign)")
    cp.add_argument("--pack", default=None, help="write the new records, the logs and a summary to this .tar.gz")
    cp.add_argument("--wheels", default=None, help="install these carried wheels for the runs (a GPU machine "
                    "without OpenMMLab) and unpack the manifest's carried data archives")
    cp.add_argument("--prepare", action="store_true", help="here, before a device call: zip each task's data from "
                    "its source into its archive and fetch the wheels (scripts/fetch_device_wheels.sh)")
    cp.set_defaults(func=cmd_campaign)
    rf = sub.add_parser("roofline", help="per-instruction-set peak MACs/cycle (int8, binary, fp32) and each backbone's "
                        "floor latency (AVX2, AVX-512 VNNI / VPOPCNTDQ, AMX-INT8, Armv8.2 NEON)")
    rf.add_argument("--backbones", default="binealnet,binealnet@1.0,int8,fp32",
                    help="comma-separated presets, preset@width for another width")
    rf.add_argument("--size", type=int, default=224, help="input height = width")
    rf.add_argument("--ghz", type=float, default=3.0, help="clock for the ms floors")
    rf.set_defaults(func=cmd_roofline)
    ls = sub.add_parser("list", help="tasks, schedules, task options, backbones, variants, datasets")
    ls.set_defaults(func=cmd_list)
    return p


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # the same clean stop as Ctrl-C: a message, and --resume continues


def main(argv=None):
    import signal
    if argv is None:  # the command line, not a test calling main()
        signal.signal(signal.SIGTERM, _sigterm)
    argv = list(sys.argv[1:] if argv is None else argv)
    task_name = _task_in(argv)
    parser = build_parser(task_name, next((a for a in argv if not a.startswith("-")), None))
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "cmd", None) == "eval":
        flag = next((u for u in unknown if u.startswith("--")), unknown[0])
        parser.error(f"{flag} is not an option of bench eval: it evaluates the checkpoint with its own run's task "
                     "options (read from the bench_run.json beside it); see `bench eval --help`")
    if unknown:
        task = _task_or_none(task_name)
        flag = next((u for u in unknown if u.startswith("--")), unknown[0])
        hint = (f"; the options of task {task.NAME}: {', '.join('--' + k.replace('_', '-') for k in task.OPTIONS)}"
                " (see `bench list`)" if task else "")
        what = f"is not an option of task {task.NAME}" if task and flag.startswith("--") else "is not understood"
        parser.error(f"{flag} {what}{hint}")
    if getattr(args, "cmd", None) == "cost" and not hasattr(args, "width"):
        args.width = getattr(args, "opt_width", None)
    try:
        args.func(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (Ctrl-C or SIGTERM); rerun with --resume to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
