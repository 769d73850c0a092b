"""Markdown tables derived from the records alone: one page per task and the overview (``bench report``)."""
from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from tasks.recipes import TASK_DEFAULT

from .records import RESULTS_DIR, _safe_name, atomic_write, load_deployments, load_records
from .reference import SEED_SOURCE


def _fmt(x, scale=1.0, digits=4):
    return "" if x is None else f"{x / scale:.{digits}g}"


def _options(r) -> dict:
    """The record's task options as rows compare them: each backbone's ``init_from`` checkpoint is
    its own file, so it stands as the kind of run it came from (task, schedule, data)."""
    opts = dict(r.get("task_options", {}))
    run = (r.get("init_from") or {}).get("run")
    if opts.get("init_from") and run:
        opts["init_from"] = (f"{run.get('task')} `{run.get('schedule')}` run on {Path(str(run.get('data'))).name} "
                             "of the same backbone")
    return opts


def _group_key(r):
    """Records comparable in one table: same schedule (and epochs), data, seed, task options."""
    return (r["schedule"], r["epochs"], r["data"]["name"], r["data"].get("sha256", "")[:12],
            json.dumps(_options(r), sort_keys=True), r["seed"])  # seeds apart: no best-of-seeds pick


def _settings(r) -> str:
    """The resolved choices a reader needs to compare rows (from the config dump, not the flags)."""
    b = r.get("config", {}).get("bench", {})
    width = b.get("width") or (b.get("backbone") or {}).get("width")
    if width is None:  # the preset's own width
        import backbones
        width = backbones.PRESETS.get(r["backbone"], {}).get("width")
    parts = [f"{k}={b[k]}" for k in ("model", "head_precision") if k in b]
    recipe = r.get("recipe", {}).get("name")
    return ", ".join(parts + [f"width={width}"] + ([f"recipe={recipe}"] if recipe else []))


def _backbone_ops(r):
    parts = r["cost"].get("parts", {})
    return parts["backbone"]["ops"] if "backbone" in parts else r["cost"]["ops"]


def _latency_ms(r):
    sp = r.get("speed", {})
    if "latency_ms_b1" in sp:
        return sp["latency_ms_b1"]
    # records before latency was measured: images_per_s was the mean rate at batch 1
    return 1e3 / sp["images_per_s"] if sp.get("images_per_s") else None


def _throughput(r):
    return r.get("speed", {}).get("throughput_img_s")


def _input(r):
    shapes = r.get("cost_input", [])
    if shapes and not isinstance(shapes[0], list):  # one input, older records
        shapes = [shapes]
    return " + ".join("x".join(map(str, s)) for s in shapes)


def _task(name):
    """The registered task (for its metric formatting), or the base defaults for an unknown one."""
    import tasks
    return tasks.TASKS.get(name) or tasks.Task()


def _metric_cols(recs):
    keys = []
    for r in recs:
        for k, v in r["metric"].get("secondary", {}).items():
            if k not in keys and isinstance(v, (int, float)):  # lists (per-class IoU) stay in the record
                keys.append(k)
    return keys


def _is_reference(r) -> bool:
    """A reference row (bicubic, SIFT, detection's frozen-random): not one of the backbone presets."""
    import backbones
    return r["backbone"] not in backbones.PRESETS


def _groups(records):
    """Comparable records by ``_group_key``; an untrained row (0 epochs: a reference such as bicubic,
    or INT8 by post-training quantization) joins every group of its schedule, data and options."""
    groups = defaultdict(list)
    for r in records:
        if r["epochs"]:
            groups[_group_key(r)].append(r)
    for r in records:
        if not r["epochs"]:
            k = _group_key(r)
            homes = [g for g in groups if g[0] == k[0] and g[2:] == k[2:]] or [k]
            for g in homes:
                groups[g].append(r)
    return groups


def _seed_sets(groups):
    """Of ``_groups``' output, the trained rows of one config (its group key less the seed) run at two
    or more seeds: {config key: {(backbone, variant, settings): {seed: record}}}. Untrained rows (PTQ,
    bicubic) do not depend on the seed and stay out."""
    sets = defaultdict(lambda: defaultdict(dict))
    for key, recs in groups.items():
        for r in recs:
            if r["epochs"]:
                sets[key[:-1]][(r["backbone"], r["variant"], _settings(r))][r["seed"]] = r
    return {k: {row: by_seed for row, by_seed in rows.items() if len(by_seed) > 1}
            for k, rows in sets.items() if any(len(by_seed) > 1 for by_seed in rows.values())}


