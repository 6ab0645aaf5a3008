"""The whole notebook, top to bottom, headless through papermill, with small parameters."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import PIL.Image
import pytest

from headless import execute_notebook
from notebook import NOTEBOOK, ROOT
from stand_ins import random_inception_weights
from tiny import SMALL

CELL_SECONDS = 600  # a cell of these small runs that takes longer has hung: fail it rather than wait for CI's limit


def run_notebook(folder, ipython_dir=None, environment=None, notebook=NOTEBOOK, **parameters):
    """Execute the notebook (or a changed copy of it at `notebook`) in `folder` and return the executed notebook as a
    dict. Its kernel runs this test's own interpreter, with an IPython profile of its own (`ipython_dir`, else an
    empty one) and `environment` added, so that no kernel or startup file of the user's can change the run."""
    output, jupyter = folder / "executed.ipynb", folder / ".jupyter"
    (jupyter / "kernels" / "notebook-tests").mkdir(parents=True, exist_ok=True)
    (jupyter / "kernels" / "notebook-tests" / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python",
         "display_name": "the tests' interpreter"}))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in dict(JUPYTER_PATH=str(jupyter), IPYTHONDIR=str(ipython_dir or folder / ".ipython"),
                                **(environment or {})).items():
            patch.setenv(name, value)
        execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(folder),
                         kernel_name="notebook-tests", progress_bar=False, execution_timeout=CELL_SECONDS)
    return json.loads(output.read_text())


def code_cells(executed):
    return [cell for cell in executed["cells"] if cell["cell_type"] == "code"]


def printed(executed):
    """Everything the run printed, and the plain-text form of what it displayed as text (the training panel)."""
    outputs = [out for cell in code_cells(executed) for out in cell["outputs"]
               if "image/png" not in out.get("data", {})]
    return "".join("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")) for out in outputs)


def cell_with(executed, code):
    (cell,) = [cell for cell in code_cells(executed) if code in "".join(cell["source"])]
    return cell


def shown_widgets(executed):
    """The state of each widget the run displayed inside a box, from the widget state nbclient stores with the
    executed notebook."""
    models = executed["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    children = {child.removeprefix("IPY_MODEL_") for model in models.values()
                for child in model["state"].get("children", [])}
    return [models[model_id]["state"] for model_id in children]


def assert_ran_cleanly(executed, class_conditional=False):
    errors = [out for cell in code_cells(executed) for out in cell["outputs"] if out["output_type"] == "error"]
    assert not errors
    for cell in code_cells(executed):
        code = "".join(cell["source"])
        draws_inside = re.search(r"widgets\.(Output\(|interactive_output)", code)  # a widget holds its figure
        if ("sampling_classes is" in code and not class_conditional) or draws_inside:
            continue  # the class grid is for class-conditional models only
        if "definitions" not in cell["metadata"].get("tags", []) and ("show_images(" in code or "plt.show()" in code):
            assert any("image/png" in out.get("data", {}) for out in cell["outputs"]), f"no figure from: {code[:60]}"


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """Inception-v3 with random weights: the evaluation section runs offline (its FID means nothing)."""
    return str(random_inception_weights(tmp_path_factory.mktemp("inception") / "random_inception.pth"))


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, inception_weights, real_train):
    folder = tmp_path_factory.mktemp("folder_run")
    return folder, run_notebook(folder, environment={"INCEPTION_WEIGHTS": inception_weights},  # read by section 9
                                DATASET=str(real_train), **SMALL)


def test_runs_on_an_image_folder(folder_run):
    folder, executed = folder_run
    assert_ran_cleanly(executed)
    (run_dir,) = (folder / "checkpoints").iterdir()
    assert [p.name for p in sorted(run_dir.iterdir())] == ["step_00000003.pt", "step_00000006.pt",
                                                           "weights_float16.pt"]  # section 7 exports the last
    samples = sorted(p.name for p in (folder / "samples" / run_dir.name).iterdir())
    assert samples[:3] == ["denoising.gif", "epoch_0001.png", "epoch_0002.png"]
    assert [name.split("_")[:2] for name in samples[3:]] == [["generated", "ddim"], ["generated", "ddpm"],
                                                             ["generated", "dpm-solver++"]]
    assert "5000 training images" in printed(executed)


def test_training_shows_tqdms_bar_and_one_panel_redrawn_in_place(folder_run):
    _, executed = folder_run
    outputs = cell_with(executed, "progress = train(")["outputs"]
    bar, panel, closing = outputs  # updates replaced the panel in place; then the closing line
    assert "application/vnd.jupyter.widget-view+json" in bar["data"]  # tqdm.auto's widget in a Jupyter kernel
    assert [panel["output_type"], closing["output_type"]] == ["display_data", "stream"]
    html = "".join(panel["data"]["text/html"])
    assert "<progress" not in html and html.count("data:image/png;base64,") == 2  # losses, latest grid
    bar_line, *epochs = "".join(panel["data"]["text/plain"]).splitlines()  # the text form: tqdm's line first
    assert bar_line.startswith("epoch 2/2: 100%") and " 6/6 [" in bar_line and "loss=" in bar_line
    assert [line[:15] for line in epochs] == ["epoch 1/2: loss", "epoch 2/2: loss"]


