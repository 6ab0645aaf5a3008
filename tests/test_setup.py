"""The first cell: an old Python or PyTorch stops the notebook at once, saying what to do."""

import pytest

from notebook import cells, source


@pytest.fixture(scope="module")
def check_versions():
    first_code = next(cell for cell in cells() if cell["cell_type"] == "code")
    namespace = {}
    exec(source(first_code), namespace)  # on this Python and torch it passes
    return namespace["check_versions"]


def test_python_39_is_stopped_with_what_to_do(check_versions):
    with pytest.raises(RuntimeError, match=r"needs Python 3.10 or newer; this kernel runs 3\.9\.6") as error:
        check_versions((3, 9, 6, "final", 0), "2.5.0")
    assert "brew install python@3.12" in str(error.value) and "python3.12 -m venv .venv" in str(error.value)


@pytest.mark.parametrize("version", ["2.4.1", "2.4.0+cu121", "1.13.1"])
def test_torch_before_25_is_stopped_with_what_to_do(check_versions, version):
    with pytest.raises(RuntimeError, match=rf"needs PyTorch 2.5 or newer; found {version.replace('+', '.')}"):
        check_versions((3, 11, 0), version)


@pytest.mark.parametrize("version", ["2.5.0", "2.14.1+cpu", "3.0.0"])
def test_supported_versions_pass(check_versions, version):
    check_versions((3, 10, 0), version)
