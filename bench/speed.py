"""Benchmark (not a test): a CPU training step of BiNealNet vs a float step of the same width and input.

    python -m bench.speed [--batch 32] [--input 32] [--steps 7] [--compile]

Steps of the two networks alternate, so background load hits both alike; prints the median
ms/step of each and the ratio binary/float (goal <= 1.3x).
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=32, help="square input size (CIFAR stem below 64)")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both networks first (fuses the quantizers' elementwise ops)")
    a = p.parse_args(argv)
    torch.manual_seed(0)
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
