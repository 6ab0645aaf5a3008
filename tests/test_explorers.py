"""The interactive explorers' callbacks as plain functions (given the widgets' values, the right images), the
denoising GIF, and the live training panel."""

import base64
import re

import numpy as np
import PIL.Image
import pytest
import torch

from tiny import tiny_config, tiny_run


@pytest.fixture
def setup(nb, tmp_path):
    config = tiny_config(nb, tmp_path)
    return config, tiny_run(nb, config)


def test_the_timestep_slider_shows_eq_4_at_that_t(nb, setup):
    config, run = setup
    x_0 = torch.rand(1, 3, 16, 16) * 2 - 1
    noise = torch.randn(1, 3, 16, 16)
    for t in (0, 4, config.timesteps - 1):
        x_t, caption = nb.forward_process_view(x_0, noise, t, run.schedule)
        assert torch.equal(x_t, nb.forward_diffusion(x_0, torch.tensor([t]), noise, run.schedule))
        signal = run.schedule.sqrt_alphas_cumprod[t].item()
        assert caption.startswith(f"t = {t}: {signal:.3f} x_0 + ")
    with pytest.raises(AssertionError, match="code index"):
        nb.forward_process_view(x_0, noise, config.timesteps, run.schedule)


def test_the_sampler_explorer_draws_with_the_chosen_ddim_settings(nb, setup):
    config, run = setup
    predictor = nb.NoisePredictor(run.model, run.schedule)
    drawn = nb.explore_sampler(predictor, 16, torch.device("cpu"), "ddim", 3, 0.5, seed=7, count=2)
    expected = nb.sample(run.model, (2, 3, 16, 16), torch.device("cpu"), run.schedule, "ddim", 3, 0.5,
                         torch.Generator().manual_seed(7))
    assert torch.equal(drawn, expected)
    other_seed = nb.explore_sampler(predictor, 16, torch.device("cpu"), "ddim", 3, 0.5, seed=8, count=2)
    assert not torch.equal(drawn, other_seed)


def test_the_sampler_explorer_draws_ddpm_over_every_step(nb, setup):
    config, run = setup
    drawn = nb.explore_sampler(nb.NoisePredictor(run.model, run.schedule), 16, torch.device("cpu"), "ddpm", 3, 0.0,
                               seed=7, count=2)
    expected = nb.sample(run.model, (2, 3, 16, 16), torch.device("cpu"), run.schedule,
                         generator=torch.Generator().manual_seed(7))
    assert torch.equal(drawn, expected)


def test_the_sampler_explorer_rejects_more_steps_than_the_schedule_has(nb, setup):
    config, run = setup
    with pytest.raises(ValueError, match="steps must lie in 1..10, not 11"):
        nb.explore_sampler(nb.NoisePredictor(run.model, run.schedule), 16, torch.device("cpu"), "ddim", 11, 0.0, seed=0)


@pytest.mark.parametrize("sampler, steps_taken", [("ddim", 5), ("dpm++", 5), ("ddpm", 10)])
def test_the_denoising_gif_follows_one_sample_to_the_generated_image(nb, setup, tmp_path, sampler, steps_taken):
    config, run = setup
    path, predictor = tmp_path / "gifs" / "denoising.gif", nb.NoisePredictor(run.model, run.schedule)
    frames = nb.denoising_gif(predictor, 16, torch.device("cpu"), sampler, 5, path, seed=3, num_frames=4)
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8
    final = nb.sample(run.model, (1, 3, 16, 16), torch.device("cpu"), run.schedule, sampler, 5,
                      generator=torch.Generator().manual_seed(3))
    assert np.array_equal(frames[-1], nb.to_unit_range(final[0]).mul(255).round().byte().permute(1, 2, 0).numpy())
    gif = PIL.Image.open(path)
    durations = []
    for index in range(gif.n_frames):  # PIL merges identical neighbours, adding up their durations
        gif.seek(index)
        durations.append(gif.info["duration"])
    assert gif.size == (64, 64) and sum(durations) == 3 * 80 + 2000 and durations[-1] >= 2000
    everything = nb.denoising_gif(predictor, 16, torch.device("cpu"), sampler, 5, path, num_frames=100)
    assert len(everything) == steps_taken  # never more frames than steps


def test_the_training_panel_shows_status_progress_and_pictures(nb):
    png = (b"\x89PNG" + bytes(range(256)))
    bundle = nb.training_panel(["epoch 2/3, update 4/9", "epoch 1/3: loss 0.9"], 4 / 9, [png, png])
    assert bundle["text/plain"] == "epoch 2/3, update 4/9\nepoch 1/3: loss 0.9"
    assert '<progress value="0.4444" max="1"' in bundle["text/html"]
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', bundle["text/html"])
    assert [base64.b64decode(p) for p in pictures] == [png, png]
    assert "&lt;b&gt;" in nb.training_panel(["<b>"], 0, [])["text/html"]  # text is escaped, not markup


def test_the_status_line_gives_speed_and_time_to_go(nb, tmp_path):
    config = tiny_config(nb, tmp_path, BATCH_SIZE=8, GRAD_ACCUM_STEPS=2, EPOCHS=3)
    progress = dict(nb.new_progress(), epoch=1, step=100, losses=[9.0] * 60 + [0.5, 0.25] * 25)
    line = nb.status_line(progress, config, total_updates=400, updates_done=50, seconds=100.0)
    # 2 s an update of 16 images: 8 images/s; 300 updates to go: 10 min; loss: the mean of the last LOG_EVERY (50)
    assert line == "epoch 2/3, update 100/400, loss 0.3750, 8.0 images/s, 10 min to go"
    done = dict(progress, epoch=3, step=400)
    assert nb.status_line(done, config, 400, 350, 700.0) == "epoch 3/3, update 400/400, loss 0.3750, 8.0 images/s"
