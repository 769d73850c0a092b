"""Systolic-array cycles of a model with SCALE-Sim v3 (`pip install scalesim`): each conv / linear layer
of a ``bench.cost`` report becomes a GEMM (M = output pixels x batch, N = output channels, K = the
reduction, in_channels/groups x kh x kw) run on a stated array.

* The array: ``ARRAY`` (SCALE-Sim's own sample configuration: 32 x 32 PEs, weight stationary, 64 kB
  each of ifmap / filter / ofmap SRAM, DRAM bandwidth computed so it never stalls).
* INT8 (and every non-binary layer, the binary model's float stem included, as an INT8 array would
  run it): one MAC per PE per cycle.
* A binary PE does ``k_binary`` XNOR-popcount MACs per cycle, so a binary layer is the GEMM with its
  reduction dimension divided by ``k_binary`` (rounded up). The default 32 is an area-equivalence
  assumption: in 45 nm an 8-bit multiplier is ~282 um^2 and a 32-bit adder ~137 um^2 (the INT8 PE,
  ~420 um^2), an 8-bit adder ~36 um^2, i.e. ~4.5 um^2 per full adder (Horowitz, "Computing's
  energy problem", ISSCC 2014). A K-lane binary PE is K XNORs plus a K-input popcount tree (~K full
  adders) plus the 32-bit accumulator: equal area at K ~ 50; we take 32 to leave room for the
  popcount tree's wiring and depth, and ``--k-binary`` sweeps it.

Cycles are SCALE-Sim's "Total Cycles (incl. prefetch)" per layer, summed (a layer called n times
counts n times). Unique GEMMs are simulated once and cached (under $BINEALBENCH_CACHE or
~/.cache/binealbench): SCALE-Sim is a cycle-level simulator and takes seconds to minutes per layer.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

from tasks.base import BenchError

from .cost import CostReport, _is_float

ARRAY = dict(rows=32, cols=32, dataflow="ws", ifmap_kb=64, filter_kb=64, ofmap_kb=64)
K_BINARY = 32
INSTALL_HINT = "pip install scalesim (or pip install -e '.[cycles]')"

_CFG = """[general]
run_name = bench

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {ifmap_kb}
FilterSramSzkB: {filter_kb}
OfmapSramSzkB: {ofmap_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow: {dataflow}
Bandwidth: 10
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def write_inputs(folder, gemms, array=ARRAY) -> tuple[Path, Path, Path]:
    """SCALE-Sim's input files for ``gemms`` [(M, N, K), ...]: config, GEMM topology, (empty) layout."""
    folder = Path(folder)
    cfg, topo, layout = folder / "array.cfg", folder / "gemms.csv", folder / "layout.csv"
    cfg.write_text(_CFG.format(**array))
    topo.write_text("Layer, M, N, K,\n" + "".join(f"g{i}, {m}, {n}, {k},\n" for i, (m, n, k) in enumerate(gemms)))
    layout.write_text("Layer name,\n")
    return cfg, topo, layout


def simulate(gemms, array=ARRAY) -> list[int]:
    """SCALE-Sim's total cycles (incl. prefetch) of each GEMM (M, N, K) on ``array``."""
    try:
        from scalesim.scale_sim import scalesim
    except ImportError:
        raise BenchError(f"cycles need SCALE-Sim v3, which is not installed: {INSTALL_HINT}") from None
    if not gemms:
        return []
    with tempfile.TemporaryDirectory(prefix="scalesim_") as tmp:
        cfg, topo, layout = write_inputs(tmp, gemms, array)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints banners even when not verbose
            sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                           layout=str(layout), input_type_gemm=True)
            sim.run_scale(top_path=str(Path(tmp) / "out"))
        return [int(layer.get_compute_report_items()[0]) for layer in sim.runner.single_layer_sim_object_list]


def _cache_file() -> Path:
    return Path(os.environ.get("BINEALBENCH_CACHE", Path.home() / ".cache" / "binealbench")) / "scalesim_cycles.json"


def cached_simulate(gemms, array=ARRAY) -> list[int]:
    """``simulate`` with each unique (GEMM, array) run once ever (a JSON cache; a broken one is rebuilt)."""
    f = _cache_file()
    try:
        cache = json.loads(f.read_text())
    except (OSError, ValueError):
        cache = {}
    key = lambda g: json.dumps([list(g), sorted(array.items())])  # noqa: E731
    todo = sorted({tuple(g) for g in gemms if key(g) not in cache})
    if todo:
        for g, c in zip(todo, simulate(todo, array)):
            cache[key(g)] = c
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(f)
        except OSError:
            pass  # a read-only home: no cache, same answer
    return [cache[key(g)] for g in gemms]


def layer_gemms(report: CostReport, k_binary: int = K_BINARY) -> list[dict]:
    """One GEMM per counted layer: M, N, K as SCALE-Sim takes them (K divided by ``k_binary``, rounded
    up, for 1-bit x 1-bit layers) and how many times the layer ran."""
    if k_binary < 1:
        raise BenchError(f"--k-binary must be >= 1; got {k_binary}")
    rows = []
    for l in report.layers:
        n = l.out_shape[1] if len(l.out_shape) == 4 else l.out_shape[-1]
        m = math.prod(l.out_shape) // n if l.out_shape else 0
        per_call = l.macs // max(l.calls, 1)
        k = per_call // max(m * n, 1)
        binary = (l.w_bits, l.a_bits) == (1, 1)
        pe = "binary" if binary else "float (on int8 PEs)" if _is_float(l.w_bits, l.a_bits) else "int8"
        rows.append(dict(name=l.name, part=l.part, pe=pe, calls=l.calls, M=m, N=n, K=k,
                         K_array=math.ceil(k / k_binary) if binary else k))
    return rows


