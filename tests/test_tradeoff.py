"""Width sweeps as trade-offs (bench/tradeoff.py): width lists, log-cost-linear interpolation that never
extrapolates, Pareto fronts, iso-cost cells, and the bad-input errors, on hand-made records."""
import json
import math

import pytest

from bench import tradeoff
from tasks.base import BenchError


def test_width_lists_and_their_errors():
    assert tradeoff.parse_widths("1.0, 0.5,2,0.5") == [0.5, 1.0, 2.0]
    for bad, msg in (("0.5,0", "positive"), ("-1", "positive"), ("0.5,wide", "not a number"), ("", "not a number"),
                     ("nan", "positive")):
        with pytest.raises(BenchError, match=msg):
            tradeoff.parse_widths(bad)


def test_log_cost_linear_interpolation_never_extrapolates():
    pts = [(10.0, 0.5), (1000.0, 0.7), (100.0, 0.6)]
    assert tradeoff.interpolate(pts, 100.0) == pytest.approx(0.6)
    # halfway in log between 10 and 100 is sqrt(1000) ~ 31.6, not 55
    assert tradeoff.interpolate(pts, math.sqrt(1000)) == pytest.approx(0.55)
    assert tradeoff.interpolate(pts, 55.0) == pytest.approx(0.5 + 0.1 * math.log(5.5) / math.log(10))
    assert tradeoff.interpolate(pts, 10.0) == pytest.approx(0.5) and tradeoff.interpolate(pts, 1000.0) == 0.7
    assert tradeoff.interpolate(pts, 9.99) is None and tradeoff.interpolate(pts, 1000.1) is None
    assert tradeoff.interpolate([], 5.0) is None


def test_pareto_front():
    pts = [(1, 0.3), (2, 0.25), (3, 0.5), (4, 0.5), (5, 0.6)]
    assert tradeoff.pareto_front(pts) == [(1, 0.3), (3, 0.5), (5, 0.6)]
    assert tradeoff.pareto_front([(1, 3.0), (2, 2.0), (3, 4.0)], higher_is_better=False) == [(1, 3.0), (2, 2.0)]


def _rec(backbone, width, metric, ops, bops, recipe):
    return dict(task="classification", backbone=backbone, variant=None, schedule="sweep", seed=0,
                task_options={"width": width}, metric={"name": "top1", "value": metric, "higher_is_better": True},
                cost={"ops": ops, "bops": bops}, recipe={"name": recipe}, run=f"{backbone}_{width}",
                _file=f"classification/{backbone}_{width}.json")


def test_iso_cost_rows_and_missing_axis_error():
    recs = [_rec("binealnet", w, m, o, o * 64, "adamw-kd") for w, m, o in ((0.5, 0.30, 4e6), (1.0, 0.40, 16e6),
                                                                           (2.0, 0.45, 64e6))]
    recs += [_rec("int8", w, m, o, o * 64, "adamw") for w, m, o in ((0.25, 0.35, 8e6), (0.5, 0.42, 32e6),
                                                                   (1.0, 0.50, 128e6))]
    curve = tradeoff.curves(recs, "ops")
    rows = {(r["at"], r["width"]): r for r in tradeoff.iso_cost_rows(curve)}
    # binealnet at 1.0 costs 16e6: int8 between 8e6 (0.35) and 32e6 (0.42), halfway in log -> 0.385
    assert rows[("binealnet", 1.0)]["other_metric"] == pytest.approx(0.385)
    assert rows[("binealnet", 0.5)]["other_metric"] is None  # 4e6 is below int8's cheapest width: not extrapolated
    assert rows[("int8", 1.0)]["other_metric"] is None  # 128e6 is above binealnet's widest
    assert rows[("int8", 0.5)]["other_metric"] == pytest.approx(0.425)  # 32e6 between 16e6 and 64e6
    assert tradeoff.metric_at(recs, "int8", "ops", 16e6) == pytest.approx(0.385)
    with pytest.raises(BenchError, match=r"has no cost on axis 'latency'.*bench deploy"):
        tradeoff.metric_at(recs, "int8", "latency", 1.0, deployments={})
    with pytest.raises(BenchError, match="unknown cost axis"):
        tradeoff.cost_of(recs[0], "joules")


