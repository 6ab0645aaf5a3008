"""A small stand-in for CIFAR-10 in torchvision's on-disk format, as torchvision's own tests make one."""

import pickle
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Lets torchvision accept the fake files: it MD5-checks them against the real dataset's sums.
# Run at kernel start (IPython startup file) or patched in-process by the tests.
SKIP_MD5_STARTUP = """\
import os
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
import torchvision.datasets.cifar
torchvision.datasets.cifar.CIFAR10._check_integrity = lambda self: True
torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
"""


def write_fake_cifar10(data_dir, images_per_batch=20, seed=0):
    """Write cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) under data_dir.
    Each image is one flat colour per class plus noise, so classes are told apart by colour."""
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.integers(0, 10, images_per_batch)
        colours = (labels[:, None] * 25).repeat(3072, axis=1)
        data = np.clip(colours + rng.integers(0, 30, (images_per_batch, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as file:
            pickle.dump({"data": data, "labels": labels.tolist()}, file)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": CLASSES}, file)
    return folder


def install_md5_skip(ipython_dir):
    """An IPython profile whose startup file lets torchvision accept the fake files; point IPYTHONDIR at it."""
    startup = Path(ipython_dir) / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-fake-cifar10.py").write_text(SKIP_MD5_STARTUP)
    return Path(ipython_dir)
