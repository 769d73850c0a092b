"""Benchmark (not a test): a CPU training step of BiNealNet vs a float step of the same width and input.

    python -m bench.speed [--batch 32] [--input 32] [--steps 5]

Prints ms/step for each and the ratio binary/float (goal <= 1.3x).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import backbones


def step_time(model, x, y, head, steps):
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01)
    def step():
        opt.zero_grad(set_to_none=True)
        logits = head(F.adaptive_avg_pool2d(model(x)[-1], 1).flatten(1))
        F.cross_entropy(logits, y).backward()
        opt.step()
    step()  # warm-up (also initialises beta)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=32, help="square input size (CIFAR stem below 64)")
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    stem = "cifar" if a.input < 64 else "imagenet"
    x, y = torch.randn(a.batch, 3, a.input, a.input), torch.randint(0, 10, (a.batch,))
    res = {}
    for name, kw in {"binealnet (binary)": {}, "same net, fp32": dict(precision="fp32")}.items():
        m = backbones.build("binealnet", stem=stem, out_indices=(3,), **kw)
        head = torch.nn.Linear(m.out_channels[-1], 10)
        res[name] = step_time(m, x, y, head, a.steps)
        print(f"{name:22s} {res[name] * 1e3:8.1f} ms/step  (batch {a.batch}, {a.input}x{a.input}, "
              f"{torch.get_num_threads()} threads)")
    b, f = res.values()
    print(f"ratio binary/float: {b / f:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