def test_report_page_and_plot_from_records(tmp_path):
    folder = tmp_path / "classification"
    folder.mkdir()
    recs = [_rec("binealnet", 1.0, 0.40, 16e6, 1e9, "adamw-kd"), _rec("binealnet", 2.0, 0.45, 64e6, 4e9, "adamw-kd"),
            _rec("int8", 0.25, 0.35, 8e6, 5e8, "adamw"), _rec("int8", 0.5, 0.42, 32e6, 2e9, "adamw"),
            _rec("int8", 0.5, 0.99, 32e6, 2e9, "sgd")]  # not the default recipe: left out
    for r in recs:
        r.update(commit="x", data={"name": "d"}, epochs=4, config={}, versions={}, device="cpu", wall_s=1.0,
                 cost=dict(r["cost"], layers=[]))
        (folder / f"{r['backbone']}_{r['task_options']['width']}_{r['recipe']['name']}.json").write_text(json.dumps(r))
    md, png = tradeoff.report("classification", "sweep", tmp_path, axes=("ops", "bops"))
    text = md.read_text()
    assert "| int8 | 0.5 | adamw | 0.42 |" in text and "0.99" not in text
    assert "| binealnet | 1.0 | 16 | 0.4 | int8 | 0.385 |" in text
    assert "outside binealnet's measured range (16 to 64): not extrapolated" in text
    assert png.stat().st_size > 1000
    with pytest.raises(BenchError, match="no classification records at schedule 'gpu'"):
        tradeoff.report("classification", "gpu", tmp_path)


def test_compare_widths_runs_every_backbone_at_every_width(tmp_path, monkeypatch):
    from bench import cli, runner
    calls = []

    def fake_run(task, backbone, **kw):
        calls.append((backbone, kw.get("width"), kw.get("teacher")))
        (tmp_path / "last_checkpoint").write_text(f"fp32-{kw.get('width')}.pth")
        rec = dict(task=task, backbone=backbone, variant=None, metric={"name": "top1", "value": 0.1},
                   cost={"ops": 1e6, "bops": 1e9}, schedule="smoke", epochs=1, wall_s=1.0,
                   config={"work_dir": str(tmp_path)})
        return rec, tmp_path / "rec.json"

    monkeypatch.setattr(runner, "run", fake_run)
    assert cli.main(["compare", "--task", "classification", "--widths", "1.0,0.5", "--schedule", "smoke",
                     "--results-dir", str(tmp_path / "res")]) == 0
    widths = sorted({w for _, w, _ in calls})
    assert widths == [0.5, 1.0] and len(calls) == 6
    # each width is a whole comparison: fp32 first, its checkpoint teaches that width's binealnet
    assert [b for b, w, _ in calls if w == 0.5][0] == "fp32"
    assert ("binealnet", 0.5, "fp32-0.5.pth") in calls and ("binealnet", 1.0, "fp32-1.0.pth") in calls
    assert cli.main(["compare", "--task", "classification", "--widths", "0.5,-1"]) == 2


def test_overview_cell_metric_at_the_other_precisions_cost():
    recs = [_rec("binealnet", 1.0, 0.40, 16e6, 1, "adamw-kd"), _rec("binealnet", 2.0, 0.45, 64e6, 1, "adamw-kd"),
            _rec("int8", 1.0, 0.50, 32e6, 1, "adamw"), _rec("int8", 0.25, 0.3, 4e6, 1, "adamw")]
    v, why = tradeoff.at_other_cost(recs, recs[2], "binealnet", "ops")
    assert v == pytest.approx(0.425) and why == ""
    assert tradeoff.at_other_cost(recs, recs[3], "binealnet", "ops") == (None, "outside binealnet's measured range")
    assert tradeoff.at_other_cost(recs, recs[2], "binealnet", "latency", {})[1] == \
        "int8 has no deployed latency, 1 thread (ms)"


