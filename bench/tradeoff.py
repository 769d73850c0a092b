"""Speed against accuracy as a trade-off: each precision's width sweep as a curve on every cost axis,
its Pareto front, and iso-cost comparisons (one precision's metric at the other's cost).

    python -m bench.tradeoff --task classification --schedule sweep [--results-dir results]

Reads records only (bench/records.py; deployed latency from results/deploy/<task>/), writes
<results-dir>/tradeoff/<task>_<schedule>.md and .png. Cost axes:

* ``ops`` and ``bops``: the record's own cost (bench.cost);
* ``latency``: batch-1, 1-thread latency of the deployed model on the fastest engine `bench deploy`
  measured for that run (packed 1-bit kernels; torch.ops.quantized, OpenVINO or ONNX Runtime for INT8);
* ``cycles``: systolic-array cycles of the record's layers (SCALE-Sim v3, bench/cycles.py; binary PE
  K = 32 XNOR-popcount MACs per cycle).

Iso-cost: a precision's metric at a cost between two of its measured widths is interpolated linearly
in log(cost) between those two widths; outside its measured range the cell says so (never extrapolated).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from tasks.base import BenchError

AXES = {"ops": "OPs (M)", "bops": "BOPs (G)", "latency": "deployed latency, 1 thread (ms)",
        "cycles": "systolic cycles (M)"}
SCALE = {"ops": 1e6, "bops": 1e9, "latency": 1.0, "cycles": 1e6}
PRECISIONS = ("binealnet", "int8", "fp32")


def parse_widths(text: str) -> list[float]:
    """'0.5,1.0,1.5' -> [0.5, 1.0, 1.5]; one clear error for an empty list, a non-number, 0 or a negative."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            w = float(part)
        except ValueError:
            raise BenchError(f"--widths: {part!r} is not a number (expected e.g. 0.5,1.0,1.5,2.0)") from None
        if not math.isfinite(w) or w <= 0:
            raise BenchError(f"--widths: every width must be a positive number; got {part!r}")
        out.append(w)
    if not out:
        raise BenchError("--widths: give at least one width, e.g. 0.5,1.0,1.5,2.0")
    return sorted(set(out))


def width_of(rec: dict) -> float | None:
    for opts in (rec.get("task_options_resolved"), rec.get("task_options")):
        if opts and opts.get("width") is not None:
            return float(opts["width"])
    try:
        return float(rec["config"]["model"]["backbone"]["width"])
    except (KeyError, TypeError, ValueError):
        return None


def _cycles_of(rec: dict) -> float | None:
    """SCALE-Sim cycles of the record's layers (from the GEMM shapes its cost table holds); None without SCALE-Sim."""
    import importlib.util
    if importlib.util.find_spec("scalesim") is None:
        return None
    from .cost import CostReport, LayerCost
    from .cycles import count_cycles
    layers = [LayerCost(l["name"], l["type"], l["part"], l["w_bits"], l["a_bits"], tuple(l["in_shape"]),
                        tuple(l["out_shape"]), l["calls"], l["macs"], l["params"]) for l in rec["cost"]["layers"]]
    return float(count_cycles(CostReport(tuple(rec["cost"]["input_shape"]), layers, 0, 0))["cycles"])


def cost_of(rec: dict, axis: str, deployments: dict | None = None) -> float | None:
    """The record's cost on ``axis`` (None when it has none)."""
    if axis in ("ops", "bops"):
        v = rec.get("cost", {}).get(axis)
        return float(v) if v else None
    if axis == "latency":
        from .deploy import fastest
        d = (deployments or {}).get((rec["task"], Path(rec.get("_file", "")).name))
        return float(fastest(d)[1]) if d and fastest(d)[1] else None
    if axis == "cycles":
        return _cycles_of(rec)
    raise BenchError(f"unknown cost axis {axis!r}; choose from {', '.join(AXES)}")


def one_cpu(records: list[dict], deployments: dict) -> tuple[dict, str | None]:
    """The deployments of ``records`` made on one CPU, the one most of them ran on (latencies from two
    CPUs are not one curve); (deployments, that CPU's name), ({}, None) when none was deployed."""
    from collections import Counter
    mine = {k: d for r in records if (d := deployments.get(k := (r["task"], Path(r.get("_file", "")).name)))}
    cpus = Counter((d.get("machine") or {}).get("cpu") for d in mine.values())
    if not cpus:
        return {}, None
    cpu = cpus.most_common(1)[0][0]
    return {k: d for k, d in mine.items() if (d.get("machine") or {}).get("cpu") == cpu}, cpu


