"""The whole chain learns: a small U-Net memorises a tiny set of two 16x16 images, and then every sampler, with every
prediction target and every schedule, draws images close to one of them. A wrong coefficient anywhere between the
training target (diffusion_losses: Eq. 4, the noise or v) and the last sampling step (NoisePredictor, Eq. 15,
each sampler's step) makes the samples miss both images."""

import pytest
import torch

TIMESTEPS = 100  # a short chain, so that six small models learn every index in seconds
BETA_END = 0.2  # with T = 100, the linear schedule ends as noisy as the paper's 1,000 steps do (alpha-bar_T < 1e-4)
SCHEDULES = {"linear": 1.0, "cosine": 1.0, "linear+shift": 4.0}  # the shift of 32x32 data trained at 64x64
UPDATES = {"eps": 1200, "v": 800}  # the noise target needs more updates before the deterministic samplers follow it
SAMPLERS = (("ddpm", None), ("ddim", 20), ("dpm++", 20))


def tiny_set():
    """Two smooth, colourful 16x16 images in [-1, 1]: a horizontal red-green ramp and a vertical green-blue one."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    return torch.stack([torch.stack([x, -x, 0 * x]), torch.stack([0 * y, y, -y])])  # (2, 3, 16, 16)


def rms(a, b):
    """RMS distance in [-1, 1] units between each image of a (A, 3, H, W) and each of b (B, 3, H, W): (A, B)."""
    return torch.cdist(a.flatten(1), b.flatten(1)) / a[0].numel() ** 0.5


def memorise(nb, images, prediction, schedule, updates, learning_rate=3e-3, batch_size=8):
    """A small U-Net trained on `images` by diffusion_losses, with `prediction`'s target and min-SNR-5 weighting (the
    weighting speeds both targets up), Adam with warmup and a cosine to 0 as the notebook's training loop uses it."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs faster on one thread than split over two
    model = nb.UNet(8, (1, 2), 0.0, output_init="zero")
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


@pytest.fixture(scope="module", params=[(prediction, name) for prediction in UPDATES for name in SCHEDULES],
                ids=lambda param: f"{param[0]}-{param[1]}")
def memorised(nb, request):
    """(a NoisePredictor of the memorised model, its schedule) for one prediction target and one schedule."""
    prediction, name = request.param
    schedule = nb.make_schedule(name, TIMESTEPS, 1e-4, BETA_END, SCHEDULES[name])
    model = memorise(nb, tiny_set(), prediction, schedule, UPDATES[prediction])
    return nb.NoisePredictor(model, schedule, prediction), schedule


@pytest.mark.parametrize("sampler, steps", SAMPLERS, ids=[sampler for sampler, _ in SAMPLERS])
def test_tiny_set_is_drawn_back_by_every_sampler_prediction_and_schedule(nb, memorised, sampler, steps):
    predictor, schedule = memorised
    images = tiny_set()
    apart = rms(images[:1], images[1:]).item()  # 0.71
    samples = nb.sample(predictor, (16, 3, 16, 16), torch.device("cpu"), schedule, sampler, steps,
                        generator=torch.Generator().manual_seed(1))
    nearest = rms(samples, images).min(dim=1).values  # (16,)
    # A start near the boundary between the two images can end between them; most end on one of them
    assert nearest.median() < apart / 3, f"median distance to the nearest image {nearest.median():.3f}"
