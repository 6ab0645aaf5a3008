#!/usr/bin/env bash
# The README's picture of the live training panel: a run short enough for a 2-core CPU (about 12 minutes in all) that
# still learns something its grid can show. The notebook itself, headless through papermill, at 32x32 (CIFAR-10's own
# size) with the U-Net at half the default width (BASE_CHANNELS = 16) and RECIPE = "faster", 12 epochs of DATA's
# images, no FID; then docs/make_figures.py renders the training cell's panel as the run left it.
#   bash docs/panel_run.sh DATA [RUN_FOLDER]   DATA: the training images, e.g. ../shared/data/cifar10-jpg/train
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${1:?usage: bash docs/panel_run.sh DATA [RUN_FOLDER]}")
run=${2:-runs/readme-panel}
mkdir -p "$run"
.venv/bin/papermill diffusion_model.ipynb "$run/executed.ipynb" --cwd "$run" -p DATASET "$data" -p DEVICE cpu \
  -p IMAGE_SIZE 32 -p BASE_CHANNELS 16 -p RECIPE faster -p EPOCHS 12 -p SAMPLE_EVERY 2 -p EVAL_IMAGES 0
.venv/bin/python docs/make_figures.py panel "$run"
