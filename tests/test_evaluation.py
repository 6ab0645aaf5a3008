"""Section 9: FID and KID from their equations, the cache of real-image features, and the memorisation check.
A stand-in feature extractor replaces Inception-v3, whose weights these tests never download."""

import sys
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch

from stand_ins import StandInFeatures
from tiny import tiny_config, tiny_run


def gaussian_features(n, dim, seed, shift=0.0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator) * scale + shift


def test_fid_is_the_frechet_distance_of_the_two_gaussians(nb):
    real = gaussian_features(600, 8, seed=0)
    fake = gaussian_features(500, 8, seed=1, shift=0.5) @ torch.linspace(0.5, 1.5, 64).view(8, 8)
    fid, _, _ = nb.fid_kid(real, fake, kid_subsets=5)
    mu_r, mu_f = real.double().mean(0).numpy(), fake.double().mean(0).numpy()
    cov_r, cov_f = np.cov(real.double().numpy(), rowvar=False), np.cov(fake.double().numpy(), rowvar=False)
    expected = ((mu_r - mu_f) ** 2).sum() + np.trace(cov_r + cov_f - 2 * scipy.linalg.sqrtm(cov_r @ cov_f).real)
    assert fid == pytest.approx(expected, rel=1e-4)


def test_fid_is_zero_for_identical_sets_and_a_shift_adds_its_squared_length(nb):
    features = gaussian_features(400, 16, seed=0)
    assert abs(nb.fid_kid(features, features, kid_subsets=2)[0]) < 1e-6
    assert nb.fid_kid(features, features + 0.5, kid_subsets=2)[0] == pytest.approx(16 * 0.5**2, rel=1e-4)


def test_kid_is_the_unbiased_mmd_of_the_cubic_kernel_averaged_over_subsets(nb):
    real, fake = gaussian_features(40, 6, seed=0), gaussian_features(30, 6, seed=1, shift=0.3)
    _, kid_mean, kid_std = nb.fid_kid(real, fake, kid_subsets=4, seed=5)
    def k(a, b):  # the cubic kernel on 6-dimensional features
        return (a @ b / 6 + 1) ** 3

    generator, m, scores = torch.Generator().manual_seed(5), 15, []  # m = min(40, 30) // 2, drawn as fid_kid does
    for _ in range(4):
        x = real[torch.randperm(40, generator=generator)[:m]].double()
        y = fake[torch.randperm(30, generator=generator)[:m]].double()
        same = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        scores.append(same - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2)
    scores = torch.stack(scores)
    assert kid_mean == pytest.approx(scores.mean().item(), rel=1e-9)
    assert kid_std == pytest.approx(scores.std(correction=0).item(), rel=1e-9)


def test_kid_is_unbiased_where_fid_grows_at_small_n(nb):
    """The claim in section 9: with two samples of one distribution, FID is larger at small N, KID stays near 0."""
    small_fid, small_kid, _ = nb.fid_kid(gaussian_features(800, 16, seed=0), gaussian_features(800, 16, seed=1))
    large_fid, large_kid, _ = nb.fid_kid(gaussian_features(3000, 16, seed=0), gaussian_features(3000, 16, seed=1))
    _, shifted_kid, _ = nb.fid_kid(gaussian_features(800, 16, seed=0), gaussian_features(800, 16, seed=1, shift=0.5))
    assert small_fid > 3 * large_fid
    assert abs(small_kid) < 0.01 * shifted_kid and abs(large_kid) < 0.01 * shifted_kid


