"""Every path a Mac user takes through the notebook's code, at tiny sizes, on a given device.

test_mps.py runs them under the simulated MPS device; bench/gpu_paths.py runs the same on real CUDA. Each path
returns what the tests check, so that a crash shows as the path's own error.
"""

import dataclasses
from pathlib import Path

import torch

from stand_ins import StandInFeatures
from tiny import tiny_config, tiny_images

SAMPLERS = ("ddpm", "ddim", "dpm++")


def path_config(nb, tmp, device, **overrides):
    """tiny_config on `device`, run eagerly as on a Mac (USE_COMPILE = "auto" would compile on CUDA)."""
    return tiny_config(nb, tmp, DEVICE=device.type, USE_COMPILE=False, **overrides)


def new_run(nb, config, device, num_classes=None):
    """The notebook's build cell on `device`: (TrainingState, schedule on the CPU)."""
    torch.manual_seed(config.seed)
    model = nb.UNet(config.base_channels, config.channel_mults, config.dropout, num_classes,
                    output_init=config.output_init).to(device)
    ema = nb.copy.deepcopy(model).requires_grad_(False) if config.ema_decay is not None else None
    optimizer = nb.make_optimizer(model, config.learning_rate)
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end)
    return nb.TrainingState(model, ema, optimizer), schedule


def train_on(nb, config, device, run_dir, progress=None, state=None, labels=None):
    """Train as the notebook's training cell does, the images kept on the device as its data cell keeps them.
    Returns (state, progress)."""
    images = nb.place_dataset(tiny_images(24, 16), device)
    num_classes = 10 if labels is not None else None
    if state is None:
        state, _ = new_run(nb, config, device, num_classes)
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end)
    class_names = [str(c) for c in range(10)] if labels is not None else None
    progress = nb.train(state, images, schedule, config, device, progress or nb.new_progress(), run_dir, live=False,
                        labels=labels, class_names=class_names)
    return state, progress


def training_with_grids(nb, tmp, device):
    """Two epochs with a checkpoint and a sample grid after each (SAMPLER's default, DPM-Solver++), then a grid
    from DDPM and from DDIM. Returns the grid files."""
    config = path_config(nb, tmp, device, SAMPLE_EVERY=1)
    run_dir = nb.new_run_dir(config.checkpoint_dir)
    state, _ = train_on(nb, config, device, run_dir)
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end)
    grids = sorted((Path(config.sample_dir) / run_dir.name).glob("*.png"))
    for sampler in ("ddpm", "ddim"):
        path = Path(config.sample_dir) / f"{sampler}.png"
        nb.save_sample_grid(state.model, state.ema_model, schedule.to(device),
                            dataclasses.replace(config, sampler=sampler), device, path)
        grids.append(path)
    return grids


def stop_and_resume(nb, tmp, device):
    """Two epochs in one go, and one epoch, a checkpoint, a fresh model restored from it and one more epoch.
    Returns (the straight run's state_dict, the resumed run's, the resumed progress)."""
    config = path_config(nb, tmp / "straight", device, EPOCHS=2)
    straight, _ = train_on(nb, config, device, nb.new_run_dir(config.checkpoint_dir))
    config = path_config(nb, tmp / "stopped", device, EPOCHS=1)
    train_on(nb, config, device, nb.new_run_dir(config.checkpoint_dir))
    config = dataclasses.replace(config, epochs=2, resume="latest")
    path, checkpoint = nb.find_resume_checkpoint(config.resume, config.checkpoint_dir)
    state, schedule = new_run(nb, config, device)
    progress = nb.restore_checkpoint(checkpoint, path, state, config, schedule)
    run_dir = nb.new_run_dir(config.checkpoint_dir, resumed_from=path)  # as the notebook's build cell does
    resumed, progress = train_on(nb, config, device, run_dir, progress, state)
    return straight.model.state_dict(), resumed.model.state_dict(), progress


