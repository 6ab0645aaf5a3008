#!/usr/bin/env bash
# Issue 52: the samplers' colours and FD along a run, both recipes, at the notebook's 64x64 and at 32x32.
# Each row trains once and scores DPM-Solver++ 20 deterministic (eta = 0, the notebook's before issue 52) and
# stochastic (eta = 1) halfway and at its end; the 32x32 rows add DDIM 50 with eta = 1. The 64x64 rows use the
# narrower U-Net of "Quality at 64x64" (BASE_CHANNELS = 16, 1.8 s an update) and 250 samples; the 32x32 rows the
# fixed budget of "Screening at 32x32" (quality.py's U-Net, 1,200 updates, 500 samples). Rows append to
# bench/results-quality.jsonl; BENCHMARKS.md, "Colour: what FD and KID forgive", has them. About 1 h 45 min on 2 cores.
#   bash bench/colour_along.sh DATA     DATA: ../shared/data/cifar10-jpg, or the full CIFAR-10 as JPEG
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1
quality() { .venv/bin/python bench/quality.py "$data" --json bench/results-quality.jsonl "$@"; }

for recipe in paper faster; do
  quality --updates 400 --score-at 200 --samples 250 --samplers dpm++:20,dpm++:20:1 --set IMAGE_SIZE=64 \
    --set BASE_CHANNELS=16 --set "CHANNEL_MULTS=(1, 2, 4, 4)" --set RECIPE=$recipe
done
for recipe in paper faster; do
  quality --updates 1200 --score-at 400 --samples 500 --samplers dpm++:20,dpm++:20:1,ddim:50:1 --set RECIPE=$recipe
done
