"""Sample quality at a fixed training budget: the notebook's recipe, its levers, and lucidrains' DDPM beside them.

    python bench/quality.py DATA                          # the notebook's default recipe, 1,200 updates of 64
    python bench/quality.py DATA --set LEARNING_RATE=1e-3 --set WARMUP_STEPS=0
    python bench/quality.py DATA --samplers ddim:50,dpm++:20,ddim:50:1   # one trained model, several samplers
    python bench/quality.py DATA --peer lucidrains-ddpm    # lucidrains' model (pip install -r requirements-bench.txt)
    python bench/quality.py DATA --check-scorer            # real held-out < blurred < noise?
    python bench/quality.py DATA --quick                   # a smoke run with tiny sizes (CI)

DATA is an image folder with train/<class>/*.jpg and test/<class>/*.jpg: ../shared/data/cifar10-jpg (5,000 + 1,000
images) or the full CIFAR-10 as JPEG (50,000 + 10,000; see BENCHMARKS.md).

Training uses the notebook's own code (its `definitions` cells, loaded as the tests load them), at 32x32 on the CPU
with the U-Net at BASE_CHANNELS = 32, CHANNEL_MULTS = (1, 2, 4) unless --set says otherwise. Then it draws --samples
images from the EMA weights with each sampler and scores them.

The score: Inception's weights cannot be fetched here, so the features come from a small CIFAR-10 classifier that
this script trains once on DATA/train (cached under bench/cache/). A Frechet distance (FD) and a KID in its feature
space compare the samples with DATA/test, images neither the classifier nor the diffusion model trained on. Lower
is better for both. The figures are only comparable between rows with the same DATA, sample count and scorer.
"""

import argparse
import ast
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.utils import save_image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions  # noqa: E402  (the notebook's definitions cells, as a module)
from tiny import default_parameters  # noqa: E402  (the parameters cell's values)

nb = load_definitions()
CACHE = ROOT / "bench" / "cache"
SCORERS = ROOT / "bench" / "scorers"  # committed scorers: every session and machine scores with the same weights
BENCH_DEFAULTS = dict(IMAGE_SIZE=32, BASE_CHANNELS=32, CHANNEL_MULTS=(1, 2, 4))


# ---------------------------------------------------------------- data


