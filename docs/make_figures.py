"""The README's figures, made from the notebook's own definitions (or its own run):

    python docs/make_figures.py forward [TRAIN_FOLDER]   # default: ../shared/data/cifar10-jpg/train, as the tests
    python docs/make_figures.py denoising RUN_FOLDER      # a run of docs/short_run.sh (or any papermill run)
    python docs/make_figures.py panel RUN_FOLDER          # a run of docs/short_run.sh --panel (or any papermill run)
    python docs/make_figures.py result OUT_FOLDER         # what bench/default_run.sh run brought back from a GPU

docs/forward-process.jpg: real CIFAR-10 training images, upscaled to 64x64 as the notebook trains on them, noised by
Eq. 4 at growing t with the published linear schedule and with the same schedule shifted for the upscale
(NOISE_SCHEDULE = "linear+shift", section 4), from the same noise.

docs/denoising-steps.jpg: the reverse process (DDPM, Alg. 2, all T steps) of the EMA weights of a run's newest
checkpoint, read with the notebook's load_model, for a few samples; its title names the run's device, length and
training time, read from the executed notebook that papermill wrote into RUN_FOLDER. It also exports those weights
in float16 (export_weights) to RUN_FOLDER/weights_float16.pt and prints how far their samples are from float32's.

docs/training-panel.png: the training cell's live panel as the run left it (tqdm's bar line, the last epochs, the loss
plots and the latest grid), rendered by chromium from the panel's own HTML in the executed notebook.

docs/result-samples.jpg, docs/result-progress.jpg, docs/result-curves.png: a run at length (bench/default_run.sh on a
GPU). 64 samples of its float16 EMA weights (OUT/weights_float16.pt) drawn here with the run's sampler; the EMA half
of the notebook's own sample grids at each evaluated epoch (the same noise every time); the loss per update and FID
per epoch. It prints the README's caption, each epoch's seconds and the FID rows for BENCHMARKS.md.
"""

import datetime
import html
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import PIL.Image  # noqa: E402
import PIL.ImageChops  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions, real_train_folder  # noqa: E402

nb = load_definitions("readme_figures")  # its own module: beside the tests' copy, not over it


