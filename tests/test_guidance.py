"""Class conditioning with classifier-free guidance (Ho and Salimans, 2021)."""

import dataclasses

import pytest
import torch

from tiny import tiny_config, tiny_images, tiny_run, train


@pytest.fixture
def conditional(nb):
    torch.manual_seed(0)
    model = nb.UNet(base_channels=16, channel_mults=(1, 2), num_classes=3).eval()
    torch.nn.init.normal_(model.output[-1].weight, std=0.1)  # a model that predicts something
    return model


def test_conditional_unet_predicts_noise_of_the_image_shape(conditional):
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 6, 9])
    with torch.no_grad():
        assert conditional(x, t, torch.tensor([0, 1, 2, 3])).shape == (4, 3, 16, 16)


def test_no_label_means_the_no_class_token(conditional):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 5])
    with torch.no_grad():
        torch.testing.assert_close(conditional(x, t), conditional(x, t, torch.tensor([3, 3])))
        assert not torch.allclose(conditional(x, t, torch.tensor([0, 0])), conditional(x, t, torch.tensor([1, 1])))


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_guidance_mixes_conditional_and_unconditional_predictions(nb, conditional, w):
    x, t, labels = torch.randn(2, 3, 16, 16), torch.tensor([2, 7]), torch.tensor([0, 2])
    with torch.no_grad():
        guided = nb.NoisePredictor(conditional, nb.linear_schedule(10, 1e-4, 0.02), "eps", labels, w)(x, t)
        eps_cond, eps_uncond = conditional(x, t, labels), conditional(x, t, torch.tensor([3, 3]))
    torch.testing.assert_close(guided, eps_uncond + w * (eps_cond - eps_uncond), rtol=1e-4, atol=1e-5)
    if w == 0:
        torch.testing.assert_close(guided, eps_uncond, rtol=1e-4, atol=1e-5)  # w = 0: the unconditional model


def test_guidance_takes_one_forward_pass_per_step(nb, conditional, monkeypatch):
    calls = []
    forward = conditional.forward
    monkeypatch.setattr(conditional, "forward", lambda *args: calls.append(args[0].shape[0]) or forward(*args))
    schedule = nb.linear_schedule(20, 1e-4, 0.02)
    nb.sample(nb.NoisePredictor(conditional, schedule, "eps", torch.tensor([0, 1]), 2.0), (2, 3, 16, 16), "cpu",
              schedule, "ddim", steps=4)
    assert calls == [4, 4, 4, 4]  # conditional and unconditional halves of one doubled batch


def test_label_dropout_hides_the_class_as_often_as_asked(nb):
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (200_000,))
    dropped = nb.drop_labels(labels, 0.1, null_label=10)
    assert (dropped == 10).float().mean().item() == pytest.approx(0.1, abs=0.003)
    kept = dropped != 10
    assert torch.equal(dropped[kept], labels[kept])


def class_samples(nb, predictor, class_index, image_size, sampler, steps, seed=0, count=2, guidance_scale=3.0):
    """Images of one class as the explorer and the class grid draw them."""
    return nb.explore_sampler(predictor, image_size, "cpu", sampler, steps, 0.0, seed, count, class_index=class_index,
                              guidance_scale=guidance_scale)


def test_class_samples_are_repeatable_and_depend_on_the_class(nb, conditional):
    predictor = nb.NoisePredictor(conditional, nb.linear_schedule(10, 1e-4, 0.02))
    first = class_samples(nb, predictor, 1, 16, "dpm++", 5, seed=4)
    assert first.shape == (2, 3, 16, 16) and first.abs().max() <= 1
    assert torch.equal(first, class_samples(nb, predictor, 1, 16, "dpm++", 5, seed=4))
    assert not torch.equal(first, class_samples(nb, predictor, 2, 16, "dpm++", 5, seed=4))


def test_class_samples_follow_the_predictors_schedule(nb, conditional):
    seen = []
    forward = conditional.forward
    conditional.forward = lambda x, t, labels=None: seen.append(t[0].item()) or forward(x, t, labels)
    images = class_samples(nb, nb.NoisePredictor(conditional, nb.linear_schedule(4, 1e-4, 0.02)), 1, 8, "ddpm", 4)
    assert images.shape == (2, 3, 8, 8) and seen == [3, 2, 1, 0]  # the model's own T = 4, every index


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("training", [True, False])
def test_guided_sampling_leaves_the_model_in_the_mode_it_had(nb, conditional, sampler, training):
    conditional.train(training)
    modes = []
    forward = conditional.forward
    conditional.forward = lambda *args: modes.append(conditional.training) or forward(*args)
    class_samples(nb, nb.NoisePredictor(conditional, nb.linear_schedule(10, 1e-4, 0.02)), 1, 16, sampler, 5)
    assert modes and not any(modes)  # dropout off while sampling
    assert all(module.training == training for module in conditional.modules())


