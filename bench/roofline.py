"""`bench roofline`: which instruction set favours binary. A per-core peak model: INT8, binary
(XNOR/XOR-popcount) and fp32 MACs per cycle for each CPU instruction-set class, each figure from
its instruction mix and the throughput the vendor's or uops.info's tables give; from it, each
backbone's floor latency (compute only, one core, every MAC at peak, memory free) per class.

    python -m bench.roofline [--backbones binealnet,int8,fp32] [--size 224] [--ghz 3.0]

Floors are lower bounds, not predictions: a deployed model is slower by its memory traffic, its
non-conv work (packing, requantizing, pooling) and its kernels' distance from the peak. The
measured kernels of ``bench deploy --bench-224`` are held against the floor of the CPU they ran on
(``this_cpu()`` reads its flags from /proc/cpuinfo).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ISA:
    """Peak MACs per cycle on one core: int8 (8-bit x 8-bit, 32-bit accumulate), binary (1-bit x
    1-bit XOR + popcount), fp32 (FMA)."""

    name: str
    cpu_class: str
    int8: float
    binary: float
    fp32: float
    int8_how: str
    binary_how: str
    sources: str
    flags: tuple  # /proc/cpuinfo (x86) or Features (arm64) flags that must all be present


# Derivations (per core, throughput-bound, operands in registers / L1):
# * AVX2: int8 = vpmaddubsw (u8 x s8 -> s16 pairs) + vpmaddwd (x1 -> s32) + vpaddd per 32 MACs; the two
#   multiplies issue on p0/p1 (2 per cycle) -> 32 MACs/cycle. Binary = Mula's vpshufb nibble-LUT popcount:
#   vpxor, vpand x2, vpsrlw, vpshufb x2, vpaddb per 256 bits (+ vpsadbw/vpaddq every few words), ~7 uops on
#   the three vector ports p0/p1/p5 -> ~2.33 cycles per 256 MACs -> ~110 MACs/cycle. fp32 = 2 FMA x 8 = 16.
# * AVX-512 VNNI: vpdpbusd zmm = 64 u8 x s8 MACs into s32, 2 per cycle on parts with two 512-bit FMA
#   units (p0+p5) -> 128. fp32 = 2 x 16 = 32.
# * AVX-512 VPOPCNTDQ: per 512 bits vpxorq + vpopcntq + vpaddq, 3 uops on the two 512-bit ports p0/p5
#   (vpopcntq on p5 only, 1 per cycle) -> 1.5 cycles per 512 MACs -> ~341 MACs/cycle.
# * AMX-INT8: tdpbssd/tdpbusd, 16 x 16 x 64 = 16,384 MACs per tile op, one per 16 cycles on the TMUL ->
#   1024 MACs/cycle (Intel: 2048 INT8 ops/cycle/core). AMX has no 1-bit type: binary stays on VPOPCNTDQ.
# * Armv8.2 NEON (Cortex-A76 class, the phone CPUs the BNN papers time on): sdot v.4s = 16 int8 MACs,
#   2 per cycle on the two ASIMD pipes -> 32. Binary per 128 bits: eor + cnt (v.16b) + uadalp/add ->
#   3 uops on 2 pipes -> 1.5 cycles per 128 MACs -> ~85. fp32 fmla v.4s 2 per cycle -> 8.
ISAS = (
    ISA("avx2", "x86 with AVX2, no VNNI (Haswell to Coffee Lake, Zen 1-3)", 32, 110, 16,
        "vpmaddubsw + vpmaddwd + vpaddd", "vpxor + vpshufb nibble-LUT popcount (Mula)",
        "Intel Optimization Reference Manual (vol. 1, AVX2 integer); uops.info VPMADDUBSW/VPSHUFB (SKL: p01 / p5); "
        "Mula, Kurz, Lemire, Faster population counts using AVX2 instructions, Comput. J. 61(1), 2018",
        ("avx2",)),
    ISA("avx512-vnni", "x86 with AVX-512 VNNI, no VPOPCNTDQ (Cascade Lake)", 128, 110, 32,
        "vpdpbusd zmm, 2 per cycle", "AVX2-style vpshufb popcount (no 512-bit popcount)",
        "Intel Optimization Reference Manual (Intel DL Boost VNNI); uops.info VPDPBUSD (CLX: p05)",
        ("avx512_vnni",)),
    ISA("avx512-vpopcntdq", "x86 with AVX-512 VNNI + VPOPCNTDQ (Ice Lake, Zen 4/5)", 128, 341, 32,
        "vpdpbusd zmm, 2 per cycle", "vpxorq + vpopcntq + vpaddq zmm (vpopcntq p5 only)",
        "uops.info VPOPCNTQ zmm (ICL/SPR: 1 per cycle, p5); Intel Optimization Reference Manual",
        ("avx512_vnni", "avx512_vpopcntdq")),
    ISA("amx-int8", "x86 with AMX-INT8 (Sapphire/Emerald/Granite Rapids)", 1024, 341, 32,
        "tdpbusd: 16x16x64 MACs per 16 cycles", "VPOPCNTDQ (AMX has no 1-bit type)",
        "Intel Optimization Reference Manual, AMX chapter (2048 INT8 ops/cycle/core); uops.info VPOPCNTQ",
        ("amx_int8", "avx512_vpopcntdq")),
    ISA("neon-dot", "Armv8.2-A NEON with dot product (Cortex-A76/A78 class phones)", 32, 85, 8,
        "sdot v.4s, 2 per cycle", "eor + cnt v.16b + uadalp",
        "Arm Cortex-A76 Software Optimization Guide (SDOT, CNT, EOR throughput 2 per cycle; UADALP 1); "
        "daBNN (Zhang et al., ACM MM 2019)",
        ("asimddp",)),
)
ISA_BY_NAME = {i.name: i for i in ISAS}


def cpu_flags(path="/proc/cpuinfo") -> set[str]:
    """The flags (x86 ``flags``, arm64 ``Features``) of the first CPU in ``path``; empty when unreadable."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def this_cpu(flags: set[str] | None = None) -> ISA | None:
    """The best ISA class of ``flags`` (default: this machine's): the last in ISAS whose flags all hold."""
    flags = cpu_flags() if flags is None else flags
    best = None
    for isa in ISAS:
        if all(f in flags for f in isa.flags):
            best = isa
    return best