def _seed_stats(by_seed: dict) -> dict:
    values = [r["metric"]["value"] for r in by_seed.values()]
    return dict(n=len(values), mean=statistics.mean(values), sd=statistics.stdev(values), min=min(values),
                max=max(values), seeds=sorted(by_seed))



def _deployed_ms(r, threads="1"):
    return (r.get("_deployed") or {}).get("latency_ms_batch1", {}).get(threads)


def _fastest(r) -> tuple[float | None, str]:
    """(batch-1 one-thread ms, engine) of a deployed run on the fastest engine `bench deploy` measured
    (OpenVINO or ONNX Runtime may beat torch.ops.quantized); its own kernel where no engine ran."""
    d = r.get("_deployed") or {}
    best = d.get("fastest") or {}
    if not best.get("latency_ms_batch1_1T") and (d.get("engines") or {}).get("engines"):
        from .deploy import fastest  # a dense task's record names its engines, not the fastest of them
        engine, ms = fastest(d)
        best = dict(engine=engine, latency_ms_batch1_1T=ms)
    if best.get("latency_ms_batch1_1T"):
        return best["latency_ms_batch1_1T"], best["engine"].split()[0]
    return _deployed_ms(r), "packed 1-bit" if r.get("backbone") == "binealnet" else "torch"


DEPLOY_COLS = ["deployed b1 1T (ms)", "deployed b1 2T (ms)", "deployed file (MB)", "deployed metric", "kernel"]


def _deploy_cells(r) -> list[str]:
    d = r.get("_deployed")
    if not d:
        return [""] * len(DEPLOY_COLS)
    metric = d.get("metric_deployed", d.get("top1_deployed"))  # dense tasks: the backbone deployed, timed alone
    return [_fmt(_deployed_ms(r, "1"), 1, 3), _fmt(_deployed_ms(r, "2"), 1, 3),
            _fmt(d.get("export_bytes"), 1e6, 3), _fmt(metric, 1, 4), d.get("kernel", "")]