def save_atomically(obj, path):
    """torch.save to a temporary file, then rename: a stopped run leaves no half-written cache."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, Path(path).with_suffix(".partial"))
    Path(path).with_suffix(".partial").replace(path)


def folder_images(folder, cache=CACHE):
    """Every image of an image folder as (uint8 (N, 3, 32, 32), labels (N,)), cached as one tensor file."""
    folder = Path(folder)
    files = sorted(folder.glob("*/*.*"))
    if not files:
        raise SystemExit(f"{folder} holds no images in class subfolders; DATA needs train/<class>/*.jpg and "
                         f"test/<class>/*.jpg")
    key = hashlib.sha256("\n".join(f"{f.relative_to(folder)}:{f.stat().st_size}" for f in files).encode())
    path = Path(cache) / f"images-{folder.name}-{len(files)}-{key.hexdigest()[:12]}.pt"
    if path.exists():
        stored = torch.load(path, weights_only=True)
        return stored["images"], stored["labels"]
    images, labels, _ = nb.load_image_folder(str(folder), 32)
    save_atomically({"images": images, "labels": labels}, path)
    return images, labels


# ---------------------------------------------------------------- the scorer


class Classifier(nn.Module):
    """A small CIFAR-10 classifier (about 0.3M parameters); its pooled last features (128) are the feature space."""

    def __init__(self, classes=10, width=32):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(*block(3, w), *block(w, w), nn.MaxPool2d(2),  # 16x16
                                  *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8x8
                                  *block(2 * w, 4 * w), *block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, classes)

    def features(self, x):  # uint8 (B, 3, 32, 32) -> (B, 128)
        return self.body(x.float() / 127.5 - 1)

    def forward(self, x):
        return self.head(self.features(x))


def train_classifier(images, labels, epochs, seed=0, batch=128):
    """Train the scorer's classifier on uint8 images with flips and 2-pixel shifts (one-cycle SGD)."""
    torch.manual_seed(seed)
    model = Classifier(int(labels.max()) + 1)
    batch = min(batch, len(images))
    steps = epochs * (len(images) // batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.2, total_steps=max(steps, 1))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        for i in range(len(images) // batch):
            index = order[i * batch : (i + 1) * batch]
            x = images[index]
            x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)
            dx, dy = torch.randint(-2, 3, (2,)).tolist()
            x = torch.roll(x, (dy, dx), dims=(-2, -1))
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_schedule.step()
        print(f"  scorer epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    return model.eval()


@torch.no_grad()
def accuracy(model, images, labels):
    predictions = torch.cat([model(chunk).argmax(1) for chunk in images.split(500)])
    return (predictions == labels).float().mean().item()


def load_scorer(data, epochs, cache=CACHE, limit=None, path=None):
    """The classifier at `path`, or else the one trained on DATA/train, or `limit` of its images spread over the
    classes: the committed one for these images and epochs (bench/scorers/), else one trained here and cached.
    Training it again gives other weights (multithreaded CPU convolutions do not add up in a fixed order), so rows
    are comparable only under one scorer: each row names its scorer's hash."""
    if path is not None:  # e.g. the full CIFAR-10's committed scorer, for a subset of its training images
        model = Classifier()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    images, labels = folder_images(Path(data) / "train", cache)
    if limit is not None:
        every = max(1, len(images) // limit)
        images, labels = images[::every][:limit], labels[::every][:limit]
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:12]
    name = f"scorer-{digest}-{epochs}ep.pt"
    path = SCORERS / name if (SCORERS / name).exists() else Path(cache) / name
    model = Classifier(int(labels.max()) + 1)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    started = time.perf_counter()
    print(f"training the scorer's classifier on {len(images)} images, {epochs} epochs (cached afterwards)")
    model = train_classifier(images, labels, epochs)
    test_images, test_labels = folder_images(Path(data) / "test", cache)
    print(f"  scorer: {accuracy(model, test_images, test_labels):.1%} test accuracy, "
          f"{time.perf_counter() - started:.0f} s")
    save_atomically(model.state_dict(), path)
    return model


@torch.no_grad()
def features(scorer, images):
    """Scorer features (N, 128) float64 of uint8 images (N, 3, 32, 32)."""
    return torch.cat([scorer.features(chunk) for chunk in images.split(500)]).double()


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, D), as FID computes it."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eigenvalues = torch.linalg.eigvals(cov_a @ cov_b)  # Tr((S_a S_b)^(1/2)) = sum of sqrt of its eigenvalues
    trace_sqrt = eigenvalues.sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt)


def kid(a, b, subsets=20, subset_size=500, seed=0):
    """Unbiased MMD^2 with the kernel (x.y / D + 1)^3, averaged over random subsets: (mean, std) x 1000."""
    generator = torch.Generator().manual_seed(seed)
    m = min(subset_size, len(a), len(b))
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m]]
        y = b[torch.randperm(len(b), generator=generator)[:m]]
        k_xx, k_yy, k_xy = [(p @ q.T / a.shape[1] + 1) ** 3 for p, q in ((x, x), (y, y), (x, y))]
        off_diagonal = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        values.append(float(off_diagonal - 2 * k_xy.mean()))
    return 1000 * float(np.mean(values)), 1000 * float(np.std(values))


class Score:
    """FD and KID against DATA/test, the reference features computed once."""

    def __init__(self, data, scorer_epochs, cache=CACHE, limit=None, path=None):
        self.scorer = load_scorer(data, scorer_epochs, cache, limit, path)
        weights = b"".join(tensor.numpy().tobytes() for tensor in self.scorer.state_dict().values())
        self.name = hashlib.sha256(weights).hexdigest()[:8]  # rows are comparable only under the same scorer
        self.test_images, _ = folder_images(Path(data) / "test", cache)
        self.reference = features(self.scorer, self.test_images)

    def __call__(self, images, reference=None):
        """FD and KID of uint8 images against the held-out test images (or `reference`, uint8 images), and their
        colours as ratios to the reference's (colour_ratios)."""
        reference_features = self.reference if reference is None else features(self.scorer, reference)
        generated = features(self.scorer, images)
        kid_mean, kid_std = kid(generated, reference_features)
        return {"fd": frechet_distance(generated, reference_features), "kid_x1000": kid_mean,
                "kid_x1000_std": kid_std, **colour_ratios(images, self.test_images if reference is None else reference)}


