#!/usr/bin/env bash
# The README's picture of a trained model: a short run of the notebook itself, headless through papermill, on this
# machine's CPU, then its reverse process drawn by docs/make_figures.py. Short so that a 2-core CPU trains it in
# under an hour: 2 epochs of the full CIFAR-10 (1,562 updates of 64 images) at the notebook's 64x64, with the U-Net
# at half the default width (BASE_CHANNELS = 16: 1.5M parameters, about 2 s an update there instead of 5 s) and
# RECIPE = "faster", which leads the paper's recipe at this length (BENCHMARKS.md). The default run is 25 times as
# long with a 4 times larger model: this shows how a model this short draws, not what a default run gives.
#   bash docs/short_run.sh DATA [RUN_FOLDER]   DATA: the training images (full CIFAR-10: see BENCHMARKS.md's header)
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${1:?usage: bash docs/short_run.sh DATA [RUN_FOLDER]}")
run=${2:-runs/readme-short}
mkdir -p "$run"
.venv/bin/papermill diffusion_model.ipynb "$run/executed.ipynb" --cwd "$run" -p DATASET "$data" -p DEVICE cpu \
  -p BASE_CHANNELS 16 -p RECIPE faster -p EPOCHS 2 -p SAMPLE_EVERY 1 -p EVAL_IMAGES 0
.venv/bin/python docs/make_figures.py denoising "$run"