def forward_process_figure(images, path, timesteps=(0, 100, 200, 300, 400, 500, 700, 999), seed=0):
    """One row per image and schedule: x_t at each of `timesteps` (code indices), the same noise for both."""
    x_0 = nb.prepare_batch(images, torch.arange(len(images)), None, 64, "cpu")  # (B, 3, 64, 64) in [-1, 1]
    shift = nb.snr_shift("linear+shift", 64, "cifar10")
    schedules = {"linear": nb.make_schedule("linear", 1000, 1e-4, 0.02),
                 "linear+shift": nb.make_schedule("linear+shift", 1000, 1e-4, 0.02, shift)}
    noise = torch.randn((len(images), 3, 64, 64), generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(len(images) * 2, len(timesteps), figsize=(len(timesteps) * 1.1, len(images) * 2.3))
    for i in range(len(images)):
        for j, (name, schedule) in enumerate(schedules.items()):
            row = axes[2 * i + j]
            for ax, t in zip(row, timesteps, strict=True):
                x_t = nb.forward_diffusion(x_0[i : i + 1], torch.tensor([t]), noise[i : i + 1], schedule)
                ax.imshow(nb.to_unit_range(x_t[0]).permute(1, 2, 0).numpy())
                ax.set_xticks([]), ax.set_yticks([])
                if i == 0 and j == 0:
                    ax.set_title(f"t = {t}", fontsize=8)
            row[0].set_ylabel(name, fontsize=7)
    fig.suptitle("Forward process (Eq. 4) on CIFAR-10 at 64x64: published linear schedule and shifted (k = 4)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=72, pil_kwargs={"quality": 85})  # JPEG: noise does not compress as PNG
    plt.close(fig)
    return path


def newest_checkpoint(run_folder):
    """The newest checkpoint of a papermill run in `run_folder` (docs/short_run.sh), found as RESUME = "latest"
    finds it."""
    try:
        return nb.find_resume_checkpoint("latest", Path(run_folder) / "checkpoints")[0]
    except FileNotFoundError as error:
        raise SystemExit(f"{run_folder} holds no checkpoint: run docs/short_run.sh first") from error


def training_cell(cells):
    """The training cell of an executed notebook's cells, with papermill's record of its time."""
    (cell,) = [cell for cell in cells if "progress = train(" in "".join(cell["source"])]
    return cell


def run_summary(executed_path, checkpoint_path, minutes=None):
    """"2 epochs (1,562 updates of 64 images) of a 1.5M-parameter U-Net (...) on cpu (2 CPU threads) in 52 min" of a
    papermill run of the notebook: its length and model from the checkpoint (or export_weights' file), the device
    from what the run printed, the time `minutes`, else papermill's record of the training cell (compile, grids and
    checkpoints included)."""
    if not Path(executed_path).exists():
        raise SystemExit(f"no {executed_path}: run the notebook through papermill first")
    cells = json.loads(Path(executed_path).read_text())["cells"]
    text = "\n".join("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
                     for cell in cells for out in cell.get("outputs", []))
    device, threads = re.search(r"^device: +([^,\n]+)", text, re.MULTILINE), re.search(r"(\d+) CPU threads", text)
    timing = training_cell(cells)["metadata"].get("papermill", {})
    if device is None or (minutes is None and "duration" not in timing):
        raise SystemExit(f"{executed_path} is not a finished papermill run of the notebook (no device line or no time)")
    minutes = timing["duration"] / 60 if minutes is None else minutes
    checkpoint = nb.load_checkpoint(checkpoint_path)
    config, progress = checkpoint["config"], checkpoint["progress"]
    where = device.group(1) + (f" ({threads.group(1)} CPU threads)" if device.group(1) == "cpu" and threads else "")
    summary = (f"{progress['epoch']} epoch{'s' * (progress['epoch'] != 1)} ({progress['step']:,} updates of "
               f"{config['batch_size'] * config['grad_accum_steps']} images) of a "
               f"{sum(v.numel() for v in checkpoint['model'].values()) / 1e6:.1f}M-parameter U-Net (BASE_CHANNELS = "
               f"{config['base_channels']}, RECIPE = {config['recipe']!r}) at {config['image_size']}x"
               f"{config['image_size']} on {where} in {minutes:.0f} min")
    return summary


def denoising_figure(checkpoint_path, summary, path, count=6, seed=0):
    """`count` samples of the checkpoint's EMA weights through DDPM's T steps (Alg. 2), shown after 8 of them."""
    model, schedule, size, _, prediction = nb.load_model(checkpoint_path, torch.device("cpu"))
    predictor = nb.NoisePredictor(model, schedule, prediction)
    at_steps = [round(f * (schedule.num_timesteps - 1)) for f in (1, 0.8, 0.6, 0.45, 0.3, 0.15, 0.05, 0)]
    chain = nb.reverse_process(predictor, (count, 3, size, size), torch.device("cpu"), schedule,
                               generator=torch.Generator().manual_seed(seed))
    snapshots = {t: x.clamp(-1, 1) for t, x in chain if t in at_steps}
    fig, axes = plt.subplots(count, len(at_steps), figsize=(len(at_steps) * 1.1, count * 1.15 + 0.4))
    for j, t in enumerate(at_steps):
        axes[0, j].set_title(f"after t = {t}", fontsize=7)
        for i in range(count):
            axes[i, j].imshow(nb.to_unit_range(snapshots[t][i]).permute(1, 2, 0).numpy())
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
    first, rest = summary.split(" of a ", 1)
    fig.suptitle(f"Reverse process (DDPM, {schedule.num_timesteps} steps, EMA weights) after a short run: {first}\n"
                 f"of a {rest}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, pil_kwargs={"quality": 85})
    plt.close(fig)
    return path


def float16_check(checkpoint_path, path, count=16, steps=20, seed=0):
    """(file MiB, checkpoint MiB, largest difference) of the float16 weights that export_weights writes to `path`,
    against the checkpoint's float32 EMA weights: `count` DPM-Solver++ samples in [-1, 1] from the same noise."""
    cpu = torch.device("cpu")
    path = nb.export_weights(checkpoint_path, path)
    (full, schedule, size, _, prediction), (half, *_) = nb.load_model(checkpoint_path, cpu), nb.load_model(path, cpu)
    draws = [nb.sample(nb.NoisePredictor(model, schedule, prediction), (count, 3, size, size), cpu, schedule, "dpm++",
                       steps, generator=torch.Generator().manual_seed(seed)) for model in (full, half)]
    return path.stat().st_size / 2**20, Path(checkpoint_path).stat().st_size / 2**20, (draws[0] - draws[1]).abs().max()


def panel_figure(run_folder, path, width=720):
    """The live panel of the training cell of RUN_FOLDER/executed.ipynb, as the run left it, rendered by the browser
    the tests use (its HTML is the panel's own; tqdm's widget is drawn as the bar's text line, which the panel keeps
    for terminals), scaled to `width` pixels, as a small palette PNG."""
    executed = Path(run_folder) / "executed.ipynb"
    if not executed.exists():
        raise SystemExit(f"no {executed}: run docs/short_run.sh --panel (or the notebook through papermill) first")
    outputs = training_cell(json.loads(executed.read_text())["cells"])["outputs"]
    (panel,) = [out["data"] for out in outputs if "text/html" in out.get("data", {})]
    bar_line = "".join(panel["text/plain"]).split("\n")[0]
    from playwright.sync_api import sync_playwright  # requirements-dev.txt
    from test_browser import CHROMIUM, CHROMIUM_FLAGS  # chromium, found as the browser test finds it
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 400})
        page.set_content(f'<body style="margin:8px; font-size:13px"><pre style="margin:2px 0">{html.escape(bar_line)}'
                         f'</pre>{"".join(panel["text/html"])}</body>')
        image = PIL.Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")  # PNG bytes
        browser.close()
    box = PIL.ImageChops.difference(image, PIL.Image.new("RGB", image.size, "white")).getbbox()  # the page's content
    image = image.crop((0, 0, min(image.width, box[2] + 8), min(image.height, box[3] + 8)))
    image = image.resize((width, round(image.height * width / image.width)), PIL.Image.LANCZOS)
    image.quantize(colors=128).save(path, optimize=True)
    return path


def ema_grids(samples_tar):
    """{epoch: the EMA half of the notebook's sample grid samples/<run>/epoch_NNNN.png} from bench/default_run.sh's
    samples.tar (save_sample_grid puts the raw weights' grid, 8 white columns, then the EMA weights'; a run without
    EMA has the raw one alone)."""
    grids = {}
    with tarfile.open(samples_tar) as archive:
        for member in archive.getmembers():
            found = re.search(r"epoch_(\d+)\.png$", member.name)
            if found:
                image = PIL.Image.open(io.BytesIO(archive.extractfile(member).read())).convert("RGB")
                if image.width > image.height:  # raw | EMA
                    image = image.crop((image.width - (image.width - 8) // 2, 0, image.width, image.height))
                grids[int(found.group(1))] = image
    return grids


def training_start(executed_path):
    """When the training cell of a papermill run started (papermill's record), in seconds since the epoch."""
    cell = training_cell(json.loads(Path(executed_path).read_text())["cells"])
    start = datetime.datetime.fromisoformat(cell["metadata"]["papermill"]["start_time"])
    utc = datetime.timezone.utc  # datetime.UTC is Python 3.11's; the notebook allows 3.10
    return (start if start.tzinfo else start.replace(tzinfo=utc)).timestamp()  # papermill < 2.5: naive UTC


def epoch_spans(start, epoch_ends):
    """[(first epoch, last epoch, seconds each)] from the training cell's `start` and the times bench/default_run.py
    saw each epoch's checkpoint written (progress.json's epoch_ends): the first from the start (the compile
    included); each span from one checkpoint to the next, so it holds the grid drawn after the epoch before it; an
    epoch whose checkpoint went before it was seen (the run keeps three) shares its span with the next."""
    spans, before, time_before = [], 0, start
    for epoch, _, written in epoch_ends:
        spans.append((before + 1, epoch, (written - time_before) / (epoch - before)))
        before, time_before = epoch, written
    return spans


def result_figures(out, docs, count=64, seed=0):
    """The README's pictures of a run at length from what bench/default_run.sh brought back to `out`; returns the
    paths and the caption."""
    out = Path(out)
    missing = [name for name in ("executed.ipynb", "fid.jsonl", "progress.json", "samples.tar", "weights_float16.pt")
               if not (out / name).exists()]
    if missing:
        raise SystemExit(f"{out} lacks {', '.join(missing)}: give the folder bench/default_run.sh run wrote ($OUT)")
    rows = [json.loads(line) for line in (out / "fid.jsonl").read_text().splitlines()]
    progress = json.loads((out / "progress.json").read_text())
    weights = out / "weights_float16.pt"
    exported = nb.load_checkpoint(weights)
    config, start = exported["config"], training_start(out / "executed.ipynb")
    (written,) = [written for epoch, _, written in progress["epoch_ends"] if epoch == exported["progress"]["epoch"]]
    summary = run_summary(out / "executed.ipynb", weights, (written - start) / 60)  # a call cut short has no duration
    (final,) = [row for row in rows if row["epoch"] == exported["progress"]["epoch"]]  # the weights' own FID
    caption = (f"{summary}; FID {final['fid']:.1f} ({final['samples']:,} samples, {final['sampler']} "
               f"{final['steps']} steps, eta {final['eta']:g}, against as many training images of CIFAR-10's "
               f"JPEG copy, re-encoded at quality about 75, which scores differently from the PNG originals)")

    model, schedule, size, _, prediction = nb.load_model(weights, torch.device("cpu"))
    predictor = nb.NoisePredictor(model, schedule, prediction)
    images = nb.sample(predictor, (count, 3, size, size), torch.device("cpu"), schedule, config["sampler"],
                       config["sampling_steps"], config["sampling_eta"], torch.Generator().manual_seed(seed))
    samples_path = docs / "result-samples.jpg"
    grid = nb.make_grid(nb.to_unit_range(images), nrow=round(count**0.5), padding=2, pad_value=1)  # (3, H, W)
    PIL.Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy()).save(samples_path, quality=90)

    grids, fid = ema_grids(out / "samples.tar"), {row["epoch"]: row for row in rows}
    shown = [epoch for epoch in sorted(grids) if epoch in fid]
    if len(shown) > 6:  # six, spread from the first to the last
        shown = [shown[round(i * (len(shown) - 1) / 5)] for i in range(6)]
    fig, axes = plt.subplots(1, len(shown), figsize=(len(shown) * 2.4, 2.8), squeeze=False)
    for ax, epoch in zip(axes[0], shown, strict=True):
        ax.imshow(grids[epoch])
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"epoch {epoch}: {fid[epoch]['images_seen'] / 1e6:.2f}M images\nFID {fid[epoch]['fid']:.1f}",
                     fontsize=8)
    fig.suptitle(f"The same noise through the EMA weights as training goes ({config['sampler']}, "
                 f"{config['sampling_steps']} steps, eta {config['sampling_eta']:g})", fontsize=8)
    fig.tight_layout()
    progress_path = docs / "result-progress.jpg"
    fig.savefig(progress_path, dpi=120, pil_kwargs={"quality": 85})  # 2.4 in: 288 pixels, a grid's own 266
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3))
    nb.plot_losses(progress["losses"], progress["quarter_losses"], axes[:2])
    axes[2].plot([row["epoch"] for row in rows], [row["fid"] for row in rows], "o-", color="tab:red")
    for row in rows:
        axes[2].annotate(f"{row['fid']:.1f}", (row["epoch"], row["fid"]), textcoords="offset points",
                         xytext=(0, 5), ha="center", fontsize=7)
    axes[2].set(xlabel="epoch", ylabel="FID (lower is better)")
    counts = " or ".join(f"{count:,}" for count in sorted({row["samples"] for row in rows}))
    axes[2].set_title(f"FID of the EMA weights ({counts} samples)", fontsize=9)
    fig.tight_layout()
    curves_path = docs / "result-curves.png"
    fig.savefig(curves_path, dpi=72)
    plt.close(fig)

    spans = epoch_spans(start, progress["epoch_ends"])
    print("seconds per epoch, checkpoint to checkpoint (an FID evaluation shares the GPU every few):", ", ".join(
        f"{first}: {seconds:.1f}" if first == last else f"{first}-{last}: {seconds:.1f} each"
        for first, last, seconds in spans))
    print("| epoch | images seen | samples | FID | KID | seconds to sample and score |\n" + "| --- " * 6 + "|")
    for row in rows:
        print(f"| {row['epoch']} | {row['images_seen']:,} | {row['samples']:,} | {row['fid']:.2f} | {row['kid']:.4f} "
              f"± {row['kid_std']:.4f} | {row['seconds']} |")
    return [samples_path, progress_path, curves_path], caption


