"""Where the real-data tests find CIFAR-10: ../shared in CI, else the notebook's own download (network mocked)."""

import urllib.error

import numpy as np
import pytest
from torchvision import datasets

import notebook


class FakeDownload:
    """Stands in for torchvision's CIFAR10(download=True): 4 images of each of 3 classes, counting the calls."""

    calls = 0

    def __init__(self, root, train, download):
        assert train and download
        FakeDownload.calls += 1
        self.classes = ["airplane", "bird", "frog"]
        self.targets = [i % 3 for i in range(12)]
        self.data = np.stack([np.full((32, 32, 3), 20 * i, dtype=np.uint8) for i in range(12)])


def test_shared_images_are_used_where_they_exist(tmp_path):
    (tmp_path / "shared").mkdir()
    assert notebook.real_train_folder(tmp_path / "shared", tmp_path / "data") == (tmp_path / "shared", None)


def test_without_shared_images_the_notebooks_download_is_used_once(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CIFAR10", FakeDownload)
    monkeypatch.setattr(notebook, "PER_CLASS", 3)
    FakeDownload.calls = 0
    folder, why_not = notebook.real_train_folder(tmp_path / "no-shared", tmp_path / "data")
    assert why_not is None and folder == tmp_path / "data" / "cifar10-images" / "train"
    assert sorted(path.name for path in folder.iterdir() if path.is_dir()) == ["airplane", "bird", "frog"]
    assert all(len(list((folder / name).glob("*.png"))) == 3 for name in ("airplane", "bird", "frog"))
    assert notebook.real_train_folder(tmp_path / "no-shared", tmp_path / "data") == (folder, None)
    assert FakeDownload.calls == 1  # the second time, the folder is read as it is


def test_no_network_and_no_shared_images_says_what_to_do(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "CIFAR10", offline)
    folder, why_not = notebook.real_train_folder(tmp_path / "no-shared", tmp_path / "data")
    assert folder is None
    assert "needs real CIFAR-10 images" in why_not and str(tmp_path / "data") in why_not
    assert "Connect to the internet and rerun the tests once" in why_not


@pytest.mark.parametrize("variable", ["REQUIRE_REAL_DATA", "REQUIRE_BROWSER_TEST"])
def test_ci_requires_the_real_data_and_browser_tests_to_run(variable):
    assert f"export {variable}=1" in (notebook.ROOT / ".ci" / "run").read_text()
