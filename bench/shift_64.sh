#!/usr/bin/env bash
# Issue 41: the two recipes at the notebook's 64x64, with the linear schedule as published and shifted for the
# upscale ("+shift", section 4), beside the same rows at 32x32. A narrower U-Net than the notebook's
# (BASE_CHANNELS = 16 instead of 32, the same CHANNEL_MULTS) so that a row fits the CPU: 1.7 s an update at 64x64
# on 2 cores instead of 5 s. Rows append to bench/results-quality.jsonl; BENCHMARKS.md has them.
#   bash bench/shift_64.sh DATA [SEEDS...]      DATA: the full CIFAR-10 as JPEG (BENCHMARKS.md says how to get it)
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1; shift
seeds=${*:-0}
common=(--updates 400 --samples 500 --samplers dpm++:20 --scorer bench/scorers/scorer-f12bc101717a-4ep.pt
        --set BASE_CHANNELS=16 --set "CHANNEL_MULTS=(1, 2, 4, 4)" --json bench/results-quality.jsonl)
for seed in $seeds; do
  for recipe in paper faster; do
    for schedule in linear linear+shift; do
      .venv/bin/python bench/quality.py "$data" "${common[@]}" --seed "$seed" --set IMAGE_SIZE=64 \
        --set RECIPE="$recipe" --set NOISE_SCHEDULE="$schedule"
    done
  done
  if [ "$seed" = 0 ]; then  # the 32x32 reference: the data's own resolution, where the shift is 1
    for recipe in paper faster; do
      .venv/bin/python bench/quality.py "$data" "${common[@]}" --seed "$seed" --set IMAGE_SIZE=32 \
        --set RECIPE="$recipe"
    done
  fi
done