def conditional_checkpoint(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1, CLASS_CONDITIONAL=True)
    labels = torch.arange(24) % 3
    train(nb, config, tiny_images(), tiny_run(nb, config, num_classes=3), tmp_path / "run", labels=labels,
          class_names=["a", "b", "c"])
    return config, *nb.find_resume_checkpoint(str(tmp_path / "run" / "step_00000003.pt"), tmp_path)


def test_checkpoint_records_the_classes_and_reloads_as_conditional(nb, tmp_path):
    config, path, checkpoint = conditional_checkpoint(nb, tmp_path)
    assert checkpoint["class_names"] == ["a", "b", "c"] and checkpoint["config"]["class_conditional"]
    model, _, _, class_names, _ = nb.load_model(path, torch.device("cpu"))
    assert model.num_classes == 3 and class_names == ["a", "b", "c"]


def test_a_conditional_checkpoint_in_an_unconditional_config_is_a_clear_error(nb, tmp_path):
    config, path, checkpoint = conditional_checkpoint(nb, tmp_path)
    unconditional = dataclasses.replace(config, class_conditional=False)
    run = tiny_run(nb, unconditional)
    with pytest.raises(nb.ConfigError, match="CLASS_CONDITIONAL: checkpoint True, parameters False"):
        nb.restore_checkpoint(checkpoint, path, run.state, unconditional, run.schedule)


def test_an_unconditional_checkpoint_in_a_conditional_config_is_a_clear_error(nb, tmp_path):
    config = tiny_config(nb, tmp_path, EPOCHS=1)
    train(nb, config, tiny_images(), tiny_run(nb, config), tmp_path / "run")
    path, checkpoint = nb.find_resume_checkpoint(str(tmp_path / "run" / "step_00000003.pt"), tmp_path)
    conditional_config = dataclasses.replace(config, class_conditional=True)
    run = tiny_run(nb, conditional_config, num_classes=3)
    with pytest.raises(nb.ConfigError, match="CLASS_CONDITIONAL: checkpoint False, parameters True"):
        nb.restore_checkpoint(checkpoint, path, run.state, conditional_config, run.schedule, ["a", "b", "c"])


def test_other_class_names_are_a_clear_error(nb, tmp_path):
    config, path, checkpoint = conditional_checkpoint(nb, tmp_path)
    run = tiny_run(nb, config, num_classes=3)
    with pytest.raises(nb.ConfigError, match=r"trained on the classes \['a', 'b', 'c'\], but DATASET has"):
        nb.restore_checkpoint(checkpoint, path, run.state, config, run.schedule, ["cat", "dog", "frog"])


@pytest.fixture(scope="module")
def airplanes_and_frogs(nb, tmp_path_factory, real_images):
    """A class-conditional model trained for 124 updates on the real airplanes and frogs (1,000 images,
    32x32): about 40 s on 2 cores."""
    folder = tmp_path_factory.mktemp("two_classes")
    all_images, all_labels, all_names = real_images
    chosen = [all_names.index("airplane"), all_names.index("frog")]
    keep = (all_labels == chosen[0]) | (all_labels == chosen[1])
    images, labels, class_names = all_images[keep], (all_labels[keep] == chosen[1]).long(), ["airplane", "frog"]
    config = tiny_config(nb, folder, IMAGE_SIZE=32, CHANNEL_MULTS=(1, 2, 2), TIMESTEPS=1000, BATCH_SIZE=32, EPOCHS=4,
                         MAX_BATCHES_PER_EPOCH=31, WARMUP_STEPS=20, SAMPLING_STEPS=20, CLASS_CONDITIONAL=True,
                         RECIPE="faster")  # 1e-3, v-prediction with min-SNR, the output layer at zero
    run = tiny_run(nb, config, updates_per_epoch=31, num_classes=2)
    train(nb, config, images, run, folder / "run", labels=labels, class_names=class_names)
    return run, config, images, labels, class_names


def blue_minus_green(images):
    """Per image, the mean of blue minus green: skies make airplanes bluer, foliage makes frogs greener."""
    return (images[:, 2] - images[:, 1]).mean(dim=(1, 2))


def test_guided_samples_of_two_classes_can_be_told_apart(nb, airplanes_and_frogs):
    # Measured on a 2-core CPU: the statistic sorts 82% of the real images correctly (threshold halfway between
    # the class means). 32 EMA samples per class, 20 DPM-Solver++ steps: 50% at w = 0 (no class information),
    # 75% at w = 1, 83% at w = 3 (the U-Net with RMSNorm; 70% and 95% with GroupNorm). The bar is 75% at w = 3.
    run, config, images, labels, class_names = airplanes_and_frogs
    assert class_names == ["airplane", "frog"]
    real = blue_minus_green(images.float() / 127.5 - 1)
    threshold = (real[labels == 0].mean() + real[labels == 1].mean()) / 2
    correct = 0
    for class_index in (0, 1):
        samples = class_samples(nb, nb.NoisePredictor(run.ema, run.schedule, "v"), class_index, config.image_size,
                                "dpm++", 20, seed=0, count=32)
        looks_like_airplane = blue_minus_green(samples) > threshold
        correct += (looks_like_airplane == (class_index == 0)).sum().item()
    assert correct / 64 >= 0.75