def test_the_bar_widget_ends_full_and_green(folder_run):
    states = shown_widgets(folder_run[1])
    texts = {state["value"].replace("\u2007", " ").strip() for state in states  # tqdm's widget: figure spaces
             if state["_model_name"] == "HTMLModel"}
    assert "epoch 2/2: 100%" in texts  # the label left of the bar
    assert any(re.fullmatch(r"6/6 \[.+(update/s|s/update), loss=\d\.\d{4}\]", text) for text in texts), texts
    (training,) = [state for state in states if state["_model_name"] == "FloatProgressModel" and state["max"] == 6]
    assert training["value"] == 6 and training["bar_style"] == "success"


def test_an_unconditional_run_offers_no_class_in_the_explorer(folder_run):
    descriptions = [state.get("description") for state in shown_widgets(folder_run[1])]
    assert "sampler" in descriptions
    assert "class" not in descriptions


def test_the_denoising_gif_is_shown_inline(folder_run):
    _, executed = folder_run
    outputs = cell_with(executed, "frames = denoising_gif(")["outputs"]
    assert any("image/gif" in out.get("data", {}) for out in outputs)


def test_evaluation_gives_fid_and_kid_and_caches_the_real_features(folder_run):
    folder, executed = folder_run
    text = printed(executed)
    assert re.search(r"FID [\d.]+, KID -?[\d.]+ ± [\d.]+: 4 generated \(dpm\+\+, 10 steps, eta 1\) against "
                     r"4 training images "
                     r"at 32x32", text), text[-2000:]
    assert re.search(r"computed, cached in data/fid_cache/NoTrainInceptionV3-[0-9a-f]{8}_4x32px_", text)
    assert len(list((folder / "data" / "fid_cache").iterdir())) == 1


def test_a_trained_file_samples_without_training(folder_run, real_train, tmp_path):
    """README, "Checkpoints and resuming": EPOCHS = 0 and section 7's checkpoint_path set to a file, then run all."""
    (weights,) = (folder_run[0] / "checkpoints").glob("*/weights_float16.pt")
    notebook = json.loads(NOTEBOOK.read_text())
    (cell,) = [cell for cell in notebook["cells"] if "".join(cell["source"]).startswith("checkpoint_path = None")]
    cell["source"] = "".join(cell["source"]).replace("checkpoint_path = None", f"checkpoint_path = {str(weights)!r}")
    (tmp_path / "sampling.ipynb").write_text(json.dumps(notebook))
    executed = run_notebook(tmp_path, notebook=tmp_path / "sampling.ipynb", DATASET=str(real_train),
                            **dict(SMALL, EPOCHS=0, EVAL_IMAGES=0))
    assert_ran_cleanly(executed)
    text = printed(executed)
    assert "Trained 0 of 0 epochs (0 updates)" in text and f"from {weights} (" in text  # section 7's export
    (run_dir,) = (tmp_path / "samples").iterdir()
    assert len(list(run_dir.glob("generated_*.png"))) == 3 and not list(run_dir.glob("epoch_*.png"))


def test_the_memorisation_check_finds_the_nearest_training_images(folder_run):
    _, executed = folder_run
    assert re.search(r"nearest training image: [\d.]+ on average for these samples; between training images "
                     r"[\d.]+ \(median of 64\)", printed(executed))


def make_figures():
    """docs/make_figures.py, the README's figure script, as a module."""
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    return figures


def test_the_readme_figure_of_a_runs_reverse_process_is_drawn_from_its_folder(folder_run, tmp_path):
    figures = make_figures()
    checkpoint = figures.newest_checkpoint(folder_run[0])  # what docs/short_run.sh gives it
    assert checkpoint.name == "step_00000006.pt"
    summary = figures.run_summary(folder_run[0] / "executed.ipynb", checkpoint)
    assert re.fullmatch(r"2 epochs \(6 updates of 8 images\) of a 1\.5M-parameter U-Net \(BASE_CHANNELS = 16, "
                        r"RECIPE = 'paper'\) at 32x32 on cpu \(\d+ CPU threads\) in \d+ min", summary), summary
    path = figures.denoising_figure(checkpoint, summary, tmp_path / "denoising-steps.jpg", count=2)
    assert PIL.Image.open(path).size[0] > 400  # eight steps side by side