def task_table(records: list[dict]) -> str:
    """Markdown: one table per comparable group, rows sorted by OPs."""
    task = records[0]["task"]
    fmt = _task(task).format_metric
    lines = [f"# {task}: BiNealNet vs INT8 vs FP32", "",
             "Generated by `bench report` from the JSON records in this folder; do not edit by hand.",
             "OPs = FP MACs + BOPs/64; BOPs = MACs x w_bits x a_bits over layers below 16 bits "
             "(Bi-Real / ReActNet convention). Cost is for the whole model at the input shown, batch 1.",
             "Speed is the network's forward without post-processing, fake-quant arithmetic on the run's device "
             "(a simulation, not deployed kernels): latency at batch 1 (median), throughput at the batch shown.",
             f"Seed acc. = {SEED_SOURCE}.",
             "Deployed columns (where `bench deploy` ran on the run's checkpoint): real INT8 / packed 1-bit kernels "
             "on the CPU named in results/deploy.md, batch-1 latency at 1 and 2 threads, exported file size, and "
             "the deployed model's metric on the test set.", ""]
    groups = _groups(records)
    cands = headline_candidates(records)
    top = cands[0][1] if cands else None
    lines += _tradeoff_section(task, records)
    lines += ["## Summary: every comparable group", "", summary(records)]
    order = sorted(groups, key=lambda k: k[:-1] != top)  # the headline's groups first, then the rest as they came
    for i, key in enumerate(order):
        recs = groups[key]
        if i == 0 and key[:-1] == top:
            lines += ["## Headline budget (results/README.md)", ""]
        if key[:-1] != top and (i == 0 or order[i - 1][:-1] == top):
            lines += ["## Other budgets, recipe sweeps, ablations and diagnostics", ""]
        r0 = recs[0]
        sec = _metric_cols(recs)
        init = " from a pretrained backbone" if r0.get("init_from") else ""
        lines += [f"### schedule `{r0['schedule']}` ({r0['epochs']} epochs), data `{r0['data']['name']}`{init}, "
                  f"seed {r0['seed']}",
                  "", f"- schedule: {r0.get('schedule_label', r0['schedule'])}; epochs run: {r0['epochs']}",
                  f"- data: `{r0['data']['path']}` ({r0['data'].get('images', r0['data'].get('files'))} images, sha256 "
                  f"`{r0['data'].get('sha256', '')[:16]}`)",
                  f"- options: {_options(r0)}; seed {r0['seed']}; device "
                  f"{'; '.join(sorted({r['device'] for r in recs}))}", ""]  # rows of a group can differ
        head = (["backbone", "variant", "settings", r0["metric"]["name"]] + sec +
                ["OPs (M)", "backbone OPs (M)", "BOPs (G)", "FP MACs (M)", "params (M)", "size (MB)", "input",
                 "latency b1 (ms)", "throughput (img/s)", "wall (s)", "seed acc.", "record"])
        deployed = any(r.get("_deployed") for r in recs)
        head += DEPLOY_COLS if deployed else []
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sorted(recs, key=lambda r: r["cost"]["ops"]):
            c = r["cost"]
            tp = _throughput(r)
            row = [r["backbone"], r["variant"] or "", _settings(r), fmt(r["metric"]["name"], r["metric"]["value"])]
            row += [fmt(k, r["metric"].get("secondary", {}).get(k)) for k in sec]
            if _is_reference(r) and not c["macs"]:  # e.g. SIFT: no conv layers for the counter to see
                row += ["n/a"] * 6
            else:
                row += [_fmt(c["ops"], 1e6), _fmt(_backbone_ops(r), 1e6), _fmt(c["bops"], 1e9),
                        _fmt(c["macs_by_bits"].get("32/32", 0), 1e6), _fmt(c["params"], 1e6),
                        _fmt(c["size_bits"], 8e6)]
            row += [_input(r), _fmt(_latency_ms(r), 1, 3),
                    f"{tp:.3g} @b{r['speed']['throughput_batch']}" if tp else "", f"{r['wall_s']:.0f}",
                    _fmt(r.get("seed_reported")), f"[json]({r['_file']})"]
            row += _deploy_cells(r) if deployed else []
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    seed_sets = _seed_sets(groups)
    lines += ["## Seeds", ""] if seed_sets else []
    for key, rows in seed_sets.items():
        r0 = next(iter(next(iter(rows.values())).values()))
        name = r0["metric"]["name"]
        lines += [f"### Across seeds: schedule `{r0['schedule']}` ({r0['epochs']} epochs), data `{r0['data']['name']}`",
                  "", f"- options: {_options(r0)}; the rows above that ran at two or more seeds; s.d. is the "
                  "sample standard deviation (n - 1)", "",
                  f"| backbone | variant | settings | seeds | {name} mean | s.d. | min | max | per seed |",
                  "|" + "---|" * 9]
        order = sorted(rows, key=lambda row: (row[0], row[1] or "", row[2]))  # variant None sorts first
        for (backbone, variant, settings), by_seed in ((row, rows[row]) for row in order):
            st = _seed_stats(by_seed)
            per_seed = ", ".join(f"s{sd} {fmt(name, by_seed[sd]['metric']['value'])}" for sd in st["seeds"])
            lines.append("| " + " | ".join([backbone, variant or "", settings, str(st["n"])] +
                                           [fmt(name, st["mean"]), f"{st['sd']:.2g}", fmt(name, st["min"]),
                                            fmt(name, st["max"]), per_seed]) + " |")
        lines.append("")
    return "\n".join(lines)


def _tradeoff_section(task: str, records: list[dict]) -> list[str]:
    """The task page's link to its trade-off pages (one per swept schedule) and the iso-latency answer."""
    from .tradeoff import swept_schedules
    scheds = swept_schedules(records, task)
    if not scheds:
        return ["## Speed against accuracy", "", "No width sweep yet: every precision ran at one width, so there is "
                "no curve to compare at equal cost (`bench compare --widths 0.5,1.0,1.5,2.0`).", ""]
    lines = ["## Speed against accuracy (width sweeps)", "",
             f"At INT8's deployed latency, binealnet scores: {_iso_latency_cell(task, records)}.", ""]
    for sched in scheds:
        lines += [f"- `{sched}`: [Pareto fronts and iso-cost tables](tradeoff/{task}_{sched}.md) on OPs, BOPs, "
                  "deployed latency and systolic cycles", "", f"![{task} {sched} fronts](tradeoff/{task}_{sched}.png)",
                  ""]
    return lines


