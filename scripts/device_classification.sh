#!/usr/bin/env bash
# The classification runs behind results/classification/*gpu*.json, as run on a lent H100
# through the device tool (one call; only the project travels, so data and wheels are carried):
#   .devdata/cifar.zip     ../shared/data/cifar10-jpeg zipped (all 50k train / 10k test JPEGs)
#   .whl/                  mmengine 0.10.7 + addict, yapf, termcolor, platformdirs (py3.12 wheels)
# Main comparison (MODE=main): each backbone under its default recipe at the `gpu` schedule, eager;
# fp32 first (binealnet's adamw-kd teacher and the start of INT8 PTQ / QAT), then binealnet distilled
# from it and INT8 by PTQ and by a QAT_EPOCHS fine-tune from it, beside INT8 trained from scratch.
# Also the binary-activations ablation row under sgd-warmup (it diverged without warm-up), and, if
# time is left before SPEED_BY_S, the speed benchmark below.
# Pretrained backbones for the dense tasks (MODE=pretrain): scripts/pretrain_then_detect.sh at the
# `pretrain` schedule on CUDA.
# Ablation (MODE=ablation): the seed's rows, 4 epochs each, all at once (a very short schedule, labelled so);
# RECIPE=sgd-warmup VARIANTS=binary-activations reruns the row that diverged without warm-up.
# Speed (MODE=speed): the compiled bf16 training step, binary vs float, with each -1 padding
# (`python -m bench.speed --device cuda --compile MODE --pad-mode both --profile` for each of
# COMPILE_MODES, default "default reduce-overhead").
# Usage there: OUT=<folder for records> BENCH_COMMIT=<sha> [MODE=main|ablation] bash scripts/device_classification.sh
set -uo pipefail
OUT=${OUT:-gpu_out}; BUDGET_S=${BUDGET_S:-560}; SPEED_BY_S=${SPEED_BY_S:-440}; DATA=${DATA:-.devdata/cifar10-jpeg}
DEVICE=${DEVICE:-cuda}; SCHEDULE=${SCHEDULE:-gpu}  # DEVICE=cpu SCHEDULE=smoke: a dry run of the flow here
mkdir -p "$OUT"
# the device tool counts disk blocks, so 60k small JPEGs travel as one zip (made with
# `cd ../shared/data/cifar10-jpeg && python3 -m zipfile -c ../../../main/.devdata/cifar.zip train test`)
[ -d "$DATA" ] || python3 -m zipfile -e .devdata/cifar.zip "$DATA"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null | tee "$OUT/gpu.txt"
RES=gpu_results
command -v flock >/dev/null || flock() { shift; "$@"; }
run() {  # bench run ... ; keep every record in one tar under $OUT (the tool returns at most 8 files)
  python3 -m bench.cli run --task classification --data "$DATA" --device "$DEVICE" --results-dir "$RES" "$@" 2>&1 \
    | tee -a "$OUT/log.txt" | grep -E "Epoch\(val\)|bench: error|Traceback|Error:|top1 =" | tail -6
  flock "$OUT/.lock" tar -cf "$OUT/records.tar" "$RES"
}
VARIANTS=${VARIANTS:-"binary-ds3-clip binary fp32 binary-weights binary-activations binary-ds3 binary-ds3-clip-scales-after
          binary-ds3-clip-lr0.1"}
if [ "${MODE:-main}" = main ]; then
  # Each eager run leaves the GPU mostly idle (launch-bound at batch 256), so independent runs share
  # it: their wall times are contended figures. Phase 1 needs nothing; phase 2 needs phase 1's fp32.
  echo "== phase 1: fp32 and int8 under their default recipes; binary-activations with sgd-warmup ($SECONDS s)"
  run --backbone fp32 --schedule "$SCHEDULE" --work-dir "work_dirs/teachers/classification_fp32_$SCHEDULE" &
  run --backbone int8 --schedule "$SCHEDULE" &
  run --backbone binealnet --variant binary-activations --schedule "$SCHEDULE" --epochs "${ABLATION_EPOCHS:-4}" \
      --recipe sgd-warmup --work-dir work_dirs/ablate_binary-activations_sgd-warmup &
  wait
  T=$(cat "work_dirs/teachers/classification_fp32_$SCHEDULE/last_checkpoint")
  [ -f "$T" ] || { echo "no fp32 checkpoint: stopping"; exit 1; }
  echo "== phase 2: binealnet distilled from it (default adamw-kd); int8 PTQ, then QAT from it ($SECONDS s)"
  run --backbone binealnet --schedule "$SCHEDULE" --teacher "$T" &
  ( run --backbone int8 --schedule "$SCHEDULE" --recipe ptq --teacher "$T"
    run --backbone int8 --schedule "$SCHEDULE" --recipe qat --teacher "$T" --epochs "${QAT_EPOCHS:-4}" ) &
  wait
  if (( SECONDS < SPEED_BY_S )); then  # the speed benchmark alone on the GPU, cut off before the call's limit
    echo "== speed ($SECONDS s)"
    timeout $(( BUDGET_S - SECONDS )) python3 -m bench.speed --device "$DEVICE" --compile --pad-mode both --steps 20 \
        2>&1 | tee "$OUT/speed.txt" | grep -E "ms/step|ratio"
  fi
elif [ "${MODE}" = speed ]; then
  for m in ${COMPILE_MODES:-default reduce-overhead}; do  # reduce-overhead: CUDA graphs (fewer launches)
    python3 -m bench.speed --device cuda --compile "$m" --pad-mode both --steps 20 --profile 2>&1 \
      | tee -a "$OUT/speed.txt" | grep -E "ms/step|ratio"
  done
elif [ "${MODE}" = pretrain ]; then
  PY=python3 CIFAR="$DATA" DET_DATA="${DET_DATA:-.devdata/pennfudan}" PRE=pretrain DEVICE=cuda DET_SEEDS="${DET_SEEDS:-0 1 2 3}" \
      bash scripts/pretrain_then_detect.sh 2>&1 | tee -a "$OUT/log.txt" | grep -E "bench: error|Traceback| = "
  tar -cf "$OUT/records.tar" results/classification results/detection
else  # MODE=ablation: every variant at once on the one GPU (each alone leaves it mostly idle)
  for v in $VARIANTS; do
    ( run --backbone binealnet --variant "$v" --schedule gpu --epochs "${ABLATION_EPOCHS:-4}" ${RECIPE:+--recipe $RECIPE} \
        --work-dir "work_dirs/ablate_$v"; echo "== $v done at $SECONDS s" ) &
  done
  wait
fi
echo "done in $SECONDS s"
