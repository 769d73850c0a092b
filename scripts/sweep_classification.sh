#!/usr/bin/env bash
# The recorded recipe sweep behind classification's default recipes: each backbone under every
# recipe that applies to it, at one equal budget (schedule `sweep`, CPU). Records go to
# results/classification/ (their own table group); the log beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg}
B=".venv/bin/bench run --task classification --schedule sweep --data $DATA --seed 0"
$B --backbone fp32 --recipe adamw
TEACHER=$(cat "work_dirs/classification/fp32_sweep_cifar10-jpeg_recipe-adamw_s0/last_checkpoint")
$B --backbone fp32 --recipe sgd
for r in sgd adamw; do $B --backbone int8 --recipe $r; done
for r in qat ptq; do $B --backbone int8 --recipe $r --teacher "$TEACHER"; done
for r in sgd adamw two-stage; do $B --backbone binealnet --recipe $r; done
$B --backbone binealnet --recipe adamw-kd --teacher "$TEACHER"
.venv/bin/bench report
