"""Feature extractors for FID and KID that need no download, for the tests."""

from pathlib import Path

import torch
import torch.nn as nn


class StandInFeatures(nn.Module):
    """A small convolutional net with fixed random weights in place of Inception-v3: uint8 images (B, 3, H, W)
    -> features (B, 64). Random convolutional features tell real images from noise, which is all the tests ask."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2),
                                     nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.calls = 0

    def forward(self, images):
        assert images.dtype == torch.uint8
        self.calls += 1
        return self.net(images.float() / 127.5 - 1)


def random_inception_weights(path):
    """Write a weights file for FID's Inception-v3 with its architecture and random values, so the notebook's
    whole evaluation path runs offline (the FID it gives means nothing). Returns the path."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    loader, load = inception.load_state_dict_from_url, inception.FeatureExtractorInceptionV3.load_state_dict
    inception.load_state_dict_from_url = lambda *args, **kwargs: None  # nothing to download...
    inception.FeatureExtractorInceptionV3.load_state_dict = lambda self, *args, **kwargs: None  # ...or load
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    finally:
        inception.load_state_dict_from_url, inception.FeatureExtractorInceptionV3.load_state_dict = loader, load
    torch.save(network.state_dict(), path)
    return path


def hide_torchmetrics(ipython_dir):
    """Add to an IPython profile a startup file that makes `import torchmetrics` fail, as if the optional extra
    were not installed; point IPYTHONDIR at it. Returns ipython_dir."""
    startup = Path(ipython_dir) / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "01-no-torchmetrics.py").write_text(
        "import sys\nfor name in ('torchmetrics', 'torch_fidelity'):\n    sys.modules[name] = None  # import fails\n")
    return Path(ipython_dir)
