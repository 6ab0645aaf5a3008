"""Stop mid-epoch, change a setting, resume: each change a resume accepts means what it says, and one that cannot is
refused before training, naming the setting.

What a user relies on, checked for every change: each image of the interrupted epoch is trained on once (the
images trained on are a prefix of the epoch's order: none repeated, none skipped but a tail too short for one more
update), every update takes BATCH_SIZE * GRAD_ACCUM_STEPS images, the update count is the updates done plus those
the new settings leave, each update's learning rate is get_lr's under the new settings, and tqdm's total is where
the run ends."""

import dataclasses
import types

import pytest
import torch
from simulated_mps import simulated_mps

from tiny import tiny_config, tiny_images, tiny_run

IMAGES = 24
CPU = torch.device("cpu")


class Recorder:
    """Wraps the notebook's train_update, training_batch and LivePanel: each update's (epoch, first image, learning
    rate, images), and each train call's bar total. Raises KeyboardInterrupt as update `stop_at` (0-based) begins,
    as Jupyter's stop button does between updates."""

    def __init__(self, nb, monkeypatch, stop_at=None):
        self.updates, self.totals, self.stop_at = [], [], stop_at
        real_update, real_batch, real_panel = nb.train_update, nb.training_batch, nb.LivePanel

        def train_update(state, images, order, flips, schedule, config, device, progress, labels=None):
            if progress["step"] == self.stop_at:
                raise KeyboardInterrupt
            self.updates.append(types.SimpleNamespace(epoch=progress["epoch"], image=progress["image"], indices=[],
                                                      lr=state.optimizer.param_groups[0]["lr"]))
            return real_update(state, images, order, flips, schedule, config, device, progress, labels)

        def training_batch(images, order, flips, start, batch_size, image_size, device):
            x_0, indices = real_batch(images, order, flips, start, batch_size, image_size, device)
            self.updates[-1].indices += indices.tolist()
            return x_0, indices

        class Panel(real_panel):
            def __init__(panel, total_updates, progress, live=True):
                self.totals.append(total_updates)
                super().__init__(total_updates, progress, live)

        monkeypatch.setattr(nb, "train_update", train_update)
        monkeypatch.setattr(nb, "training_batch", training_batch)
        monkeypatch.setattr(nb, "LivePanel", Panel)

    def resume(self):
        """Stop no more, and start recording afresh; returns the updates so far."""
        before, self.updates, self.totals, self.stop_at = self.updates, [], [], None
        return before


def base_config(nb, tmp_path, **overrides):
    """6 updates of 4 images an epoch, 2 epochs, warmup and cosine: every learning-rate rule in play."""
    settings = dict(EPOCHS=2, BATCH_SIZE=4, MAX_BATCHES_PER_EPOCH=None, WARMUP_STEPS=2, COSINE_LR=True)
    return tiny_config(nb, tmp_path, **{**settings, **overrides})


def train_on(nb, config, run, run_dir, device=CPU):
    return nb.train(run.state, nb.place_dataset(tiny_images(IMAGES), device), run.schedule, config, device,
                    run.progress, run_dir, live=False)


def stop_and_resume(nb, tmp_path, monkeypatch, before, after, stop_at=3, device=CPU):
    """Train with `before` (tiny settings plus these) until update `stop_at` begins, then resume its checkpoint in
    fresh objects with `after` on `device`. Returns (the checkpoint's progress, the resumed config, the resumed run,
    the updates before the stop, the recorder, holding the resumed run's updates)."""
    config = base_config(nb, tmp_path, **before)
    recorder = Recorder(nb, monkeypatch, stop_at)
    with pytest.raises(KeyboardInterrupt):
        train_on(nb, config, tiny_run(nb, config), tmp_path / "stopped")
    path = max((tmp_path / "stopped").glob("step_*.pt"))
    checkpoint = nb.load_checkpoint(path)
    saved = dict(checkpoint["progress"])
    assert saved["epoch"] == 0 and 0 < saved["image"] and saved["step"] == stop_at  # mid-epoch
    resumed_config = dataclasses.replace(config, **after)
    run = tiny_run(nb, resumed_config)
    run.model.to(device)
    run.ema.to(device)
    run.progress = nb.restore_checkpoint(checkpoint, path, run.state, resumed_config, run.schedule)
    before_updates = recorder.resume()
    train_on(nb, resumed_config, run, tmp_path / "resumed", device)
    return saved, resumed_config, run, before_updates, recorder


