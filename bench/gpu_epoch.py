"""Seconds per 50,000-image epoch on one GPU, the default and each speed lever side by side (issue 13).

    python bench/gpu_epoch.py --out $OUT            # on a lent GPU: one run, under 10 minutes
    python bench/gpu_epoch.py --quick --device cpu  # a smoke run with tiny sizes (no timing means anything)

It loads the notebook's `definitions` cells and times the notebook's own train_update at the default parameters
(64x64, BASE_CHANNELS 32, CHANNEL_MULTS (1, 2, 4, 4), batch 64, float32, EMA), on 50,000 synthetic uint8 images
kept on the device, for each lever alone and in the combinations that matter:

- TF32 matmuls and convolutions (torch.set_float32_matmul_precision("high"), cudnn.allow_tf32);
- bf16 autocast (MIXED_PRECISION = "bf16") with channels_last, at batch 64 and 128;
- torch.compile of the U-Net (default mode, and mode="reduce-overhead", which captures CUDA graphs), with the
  compile time reported, at batch 64 (each compile takes tens of seconds of the run's few minutes);
- batch 128 and 256 (the learning rate is not changed here: this measures speed only).

Every batch-64 configuration's loss over its --curve-updates updates (same seed, same data) is compared with the
float32 path's: the fast path must stay within 2% (mean of the loss over windows of 100 updates). Then one epoch of
50,000 images through the notebook's own train() (with its epoch-end checkpoint and sample grid) for the default and
for the fastest batch-64 configuration that kept the curve, and sampling images/s (DDIM 50 and DPM-Solver++ 20
steps in full, DDPM 1000 steps timed over 100 steps) at batch 64 and 500. Everything is written to
OUT/gpu_epoch.json after each row and printed as a table. A configuration that fails is recorded with its error, and
the run goes on.
"""

import argparse
import contextlib
import copy
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions  # noqa: E402
from tiny import default_parameters  # noqa: E402

nb = load_definitions()

LEVERS = {  # name: (config overrides, tf32, channels_last, compile mode or None)
    "float32 (eager, TF32 off)": ({}, False, False, None),
    "tf32": ({}, True, False, None),
    "bf16 + channels_last": ({"MIXED_PRECISION": "bf16"}, False, True, None),
    "tf32 + compile": ({}, True, False, "default"),
    "tf32 + compile reduce-overhead (CUDA graphs)": ({}, True, False, "reduce-overhead"),
    "tf32, batch 128": ({"BATCH_SIZE": 128}, True, False, None),
    "bf16 + channels_last, batch 128": ({"BATCH_SIZE": 128, "MIXED_PRECISION": "bf16"}, False, True, None),
    "tf32, batch 256": ({"BATCH_SIZE": 256}, True, False, None),
}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32(enabled):
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def make_config(overrides, quick):
    parameters = dict(default_parameters(), DEVICE="cpu", EVAL_IMAGES=0)
    if quick:
        parameters.update(IMAGE_SIZE=16, BASE_CHANNELS=16, CHANNEL_MULTS=(1, 2), TIMESTEPS=20, SAMPLING_STEPS=5)
    parameters.update(overrides)
    return nb.Config.from_parameters(parameters)


def build(config, device, channels_last, compile_mode):
    torch.manual_seed(config.seed)
    model = nb.UNet(config.base_channels, config.channel_mults, config.dropout).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = nb.make_optimizer(model, config.learning_rate)
    step_model = torch.compile(model, mode=compile_mode) if compile_mode else model
    return model, step_model, ema, optimizer


def time_updates(config, device, images, schedule, updates, channels_last, compile_mode):
    """(images/s over updates 2..`updates`, seconds of the first update (compile included), every update's loss)."""
    model, step_model, ema, optimizer = build(config, device, channels_last, compile_mode)
    batches = len(images) // config.batch_size
    order, flips = nb.epoch_order(len(images), config.seed, 0)
    order, flips = order.to(device), flips.to(device)
    stats, started, first = [], time.perf_counter(), None
    for update in range(updates):
        progress = dict(nb.new_progress(), batch=update % batches, step=update)
        stats.append(nb.train_update(nb.TrainingState(step_model, ema, optimizer), images, order, flips, schedule,
                                     config, device, progress))
        if update == 0:
            synchronize(device)
            first = time.perf_counter() - started
            started = time.perf_counter()
    synchronize(device)
    seconds = time.perf_counter() - started
    losses = torch.stack(stats)[:, 0].tolist()
    return config.batch_size * (updates - 1) / seconds, first, losses


def epoch_seconds(config, device, images, schedule, channels_last):
    """Seconds of one epoch of the notebook's train() over all images (a checkpoint and a grid at its end),
    compiled as train() compiles for config.use_compile."""
    scratch = Path(tempfile.mkdtemp())  # its checkpoints (about 100 MB) stay out of OUT
    config = nb.dataclasses.replace(config, epochs=1, checkpoint_dir=str(scratch / "checkpoints"),
                                    sample_dir=str(scratch / "samples"))
    model, _, ema, optimizer = build(config, device, channels_last, None)  # train() compiles
    started = time.perf_counter()
    nb.train(nb.TrainingState(model, ema, optimizer), images, schedule, config, device,
             nb.new_progress(), nb.new_run_dir(config.checkpoint_dir), live=False)
    synchronize(device)
    return {"seconds": time.perf_counter() - started, "images": len(images)}


def windows(losses, size=100):
    return [sum(losses[i : i + size]) / size for i in range(0, len(losses) - size + 1, size)]


