"""Section 4: the schedule, the forward process (Eq. 4) and the reverse process (Alg. 2)."""

import PIL.Image
import pytest
import torch


@pytest.fixture(scope="module")
def schedule(nb):
    return nb.linear_schedule(1000, 1e-4, 0.02)


class ZeroNoise(torch.nn.Module):
    """A stand-in model that predicts no noise and records the timesteps it is asked about."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t):
        self.seen.append(t.tolist())
        return torch.zeros_like(x)


def test_betas_are_linear_from_beta_start_to_beta_end(schedule):
    expected = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(schedule.betas.double(), expected, rtol=1e-6, atol=0)


def test_schedule_is_float32(nb, schedule):
    for field in nb.dataclasses.fields(schedule):
        if field.name != "snr_shift":  # the shift's factor k, a number
            assert getattr(schedule, field.name).dtype == torch.float32, field.name


def test_alphas_cumprod_decreases_from_near_one_to_near_zero(schedule):
    assert (schedule.alphas_cumprod.diff() < 0).all()
    assert schedule.alphas_cumprod[0] == pytest.approx(1 - 1e-4)
    assert schedule.alphas_cumprod[-1] < 1e-4  # x at t = T-1 is almost pure noise


def test_alphas_cumprod_is_computed_in_float64(schedule):
    exact = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(schedule.alphas_cumprod.double(), exact, rtol=1e-6, atol=0)


def test_posterior_matches_eq_7(schedule):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    torch.testing.assert_close(schedule.posterior_variance, (betas * (1 - prev) / (1 - abar)).float())
    torch.testing.assert_close(schedule.posterior_mean_coef1, (betas * prev.sqrt() / (1 - abar)).float())
    torch.testing.assert_close(schedule.posterior_mean_coef2, ((1 - prev) * (1 - betas).sqrt() / (1 - abar)).float())
    assert schedule.posterior_variance[0] == 0  # the first step back is deterministic given x_0


def test_forward_diffusion_is_the_closed_form(nb, schedule):
    x_0, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    x_t = nb.forward_diffusion(x_0, t, noise, schedule)
    for i in range(4):
        abar = schedule.alphas_cumprod[t[i]]
        torch.testing.assert_close(x_t[i], abar.sqrt() * x_0[i] + (1 - abar).sqrt() * noise[i])


def test_forward_diffusion_has_eq_4_mean_and_variance(nb, schedule):
    x_0 = torch.full((20000, 1, 1, 1), 0.7)
    for step in (0, 250, 999):
        t = torch.full((20000,), step)
        x_t = nb.forward_diffusion(x_0, t, torch.randn_like(x_0), schedule)
        abar = schedule.alphas_cumprod[step].item()
        assert x_t.mean().item() == pytest.approx(abar**0.5 * 0.7, abs=0.02)
        assert x_t.var().item() == pytest.approx(1 - abar, rel=0.05, abs=1e-4)


def test_forward_diffusion_rejects_timesteps_outside_the_schedule(nb, schedule):
    with pytest.raises(AssertionError, match=r"t must lie in 0..T-1"):
        nb.forward_diffusion(torch.zeros(1, 3, 4, 4), torch.tensor([1000]), torch.zeros(1, 3, 4, 4), schedule)


def test_sample_visits_every_timestep_from_t_minus_1_down_to_0(nb):
    model, schedule = ZeroNoise(), nb.linear_schedule(7, 1e-4, 0.02)
    nb.sample(model, (2, 3, 8, 8), "cpu", schedule)
    assert model.seen == [[t, t] for t in range(6, -1, -1)]


def test_training_draws_every_timestep(nb):
    schedule, model = nb.linear_schedule(5, 1e-4, 0.02), ZeroNoise()
    for _ in range(20):
        nb.diffusion_losses(model, torch.zeros(16, 3, 4, 4), schedule)
    assert {t for batch in model.seen for t in batch} == {0, 1, 2, 3, 4}


def test_last_reverse_step_adds_no_noise(nb):
    # With T = 1 the only step is the last one: x_0 = x_T / sqrt(alpha) exactly (Alg. 2, z = 0 at t = 1).
    schedule = nb.linear_schedule(1, 0.01, 0.01)
    x_T = torch.randn((2, 3, 4, 4), generator=torch.Generator().manual_seed(3))
    x_0 = nb.sample(ZeroNoise(), (2, 3, 4, 4), "cpu", schedule, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x_0, (x_T / 0.99**0.5).clamp(-1, 1))


class ConstantNoise(torch.nn.Module):
    def forward(self, x, t):
        return torch.full_like(x, 0.5)


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_reverse_step_is_eq_11_plus_sigma_z(nb, variance):
    schedule = nb.linear_schedule(3, 0.1, 0.3)
    t, x = next(nb.reverse_process(ConstantNoise(), (1, 1, 2, 2), "cpu", schedule,
                                   generator=torch.Generator().manual_seed(5), clip_x0=False, variance=variance))
    # Replay the generators: x_T from the CPU generator, then z from one seeded by it.
    replay = torch.Generator().manual_seed(5)
    x_T = torch.randn((1, 1, 2, 2), generator=replay)
    z_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=replay)))
    z = torch.randn((1, 1, 2, 2), generator=z_generator)
    mean = (x_T - schedule.betas[2] / (1 - schedule.alphas_cumprod[2]).sqrt() * 0.5) / schedule.alphas[2].sqrt()
    sigma2 = schedule.betas[2] if variance == "beta" else schedule.posterior_variance[2]
    assert t == 2
    torch.testing.assert_close(x, mean + sigma2.sqrt() * z)


def test_sample_has_the_requested_shape_and_range(nb):
    model = nb.UNet(base_channels=16, channel_mults=(1, 2))
    images = nb.sample(model, (3, 3, 16, 16), "cpu", nb.linear_schedule(10, 1e-4, 0.02))
    assert images.shape == (3, 3, 16, 16)
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert ((images > -1) & (images < 1)).float().mean() > 0.5  # not the clamp's work: most pixels lie inside


def test_sample_is_repeatable_for_a_seed(nb):
    model = nb.UNet(base_channels=16, channel_mults=(1, 2))
    torch.nn.init.normal_(model.output[-1].weight, std=0.1)  # a model that predicts something
    schedule = nb.linear_schedule(10, 1e-4, 0.02)

    def draw(seed):
        return nb.sample(model, (2, 3, 16, 16), "cpu", schedule, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_sampling_leaves_the_model_in_its_training_mode(nb):
    model = nb.UNet(base_channels=16, channel_mults=(1, 2)).train()
    nb.sample(model, (1, 3, 16, 16), "cpu", nb.linear_schedule(2, 1e-4, 0.02))
    assert model.training


def test_cosine_schedule_matches_its_formula(nb):
    schedule = nb.cosine_schedule(1000)
    def f(t):  # Nichol and Dhariwal, Eq. 17
        return torch.cos((t / 1000 + 0.008) / 1.008 * torch.pi / 2) ** 2

    steps = torch.arange(1, 1001, dtype=torch.float64)  # paper steps 1..T = code indices 0..T-1
    expected = f(steps) / f(torch.zeros((), dtype=torch.float64))
    unclipped = schedule.betas < 0.999  # only the very last step is clipped
    assert unclipped[:-1].all()
    torch.testing.assert_close(schedule.alphas_cumprod[unclipped].double(), expected[unclipped], rtol=1e-5, atol=1e-7)


def test_cosine_schedule_stays_a_valid_diffusion(nb):
    for timesteps in (10, 1000, 4000):
        schedule = nb.cosine_schedule(timesteps)
        abar = schedule.alphas_cumprod
        assert ((abar > 0) & (abar < 1)).all() and (abar.diff() < 0).all()
        assert schedule.betas.max() <= 0.999 and schedule.betas.min() > 0
        assert abar[-1] < 1e-4


def test_make_schedule_names_the_parameter_for_an_unknown_schedule(nb):
    with pytest.raises(nb.ConfigError, match="NOISE_SCHEDULE must be one of 'linear', 'cosine', 'linear[+]shift', "
                                             "'cosine[+]shift'; got 'quadratic'"):
        nb.make_schedule("quadratic", 10, 1e-4, 0.02)


def content_snr(nb, x_0, schedule, t):
    """The signal-to-noise ratio of x_t (Eq. 4) at code index t as 32x32 content sees it: x_t averaged over 2x2
    blocks when it is larger, the signal's power over the noise's."""
    index = torch.full((len(x_0),), t)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(t))
    signal, noise = (nb.forward_diffusion(x_0, index, torch.zeros_like(x_0), schedule),
                     nb.forward_diffusion(torch.zeros_like(x_0), index, noise, schedule))
    if x_0.shape[-1] > 32:
        signal, noise = (torch.nn.functional.avg_pool2d(x, x_0.shape[-1] // 32) for x in (signal, noise))
    return float(signal.square().mean() / noise.square().mean())


def test_the_shifted_schedule_gives_upscaled_images_the_noise_levels_of_their_own_resolution(nb, real_images):
    """Section 4's claim: CIFAR-10 upscaled from 32 to 64 and noised with the shifted linear schedule has, at every
    t, within 10% the SNR that the published schedule gives the 32x32 images (the bilinear upscale blurs a little:
    the content keeps 95% of its power); with the published schedule it has about 4 times that."""
    x_32 = real_images[0][:256].float() / 127.5 - 1
    x_64 = nb.resize(x_32, 64)
    shift = nb.snr_shift("linear+shift", 64, "cifar10")
    published = nb.make_schedule("linear", 1000, 1e-4, 0.02)
    shifted = nb.make_schedule("linear+shift", 1000, 1e-4, 0.02, shift)
    for t in [*range(0, 1000, 37), 999]:
        at_32 = content_snr(nb, x_32, published, t)
        assert content_snr(nb, x_64, shifted, t) / at_32 == pytest.approx(1, abs=0.1), t
        assert content_snr(nb, x_64, published, t) / at_32 > 3.5, t


def test_the_shift_divides_the_snr_by_the_square_of_the_upscale(nb):
    for name in ("linear", "cosine"):
        published, shifted = nb.make_schedule(name, 1000, 1e-4, 0.02), nb.make_schedule(name + "+shift", 1000, 1e-4,
                                                                                         0.02, 4.0)
        snr = [s.alphas_cumprod.double() / (1 - s.alphas_cumprod.double()) for s in (published, shifted)]
        torch.testing.assert_close(snr[1], snr[0] / 4, rtol=2e-3, atol=0)  # float32 alpha-bar near 1 at t = 0
        assert shifted.snr_shift == 4.0 and published.snr_shift == 1.0
        assert ((shifted.betas > 0) & (shifted.betas < 1)).all() and (shifted.alphas_cumprod.diff() < 0).all()


def test_the_shift_follows_from_the_training_and_the_data_resolution(nb, monkeypatch):
    monkeypatch.setattr(nb, "data_resolution", lambda dataset: dataset)  # a "dataset" here is its resolution
    assert nb.snr_shift("linear+shift", 64, 32) == 4
    assert nb.snr_shift("cosine+shift", 96, 32) == 9
    assert nb.snr_shift("linear+shift", 32, 32) == 1  # not upscaled
    assert nb.snr_shift("linear+shift", 64, 256) == 1  # downscaled: the detail at 64 is the data's own
    assert nb.snr_shift("linear", 64, "no/such/folder") == 1  # as published: the data is not even looked at


def test_an_image_folder_s_resolution_is_the_median_short_side_of_its_images(nb, tmp_path):
    for i, size in enumerate([(20, 30), (40, 40), (64, 48)]):
        (tmp_path / "class").mkdir(exist_ok=True)
        PIL.Image.new("RGB", size).save(tmp_path / "class" / f"{i}.png")
    assert nb.data_resolution(str(tmp_path)) == 40
    assert nb.data_resolution("cifar10") == 32


def test_clipping_keeps_the_x0_estimate_in_range(nb):
    x_t, eps = torch.full((1, 3, 2, 2), 3.0), torch.full((1, 3, 2, 2), -2.0)
    assert nb.predict_x0(x_t, eps, 0.5, 0.8, clip_x0=False).min() > 1
    assert nb.predict_x0(x_t, eps, 0.5, 0.8, clip_x0=True).max() == 1