def assert_means_what_it_says(nb, saved, config, run, before_updates, resumed):
    """The checks of the module's docstring, for a run resumed from `saved` with `config`."""
    per_update = config.batch_size * config.grad_accum_steps
    limit = nb.epoch_images(IMAGES, config.batch_size, config.grad_accum_steps, config.max_batches_per_epoch)
    updates = before_updates + resumed.updates
    for epoch in range(config.epochs):
        trained = [index for update in updates if update.epoch == epoch for index in update.indices]
        order = nb.epoch_order(IMAGES, config.seed, epoch)[0].tolist()
        assert trained == order[: len(trained)], f"epoch {epoch}: not the epoch's order, once each"
        assert limit - len(trained) < per_update, f"epoch {epoch}: {limit - len(trained)} images skipped"
    assert all(len(update.indices) == per_update for update in resumed.updates)
    expected_total = saved["step"] + nb.updates_to_go(saved, IMAGES, config)
    assert run.progress["step"] == expected_total == len(updates) and run.progress["epoch"] == config.epochs
    assert resumed.totals == [expected_total]  # tqdm's bar ends at 100%
    expected_lrs = [nb.get_lr(n, config.learning_rate, config.warmup_steps, expected_total, config.cosine_lr)
                    for n in range(saved["step"], expected_total)]
    assert [update.lr for update in resumed.updates] == pytest.approx(expected_lrs)
    assert len(run.progress["losses"]) == run.progress["step"]


# ---------------------------------------------------------------- the README's Mac advice, mid-run


def test_a_resume_with_half_the_batch_size_and_twice_the_accumulation_continues_the_same_run(nb, tmp_path,
                                                                                          monkeypatch):
    """README, "Memory on a Mac": BATCH_SIZE halved and GRAD_ACCUM_STEPS = 2 mid-epoch. Each update still averages
    4 images, the next ones of the epoch, so the run keeps its length and its learning rates."""
    saved, config, run, before, resumed = stop_and_resume(nb, tmp_path, monkeypatch, {},
                                                          dict(batch_size=2, grad_accum_steps=2))
    assert_means_what_it_says(nb, saved, config, run, before, resumed)
    assert resumed.totals == [12] and resumed.updates[0].image == saved["image"] == 12


# ---------------------------------------------------------------- the data an update takes


@pytest.mark.parametrize("before, after", [(4, 2), (2, 4), (4, 3), (2, 5)])
def test_a_resume_with_another_batch_size_goes_on_from_the_same_image(nb, tmp_path, monkeypatch, before, after):
    """Stopped after 3 updates of `before` images: the resumed epoch starts at image 3 * before, whatever the new
    BATCH_SIZE, where counting batches would have repeated or skipped images."""
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, dict(BATCH_SIZE=before),
                                                           dict(batch_size=after))
    assert resumed.updates[0].image == saved["image"] == 3 * before
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)


@pytest.mark.parametrize("before, after", [(1, 2), (2, 1), (1, 3), (3, 2)])
def test_a_resume_with_other_accumulation_keeps_the_total_and_the_cosine_right(nb, tmp_path, monkeypatch, before,
                                                                              after):
    """Stopped with GRAD_ACCUM_STEPS = `before`, resumed with `after` (BATCH_SIZE 2): the total is the updates done
    plus the updates of `after` left, so the bar ends at 100% and the cosine reaches 0 at the run's last update,
    not before it."""
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch,
                                                           dict(BATCH_SIZE=2, GRAD_ACCUM_STEPS=before),
                                                           dict(grad_accum_steps=after), stop_at=2)
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)
    assert resumed.updates[-1].lr > 0  # the cosine is 0 only after the last update