def colour_stats(images):
    """What FD and KID can forgive, of uint8 images (B, 3, H, W): mean brightness and contrast (each image's pixel
    standard deviation) on 0-255, saturation (the mean over pixels of (max - min) / max of the three channels, 0 for
    black) and neighbour difference (the mean absolute difference of adjacent pixels, across plus down)."""
    x = images.float()
    top, bottom = x.max(dim=1).values, x.min(dim=1).values
    return {"brightness": x.mean().item(), "contrast": x.flatten(1).std(dim=1).mean().item(),
            "saturation": ((top - bottom) / top.clamp(min=1)).mean().item(),
            "neighbour_difference": ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
                                     + (x[..., 1:] - x[..., :-1]).abs().mean()).item()}


def colour_ratios(images, reference):
    """colour_stats of `images` divided by those of `reference` (1: the same; saturation 2: twice as colourful)."""
    mine, theirs = colour_stats(images), colour_stats(reference)
    return {f"{name}_ratio": mine[name] / theirs[name] for name in mine}


def to_uint8(x):
    """Images in [-1, 1] (B, 3, H, W) -> uint8 at 32x32, as a saved PNG would hold them."""
    x = nb.resize(x.float().cpu(), 32)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def check_scorer(score, count):
    """The scorer's ranking on images of known quality: real held-out images, the same blurred, and noise."""
    generator = torch.Generator().manual_seed(1)
    # Real images the reference does not hold: the scorer's own training images are the only other real ones,
    # so the fair "real" row compares one half of the test set with the other.
    half = len(score.test_images) // 2
    split = torch.randperm(len(score.test_images), generator=generator)
    first, second = score.test_images[split[:half]], score.test_images[split[half:]]
    rows = {}
    for name, images in [
        ("real (other half of the test set)", first[:count]),
        ("real, blurred (Gaussian, sigma 1 px)", blur(first[:count], 1.0)),
        ("real, blurred (Gaussian, sigma 2 px)", blur(first[:count], 2.0)),
        ("uniform noise", torch.randint(0, 256, first[:count].shape, dtype=torch.uint8, generator=generator)),
    ]:
        rows[name] = score(images, reference=second)
        print(f"  {name:40s} {describe(rows[name])}", flush=True)
    return rows


def describe(result):
    """One line of a row's scores and colour ratios."""
    return (f"FD {result['fd']:.3f} | KID x1000 {result['kid_x1000']:.3f} +- {result['kid_x1000_std']:.3f} | "
            f"brightness {result['brightness_ratio']:.2f} contrast {result['contrast_ratio']:.2f} saturation "
            f"{result['saturation_ratio']:.2f} neighbour difference {result['neighbour_difference_ratio']:.2f}")


def blur(images, sigma):
    radius = math.ceil(3 * sigma)
    kernel = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    x = images.float().reshape(-1, 1, *images.shape[-2:])
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x.reshape(images.shape).round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- the notebook's model


def notebook_config(data, batch, overrides):
    parameters = dict(default_parameters(), **BENCH_DEFAULTS, DATASET=str(Path(data) / "train"), BATCH_SIZE=batch,
                      DEVICE="cpu", EVAL_IMAGES=0)
    parameters.update(overrides)
    return nb.Config.from_parameters(parameters)


def ema_track_decay(track):
    """The decay as a function of the update (0-based) of an extra EMA track that --ema-tracks names, screened
    beside the notebook's own: "power:G" is the notebook's power-function EMA with gamma G and no cap (G = 6.94 is
    Karras et al.'s sigma_rel 0.10, G = 16.97 their 0.05, the notebook's)."""
    kind, _, value = track.partition(":")
    if kind != "power" or not value:
        raise SystemExit(f"--ema-tracks: {track!r} is not raw or power:G (G a number, e.g. power:3)")
    power = float(value)
    return lambda update: nb.ema_decay(update, 1.0, power)