def _by_precision(recs: dict) -> dict:
    """{'binary': record, 'int8': ..., 'fp32': ...} from {backbone name: record} of one group."""
    import backbones
    out = {}
    for name, r in recs.items():
        if name in backbones.PRESETS:
            out.setdefault(backbones.precision_of(name), r)
    return out


def _row_label(task, by):
    """(metric name, model label) of a group: the model, and where its backbones were pretrained."""
    any_rec = next((r for r in by.values() if not _is_reference(r)), next(iter(by.values())))
    name, model = any_rec["metric"]["name"], any_rec["config"].get("bench", {}).get("model", "linear head")
    init = (any_rec.get("init_from") or {}).get("run")
    if init:  # pretrained backbones: not comparable with the same model from scratch
        model += f", backbone from {init.get('task')} `{init.get('schedule')}`"
    return name, model


def _ratio(p, f):
    """BNN/INT8 of f over the precisions' records, or '' where either is missing."""
    if "binary" not in p or "int8" not in p or not f(p["int8"]) or f(p["binary"]) is None:
        return ""
    return f"{f(p['binary']) / f(p['int8']):.3f}"


def _overview_row(key, by, sched_cell, metric_cells=None, metric_ratio=None, latency=True) -> str:
    """One overview line for the group ``key`` = (task, schedule, epochs, data, ...) whose records by
    backbone are ``by``; a seed-mean row passes its own metric cells and ratio and no latencies."""
    task, data = key[0], key[3]
    p = _by_precision(by)
    name, model = _row_label(task, by)
    fmt = lambda v: _task(task).format_metric(name, v)  # noqa: E731
    if metric_cells is None:
        metric_cells = [fmt(p[prec]["metric"]["value"]) if prec in p else "" for prec in ("binary", "int8", "fp32")]
        metric_ratio = _ratio(p, lambda r: r["metric"]["value"])
    ref = "; ".join(f"{r['backbone']} {fmt(r['metric']['value'])}" for b, r in sorted(by.items()) if _is_reference(r))
    ops = lambda prec: _fmt(p[prec]["cost"]["ops"], 1e6) if prec in p else ""  # noqa: E731
    lat = [_ratio(p, _latency_ms), _ratio(p, _deployed_ms)] if latency else ["", ""]
    cells = ([f"[{task}]({task}.md)", model, sched_cell, data, name] + metric_cells +
             [ref, metric_ratio, _ratio(p, lambda r: r["cost"]["ops"]), _ratio(p, _backbone_ops)] + lat +
             [ops("binary"), ops("int8")])
    return "| " + " | ".join(cells) + " |"


def _overview_seed_row(key, rows) -> str:
    """The mean over seeds of a config run at two or more seeds (``_seed_sets``): metric mean +- s.d.
    per backbone, BNN/INT8 of the means, and the range of the per-seed ratios."""
    task, sched, epochs = key[:3]
    best = {}  # per backbone: the settings run at the most seeds (then the best mean)
    for (backbone, variant, _), by_seed in rows.items():
        first = next(iter(by_seed.values()))
        if variant is None and not _is_reference(first):
            st = _seed_stats(by_seed)
            sign = 1 if first["metric"]["higher_is_better"] else -1
            if backbone not in best or (st["n"], sign * st["mean"]) > (best[backbone][1]["n"],
                                                                        sign * best[backbone][1]["mean"]):
                best[backbone] = (by_seed, st)
    if not best:
        return ""
    by = {b: next(iter(by_seed.values())) for b, (by_seed, _) in best.items()}
    p = {prec: best[r["backbone"]] for prec, r in _by_precision(by).items()}
    name, _ = _row_label(task, by)
    fmt = lambda v: _task(task).format_metric(name, v)  # noqa: E731
    cells = [f"{fmt(p[prec][1]['mean'])} ± {p[prec][1]['sd']:.2g} (n={p[prec][1]['n']})" if prec in p else ""
             for prec in ("binary", "int8", "fp32")]
    ratio = ""
    both = sorted(set(p["binary"][0]) & set(p["int8"][0])) if "binary" in p and "int8" in p else []
    value = lambda prec, s: p[prec][0][s]["metric"]["value"]  # noqa: E731
    if len(both) > 1 and statistics.mean(value("int8", s) for s in both):
        # over the seeds both ran: a seed one of them lacks would bias the ratio of the means
        means = [statistics.mean(value(prec, s) for s in both) for prec in ("binary", "int8")]
        per_seed = [value("binary", s) / value("int8", s) for s in both if value("int8", s)]
        ratio = f"{means[0] / means[1]:.3f} (per seed {min(per_seed):.3g} to {max(per_seed):.3g}"
        common = set(both) == set(p["binary"][0]) == set(p["int8"][0])
        ratio += ")" if common else f"; seeds {', '.join(map(str, both))})"
    seeds = sorted({s for by_seed, _ in best.values() for s in by_seed})
    return _overview_row(key, by, f"{sched} ({epochs} ep, mean of seeds {', '.join(map(str, seeds))})", cells, ratio,
                         latency=False)


