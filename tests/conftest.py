import pytest
import torch

from notebook import load_definitions


@pytest.fixture(scope="session")
def nb():
    """The notebook's `definitions` cells, loaded as a module."""
    return load_definitions()


@pytest.fixture(autouse=True)
def _repeatable():
    torch.manual_seed(0)