def test_the_readme_figure_of_the_training_panel_is_the_runs_own_panel(folder_run, tmp_path):
    from test_browser import require_browser  # chromium renders the panel's HTML

    require_browser()
    path = make_figures().panel_figure(folder_run[0], tmp_path / "training-panel.png", width=600)
    image = PIL.Image.open(path).convert("RGB")
    assert image.width == 600 and image.height > 150  # the bar's line, the epoch lines, the loss plots and the grid
    assert len(image.getcolors(2**24)) > 20  # pictures, not a blank page


def test_the_readme_figures_of_a_gpu_run_are_drawn_from_what_its_scripts_bring_back(folder_run, inception_weights,
                                                                                     real_train, tmp_path):
    folder, _ = folder_run  # in place of bench/default_run.sh's papermill run on a GPU
    out = tmp_path / "out"
    subprocess.run([sys.executable, ROOT / "bench" / "default_run.py", "--run", folder, "--data", real_train,
                    "--inception", inception_weights, "--out", out, "--epochs", "2", "--every", "1", "--samples", "4",
                    "--final-samples", "4", "--device", "cpu", "--wait-seconds", "10"], check=True)
    rows = [json.loads(line) for line in (out / "fid.jsonl").read_text().splitlines()]
    assert [(row["epoch"], row["update"], row["samples"]) for row in rows] == [(1, 3, 4), (2, 6, 4)]
    progress = json.loads((out / "progress.json").read_text())
    assert [end[:2] for end in progress["epoch_ends"]] == [[1, 3], [2, 6]] and len(progress["losses"]) == 6
    shutil.copy(folder / "executed.ipynb", out)  # bench/default_run.sh has papermill write it there
    figures = make_figures()
    paths, caption = figures.result_figures(out, tmp_path, count=4)
    assert re.fullmatch(r"2 epochs \(6 updates of 8 images\) of a 1\.5M-parameter U-Net \(BASE_CHANNELS = 16, "
                        r"RECIPE = 'paper'\) at 32x32 on cpu \(\d+ CPU threads\) in \d+ min; FID [\d.]+ \(4 samples, "
                        r"dpm\+\+ 10 steps, eta 1, against as many training images of CIFAR-10's JPEG copy, "
                        r"re-encoded at quality about 75, which scores differently from the PNG originals\)",
                        caption), caption
    assert [path.name for path in paths] == ["result-samples.jpg", "result-progress.jpg", "result-curves.png"]
    assert PIL.Image.open(paths[0]).size == (2 * 34 + 2,) * 2  # 2x2 samples of 32 pixels, 2 between and around
    (run,) = (folder / "samples").iterdir()
    grid, ema = PIL.Image.open(run / "epoch_0002.png").convert("RGB"), figures.ema_grids(out / "samples.tar")[2]
    assert ema.size == (4 * 34 + 2,) * 2  # 4x4 samples of 32 pixels: the EMA half
    assert ema.tobytes() == grid.crop((grid.width - ema.width, 0, *grid.size)).tobytes()
    spans = figures.epoch_spans(figures.training_start(folder / "executed.ipynb"), progress["epoch_ends"])
    assert [span[:2] for span in spans] == [(1, 1), (2, 2)] and all(0 < span[2] < 600 for span in spans)


def test_resuming_starts_at_the_saved_epoch(folder_run, inception_weights, real_train, tmp_path):
    folder = tmp_path / "resumed"
    shutil.copytree(folder_run[0], folder)  # a copy: the first run's own tests see its folder as it left it
    executed = run_notebook(folder, environment={"INCEPTION_WEIGHTS": inception_weights}, DATASET=str(real_train),
                            **dict(SMALL, EPOCHS=3, RESUME="latest"))
    assert_ran_cleanly(executed)
    text = printed(executed)
    first, resumed = sorted((folder / "checkpoints").iterdir())  # the resumed run writes to a new folder
    assert f"Resumed from {Path('checkpoints') / first.name / 'step_00000006.pt'} at epoch 2" in text
    assert "epoch 3/3" in text and "epoch 1/3" not in text and "epoch 2/3" not in text
    assert sorted(p.name for p in first.iterdir()) == ["step_00000003.pt", "step_00000006.pt",
                                                        "weights_float16.pt"]  # left as it was
    assert sorted(p.name for p in resumed.iterdir()) == ["resumed_from.txt", "step_00000009.pt",
                                                          "weights_float16.pt"]
    assert (resumed / "resumed_from.txt").read_text().strip() == str((first / "step_00000006.pt").resolve())
    assert re.search(r"real features \(read from data/fid_cache/NoTrainInceptionV3-[0-9a-f]{8}_4x32px_", text)  # cache


def test_a_bad_parameter_stops_before_any_download_or_training(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        run_notebook(tmp_path, IMAGE_SIZE=30)
    assert error.value.ename == "ConfigError" and "IMAGE_SIZE must be a positive multiple of 8" in error.value.evalue
    assert not (tmp_path / "data").exists() and not (tmp_path / "checkpoints").exists()
