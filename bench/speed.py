"""Benchmark (not a test): a training step of BiNealNet vs a float step of the same width and input.

    python -m bench.speed [--batch 32] [--input 32] [--steps 7] [--compile] [--pad-mode both] [--profile]
    python -m bench.speed --device cuda --compile      # bf16 autocast, batch 512, as GPU training runs
    python -m bench.speed --device cuda --compile reduce-overhead   # the same with CUDA graphs
    python -m bench.speed --inference [--input 224] [--steps 20]

Steps of the networks alternate, so background load hits all alike; prints the median ms/step
of each and the ratio binary/float (goal <= 1.3x). ``--pad-mode both`` times the binary net with
each way of padding binary inputs with -1 (``QConv2d.pad_mode``). ``--profile`` prints, per
network, the ops that take the most time in one step, to see where a binary step's extra time
goes. ``--count-kernels``: the number of kernels torch.compile generates for one whole step of each
(device-independent; every kernel is a launch and a pass over memory). ``--inference``: batch-1 eval latency
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
from backbones.layers import QConv2d


def _loss(model, head, x, y):
    return F.cross_entropy(head(F.adaptive_avg_pool2d(model(x)[-1], 1).flatten(1)).float(), y)


def make_step(model, x, y, pad_mode="border"):
    """A timed SGD step of ``model`` + a linear head on (x, y); bf16 autocast on CUDA, as training
    runs there. The first call (compilation, cuDNN autotune) happens here, untimed."""
    head = torch.nn.Linear(model.out_channels[-1], 10).to(x.device)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01)
    cuda = x.device.type == "cuda"

    def step():
        QConv2d.pad_mode = pad_mode
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = _loss(model, head, x, y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    for _ in range(2):  # warm-up: compile, autotune, allocator
        step()
    QConv2d.pad_mode = "border"
    return step


def count_kernels(build, kw, pad_mode, x, y):
    """Kernels torch.compile generates for one training step (forward and backward) of a network."""
    import torch._dynamo
    import torch._inductor.metrics as metrics
    QConv2d.pad_mode = pad_mode
    model = build(kw)
    head = torch.nn.Linear(model.out_channels[-1], 10).to(x.device)

    def step(x, y):
        _loss(model, head, x, y).backward()
    torch._dynamo.reset()
    metrics.reset()
    torch.compile(step)(x, y)
    QConv2d.pad_mode = "border"
    return metrics.generated_kernel_count


def profile(step, label, rows=12):
    """The ops with the most self time in one step (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=acts) as prof:
        step()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"\n-- {label}: top ops by {key}")
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def inference(a):
    """Batch-1 eval latency with the border cache off (every call does the ring conv) and on."""
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
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: bf16 autocast, as training there")
    p.add_argument("--batch", type=int, default=None, help="default 32 on cpu, 512 on cuda")
    p.add_argument("--input", type=int, default=32, help="square input size (CIFAR stem below 64)")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"], metavar="MODE",
                   help="torch.compile the networks first (fuses the quantizers' elementwise ops); MODE is "
                        "torch.compile's: reduce-overhead replays CUDA graphs, cutting the kernel launches "
                        "(a compiled binary step has about twice the float step's)")
    p.add_argument("--pad-mode", choices=["border", "explicit", "both"], default="border",
                   help="how binary inputs are padded with -1 (QConv2d.pad_mode); both: time each")
    p.add_argument("--profile", action="store_true", help="also print each network's top ops in one step")
    p.add_argument("--count-kernels", action="store_true",
                   help="only count the kernels torch.compile generates for one step of each network")
    p.add_argument("--inference", action="store_true", help="batch-1 eval latency, border cache off vs on")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible to torch")
    torch.manual_seed(0)
    if a.inference:
        return inference(a)
    batch = a.batch or (512 if a.device == "cuda" else 32)
    stem = "cifar" if a.input < 64 else "imagenet"
    x = torch.randn(batch, 3, a.input, a.input, device=a.device)
    y = torch.randint(0, 10, (batch,), device=a.device)
    build = lambda kw: backbones.build("binealnet", stem=stem, out_indices=(3,), **kw).to(a.device)  # noqa: E731
    wrap = (lambda m: torch.compile(m, mode=a.compile)) if a.compile else (lambda m: m)  # noqa: E731
    modes = ["border", "explicit"] if a.pad_mode == "both" else [a.pad_mode]
    # each pad mode gets its own (identically initialised) network: a compiled graph bakes the mode in
    nets = {f"binealnet (binary, pad {m})": (dict(), m) for m in modes}
    nets["same net, fp32"] = (dict(precision="fp32"), "border")
    if a.count_kernels:
        for k, (kw, mode) in nets.items():
            torch.manual_seed(0)
            print(f"{k:32s} {count_kernels(build, kw, mode, x, y):5d} generated kernels in one training step "
                  f"(forward + backward, batch {batch}, {a.input}x{a.input}, {a.device})", flush=True)
        return
    steps = {}
    for k, (kw, mode) in nets.items():
        torch.manual_seed(0)
        steps[k] = make_step(wrap(build(kw)), x, y, mode)
    times = {k: [] for k in nets}
    for _ in range(a.steps):
        for k, step in steps.items():
            times[k].append(step())
    med = {k: statistics.median(v) for k, v in times.items()}
    where = f"{a.device}{f', compiled ({a.compile})' if a.compile else ''}"
    for k, t in med.items():
        print(f"{k:32s} {t * 1e3:8.1f} ms/step  {batch / t:9.0f} img/s  (batch {batch}, {a.input}x{a.input}, {where}, "
              f"{torch.get_num_threads()} threads, median of {a.steps})")
    f = med["same net, fp32"]
    for k in list(med)[:-1]:
        print(f"ratio binary/float, {k.split('(')[1].rstrip(')')}: {med[k] / f:.2f}x (goal <= 1.3x)")
    if a.profile:
        for k, step in steps.items():
            profile(step, k)


if __name__ == "__main__":
    main()
