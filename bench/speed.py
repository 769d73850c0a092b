"""Benchmark (not a test): a CPU training step of BiNealNet vs a float step of the same width and input.

    python -m bench.speed [--batch 32] [--input 32] [--steps 7] [--compile]
    python -m bench.speed --inference [--input 224] [--steps 20]

Steps of the two networks alternate, so background load hits both alike; prints the median
ms/step of each and the ratio binary/float (goal <= 1.3x). ``--inference``: batch-1 eval latency
of BiNealNet with the -1 padding's border term recomputed at every call (before) and computed once
per input shape (now), and img/s of each.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import backbones


def make_step(model, x, y):
    head = torch.nn.Linear(model.out_channels[-1], 10)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01)

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = head(F.adaptive_avg_pool2d(model(x)[-1], 1).flatten(1))
        F.cross_entropy(logits, y).backward()
        opt.step()
        return time.perf_counter() - t0
    step()  # warm-up
    return step


def inference(a):
    """Batch-1 eval latency with the border cache off (every call does the ring conv) and on."""
    from backbones.layers import QConv2d
    stem = "cifar" if a.input < 64 else "imagenet"
    model = backbones.build("binealnet", stem=stem, out_indices=(3,)).eval()
    x = torch.randn(1, 3, a.input, a.input)
    times = {False: [], True: []}
    with torch.no_grad():
        for _ in range(a.steps):
            for cached in (False, True):
                QConv2d.cache_border = cached
                model(x)  # fills the cache when on
                t0 = time.perf_counter()
                model(x)
                times[cached].append(time.perf_counter() - t0)
    QConv2d.cache_border = True
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, label in ((False, "border term every call (before)"), (True, "border term cached (now)")):
        print(f"{label:34s} {med[k] * 1e3:8.1f} ms  {1 / med[k]:7.1f} img/s  (batch 1, {a.input}x{a.input}, "
              f"{torch.get_num_threads()} threads, median of {a.steps})")
    print(f"speed-up: {med[False] / med[True]:.2f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=32, help="square input size (CIFAR stem below 64)")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both networks first (fuses the quantizers' elementwise ops)")
    p.add_argument("--inference", action="store_true", help="batch-1 eval latency, border cache off vs on")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    if a.inference:
        return inference(a)
    stem = "cifar" if a.input < 64 else "imagenet"
    x, y = torch.randn(a.batch, 3, a.input, a.input), torch.randint(0, 10, (a.batch,))
    nets = {"binealnet (binary)": {}, "same net, fp32": dict(precision="fp32")}
    build = lambda kw: backbones.build("binealnet", stem=stem, out_indices=(3,), **kw)  # noqa: E731
    steps = {k: make_step(torch.compile(build(kw)) if a.compile else build(kw), x, y) for k, kw in nets.items()}
    times = {k: [] for k in nets}
    for _ in range(a.steps):
        for k, step in steps.items():
            times[k].append(step())
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, t in med.items():
        print(f"{k:22s} {t * 1e3:8.1f} ms/step  (batch {a.batch}, {a.input}x{a.input}, "
              f"{torch.get_num_threads()} threads, median of {a.steps})")
    b, f = med.values()
    print(f"ratio binary/float: {b / f:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
