"""Reproduces, on CPU, why the `binary-activations` ablation row evaluated at chance (results/NOTES.md).

    .venv/bin/python scripts/repro_binary_activations.py VARIANT {fp32|bf16} LR [WARMUP_STEPS [STEPS]]

60 SGD steps (batch 64, momentum 0.9, nesterov, wd 5e-4, no warm-up) at width 0.5 on the embedded
CIFAR-10 sample, then test accuracy and how many classes the predictions use. Seen on 2 CPU cores:
binary-activations at lr 0.2 diverges (loss ~100, one predicted class) in fp32 as in bf16, while it
trains at lr 0.05 and `binary` trains at 0.2: float weights with binary activations are unstable at
high lr without warm-up; bf16 is not the cause. WARMUP_STEPS > 0 ramps the lr linearly from 1e-3 x LR
over that many steps (the recipes' warm-up), to test whether warm-up alone cures the divergence;
STEPS (default 60) lengthens the run so that most steps are at the full lr after the warm-up.
"""
import sys

import torch
import torch.nn.functional as F

import backbones
import tasks
from tasks import classification as c

torch.manual_seed(0)
variant, precision = sys.argv[1], sys.argv[2]
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 0
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 60
data = tasks.get("classification").DEFAULT_DATA
x, y, _ = c.load_split(str(data), "train", None, 32)
xt, yt, _ = c.load_split(str(data), "test", None, 32)
mean, std = torch.tensor(c.CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(c.CIFAR_STD).view(1, 3, 1, 1)
m = backbones.build("binealnet", variant=variant, stem="cifar", out_indices=(3,), width=0.5)
head = torch.nn.Linear(m.out_channels[-1], 10)
opt = torch.optim.SGD(list(m.parameters()) + list(head.parameters()), lr=lr, momentum=0.9, nesterov=True,
                      weight_decay=5e-4)
for step in range(steps):
    for g in opt.param_groups:
        g["lr"] = lr * (1e-3 + (1 - 1e-3) * min(1.0, step / warmup)) if warmup else lr
    idx = torch.randint(0, len(y), (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = head(F.adaptive_avg_pool2d(m((x[idx].float() - mean) / std)[-1], 1).flatten(1))
    loss = F.cross_entropy(logits.float(), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
m.eval()
with torch.no_grad():
    pred = head(F.adaptive_avg_pool2d(m((xt.float() - mean) / std)[-1], 1).flatten(1)).argmax(1)
print(f"{variant} {precision} lr {lr} warm-up {warmup} of {steps} steps: last loss {loss.item():.3f}, test acc {(pred == yt).float().mean():.3f}, "
      f"classes predicted {pred.unique().numel()}")
