"""How fast the notebook trains and samples on this machine.

    python bench/benchmark.py                 # whatever device is present; about 4 minutes on a 2-core CPU
    python bench/benchmark.py --device cuda --json bench.json
    python bench/benchmark.py --quick         # a smoke run with tiny sizes (CI)

It loads the notebook's `definitions` cells as the tests do, so it measures the notebook's own code. It prints a
table and writes JSON: training images/s (with and without the data path), FLOPs per image and the achieved
FLOP/s against this machine's own dense rates, sampling images/s for DDPM and DDIM, peak memory of a training
step, and the same training step for diffusers' UNet2DModel as a reference (pip install -r requirements-bench.txt).
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions  # noqa: E402  (the notebook's definitions cells, as a module)
from tiny import default_parameters  # noqa: E402  (the parameters cell's values)

nb = load_definitions()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seconds_per_call(function, device, repeats, warmup=1):
    """Mean wall time of one call after `warmup` calls, waiting for the device each time."""
    for _ in range(warmup):
        function()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def counted_flops(function):
    """FLOPs of one call as torch.utils.flop_counter counts them (matmuls and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def dense_rates(device, quick):
    """This machine's own dense FLOP/s in float32: one large matmul, one 3x3 convolution."""
    n = 512 if quick else (4096 if device.type != "cpu" else 2048)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    matmul = 2 * n**3 / seconds_per_call(lambda: a @ b, device, repeats=2 if quick else 10)
    x = torch.randn(4 if quick else 16, 128, 32, 32, device=device)
    w = torch.randn(128, 128, 3, 3, device=device)
    conv_flops = 2 * x.shape[0] * 128 * 32 * 32 * 128 * 9
    conv = conv_flops / seconds_per_call(lambda: F.conv2d(x, w, padding=1), device, repeats=2 if quick else 10)
    return {"matmul_flops_per_s": matmul, "conv3x3_flops_per_s": conv}


class DiffusersUNet(torch.nn.Module):
    """diffusers' UNet2DModel with the notebook's interface: (x_t, t) -> predicted noise."""

    def __init__(self, image_size):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=3, out_channels=3, layers_per_block=2,
            block_out_channels=(32, 64, 128, 128),
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        )

    def forward(self, x, t):
        return self.unet(x, t).sample


def training_numbers(model, config, images, device, repeats):
    """Images/s of one training update with the data path (slicing, upscaling, flipping) and without it."""
    model = model.to(device).train()
    optimizer = nb.make_optimizer(model, config.learning_rate)
    state = nb.TrainingState(model, None, optimizer)
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end).to(device)
    order, flips = nb.epoch_order(len(images), config.seed, 0)
    batch = config.batch_size
    first = iter(range(10**6))

    def update_with_data():
        start = next(first) % (len(images) // batch)
        nb.train_update(state, images, order, flips, schedule, config, device, dict(nb.new_progress(), batch=start))

    x_0 = nb.prepare_batch(images, order[:batch], flips[:batch], config.image_size, device)
    prepare_batch = nb.prepare_batch

    def update_without_data():  # the same update, handed a ready batch instead of preparing one
        nb.prepare_batch = lambda *args: x_0
        try:
            nb.train_update(state, images, order, flips, schedule, config, device, nb.new_progress())
        finally:
            nb.prepare_batch = prepare_batch

    def data_only():
        nb.prepare_batch(images, order[:batch], flips[:batch], config.image_size, device)

    with_data = seconds_per_call(update_with_data, device, repeats)
    without_data = seconds_per_call(update_without_data, device, repeats)
    data = seconds_per_call(data_only, device, repeats=max(repeats, 10))
    flops = counted_flops(update_without_data) / batch
    return {
        "batch": batch,
        "images_per_s_with_data": batch / with_data,
        "images_per_s_without_data": batch / without_data,
        "data_share_of_step": data / with_data,
        "flops_per_image": flops,
        "achieved_flops_per_s": flops * batch / without_data,
    }


def sampling_numbers(model, config, device, quick):
    """Images/s of DDIM (SAMPLING_STEPS steps, run in full) and DDPM (all T steps; timed over a slice of them)."""
    model = model.to(device).eval()
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end)
    batch = 2 if quick else 8
    shape = (batch, 3, config.image_size, config.image_size)
    ddim = seconds_per_call(lambda: nb.sample(model, shape, device, schedule, "ddim", config.sampling_steps,
                                              generator=torch.Generator().manual_seed(0)), device, repeats=1)
    timed_steps = min(schedule.num_timesteps, 5 if quick else 50)

    def ddpm_slice():
        for t, _ in nb.reverse_process(model, shape, device, schedule, generator=torch.Generator().manual_seed(0)):
            if t <= schedule.num_timesteps - timed_steps:
                break

    ddpm = seconds_per_call(ddpm_slice, device, repeats=1) * schedule.num_timesteps / timed_steps
    with torch.no_grad():
        t = torch.zeros(batch, dtype=torch.long, device=device)
        flops = counted_flops(lambda: model(torch.zeros(shape, device=device), t)) / batch
    return {
        "batch": batch,
        "ddim_steps": config.sampling_steps,
        "ddim_images_per_s": batch / ddim,
        "ddpm_steps": schedule.num_timesteps,
        "ddpm_images_per_s": batch / ddpm,
        "ddpm_timed_steps": timed_steps,
        "ddim_speedup_per_image": ddpm / ddim,
        "flops_per_denoising_step_per_image": flops,
    }