def sampling(config, device, schedule, batch, quick):
    model = nb.UNet(config.base_channels, config.channel_mults).to(device).eval()
    shape = (batch, 3, config.image_size, config.image_size)
    generator = torch.Generator().manual_seed(0)
    nb.sample(model, shape, device, schedule, "ddim", 2, generator=generator)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    nb.sample(model, shape, device, schedule, "ddim", 5 if quick else 50, generator=generator)
    synchronize(device)
    ddim = batch / (time.perf_counter() - started)
    started = time.perf_counter()
    nb.sample(model, shape, device, schedule, "dpm++", 5 if quick else 20, generator=generator)
    synchronize(device)
    dpm = batch / (time.perf_counter() - started)
    steps = 5 if quick else 100
    started = time.perf_counter()
    for t, _ in nb.reverse_process(model, shape, device, schedule, generator=generator):
        if t <= schedule.num_timesteps - steps:
            break
    synchronize(device)
    ddpm = batch / ((time.perf_counter() - started) * schedule.num_timesteps / steps)
    return {"ddim_50_images_per_s": ddim, "dpm_solver_20_images_per_s": dpm, "ddpm_1000_images_per_s": ddpm}


def save(results, folder):
    out = Path(folder) / "gpu_epoch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=".")
    parser.add_argument("--updates", type=int, default=150, help="timed updates at other batch sizes")
    parser.add_argument("--curve-updates", type=int, default=400,
                        help="updates at the default batch, timed and their losses compared")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train-epoch-only", action="store_true",
                        help="only one train() epoch at the notebook's own defaults (USE_COMPILE, TF32 on CUDA)")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.curve_updates = 3, 4
    device = torch.device(args.device)
    count = 512 if args.quick else 50_000
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images = images.to(device)
    base = make_config({}, args.quick)
    schedule = nb.make_schedule(base.noise_schedule, base.timesteps, base.beta_start, base.beta_end).to(device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
               "torch": torch.__version__, "levers": {}}
    if args.train_epoch_only:
        nb.use_tf32(device)  # as the notebook's configuration cell does
        config = make_config({"USE_COMPILE": "auto"}, args.quick)
        mode = nb.compile_mode(config.use_compile, device)
        results["train_epoch"] = {f"notebook defaults (compile mode {mode})":
                                  epoch_seconds(config, device, images, schedule, False)}
        print(f"train() epoch: {results['train_epoch']}")
        print(f"wrote {save(results, args.out)}")
        return
    reference_curve = None
    for name, (overrides, use_tf32, channels_last, compile_mode) in LEVERS.items():
        if args.quick and compile_mode:
            continue
        if device.type != "cuda" and (use_tf32 or compile_mode == "reduce-overhead"):
            continue
        config = make_config(overrides, args.quick)
        same_batch = config.batch_size == base.batch_size  # its loss curve is comparable with the default's
        try:
            with tf32(use_tf32):
                speed, first, curve = time_updates(config, device, images, schedule,
                                                   args.curve_updates if same_batch else args.updates,
                                                   channels_last, compile_mode)
            row = {"images_per_s": speed, "seconds_per_50k_epoch": 50_000 / speed, "first_update_s": first}
            if same_batch:
                size = min(100, len(curve))
                if reference_curve is None:
                    reference_curve = windows(curve, size)
                deviation = max(abs(a / b - 1) for a, b in zip(windows(curve, size), reference_curve, strict=True))
                row.update(loss_windows=windows(curve, size), max_loss_deviation=deviation,
                           within_2_percent=deviation <= 0.02)
        except Exception as error:  # record it and go on: one failing lever must not cost the others' figures
            row = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
        results["levers"][name] = row
        save(results, args.out)  # after every row: a run stopped by its time limit keeps what it measured
        print(f"{name:45s} " + (f"{row['images_per_s']:8.0f} img/s  {row['seconds_per_50k_epoch']:6.1f} s/epoch  "
                                f"first update {row['first_update_s']:.1f} s"
                                + (f"  loss within {row['max_loss_deviation']:.1%}" if "max_loss_deviation" in row
                                   else "")
                                if "error" not in row else row["error"][:100]), flush=True)
    kept = [name for name, row in results["levers"].items() if row.get("within_2_percent")]
    fastest = max(kept, key=lambda name: results["levers"][name]["images_per_s"], default=None)
    results["train_epoch"] = {}
    for name in dict.fromkeys(["float32 (eager, TF32 off)", fastest]):
        if name is None:
            continue
        overrides, use_tf32, channels_last, compile_mode = LEVERS[name]
        if compile_mode is not None and compile_mode != nb.compile_mode(True, device):
            results["train_epoch"][name] = {"not run": f"train() compiles in mode "
                                                       f"{nb.compile_mode(True, device)!r} on {device.type}"}
            continue
        config = make_config(dict(overrides, USE_COMPILE=compile_mode is not None), args.quick)
        try:
            with tf32(use_tf32):
                results["train_epoch"][name] = epoch_seconds(config, device, images, schedule, channels_last)
        except Exception as error:
            results["train_epoch"][name] = {"error": f"{type(error).__name__}: {error}"}
        print(f"train() epoch, {name}: {results['train_epoch'][name]}", flush=True)
    results["sampling"] = {str(batch): sampling(base, device, schedule, batch, args.quick)
                           for batch in ((4, 8) if args.quick else (64, 500))}
    print("sampling:", json.dumps(results["sampling"]))
    print(f"wrote {save(results, args.out)}")


if __name__ == "__main__":
    main()
