"""Settings that change code paths, crossed at tiny sizes: each combination runs and does what its settings promise.
Sampling runs on the CPU and under the simulated Mac (simulated_mps.py), which raises where a Mac would."""

import contextlib
import dataclasses

import pytest
import torch
from simulated_mps import simulated_mps
from test_checkpoints import interrupt_at_update
from test_prediction_and_solver import endpoint_errors

from stand_ins import StandInFeatures
from tiny import tiny_config, tiny_images, tiny_run, train

SCHEDULES = ("linear", "cosine", "linear+shift", "cosine+shift")
MODELS = [("eps", False), ("v", False), ("eps", True), ("v", True)]  # (prediction, class-conditional with guidance)


def schedule_named(nb, name, timesteps):
    return nb.make_schedule(name, timesteps, 1e-4, 0.02, 4.0 if name.endswith("+shift") else 1.0)  # 32x32 data at 64


# ---------------------------------------------------------------- the schedule x the sampler


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("name", SCHEDULES)
def test_dpm_solver_spreads_its_steps_evenly_in_lambda_on_every_schedule(nb, name, steps):
    """From index T-1 to the next the step is as long as the schedule makes it (the cosine schedule's clipped last
    beta is a jump of 3.5 in lambda); every later step spans 0.5 to 1.5 times an even share of the rest."""
    schedule = schedule_named(nb, name, 1000)
    visited = nb.dpm_solver_timesteps(schedule, steps)
    assert len(visited) == steps and visited[0] == 999 and visited[-1] == 0
    assert all(a > b for a, b in zip(visited, visited[1:], strict=False))
    lambdas = nb.half_log_snr(schedule)[visited]
    even_share = (lambdas[-1] - lambdas[1]) / (steps - 2)
    assert ((lambdas[1:].diff() / even_share - 1).abs() < 0.5).all(), lambdas.diff()


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("name", SCHEDULES)
def test_dpm_solver_ends_nearer_the_probability_flow_than_ddim_on_every_schedule(nb, name, steps):
    """With an exact model of Gaussian data, at least 3 times nearer the ODE's true endpoint than as many DDIM
    steps (with the cosine schedule's steps stacked in its last gap, 10 steps were only 2.2 times nearer)."""
    errors = endpoint_errors(nb, schedule_named(nb, name, 1000), steps)
    assert errors["dpm++"] < errors["ddim"] / 3, errors


