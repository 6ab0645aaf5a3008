"""A tiny training setup built from the notebook's own definitions, for tests that train."""

import ast

import torch

from notebook import cells, source


def default_parameters():
    """The parameters cell's values, by name."""
    return {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(source(cells("parameters")[0])).body}


def tiny_config(nb, tmp_path, **overrides):
    """A Config for a 16x16, 16-channel U-Net with a 10-step schedule, writing under tmp_path."""
    parameters = dict(
        default_parameters(),
        IMAGE_SIZE=16, BASE_CHANNELS=16, CHANNEL_MULTS=(1, 2), TIMESTEPS=10, BATCH_SIZE=4, EPOCHS=2,
        MAX_BATCHES_PER_EPOCH=3, LOG_EVERY=2, SAMPLE_EVERY=100, NUM_SAMPLES=2,
        CHECKPOINT_DIR=str(tmp_path / "checkpoints"), SAMPLE_DIR=str(tmp_path / "samples"),
    )
    parameters.update(overrides)
    return nb.Config.from_parameters(parameters)


def tiny_images(count=24, size=16):
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def tiny_run(nb, config):
    """(model, optimizer, lr_scheduler, schedule, progress) for a new run, seeded from config.seed."""
    torch.manual_seed(config.seed)
    model = nb.UNet(config.base_channels, config.channel_mults)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10) if config.cosine_lr else None
    schedule = nb.linear_schedule(config.timesteps, config.beta_start, config.beta_end)
    progress = {"epoch": 0, "batch": 0, "step": 0, "losses": []}
    return model, optimizer, lr_scheduler, schedule, progress


def train(nb, config, images, run, run_dir):
    model, optimizer, lr_scheduler, schedule, progress = run
    return nb.train(model, optimizer, lr_scheduler, images, schedule, config, torch.device("cpu"), progress, run_dir,
                    live=False)
