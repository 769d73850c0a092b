#!/usr/bin/env bash
# The recorded recipe sweep for detection (CenterNet on Penn-Fudan): each backbone under the task's
# own optimizer (Adam 1e-3, step decay: the "task-default" recipe) and the shared recipes that apply
# to it, at one equal budget (schedule `sweep`, CPU), most informative first. Every backbone at
# width 1.0 (WIDTH) so the sweep fits 2 CPU cores: recipes compare within a precision at one width.
# The teacher of adamw-kd, qat and ptq is the fp32 task-default run. Records go to
# results/detection/ (their own table group).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/pennfudan}
WIDTH=${WIDTH:-1.0}
SCHEDULE=${SCHEDULE:-sweep}
RESULTS=${RESULTS:-results}
PY=${PY:-.venv/bin/python}  # run from another worktree: PY=/path/to/.venv/bin/python
B="$PY -m bench.cli run --task detection --schedule $SCHEDULE --data $DATA --seed 0 --width $WIDTH --results-dir $RESULTS"
TEACHER_DIR=work_dirs/sweep-teachers/detection_fp32_${SCHEDULE}_width-${WIDTH}
$B --backbone fp32 --work-dir "$TEACHER_DIR"
TEACHER=$(cat "$TEACHER_DIR/last_checkpoint")
$B --backbone binealnet
$B --backbone int8
$B --backbone binealnet --recipe adamw-kd --teacher "$TEACHER"
$B --backbone int8 --recipe ptq --teacher "$TEACHER"
$B --backbone binealnet --recipe adamw
$B --backbone int8 --recipe qat --teacher "$TEACHER"
$B --backbone binealnet --recipe two-stage
$B --backbone binealnet --recipe sgd
$B --backbone int8 --recipe adamw
$B --backbone fp32 --recipe adamw
$B --backbone int8 --recipe sgd
$B --backbone fp32 --recipe sgd
$PY -m bench.cli report --results-dir "$RESULTS"
