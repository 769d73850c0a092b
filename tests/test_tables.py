"""The headline overview (results/README.md) and `bench report` on bad or missing records."""
import json

import pytest

from bench import records, tables
from bench.cli import main

DEFAULTS = {"binealnet": "adamw-kd", "int8": "adamw", "fp32": "adamw"}  # classification's declared defaults


def _rec(backbone, value, ops, schedule="short", epochs=4, images=1000, seed=0, recipe=None, wall=10.0, **kw):
    r = {"run": f"{backbone}_{schedule}_{recipe or 'default'}_s{seed}", "task": "classification", "backbone": backbone,
         "variant": None, "metric": {"name": "top1", "value": value, "higher_is_better": True},
         "cost": {"ops": ops, "bops": 0, "macs": 1, "macs_by_bits": {}, "params": 1, "size_bits": 8, "parts": {}},
         "schedule": schedule, "epochs": epochs, "seed": seed, "data": {"name": "d", "path": "d", "images": images},
         "recipe": {"name": recipe or DEFAULTS[backbone]}, "config": {"bench": {}}, "commit": "c", "versions": {},
         "device": "cpu", "wall_s": wall}
    r.update(kw)
    return r


def _headline(tmp_path):
    tables.report(tmp_path)
    lines = (tmp_path / "README.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| task"))
    row = next(line for line in lines if line.startswith("| [classification"))
    split = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    return dict(zip(split(header), split(row)))


def test_headline_is_the_largest_budget_where_all_three_ran_under_default_recipes(tmp_path):
    teacher = {"run": {"run": "fp32_t"}, "wall_s": 7.0}
    for r in [_rec("binealnet", 0.6, 30e6, teacher=teacher), _rec("int8", 0.8, 600e6), _rec("fp32", 0.9, 900e6),
              # a larger budget, but int8 by a recipe that is not its default: not a headline
              _rec("binealnet", 0.7, 30e6, "long", 40), _rec("int8", 0.5, 600e6, "long", 40, recipe="sgd"),
              _rec("fp32", 0.95, 900e6, "long", 40),
              # a smaller budget with all three: loses to `short`
              _rec("binealnet", 0.1, 30e6, "smoke", 1, 100), _rec("int8", 0.2, 600e6, "smoke", 1, 100),
              _rec("fp32", 0.3, 900e6, "smoke", 1, 100)]:
        records.write_record(r, tmp_path)
    col = _headline(tmp_path)
    assert col["budget"] == "`short` 4 ep, 1000 d img, seed 0; train s: 17 / 10 / 10"  # BNN 10 s + the teacher's 7 s
    assert (col["binealnet"], col["int8"], col["fp32"]) == ("0.6", "0.8", "0.9")
    assert col["metric BNN/INT8"] == "0.750" and col["OPs BNN/INT8"] == "0.050"
    assert col["verdict"] == "BNN 25% lower top1 at 0.05x INT8's OPs"  # (0.8 - 0.6) / 0.8
    assert col["deployed latency BNN / INT8"] == "not deployed yet"
    page = (tmp_path / "classification.md").read_text()
    assert page.index("## Headline budget") < page.index("schedule `short`") < page.index("## Other budgets")


def test_headline_over_seeds_says_when_the_spread_hides_the_gap(tmp_path):
    for seed, (b, i) in enumerate([(0.10, 0.30), (0.30, 0.10)]):
        for r in [_rec("binealnet", b, 30e6, seed=seed), _rec("int8", i, 600e6, seed=seed),
                  _rec("fp32", 0.2, 900e6, seed=seed)]:
            records.write_record(r, tmp_path)
    col = _headline(tmp_path)
    assert col["binealnet"] == "0.2 ± 0.14" and "seeds 0, 1" in col["budget"]
    assert col["verdict"].startswith("no clear difference across seeds")


def test_verdict_phrases():
    assert tables.verdict("PSNR", True, 26.87, 29.05, 0.23) == "BNN 2.18 dB lower PSNR at 0.23x INT8's OPs"
    assert tables.verdict("PSNR", True, 26.9, 29.0, 0.2, reference=("bicubic", 28.4)).endswith(
        "; below the bicubic reference")
    assert tables.verdict("top1", True, 0.9, 0.8, 0.05).startswith("BNN as good or better (12% higher top1)")


def test_a_task_without_a_complete_budget_says_so(tmp_path):
    records.write_record(_rec("int8", 0.8, 600e6), tmp_path)
    tables.report(tmp_path)
    assert "no budget yet at which binealnet, int8 and fp32 all ran" in (tmp_path / "README.md").read_text()


