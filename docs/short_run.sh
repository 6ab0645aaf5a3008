#!/usr/bin/env bash
# The README's pictures of a trained model: short runs of the notebook itself, headless through papermill, on this
# machine's CPU, with the U-Net at half the default width (BASE_CHANNELS = 16: 1.5M parameters) and RECIPE =
# "faster", which leads the paper's recipe at this length (BENCHMARKS.md); no FID. The default run is 25 times as
# long with a 4 times larger model: these show how a model this short draws, not what a default run gives.
# - The reverse process (docs/denoising-steps.jpg): 2 epochs of the full CIFAR-10 (1,562 updates of 64 images) at
#   the notebook's 64x64, about 2 s an update on 2 cores, under an hour in all.
# - With --panel, the live training panel (docs/training-panel.png): 12 epochs of DATA at 32x32, CIFAR-10's own
#   size: about 12 minutes in all for ../shared/data/cifar10-jpg/train's 5,000 images (ten times that for the full
#   set); docs/make_figures.py renders the training cell's panel as the run left it.
#   bash docs/short_run.sh [--panel] DATA [RUN_FOLDER]   DATA: training images (the full CIFAR-10: BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --panel ]; then
  shift
  figure=panel run=${2:-runs/readme-panel} settings=(-p IMAGE_SIZE 32 -p EPOCHS 12 -p SAMPLE_EVERY 2)
else
  figure=denoising run=${2:-runs/readme-short} settings=(-p EPOCHS 2 -p SAMPLE_EVERY 1)
fi
data=$(realpath "${1:?usage: bash docs/short_run.sh [--panel] DATA [RUN_FOLDER]}")
mkdir -p "$run"
.venv/bin/python tests/headless.py diffusion_model.ipynb "$run/executed.ipynb" --cwd "$run" -p DATASET "$data" -p DEVICE cpu \
  -p BASE_CHANNELS 16 -p RECIPE faster -p EVAL_IMAGES 0 "${settings[@]}"
.venv/bin/python docs/make_figures.py "$figure" "$run"