def count_cycles(report: CostReport, k_binary: int = K_BINARY, array=ARRAY) -> dict:
    """Per-layer and total systolic cycles of one forward (``report`` from bench.cost.count_cost)."""
    rows = [r for r in layer_gemms(report, k_binary) if r["M"] and r["N"] and r["K"]]
    for r, c in zip(rows, cached_simulate([(r["M"], r["N"], r["K_array"]) for r in rows], array)):
        r["cycles"] = c * r["calls"]
    parts = {}
    for r in rows:
        parts[r["part"]] = parts.get(r["part"], 0) + r["cycles"]
    return dict(array=dict(array), k_binary=k_binary, simulator="SCALE-Sim v3", layers=rows, parts=parts,
                cycles=sum(r["cycles"] for r in rows))


def format_cycles(d: dict) -> str:
    a = d["array"]
    lines = [f"systolic cycles (SCALE-Sim v3): {a['rows']}x{a['cols']} PEs, {a['dataflow']} dataflow, SRAM "
             f"{a['ifmap_kb']}/{a['filter_kb']}/{a['ofmap_kb']} kB (ifmap/filter/ofmap); binary PE = {d['k_binary']} "
             "XNOR-popcount MACs per cycle, int8 PE = 1 MAC",
             f"{'layer':40s} {'PE':20s} {'calls':>5s} {'M':>7s} {'N':>5s} {'K':>6s} {'K on array':>10s} {'cycles':>12s}"]
    for r in d["layers"]:
        lines.append(f"{r['name'][:40]:40s} {r['pe']:20s} {r['calls']:5d} {r['M']:7d} {r['N']:5d} {r['K']:6d} "
                     f"{r['K_array']:10d} {r['cycles']:12,d}")
    w = len(lines[1]) - 41
    lines += [f"{'total ' + p:40s} {c:>{w},d}" for p, c in d["parts"].items()]
    lines.append(f"{'total':40s} {d['cycles']:>{w},d}")
    return "\n".join(lines)


def sweep(names=("binealnet", "binealnet@1.0", "int8"), size=224, ks=(8, 16, 32, 64), array=ARRAY) -> dict:
    """Total cycles of each backbone preset (``preset@width`` for another width; ImageNet stem, batch 1)
    at each binary K (a backbone without binary layers once)."""
    import warnings

    import torch

    import backbones

    from .cost import count_cost
    out = {}
    for name in names:
        preset, _, width = name.partition("@")
        model = backbones.build(preset, stem="imagenet", out_indices=(3,), **({"width": float(width)} if width else {}))
        with warnings.catch_warnings():  # an untrained INT8 model calibrates on its first call: irrelevant here
            warnings.simplefilter("ignore", UserWarning)
            report = count_cost(model, torch.zeros(1, 3, size, size))
        binary = any((l.w_bits, l.a_bits) == (1, 1) for l in report.layers)
        out[name] = ({str(k): count_cycles(report, k, array)["cycles"] for k in ks} if binary else
                     {"-": count_cycles(report, 1, array)["cycles"]})  # no binary layer: K does not enter
    return out


def main(argv=None):
    import argparse

    from .records import atomic_write
    p = argparse.ArgumentParser(description="Systolic cycles of backbones at 224 for a sweep of binary K "
                                "(SCALE-Sim v3; see the module docstring for the array and K).")
    p.add_argument("--backbones", default="binealnet,binealnet@1.0,int8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--k-binary", default="8,16,32,64", help="comma-separated K values to sweep")
    p.add_argument("--record", default=None, help="write a JSON record here (results/deploy/cycles/<size>.json)")
    a = p.parse_args(argv)
    try:
        ks = tuple(int(k) for k in a.k_binary.split(","))
        if min(ks) < 1:
            raise ValueError
    except ValueError:
        raise SystemExit(f"error: --k-binary expects positive integers like 8,16,32; got {a.k_binary!r}") from None
    try:
        res = sweep(tuple(n.strip() for n in a.backbones.split(",")), a.size, ks)
    except BenchError as e:
        raise SystemExit(f"error: {e}") from None
    int8 = next((v for v in res.values() if "-" in v), None)
    for name, by_k in res.items():
        for k, c in by_k.items():
            rel = f"  ({int8['-'] / c:.2f}x the int8 model's speed)" if int8 and k != "-" else ""
            print(f"{name:16s} K={k:>3s} {c:>12,d} cycles{rel}")
    if a.record:
        from .provenance import commit, versions
        rec = dict(size=a.size, array=ARRAY, cycles=res, simulator="SCALE-Sim v3", commit=commit(), versions=versions(),
                   command=f"python -m bench.cycles --backbones {a.backbones} --size {a.size} --k-binary {a.k_binary} "
                           f"--record {a.record}")
        atomic_write(Path(a.record), json.dumps(rec, indent=1, sort_keys=True) + "\n")
        print("record:", a.record)
    return 0


if __name__ == "__main__":
    main()
