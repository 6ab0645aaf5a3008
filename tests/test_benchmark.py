"""The benchmark script runs end to end (a smoke run with tiny sizes; no timing is asserted)."""

import json
import subprocess
import sys

from notebook import ROOT


def test_benchmark_smoke_run_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "benchmark.py"), "--quick", "--device", "cpu",
                             "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for batch in figures["training"].values():
        assert batch["images_per_s_with_data"] > 0 and batch["flops_per_image"] > 0
        assert 0 <= batch["data_share_of_step"] < 1
    assert figures["dense"]["matmul_flops_per_s"] > 0
    assert figures["sampling"]["ddim_images_per_s"] > 0 and figures["sampling"]["ddpm_images_per_s"] > 0
    assert figures["peak_memory_training_step"]["bytes"] > 0
    assert "training step" in result.stdout
    try:
        import diffusers  # noqa: F401  (requirements-bench.txt, not the tests')
        assert figures["diffusers_reference"]["images_per_s_with_data"] > 0
    except ImportError:  # then the figure says what to install, instead of a number
        assert figures["diffusers_reference"] == "not installed: pip install -r requirements-bench.txt"


def test_gpu_epoch_script_smoke_run_on_the_cpu(tmp_path):
    """bench/gpu_epoch.py waits for a lent GPU (issue 13); this keeps it runnable: tiny sizes, no timing asserted."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_epoch.py"), "--quick", "--device", "cpu",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads((tmp_path / "gpu_epoch.json").read_text())
    default = figures["levers"]["float32 (eager, TF32 off)"]
    assert default["images_per_s"] > 0
    bf16 = figures["levers"]["bf16 + channels_last"]  # its loss curve, compared with float32's: bfloat16 differs
    assert 0 < bf16["max_loss_deviation"] < 0.5 and len(bf16["loss_windows"]) == len(default["loss_windows"])
    assert figures["train_epoch"]["float32 (eager, TF32 off)"]["seconds"] > 0
    assert figures["sampling"]["8"]["ddim_50_images_per_s"] > 0