def test_kid_subsets_are_reproducible_and_leave_the_global_rng_alone(nb):
    real, fake = gaussian_features(300, 8, seed=0), gaussian_features(300, 8, seed=1, shift=0.2)
    state = torch.get_rng_state()
    first = nb.fid_kid(real, fake, kid_subsets=20, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert nb.fid_kid(real, fake, kid_subsets=20, seed=3) == first
    assert first[2] > 1e-4  # a real spread: the subsets (N / 2 = 150 images each) differ


def test_real_halves_score_far_below_real_against_noise(nb, real_images):
    images, _, _ = real_images
    real = nb.real_images_for_eval(images, 2000, 64, 64, seed=0)  # a random choice: the folder is sorted by class
    noise = torch.randint(0, 256, (1000, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    extractor = StandInFeatures()
    first_half, second_half, noise_features = (nb.image_features(x, extractor, torch.device("cpu"))
                                               for x in (real[:1000], real[1000:], noise))
    real_fid, real_kid, _ = nb.fid_kid(first_half, second_half, kid_subsets=20)
    noise_fid, noise_kid, _ = nb.fid_kid(first_half, noise_features, kid_subsets=20)
    assert real_fid < 0.05 * noise_fid and real_kid < 0.05 * noise_kid, (real_fid, noise_fid, real_kid, noise_kid)


def test_fid_with_real_inception_weights_ranks_real_then_blurred_then_noise(nb, fid_inception, real_images):
    """Section 9 with real weights: inception_weights set to the TorchScript file. 50 real images against 50 others
    score below the same others blurred, and blurred far below noise, in FID and in KID."""
    import torchvision.transforms.functional as TF

    extractor = nb.load_inception(str(fid_inception))
    assert isinstance(extractor, nb.TorchScriptInception)
    images, _, _ = real_images
    real = nb.real_images_for_eval(images, 100, 64, 64, seed=0)  # as the notebook compares them at 64x64
    noise = torch.randint(0, 256, (50, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sets = {"real": real[50:], "blurred": TF.gaussian_blur(real[50:], kernel_size=9, sigma=2.0), "noise": noise}
    reference = nb.image_features(real[:50], extractor, torch.device("cpu"))
    assert reference.shape == (50, 2048)
    scores = {name: nb.fid_kid(reference, nb.image_features(x, extractor, torch.device("cpu")), kid_subsets=20)
              for name, x in sets.items()}
    fid = {name: score[0] for name, score in scores.items()}
    kid = {name: score[1] for name, score in scores.items()}
    print("FID", fid, "KID", kid)
    # Measured here: FID 232, 256, 532 and KID 0.013, 0.052, 0.61 (50 images a set; inception's features of 50
    # images take 8 s on 2 cores). FID at N = 50 is mostly its bias, KID has none.
    assert fid["real"] < fid["blurred"] < 0.75 * fid["noise"], fid
    assert kid["real"] < 0.5 * kid["blurred"] and kid["blurred"] < 0.2 * kid["noise"], kid


def test_inception_weights_take_torch_fidelitys_file_or_the_torchscript_one(nb, tmp_path):
    plain = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    assert not nb.is_torchscript(plain) and nb.is_torchscript(scripted)


def test_real_features_are_computed_once_then_read_from_the_cache(nb, tmp_path):
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    real = nb.real_images_for_eval(images, 30, 32, 32, seed=0)
    extractor = StandInFeatures()
    features, path, cached = nb.cached_real_features(real, extractor, torch.device("cpu"), tmp_path)
    assert not cached and path.parent == tmp_path and path.exists() and extractor.calls == 1
    again, again_path, cached = nb.cached_real_features(real, extractor, torch.device("cpu"), tmp_path)
    assert cached and again_path == path and torch.equal(again, features) and extractor.calls == 1
    other = nb.real_images_for_eval(images, 30, 32, 32, seed=1)  # other images: never the stale features
    _, other_path, cached = nb.cached_real_features(other, extractor, torch.device("cpu"), tmp_path)
    assert not cached and other_path != path and extractor.calls == 2


def test_a_damaged_cache_file_is_recomputed(nb, tmp_path, capsys):
    real = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    features, path, _ = nb.cached_real_features(real, StandInFeatures(), torch.device("cpu"), tmp_path)
    path.write_bytes(b"not a tensor")
    again, _, cached = nb.cached_real_features(real, StandInFeatures(), torch.device("cpu"), tmp_path)
    assert not cached and torch.equal(again, features) and "cannot be read" in capsys.readouterr().out


def test_real_images_at_the_stored_size_are_the_training_images_themselves(nb):
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    real = nb.real_images_for_eval(images, 20, 32, 32, seed=5)
    indices = torch.randperm(50, generator=torch.Generator().manual_seed(5))[:20]
    assert torch.equal(real, images[indices])  # the 32x32 variant compares with CIFAR-10 exactly as stored
    assert nb.real_images_for_eval(images, 20, 64, 64, seed=5).shape == (20, 3, 64, 64)


@pytest.mark.parametrize("size", [64, 32])
def test_a_model_that_copies_its_training_images_scores_zero_at_either_resolution(nb, size):
    """EVAL_RESOLUTION = 32 on 32x32 data: the real images go the way a 64x64 model's samples go (up to 64 as the
    model sees them, then down with the same filter), not straight from their stored 32x32."""
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    real = nb.real_images_for_eval(images, 30, 64, size, seed=0)
    indices = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:30]
    copies = nb.to_uint8(nb.prepare_batch(images, indices, None, 64, "cpu"), size)  # what the copying model makes
    assert torch.equal(real, copies)
    features = nb.image_features(real, StandInFeatures(), torch.device("cpu")).double()
    assert nb.fid_kid(features, nb.image_features(copies, StandInFeatures(), torch.device("cpu")), kid_subsets=3)[0] \
        == pytest.approx(0, abs=1e-6)


def test_a_copy_of_a_training_image_is_found_at_distance_zero(nb):
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    copies = nb.prepare_batch(images, torch.tensor([7, 42]), None, 64, "cpu")  # as a 64x64 model would draw them
    distances, indices = nb.nearest_training_images(copies, images, 64, k=2)
    assert indices[:, 0].tolist() == [7, 42] and torch.all(distances[:, 0] < 1e-3)  # cdist rounds; not 0.064


def test_to_uint8_quantises_as_a_png_stores(nb):
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.2]).view(1, 1, 1, 5).expand(1, 3, 5, 5)
    assert nb.to_uint8(x, 5)[0, 0, 0].tolist() == [0, 64, 128, 255, 255]
    assert nb.to_uint8(x, 10).shape == (1, 3, 10, 10)


def test_generated_images_come_as_uint8_at_the_evaluation_size(nb, tmp_path):
    config = tiny_config(nb, tmp_path)
    run = tiny_run(nb, config)
    predictor = nb.NoisePredictor(run.model, run.schedule)
    generated = nb.generate_for_eval(predictor, 5, 16, 8, torch.device("cpu"), "dpm++", 5, batch_size=2)
    assert generated.shape == (5, 3, 8, 8) and generated.dtype == torch.uint8
    again = nb.generate_for_eval(predictor, 5, 16, 8, torch.device("cpu"), "dpm++", 5, batch_size=2)
    assert torch.equal(generated, again)


def test_without_torchmetrics_the_error_says_what_to_install(nb, monkeypatch):
    for module in ("torchmetrics", "torchmetrics.image.fid", "torch_fidelity",
                   "torch_fidelity.feature_extractor_inceptionv3"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match="pip install -r requirements-eval.txt"):
        nb.load_inception()


def test_a_torchscript_inception_loads_without_torchmetrics_or_torch_fidelity(nb, monkeypatch, tmp_path):
    """The device image has torchmetrics but not torch-fidelity; a user may have neither: default_1.pt needs none."""
    for module in ("torchmetrics", "torchmetrics.image.fid", "torch_fidelity",
                   "torch_fidelity.feature_extractor_inceptionv3"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    path = tmp_path / "default_1.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 8, 3)), path)  # a TorchScript archive, as default_1.pt is
    extractor = nb.load_inception(str(path))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert isinstance(extractor, nb.TorchScriptInception) and extractor(images).shape == (2, 8)


def test_without_the_weights_the_error_says_what_to_fetch(nb, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(inception, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as error:
        nb.load_inception()
    message = str(error.value)
    assert inception.URL_INCEPTION_V3 in message and "inception_weights" in message
    assert str(torch.hub.get_dir()) in message


def test_a_damaged_weights_file_gives_the_same_advice(nb, tmp_path):
    damaged = tmp_path / "inception.pth"
    damaged.write_bytes(b"\0" * 100)
    with pytest.raises(RuntimeError, match="could not be loaded"):
        nb.load_inception(str(damaged))


def test_nearest_training_images_match_a_brute_force_search(nb):
    images = torch.randint(0, 256, (300, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    queries = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    distances, indices = nb.nearest_training_images(queries, images, 16, k=3, size=16, chunk=64)  # five chunks
    small = torch.nn.functional.interpolate(queries, size=16, mode="bilinear", antialias=True).flatten(1)
    everything = torch.cdist(small, (images.float() / 127.5 - 1).flatten(1)) / small.shape[1] ** 0.5
    expected_distances, expected_indices = everything.topk(3, dim=1, largest=False)
    assert torch.equal(indices, expected_indices) and torch.allclose(distances, expected_distances, atol=1e-5)


def test_a_training_image_is_its_own_nearest_neighbour(nb):
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    queries = images[[7, 42]].float() / 127.5 - 1
    distances, indices = nb.nearest_training_images(queries, images, 32, k=2)
    assert indices[:, 0].tolist() == [7, 42] and torch.all(distances[:, 0] < 1e-5) and torch.all(distances[:, 1] > 0.1)


def test_a_class_conditional_model_is_evaluated_on_every_class_in_turn_with_guidance(nb, monkeypatch):
    """Section 9 for CLASS_CONDITIONAL: the generated images cycle through the classes, each guided."""
    seen = []

    class Conditional(torch.nn.Module):
        num_classes = 3

        def forward(self, x, t, labels=None):
            seen.append(labels.tolist())
            return torch.zeros_like(x)

    predictor = nb.NoisePredictor(Conditional(), nb.linear_schedule(10, 1e-4, 0.02))
    nb.generate_for_eval(predictor, 5, 8, 8, torch.device("cpu"), "ddim", 1, batch_size=4, guidance_scale=2.0)
    # one doubled batch per step: the classes of the batch, then the "no class" token (3) for each
    assert seen == [[0, 1, 2, 0, 3, 3, 3, 3], [1, 3]]
