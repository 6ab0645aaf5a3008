"""The first cells: an old Python or PyTorch stops the notebook at once, saying what to do; a Mac gets a PyTorch
with GroupNorm's Metal kernels, or is told how to."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement

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


def torch_requirement(environment):
    """The torch requirement that pip applies in `environment` (PEP 508 marker values), from requirements.txt."""
    lines = (Path(__file__).resolve().parent.parent / "requirements.txt").read_text().splitlines()
    requirements = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    (torch,) = [r for r in requirements if r.name == "torch" and (r.marker is None or r.marker.evaluate(environment))]
    return torch.specifier


def test_a_mac_install_gets_a_torch_with_groupnorm_metal_kernels():
    """2.13 is the first release whose macOS wheels have GroupNorm's Metal kernels (section 1)."""
    mac = torch_requirement({"sys_platform": "darwin", "platform_machine": "arm64"})
    assert mac.contains("2.13.0") and not mac.contains("2.12.1")
    linux = torch_requirement({"sys_platform": "linux", "platform_machine": "x86_64"})
    assert linux.contains("2.5.0") and not linux.contains("2.4.1")


def test_an_older_torch_on_mps_is_told_how_to_get_the_faster_groupnorm(nb):
    advice = nb.mps_advice(nb.torch.device("mps"), "2.12.1")
    assert "GroupNorm" in advice and "pip install -U -r requirements.txt" in advice
    assert nb.mps_advice(nb.torch.device("mps"), "2.13.0") == ""
    assert nb.mps_advice(nb.torch.device("cpu"), "2.5.0") == ""  # not on MPS: nothing to say