@pytest.mark.parametrize("device", ["cpu", "mps"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_every_sampler_on_every_schedule_draws_in_range_from_every_kind_of_model(nb, name, sampler, device):
    """For a noise and a v model, unconditional and guided: the visited indices fall strictly from T-1 to 0 (DDPM:
    every one), and the last step lands on the clipped estimate of x_0, finite and in [-1, 1] before any clamp."""
    schedule, steps = schedule_named(nb, name, 20), 6
    for prediction, guided in MODELS:
        torch.manual_seed(0)
        model = nb.UNet(16, (1, 2), num_classes=2 if guided else None)
        with simulated_mps() if device == "mps" else contextlib.nullcontext():
            device_ = torch.device(device)
            labels = torch.tensor([0, 1]).to(device_) if guided else None
            predictor = nb.NoisePredictor(model.to(device_), schedule, prediction, labels, guidance_scale=3.0)
            visited = list(nb.reverse_process(predictor, (2, 3, 8, 8), device_, schedule, sampler, steps,
                                              generator=torch.Generator().manual_seed(1)))
            last = visited[-1][1].cpu()
        timesteps = [t for t, _ in visited]
        assert timesteps == (list(range(19, -1, -1)) if sampler == "ddpm" else sorted(timesteps, reverse=True))
        assert len(set(timesteps)) == len(timesteps) and timesteps[0] == 19 and timesteps[-1] == 0
        assert last.isfinite().all() and last.abs().max() <= 1 + 1e-5, (prediction, guided)


# ---------------------------------------------------------------- compiling


@pytest.mark.parametrize("use_compile, device, accumulation, mode", [
    ("auto", "cuda", 1, "reduce-overhead"),  # CUDA graphs: one forward and backward an update
    (True, "cuda", 1, "reduce-overhead"),
    (False, "cuda", 1, None),
    ("auto", "cuda", 2, "default"),  # accumulation: a replay would overwrite the last backward's gradients
    (True, "cuda", 4, "default"),
    ("auto", "cpu", 2, None),
    (True, "cpu", 2, "default"),
    ("auto", "mps", 1, None),
])
def test_cuda_graphs_only_where_each_update_has_one_backward(nb, use_compile, device, accumulation, mode):
    assert nb.compile_mode(use_compile, torch.device(device), accumulation) == mode


# ---------------------------------------------------------------- training x resuming with changed settings


@pytest.mark.parametrize("recipe, conditional, schedule, before, after", [
    ("paper", False, "linear+shift", 1, 2),
    ("faster", True, "cosine", 2, 1),
    ("faster", False, "cosine+shift", 1, 4),
    ("paper", True, "linear", 4, 3),
])
def test_a_run_resumed_mid_epoch_with_other_accumulation_trains_whole_updates(nb, tmp_path, monkeypatch, recipe,
                                                                             conditional, schedule, before, after):
    """Stopped mid-epoch with GRAD_ACCUM_STEPS = `before`, resumed with `after`: the epoch goes on from the saved
    image while a whole update fits, and every update sees `after` full batches."""
    settings = dict(EPOCHS=2, MAX_BATCHES_PER_EPOCH=12, BATCH_SIZE=2, RECIPE=recipe, CLASS_CONDITIONAL=conditional,
                    NOISE_SCHEDULE=schedule)
    config = tiny_config(nb, tmp_path, GRAD_ACCUM_STEPS=before, **settings)
    labels, classes = (torch.arange(24) % 2, ["a", "b"]) if conditional else (None, None)
    interrupt_at_update(nb, monkeypatch, 11)  # stopped in the 11th batch: epoch 1 stands at batch 10 or 8
    with pytest.raises(KeyboardInterrupt):
        train(nb, config, tiny_images(), tiny_run(nb, config, num_classes=classes and 2), tmp_path / "a", labels,
              classes)
    monkeypatch.undo()
    path = max((tmp_path / "a").glob("step_*.pt"))
    checkpoint = nb.load_checkpoint(path)
    saved = checkpoint["progress"]
    assert saved["epoch"] == 0 and saved["image"] == 10 // before * before * 2  # batches of 2

    sizes = []
    real_losses = nb.diffusion_losses
    monkeypatch.setattr(nb, "diffusion_losses", lambda model, x_0, *args: sizes.append(len(x_0)) or
                        real_losses(model, x_0, *args))
    resumed_config = dataclasses.replace(config, grad_accum_steps=after)
    run = tiny_run(nb, resumed_config, num_classes=classes and 2)
    run.progress = nb.restore_checkpoint(checkpoint, path, run.state, resumed_config, run.schedule, classes)
    train(nb, resumed_config, tiny_images(), run, tmp_path / "b", labels, classes)
    updates = (12 - saved["image"] // 2) // after + 12 // after  # the rest of epoch 1, then epoch 2 (whole updates)
    assert run.progress["step"] == saved["step"] + updates and run.progress["epoch"] == 2
    assert sizes == [2] * (updates * after)  # full batches only, `after` of them an update
    assert len(run.progress["losses"]) == run.progress["step"]


def test_a_cosine_run_resumes_over_changed_betas_which_it_does_not_use(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1, NOISE_SCHEDULE="cosine")
    stored = dataclasses.asdict(config)
    nb.check_compatible(stored, dataclasses.replace(config, beta_start=1e-3, beta_end=0.05), "old.pt")
    linear = dataclasses.replace(config, noise_schedule="linear")
    with pytest.raises(nb.ConfigError, match="BETA_END: checkpoint 0.02, parameters 0.05"):
        nb.check_compatible(dataclasses.asdict(linear), dataclasses.replace(linear, beta_end=0.05), "old.pt")


# ---------------------------------------------------------------- evaluation


def test_two_feature_extractors_of_one_class_never_share_a_cache_entry(nb, tmp_path):
    real = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    first, other = StandInFeatures(), StandInFeatures()
    with torch.no_grad():
        other.net[0].weight.mul_(2)  # another weights file of the same network
    _, first_path, _ = nb.cached_real_features(real, first, torch.device("cpu"), tmp_path)
    _, other_path, cached = nb.cached_real_features(real, other, torch.device("cpu"), tmp_path)
    assert not cached and other_path != first_path and other.calls == 1


def test_kid_never_compares_the_whole_sets(nb):
    """Its subsets hold half of the images, so they differ and their spread means something; 4 is the least."""
    features = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    _, _, spread = nb.fid_kid(features, features + 0.1, kid_subsets=20)
    assert spread > 0
    with pytest.raises(AssertionError, match="at least 4 images"):
        nb.fid_kid(features[:3], features[:3])