def summary(records: list[dict]) -> str:
    """One row per (task, comparable group) with BNN/INT8 ratios of metric, OPs, backbone OPs, latency."""
    lines = ["Ratios are BiNealNet / INT8 within one task, schedule and dataset (no variant). "
             "Latency: batch 1, fake-quant on the run's device (a simulation, not deployed kernels); deployed "
             "latency: `bench deploy` on real kernels, batch 1, one thread; the whole classifier, a detector's "
             "backbone alone (results/deploy.md).",
             "Reference: a level to beat that is not a backbone preset (bicubic upsampling, SIFT, a detector on a "
             "frozen random backbone). Where a group holds several "
             "recipes of one backbone (a recipe sweep), its best is shown.", "",
             "| task | model | schedule | data | metric | binealnet | int8 | fp32 | reference | metric BNN/INT8 | "
             "OPs BNN/INT8 | backbone OPs BNN/INT8 | latency BNN/INT8 | deployed latency 1T BNN/INT8 | "
             "OPs binealnet (M) | OPs int8 (M) |",
             "|" + "---|" * 16]
    by_task = defaultdict(list)
    for r in records:
        if not r["variant"]:
            by_task[r["task"]].append(r)
    groups = {}
    for task, recs in by_task.items():
        for key, rs in _groups(recs).items():
            better = (lambda a, b: a > b) if rs[0]["metric"]["higher_is_better"] else (lambda a, b: a < b)
            by = {}
            for r in rs:  # several recipes of one backbone (a sweep): the overview shows its best
                if r["backbone"] not in by or better(r["metric"]["value"], by[r["backbone"]]["metric"]["value"]):
                    by[r["backbone"]] = r
            groups[(task,) + key] = by
    rows = []  # (task, schedule, epochs, data, data hash, options, seed or inf for the seed mean), line
    for key, by in groups.items():
        seed = f", seed {key[-1]}" if key[-1] else ""
        rows.append((key, _overview_row(key, by, f"{key[1]} ({key[2]} ep{seed})")))
    for task, recs in by_task.items():
        for key, seed_rows in _seed_sets(_groups(recs)).items():
            line = _overview_seed_row((task,) + key, seed_rows)
            rows += [((task,) + key + (math.inf,), line)] if line else []
    lines += [line for _, line in sorted(rows, key=lambda kv: kv[0])]
    return "\n".join(lines) + "\n"


def console_table(recs: list[dict]) -> str:
    """The records of one comparison as a plain-text table for the terminal, with BNN/INT8 per seed."""
    if not recs:
        return ""
    fmt = _task(recs[0]["task"]).format_metric
    name = recs[0]["metric"]["name"]
    width = lambda r: (r.get("identity") or {}).get("width")  # noqa: E731
    # one comparison: a seed and a --width (a width sweep runs several)
    asked = lambda r: (r.get("seed", 0), (r.get("task_options") or {}).get("width"))  # noqa: E731
    int8 = {asked(r): r for r in recs if r["backbone"] == "int8"}
    head = ["backbone", "width", "recipe", "seed", name, "OPs (M)", "BOPs (G)", "params (M)", "latency b1 (ms)",
            "train (s)", f"{name} / int8", "OPs / int8"]
    rows = []
    for r in recs:
        i = int8.get(asked(r))
        ratio = lambda f: f"{f(r) / f(i):.3f}" if i and f(i) else ""  # noqa: E731
        rows.append([r["backbone"] + (f"-{r['variant']}" if r["variant"] else ""), f"{width(r) or ''}",
                     _recipe_name(r), str(r.get("seed", 0)),
                     fmt(name, r["metric"]["value"]), _fmt(r["cost"].get("ops"), 1e6),
                     _fmt(r["cost"].get("bops"), 1e9), _fmt(r["cost"].get("params"), 1e6), _fmt(_latency_ms(r), 1, 3),
                     f"{_total_wall(r):.0f}" if "wall_s" in r else "",
                     ratio(lambda x: x["metric"]["value"]), ratio(lambda x: x["cost"].get("ops"))])
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if k > 3 else c.ljust(w)  # noqa: E731
                                   for k, (c, w) in enumerate(zip(cells, widths)))
    r0 = recs[0]
    return "\n".join([f"\n{r0['task']}: schedule {r0.get('schedule_label', r0['schedule'])}, data "
                      f"{(r0.get('data') or {}).get('name')}; train time includes the fp32 teacher where one distils",
                      line(head),
                      line(["-" * w for w in widths])] + [line(row) for row in rows])


