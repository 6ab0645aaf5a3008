"""The quality benchmark runs end to end and its scorer behaves (a smoke run with tiny sizes; no timing or
score is asserted beyond what any working run must give)."""

import importlib.util
import json
import subprocess
import sys

import PIL.Image
import pytest
import torch

from notebook import ROOT


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """train/ and test/ image folders of smooth random images in two classes (bright and dark)."""
    root = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 48), ("test", 24)):
        for label, (low, high) in enumerate(((0, 120), (135, 255))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = torch.randint(low, high, (3, 8, 8), generator=generator, dtype=torch.uint8)
                image = torch.nn.functional.interpolate(image[None].float(), size=32, mode="bilinear")[0]
                PIL.Image.fromarray(image.round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


def load_quality():
    """bench/quality.py as a module."""
    spec = importlib.util.spec_from_file_location("quality", ROOT / "bench" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    return quality


def run_quality(*args):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), *map(str, args)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def smoke_run(image_folder, tmp_path_factory):
    """One smoke run with three samplers, screened levers, a seed and two extra EMA tracks, scored halfway and at
    its end: its rows and output."""
    folder = tmp_path_factory.mktemp("smoke")
    out = folder / "rows.jsonl"
    stdout = run_quality(image_folder, "--quick", "--samplers", "ddim:5,dpm++:5,ddim:5:1", "--set", "RECIPE=faster",
                         "--adam-betas", "0.9,0.999", "--seed", 3, "--ema-tracks", "raw,power:3",
                         "--score-at", 2, "--cache", folder / "cache", "--json", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return [row for row in rows if row["updates"] == 4], stdout, out, folder / "cache", rows


def test_quality_smoke_run_scores_every_sampler_and_names_its_levers(smoke_run):
    rows, stdout, out, cache, _ = smoke_run
    assert [row["sampler"] for row in rows if row["weights"] == "ema"] == ["ddim:5", "dpm++:5", "ddim:5:1"]
    for row in rows:
        assert row["fd"] >= 0 and row["train_min"] > 0 and row["sample_min"] > 0
        assert row["command"].endswith("--json " + str(out))
        assert row["row"] == "notebook RECIPE=faster adam-betas=0.9,0.999 seed=3"  # --set, the screened levers
        assert row["seed"] == 3
    assert stdout.count("RESULT notebook") == 10  # halfway and at the end
    assert len(list(cache.glob("scorer-*.pt"))) == 1  # the scorer is cached for the next row


def test_extra_ema_tracks_are_scored_from_the_same_run(smoke_run):
    rows = smoke_run[0]
    assert [(row["sampler"], row["weights"]) for row in rows] == [("ddim:5", "ema"), ("dpm++:5", "ema"),
                                                                   ("ddim:5:1", "ema"), ("ddim:5", "raw"),
                                                                   ("ddim:5", "power:3")]
    assert len({row["train_min"] for row in rows}) == 1  # one trained model, three sets of weights
    assert len({row["fd"] for row in rows if row["sampler"] == "ddim:5"}) == 3  # and they differ


def test_score_at_scores_the_same_samplers_along_the_run(smoke_run):
    rows, all_rows = smoke_run[0], smoke_run[4]
    halfway = all_rows[:len(all_rows) - len(rows)]
    assert [row["updates"] for row in halfway] == [2] * 5 and all_rows[len(halfway):] == rows
    assert [(row["sampler"], row["weights"]) for row in halfway] == [(row["sampler"], row["weights"]) for row in rows]
    assert halfway[0]["train_min"] < rows[0]["train_min"]
    assert all(a["fd"] != b["fd"] for a, b in zip(halfway, rows, strict=True))  # the model moved on


def test_scorer_check_ranks_real_images_first(image_folder, smoke_run, tmp_path):
    out = tmp_path / "check.jsonl"
    run_quality(image_folder, "--check-scorer", "--quick", "--cache", smoke_run[3], "--json", out)  # its scorer
    rows = json.loads(out.read_text())["check_scorer"]
    real = rows["real (other half of the test set)"]["fd"]
    assert real < rows["uniform noise"]["fd"]
    real_colours = rows["real (other half of the test set)"]  # the ratios' noise floor: both halves are real
    assert all(abs(real_colours[f"{name}_ratio"] - 1) < 0.25 for name in ("brightness", "contrast", "saturation"))
    assert rows["uniform noise"]["neighbour_difference_ratio"] > 2 * real_colours["neighbour_difference_ratio"]


def test_every_row_reports_its_colours_as_ratios_to_the_real_images(smoke_run):
    for row in smoke_run[0]:
        assert {"brightness_ratio", "contrast_ratio", "saturation_ratio", "neighbour_difference_ratio"} <= set(row)
    assert "saturation" in smoke_run[1]  # and prints them


def test_colour_stats_measure_what_they_say():
    quality = load_quality()
    grey, red = torch.full((1, 3, 4, 4), 128, dtype=torch.uint8), torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    red[:, 0] = 200
    stripes = torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    stripes[..., ::2] = 255  # every other column white
    assert quality.colour_stats(grey) == {"brightness": 128, "contrast": 0, "saturation": 0, "neighbour_difference": 0}
    assert quality.colour_stats(red)["saturation"] == 1
    assert quality.colour_stats(stripes)["neighbour_difference"] == 255  # across: 255 every step; down: 0