@pytest.mark.parametrize("cap", [2, 5])
def test_a_resume_with_another_batch_cap_ends_the_epoch_at_the_new_cap(nb, tmp_path, monkeypatch, cap):
    """MAX_BATCHES_PER_EPOCH set on resume: the epoch ends at cap batches' worth of images, at once if it already
    stands past them (cap 2: 8 images, and 12 are done)."""
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, {},
                                                           dict(max_batches_per_epoch=cap))
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)
    first_epoch = [update for update in resumed.updates if update.epoch == 0]
    assert len(first_epoch) == max(0, cap - 3)


def test_more_epochs_on_resume_lengthen_the_run_and_its_cosine(nb, tmp_path, monkeypatch):
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, {}, dict(epochs=3))
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)
    assert resumed.totals == [18]


@pytest.mark.parametrize("change", [dict(learning_rate=1e-3), dict(warmup_steps=6), dict(cosine_lr=False),
                                    dict(warmup_steps=0, cosine_lr=False)], ids=str)
def test_a_resume_with_another_learning_rate_rule_follows_it_from_the_update_it_stands_at(nb, tmp_path, monkeypatch,
                                                                                         change):
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, {}, change)
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)


# ---------------------------------------------------------------- settings that change no count


@pytest.mark.parametrize("change", [dict(dropout=0.1), dict(ema_decay=0.99), dict(mixed_precision="bf16")], ids=str)
def test_a_resume_with_other_regularisation_or_precision_trains_the_same_images(nb, tmp_path, monkeypatch, change):
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, {}, change)
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_a_resume_that_turns_the_ema_on_starts_it_from_the_weights(nb, tmp_path, monkeypatch):
    config = base_config(nb, tmp_path, EMA_DECAY=None)
    recorder = Recorder(nb, monkeypatch, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        train_on(nb, config, tiny_run(nb, config), tmp_path / "stopped")
    path = max((tmp_path / "stopped").glob("step_*.pt"))
    checkpoint = nb.load_checkpoint(path)
    with_ema = dataclasses.replace(config, ema_decay=0.9999)
    run = tiny_run(nb, with_ema)
    run.progress = nb.restore_checkpoint(checkpoint, path, run.state, with_ema, run.schedule)
    for name, weight in run.ema.state_dict().items():
        assert torch.equal(weight, checkpoint["model"][name])
    before = recorder.resume()
    train_on(nb, with_ema, run, tmp_path / "resumed")
    assert_means_what_it_says(nb, checkpoint["progress"], with_ema, run, before, recorder)


def test_a_resume_with_torch_compile_on_trains_the_same_images_through_the_compiled_model(nb, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(nb.torch, "compile", lambda model, mode=None: compiled.append(mode) or model)
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, dict(USE_COMPILE=False),
                                                           dict(use_compile=True))
    assert compiled == ["default"]  # on the CPU: no CUDA graphs
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)


def test_a_resume_on_another_device_trains_the_same_images(nb, tmp_path, monkeypatch):
    """Stopped on the CPU, resumed on a (simulated) Mac."""
    with simulated_mps():
        saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, {}, dict(device="mps"),
                                                               device=torch.device("mps"))
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)


