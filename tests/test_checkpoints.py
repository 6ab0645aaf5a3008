"""Checkpoints and resuming: training never loses work."""

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest
import torch

from tiny import restore, tiny_config, tiny_images, tiny_run, train

TESTS = Path(__file__).resolve().parent

RESUME_IN_A_NEW_PROCESS = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from notebook import load_definitions
from tiny import restore, tiny_config, tiny_images, tiny_run, train
nb = load_definitions()
config = tiny_config(nb, Path({tmp!r}), EPOCHS=3, COSINE_LR=True)
path, checkpoint = nb.find_resume_checkpoint("latest", config.checkpoint_dir)
run = restore(nb, checkpoint, path, tiny_run(nb, config), config)
train(nb, config, tiny_images(), run, path.parent)
torch.save({{"model": run.model.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.optimizer.state_dict(),
            "progress": run.progress}}, {out!r})
"""


def tensors_equal(a, b):
    """Bitwise equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def interrupt_at_update(nb, monkeypatch, update):
    """Make the notebook's loss raise KeyboardInterrupt in the given update (1-based), as Jupyter's stop does."""
    real_losses, calls = nb.diffusion_losses, []

    def loss(*args):
        calls.append(1)
        if len(calls) == update:
            raise KeyboardInterrupt
        return real_losses(*args)

    monkeypatch.setattr(nb, "diffusion_losses", loss)


@pytest.fixture
def straight(nb, tmp_path_factory):
    """3 epochs of 3 updates without a stop: the run every resumed run must equal."""
    folder = tmp_path_factory.mktemp("straight")
    config = tiny_config(nb, folder, EPOCHS=3, COSINE_LR=True)
    run = tiny_run(nb, config)
    train(nb, config, tiny_images(), run, folder / "run")
    return {"model": run.model.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.optimizer.state_dict(),
            "progress": run.progress}


@pytest.mark.parametrize("stop", ["epoch end", "mid-epoch interrupt"])
def test_resume_in_a_fresh_process_is_bitwise_identical(nb, tmp_path, monkeypatch, straight, stop):
    config = tiny_config(nb, tmp_path, EPOCHS=3, COSINE_LR=True)
    run_dir = tmp_path / "checkpoints" / "run-a"
    if stop == "epoch end":  # stopped as epoch 2 begins: the checkpoint is epoch 1's last update
        interrupt_at_update(nb, monkeypatch, 4)
        with pytest.raises(KeyboardInterrupt):
            train(nb, config, tiny_images(), tiny_run(nb, config), run_dir)
        assert nb.load_checkpoint(run_dir / "step_00000003.pt")["progress"]["image"] == 0  # at the epoch's end
    else:
        interrupt_at_update(nb, monkeypatch, 5)  # epoch 2, its second update
        with pytest.raises(KeyboardInterrupt):
            train(nb, config, tiny_images(), tiny_run(nb, config), run_dir)
        assert nb.load_checkpoint(run_dir / "step_00000004.pt")["progress"]["image"] == 4  # mid-epoch: one batch of 4
    out = tmp_path / "resumed.pt"
    script = RESUME_IN_A_NEW_PROCESS.format(tests=str(TESTS), tmp=str(tmp_path), out=str(out))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    resumed = torch.load(out, weights_only=True)
    assert tensors_equal(resumed["model"], straight["model"])
    assert tensors_equal(resumed["ema"], straight["ema"])
    assert tensors_equal(resumed["optimizer"], straight["optimizer"])
    assert resumed["progress"] == straight["progress"]  # epoch, batch, step and every loss


