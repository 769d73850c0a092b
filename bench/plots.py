"""Figures derived from the records: metric against cost per task, and training curves."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .tables import _groups, _is_reference, _seed_sets, _seed_stats, _task

#: one colour per backbone, one marker per model (detector / segmentor / ...)
COLOURS = {"binealnet": "tab:red", "int8": "tab:blue", "fp32": "tab:green"}
MARKERS = "os^Dvx*P"


def _model_of(r):
    return r.get("config", {}).get("bench", {}).get("model") or "default"


def _save_figure(fig, path: Path, dpi: int) -> None:
    """Atomic, as every write here (backbones.files.AtomicFile)."""
    import matplotlib.pyplot as plt

    from backbones.files import AtomicFile
    fig.tight_layout()
    with AtomicFile(path) as f:
        fig.savefig(f, dpi=dpi, format="png")
    plt.close(fig)


def task_plot(records: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    trained = [r for r in records if not _is_reference(r)] or records
    models = sorted({_model_of(r) for r in trained})
    sched = sorted({f"{r['schedule']} ({r['epochs']} ep), {r['data']['name']}" for r in trained})
    for r in [r for r in records if _is_reference(r)]:  # reference rows: a level to beat, drawn across
        ax.axhline(r["metric"]["value"], color="tab:gray", ls="--", lw=1)
        ax.annotate(f"{r['backbone']} ({r['schedule']})", (0.01, r["metric"]["value"]),
                    xycoords=("axes fraction", "data"), fontsize=7, color="tab:gray", xytext=(0, 2),
                    textcoords="offset points")
    for r in [r for r in records if not _is_reference(r)]:
        colour = COLOURS.get(r["backbone"], "tab:gray")
        marker = MARKERS[models.index(_model_of(r)) % len(MARKERS)]
        ax.scatter(r["cost"]["ops"], r["metric"]["value"], c=colour, marker=marker, s=36,
                   alpha=0.55 if r["variant"] else 0.95)
    seed_sets = _seed_sets(_groups(records))
    for rows in seed_sets.values():  # configs run at several seeds: mean +- s.d. beside the seeds' points
        for (backbone, _, _), by_seed in rows.items():
            r, st = next(iter(by_seed.values())), _seed_stats(by_seed)
            ax.errorbar(r["cost"]["ops"] * 1.08, st["mean"], yerr=st["sd"], fmt="_", ms=10, capsize=3,
                        color=COLOURS.get(backbone, "tab:gray"), lw=1)
    handles = [Line2D([], [], color=c, marker="o", ls="", label=b) for b, c in COLOURS.items()
               if any(r["backbone"] == b for r in records)]
    if seed_sets:
        handles.append(Line2D([], [], color="k", marker="_", ms=10, ls="", label="mean ± s.d. over seeds"))
    handles += [Line2D([], [], color=COLOURS.get(b, "tab:gray"), marker="o", ls="", label=b)
                for b in sorted({r["backbone"] for r in records if not _is_reference(r)} - set(COLOURS))]
    if len(models) > 1:
        handles += [Line2D([], [], color="k", marker=MARKERS[i % len(MARKERS)], ls="", label=m)
                    for i, m in enumerate(models)]
    r0 = records[0]
    ax.set_xscale("log")
    ax.set_xlabel("OPs per image (FP MACs + BOPs/64), log scale")
    ax.set_ylabel(f"{r0['metric']['name']} ({'higher' if r0['metric']['higher_is_better'] else 'lower'} is better)")
    ax.set_title(f"{r0['task']}: metric vs cost\n" + "; ".join(sched), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, title="colour: backbone; marker: model" if len(models) > 1 else None,
              title_fontsize=7)
    _save_figure(fig, path, dpi=120)


LINESTYLES = ["-", "--", ":", "-."]


def curves_plot(records: list[dict], path: Path) -> bool:
    """Training curves of the records that carry a history (bench/hooks.py): one column per config (its
    seeds together), the mean training loss per epoch on top and the task's metric at each validation below;
    colour is the backbone, line style the seed. False (nothing drawn) when no record has a history."""
    groups = defaultdict(list)  # a config's seeds share a panel
    for k, rs in _groups(records).items():
        groups[k[:-1]] += [r for r in rs if (r.get("history") or {}).get("train")]
    groups = {k: rs for k, rs in groups.items() if rs}
    if not groups:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(groups, key=str)
    metric_key = (getattr(_task(records[0]["task"]), "METRIC", None) or {}).get("key")
    fig, axes = plt.subplots(2, len(keys), figsize=(max(6.0, 4.2 * len(keys)), 6), squeeze=False, sharex="col")
    for col, key in enumerate(keys):
        recs = sorted(groups[key], key=lambda r: (r["backbone"], r.get("recipe", {}).get("name") or "", r["seed"]))
        r0 = recs[0]
        top, bottom = axes[0][col], axes[1][col]
        init = " from pretrained" if r0.get("init_from") else ""
        top.set_title(f"{r0['schedule']} ({r0['epochs']} ep){init}, {r0['data']['name']}", fontsize=8)
        for r in recs:
            colour = COLOURS.get(r["backbone"], "tab:gray")
            style = LINESTYLES[r["seed"] % len(LINESTYLES)]
            label = r["backbone"] + (f" {r['variant']}" if r["variant"] else "") + f" seed {r['seed']}"
            train = r["history"]["train"]
            top.plot([h["epoch"] for h in train], [h["loss"] for h in train], color=colour, ls=style, label=label)
            val = [h for h in r["history"].get("val", []) if metric_key in h]
            if val:
                bottom.plot([h["epoch"] for h in val], [h[metric_key] for h in val], color=colour,
                            ls=style, marker="o", ms=3)
        top.set_ylabel("training loss (epoch mean)")
        top.set_yscale("log")
        bottom.set_ylabel(f"{r0['metric']['name']} at validation")
        bottom.set_xlabel("epoch")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
        top.legend(fontsize=7)
    fig.suptitle(f"{records[0]['task']}: training curves (records with a history)", fontsize=9)
    _save_figure(fig, path, dpi=100)
    return True
