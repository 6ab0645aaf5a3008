"""What the live training panel costs an epoch: the notebook's `train` on a small, fast model (so that updates take
milliseconds, as on a GPU), without the panel, with it redrawn at most every REDRAW_SECONDS (the default), and with it
redrawn at every loss read (every LOG_EVERY updates, as before issue 49).

    python bench/panel.py [--updates 400] [--history 20000] [--device cpu]

--history: updates of loss history already in the plots (a run 20 epochs in has 15,620), which make each redraw
slower as a run goes on.
"""

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions  # noqa: E402
from tiny import tiny_config, tiny_images, tiny_run  # noqa: E402

nb = load_definitions()


class Handle:
    """Jupyter's display handle, outside Jupyter: the panel is drawn (its PNG made) but not sent anywhere."""

    def update(self, bundle, raw=False):
        pass


nb.display = lambda *objects, **options: Handle()


def epoch_seconds(updates, history, device, live, redraw_seconds):
    """Seconds of one epoch of `updates` updates of 8 images at 16x16 (the first update, with any warm-up, apart)."""
    nb.REDRAW_SECONDS = redraw_seconds
    with tempfile.TemporaryDirectory() as folder:
        config = tiny_config(nb, Path(folder), EPOCHS=1, BATCH_SIZE=8, MAX_BATCHES_PER_EPOCH=None, DEVICE=device.type)
        run = tiny_run(nb, config)
        run.model.to(device), run.ema.to(device)
        losses = torch.rand(history, generator=torch.Generator().manual_seed(0)).add(0.02).tolist()
        run.progress.update(losses=losses, quarter_losses=[[loss] * 4 for loss in losses])
        images = nb.place_dataset(tiny_images(8 * updates), device)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            nb.train(run.state, images, run.schedule, config, device, run.progress, Path(folder) / "run", live=live)
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--history", type=int, default=20000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    default = nb.REDRAW_SECONDS
    epoch_seconds(20, 0, device, False, default)  # warm-up
    rows = [("no panel", False, default), (f"panel, redrawn at most every {default} s", True, default),
            (f"panel, redrawn every {nb.LOG_EVERY} updates (before)", True, 0)]
    for name, live, redraw in rows:
        seconds = epoch_seconds(args.updates, args.history, device, live, redraw)
        print(f"{name}: {seconds:.1f} s for {args.updates} updates ({1000 * seconds / args.updates:.1f} ms each), "
              f"{args.history:,} updates of history")


if __name__ == "__main__":
    main()