# ---------------------------------------------------------------- the headline
PRECISIONS = ("binary", "int8", "fp32")


def _recipe_name(r) -> str:
    # records from before recipes existed trained with the task's own optimizer
    return (r.get("recipe") or {}).get("name", TASK_DEFAULT)


def _default_recipe(r) -> bool:
    """Whether ``r`` was trained by its backbone's declared default recipe for its task."""
    return _recipe_name(r) == _task(r["task"]).DEFAULT_RECIPES.get(r["backbone"], TASK_DEFAULT)


def _train_images(r) -> int:
    d = r["data"]
    return d.get("train_images") or d.get("images") or d.get("files") or 0


def _total_wall(r) -> float:
    """The run's training time with its teacher's and its pretrained backbone's (each counted once)."""
    return r["wall_s"] + sum((r.get(k) or {}).get("wall_s") or 0 for k in ("teacher", "init_from"))


def headline_candidates(records: list[dict]) -> list[tuple]:
    """[(budget rank, config key, {seed: {precision: record}})] of the configs at which all three
    precisions ran under their default recipes (no variant), with the seeds all three ran."""
    import backbones
    configs = defaultdict(lambda: defaultdict(dict))
    for key, recs in _groups([r for r in records if not r["variant"]]).items():
        for r in recs:
            if r["backbone"] in backbones.PRESETS and _default_recipe(r):
                configs[key[:-1]][key[-1]].setdefault(backbones.precision_of(r["backbone"]), r)
    out = []
    for key, by_seed in configs.items():
        full = {s: p for s, p in by_seed.items() if all(prec in p for prec in PRECISIONS)}
        if full:
            r = full[min(full)]["binary"]
            pretrained = bool(r.get("init_from"))
            out.append(((_train_images(r) * max(r["epochs"], 1), pretrained, len(full)), key, full))
    return sorted(out, key=lambda c: c[0], reverse=True)


def _mean_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def verdict(name, higher_is_better, bnn, int8, ops_ratio, bnn_sd=0.0, int8_sd=0.0, reference=None) -> str:
    """One phrase from the numbers: how much of INT8's metric the binary network keeps, at what share of
    its OPs; seed spreads that overlap make it "no clear difference"."""
    sign = 1 if higher_is_better else -1
    gap = sign * (bnn - int8)
    db = name.lower().startswith("psnr")
    size = f"{abs(gap):.2f} dB" if db else f"{abs(gap) / abs(int8):.0%}" if int8 else f"{abs(gap):.3g}"
    cost = f"{ops_ratio:.2g}x INT8's OPs" if ops_ratio else "unknown OPs"
    if (bnn_sd or int8_sd) and abs(gap) <= max(bnn_sd, int8_sd):
        out = f"no clear difference across seeds, at {cost}"
    elif gap >= 0:
        out = f"BNN as good or better ({size} {'higher' if higher_is_better else 'lower'} {name}) at {cost}"
    else:
        out = f"BNN {size} {'lower' if higher_is_better else 'higher'} {name} at {cost}"
    if reference and sign * (bnn - reference[1]) < 0:
        out += f"; below the {reference[0]} reference"
    return out


