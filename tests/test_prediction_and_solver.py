"""The quality levers: v-prediction, min-SNR loss weighting and the DPM-Solver++(2M) sampler."""

import math

import pytest
import torch


@pytest.fixture
def schedule(nb):
    return nb.make_schedule("linear", 1000, 1e-4, 0.02)


class GaussianOracle(torch.nn.Module):
    """The exact noise predictor E[eps | x_t] for data x_0 ~ N(0, c^2 I): a model with no error, so a sampler's
    result depends on the sampler alone."""

    def __init__(self, schedule, c):
        super().__init__()
        self.schedule, self.c = schedule, c

    def forward(self, x_t, t):
        a = self.schedule.sqrt_alphas_cumprod[t].double().view(-1, 1, 1, 1)
        s = self.schedule.sqrt_one_minus_alphas_cumprod[t].double().view(-1, 1, 1, 1)
        return (s * x_t.double() / (a**2 * self.c**2 + s**2)).float()


def probability_flow_endpoint(x_T, schedule, c):
    """Where the probability-flow ODE takes x_T for Gaussian data: it only rescales, by std(x_0) / std(x_T)."""
    std_T = math.sqrt(schedule.alphas_cumprod[-1].item() * c**2 + 1 - schedule.alphas_cumprod[-1].item())
    return x_T * c / std_T


def test_velocity_and_noise_from_velocity_invert_each_other(nb, schedule):
    x_0, noise = torch.rand(6, 3, 4, 4) * 2 - 1, torch.randn(6, 3, 4, 4)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    x_t = nb.forward_diffusion(x_0, t, noise, schedule)
    v = nb.velocity(x_0, t, noise, schedule)

    class PerfectV(torch.nn.Module):
        def forward(self, x, t):
            return v

    torch.testing.assert_close(nb.NoisePredictor(PerfectV(), schedule, "v")(x_t, t), noise, atol=1e-5, rtol=1e-5)


def test_v_prediction_trains_towards_v(nb, schedule):
    x_0 = torch.rand(4, 3, 8, 8) * 2 - 1

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    torch.manual_seed(3)
    losses, t = nb.diffusion_losses(Zero(), x_0, schedule, prediction="v")
    torch.manual_seed(3)
    t_again = torch.randint(0, 1000, (4,))
    noise = torch.randn_like(x_0)
    assert torch.equal(t, t_again)
    expected = nb.velocity(x_0, t, noise, schedule).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(losses, expected)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weight_caps_the_low_noise_steps_only(nb, schedule, prediction):
    t = torch.arange(1000)
    weight = nb.min_snr_weight(t, schedule, prediction, 5.0)
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    low_noise = snr > 5
    plain = torch.ones(1000) if prediction == "eps" else snr / (snr + 1)  # the weight that changes nothing
    torch.testing.assert_close(weight[~low_noise], plain[~low_noise])  # high noise: as without weighting
    assert (weight[low_noise] < plain[low_noise]).all()  # low noise: weighted down to gamma / SNR
    torch.testing.assert_close(weight[0], torch.tensor(5 / snr[0].item()) if prediction == "eps"
                               else torch.tensor(5 / (snr[0].item() + 1)))


def test_a_v_model_samples_like_the_same_noise_model(nb, schedule):
    """A network that predicts v, wrapped, gives every sampler the same images as the equivalent eps network."""
    oracle = GaussianOracle(schedule, 0.5)

    class AsV(torch.nn.Module):  # the oracle's prediction, expressed as v
        def forward(self, x_t, t):
            eps = oracle(x_t, t)
            a = schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
            s = schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
            x_0 = (x_t - s * eps) / a
            return a * eps - s * x_0

    shape = (3, 3, 4, 4)
    for sampler in ("ddpm", "ddim", "dpm++"):
        eps_images = nb.sample(oracle, shape, "cpu", schedule, sampler, 20, generator=torch.Generator().manual_seed(0),
                               clip_x0=False)
        v_images = nb.sample(nb.NoisePredictor(AsV(), schedule, "v"), shape, "cpu", schedule, sampler, 20,
                             generator=torch.Generator().manual_seed(0), clip_x0=False)
        torch.testing.assert_close(v_images, eps_images, atol=1e-4, rtol=1e-4, msg=sampler)


