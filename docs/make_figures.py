"""The README's figures that need no trained model, made from the notebook's own definitions:

    python docs/make_figures.py [TRAIN_FOLDER]     # default: ../shared/data/cifar10-jpg/train, or data/ as the tests

docs/forward-process.jpg: real CIFAR-10 training images, upscaled to 64x64 as the notebook trains on them, noised by
Eq. 4 at growing t with the published linear schedule and with the same schedule shifted for the upscale
(NOISE_SCHEDULE = "linear+shift", section 4), from the same noise.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from notebook import load_definitions, real_train_folder  # noqa: E402

nb = load_definitions()


def forward_process_figure(images, path, timesteps=(0, 100, 200, 300, 400, 500, 700, 999), seed=0):
    """One row per image and schedule: x_t at each of `timesteps` (code indices), the same noise for both."""
    x_0 = nb.prepare_batch(images, torch.arange(len(images)), None, 64, "cpu")  # (B, 3, 64, 64) in [-1, 1]
    shift = nb.snr_shift("linear+shift", 64, nb.data_resolution("cifar10"))
    schedules = {"linear": nb.make_schedule("linear", 1000, 1e-4, 0.02),
                 "linear+shift": nb.make_schedule("linear+shift", 1000, 1e-4, 0.02, shift)}
    noise = torch.randn((len(images), 3, 64, 64), generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(len(images) * 2, len(timesteps), figsize=(len(timesteps) * 1.1, len(images) * 2.3))
    for i in range(len(images)):
        for j, (name, schedule) in enumerate(schedules.items()):
            row = axes[2 * i + j]
            for ax, t in zip(row, timesteps, strict=True):
                x_t = nb.forward_diffusion(x_0[i : i + 1], torch.tensor([t]), noise[i : i + 1], schedule)
                ax.imshow(nb.to_unit_range(x_t[0]).permute(1, 2, 0).numpy())
                ax.set_xticks([]), ax.set_yticks([])
                if i == 0 and j == 0:
                    ax.set_title(f"t = {t}", fontsize=8)
            row[0].set_ylabel(name, fontsize=7)
    fig.suptitle("Forward process (Eq. 4) on CIFAR-10 at 64x64: published linear schedule and shifted (k = 4)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=72, pil_kwargs={"quality": 85})  # JPEG: noise does not compress as PNG
    plt.close(fig)
    return path


def main():
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else real_train_folder()[0]
    if folder is None:
        raise SystemExit(real_train_folder()[1])
    images, labels, _ = nb.load_image_folder(str(folder), 32)
    picks = torch.stack([torch.nonzero(labels == c)[0, 0] for c in (0, 7, 3)])  # an airplane, a horse, a cat
    path = forward_process_figure(images[picks], ROOT / "docs" / "forward-process.jpg")
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
