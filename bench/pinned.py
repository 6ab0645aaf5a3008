"""Does pinning the training images on the host speed the batch copies to a CUDA GPU? (issue 30, item 3)

    python bench/pinned.py --out $OUT   # on a lent GPU: a few seconds

Times prepare_batch's gather and copy for batches of 64 of 50,000 uint8 images kept on the host (unpinned, the whole
set pinned as place_dataset pinned it, and each gathered batch pinned before its copy) and on the GPU (place_dataset's
choice when they fit). `images[indices]` gathers into a new, unpinned tensor, so pinning the whole set should not
speed the copy; pinning the batch itself can.
"""

import argparse
import json
import time
from pathlib import Path

import torch


def ms_per_batch(gather, images, device, batches=200):
    """Milliseconds per batch of 64: gather(images, indices) -> the batch on `device`, then a little work on it."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).to(images.device)
    for step in range(batches + 10):  # the first 10 warm up
        if step == 10:
            torch.cuda.synchronize(device)
            started = time.perf_counter()
        gather(images, order[step * 64 : (step + 1) * 64]).float().mul(2).sum()
    torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - started) / batches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    device = torch.device("cuda")
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    def copy(images, indices):  # prepare_batch's gather and copy
        return images[indices].to(device, non_blocking=True)

    def copy_pinned(images, indices):
        return images[indices].pin_memory().to(device, non_blocking=True)

    rows = {
        "host, unpinned": ms_per_batch(copy, images, device),
        "host, whole set pinned (place_dataset before issue 30)": ms_per_batch(copy, images.pin_memory(), device),
        "host, each batch pinned before its copy": ms_per_batch(copy_pinned, images, device),
        "on the GPU (place_dataset when it fits)": ms_per_batch(copy, images.to(device), device),
    }
    for name, ms in rows.items():
        print(f"PINNED {name:45s} {ms:.3f} ms per batch of 64", flush=True)
    out = Path(args.out) / "pinned.json"
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(device), "ms_per_batch_of_64": rows}, indent=1))


if __name__ == "__main__":
    main()
