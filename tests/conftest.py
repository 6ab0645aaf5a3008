import pytest
import torch

from notebook import load_definitions, real_train_folder, require_real_data


@pytest.fixture(scope="session")
def nb():
    """The notebook's `definitions` cells, loaded as a module."""
    return load_definitions()


@pytest.fixture(autouse=True)
def _repeatable():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def real_train():
    """An image folder of real CIFAR-10 training images (see notebook.real_train_folder), or a skip that says
    what to do; in CI (REQUIRE_REAL_DATA=1) a failure instead."""
    folder, why_not = real_train_folder()
    if folder is None:
        if require_real_data():
            pytest.fail(why_not)
        pytest.skip(why_not)
    return folder
