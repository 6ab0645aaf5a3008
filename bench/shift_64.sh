#!/usr/bin/env bash
# Issue 41: the two recipes at the notebook's 64x64, with the linear schedule as published and shifted for the
# upscale ("+shift", section 4), beside the same recipes at 32x32, where the shift is 1. A narrower U-Net than the
# notebook's (BASE_CHANNELS = 16 instead of 32, the same CHANNEL_MULTS) so that a row fits a 2-core CPU: 1.7 s an
# update at 64x64 instead of 5 s. Each row appends to bench/results-quality.jsonl; BENCHMARKS.md has them
# ("Quality at 64x64: the schedule shifted for upscaled images").
#   bash bench/shift_64.sh DATA      DATA: the full CIFAR-10 as JPEG (BENCHMARKS.md's header says how to get it)
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1

row() {  # UPDATES IMAGE_SIZE RECIPE NOISE_SCHEDULE: one training run, 500 DPM-Solver++ 20 samples, scored
  .venv/bin/python bench/quality.py "$data" --updates "$1" --samples 500 --samplers dpm++:20 \
    --scorer bench/scorers/scorer-f12bc101717a-4ep.pt --set BASE_CHANNELS=16 --set "CHANNEL_MULTS=(1, 2, 4, 4)" \
    --json bench/results-quality.jsonl --seed 0 --set IMAGE_SIZE="$2" --set RECIPE="$3" --set NOISE_SCHEDULE="$4"
}

for recipe in paper faster; do  # 400 updates: the faster recipe's screen; the paper recipe's samples are noise yet
  row 400 64 "$recipe" linear
  row 400 64 "$recipe" linear+shift
done
row 800 64 paper linear  # the paper recipe learns at 2e-4, a fifth of the faster one's rate: twice the updates
row 800 64 paper linear+shift
for recipe in paper faster; do
  row 400 32 "$recipe" linear  # the data's own resolution: the shift is 1 there
done