def test_dominated_points():
    curve = {"binealnet": [(0.45, 0.20, 0.125), (0.84, 0.27, 0.25)], "int8": [(0.36, 0.23, 0.125), (0.42, 0.34, 0.25)]}
    assert tradeoff.dominated(curve) == [("binealnet", 0.125, "int8", 0.125), ("binealnet", 0.25, "int8", 0.25)]
    assert tradeoff.dominated({"binealnet": [(1, 0.3, 1.0)], "int8": [(2, 0.4, 1.0)]}) == []


def test_bnn_at_int8_latency_reads_the_sweep_and_never_extrapolates():
    recs = [_rec("binealnet", w, m, o, o * 64, "adamw-kd") for w, m, o in ((0.5, 0.30, 4e6), (1.0, 0.40, 16e6))]
    recs += [_rec("int8", w, m, o, o * 64, "adamw") for w, m, o in ((0.5, 0.42, 32e6), (1.0, 0.50, 128e6))]
    for r in recs:
        r["data"], r["epochs"] = {"train_images": 1000}, 4
    lat = {("binealnet", 0.5): 1.0, ("binealnet", 1.0): 4.0, ("int8", 0.5): 2.0, ("int8", 1.0): 8.0}
    dep = {("classification", f"{b}_{w}.json"): {"kernel": "k", "latency_ms_batch1": {"1": ms}}
           for (b, w), ms in lat.items()}
    assert tradeoff.swept_schedules(recs, "classification") == ["sweep"]
    iso, why = tradeoff.bnn_at_int8_latency(recs, "classification", dep)
    # INT8 1.0 (8 ms) is past binealnet's widest (4 ms); INT8 0.5 at 2 ms is halfway in log between 1 and 4 ms
    assert why == "" and iso["int8_width"] == 0.5 and iso["int8_metric"] == 0.42
    assert iso["bnn_metric"] == pytest.approx(0.35)
    dep[("classification", "int8_0.5.json")]["latency_ms_batch1"]["1"] = 0.5
    iso, why = tradeoff.bnn_at_int8_latency(recs, "classification", dep)
    assert iso is None and why == "`sweep`: no overlap (binealnet 1 to 4 ms, INT8 0.5 to 8 ms): not extrapolated"
    assert tradeoff.bnn_at_int8_latency(recs[:3], "classification", dep) == (None, "no width sweep of both precisions")
    # a width run on another dataset is not a point of these fronts
    other = dict(_rec("binealnet", 2.0, 0.9, 64e6, 64e6 * 64, "adamw-kd"), data={"name": "sample", "train_images": 1000})
    assert [tradeoff.width_of(r) for r in tradeoff.select(recs + [other], "classification", "sweep")
            if r["backbone"] == "binealnet"] == [0.5, 1.0]
    # latencies of two CPUs are not one curve: the CPU most widths were deployed on is read, the other dropped
    for d in dep.values():
        d["machine"] = {"cpu": "cpu A"}
    dep[("classification", "int8_0.5.json")].update(machine={"cpu": "cpu B"}, latency_ms_batch1={"1": 2.0})
    iso, why = tradeoff.bnn_at_int8_latency(recs, "classification", dep)
    assert iso is None and why == "`sweep`: no overlap (binealnet 1 to 4 ms, INT8 8 to 8 ms): not extrapolated"
    dep[("classification", "int8_0.5.json")]["machine"]["cpu"] = "cpu A"
    iso, why = tradeoff.bnn_at_int8_latency(recs, "classification", dep)
    assert iso["cpu"] == "cpu A" and iso["bnn_metric"] == pytest.approx(0.35)