def train_notebook(images, config, updates, log_every=100, ema_tracks=(), adam_betas=None,
                   device="cpu", score_at=(), on_score_at=None):
    """`updates` optimizer updates with the notebook's train_update, the data order of its epochs, and its EMA.
    Returns (the weights to sample from, by name: "ema" and each of `ema_tracks`, schedule, losses); "raw" in
    `ema_tracks` is the trained weights themselves. After each update count in `score_at` (along the run, before its
    end), calls on_score_at(update count, those weights, schedule, losses so far). A lever screened here only:
    `adam_betas`, Adam's (beta1, beta2) instead of the notebook's (0.9, 0.99). On `device`, with the images kept
    there as the notebook keeps them."""
    torch.manual_seed(config.seed)
    model = nb.UNet(config.base_channels, config.channel_mults, config.dropout, output_init=config.output_init)
    device = torch.device(device)
    model, images = model.to(device), nb.place_dataset(images, device)
    ema_model = copy.deepcopy(model).requires_grad_(False) if config.ema_decay is not None else None
    tracks = {track: (copy.deepcopy(model).requires_grad_(False), ema_track_decay(track))
              for track in ema_tracks if track != "raw"}
    optimizer = nb.make_optimizer(model, config.learning_rate)
    if adam_betas is not None:
        for group in optimizer.param_groups:
            group["betas"] = adam_betas
    state = nb.TrainingState(model, ema_model, optimizer)
    shift = nb.snr_shift(config.noise_schedule, config.image_size, config.dataset)
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end, shift)
    device_schedule = schedule.to(device)
    per_update = config.batch_size * config.grad_accum_steps
    limit = nb.epoch_images(len(images), config.batch_size, config.grad_accum_steps)
    progress, pending, update, epoch = nb.new_progress(), [], 0, 0

    def weights():  # what to sample from, by name; "raw" is the trained model, in eval mode
        return {"ema": ema_model if ema_model is not None else model,
                **{track: model.eval() if track == "raw" else tracks[track][0] for track in ema_tracks}}

    model.train()
    while update < updates:
        order, flips = nb.epoch_order(len(images), config.seed, epoch)
        order, flips = order.to(images.device), flips.to(images.device)
        for first_image in range(0, limit - per_update + 1, per_update):
            if update == updates:
                break
            for group in optimizer.param_groups:  # as the notebook's train() sets it, over this run's updates
                group["lr"] = nb.get_lr(update, config.learning_rate, config.warmup_steps, updates, config.cosine_lr)
            progress.update(epoch=epoch, image=first_image, step=update)
            pending.append(nb.train_update(state, images, order, flips, device_schedule, config, device, progress))
            for track_model, decay in tracks.values():
                nb.update_ema(track_model, model, decay(update))
            update += 1
            if update % log_every == 0 or update == updates or update in score_at:
                nb.record_losses(pending, progress)
                print(f"  update {update}: loss {np.mean(progress['losses'][-log_every:]):.4f}", flush=True)
            if update in score_at and update < updates:
                on_score_at(update, weights(), schedule, progress["losses"])
                model.train()
        epoch += 1
    return weights(), schedule, progress["losses"]


def parse_sampler(entry):
    """--samplers' NAME:STEPS[:ETA] -> (name, steps, eta): "dpm++:20:1" is DPM-Solver++ with eta = 1 (default 0)."""
    name, steps, *eta = entry.split(":")
    return name, int(steps), float(eta[0]) if eta else 0.0


def notebook_sampler(model, schedule, config, entry, device="cpu"):
    """A function (count, generator) -> images in [-1, 1] from `model` (on `device`) with the notebook's sampler
    that `entry` names (parse_sampler: SAMPLER's values "ddpm", "ddim", "dpm++", the steps, SAMPLING_ETA's)."""
    predictor, device = nb.NoisePredictor(model, schedule, config.prediction), torch.device(device)
    sampler, steps, eta = parse_sampler(entry)

    def draw(count, generator):
        return nb.sample(predictor, (count, 3, config.image_size, config.image_size), device, schedule, sampler, steps,
                         eta, generator=generator)

    return draw


# ---------------------------------------------------------------- lucidrains' model


PEERS = {  # GaussianDiffusion settings of each peer row
    "lucidrains-default": {},  # its own defaults: v-prediction, sigmoid schedule
    "lucidrains-ddpm": {"objective": "pred_noise", "beta_schedule": "linear"},
}


def train_lucidrains(images, peer, updates, batch, seed, sampling_steps, log_every=100):
    """lucidrains' Unet(dim=32, dim_mults=(1, 2, 4)) and GaussianDiffusion, trained as its Trainer does (Adam 2e-4
    with betas (0.9, 0.99), gradient norm clipped at 1, EMA 0.995 every 10 updates), on the notebook's data order
    and flips. Returns (EMA GaussianDiffusion, losses)."""
    try:
        from denoising_diffusion_pytorch import GaussianDiffusion, Unet
        from ema_pytorch import EMA
    except ImportError as error:
        raise SystemExit(f"{error}: pip install -r requirements-bench.txt") from error
    torch.manual_seed(seed)
    unet = Unet(dim=32, dim_mults=(1, 2, 4), flash_attn=False)
    diffusion = GaussianDiffusion(unet, image_size=32, timesteps=1000, sampling_timesteps=sampling_steps,
                                  **PEERS[peer])
    print(f"  {peer}: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, "
          f"objective {diffusion.objective}")
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=2e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)
    losses, update, epoch = [], 0, 0
    diffusion.train()
    while update < updates:
        order, flips = nb.epoch_order(len(images), seed, epoch)
        for i in range(len(images) // batch):
            if update == updates:
                break
            index = order[i * batch : (i + 1) * batch]
            x = nb.prepare_batch(images, index, flips[index], 32, torch.device("cpu"))
            loss = diffusion((x + 1) / 2)  # it takes images in [0, 1]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            ema.update()
            losses.append(loss.item())
            update += 1
            if update % log_every == 0 or update == updates:
                print(f"  update {update}: loss {np.mean(losses[-log_every:]):.4f}", flush=True)
        epoch += 1
    return ema.ema_model.eval(), losses


def lucidrains_sampler(diffusion):
    def draw(count, generator):
        torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))  # it draws from the global RNG
        with torch.inference_mode():
            return diffusion.sample(batch_size=count) * 2 - 1  # [0, 1] -> [-1, 1]

    return draw