def interpolate(points: list[tuple[float, float]], cost: float) -> float | None:
    """The metric at ``cost`` on the curve through ``points`` [(cost, metric), ...] (one precision's
    widths): linear in log(cost) between the two measured points around it; None outside their range."""
    pts = sorted(p for p in points if p[0] and p[0] > 0)
    if not pts or cost is None or cost <= 0 or cost < pts[0][0] or cost > pts[-1][0]:
        return None
    for (c0, m0), (c1, m1) in zip(pts, pts[1:]):
        if c0 <= cost <= c1:
            if c1 == c0:
                return max(m0, m1)
            t = (math.log(cost) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return m0 + t * (m1 - m0)
    return pts[0][1]  # a single measured point, asked at exactly its cost


def pareto_front(points: list[tuple[float, float]], higher_is_better=True) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and metric, by increasing cost."""
    sign = 1 if higher_is_better else -1
    front, best = [], -math.inf
    for c, m in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if sign * m > best:
            front.append((c, m))
            best = sign * m
    return front


def curves(records: list[dict], axis: str, deployments=None) -> dict:
    """{precision: [(cost, metric, width), ...]} of the records, each with a cost on ``axis``."""
    out = {}
    for r in records:
        if r.get("backbone") not in PRECISIONS or r.get("variant"):
            continue
        c = cost_of(r, axis, deployments)
        if c is not None:
            out.setdefault(r["backbone"], []).append((c, r["metric"]["value"], width_of(r)))
    return {k: sorted(v) for k, v in out.items()}


def metric_at(records: list[dict], precision: str, axis: str, cost: float, deployments=None) -> float | None:
    """``precision``'s metric at ``cost`` on ``axis``, interpolated between its records' widths (None outside
    their range); a record of that precision without a cost on the axis is an error naming it."""
    pts = []
    for r in records:
        if r.get("backbone") != precision or r.get("variant"):
            continue
        c = cost_of(r, axis, deployments)
        if c is None:
            raise BenchError(f"record {r.get('_file') or r.get('run')} has no cost on axis {axis!r} "
                             f"({AXES.get(axis, axis)}): cannot interpolate on it"
                             + (" (deploy the run: bench deploy CKPT)" if axis == "latency" else ""))
        pts.append((c, r["metric"]["value"]))
    if not pts:
        raise BenchError(f"no {precision} records to interpolate")
    return interpolate(pts, cost)


def at_other_cost(records: list[dict], of: dict, precision: str = "binealnet", axis: str = "latency",
                  deployments=None) -> tuple[float | None, str]:
    """For an overview cell ("BNN metric at INT8's latency"): ``precision``'s metric at the cost of record
    ``of`` on ``axis``, interpolated over ``precision``'s records of the same task and schedule;
    (value, '') or (None, why)."""
    c = cost_of(of, axis, deployments)
    if c is None:
        return None, f"{of.get('backbone')} has no {AXES[axis]}"
    same = [r for r in records if r["task"] == of["task"] and r["schedule"] == of["schedule"]]
    pts = [(cost_of(r, axis, deployments), r["metric"]["value"]) for r in same
           if r.get("backbone") == precision and not r.get("variant")]
    pts = [p for p in pts if p[0] is not None]
    if not pts:
        return None, f"no {precision} record with a {AXES[axis]}"
    v = interpolate(pts, c)
    return (v, "") if v is not None else (None, f"outside {precision}'s measured range")


def dominated(curve: dict, higher_is_better=True) -> list[tuple]:
    """(precision, width, by precision, by width) for every measured point another precision's point beats:
    no costlier and strictly better."""
    sign = 1 if higher_is_better else -1
    out = []
    for p, pts in curve.items():
        for c, m, w in pts:
            best = [(q, v) for q, qp in curve.items() if q != p for c2, m2, v in qp if c2 <= c and sign * m2 > sign * m]
            if best:
                out.append((p, w) + best[0])
    return out


def iso_cost_rows(curve: dict, a="binealnet", b="int8") -> list[dict]:
    """For each measured width of ``a``: ``b``'s metric interpolated at its cost, and the reverse."""
    rows = []
    for x, y in ((a, b), (b, a)):
        pts = [(c, m) for c, m, _ in curve.get(y, [])]
        for c, m, w in curve.get(x, []):
            rows.append(dict(at=x, width=w, cost=c, metric=m, other=y, other_metric=interpolate(pts, c),
                             other_range=(pts[0][0], pts[-1][0]) if pts else None))
    return rows


def select(records: list[dict], task: str, schedule: str) -> list[dict]:
    """Each precision's records of one task and schedule at its default recipe (the recorded best), seed 0
    first: one record per (precision, width), all on one dataset (the one most of them read: a front
    mixing datasets is not one curve)."""
    from collections import Counter

    import tasks
    t = tasks.get(task)
    mine = [r for r in records if r["task"] == task and r["schedule"] == schedule and not r.get("variant")
            and r.get("backbone") in PRECISIONS
            and (r.get("recipe") or {}).get("name") == t.DEFAULT_RECIPES.get(r["backbone"])]
    data = Counter((r.get("data") or {}).get("name") for r in mine).most_common(1)
    chosen = {}
    for r in mine:
        if (r.get("data") or {}).get("name") != data[0][0]:
            continue
        key = (r["backbone"], width_of(r))
        if key not in chosen or r.get("seed", 0) < chosen[key].get("seed", 0):
            chosen[key] = r
    return list(chosen.values())


def swept_schedules(records: list[dict], task: str) -> list[str]:
    """The task's schedules at which binealnet and int8 each ran at least two widths under their default
    recipes (a curve to read off), the largest training budget (epochs x images) first."""
    size = {}
    for sched in {r["schedule"] for r in records if r["task"] == task}:
        sel = select(records, task, sched)
        widths = {p: {width_of(r) for r in sel if r["backbone"] == p} for p in ("binealnet", "int8")}
        if all(len(w) >= 2 for w in widths.values()):
            r = sel[0]
            d = r.get("data") or {}
            size[sched] = (r.get("epochs") or 0) * (d.get("train_images") or d.get("images") or 0)
    return sorted(size, key=lambda s: (-size[s], s))


def bnn_at_int8_latency(records: list[dict], task: str, deployments: dict) -> tuple[dict | None, str]:
    """The overview's iso-latency cell: binealnet's metric at an INT8 width's deployed latency (fastest
    engine), interpolated over binealnet's deployed widths at the same schedule. Reads the swept
    schedules by budget, largest first, and there the INT8 width nearest 1.0 whose latency lies in
    binealnet's measured range, with the latencies of one CPU (``one_cpu``). (dict(schedule, int8_width,
    int8_ms, int8_metric, bnn_metric, cpu), '') or (None, why)."""
    why = "no width sweep of both precisions"
    for sched in swept_schedules(records, task):
        sel = select(records, task, sched)
        on_cpu, cpu = one_cpu(sel, deployments)
        front = {p: [(cost_of(r, "latency", on_cpu), r) for r in sel if r["backbone"] == p]
                 for p in ("binealnet", "int8")}
        front = {p: [(c, r) for c, r in pts if c] for p, pts in front.items()}
        if len(front["binealnet"]) < 2 or not front["int8"]:
            if not why.startswith("`"):
                why = f"`{sched}`: fewer than two binealnet widths deployed"
            continue
        bnn = [(c, r["metric"]["value"]) for c, r in front["binealnet"]]
        for c, r in sorted(front["int8"], key=lambda cr: abs((width_of(cr[1]) or 1.0) - 1.0)):
            v = interpolate(bnn, c)
            if v is not None:
                return dict(schedule=sched, int8_width=width_of(r), int8_ms=c, int8_metric=r["metric"]["value"],
                            bnn_metric=v, cpu=cpu), ""
        lo, hi = min(c for c, _ in bnn), max(c for c, _ in bnn)
        ilo, ihi = min(c for c, _ in front["int8"]), max(c for c, _ in front["int8"])
        if not why.startswith("`"):  # the largest budget's reason
            why = (f"`{sched}`: no overlap (binealnet {lo:.3g} to {hi:.3g} ms, INT8 {ilo:.3g} to {ihi:.3g} ms): "
                   "not extrapolated")
    return None, why


def report(task: str, schedule: str, results_dir, axes=tuple(AXES)) -> tuple[Path, Path]:
    """Write the trade-off page and plot of ``task`` at ``schedule`` from the records in ``results_dir``."""
    import tasks

    from .records import atomic_write, load_deployments, load_records
    results_dir = Path(results_dir)
    recs = select(load_records(results_dir, task), task, schedule)
    if not recs:
        raise BenchError(f"no {task} records at schedule {schedule!r} with the default recipes in {results_dir}")
    deployments, cpu = one_cpu(recs, load_deployments(results_dir))
    metric = tasks.get(task).METRIC["name"]
    hib = recs[0]["metric"].get("higher_is_better", True)
    per_axis = {ax: curves(recs, ax, deployments) for ax in axes}
    lines = [f"# {task}: speed against accuracy at the `{schedule}` budget", "",
             f"{recs[0].get('schedule_label', schedule)}. Default recipe per precision; one record per width "
             f"(seed 0). {metric} against each cost axis; iso-cost cells interpolate linearly in log(cost) between "
             "the two measured widths around the cost and say so where the cost is outside the measured range."
             + (f" Deployed latencies: all on one CPU, {cpu} (the one most widths were deployed on; a width deployed "
                "only elsewhere has no latency here)." if cpu else ""), "",
             "| precision | width | recipe | " + metric + " | " + " | ".join(AXES[a] for a in axes) + " |",
             "|---|---|---|---|" + "---|" * len(axes)]
    for r in sorted(recs, key=lambda r: (PRECISIONS.index(r["backbone"]), width_of(r) or 0)):
        cells = []
        for ax in axes:
            c = cost_of(r, ax, deployments)
            cells.append("-" if c is None else f"{c / SCALE[ax]:.4g}")
        lines.append(f"| {r['backbone']} | {width_of(r)} | {(r.get('recipe') or {}).get('name')} | "
                     f"{r['metric']['value']:.4g} | " + " | ".join(cells) + " |")
    for ax in axes:
        curve = per_axis[ax]
        if not curve.get("binealnet") or not curve.get("int8"):
            lines += ["", f"## Iso-cost on {AXES[ax]}", "",
                      f"Not both fronts measured on this axis ({', '.join(sorted(curve)) or 'none'} have a cost here)."]
            continue
        dom = dominated(curve, hib)
        lines += ["", f"## Iso-cost on {AXES[ax]}", "", "Dominated points (another precision's width is no costlier "
                  "and scores better): " + ("; ".join(f"{p} {w:g}x by {q} {v:g}x" for p, w, q, v in dom) or "none") + ".",
                  "", f"| at | width | cost | its {metric} | other | other's {metric} "
                  "at this cost |", "|---|---|---|---|---|---|"]
        for row in iso_cost_rows(curve):
            if row["other_metric"] is None:
                lo, hi = row["other_range"]
                cell = (f"outside {row['other']}'s measured range ({lo / SCALE[ax]:.4g} to {hi / SCALE[ax]:.4g}): "
                        "not extrapolated")
            else:
                cell = f"{row['other_metric']:.4g}"
            lines.append(f"| {row['at']} | {row['width']} | {row['cost'] / SCALE[ax]:.4g} | {row['metric']:.4g} | "
                         f"{row['other']} | {cell} |")
    out_dir = results_dir / "tradeoff"
    md, png = out_dir / f"{task}_{schedule}.md", out_dir / f"{task}_{schedule}.png"
    lines += ["", f"![Pareto fronts]({png.name})", "",
              f"Made by `python -m bench.tradeoff --task {task} --schedule {schedule}` from the records alone."]
    atomic_write(md, "\n".join(lines) + "\n")
    plot(per_axis, metric, hib, png, f"{task}, {schedule}")
    return md, png


def plot(per_axis: dict, metric: str, higher_is_better: bool, path: Path, title: str) -> None:
    """One panel per cost axis (log x): every measured width as a point, each precision's front as a line."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes = [a for a in per_axis if per_axis[a]]
    fig, panels = plt.subplots(1, max(1, len(axes)), figsize=(4.2 * max(1, len(axes)), 3.6), squeeze=False)
    colors = {"binealnet": "tab:red", "int8": "tab:blue", "fp32": "tab:gray"}
    for ax_name, ax in zip(axes, panels[0]):
        for prec, pts in per_axis[ax_name].items():
            xs = [c / SCALE[ax_name] for c, _, _ in pts]
            ax.scatter(xs, [m for _, m, _ in pts], color=colors.get(prec), s=18)
            for c, m, w in pts:
                ax.annotate(f"{w:g}x", (c / SCALE[ax_name], m), fontsize=7, xytext=(3, 3), textcoords="offset points")
            front = pareto_front([(c, m) for c, m, _ in pts], higher_is_better)
            ax.plot([c / SCALE[ax_name] for c, _ in front], [m for _, m in front], color=colors.get(prec), label=prec)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on short ranges
        ax.set_xlabel(AXES[ax_name])
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None):
    from .records import RESULTS_DIR
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="classification")
    p.add_argument("--schedule", default="sweep")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--axes", default=",".join(AXES), help=f"comma-separated cost axes ({', '.join(AXES)})")
    a = p.parse_args(argv)
    try:
        axes = tuple(x.strip() for x in a.axes.split(",") if x.strip())
        bad = [x for x in axes if x not in AXES]
        if bad:
            raise BenchError(f"unknown cost axis {bad[0]!r}; choose from {', '.join(AXES)}")
        for f in report(a.task, a.schedule, a.results_dir, axes):
            print("wrote", f)
    except BenchError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    main()