def test_report_skips_a_malformed_metric_naming_the_file_and_builds_the_rest(tmp_path):
    records.write_record(_rec("int8", 0.8, 600e6), tmp_path)
    bad = tmp_path / "classification" / "bare-number.json"
    bad.write_text(json.dumps(dict(_rec("fp32", 0.9, 900e6), metric=0.9)))
    with pytest.warns(UserWarning, match=r"bare-number\.json: skipped.*metric"):
        written = tables.report(tmp_path)
    assert tmp_path / "classification.md" in written and "| int8 |" in (tmp_path / "classification.md").read_text()


def test_report_on_an_empty_results_dir_says_there_is_nothing_to_report(tmp_path, capsys):
    assert main(["report", "--results-dir", str(tmp_path)]) == 0
    assert "nothing to report" in capsys.readouterr().out and not list(tmp_path.iterdir())


def test_a_deployment_of_an_earlier_run_of_the_config_is_not_joined(tmp_path):
    records.write_record(_rec("int8", 0.8, 600e6), tmp_path)
    d = dict(task="classification", record="results/classification/int8_short_default_s0.json", top1_recorded=0.7,
             latency_ms_batch1={"1": 5.0, "2": 3.0}, export_bytes=1e6, top1_deployed=0.7, kernel="k")
    records.atomic_write(tmp_path / "deploy" / "classification" / "int8_short_default_s0.json", json.dumps(d))
    with pytest.warns(UserWarning, match="recorded metric 0.7, the record's 0.8.*not joined"):
        tables.report(tmp_path)
    assert "deployed b1 1T (ms)" not in (tmp_path / "classification.md").read_text()
    records.atomic_write(tmp_path / "deploy" / "classification" / "int8_short_default_s0.json",
                         json.dumps(dict(d, top1_recorded=0.8)))
    tables.report(tmp_path)
    assert "deployed b1 1T (ms)" in (tmp_path / "classification.md").read_text()


def test_headline_latency_takes_the_fastest_int8_engine():
    from bench.tables import _fastest
    on_torch = {"backbone": "int8", "_deployed": {"latency_ms_batch1": {"1": 8.4, "2": 5.0}}}
    assert _fastest(on_torch) == (8.4, "torch")
    on_engine = dict(on_torch, _deployed=dict(on_torch["_deployed"],
                                              fastest={"engine": "openvino 2026.4.1", "latency_ms_batch1_1T": 2.9}))
    assert _fastest(on_engine) == (2.9, "openvino")
    dense = {"backbone": "int8", "_deployed": {"kernel": "torch.ops.quantized (x86)", "latency_ms_batch1": {"1": 8.4},
                                               "engines": {"engines": {"openvino": {"version": "2026.4.1",
                                                                                    "latency_ms_batch1": {"1": 2.4}}}}}}
    assert _fastest(dense) == (2.4, "openvino")  # a dense deploy record names its engines, not the fastest
    assert _fastest({"backbone": "binealnet", "_deployed": {"latency_ms_batch1": {"1": 3.9}}}) == (3.9, "packed 1-bit")
    assert _fastest({"backbone": "int8"}) == (None, "torch")


def test_headline_latency_comes_from_the_first_seed_deployed_for_both(tmp_path):
    """Latency does not depend on the seed: where seed 0's checkpoints were not deployed, a later seed's
    deployments of binealnet and int8 fill the cell, which names that seed."""
    for seed in (0, 1):
        for r in [_rec("binealnet", 0.6, 30e6, seed=seed), _rec("int8", 0.8, 600e6, seed=seed),
                  _rec("fp32", 0.9, 900e6, seed=seed)]:
            records.write_record(r, tmp_path)
    for backbone, ms in (("binealnet", 4.0), ("int8", 8.0)):
        name = f"{backbone}_short_default_s1"
        d = dict(task="classification", record=f"results/classification/{name}.json", top1_recorded=0.6 if
                 backbone == "binealnet" else 0.8, latency_ms_batch1={"1": ms, "2": ms / 2}, export_bytes=1e6,
                 top1_deployed=0.7, kernel="k")
        records.atomic_write(tmp_path / "deploy" / "classification" / f"{name}.json", json.dumps(d))
    assert _headline(tmp_path)["deployed latency BNN / INT8"] == "4 / 8 ms (0.50; INT8 on torch; seed 1)"
