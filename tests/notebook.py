"""Load the notebook's `definitions` cells as a module, the way the tests (and benchmarks) use them."""

import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "diffusion_model.ipynb"
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "cifar10-jpg" / "train"  # real CIFAR-10 images, as JPEG


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
