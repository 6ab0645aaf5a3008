"""Section 6: the loss, the training loop, checkpoints and resuming."""

import dataclasses
from pathlib import Path

import pytest
import torch
from tiny import tiny_config, tiny_images, tiny_run, train

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg" / "train"


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="needs ../shared/data/cifar10-jpg")
def test_a_small_model_learns_to_predict_the_noise(nb, tmp_path):
    # Measured on a 2-core CPU: MSE 1.00 before, 0.09 after 200 updates (about 25 s); the bar is 0.25.
    images, _, _ = nb.load_image_folder(str(SHARED_TRAIN), 32)
    config = tiny_config(nb, tmp_path, IMAGE_SIZE=32, CHANNEL_MULTS=(1, 2, 2), TIMESTEPS=1000, BATCH_SIZE=32,
                         EPOCHS=1, MAX_BATCHES_PER_EPOCH=200, LEARNING_RATE=1e-3, LOG_EVERY=50)
    run = tiny_run(nb, config)
    model, schedule = run[0], run[3]
    held_out = nb.prepare_batch(images, torch.arange(4000, 4256), torch.zeros(256, dtype=torch.bool), 32, "cpu")
    generator = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (256,), generator=generator)
    noise = torch.randn(held_out.shape, generator=generator)

    def held_out_mse():
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(nb.forward_diffusion(held_out, t, noise, schedule), t), noise)

    before = held_out_mse()
    train(nb, config, images[:4000], run, tmp_path / "run")
    after = held_out_mse()
    assert before > 0.95 and after < 0.25, (before, after)


def test_training_writes_checkpoints_and_sample_grids(nb, tmp_path):
    config = tiny_config(nb, tmp_path, SAMPLE_EVERY=1, KEEP_CHECKPOINTS=1)
    progress = train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "checkpoints" / "run-a")
    assert progress["epoch"] == 2 and progress["step"] == 6 and len(progress["losses"]) == 6
    assert [p.name for p in (tmp_path / "checkpoints" / "run-a").iterdir()] == ["step_00000006.pt"]  # kept 1
    assert sorted(p.name for p in (tmp_path / "samples" / "run-a").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]


