"""The cell after `parameters`: every bad value stops there with an error that names the parameter."""

import ast

import pytest

from notebook import cells, source


@pytest.fixture
def defaults():
    """The parameters cell's own values, by name."""
    return {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(source(cells("parameters")[0])).body}


def test_defaults_are_valid(nb, defaults):
    config = nb.Config.from_parameters(defaults)
    assert (config.image_size, config.batch_size, config.timesteps, config.learning_rate) == (64, 64, 1000, 2e-4)


def test_config_is_frozen(nb, defaults):
    config = nb.Config.from_parameters(defaults)
    with pytest.raises(nb.dataclasses.FrozenInstanceError):
        config.batch_size = 1


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("IMAGE_SIZE", 60, "multiple of 8"),
        ("IMAGE_SIZE", 0, "multiple of 8"),
        ("TIMESTEPS", 0, ">= 1"),
        ("BETA_START", 0.0, "between 0 and 1"),
        ("BETA_END", 1.5, "between 0 and 1"),
        ("BETA_START", 0.05, "<= BETA_END"),
        ("BATCH_SIZE", 0, "positive integer"),
        ("BATCH_SIZE", 6.5, "positive integer"),
        ("LEARNING_RATE", -1e-4, "between 0 and 1"),
        ("LEARNING_RATE", "2e-4", "between 0 and 1"),
        ("DATASET", "imagenet", "'cifar10' or the path of an existing image folder"),
        ("DATASET", "/no/such/folder", "'cifar10' or the path of an existing image folder"),
        ("DEVICE", "gpu", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
        ("BASE_CHANNELS", 20, "multiple of 8"),
        ("CHANNEL_MULTS", (), "non-empty tuple"),
        ("EPOCHS", -1, ">= 0"),
        ("GRAD_ACCUM_STEPS", 0, "positive integer"),
        ("MAX_BATCHES_PER_EPOCH", 0, "None or a positive integer"),
        ("COSINE_LR", "yes", "True or False"),
        ("USE_COMPILE", "yes", "'auto', True or False"),
        ("USE_COMPILE", 1, "'auto', True or False"),
        ("MIXED_PRECISION", "fp16", "None (float32) or 'bf16'"),
        ("NOISE_SCHEDULE", "sigmoid", "'linear' or 'cosine', as published, or 'linear+shift' or 'cosine+shift'"),
        ("EMA_DECAY", 1.0, "None or a number between 0 and 1"),
        ("SAMPLER", "euler", "'ddpm', 'ddim' or 'dpm++'"),
        ("SAMPLING_STEPS", 2000, "an integer from 1 to TIMESTEPS (1000)"),
        ("SAMPLING_ETA", 1.5, "a number from 0 (deterministic) to 1"),
        ("RESUME", "", "None, 'latest', or the path of an existing checkpoint file"),
        ("RECIPE", "fast", "'paper' or 'faster'"),
        ("GUIDANCE_SCALE", -1, "a number >= 0"),
        ("WARMUP_STEPS", -1, "an integer >= 0"),
        ("SEED", 1.5, "an integer >= 0"),
        ("DROPOUT", 1.0, "a number in [0, 1)"),
        ("CLASS_CONDITIONAL", 1, "True or False"),
        ("DATA_DIR", "", "a folder path"),
        ("CHECKPOINT_DIR", "", "a folder path"),
        ("SAMPLE_DIR", None, "a folder path"),
        ("SAMPLE_EVERY", 0, "a positive integer"),
        ("RESUME", 3, "None, 'latest', or the path of an existing checkpoint file"),
        ("EVAL_IMAGES", 3, "0 (no FID or KID) or an integer >= 4 (KID compares random halves)"),
        ("EVAL_IMAGES", -5, "0 (no FID or KID) or an integer >= 4"),
    ],
)
def test_bad_value_names_the_parameter(nb, defaults, name, value, message):
    with pytest.raises(nb.ConfigError) as error:
        nb.Config.from_parameters(dict(defaults, **{name: value}))
    assert str(error.value).startswith(f"{name} must be")
    assert message in str(error.value)
    assert repr(value) in str(error.value)


def test_image_size_must_suit_the_unet_depth(nb, defaults):
    nb.Config.from_parameters(dict(defaults, IMAGE_SIZE=36, CHANNEL_MULTS=(1, 2, 2)))  # 36 = 4 x 9
    with pytest.raises(nb.ConfigError, match="IMAGE_SIZE must be a positive multiple of 4"):
        nb.Config.from_parameters(dict(defaults, IMAGE_SIZE=34, CHANNEL_MULTS=(1, 2, 2)))


def test_fewer_batches_than_one_update_is_rejected(nb, defaults):
    with pytest.raises(nb.ConfigError, match="MAX_BATCHES_PER_EPOCH must be at least GRAD_ACCUM_STEPS"):
        nb.Config.from_parameters(dict(defaults, GRAD_ACCUM_STEPS=4, MAX_BATCHES_PER_EPOCH=2))


def test_papermill_lists_become_tuples(nb, defaults):
    assert nb.Config.from_parameters(dict(defaults, CHANNEL_MULTS=[1, 2])).channel_mults == (1, 2)