# ---------------------------------------------------------------- one row


def generate_all(draw, count, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, count, batch):
        chunks.append(to_uint8(draw(min(batch, count - start), generator)))
    return torch.cat(chunks)


def parse_overrides(pairs):
    overrides = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            overrides[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[name] = value  # a bare string such as ddim
    return overrides


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="image folder with train/ and test/ subfolders")
    parser.add_argument("--updates", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--samplers", default="ddim:50", help="comma-separated NAME:STEPS[:ETA], e.g. "
                        "ddim:50,dpm++:20,dpm++:20:1 (eta: DDIM's or DPM-Solver++'s, default 0)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a notebook parameter for this row, e.g. LEARNING_RATE=1e-3")
    parser.add_argument("--score-at", default="", metavar="UPDATES",
                        help="also sample and score at these update counts along the run, comma-separated, e.g. "
                             "200,400 (each its own rows, with 'updates' the count)")
    parser.add_argument("--ema-tracks", default="", metavar="TRACKS",
                        help="also sample, with the first sampler, from these weights of the same run: raw (no "
                             "EMA) or power:G (Karras et al.'s power-function EMA), comma-separated")
    parser.add_argument("--adam-betas", metavar="B1,B2", help="Adam's betas for this row, e.g. 0.9,0.999 "
                        "(torch's default); the notebook's are 0.9,0.99, as lucidrains' Trainer's")
    parser.add_argument("--seed", type=int, default=0, help="the row's training seed: the notebook's SEED, or the "
                        "peer's initialisation and data order (the sampling noise and the scorer stay fixed)")
    parser.add_argument("--peer", choices=sorted(PEERS), help="train lucidrains' model instead of the notebook's")
    parser.add_argument("--scorer-epochs", type=int, help="default: about 200,000 images' worth")
    parser.add_argument("--check-scorer", action="store_true", help="only score real, blurred and noise images")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (CI)")
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--json", help="append this row, as one JSON line, to this file")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="where the notebook's rows train and sample, e.g. cuda")
    parser.add_argument("--scorer", help="a scorer's weights file (default: the one for DATA/train, see load_scorer),"
                        " e.g. bench/scorers/scorer-f12bc101717a-4ep.pt, the full CIFAR-10's (0ea7bdbd; b00ff187 is "
                        "scorer-c3b736ce525c-40ep.pt, ../shared's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    if "SEED" in overrides:
        raise SystemExit("give the seed as --seed N (it seeds the peers too), not --set SEED=N")
    unknown = set(overrides) - set(default_parameters())
    if unknown:
        raise SystemExit(f"--set: {', '.join(sorted(unknown))} not among the notebook's parameters")
    overrides["SEED"] = args.seed
    if args.quick:
        args.updates, args.batch, args.samples, args.scorer_epochs = 4, 8, 16, 1
        overrides = dict(dict(BASE_CHANNELS=16, CHANNEL_MULTS=(1, 2), TIMESTEPS=20, SAMPLING_STEPS=5,
                              WARMUP_STEPS=2), **overrides)
        args.samplers = ",".join(":".join([name, str(min(int(steps), 5)), *eta]) for name, steps, *eta in
                                 (s.split(":") for s in args.samplers.split(",")))

    if args.scorer_epochs is None:
        args.scorer_epochs = math.ceil(200_000 / len(folder_images(Path(args.data) / "train", args.cache)[0]))
    score = Score(args.data, args.scorer_epochs, args.cache, limit=256 if args.quick else None, path=args.scorer)
    device = torch.device(args.device)
    if args.check_scorer:
        rows = check_scorer(score, min(args.samples, len(score.test_images) // 2))
        if args.json:
            with open(args.json, "a") as file:
                file.write(json.dumps({"check_scorer": rows, "data": args.data, "scorer": score.name}) + "\n")
        return

    images, _ = folder_images(Path(args.data) / "train", args.cache)
    command = "python bench/quality.py " + " ".join(sys.argv[1:])
    seed_label = [f"seed={args.seed}"] if args.seed else []  # in the row's name, where it is not the default 0
    row = {"batch": args.batch, "seed": args.seed, "samples": args.samples, "data": args.data,
           "train_images": len(images), "device": str(device), "scorer": score.name, "command": command}
    started = time.perf_counter()
    if args.peer and args.score_at:
        raise SystemExit("--score-at scores the notebook's runs only, not --peer's")
    if args.peer:
        model, losses = train_lucidrains(images, args.peer, args.updates, args.batch, args.seed,
                                         int(args.samplers.split(",")[0].split(":")[1]))
        samplers = {(f"its ddim:{model.sampling_timesteps}", "ema"): lucidrains_sampler(model)}
        row_name = " ".join([args.peer, *seed_label])
    else:
        config = notebook_config(args.data, args.batch, overrides)
        ema_tracks = [track for track in args.ema_tracks.split(",") if track]
        adam_betas = tuple(float(b) for b in args.adam_betas.split(",")) if args.adam_betas else None
        levers = args.set + ([f"adam-betas={args.adam_betas}"] if args.adam_betas else []) + seed_label
        row_name = "notebook " + (" ".join(levers) or "defaults")

        def notebook_samplers(weights, schedule):  # each sampler with the EMA, the first with each extra track
            first = args.samplers.split(",")[0]
            return {**{(entry, "ema"): notebook_sampler(weights["ema"], schedule, config, entry, device)
                       for entry in args.samplers.split(",")},
                    **{(first, track): notebook_sampler(weights[track], schedule, config, first, device)
                       for track in ema_tracks}}

        def score_along(update, weights, schedule, losses):
            score_samplers(notebook_samplers(weights, schedule), score, dict(row, row=row_name, updates=update),
                           losses, time.perf_counter() - started, args)

        score_at = {int(count) for count in args.score_at.split(",") if count}
        if any(not 0 < count < args.updates for count in score_at):
            raise SystemExit(f"--score-at: each count must lie between 0 and --updates ({args.updates})")
        weights, schedule, losses = train_notebook(images, config, args.updates, ema_tracks=ema_tracks,
                                                   adam_betas=adam_betas, device=device, score_at=score_at,
                                                   on_score_at=score_along)
        samplers = notebook_samplers(weights, schedule)
    train_seconds = time.perf_counter() - started
    print(f"trained {args.updates} updates in {train_seconds / 60:.1f} min; "
          f"mean loss of the last 100 {np.mean(losses[-100:]):.4f}")
    score_samplers(samplers, score, dict(row, row=row_name, updates=args.updates), losses, train_seconds, args)


def score_samplers(samplers, score, row, losses, train_seconds, args):
    """Draw args.samples images with each of `samplers` ({(sampler, weights' name): draw}), score them, print each
    result and append it as a row to args.json. `train_seconds`: the training time so far, sampling along the run
    included."""
    for (sampler, weights_name), draw in samplers.items():
        started = time.perf_counter()
        generated = generate_all(draw, args.samples, 100, seed=12345)
        sample_seconds = time.perf_counter() - started
        result = score(generated)
        result_row = {**row, "sampler": sampler, "weights": weights_name, **result, "train_min": train_seconds / 60,
                      "sample_min": sample_seconds / 60, "final_loss": float(np.mean(losses[-100:]))}
        print(f"RESULT {row['row']} | {sampler} | {weights_name} | {row['updates']} updates | {describe(result)} | "
              f"train {train_seconds / 60:.1f} min | sample {sample_seconds / 60:.1f} min", flush=True)
        if args.json:
            with open(args.json, "a") as file:
                file.write(json.dumps(result_row) + "\n")
        tag = hashlib.sha256((row["command"] + sampler + weights_name + str(row["updates"])).encode()).hexdigest()[:8]
        save_image(generated[:64].float() / 255, Path(args.cache) / f"samples-{tag}.png", nrow=8)
        print(f"  64 of the samples: {Path(args.cache) / f'samples-{tag}.png'}")


if __name__ == "__main__":
    main()