def one_training_update(config, device):
    """One training update of the notebook's default model at config's batch size, on synthetic images."""
    images = nb.place_dataset(torch.randint(0, 256, (config.batch_size, 3, 32, 32), dtype=torch.uint8), device)
    model = nb.UNet(config.base_channels, config.channel_mults, config.dropout).to(device)
    optimizer = nb.make_optimizer(model, config.learning_rate)
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end).to(device)
    order, flips = nb.epoch_order(config.batch_size, config.seed, 0)
    state = nb.TrainingState(model, None, optimizer)
    nb.train_update(state, images, order, flips, schedule, config, device, nb.new_progress())


def peak_memory(config, device, quick):
    """Peak memory of one training update at BATCH_SIZE: max_memory_allocated on CUDA, driver memory on MPS,
    the peak RSS of a fresh process on the CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        one_training_update(config, device)
        return {"kind": "cuda max_memory_allocated", "bytes": torch.cuda.max_memory_allocated(device)}
    if device.type == "mps":
        one_training_update(config, device)
        torch.mps.synchronize()
        return {"kind": "mps driver_allocated_memory", "bytes": torch.mps.driver_allocated_memory()}
    child = [sys.executable, __file__, "--memory-child"] + (["--quick"] if quick else [])
    out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
    return {"kind": "peak RSS of a fresh process that runs one update", "bytes": int(out.split()[-1])}


def memory_child(config):
    """In a fresh process: one training update on the CPU, then print the process's peak RSS in bytes."""
    one_training_update(config, torch.device("cpu"))
    status = Path("/proc/self/status")
    if status.exists():  # Linux: this process's own high-water mark (ru_maxrss would include the parent's)
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        print(int(line.split()[1]) * 1024)
    else:  # macOS: ru_maxrss, in bytes there
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--json", default="bench/results.json", help="where to write the figures")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    parser.add_argument("--small-batch", type=int, default=16)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    parameters = default_parameters()
    if args.quick:
        parameters.update(IMAGE_SIZE=16, BASE_CHANNELS=16, CHANNEL_MULTS=(1, 2), TIMESTEPS=20, SAMPLING_STEPS=5,
                          BATCH_SIZE=4)
        args.small_batch = 2
    config = nb.Config.from_parameters(parameters)
    if args.memory_child:
        return memory_child(config)
    device = nb.pick_device(args.device)
    repeats = 1 if args.quick else 2
    images = torch.randint(0, 256, (1024, 3, 32, 32), dtype=torch.uint8)  # CIFAR-10 sized, as the notebook keeps it
    images = nb.place_dataset(images, device)
    torch.manual_seed(0)

    results = {"device": str(device), "machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
               "config": {"image_size": config.image_size, "base_channels": config.base_channels},
               "parameters": nb.count_parameters(nb.UNet(config.base_channels, config.channel_mults))}
    if device.type == "cuda":
        results["machine"] = torch.cuda.get_device_name(device)
    results["dense"] = dense_rates(device, args.quick)
    results["training"] = {}
    runs = [(config.batch_size, nb.CPU_MICRO_BATCH), (config.batch_size, None), (args.small_batch, nb.CPU_MICRO_BATCH)]
    if nb.micro_batch_size(config.batch_size, device) == config.batch_size:
        runs.remove((config.batch_size, None))  # the notebook already runs the whole batch here
    for batch, micro in runs:
        nb.CPU_MICRO_BATCH = micro or batch  # the notebook's constant, for this run
        batch_config = nb.dataclasses.replace(config, batch_size=batch)
        model = nb.UNet(config.base_channels, config.channel_mults, config.dropout)
        numbers = training_numbers(model, batch_config, images, device, repeats)
        numbers["micro_batch"] = nb.micro_batch_size(batch, device)
        results["training"][f"batch_{batch}" + ("_whole" if micro is None else "")] = numbers
    nb.CPU_MICRO_BATCH = runs[0][1]
    small = nb.dataclasses.replace(config, batch_size=args.small_batch)
    try:
        reference = DiffusersUNet(config.image_size)
        results["diffusers_reference"] = dict(training_numbers(reference, small, images, device, repeats),
                                              parameters=nb.count_parameters(reference))
    except ImportError:
        results["diffusers_reference"] = "not installed: pip install -r requirements-bench.txt"
    results["sampling"] = sampling_numbers(nb.UNet(config.base_channels, config.channel_mults), config, device,
                                           args.quick)
    results["peak_memory_training_step"] = dict(peak_memory(config, device, args.quick), batch=config.batch_size,
                                                micro_batch=nb.micro_batch_size(config.batch_size, device))
    report(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")


def report(results):
    matmul = results["dense"]["matmul_flops_per_s"]
    print(f"{results['machine']} ({results['device']}), torch {results['torch']}, {results['threads']} threads; "
          f"UNet {results['parameters']:,} parameters at {results['config']['image_size']}x"
          f"{results['config']['image_size']}")
    conv = results["dense"]["conv3x3_flops_per_s"]
    print(f"dense float32: matmul {matmul / 1e9:.1f} GFLOP/s, 3x3 conv {conv / 1e9:.1f} GFLOP/s")
    rows = [(f"notebook, batch {r['batch']} in pieces of {r['micro_batch']}", r) for r in results["training"].values()]
    if isinstance(results["diffusers_reference"], dict):
        rows.append((f"diffusers UNet2DModel ({results['diffusers_reference']['parameters'] / 1e6:.1f}M), batch "
                     f"{results['diffusers_reference']['batch']}", results["diffusers_reference"]))
    print(f"\n{'training step':44s} {'img/s':>8s} {'no data':>8s} {'data %':>7s} {'GFLOP/img':>10s} "
          f"{'GFLOP/s':>8s} {'of matmul':>9s}")
    for name, r in rows:
        print(f"{name:44s} {r['images_per_s_with_data']:8.2f} {r['images_per_s_without_data']:8.2f} "
              f"{100 * r['data_share_of_step']:6.1f}% {r['flops_per_image'] / 1e9:10.2f} "
              f"{r['achieved_flops_per_s'] / 1e9:8.1f} {100 * r['achieved_flops_per_s'] / matmul:8.0f}%")
    if not isinstance(results["diffusers_reference"], dict):
        print(f"diffusers reference: {results['diffusers_reference']}")
    s = results["sampling"]
    print(f"\nsampling, batch {s['batch']}: DDIM {s['ddim_steps']} steps {s['ddim_images_per_s']:.3f} img/s; "
          f"DDPM {s['ddpm_steps']} steps {s['ddpm_images_per_s']:.4f} img/s (timed over {s['ddpm_timed_steps']} "
          f"steps); DDIM is {s['ddim_speedup_per_image']:.1f}x faster per image; "
          f"{s['flops_per_denoising_step_per_image'] / 1e9:.2f} GFLOP per denoising step per image")
    m = results["peak_memory_training_step"]
    print(f"peak memory of a training step at batch {m['batch']} (pieces of {m['micro_batch']}): "
          f"{m['bytes'] / 2**30:.2f} GiB = {m['bytes'] / 1e9:.2f} GB ({m['kind']})")


if __name__ == "__main__":
    main()