def main():
    what, arguments = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    docs = ROOT / "docs"
    if what == "forward":
        folder = Path(arguments[0]) if arguments else real_train_folder()[0]
        if folder is None:
            raise SystemExit(real_train_folder()[1])
        images, labels, _ = nb.load_image_folder(str(folder), 32)
        picks = torch.stack([torch.nonzero(labels == c)[0, 0] for c in (0, 7, 3)])  # an airplane, a horse, a cat
        path = forward_process_figure(images[picks], docs / "forward-process.jpg")
    elif what == "denoising" and len(arguments) == 1:
        checkpoint = newest_checkpoint(arguments[0])
        summary = run_summary(Path(arguments[0]) / "executed.ipynb", checkpoint)
        print(f"{checkpoint}: {summary}")
        path = denoising_figure(checkpoint, summary, docs / "denoising-steps.jpg")
        size, full_size, difference = float16_check(checkpoint, Path(arguments[0]) / "weights_float16.pt")
        print(f"float16 weights: {size:.2f} MiB against the checkpoint's {full_size:.1f} MiB; 16 DPM-Solver++ 20 "
              f"samples from the same noise within {difference:.4f} ({difference * 127.5:.2f} of an 8-bit level)")
    elif what == "panel" and len(arguments) == 1:
        path = panel_figure(arguments[0], docs / "training-panel.png")
    elif what == "result" and len(arguments) == 1:
        paths, caption = result_figures(arguments[0], docs)
        print(caption)
        for path in paths[:-1]:
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
        path = paths[-1]
    else:
        raise SystemExit(__doc__)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