def test_a_v_model_samples_through_the_noise_predictor_with_one_call_a_step(nb, schedule):
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, t):
            seen.append(t[0].item())
            return torch.zeros_like(x)

    small = nb.make_schedule("linear", 10, 1e-4, 0.02)
    images = nb.sample(nb.NoisePredictor(Recorder(), small, "v"), (2, 3, 4, 4), torch.device("cpu"), small, "dpm++", 3,
                       generator=torch.Generator().manual_seed(0))
    assert seen == nb.dpm_solver_timesteps(small, 3) and len(seen) == 3  # one model call a step
    # v = 0 means x_0 = sqrt(alpha-bar_t) x_t: never the zero image that eps = 0 would give at the last step
    assert images.abs().sum() > 0


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [1, 5, 20])
def test_dpm_solver_lands_on_the_only_image_a_point_dataset_has(nb, schedule, steps, eta):
    x_star = torch.rand(2, 3, 4, 4) * 2 - 1

    class PointOracle(torch.nn.Module):
        def forward(self, x_t, t):
            a = schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
            s = schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
            return (x_t - a * x_star) / s

    *_, (t, x) = nb.reverse_process(PointOracle(), x_star.shape, "cpu", schedule, "dpm++", steps, eta,
                                     generator=torch.Generator().manual_seed(0), clip_x0=False)
    assert t == nb.ddim_timesteps(1000, steps)[-1]  # the last call, then the step to the clean image
    torch.testing.assert_close(x, x_star, atol=1e-4, rtol=0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_solver_with_two_steps_is_ddim_on_the_same_timesteps(nb, schedule, eta):
    """Both of its steps are first order (the first has no earlier estimate, the last lands on it): DDIM with the
    same eta; at eta = 1 its first-order step is the DDPM posterior, as DDIM's is (Eq. 16)."""
    oracle = GaussianOracle(schedule, 0.5)
    shape = (2, 3, 4, 4)
    assert nb.dpm_solver_timesteps(schedule, 2) == [999, 0]
    *_, (_, ddim) = nb.reverse_process(oracle, shape, "cpu", schedule, "ddim", 2, eta,
                                       generator=torch.Generator().manual_seed(1), clip_x0=False)
    *_, (_, dpm) = nb.reverse_process(oracle, shape, "cpu", schedule, "dpm++", 2, eta,
                                      generator=torch.Generator().manual_seed(1), clip_x0=False)
    torch.testing.assert_close(dpm, ddim, atol=1e-5, rtol=1e-5)


def test_dpm_solver_timesteps_are_even_in_log_snr(nb, schedule):
    timesteps = nb.dpm_solver_timesteps(schedule, 10)
    assert timesteps[0] == 999 and timesteps[-1] == 0 and timesteps == sorted(timesteps, reverse=True)
    lambdas = (schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)).log() / 2
    gaps = lambdas[timesteps[1:]] - lambdas[timesteps[:-1]]
    assert gaps.max() < 1.3 * gaps.min()  # even, up to rounding to whole indices


def endpoint_errors(nb, schedule, steps, c=0.5):
    """{sampler: mean distance of its result from the probability-flow ODE's true endpoint} for the exact model of
    Gaussian data N(0, c^2 I), from one x_T, in `steps` model calls each."""
    shape = (64, 3, 4, 4)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    target = probability_flow_endpoint(x_T, schedule, c)
    errors = {}
    for sampler in ("ddim", "dpm++"):
        *_, (_, x) = nb.reverse_process(GaussianOracle(schedule, c), shape, "cpu", schedule, sampler, steps,
                                        generator=torch.Generator().manual_seed(2), clip_x0=False)
        errors[sampler] = float((x - target).abs().mean())
    return errors


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_dpm_solver_follows_the_probability_flow_closer_than_ddim(nb, schedule, steps):
    """With an exact model of Gaussian data, the second-order solver ends nearer the ODE's true endpoint than
    first-order DDIM with the same number of model calls."""
    errors = endpoint_errors(nb, schedule, steps)
    ddim_error, dpm_error = errors["ddim"], errors["dpm++"]
    assert dpm_error < 0.25 * ddim_error, (dpm_error, ddim_error)


@pytest.mark.parametrize("steps", [20, 50])
def test_stochastic_dpm_solver_draws_the_data_distribution_closer_than_ddim(nb, schedule, steps):
    """At eta = 1 the samples are draws from the data, not the ODE's endpoints: for the exact model of N(0, c^2 I),
    mean 0 and standard deviation c within 4% from 20 steps, where DDIM with eta = 1 is 12 to 22% short."""
    c, shape = 0.5, (256, 3, 8, 8)
    stds = {}
    for sampler in ("dpm++", "ddim"):
        *_, (_, x) = nb.reverse_process(GaussianOracle(schedule, c), shape, "cpu", schedule, sampler, steps, 1.0,
                                        generator=torch.Generator().manual_seed(3), clip_x0=False)
        assert abs(float(x.mean())) < 0.01
        stds[sampler] = float(x.std())
    assert abs(stds["dpm++"] - c) < 0.04 * c and stds["ddim"] < 0.9 * c, stds


@pytest.mark.parametrize("timesteps, steps", [(20, 10), (1000, 50), (10, 10), (1000, 1)])
def test_dpm_solver_takes_as_many_steps_as_asked(nb, timesteps, steps):
    visited = nb.dpm_solver_timesteps(nb.make_schedule("linear", timesteps, 1e-4, 0.02), steps)
    assert len(visited) == steps and visited[0] == timesteps - 1 and visited[-1] == (0 if steps > 1 else timesteps - 1)
    assert all(a > b for a, b in zip(visited, visited[1:], strict=False))


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_loss_weights_each_example_by_min_snr_when_gamma_is_set(nb, schedule, prediction):
    """The same t and noise (one seed), with and without min-SNR-5: each example's loss is scaled by its weight."""
    model = nb.UNet(base_channels=16, channel_mults=(1, 2))
    x_0 = torch.rand(8, 3, 16, 16) * 2 - 1
    torch.manual_seed(3)
    plain, t = nb.diffusion_losses(model, x_0, schedule, prediction=prediction)
    torch.manual_seed(3)
    weighted, same_t = nb.diffusion_losses(model, x_0, schedule, prediction=prediction, min_snr_gamma=5.0)
    assert torch.equal(t, same_t)
    torch.testing.assert_close(weighted, plain * nb.min_snr_weight(t, schedule, prediction, 5.0))
    assert not torch.allclose(weighted, plain)  # some of the 8 timesteps have an SNR above 5
