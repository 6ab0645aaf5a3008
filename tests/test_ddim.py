"""DDIM sampling (Song et al. 2021): its timesteps, its determinism, and its agreement with DDPM."""

import pytest
import torch


class RecordingModel(torch.nn.Module):
    """Predicts a fixed function of x and records the timesteps it is asked about."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t):
        self.seen.append(t[0].item())
        return 0.3 * x


def test_ddim_timesteps_span_the_schedule_from_t_minus_1_to_0(nb):
    assert nb.ddim_timesteps(1000, 50)[0] == 999 and nb.ddim_timesteps(1000, 50)[-1] == 0
    for steps in (1, 2, 7, 50, 1000):
        timesteps = nb.ddim_timesteps(1000, steps)
        assert len(timesteps) == steps and timesteps == sorted(set(timesteps), reverse=True)
    assert nb.ddim_timesteps(10, 10) == list(range(9, -1, -1))


def test_ddim_calls_the_model_once_per_step(nb):
    model = RecordingModel()
    nb.sample(model, (2, 3, 4, 4), "cpu", nb.linear_schedule(100, 1e-4, 0.02), "ddim", steps=7, clip_x0=False)
    assert model.seen == nb.ddim_timesteps(100, 7)


@pytest.mark.parametrize("eta, same", [(0.0, True), (1.0, False)])
def test_ddim_with_eta_0_depends_on_the_starting_noise_only(nb, monkeypatch, eta, same):
    x_T = torch.randn(2, 3, 8, 8)
    step_seeds = iter([1, 2])  # a different per-step generator for each call

    def same_start(shape, device, generator=None):
        return x_T.clone(), torch.Generator().manual_seed(next(step_seeds))

    monkeypatch.setattr(nb, "initial_noise", same_start)
    model, schedule = RecordingModel(), nb.linear_schedule(50, 1e-4, 0.02)
    first = nb.sample(model, (2, 3, 8, 8), "cpu", schedule, "ddim", steps=10, eta=eta, clip_x0=False)
    second = nb.sample(model, (2, 3, 8, 8), "cpu", schedule, "ddim", steps=10, eta=eta, clip_x0=False)
    assert torch.equal(first, second) == same


def exact_betas(name, timesteps):
    """The schedule's betas computed independently in float64."""
    if name == "linear":
        return torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos((steps / timesteps + 0.008) / 1.008 * torch.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


@pytest.mark.parametrize("name, timesteps", [("linear", 1000), ("cosine", 200)])
def test_ddim_with_every_step_and_eta_1_is_the_ddpm_posterior(nb, name, timesteps):
    # A DDIM step is coef_x0 * x_0 + coef_eps * eps + sigma z with eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t):
    # its mean in terms of (x_0, x_t) and its variance must be Eq. 7's posterior, at every t.
    schedule = nb.make_schedule(name, timesteps, 1e-4, 0.02)
    betas = exact_betas(name, timesteps)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    for t in range(timesteps):
        coef_x0, coef_eps, sigma = nb.ddim_coefficients(schedule, t, t - 1, eta=1.0)
        mean_x0 = coef_x0 - coef_eps * (abar[t] / (1 - abar[t])).sqrt().item()
        mean_xt = coef_eps / (1 - abar[t]).sqrt().item()
        expected_x0 = (betas[t] * abar_prev[t].sqrt() / (1 - abar[t])).item()
        expected_xt = ((1 - abar_prev[t]) * (1 - betas[t]).sqrt() / (1 - abar[t])).item()
        expected_var = (betas[t] * (1 - abar_prev[t]) / (1 - abar[t])).item()
        assert mean_x0 == pytest.approx(expected_x0, rel=1e-4, abs=1e-7), t
        assert mean_xt == pytest.approx(expected_xt, rel=1e-4, abs=1e-7), t
        assert sigma**2 == pytest.approx(expected_var, rel=1e-4, abs=1e-10), t


def test_ddim_with_eta_0_adds_no_noise(nb):
    schedule = nb.linear_schedule(100, 1e-4, 0.02)
    for t, t_prev in ((99, 80), (10, 0), (0, -1)):
        assert nb.ddim_coefficients(schedule, t, t_prev, eta=0.0)[2] == 0


def test_ddim_returns_its_last_step_in_range(nb):
    model, schedule = nb.UNet(base_channels=16, channel_mults=(1, 2)), nb.cosine_schedule(50)
    images = nb.sample(model, (2, 3, 16, 16), "cpu", schedule, "ddim", steps=5,
                       generator=torch.Generator().manual_seed(0))
    *_, (t, last) = nb.reverse_process(model, (2, 3, 16, 16), "cpu", schedule, "ddim", steps=5,
                                       generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 16) and t == 0 and torch.isfinite(images).all()
    assert torch.equal(images, last.clamp(-1, 1))  # the sample is the output of the step from t = 0, clipped
