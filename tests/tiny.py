"""A tiny training setup built from the notebook's own definitions, for tests that train."""

import ast
import copy
from types import SimpleNamespace

import torch

from notebook import cells, source

# Parameters for a whole run of the notebook in about 20 s on the CPU, whatever else the machine has (papermill and
# browser tests)
SMALL = dict(DEVICE="cpu", IMAGE_SIZE=32, BASE_CHANNELS=16, TIMESTEPS=20, EPOCHS=2, BATCH_SIZE=8,
             MAX_BATCHES_PER_EPOCH=3, SAMPLE_EVERY=1, SAMPLING_STEPS=10, WARMUP_STEPS=2, EVAL_IMAGES=4)


def default_parameters():
    """The parameters cell's values, by name."""
    return {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(source(cells("parameters")[0])).body}


def tiny_config(nb, tmp_path, **overrides):
    """A Config for a 16x16, 16-channel U-Net with a 10-step schedule, writing under tmp_path."""
    parameters = dict(
        default_parameters(),
        IMAGE_SIZE=16, BASE_CHANNELS=16, CHANNEL_MULTS=(1, 2), TIMESTEPS=10, BATCH_SIZE=4, EPOCHS=2,
        MAX_BATCHES_PER_EPOCH=3, SAMPLE_EVERY=100, WARMUP_STEPS=2, SAMPLING_STEPS=5,
        CHECKPOINT_DIR=str(tmp_path / "checkpoints"), SAMPLE_DIR=str(tmp_path / "samples"),
    )
    unknown = set(overrides) - set(default_parameters())
    assert not unknown, f"not parameters of the notebook: {unknown}"
    parameters.update(overrides)
    return nb.Config.from_parameters(parameters)


def tiny_images(count=24, size=16):
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def tiny_run(nb, config, updates_per_epoch=3, num_classes=None, shift=1.0):
    """A new run as the notebook's setup cells build it, seeded from config.seed: model, ema, optimizer, the three
    as the notebook's TrainingState (state), schedule (its SNR divided by `shift`) and progress."""
    torch.manual_seed(config.seed)
    model = nb.UNet(config.base_channels, config.channel_mults, config.dropout, num_classes,
                    output_init=config.output_init)
    optimizer = nb.make_optimizer(model, config.learning_rate)
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay is not None else None
    return SimpleNamespace(
        model=model,
        ema=ema,
        optimizer=optimizer,
        state=nb.TrainingState(model, ema, optimizer),
        schedule=nb.make_schedule(config.noise_schedule, config.timesteps, config.beta_start, config.beta_end, shift),
        progress=nb.new_progress(),
    )


def train(nb, config, images, run, run_dir, labels=None, class_names=None):
    """The notebook's training cell, without the live display."""
    return nb.train(run.state, images, run.schedule, config, torch.device("cpu"), run.progress, run_dir, live=False,
                    labels=labels, class_names=class_names)


def restore(nb, checkpoint, path, run, config):
    """The notebook's resume cell: load `checkpoint` into `run` and make its progress the run's."""
    run.progress = nb.restore_checkpoint(checkpoint, path, run.state, config, run.schedule)
    return run
