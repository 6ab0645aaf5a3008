"""Issue 52's mechanism, on the tiny set of tests/test_tiny_set.py (two 16x16 images a young model can half learn in
seconds): where do a young noise-predicting model's errors turn the deterministic samplers' samples into colour
noise, while DDPM's stay smooth?

    python bench/colour_mechanism.py [--updates 300] [--schedule cosine]

It trains one eps model (as the tiny-set test does, but stopped young), then samples 16 images from the same noise:
with each sampler; with DDIM where the model is replaced by the exact noise predictor of the two images (an oracle,
known in closed form) above or below a noise level; and with DDIM made stochastic (eta = 1) above or below it. Each
row gives the mean distance of the samples to the nearest training image (RMS in [-1, 1]) and their neighbour
difference (mean absolute difference of adjacent pixels, in [-1, 1] units; the training images have 0.09).
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions  # noqa: E402

nb = load_definitions()
spec = importlib.util.spec_from_file_location("tiny_set", ROOT / "tests" / "test_tiny_set.py")
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)


def oracle_eps(images, schedule):
    """The exact noise predictor of data that is `images` with equal odds: eps = (x_t - alpha E[x_0 | x_t]) / sigma."""
    def predict(x_t, t):
        alpha = schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
        sigma = schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
        distances = ((x_t[:, None] - alpha[:, None] * images[None]) ** 2).flatten(2).sum(2)  # (B, N)
        weights = torch.softmax(-distances / (2 * sigma.view(-1, 1) ** 2), dim=1)
        return (x_t - alpha * torch.einsum("bn,nchw->bchw", weights, images)) / sigma
    return predict


def row(name, samples, images):
    nearest = tiny.rms(samples, images).min(dim=1).values.mean()
    print(f"| {name} | {nearest:.3f} | {tiny.neighbour_difference(samples):.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--schedule", default="cosine", choices=sorted(tiny.SCHEDULES))
    args = parser.parse_args()
    images = tiny.tiny_set()
    schedule = tiny.tiny_schedule(nb, args.schedule)
    model = nb.NoisePredictor(tiny.memorise(nb, images, "eps", schedule, args.updates), schedule, "eps")
    oracle, T = oracle_eps(images, schedule), schedule.num_timesteps

    def draw(predict, sampler="ddim", steps=20, eta=0.0):
        return nb.sample(predict, (16, 3, 16, 16), torch.device("cpu"), schedule, sampler, steps, eta,
                         generator=torch.Generator().manual_seed(1))

    class Mixed(torch.nn.Module):  # the oracle where use_oracle(t), the model elsewhere
        def __init__(self, use_oracle):
            super().__init__()
            self.model, self.use_oracle = model, use_oracle

        def forward(self, x_t, t):
            return oracle(x_t, t) if self.use_oracle(int(t[0])) else self.model(x_t, t)

    print(f"eps model after {args.updates} updates, {args.schedule} schedule, T = {T}; 16 samples from one noise\n")
    print("| sampling | distance to the nearest image | neighbour difference |\n| --- | --- | --- |")
    row("the training images", images, images)
    row(f"DDPM, {T} steps", draw(model, "ddpm", None), images)
    row("DDIM 20, eta = 1", draw(model, eta=1.0), images)
    row("DDIM 20, eta = 0", draw(model), images)
    row("DPM-Solver++ 20, eta = 0", draw(model, "dpm++"), images)
    row("DPM-Solver++ 20, eta = 1 (SAMPLING_ETA's default)", draw(model, "dpm++", eta=1.0), images)
    for level in (0.9, 0.5, 0.1):
        above, below = Mixed(lambda t, level=level: t <= level * T), Mixed(lambda t, level=level: t > level * T)
        row(f"DDIM 20, the model only above t = {level:g} T", draw(above), images)
        row(f"DDIM 20, the model only below t = {level:g} T", draw(below), images)
    # stochastic only where t lies above or below the level: DDIM's eta chosen step by step
    real_plan = nb.sampler_plan
    for level in (0.9, 0.5):
        for above in (True, False):
            def plan(sampler, schedule, steps=None, eta=0.0, variance="beta", above=above, level=level):
                def step(x_t, eps, x_0, t, t_next, schedule, noise, previous):
                    stochastic = (t > level * T) == above
                    return nb.ddim_step(x_t, eps, x_0, t, t_next, schedule, noise, previous, 1.0 if stochastic else 0)
                return nb.ddim_timesteps(schedule.num_timesteps, steps), step
            nb.sampler_plan = plan
            row(f"DDIM 20, eta = 1 only {'above' if above else 'below'} t = {level:g} T", draw(model), images)
    nb.sampler_plan = real_plan


if __name__ == "__main__":
    main()
