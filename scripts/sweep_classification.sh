#!/usr/bin/env bash
# The recorded recipe sweep behind classification's default recipes: each backbone under the
# recipes that apply to it, at one equal budget (schedule `sweep`, CPU), most informative first.
# Backbones at width 0.5 (WIDTH), so the sweep fits 2 CPU cores: the recipes are compared within
# a precision at one width; the chosen ones then train the presets. Records go to
# results/classification/ (their own table group); the log beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg}
WIDTH=${WIDTH:-0.5}
PY=${PY:-.venv/bin/python}  # run from another worktree: PY=/path/to/.venv/bin/python
B="$PY -m bench.cli run --task classification --schedule sweep --data $DATA --seed 0 --width $WIDTH"
TEACHER_DIR=work_dirs/sweep-teachers/classification_fp32_adamw_width-${WIDTH}
[ -f "$TEACHER_DIR/last_checkpoint" ] || $B --backbone fp32 --recipe adamw --work-dir "$TEACHER_DIR"
TEACHER=$(cat "$TEACHER_DIR/last_checkpoint")
$B --backbone binealnet --recipe sgd
$B --backbone binealnet --recipe adamw
$B --backbone int8 --recipe sgd
$B --backbone int8 --recipe adamw
$B --backbone int8 --recipe ptq --teacher "$TEACHER"
$B --backbone binealnet --recipe two-stage
$B --backbone binealnet --recipe adamw-kd --teacher "$TEACHER"
$B --backbone int8 --recipe qat --teacher "$TEACHER"
$B --backbone fp32 --recipe sgd
$PY -m bench.cli report