def _headline_row(task: str, records: list[dict]) -> str:
    cands = headline_candidates(records)
    if not cands:
        return (f"| [{task}]({task}.md) | no budget yet at which binealnet, int8 and fp32 all ran under their default "
                "recipes |  |  |  |  |  |  |  |  |")
    _, key, full = cands[0]
    seeds = sorted(full)
    r0 = full[seeds[0]]
    fmt = lambda v: _task(task).format_metric(r0["binary"]["metric"]["name"], v)  # noqa: E731
    stats = {prec: _mean_sd([full[s][prec]["metric"]["value"] for s in seeds]) for prec in PRECISIONS}
    cells = [fmt(m) + (f" ± {sd:.2g}" if len(seeds) > 1 else "") for m, sd in (stats[p] for p in PRECISIONS)]
    name, hib = r0["binary"]["metric"]["name"], r0["binary"]["metric"]["higher_is_better"]
    ratio = lambda f: f(r0["binary"]) / f(r0["int8"]) if f(r0["int8"]) else None  # noqa: E731
    ops = ratio(lambda r: r["cost"]["ops"])
    # latency does not depend on the seed: the first seed whose binealnet and int8 were both deployed
    dep_seed = next((s for s in seeds if all(_fastest(full[s][p])[0] for p in ("binary", "int8"))), None)
    (bnn_ms, bnn_eng), (int8_ms, int8_eng) = (_fastest(full[dep_seed if dep_seed is not None else seeds[0]][p])
                                              for p in ("binary", "int8"))
    dep_cell = (f"{_fmt(bnn_ms, 1, 3)} / {_fmt(int8_ms, 1, 3)} ms ({bnn_ms / int8_ms:.2f}; INT8 on {int8_eng}"
                + (f"; seed {dep_seed}" if dep_seed != seeds[0] else "") + ")"
                if bnn_ms and int8_ms else "not deployed yet")
    refs = [(r["backbone"], r["metric"]["value"]) for r in records if _is_reference(r) and
            _group_key(r)[:-1] == key and not r["variant"]]
    init = (r0["binary"].get("init_from") or {}).get("run")
    budget = (f"`{key[0]}` {key[1]} ep, {_train_images(r0['binary'])} {key[2]} img, seed"
              f"{'s ' if len(seeds) > 1 else ' '}{', '.join(map(str, seeds))}")
    if init:
        budget += f", from {init.get('task')} `{init.get('schedule')}`"
    budget += "; train s: " + " / ".join(f"{_total_wall(r0[p]):.0f}" for p in PRECISIONS)
    m_ratio = f"{stats['binary'][0] / stats['int8'][0]:.3f}" if stats["int8"][0] else ""
    v = verdict(name, hib, stats["binary"][0], stats["int8"][0], ops, stats["binary"][1] if len(seeds) > 1 else 0,
                stats["int8"][1] if len(seeds) > 1 else 0, refs[0] if refs else None)
    return "| " + " | ".join([f"[{task}]({task}.md)", name, budget] + cells +
                             [m_ratio, f"{ops:.3f}" if ops else "", dep_cell, _iso_latency_cell(task, records), v]) + " |"


def _iso_latency_cell(task: str, records: list[dict]) -> str:
    """BNN's metric at INT8's deployed latency, read off binealnet's width sweep (bench/tradeoff.py)."""
    from .tradeoff import bnn_at_int8_latency
    deployments = {(r["task"], Path(r["_file"]).name): r["_deployed"] for r in records
                   if r.get("_deployed") and r.get("_file")}
    iso, why = bnn_at_int8_latency(records, task, deployments)
    if not iso:
        return why
    fmt = lambda v: _task(task).format_metric(records[0]["metric"]["name"], v)  # noqa: E731
    return (f"{fmt(iso['bnn_metric'])} vs INT8 {fmt(iso['int8_metric'])} at {iso['int8_ms']:.3g} ms "
            f"(INT8 {iso['int8_width']:g}x, `{iso['schedule']}`" + (f", {iso['cpu']})" if iso["cpu"] else ")"))


