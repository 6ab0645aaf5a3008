"""The notebook on a Mac: every path a Mac user takes runs under a simulated MPS device (simulated_mps.py), which
raises where a Mac would (float64 on the device, mixed devices, non-blocking copies to the CPU)."""

import json
from pathlib import Path

import device_paths
import pytest
import torch
import torch.nn.functional as F
from simulated_mps import SimulatedMPSError, fallbacks, simulated_mps
from test_checkpoints import tensors_equal

from fake_cifar import CLASSES, install_md5_skip, write_fake_cifar10
from stand_ins import hide_torchmetrics
from tiny import SMALL

MPS = torch.device("mps")
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def on_mps():
    with simulated_mps():
        yield MPS


# ---------------------------------------------------------------- the harness sees what a Mac would raise


def old_half_log_snr(schedule):
    """half_log_snr as it was: .double() on the schedule's own device, then .cpu()."""
    return (schedule.sqrt_alphas_cumprod.double().log() - schedule.sqrt_one_minus_alphas_cumprod.double().log()).cpu()


def test_float64_on_the_device_is_an_error_naming_the_operation_and_function(nb, on_mps):
    schedule = nb.make_schedule("linear", 10, 1e-4, 0.02).to(on_mps)
    with pytest.raises(SimulatedMPSError, match=r"aten::.*float64 .* in old_half_log_snr \(.*test_mps.py"):
        old_half_log_snr(schedule)
    assert nb.half_log_snr(schedule).dtype == torch.float64  # the notebook's does its float64 maths on the CPU


def test_mixing_device_and_cpu_tensors_is_an_error_but_cpu_scalars_are_not(on_mps):
    x = torch.ones(3).to(on_mps)
    with pytest.raises(SimulatedMPSError, match=r"aten::add.Tensor mixes .* CPU tensors of shape \(3,\)"):
        x + torch.ones(3)
    assert (x + torch.tensor(2.0)).device.type == "mps"  # a 0-dim CPU tensor is a scalar, as PyTorch allows


def test_a_non_blocking_copy_between_device_and_cpu_is_an_error(on_mps):
    x = torch.ones(3).to(on_mps)
    with pytest.raises(SimulatedMPSError, match="non_blocking=True"):
        x.to("cpu", non_blocking=True)
    with pytest.raises(SimulatedMPSError, match="non_blocking=True"):
        torch.ones(3).to(on_mps, non_blocking=True)
    assert torch.equal(x.to("cpu"), torch.ones(3))


def test_device_tensors_report_the_device_and_the_notebook_picks_it(nb, on_mps):
    assert nb.pick_device("mps") == on_mps and torch.backends.mps.is_available()
    model = nb.UNet(16, (1, 2)).to(on_mps)
    assert {p.device for p in model.parameters()} == {torch.device("mps", 0)}  # as a Mac reports them
    assert model(torch.randn(1, 3, 8, 8).to(on_mps), torch.zeros(1, dtype=torch.long).to(on_mps)).device.type == "mps"
    assert "MPS allocated" in nb.system_report(on_mps)


def test_an_op_mps_lacks_is_counted_as_a_fallback(on_mps):
    before = fallbacks["aten::_upsample_bilinear2d_aa"]
    F.interpolate(torch.rand(1, 3, 16, 16).to(on_mps), size=(8, 8), mode="bilinear", antialias=True)
    assert fallbacks["aten::_upsample_bilinear2d_aa"] == before + 1


# ---------------------------------------------------------------- every path a Mac user takes


def test_training_writes_checkpoints_and_a_grid_from_each_sampler(nb, tmp_path, on_mps):
    grids = device_paths.training_with_grids(nb, tmp_path, on_mps)
    assert [path.name for path in grids] == ["epoch_0001.png", "epoch_0002.png", "ddpm.png", "ddim.png"]
    assert len(list((tmp_path / "checkpoints").glob("*/step_*.pt"))) == 2