def test_checkpoint_loads_on_cpu_with_weights_only(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    model, optimizer, lr_scheduler, _, progress = run = tiny_run(nb, config)
    train(nb, config, tiny_images(), run, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "step_00000003.pt", map_location="cpu", weights_only=True)
    assert states_equal(checkpoint["model"], model.state_dict())
    assert checkpoint["progress"] == {"epoch": 1, "batch": 0, "step": 3, "losses": progress["losses"]}
    assert checkpoint["config"] == dataclasses.asdict(config)
    assert checkpoint["optimizer"]["state"][0]["step"] == 3
    assert {"python", "numpy", "torch"} <= checkpoint["rng"].keys()


@pytest.mark.parametrize("stop", [{"EPOCHS": 1}, {"EPOCHS": 2, "MAX_BATCHES_PER_EPOCH": 3}],
                         ids=["at an epoch's end", "after the first epoch"])
def test_resumed_training_equals_uninterrupted_training(nb, tmp_path, stop):
    images = tiny_images()
    config = tiny_config(nb, tmp_path, EPOCHS=3, COSINE_LR=True)
    straight = tiny_run(nb, config)
    train(nb, config, images, straight, tmp_path / "straight")

    first = tiny_run(nb, config)
    train(nb, dataclasses.replace(config, epochs=stop["EPOCHS"]), images, first, tmp_path / "resumed")
    path, checkpoint = nb.find_resume_checkpoint("latest", tmp_path)
    resumed = tiny_run(nb, dataclasses.replace(config, seed=99))  # other initial weights, to be overwritten
    model, optimizer, lr_scheduler, schedule, _ = resumed
    progress = nb.restore_checkpoint(checkpoint, path, model, optimizer, lr_scheduler, config)
    train(nb, config, images, (model, optimizer, lr_scheduler, schedule, progress), tmp_path / "resumed")

    assert states_equal(straight[0].state_dict(), model.state_dict())
    assert straight[4]["losses"] == progress["losses"]
    assert straight[2].state_dict() == lr_scheduler.state_dict()


def test_interrupt_saves_a_checkpoint_at_the_last_finished_update(nb, tmp_path, monkeypatch, capsys):
    config = tiny_config(nb, tmp_path)
    real_loss, calls = nb.diffusion_loss, []

    def interrupted_loss(*args):
        calls.append(1)
        if len(calls) == 5:  # inside update 5: updates 1-4 are finished
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(nb, "diffusion_loss", interrupted_loss)
    run = tiny_run(nb, config)
    with pytest.raises(KeyboardInterrupt):
        train(nb, config, tiny_images(), run, tmp_path / "run")
    checkpoint = nb.load_checkpoint(tmp_path / "run" / "step_00000004.pt")
    assert {k: checkpoint["progress"][k] for k in ("epoch", "batch", "step")} == {"epoch": 1, "batch": 1, "step": 4}
    assert "step_00000004.pt" in capsys.readouterr().out
    assert states_equal(checkpoint["model"], run[0].state_dict())


def test_a_non_finite_loss_stops_training_without_saving(nb, tmp_path):
    config = tiny_config(nb, tmp_path, LEARNING_RATE=0.9)
    model, optimizer, lr_scheduler, schedule, progress = run = tiny_run(nb, config)
    with torch.no_grad():
        model.output[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="at update 1"):
        train(nb, config, tiny_images(), run, tmp_path / "run")
    assert not list((tmp_path / "run").glob("*.pt"))


def test_a_damaged_checkpoint_is_named_in_the_error(nb, tmp_path):
    path = tmp_path / "step_00000001.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=f"checkpoint {path} cannot be read"):
        nb.load_checkpoint(path)


def test_latest_skips_a_damaged_newest_checkpoint(nb, tmp_path, capsys):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "checkpoints" / "run-a")
    damaged = tmp_path / "checkpoints" / "run-b" / "step_00000009.pt"
    damaged.parent.mkdir()
    damaged.write_bytes(open(tmp_path / "checkpoints" / "run-a" / "step_00000003.pt", "rb").read()[:1000])
    path, checkpoint = nb.find_resume_checkpoint("latest", tmp_path / "checkpoints")
    assert path.name == "step_00000003.pt" and checkpoint["progress"]["step"] == 3
    assert f"skipping {damaged}" in capsys.readouterr().out


def test_latest_with_no_checkpoint_is_a_clear_error(nb, tmp_path):
    with pytest.raises(FileNotFoundError, match="no readable checkpoint"):
        nb.find_resume_checkpoint("latest", tmp_path)


def test_a_checkpoint_of_another_model_lists_the_differences(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    path, checkpoint = nb.find_resume_checkpoint(str(tmp_path / "run" / "step_00000003.pt"), tmp_path)
    other = dataclasses.replace(config, base_channels=32, timesteps=20)
    model, optimizer, lr_scheduler, _, _ = tiny_run(nb, other)
    with pytest.raises(nb.ConfigError) as error:
        nb.restore_checkpoint(checkpoint, path, model, optimizer, lr_scheduler, other)
    assert "BASE_CHANNELS: checkpoint 16, parameters 32" in str(error.value)
    assert "TIMESTEPS: checkpoint 10, parameters 20" in str(error.value)


def test_a_failed_save_keeps_the_previous_checkpoint(nb, tmp_path, monkeypatch):
    path = tmp_path / "step_00000001.pt"
    nb.save_checkpoint({"format_version": nb.CHECKPOINT_FORMAT, "value": torch.ones(3)}, path)

    def disk_full(obj, file):
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nb.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        nb.save_checkpoint({"format_version": nb.CHECKPOINT_FORMAT, "value": torch.zeros(3)}, path)
    assert torch.equal(nb.load_checkpoint(path)["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001.pt"]


def test_new_runs_never_share_a_folder(nb, tmp_path):
    first, second = nb.new_run_dir(tmp_path), nb.new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_load_model_rebuilds_the_model_from_the_checkpoint_alone(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    run = tiny_run(nb, config)
    train(nb, config, tiny_images(), run, tmp_path / "run")
    model, schedule, image_size = nb.load_model(tmp_path / "run" / "step_00000003.pt", torch.device("cpu"))
    assert states_equal(model.state_dict(), run[0].state_dict())
    assert schedule.num_timesteps == 10 and image_size == 16