def isa_flags_present(flags: set[str] | None = None) -> list[str]:
    """The instruction-set flags this model cares about that the CPU has (for records)."""
    flags = cpu_flags() if flags is None else flags
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_vpopcntdq", "avx512_bitalg", "amx_int8",
              "amx_bf16", "asimddp", "asimd"]
    return [f for f in wanted if f in flags]


def backbone_macs(name: str, size: int = 224) -> dict:
    """{'binary', 'int8', 'fp32'} MACs of one batch-1 forward of backbone preset ``name`` (``preset`` or
    ``preset@width``; ImageNet stem, size x size), from bench.cost's counting."""
    import warnings

    import torch

    import backbones

    from .cost import count_cost
    preset, _, width = name.partition("@")
    try:
        model = backbones.build(preset, stem="imagenet", out_indices=(3,), **({"width": float(width)} if width else {}))
    except ValueError as e:
        raise ValueError(f"backbone {name!r}: {e}") from None
    with warnings.catch_warnings():  # an untrained INT8 model calibrates on its first call: irrelevant to MACs
        warnings.simplefilter("ignore", UserWarning)
        rep = count_cost(model, torch.zeros(1, 3, size, size))
    out = {"binary": 0, "int8": 0, "fp32": 0}
    for layer in rep.layers:
        kind = "binary" if (layer.w_bits, layer.a_bits) == (1, 1) else "int8" if max(layer.w_bits, layer.a_bits) <= 8 \
            else "fp32"
        out[kind] += layer.macs
    if out["int8"] and not out["binary"]:  # the INT8 model as deployed on the engines: its stem quantized too
        out["int8"], out["fp32"] = out["int8"] + out["fp32"], 0
    return out


