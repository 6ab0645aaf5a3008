"""Section 3: loading CIFAR-10 or an image folder, and the batches the model sees."""

import urllib.error

import pytest
import torch

from fake_cifar import CLASSES, write_fake_cifar10
from tiny import tiny_config


@pytest.fixture
def md5_skipped(monkeypatch):
    monkeypatch.setattr("torchvision.datasets.cifar.CIFAR10._check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)


def test_cifar10_loads_as_one_uint8_tensor(nb, tmp_path, md5_skipped):
    write_fake_cifar10(tmp_path, images_per_batch=7)
    images, labels, names = nb.load_dataset("cifar10", str(tmp_path), 64)
    assert images.shape == (35, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (35,) and names == CLASSES


def test_missing_cifar10_says_where_it_looked_and_how_to_get_it(nb, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    with pytest.raises(RuntimeError) as error:
        nb.load_dataset("cifar10", str(tmp_path / "data"), 64)
    message = str(error.value)
    assert str((tmp_path / "data" / "cifar-10-batches-py").resolve()) in message
    assert nb.CIFAR10_URL in message and "image folder" in message


def test_image_folder_loads_real_images_resized(nb, real_train):
    images, labels, names = nb.load_image_folder(str(real_train), 48)
    assert images.shape == (5000, 3, 48, 48) and images.dtype == torch.uint8
    assert names[0] == "airplane" and len(names) == 10 and labels.bincount().tolist() == [500] * 10


def test_empty_image_folder_is_a_clear_error(nb, tmp_path):
    with pytest.raises(RuntimeError, match="holds no images in class subfolders"):
        nb.load_image_folder(str(tmp_path), 32)


def test_epoch_order_depends_only_on_seed_and_epoch(nb):
    order, flips = nb.epoch_order(100, seed=3, epoch=2)
    assert sorted(order.tolist()) == list(range(100))
    again = nb.epoch_order(100, seed=3, epoch=2)
    assert torch.equal(order, again[0]) and torch.equal(flips, again[1])
    assert not torch.equal(order, nb.epoch_order(100, seed=3, epoch=3)[0])
    assert 30 < flips.sum() < 70


def test_batches_are_upscaled_flipped_and_in_minus_one_to_one(nb):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    images[0] = 0
    images[1] = 255
    indices, no_flip = torch.arange(4), torch.zeros(4, dtype=torch.bool)
    x = nb.prepare_batch(images, indices, no_flip, 64, "cpu")
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert (x[0] == -1).all() and (x[1] == 1).all() and x.min() >= -1 and x.max() <= 1
    flipped = nb.prepare_batch(images, indices, ~no_flip, 64, "cpu")
    torch.testing.assert_close(flipped, x.flip(-1))



def test_a_training_batch_flips_each_image_as_its_epoch_says(nb):
    """What the notebook shows "as the model sees it" is what training gets: the batch from position s holds the
    images at order[s : s + B], each flipped by its own entry of flips (indexed by image, not by position)."""
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    order, flips = nb.epoch_order(40, 0, 3)
    x, indices = nb.training_batch(images, order, flips, 32, 16, 8, "cpu")
    assert torch.equal(indices, order[32:40]) and x.shape == (8, 3, 8, 8)
    for position, index in enumerate(indices):
        image = images[index].float() / 127.5 - 1
        torch.testing.assert_close(x[position], image.flip(-1) if flips[index] else image)


def test_only_shrinking_is_antialiased(nb, monkeypatch):
    calls = []
    interpolate = nb.F.interpolate
    monkeypatch.setattr(nb.F, "interpolate", lambda *a, **k: calls.append(k["antialias"]) or interpolate(*a, **k))
    x = torch.rand(1, 3, 32, 32)
    nb.resize(x, 64)
    nb.resize(x, 16)
    assert calls == [False, True]


def test_copies_between_a_mac_and_its_cpu_are_never_non_blocking(nb):
    """A non_blocking copy from MPS to the CPU may hand back memory the device has not written yet (and copies
    to MPS were reported corrupted): under the simulated Mac, which raises on either, batches move both ways."""
    from simulated_mps import simulated_mps

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    with simulated_mps():
        mps = torch.device("mps")
        on_mac = nb.prepare_batch(images, torch.arange(2), torch.tensor([True, False]), 8, mps)  # CPU -> MPS
        back = nb.prepare_batch(nb.place_dataset(images, mps), torch.arange(2), None, 8, "cpu")  # MPS -> CPU
        assert on_mac.device.type == "mps" and back.device.type == "cpu"
    torch.testing.assert_close(back, nb.prepare_batch(images, torch.arange(2), None, 8, "cpu"))


def test_no_flips_given_means_none_flipped(nb):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    indices = torch.arange(3)
    assert torch.equal(nb.prepare_batch(images, indices, None, 32, "cpu"),
                       nb.prepare_batch(images, indices, torch.zeros(3, dtype=torch.bool), 32, "cpu"))

def test_an_epoch_trains_whole_updates_only(nb, tmp_path):
    def updates_per_epoch(batch_size, accumulation, max_batches=None):
        config = tiny_config(nb, tmp_path, EPOCHS=1, BATCH_SIZE=batch_size, GRAD_ACCUM_STEPS=accumulation,
                             MAX_BATCHES_PER_EPOCH=max_batches)
        return nb.updates_to_go(nb.new_progress(), 1000, config)

    assert updates_per_epoch(64, 1) == 15  # 1000 // 64
    assert updates_per_epoch(64, 4) == 3  # 1000 // 256
    assert updates_per_epoch(64, 2, max_batches=5) == 2  # 5 batches' worth: 2 updates of 2
    with pytest.raises(nb.ConfigError, match="BATCH_SIZE .* GRAD_ACCUM_STEPS"):
        nb.epoch_images(100, 64, 2)