def test_missing_parameter_is_named(nb, defaults):
    del defaults["SEED"]
    with pytest.raises(nb.ConfigError, match="missing parameters: SEED"):
        nb.Config.from_parameters(defaults)


def test_an_unavailable_device_is_refused(nb):
    if nb.torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="DEVICE='cuda' but this machine has no CUDA GPU"):
        nb.pick_device("cuda")


def test_auto_device_falls_back_to_cpu(nb):
    expected = "cuda" if nb.torch.cuda.is_available() else "mps" if nb.torch.backends.mps.is_available() else "cpu"
    assert nb.pick_device("auto").type == expected


def test_bf16_is_refused_on_mps_only(nb, defaults, monkeypatch):
    monkeypatch.setattr(nb.torch.backends.mps, "is_available", lambda: True)
    with pytest.raises(nb.ConfigError, match="MIXED_PRECISION must be None on MPS"):
        nb.Config.from_parameters(dict(defaults, DEVICE="mps", MIXED_PRECISION="bf16"))
    nb.Config.from_parameters(dict(defaults, DEVICE="cpu", MIXED_PRECISION="bf16"))
    nb.Config.from_parameters(dict(defaults, DEVICE="mps", MIXED_PRECISION=None))


def test_compile_is_refused_on_mps_only(nb, defaults, monkeypatch):
    monkeypatch.setattr(nb.torch.backends.mps, "is_available", lambda: True)
    with pytest.raises(nb.ConfigError, match="USE_COMPILE must be 'auto' or False on MPS"):
        nb.Config.from_parameters(dict(defaults, DEVICE="mps", USE_COMPILE=True))
    nb.Config.from_parameters(dict(defaults, DEVICE="cpu", USE_COMPILE=True))
    nb.Config.from_parameters(dict(defaults, DEVICE="mps", USE_COMPILE=False))
    nb.Config.from_parameters(dict(defaults, DEVICE="mps", USE_COMPILE="auto"))  # the default: eager on a Mac


def test_the_recipe_switches_target_weighting_rate_and_last_layer_at_once(nb, defaults):
    paper = nb.Config.from_parameters(defaults)
    faster = nb.Config.from_parameters(dict(defaults, RECIPE="faster"))
    assert (paper.prediction, paper.min_snr_gamma, paper.learning_rate, paper.output_init) == ("eps", None, 2e-4,
                                                                                                "torch")
    assert (faster.prediction, faster.min_snr_gamma, faster.learning_rate, faster.output_init) == ("v", 5.0, 1e-3,
                                                                                                   "zero")
    assert nb.Config.from_parameters(dict(defaults, RECIPE="faster", LEARNING_RATE=3e-4)).learning_rate == 3e-4


def test_the_dataset_takes_at_most_a_quarter_of_a_devices_memory(nb, monkeypatch):
    gib = 2**30
    monkeypatch.setattr(nb.torch.mps, "recommended_max_memory", lambda: 5.3 * gib, raising=False)
    assert nb.dataset_budget(nb.torch.device("mps")) == pytest.approx(5.3 * gib / 4)  # an 8 GB Mac
    monkeypatch.setattr(nb.torch.mps, "recommended_max_memory", lambda: 96 * gib, raising=False)
    assert nb.dataset_budget(nb.torch.device("mps")) == 4 * gib
    monkeypatch.setattr(nb.torch.cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": 8 * gib}))
    assert nb.dataset_budget(nb.torch.device("cuda")) == 2 * gib


def test_a_dataset_over_the_budget_stays_where_it_is(nb):
    images = nb.torch.zeros(10, 3, 4, 4, dtype=nb.torch.uint8)
    assert nb.place_dataset(images, nb.torch.device("cpu"), max_bytes=100) is images


def test_a_dataset_too_big_for_the_gpu_stays_on_the_host_unpinned(nb, monkeypatch):
    """Pinning it sped no copy (BENCHMARKS.md, H200): images[indices] gathers into a new, unpinned tensor."""
    images = nb.torch.zeros(10, 3, 4, 4, dtype=nb.torch.uint8)
    monkeypatch.setattr(nb.torch.Tensor, "pin_memory", lambda self: pytest.fail("the dataset was pinned"))
    assert nb.place_dataset(images, nb.torch.device("cuda"), max_bytes=100) is images


def test_tf32_is_turned_on_for_cuda_only(nb, monkeypatch):
    precision = nb.torch.get_float32_matmul_precision()
    monkeypatch.setattr(nb.torch.backends.cudnn, "allow_tf32", False)
    try:
        nb.torch.set_float32_matmul_precision("highest")
        nb.use_tf32(nb.torch.device("cpu"))
        assert nb.torch.get_float32_matmul_precision() == "highest" and not nb.torch.backends.cudnn.allow_tf32
        nb.use_tf32(nb.torch.device("cuda"))
        assert nb.torch.get_float32_matmul_precision() == "high" and nb.torch.backends.cudnn.allow_tf32
    finally:
        nb.torch.set_float32_matmul_precision(precision)


def test_every_parameter_has_a_bad_value_case(defaults):
    """Each parameter's check is exercised above: a value it must refuse, named in the error."""
    cases = next(mark for mark in test_bad_value_names_the_parameter.pytestmark if mark.name == "parametrize")
    assert {name for name, _, _ in cases.args[1]} == set(defaults)
