"""Systolic-array cycles (bench/cycles.py) against SCALE-Sim's own command line and the weight-stationary
closed form; binary layers' reduction divided by K; the missing-simulator error."""
import subprocess
import sys

import pytest
import torch

from bench import cycles
from tasks.base import BenchError

pytest.importorskip("scalesim", reason="SCALE-Sim not installed: pip install scalesim")

SMALL = dict(rows=8, cols=8, dataflow="ws", ifmap_kb=64, filter_kb=64, ofmap_kb=64)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BINEALBENCH_CACHE", str(tmp_path / "cache"))


def test_wrapper_cycles_equal_scalesims_own_report(tmp_path):
    gemms = [(50, 40, 70), (9, 17, 33)]  # hand-sized: partial folds on both array sides
    got = cycles.cached_simulate(gemms, SMALL)
    # SCALE-Sim's own command line on the same inputs, its COMPUTE_REPORT.csv read back
    cfg, topo, layout = cycles.write_inputs(tmp_path, gemms, SMALL)
    subprocess.run([sys.executable, "-m", "scalesim.scale", "-c", str(cfg), "-t", str(topo), "-l", str(layout),
                    "-p", str(tmp_path / "logs"), "-i", "gemm", "-s", "N"], check=True, capture_output=True,
                   cwd=tmp_path)
    rows = (tmp_path / "logs" / "bench" / "COMPUTE_REPORT.csv").read_text().splitlines()[1:]
    report = [int(r.split(",")[1]) for r in rows]
    assert got == report
    # and the weight-stationary closed form: folds x (2 rows + cols + M - 2) compute cycles (SCALE-Sim's
    # "Total Cycles" column, one less), the prefetch on top
    for (m, n, k), row in zip(gemms, rows):
        folds = -(-k // SMALL["rows"]) * -(-n // SMALL["cols"])
        assert int(row.split(",")[2]) == folds * (2 * SMALL["rows"] + SMALL["cols"] + m - 2) - 1
    assert cycles.cached_simulate(gemms, SMALL) == got  # the cache answers the same


def test_binary_layers_run_with_the_reduction_divided_by_k():
    import backbones
    from bench.cost import count_cost
    model = backbones.build("binealnet", width=0.25, stem="cifar", out_indices=(3,))
    report = count_cost(model, torch.zeros(1, 3, 8, 8))
    rows = cycles.layer_gemms(report, k_binary=16)
    stem, conv = rows[0], next(r for r in rows if r["name"] == "stages.0.0.conv1")
    assert stem["pe"].startswith("float") and stem["K_array"] == stem["K"] == 3 * 9
    c = model.stages[0][0].conv1
    assert conv["pe"] == "binary" and conv["K"] == c.in_channels * 9 and conv["N"] == c.out_channels
    assert conv["M"] == 64 and conv["K_array"] == -(-conv["K"] // 16)
    d = cycles.count_cycles(report, 16, SMALL)
    layer = next(r for r in d["layers"] if r["name"] == "stages.0.0.conv1")
    assert layer["cycles"] == cycles.simulate([(64, conv["N"], conv["K_array"])], SMALL)[0]
    assert d["cycles"] == sum(r["cycles"] for r in d["layers"])
    with pytest.raises(BenchError, match="k-binary"):
        cycles.layer_gemms(report, k_binary=0)


def test_missing_scalesim_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scalesim.scale_sim", None)  # import fails as if not installed
    with pytest.raises(BenchError, match=r"SCALE-Sim v3.*not installed: pip install scalesim"):
        cycles.simulate([(4, 4, 4)])