def floor_cycles(macs: dict, isa: ISA) -> float:
    """Compute-only cycles on one core with every MAC at ``isa``'s peak."""
    return macs["binary"] / isa.binary + macs["int8"] / isa.int8 + macs["fp32"] / isa.fp32


def floor_table(names=("binealnet", "binealnet@1.0", "int8", "fp32"), size=224, ghz=3.0) -> tuple[list[str], dict]:
    """Markdown lines: the peak figures per ISA, then each backbone's floor (ms at ``ghz``) per ISA and
    binealnet's floor speed-up over int8; plus {backbone: macs}."""
    macs = {n: backbone_macs(n, size) for n in names}
    lines = ["| instruction set | CPU class | int8 MAC/cycle | binary MAC/cycle | fp32 MAC/cycle | binary / int8 "
             "| int8 from | binary from | sources |", "|---|---|---|---|---|---|---|---|---|"]
    for i in ISAS:
        lines.append(f"| {i.name} | {i.cpu_class} | {i.int8:g} | {i.binary:g} | {i.fp32:g} | "
                     f"{i.binary / i.int8:.2f}x | {i.int8_how} | {i.binary_how} | {i.sources} |")
    lines += ["", f"Floor latency, one core at {ghz:g} GHz, batch 1, {size}x{size}, compute only (ms):", "",
              "| instruction set | " + " | ".join(names) + " | binary floor speed-up over int8 |",
              "|---|" + "---|" * len(names) + "---|"]
    for i in ISAS:
        ms = {n: floor_cycles(macs[n], i) / (ghz * 1e6) for n in names}
        bins = [n for n in names if n.startswith("binealnet")]
        sp = ", ".join(f"{n} {ms['int8'] / ms[n]:.2f}x" for n in bins) if "int8" in ms else "-"
        lines.append(f"| {i.name} | " + " | ".join(f"{ms[n]:.2f}" for n in names) + f" | {sp} |")
    if "int8" in macs:
        lines += ["", "Where binary wins on compute, where it loses (floors, one core):"]
        for i in ISAS:
            parts = []
            for n in (n for n in names if n.startswith("binealnet")):
                r = floor_cycles(macs["int8"], i) / floor_cycles(macs[n], i)
                parts.append(f"{n} {'wins' if r > 1 else 'loses'} ({r:.2f}x int8's speed)")
            lines.append(f"- {i.name}: " + "; ".join(parts) + ".")
    mac_line = "; ".join(f"{n}: " + ", ".join(f"{k} {v / 1e9:.3f} G" for k, v in m.items() if v) for n, m in macs.items())
    lines += ["", f"MACs per forward ({mac_line}). BiNealNet's stem conv stays fp32 (as trained and deployed); "
              "the INT8 backbone's stem counts as int8, as the ONNX QDQ export quantizes it."]
    return lines, macs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="binealnet,binealnet@1.0,int8,fp32",
                   help="comma-separated backbone presets, preset@width for another width")
    p.add_argument("--size", type=int, default=224, help="input height = width")
    p.add_argument("--ghz", type=float, default=3.0, help="clock for the ms floors (per-cycle figures do not need it)")
    a = p.parse_args(argv)
    if a.size < 8 or a.ghz <= 0:
        raise SystemExit("error: --size must be >= 8 and --ghz > 0")
    names = tuple(n.strip() for n in a.backbones.split(",") if n.strip())
    try:
        lines, _ = floor_table(names, a.size, a.ghz)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print("\n".join(lines))
    isa = this_cpu()
    print(f"\nthis CPU: {isa.name if isa else 'none of the classes above'} "
          f"(flags: {', '.join(isa_flags_present()) or 'none'})")
    return 0


if __name__ == "__main__":
    main()