def test_a_resume_with_other_sampling_settings_draws_its_grids_with_them(nb, tmp_path, monkeypatch):
    drawn = []

    def save_sample_grid(model, ema_model, schedule, config, device, path):
        drawn.append((config.sampler, config.sampling_steps, path.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a grid")

    monkeypatch.setattr(nb, "save_sample_grid", save_sample_grid)
    change = dict(sampler="ddim", sampling_steps=3, sample_every=1, guidance_scale=2.0)
    saved, config, run, updates, resumed = stop_and_resume(nb, tmp_path, monkeypatch, {}, change)
    assert drawn == [("ddim", 3, "epoch_0001.png"), ("ddim", 3, "epoch_0002.png")]
    assert_means_what_it_says(nb, saved, config, run, updates, resumed)


def test_settings_that_only_name_folders_or_the_evaluation_are_not_compared(nb, tmp_path, capsys):
    config = base_config(nb, tmp_path)
    moved = dataclasses.replace(config, checkpoint_dir=str(tmp_path / "elsewhere"), sample_dir=str(tmp_path / "s"),
                                data_dir=str(tmp_path / "d"), eval_images=0, resume="latest")
    nb.check_compatible(dataclasses.asdict(config), moved, "old.pt", mid_epoch=True)
    assert capsys.readouterr().out == ""  # no note: the run goes on as if it had never stopped


# ---------------------------------------------------------------- refused


@pytest.mark.parametrize("name, value", [("seed", 1), ("dataset", "an image folder")])
def test_a_mid_epoch_resume_with_another_epoch_order_is_refused_naming_the_setting(nb, tmp_path, monkeypatch, name,
                                                                                   value):
    """SEED and DATASET fix the order of an epoch's images: changed mid-epoch, images would repeat or be skipped."""
    config = base_config(nb, tmp_path)
    Recorder(nb, monkeypatch, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        train_on(nb, config, tiny_run(nb, config), tmp_path / "stopped")
    path = max((tmp_path / "stopped").glob("step_*.pt"))
    changed = dataclasses.replace(config, **{name: str(tmp_path) if name == "dataset" else value})
    run = tiny_run(nb, changed)
    refusal = rf"(?s)stopped mid-epoch.*\n  {name.upper()}: checkpoint .*an epoch.s end"
    with pytest.raises(nb.ConfigError, match=refusal):
        nb.restore_checkpoint(nb.load_checkpoint(path), path, run.state, changed, run.schedule)


def test_a_new_seed_at_an_epoch_s_end_is_accepted_and_orders_the_next_epoch(nb, tmp_path, monkeypatch):
    config = base_config(nb, tmp_path, EPOCHS=1)
    train_on(nb, config, tiny_run(nb, config), tmp_path / "first")
    path = max((tmp_path / "first").glob("step_*.pt"))
    reseeded = dataclasses.replace(config, seed=5, epochs=2)
    run = tiny_run(nb, reseeded)
    run.progress = nb.restore_checkpoint(nb.load_checkpoint(path), path, run.state, reseeded, run.schedule)
    resumed = Recorder(nb, monkeypatch)
    train_on(nb, reseeded, run, tmp_path / "resumed")
    assert [i for update in resumed.updates for i in update.indices] == nb.epoch_order(IMAGES, 5, 1)[0].tolist()


def test_a_format_3_checkpoint_resumes_at_the_image_its_batch_count_meant(nb, tmp_path, monkeypatch):
    """Format 3 counted the epoch's batches; resumed with another BATCH_SIZE it still goes on from the same image."""
    config = base_config(nb, tmp_path)
    recorder = Recorder(nb, monkeypatch, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        train_on(nb, config, tiny_run(nb, config), tmp_path / "stopped")
    path = max((tmp_path / "stopped").glob("step_*.pt"))
    old = torch.load(path, weights_only=True)
    old["format_version"], old["progress"]["batch"] = 3, old["progress"].pop("image") // config.batch_size
    nb.save_checkpoint(old, tmp_path / "old" / "step_00000003.pt")
    checkpoint = nb.load_checkpoint(tmp_path / "old" / "step_00000003.pt")
    assert checkpoint["progress"]["image"] == 12 and "batch" not in checkpoint["progress"]
    halved = dataclasses.replace(config, batch_size=2)
    run = tiny_run(nb, halved)
    run.progress = nb.restore_checkpoint(checkpoint, path, run.state, halved, run.schedule)
    recorder.resume()
    train_on(nb, halved, run, tmp_path / "resumed")
    assert recorder.updates[0].indices == nb.epoch_order(IMAGES, config.seed, 0)[0][12:14].tolist()
