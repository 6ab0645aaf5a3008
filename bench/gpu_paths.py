"""The Mac user's paths (tests/device_paths.py, which tests/test_mps.py runs under the simulated MPS device) on a
real device, once: on CUDA a mixed-device bug crashes for real.

    python bench/gpu_paths.py --device cuda --out $OUT   # on a lent GPU
    python bench/gpu_paths.py --device cpu               # the same on the CPU

Prints one line a path (ok, or the error) and writes OUT/gpu_paths.json. The resume path reports how far the
resumed run's weights are from those of the run that never stopped (bitwise equal on the CPU; on CUDA some kernels
are not deterministic).
"""

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import device_paths  # noqa: E402

from notebook import load_definitions  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    nb, device, results = load_definitions(), torch.device(args.device), {}
    for name, path in device_paths.PATHS.items():
        started = time.perf_counter()
        try:
            out = path(nb, Path(tempfile.mkdtemp()), device)
            row = {"ok": True}
            if name == "stop_and_resume":
                straight, resumed, _ = out
                row["max_weight_difference"] = max((straight[k].float() - resumed[k].float()).abs().max().item()
                                                   for k in straight)
        except Exception as error:  # record it and go on: each path is checked on its own
            row = {"ok": False, "error": f"{type(error).__name__}: {error}",
                   "traceback": traceback.format_exc()[-3000:]}
        row["seconds"] = time.perf_counter() - started
        results[name] = row
        print(f"PATH {name:22s} " + ("ok" if row["ok"] else row["error"][:300])
              + (f"  resumed vs straight: max |dw| {row['max_weight_difference']:.2e}"
                 if "max_weight_difference" in row else ""), flush=True)
    out = Path(args.out) / "gpu_paths.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": str(device), "torch": torch.__version__, "paths": results}, indent=1))


if __name__ == "__main__":
    main()