HEADLINE_LEGEND = [
    "- **budget**: the largest training budget (epochs x images) at which binealnet, int8 and fp32 all ran under "
    "their declared default recipes (`bench list`), with the seeds all three ran; \"from classification ...\": "
    "the backbones were pretrained by that run. Train s: BNN / INT8 / FP32 training time, each run's fp32 teacher "
    "and pretraining included. A short budget is a first signal, not a converged result.",
    "- **binealnet / int8 / fp32**: the task's primary metric (mean ± s.d. over seeds where several ran).",
    "- **metric BNN/INT8**, **OPs BNN/INT8**: binealnet over int8 (OPs = FP MACs + BOPs/64 for the whole model).",
    "- **deployed latency BNN / INT8**: batch 1, one thread, binealnet on the packed 1-bit kernels and INT8 on the "
    "fastest engine `bench deploy` measured for it (named; OpenVINO or ONNX Runtime where they ran, else "
    "torch.ops.quantized), on the CPU named in [deploy.md](deploy.md); a dense task's backbone alone.",
    "- **BNN at INT8's latency**: binealnet's metric at the deployed latency of an INT8 width (the one nearest 1.0 "
    "inside binealnet's measured range), interpolated in log(latency) between binealnet's two neighbouring "
    "widths at the largest budget where both precisions ran a width sweep (named; never extrapolated). The "
    "fronts themselves: the task page's trade-off section.",
    "- **verdict**: the metric gap and the OPs share, in one phrase; spreads over seeds that overlap read as no "
    "clear difference.",
]


def headline_table(records: list[dict], link_prefix: str = "") -> str:
    """The headline table and its legend; ``link_prefix`` points the task links at results/ from elsewhere."""
    by_task = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    lines = ["| task | metric | budget | binealnet | int8 | fp32 | metric BNN/INT8 | OPs BNN/INT8 | "
             "deployed latency BNN / INT8 | BNN at INT8's latency | verdict |", "|" + "---|" * 11]
    lines += [_headline_row(task, recs) for task, recs in sorted(by_task.items())]
    text = "\n".join(lines + [""] + HEADLINE_LEGEND) + "\n"
    return re.sub(r"\]\((?!https?:)([\w.-]+\.md)\)", lambda m: f"]({link_prefix}{m.group(1)})", text)


#: the block of the repository's README.md that `bench report` rewrites with the headline table
README_BLOCK = ("<!-- headline table: written by `bench report`, do not edit by hand -->", "<!-- end of headline table -->")


def update_readme_block(readme: Path, records: list[dict]) -> bool:
    """Rewrite the headline block of ``readme`` (between the ``README_BLOCK`` markers); False when it has none."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    start, end = README_BLOCK
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    atomic_write(readme, head + start + "\n" + headline_table(records, "results/") + end + rest.split(end, 1)[1])
    return True


def overview(records: list[dict]) -> str:
    """results/README.md: one headline row per task, what the columns mean, links to the task pages."""
    lines = ["# BiNealBench results: binary (BiNealNet) vs INT8, task by task", "",
             "Generated by `bench report` from the JSON records in `results/<task>/`; do not edit by hand. "
             "How each headline was made: [NOTES.md](NOTES.md). Every budget, sweep, seed and diagnostic: the task "
             "pages linked in the first column.", ""]
    return "\n".join(lines) + "\n" + headline_table(records)


def report(results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Rebuild results/<task>.md, results/<task>.png and results/README.md from the records."""
    from .plots import curves_plot, task_plot
    results_dir = Path(results_dir)
    records = load_records(results_dir)
    if not records:
        return []
    deployments = load_deployments(results_dir)
    for r in records:
        d = deployments.get((r["task"], Path(r["_file"]).name))
        recorded = (d or {}).get("metric_recorded", (d or {}).get("top1_recorded"))
        if d is not None and recorded is not None and abs(recorded - r["metric"]["value"]) > 1e-6:
            import warnings  # a deployment of an earlier run of this config, whose record was since replaced
            warnings.warn(f"deploy record of {r['_file']} is of another run (its recorded metric {recorded:.4g}, "
                          f"the record's {r['metric']['value']:.4g}): not joined")
            d = None
        r["_deployed"] = d
    written = []
    by_task = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    from . import tradeoff
    for task, recs in by_task.items():
        for sched in tradeoff.swept_schedules(recs, task):
            written += tradeoff.report(task, sched, results_dir)
        md = results_dir / f"{_safe_name(task, 'task')}.md"
        atomic_write(md, task_table(recs))
        task_plot(recs, results_dir / f"{task}.png")
        written += [md, results_dir / f"{task}.png"]
        if curves_plot(recs, results_dir / f"{task}_curves.png"):
            written.append(results_dir / f"{task}_curves.png")
    atomic_write(results_dir / "README.md", overview(records))
    if results_dir.resolve() == RESULTS_DIR.resolve():  # the repository's results: its README shows the headline
        update_readme_block(RESULTS_DIR.parent / "README.md", records)
    return written + [results_dir / "README.md"]
