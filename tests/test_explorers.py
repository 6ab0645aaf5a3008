"""The interactive explorers' callbacks as plain functions (given the widgets' values, the right images), the
denoising GIF, and the live training panel."""

import base64
import re
import time

import numpy as np
import PIL.Image
import pytest
import torch

from tiny import tiny_config, tiny_images, tiny_run, train


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


def test_the_training_panel_shows_the_epochs_and_pictures_and_as_text_the_bar_line(nb):
    png = (b"\x89PNG" + bytes(range(256)))
    bar_line = "epoch 2/3:  44%|####4     | 4/9 [00:08<00:10, 0.50update/s, loss=0.9000]"
    bundle = nb.training_panel(bar_line, ["epoch 1/3: loss 0.9"], [png, png])
    assert bundle["text/plain"] == f"{bar_line}\nepoch 1/3: loss 0.9"  # where the bar's widget does not show
    assert "epoch 1/3: loss 0.9" in bundle["text/html"] and "4/9" not in bundle["text/html"]  # Jupyter: tqdm's widget
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', bundle["text/html"])
    assert [base64.b64decode(p) for p in pictures] == [png, png]
    assert "&lt;b&gt;" in nb.training_panel("", ["<b>"], [])["text/html"]  # text is escaped, not markup


def test_training_shows_tqdms_bar_with_epoch_speed_time_to_go_and_loss(nb, tmp_path, capsys, monkeypatch):
    config = tiny_config(nb, tmp_path, EPOCHS=2, MAX_BATCHES_PER_EPOCH=3)
    run = tiny_run(nb, config)
    monkeypatch.setattr(nb, "LOG_EVERY", 2)  # the loss shown: the mean of the last 2 updates
    train(nb, config, tiny_images(), run, tmp_path / "run")
    captured = capsys.readouterr()
    bar = captured.err.split("\r")[-1].strip()  # tqdm redraws its line in place on stderr
    rate = r"[\d.]+(update/s|s/update)"
    assert re.fullmatch(rf"epoch 2/2: 100%\|.+\| 6/6 \[[\d:]+<00:00, +{rate}, loss=\d\.\d{{4}}\]", bar), bar
    loss = float(bar.rsplit("loss=", 1)[1].rstrip("]"))
    assert loss == pytest.approx(np.mean(run.progress["losses"][-2:]), abs=1e-4)
    assert [line[:15] for line in captured.out.splitlines()] == ["epoch 1/2: loss", "epoch 2/2: loss"]  # above it


def test_the_bars_time_to_go_leaves_out_the_first_update(nb, capsys):
    """A session's first update holds torch.compile's ~40 s on CUDA: counted in, the time to go after the first epoch
    would be several times too long. Here the first update takes 1 s and the next three none."""
    panel = nb.LivePanel(10, nb.new_progress(), live=False)
    time.sleep(1)
    for _ in range(4):
        panel.update()
    meter = panel.bar.format_dict
    rate = (meter["n"] - meter["initial"]) / meter["elapsed"]
    assert (meter["total"] - meter["n"]) / rate < 0.5  # counting the first: 6 / (4 / 1 s) = 1.5 s
    panel.bar.close()