def test_rerunning_the_training_cell_after_an_interrupt_continues_exactly(nb, tmp_path, monkeypatch, straight):
    config = tiny_config(nb, tmp_path, EPOCHS=3, COSINE_LR=True)
    run = tiny_run(nb, config)
    interrupt_at_update(nb, monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(nb, config, tiny_images(), run, tmp_path / "run")
    monkeypatch.undo()
    train(nb, config, tiny_images(), run, tmp_path / "run")  # the same objects, as in the same kernel
    assert tensors_equal(run.model.state_dict(), straight["model"]) and run.progress == straight["progress"]


def test_a_stop_during_the_ema_update_lands_after_the_update(nb, tmp_path, monkeypatch, straight):
    """Jupyter's stop (SIGINT) arriving inside update 2's EMA update: update 2 finishes, its checkpoint says so,
    and resuming from it repeats the uninterrupted run exactly."""
    config = tiny_config(nb, tmp_path, EPOCHS=3, COSINE_LR=True)
    real_update_ema, calls = nb.update_ema, []

    def update_ema(ema_model, model, decay):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # after the optimizer's step, before the EMA has moved
        real_update_ema(ema_model, model, decay)

    monkeypatch.setattr(nb, "update_ema", update_ema)
    with pytest.raises(KeyboardInterrupt):
        train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    monkeypatch.undo()
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["step_00000002.pt"]
    path, checkpoint = nb.find_resume_checkpoint("latest", tmp_path / "run" / "..")
    run = restore(nb, checkpoint, path, tiny_run(nb, config), config)
    train(nb, config, tiny_images(), run, tmp_path / "run")
    assert tensors_equal(run.model.state_dict(), straight["model"])
    assert tensors_equal(run.ema.state_dict(), straight["ema"]) and run.progress == straight["progress"]


def test_the_interrupt_message_says_where_and_how_to_resume(nb, tmp_path, monkeypatch, capsys):
    config = tiny_config(nb, tmp_path)
    interrupt_at_update(nb, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    out = capsys.readouterr().out
    assert f"saved {tmp_path / 'run' / 'step_00000002.pt'}" in out
    assert "rerun the training cell, or set RESUME" in out


KILLED_WHILE_SAVING = """
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from notebook import load_definitions
nb = load_definitions()
path = Path({path!r})
nb.save_checkpoint({{"format_version": nb.CHECKPOINT_FORMAT, "value": torch.ones(3)}}, path)

def stalled_save(obj, file):  # writes half a file, then hangs until killed
    file.write(b"half a checkpoint")
    file.flush()
    print("writing", flush=True)
    time.sleep(60)

torch.save = stalled_save
nb.save_checkpoint({{"format_version": nb.CHECKPOINT_FORMAT, "value": torch.zeros(3)}}, path)
"""


def test_a_process_killed_while_saving_leaves_the_previous_checkpoint(nb, tmp_path):
    path = tmp_path / "checkpoints" / "run-a" / "step_00000001.pt"
    script = KILLED_WHILE_SAVING.format(tests=str(TESTS), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert path.with_name(path.name + ".partial").exists()  # the half file is there...
    found, checkpoint = nb.find_resume_checkpoint("latest", tmp_path / "checkpoints")
    assert found == path and torch.equal(checkpoint["value"], torch.ones(3))  # ...but never taken for a checkpoint
    nb.save_checkpoint(checkpoint, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # and the next save clears it away


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_why(nb, tmp_path, monkeypatch):
    path = tmp_path / "step_00000001.pt"
    nb.save_checkpoint({"format_version": nb.CHECKPOINT_FORMAT, "value": torch.ones(3)}, path)

    def disk_full(obj, file):
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nb.torch, "save", disk_full)
    with pytest.raises(OSError) as error:
        nb.save_checkpoint({"format_version": nb.CHECKPOINT_FORMAT, "value": torch.zeros(3)}, path)
    message = str(error.value)
    assert f"could not write checkpoint {path} (No space left on device)" in message
    assert "step_00000001.pt as it was before is untouched" in message and "CHECKPOINT_DIR" in message
    monkeypatch.undo()
    assert torch.equal(nb.load_checkpoint(path)["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001.pt"]


def test_an_unwritable_checkpoint_folder_is_a_clear_error(nb, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(OSError, match="set CHECKPOINT_DIR to a writable folder"):
        nb.new_run_dir(blocker / "checkpoints")
    with pytest.raises(OSError, match="could not write checkpoint .* set CHECKPOINT_DIR to a writable folder"):
        nb.save_checkpoint({"format_version": nb.CHECKPOINT_FORMAT}, blocker / "run" / "step_00000001.pt")
    assert blocker.read_text() == "a file where the folder should be"


def test_a_non_finite_loss_leaves_the_last_good_checkpoint(nb, tmp_path, monkeypatch, capsys):
    config = tiny_config(nb, tmp_path, EPOCHS=2)
    run = tiny_run(nb, config)
    train(nb, dataclasses.replace(config, epochs=1), tiny_images(), run, tmp_path / "run")
    good = (tmp_path / "run" / "step_00000003.pt").read_bytes()
    real_losses = nb.diffusion_losses

    def nan_losses(*args):
        losses, t = real_losses(*args)
        return losses * float("nan"), t

    monkeypatch.setattr(nb, "diffusion_losses", nan_losses)
    with pytest.raises(FloatingPointError, match="the loss became nan at update 4; training stopped"):
        train(nb, config, tiny_images(), run, tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["step_00000003.pt"]
    assert (tmp_path / "run" / "step_00000003.pt").read_bytes() == good


def test_resuming_with_other_training_settings_says_so(nb, tmp_path, capsys):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    path, checkpoint = nb.find_resume_checkpoint(str(tmp_path / "run" / "step_00000003.pt"), tmp_path)
    other = dataclasses.replace(config, seed=7, learning_rate=1e-3)
    restore(nb, checkpoint, path, tiny_run(nb, other), other)
    out = capsys.readouterr().out
    assert "will not repeat the original run exactly" in out and "SEED: checkpoint 0, parameters 7" in out


def test_a_new_learning_rate_applies_after_resume(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1, WARMUP_STEPS=0)
    train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    path, checkpoint = nb.find_resume_checkpoint(str(tmp_path / "run" / "step_00000003.pt"), tmp_path)
    other = dataclasses.replace(config, epochs=2, learning_rate=1e-3)
    run = restore(nb, checkpoint, path, tiny_run(nb, other), other)
    seen = []
    real_step = run.optimizer.step
    run.optimizer.step = lambda: (seen.append(run.optimizer.param_groups[0]["lr"]), real_step())
    train(nb, other, tiny_images(), run, tmp_path / "run")
    assert seen == [1e-3] * 3  # not the checkpoint's 2e-4


def test_more_epochs_in_the_same_kernel_extend_the_cosine(nb, tmp_path):
    """Raising EPOCHS and rerunning only the training cell: the cosine stretches over the longer run instead of
    leaving the new epochs at learning rate 0."""
    config = tiny_config(nb, tmp_path, EPOCHS=1, WARMUP_STEPS=0, COSINE_LR=True)
    run = tiny_run(nb, config, updates_per_epoch=3)  # its scheduler is built for 3 updates
    train(nb, config, tiny_images(), run, tmp_path / "run")
    longer = dataclasses.replace(config, epochs=4)
    seen = []
    real_step = run.optimizer.step
    run.optimizer.step = lambda: (seen.append(run.optimizer.param_groups[0]["lr"]), real_step())
    train(nb, longer, tiny_images(), run, tmp_path / "run")
    expected = [2e-4 * 0.5 * (1 + nb.math.cos(nb.math.pi * n / 12)) for n in range(3, 12)]
    assert seen == pytest.approx(expected) and min(seen) > 0


def test_checkpoint_holds_only_tensors_and_plain_values(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1, COSINE_LR=True)
    train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    with open(tmp_path / "run" / "step_00000003.pt", "rb") as file:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)  # refuses any other object

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or type(value) in (str, int, float, bool, torch.Tensor)

    assert plain(checkpoint)


def test_a_damaged_checkpoint_is_named_in_the_error(nb, tmp_path):
    path = tmp_path / "step_00000001.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=f"checkpoint {path} cannot be read"):
        nb.load_checkpoint(path)


@pytest.mark.parametrize("version", [1, 2])
def test_a_checkpoint_of_an_earlier_format_is_a_clear_error_and_is_kept(nb, tmp_path, version):
    """Format 1 held a U-Net with 32-group GroupNorm, format 2 one with RMSNorm, a LambdaLR and RNG states."""
    path = tmp_path / "step_00000003.pt"
    nb.save_checkpoint({"format_version": version, "value": torch.ones(3)}, path)
    saved = path.read_bytes()
    with pytest.raises(RuntimeError, match=rf"earlier version of this notebook \(format {version}\).*Start a new run"):
        nb.load_checkpoint(path)
    assert path.read_bytes() == saved


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
    with pytest.raises(nb.ConfigError) as error:
        restore(nb, checkpoint, path, tiny_run(nb, other), other)
    assert "BASE_CHANNELS: checkpoint 16, parameters 32" in str(error.value)
    assert "TIMESTEPS: checkpoint 10, parameters 20" in str(error.value)


def test_a_shifted_run_s_checkpoint_samples_with_the_schedule_it_was_trained_with(nb, tmp_path):
    """load_model rebuilds the shifted schedule from the checkpoint alone: NOISE_SCHEDULE and the shift's factor."""
    config = tiny_config(nb, tmp_path, EPOCHS=1, NOISE_SCHEDULE="linear+shift")
    run = tiny_run(nb, config, shift=4.0)
    train(nb, config, tiny_images(), run, tmp_path / "run")
    _, schedule, _, _, _ = nb.load_model(tmp_path / "run" / "step_00000003.pt", torch.device("cpu"))
    assert schedule.snr_shift == 4.0 and torch.equal(schedule.alphas_cumprod, run.schedule.alphas_cumprod)
    assert not torch.equal(schedule.alphas_cumprod, nb.make_schedule("linear", 10, 1e-4, 0.02).alphas_cumprod)


def test_a_checkpoint_from_before_the_shift_loads_with_the_published_schedule(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    older = torch.load(tmp_path / "run" / "step_00000003.pt", weights_only=True)
    del older["snr_shift"]  # what a checkpoint written before the shift holds
    torch.save(older, tmp_path / "older.pt")
    _, schedule, _, _, _ = nb.load_model(tmp_path / "older.pt", torch.device("cpu"))
    assert schedule.snr_shift == 1.0
    assert torch.equal(schedule.alphas_cumprod, nb.make_schedule("linear", 10, 1e-4, 0.02).alphas_cumprod)
    restore(nb, older, tmp_path / "older.pt", tiny_run(nb, config), config)  # and resumes as what it was


def test_resuming_with_data_that_gives_another_shift_is_a_clear_error(nb, tmp_path):
    """The same NOISE_SCHEDULE = "linear+shift" on data of another resolution would train on another schedule."""
    config = tiny_config(nb, tmp_path, EPOCHS=1, NOISE_SCHEDULE="linear+shift")
    train(nb, config, tiny_images(), tiny_run(nb, config, shift=4.0), tmp_path / "run")
    path, checkpoint = nb.find_resume_checkpoint(str(tmp_path / "run" / "step_00000003.pt"), tmp_path)
    with pytest.raises(nb.ConfigError, match="its schedule's SNR divided by 4; these settings and this data give 1 "):
        restore(nb, checkpoint, path, tiny_run(nb, config, shift=1.0), config)
    restore(nb, checkpoint, path, tiny_run(nb, config, shift=4.0), config)


def test_new_runs_never_share_a_folder(nb, tmp_path):
    first, second = nb.new_run_dir(tmp_path), nb.new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_a_run_resumed_from_a_shared_folder_never_deletes_its_files_and_later_sections_still_run(nb, tmp_path,
                                                                                                monkeypatch):
    """RESUME names a checkpoint in a folder holding other runs' files too. The resumed run writes to a new folder,
    trains past KEEP_CHECKPOINTS there, and leaves the shared folder as it was; once the resumed file is gone,
    sections 7 and 9 (which copy the config) still run."""
    shared = tmp_path / "shared"
    monkeypatch.setattr(nb, "KEEP_CHECKPOINTS", 1)
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    train(nb, config, tiny_images(), tiny_run(nb, config), shared)
    resumed_file = shared / "step_00000003.pt"
    others = [shared / "step_00000099.pt", shared / "notes.txt"]  # another run's checkpoint, a user's file
    for other in others:
        other.write_bytes(b"someone else's")
    config = dataclasses.replace(config, epochs=4, resume=str(resumed_file))
    path, checkpoint = nb.find_resume_checkpoint(config.resume, config.checkpoint_dir)
    run = restore(nb, checkpoint, path, tiny_run(nb, config), config)
    run_dir = nb.new_run_dir(config.checkpoint_dir, resumed_from=path)
    train(nb, config, tiny_images(), run, run_dir)
    assert sorted(p.name for p in shared.iterdir()) == ["notes.txt", "step_00000003.pt", "step_00000099.pt"]
    assert [p.name for p in run_dir.glob("step_*.pt")] == ["step_00000012.pt"]  # pruned to 1, its own folder
    assert (run_dir / "resumed_from.txt").read_text().strip() == str(resumed_file.resolve())
    resumed_file.unlink()
    predictor = nb.NoisePredictor(run.ema, run.schedule, config.prediction)
    drawn = nb.explore_sampler(predictor, 16, torch.device("cpu"), "ddim", 3, 0.0, seed=1, count=2)
    generated = nb.generate_for_eval(predictor, 2, 16, 16, torch.device("cpu"), config.sampler, 3, batch_size=2)
    assert drawn.shape == (2, 3, 16, 16) and generated.shape == (2, 3, 16, 16)


def test_a_resume_path_that_is_not_a_file_stops_at_the_config_cell(nb, tmp_path):
    with pytest.raises(nb.ConfigError, match=r"RESUME must be None, 'latest', or the path of an existing checkpoint "
                                             r"file; got '.*missing.pt'"):
        tiny_config(nb, tmp_path, RESUME=str(tmp_path / "missing.pt"))
    tiny_config(nb, tmp_path, RESUME=None)
    tiny_config(nb, tmp_path, RESUME="latest")
    with pytest.raises(FileNotFoundError, match="is not a file"):  # and if it vanishes before the build cell
        nb.find_resume_checkpoint(str(tmp_path / "missing.pt"), tmp_path)


def test_load_model_rebuilds_the_model_from_the_checkpoint_alone(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    run = tiny_run(nb, config)
    train(nb, config, tiny_images(), run, tmp_path / "run")
    path = tmp_path / "run" / "step_00000003.pt"
    model, schedule, image_size, class_names, prediction = nb.load_model(path, torch.device("cpu"))
    assert tensors_equal(model.state_dict(), run.ema.state_dict())  # EMA weights by default
    raw, _, _, _, _ = nb.load_model(path, torch.device("cpu"), use_ema=False)
    assert tensors_equal(raw.state_dict(), run.model.state_dict())
    assert schedule.num_timesteps == 10 and image_size == 16 and class_names is None and prediction == "eps"


def test_checkpoint_loads_on_cpu_with_weights_only(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    run = tiny_run(nb, config)
    train(nb, config, tiny_images(), run, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "step_00000003.pt", map_location="cpu", weights_only=True)
    assert tensors_equal(checkpoint["model"], run.model.state_dict())
    assert tensors_equal(checkpoint["ema"], run.ema.state_dict())
    assert checkpoint["progress"] == run.progress and run.progress["step"] == 3 and len(run.progress["losses"]) == 3
    assert checkpoint["config"] == dataclasses.asdict(config)
    assert checkpoint["optimizer"]["state"][0]["step"] == 3
    assert "rng" not in checkpoint and "lr_scheduler" not in checkpoint  # each batch reseeds; the rate is computed


@pytest.mark.parametrize("ema_decay, width", [(0.9999, 38 + 8 + 38), (None, 38)])
def test_training_writes_checkpoints_and_grids_of_raw_and_ema_samples(nb, tmp_path, monkeypatch, ema_decay, width):
    monkeypatch.setattr(nb, "KEEP_CHECKPOINTS", 1)
    monkeypatch.setattr(nb, "NUM_SAMPLES", 4)
    config = tiny_config(nb, tmp_path, SAMPLE_EVERY=1, EMA_DECAY=ema_decay)
    progress = train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "checkpoints" / "run-a")
    assert progress["epoch"] == 2 and progress["step"] == 6 and len(progress["losses"]) == 6
    assert [p.name for p in (tmp_path / "checkpoints" / "run-a").iterdir()] == ["step_00000006.pt"]  # kept 1
    grids = sorted((tmp_path / "samples" / "run-a").iterdir())
    assert [p.name for p in grids] == ["epoch_0001.png", "epoch_0002.png"]
    # 2x2 images of 16 px with 2 px padding per panel: 38 px; raw and EMA panels 8 px apart
    assert PIL.Image.open(grids[0]).size == (width, 38)


def test_a_checkpoint_of_the_other_recipe_is_a_clear_error(nb, tmp_path):
    """The recipe decides what the network predicts: an eps model cannot continue as a v model."""
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    stored = nb.dataclasses.asdict(config)
    nb.check_compatible(stored, config, "old.pt")  # no error, no note
    with pytest.raises(nb.ConfigError, match="RECIPE: checkpoint 'paper', parameters 'faster'"):
        nb.check_compatible(stored, dataclasses.replace(config, recipe="faster"), "old.pt")


@pytest.mark.parametrize("settings, stop_at_batch", [
    (dict(GRAD_ACCUM_STEPS=2, MAX_BATCHES_PER_EPOCH=4), 7),  # 2 updates of 2 batches an epoch: epoch 2's second
    (dict(DROPOUT=0.1), 5),  # 3 updates of 1 batch an epoch: epoch 2's second
    (dict(RECIPE="faster"), 5)], ids=["accumulation", "dropout", "v-prediction"])
def test_resume_mid_epoch_is_exact_with_accumulation_dropout_and_v_prediction(nb, tmp_path, monkeypatch, settings,
                                                                               stop_at_batch):
    """Each of these draws more from the RNG or splits an update over batches; resumed mid-epoch from a checkpoint
    into fresh objects, the run still ends bitwise where the run that never stopped ends."""
    config = tiny_config(nb, tmp_path, EPOCHS=3, COSINE_LR=True, **settings)
    straight = tiny_run(nb, config)
    train(nb, config, tiny_images(), straight, tmp_path / "straight")
    interrupt_at_update(nb, monkeypatch, stop_at_batch)
    with pytest.raises(KeyboardInterrupt):
        train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "stopped")
    monkeypatch.undo()
    path = max((tmp_path / "stopped").glob("step_*.pt"))  # the one the stop saved
    checkpoint = nb.load_checkpoint(path)
    assert checkpoint["progress"]["epoch"] == 1 and checkpoint["progress"]["image"] > 0  # mid-epoch
    resumed = restore(nb, checkpoint, path, tiny_run(nb, config), config)
    train(nb, config, tiny_images(), resumed, tmp_path / "resumed")
    assert tensors_equal(resumed.model.state_dict(), straight.model.state_dict())
    assert tensors_equal(resumed.ema.state_dict(), straight.ema.state_dict())
    assert resumed.progress == straight.progress


def test_a_checkpoint_of_the_faster_recipe_samples_as_a_v_model(nb, tmp_path):
    """Section 7 with checkpoint_path set: load_model says what the network predicts, and the NoisePredictor built
    from it draws what the trained model draws in the notebook's own kernel."""
    config = tiny_config(nb, tmp_path, EPOCHS=1, RECIPE="faster")
    run = tiny_run(nb, config)
    train(nb, config, tiny_images(), run, tmp_path / "run")
    model, schedule, size, _, prediction = nb.load_model(tmp_path / "run" / "step_00000003.pt", torch.device("cpu"))
    assert prediction == "v" == config.prediction

    def draw(network, target):
        return nb.sample(nb.NoisePredictor(network, schedule, target), (2, 3, size, size), "cpu", schedule, "dpm++", 5,
                         generator=torch.Generator().manual_seed(0))

    assert torch.equal(draw(model, prediction), draw(run.ema, config.prediction))
    assert not torch.equal(draw(model, prediction), draw(model, "eps"))  # read as eps, the same network differs


@pytest.fixture(params=["ema", "no-ema", "class-conditional-shifted"])
def exported(nb, tmp_path, request):
    """A v-prediction run's checkpoint, its EMA weights (or raw weights, without EMA), and those weights exported by
    export_weights (section 7); one run is class-conditional, with its schedule shifted for upscaled data."""
    settings = {"ema": {}, "no-ema": dict(EMA_DECAY=None), "class-conditional-shifted": dict(CLASS_CONDITIONAL=True,
                                                                                    NOISE_SCHEDULE="linear+shift")}
    config = tiny_config(nb, tmp_path, EPOCHS=1, RECIPE="faster", **settings[request.param])
    shift = 4.0 if config.class_conditional else 1.0
    run = tiny_run(nb, config, num_classes=3 if config.class_conditional else None, shift=shift)
    labels = torch.arange(24) % 3 if config.class_conditional else None
    train(nb, config, tiny_images(), run, tmp_path / "run", labels=labels, class_names=["a", "b", "c"])
    checkpoint = tmp_path / "run" / "step_00000003.pt"
    weights = (run.ema if run.ema is not None else run.model).state_dict()
    return config, checkpoint, weights, nb.export_weights(checkpoint, tmp_path / "shared" / "weights_float16.pt")


def test_exported_weights_are_those_sampled_from_in_float16_at_2_bytes_a_parameter(nb, exported):
    _, checkpoint, weights, path = exported
    stored = torch.load(path, map_location="cpu", weights_only=True)["model"]
    assert tensors_equal(stored, {name: w.half() for name, w in weights.items()})
    parameters = sum(w.numel() for w in weights.values())
    assert 2 * parameters < path.stat().st_size < 2 * parameters + 64 * 1024  # the settings, each tensor's header
    assert checkpoint.stat().st_size > 12 * parameters


def test_exported_weights_load_as_the_checkpoint_does(nb, exported):
    """Section 7's checkpoint_path reads the exported file like a checkpoint: the same schedule (shifted too), size,
    classes and prediction, and the float16 weights back in float32."""
    config, checkpoint, weights, path = exported
    model, schedule, size, class_names, prediction = nb.load_model(path, torch.device("cpu"))
    _, full_schedule, full_size, full_class_names, full_prediction = nb.load_model(checkpoint, torch.device("cpu"))
    assert (size, class_names, prediction) == (full_size, full_class_names, full_prediction)
    assert schedule.snr_shift == full_schedule.snr_shift and torch.equal(schedule.betas, full_schedule.betas)
    assert tensors_equal(model.state_dict(), {name: w.half().float() for name, w in weights.items()})
    assert (class_names is not None) == config.class_conditional


def test_exported_weights_cannot_resume_training_and_say_so(nb, exported):
    config, _, _, path = exported
    run = tiny_run(nb, config, num_classes=3 if config.class_conditional else None)
    with pytest.raises(nb.ConfigError, match="exported weights only .* cannot resume training"):
        nb.restore_checkpoint(nb.load_checkpoint(path), path, run.state, config, run.schedule, ["a", "b", "c"])
