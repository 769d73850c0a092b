#!/usr/bin/env bash
# Wheels for a GPU machine that has torch but no OpenMMLab (Python 3.12, x86_64, no internet):
# fetched here into .whl/<set>/ (git-ignored), carried with the device tool, installed there by
# `bench campaign ... --wheels .whl/<set>` (or pip install --no-index --no-deps --target).
# Usage: bash scripts/fetch_device_wheels.sh [classification|segmentation|all]
#   (classification needs mmengine only; segmentation adds mmcv-lite and mmsegmentation, 5 MB in all)
set -euo pipefail
cd "$(dirname "$0")/.."
base="mmengine==0.10.7 addict yapf termcolor platformdirs"
all="$base mmcv-lite==2.1.0 mmdet==3.3.0 mmsegmentation==1.2.2 pycocotools kornia==0.9.0 kornia-rs shapely
     regex ftfy terminaltables prettytable wcwidth"
segmentation="$base mmcv-lite==2.1.0 mmsegmentation==1.2.2 regex ftfy prettytable wcwidth"
case "${1:-all}" in
  classification) pkgs=$base ;;
  segmentation) pkgs=$segmentation ;;
  all) pkgs=$all ;;
  *) echo "unknown wheel set ${1}: classification, segmentation or all" >&2; exit 2 ;;
esac
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d ".whl/${1:-all}" $pkgs
du -sh ".whl/${1:-all}"
