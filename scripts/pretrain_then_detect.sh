#!/usr/bin/env bash
# Detection from pretrained backbones. There is no ImageNet here, so each preset is first
# trained as a classifier on CIFAR-10 upsampled to 96 px through the ImageNet stem (schedule
# pretrain-short on CPU, pretrain on a GPU; `compare` trains fp32 first and hands it to binealnet's
# adamw-kd as its teacher), then CenterNet is trained on the detection data from each backbone
# checkpoint with --init-from. Records: results/classification/, results/detection/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CIFAR=${CIFAR:-../shared/data/cifar10-jpeg}
DET_DATA=${DET_DATA:-../shared/data/pennfudan}
PRE=${PRE:-pretrain-short}
DET_SCHEDULE=${DET_SCHEDULE:-short}
DEVICE=${DEVICE:-cpu}
$PY -m bench.cli compare --task classification --schedule "$PRE" --data "$CIFAR" --device "$DEVICE" \
    --backbones fp32,int8,binealnet
# DET_SEEDS: detection seeds from the same classifiers ("0 1 2 3"): at the CPU `short` budget a run of
# any precision can stall at the floor (results/NOTES.md), so one seed cannot rank them
for s in ${DET_SEEDS:-0}; do
  for b in fp32 int8 binealnet; do
    # the newest classifier of this backbone at this schedule (run names: bench/records.py run_name)
    run_dir=$(ls -td work_dirs/classification/"${b}"_*_"${PRE}"-*ep_"$(basename "$CIFAR")"_*s0 | head -1)
    ckpt=$(cat "$run_dir/last_checkpoint")
    $PY -m bench.cli run --task detection --schedule "$DET_SCHEDULE" --data "$DET_DATA" --device "$DEVICE" \
        --backbone "$b" --init-from "$ckpt" --seed "$s"
  done
done
