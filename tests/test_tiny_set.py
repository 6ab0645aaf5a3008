"""The whole chain learns: a small U-Net memorises a tiny set of two 16x16 images, and then every sampler, with every
prediction target and every schedule, draws images close to one of them. A wrong coefficient anywhere between the
training target (diffusion_losses: Eq. 4, the noise or v) and the last sampling step (NoisePredictor, Eq. 15,
each sampler's step) makes the samples miss both images."""

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import PIL.Image
import pytest
import torch

from tiny import default_parameters, tiny_config

TIMESTEPS = 100  # a short chain, so that six small models learn every index in seconds
BETA_END = 0.2  # with T = 100, the linear schedule ends as noisy as the paper's 1,000 steps do (alpha-bar_T < 1e-4)
SCHEDULES = {"linear": 1.0, "cosine": 1.0, "linear+shift": 4.0}  # the shift of 32x32 data trained at 64x64
UPDATES = {"eps": 1200, "v": 800}  # the noise target needs more updates before the deterministic samplers follow it
SAMPLERS = (("ddpm", None, 0.0), ("ddim", 20, 0.0), ("dpm++", 20, 0.0), ("dpm++", 20, 1.0))  # (sampler, steps, eta)


def tiny_set():
    """Two smooth, colourful 16x16 images in [-1, 1]: a horizontal red-green ramp and a vertical green-blue one."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    return torch.stack([torch.stack([x, -x, 0 * x]), torch.stack([0 * y, y, -y])])  # (2, 3, 16, 16)


def rms(a, b):
    """RMS distance in [-1, 1] units between each image of a (A, 3, H, W) and each of b (B, 3, H, W): (A, B)."""
    return torch.cdist(a.flatten(1), b.flatten(1)) / a[0].numel() ** 0.5


def tiny_unet(nb):
    """The U-Net memorise trains: 8 channels, two resolutions, its output layer starting at zero."""
    return nb.UNet(8, (1, 2), 0.0, output_init="zero")


def tiny_schedule(nb, name):
    """The schedule SCHEDULES names, over this file's TIMESTEPS."""
    return nb.make_schedule(name, TIMESTEPS, 1e-4, BETA_END, SCHEDULES[name])


def memorise(nb, images, prediction, schedule, updates, learning_rate=3e-3, batch_size=8):
    """A small U-Net trained on `images` by diffusion_losses, with `prediction`'s target and min-SNR-5 weighting (the
    weighting speeds both targets up), Adam with warmup and a cosine to 0 as the notebook's training loop uses it."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs faster on one thread than split over two
    model = tiny_unet(nb)
    optimizer = nb.make_optimizer(model, learning_rate)
    for update in range(updates):
        for group in optimizer.param_groups:
            group["lr"] = nb.get_lr(update, learning_rate, 20, updates, cosine=True)
        x_0 = images[torch.randint(len(images), (batch_size,))]
        losses, _ = nb.diffusion_losses(model, x_0, schedule, prediction=prediction, min_snr_gamma=5.0)
        optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), nb.GRAD_CLIP)
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval()


PAIRS = [(prediction, name) for prediction in UPDATES for name in SCHEDULES]


def memorised_weights(pair):
    """The weights of the model memorise trains for one (prediction, schedule name): run in a worker process."""
    from notebook import load_definitions

    nb, (prediction, name) = load_definitions(), pair
    return memorise(nb, tiny_set(), prediction, tiny_schedule(nb, name), UPDATES[prediction]).state_dict()


@pytest.fixture(scope="module")
def all_weights():
    """Every pair's weights, trained two at a time in processes of their own (one thread each: two cores), each
    seeded as memorise seeds it, so the same as one after the other."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(zip(PAIRS, pool.map(memorised_weights, PAIRS), strict=True))


@pytest.fixture(scope="module", params=PAIRS, ids=lambda param: f"{param[0]}-{param[1]}")
def memorised(nb, all_weights, request):
    """(a NoisePredictor of the memorised model, its schedule) for one prediction target and one schedule."""
    prediction, name = request.param
    schedule, model = tiny_schedule(nb, name), tiny_unet(nb)
    model.load_state_dict(all_weights[request.param])
    return nb.NoisePredictor(model.eval(), schedule, prediction), schedule


@pytest.mark.parametrize("sampler, steps, eta", SAMPLERS, ids=[f"{sampler}-eta{eta:g}" for sampler, _, eta in SAMPLERS])
def test_tiny_set_is_drawn_back_by_every_sampler_prediction_and_schedule(nb, memorised, sampler, steps, eta):
    predictor, schedule = memorised
    images = tiny_set()
    apart = rms(images[:1], images[1:]).item()  # 0.71
    samples = nb.sample(predictor, (16, 3, 16, 16), torch.device("cpu"), schedule, sampler, steps, eta,
                        generator=torch.Generator().manual_seed(1))
    nearest = rms(samples, images).min(dim=1).values  # (16,)
    # A start near the boundary between the two images can end between them; most end on one of them
    assert nearest.median() < apart / 3, f"median distance to the nearest image {nearest.median():.3f}"


def neighbour_difference(images):
    """Mean absolute difference of vertically and of horizontally adjacent pixels, summed, in [-1, 1] units: high
    for colour static (the tiny set's images: 0.09)."""
    down, across = images[..., 1:, :] - images[..., :-1, :], images[..., 1:] - images[..., :-1]
    return float(down.abs().mean() + across.abs().mean())


def grid_images(path, size=16, count=16, padding=2):
    """The images of a sample grid PNG (save_sample_grid, one set of weights) in [-1, 1], without the padding."""
    grid = torch.from_numpy(np.array(PIL.Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
    columns = math.ceil(count**0.5)
    at = [padding + i * (size + padding) for i in range(columns)]
    return torch.stack([grid[:, y : y + size, x : x + size] for y in at for x in at][:count])


def test_a_young_noise_models_default_grid_is_smooth_where_a_deterministic_one_is_static(nb, tmp_path):
    """Issue 52: a noise-predicting model stopped young (300 updates) draws, in the training grid with the default
    sampler settings, colour fields as smooth as DDPM's 100 steps; drawn deterministically (SAMPLING_ETA = 0, the
    default before), the same grid is colour static."""
    images = tiny_set()
    schedule = tiny_schedule(nb, "linear")
    model = memorise(nb, images, "eps", schedule, 300)
    ddpm = nb.sample(nb.NoisePredictor(model, schedule, "eps"), (16, 3, 16, 16), torch.device("cpu"), schedule, "ddpm",
                     generator=torch.Generator().manual_seed(0))
    smoothness = {}
    for eta in (default_parameters()["SAMPLING_ETA"], 0.0):
        config = tiny_config(nb, tmp_path, TIMESTEPS=TIMESTEPS, BETA_END=BETA_END, SAMPLING_ETA=eta,
                             SAMPLING_STEPS=default_parameters()["SAMPLING_STEPS"])
        path = nb.save_sample_grid(model, None, schedule, config, torch.device("cpu"), tmp_path / f"eta{eta}.png")
        smoothness[eta] = neighbour_difference(grid_images(path))
    default, deterministic = smoothness.values()
    assert default < 1.25 * neighbour_difference(ddpm) < deterministic / 1.5, (smoothness, neighbour_difference(ddpm))