def test_a_resumed_run_repeats_the_run_that_never_stopped(nb, tmp_path, on_mps):
    straight, resumed, progress = device_paths.stop_and_resume(nb, tmp_path, on_mps)
    assert progress["epoch"] == 2 and progress["step"] == 6
    assert tensors_equal({k: v.cpu() for k, v in straight.items()}, {k: v.cpu() for k, v in resumed.items()})


def test_v_prediction_trains_and_samples(nb, tmp_path, on_mps):
    assert device_paths.v_prediction(nb, tmp_path, on_mps).exists()


def test_class_conditional_training_and_guided_samples_from_each_sampler(nb, tmp_path, on_mps):
    drawn = device_paths.class_conditional(nb, tmp_path, on_mps)
    assert set(drawn) == set(device_paths.SAMPLERS)
    assert all(images.device.type == "mps" and images.isfinite().all() for images in drawn.values())


def test_sampling_section_explorers_and_gif_from_a_checkpoint(nb, tmp_path, on_mps):
    drawn = device_paths.sampling_section(nb, tmp_path, on_mps)
    assert all(images.isfinite().all() for images in drawn.values())
    assert (tmp_path / "denoising.gif").exists()


def test_evaluation_with_a_stand_in_feature_extractor(nb, tmp_path, on_mps):
    fid, kid, distances = device_paths.evaluation_section(nb, tmp_path, on_mps)
    assert fid == fid and kid == kid and distances.isfinite().all()  # not NaN


@pytest.fixture(scope="module")
def mac_run(tmp_path_factory):
    """Every cell, top to bottom through papermill, with DEVICE = "mps": class-conditional, v-prediction, on
    CIFAR-10 in torchvision's format, without the optional torchmetrics (so section 9 stops at its advice before
    Inception, which costs a minute under the simulation; the evaluation path runs under it above, with a stand-in
    extractor). The kernel turns the simulation on in a startup file. Returns (executed notebook, its folder)."""
    from test_notebook_runs import run_notebook

    folder = tmp_path_factory.mktemp("mac_run")
    write_fake_cifar10(folder / "data")
    ipython = hide_torchmetrics(install_md5_skip(folder / "ipython"))
    report = folder / "fallbacks.json"
    (ipython / "profile_default" / "startup" / "02-simulated-mps.py").write_text(
        f"import atexit, json, sys\nsys.path.insert(0, {str(TESTS)!r})\nimport simulated_mps\n"
        f"simulated_mps.activate()\n"
        f"atexit.register(lambda: open({str(report)!r}, 'w').write(json.dumps(simulated_mps.fallbacks)))\n")
    executed = run_notebook(folder, ipython, DATASET="cifar10", DATA_DIR="data", CLASS_CONDITIONAL=True,
                            RECIPE="faster", **dict(SMALL, DEVICE="mps", EPOCHS=1))
    print("fallbacks to the CPU:", json.loads(report.read_text()))
    return executed, folder


def test_the_whole_notebook_runs_headless_on_the_simulated_mac(mac_run):
    from test_notebook_runs import assert_ran_cleanly, printed

    executed, folder = mac_run
    assert_ran_cleanly(executed, class_conditional=True)
    text = printed(executed)
    assert "device:       mps" in text
    assert f"100 training images, stored (3, 32, 32) torch.uint8 on mps:0, 0 MiB; classes: {', '.join(CLASSES)}" in text
    assert list((folder / "checkpoints").glob("*/step_00000003.pt"))
    assert "nearest training image:" in text  # the last cell ran


def test_a_class_conditional_run_offers_each_class_and_the_scale_in_the_explorer(mac_run):
    from test_notebook_runs import shown_widgets

    shown = shown_widgets(mac_run[0])
    assert [state["_options_labels"] for state in shown if state.get("description") == "class"] == [["any", *CLASSES]]
    assert [state["value"] for state in shown if state.get("description") == "scale w"] == [3.0]  # GUIDANCE_SCALE


def test_without_torchmetrics_section_9_says_what_to_install_and_the_later_cells_run(mac_run):
    from test_notebook_runs import printed

    text = printed(mac_run[0])
    assert "FID and KID skipped: FID and KID need the optional extra torchmetrics[image]" in text
    assert "To fix: pip install -r requirements-eval.txt" in text