def v_prediction(nb, tmp, device):
    """RECIPE = "faster": v-prediction with min-SNR weighting, a grid at the end. Returns the grid file."""
    config = path_config(nb, tmp, device, EPOCHS=1, RECIPE="faster")
    run_dir = nb.new_run_dir(config.checkpoint_dir)
    train_on(nb, config, device, run_dir)
    return next((Path(config.sample_dir) / run_dir.name).glob("*.png"))


def class_conditional(nb, tmp, device):
    """CLASS_CONDITIONAL training, its guided grid, and a class asked for with guidance by each sampler.
    Returns {sampler: images}."""
    config = path_config(nb, tmp, device, EPOCHS=1, CLASS_CONDITIONAL=True)
    labels = torch.arange(24) % 10
    state, _ = train_on(nb, config, device, nb.new_run_dir(config.checkpoint_dir), labels=labels)
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end)
    predictor = nb.NoisePredictor(state.ema_model, schedule, config.prediction)
    return {sampler: nb.explore_sampler(predictor, 16, device, sampler, 5, 0.0, 0, 2, class_index=3, guidance_scale=2.0)
            for sampler in SAMPLERS}


def sampling_section(nb, tmp, device):
    """Section 7 from a checkpoint file, as its cell does with checkpoint_path set: each sampler; then the explorers,
    the reverse-process snapshots and the GIF. Returns {name: images}."""
    config = path_config(nb, tmp, device, EPOCHS=1, RECIPE="faster")
    run_dir = nb.new_run_dir(config.checkpoint_dir)
    train_on(nb, config, device, run_dir)
    path = next(run_dir.glob("step_*.pt"))
    model, schedule, size, _, prediction = nb.load_model(path, device)
    predictor = nb.NoisePredictor(model, schedule, prediction)
    shape, generator = (2, 3, size, size), lambda: torch.Generator().manual_seed(1)
    drawn = {sampler: nb.sample(predictor, shape, device, schedule, sampler, 5, 0.5, generator())
             for sampler in SAMPLERS}
    for sampler in SAMPLERS:
        drawn[f"explorer {sampler}"] = nb.explore_sampler(predictor, size, device, sampler, 4, 0.5, seed=2, count=2)
    snapshots = [x for t, x in nb.reverse_process(predictor, shape, device, schedule, generator=generator())
                 if t in (9, 5, 0)]
    drawn["snapshots"] = torch.cat(snapshots).clamp(-1, 1).cpu()
    frames = nb.denoising_gif(predictor, size, device, config.sampler, 5, tmp / "denoising.gif")
    drawn["gif"] = torch.from_numpy(frames).float() / 127.5 - 1
    return drawn


def evaluation_section(nb, tmp, device):
    """Section 9 with a stand-in feature extractor: real features (cached), generated images, FID and KID, and the
    nearest training images. Returns (fid, kid mean, nearest distances)."""
    config = path_config(nb, tmp, device, EPOCHS=1)
    state, _ = train_on(nb, config, device, nb.new_run_dir(config.checkpoint_dir))
    schedule = nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end)
    images = nb.place_dataset(tiny_images(24, 16), device)
    extractor = StandInFeatures()
    real_images = nb.real_images_for_eval(images, 8, 16, 16, 0)
    real, _, _ = nb.cached_real_features(real_images, extractor, device, tmp / "cache")
    predictor = nb.NoisePredictor(state.ema_model, schedule, config.prediction)
    fake_images = nb.generate_for_eval(predictor, 8, 16, 16, device, config.sampler, 5, 4, seed=4)
    fid, kid, _ = nb.fid_kid(real, nb.image_features(fake_images, extractor, device), kid_subsets=3)
    distances, _ = nb.nearest_training_images(fake_images[:2].float() / 127.5 - 1, images, 16, k=2, size=16)
    return fid, kid, distances


PATHS = {path.__name__: path for path in (training_with_grids, stop_and_resume, v_prediction, class_conditional,
                                          sampling_section, evaluation_section)}
