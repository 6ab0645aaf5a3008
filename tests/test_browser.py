"""The notebook where people use it: JupyterLab in a real browser (Debian's chromium, driven by Playwright).
Runs every cell with small parameters, then checks that plots and widgets render and that the explorers answer.
Screenshots go to test-artifacts/browser/ (or $TEST_ARTIFACTS/browser/)."""

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from notebook import NOTEBOOK, ROOT
from stand_ins import random_inception_weights
from tiny import SMALL

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]  # the machine has no internet


def require_browser():
    if not Path(CHROMIUM).exists():
        message = f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM"
        if os.environ.get("REQUIRE_BROWSER_TEST") == "1":  # .ci/run sets this: CI must run the browser test
            pytest.fail(message)
        pytest.skip(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(folder):
    """JupyterLab settings: every cell stays in the page (no windowing), and no news or update checks."""
    settings = {"notebook-extension/tracker": '{"windowingMode": "none"}',
                "apputils-extension/notification": '{"fetchNews": "false", "checkForUpdates": false}'}
    for name, text in settings.items():
        path = folder / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory, real_train):
    """A JupyterLab server on 127.0.0.1 with a token, serving the notebook with small parameters injected."""
    require_browser()
    folder = tmp_path_factory.mktemp("lab")
    weights = random_inception_weights(tmp_path_factory.mktemp("inception") / "random_inception.pth")
    notebook = parameterize_notebook(load_notebook_node(str(NOTEBOOK)),
                                     dict(SMALL, DATASET=str(real_train)))
    nbformat.write(notebook, folder / NOTEBOOK.name)
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(folder / ".runtime"), JUPYTER_CONFIG_DIR=str(folder / ".config"),
               INCEPTION_WEIGHTS=str(weights))  # the evaluation cell reads it from the environment
    log = open(folder / "jupyterlab.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
         f"--LabApp.user_settings_dir={write_settings(folder / '.settings')}",
         f"--LabApp.workspaces_dir={folder / '.workspaces'}", "--LabApp.extension_manager=readonly"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {(folder / 'jupyterlab.log').read_text()}") from None
                time.sleep(0.5)
        yield f"{url}/lab/tree/{NOTEBOOK.name}?token={token}", folder
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    """The notebook open in chromium after Run > Run All Cells has finished."""
    from playwright.sync_api import sync_playwright

    url, folder = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)  # the kernel is up
        run_all_cells(page)
        wait_until_run(page, timeout=240)
        page.screenshot(path=ARTIFACTS / "after-run-all.png")
        yield page
        browser.close()


def prompts(page):
    """Each code cell's prompt, "[3]:"; a collapsed cell's placeholder has a prompt of its own, outside the input."""
    return page.locator(".jp-CodeCell .jp-InputArea .jp-InputPrompt").all_inner_texts()


def run_all_cells(page, attempts=3):
    """Run > Run All Cells, again if the first cell has not started after 20 s (a kernel still settling)."""
    for _ in range(attempts):
        page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
        page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if prompts(page)[0].strip() != "[ ]:":  # "[*]:" or "[1]:"
                return
            page.wait_for_timeout(250)
    raise AssertionError(f"Run All Cells did not start the notebook: {prompts(page)[:3]}")


def wait_until_run(page, timeout):
    """Wait until no cell is queued or running, and the kernel has been idle for two checks in a row."""
    deadline, idle_checks = time.monotonic() + timeout, 0
    while idle_checks < 2:
        assert time.monotonic() < deadline, f"the notebook did not finish in {timeout} s: {prompts(page)}"
        page.wait_for_timeout(1000)
        busy = any("*" in p for p in prompts(page)) or page.locator(
            ".jp-Notebook-ExecutionIndicator[data-status='busy']").count()
        idle_checks = 0 if busy else idle_checks + 1


def cell(page, code):
    """The code cell whose source contains `code`."""
    return page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=code)).first


def shoot(locator, name):
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=ARTIFACTS / f"{name}.png")


def test_every_cell_runs_without_an_error(page):
    assert all(p.strip().strip("[]:").isdigit() for p in prompts(page)), prompts(page)
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0
    assert page.get_by_text("Traceback").count() == 0


def test_widgets_render(page):
    assert page.get_by_text("Error displaying widget").count() == 0
    assert page.get_by_text("Loading widget...").count() == 0
    assert page.locator(".widget-slider").count() >= 3  # DDIM steps, eta; the timestep slider
    assert page.locator(".jupyter-widgets button", has_text="generate").count() == 1
    forward = cell(page, "t_slider = widgets.IntSlider")
    assert forward.locator(".widget-output img").count() == 1  # drawn when the cell ran
    shoot(forward, "timestep-slider")


def test_plots_and_the_gif_render(page):
    figures = page.locator(".jp-RenderedImage img")
    assert figures.count() >= 10
    assert all(figures.nth(i).evaluate("image => image.complete && image.naturalWidth > 0")
               for i in range(figures.count()))
    gif = cell(page, "frames = denoising_gif(")
    assert gif.locator("img[src^='data:image/gif']").count() == 1
    shoot(gif, "denoising-gif")
    shoot(cell(page, "distances, neighbours = nearest_training_images"), "memorisation")


def test_training_shows_tqdms_bar_then_one_panel_with_losses_and_grid(page):
    training = cell(page, "progress = train(")
    bar, panel, closing = (training.locator(".jp-OutputArea-output").nth(i) for i in range(3))
    assert bar.locator(".widget-hprogress .progress-bar.progress-bar-success").count() == 1  # tqdm's, full: green
    text = bar.inner_text().replace("\u2007", " ").replace("\n", " ")  # tqdm's widget writes figure spaces
    assert re.search(r"epoch 2/2: 100%.*6/6 \[.+, loss=\d", text), text
    assert panel.locator("img").count() == 2  # the loss plots and the latest grid
    assert "epoch 2/2: loss" in panel.inner_text()
    assert closing.inner_text().startswith("Trained 2 of 2 epochs")
    shoot(training, "training-panel")


def test_the_evaluation_section_prints_fid_and_kid(page):
    evaluation = cell(page, "eval_count, eval_size = min(config.eval_images")
    printed = evaluation.locator(".jp-OutputArea").inner_text()  # the output only: the source names FID and KID too
    assert re.search(r"FID [\d.]+, KID -?[\d.]+ ± [\d.]+: 4 generated", printed), printed
    shoot(evaluation, "evaluation")


def test_the_sampler_explorer_draws_when_asked(page):
    explorer = cell(page, "sampler_picker = widgets.Dropdown")
    assert explorer.locator(".widget-output img").count() == 0
    explorer.locator("button", has_text="generate").click()
    explorer.locator(".widget-output img").wait_for(timeout=60_000)
    shoot(explorer, "sampler-explorer")


def test_moving_the_timestep_slider_redraws_the_image(page):
    forward = cell(page, "t_slider = widgets.IntSlider")
    before = forward.locator(".widget-output img").get_attribute("src")
    forward.locator(".widget-slider .noUi-handle").focus()
    page.keyboard.press("End")  # to t = T - 1
    page.wait_for_function("([cell, before]) => { const img = cell.querySelector('.widget-output img');"
                           " return img && img.src !== before; }", arg=[forward.element_handle(), before],
                           timeout=30_000)
    assert forward.locator(".widget-readout").inner_text().strip() == str(SMALL["TIMESTEPS"] - 1)
    shoot(forward, "timestep-slider-moved")


def test_the_plumbing_cells_are_collapsed_and_the_papers_code_is_open(page):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    collapsed = [cell.source for cell in notebook.cells
                 if cell.cell_type == "code" and cell.metadata.get("jupyter", {}).get("source_hidden")]
    assert any("class Config" in source for source in collapsed) and any("def save_checkpoint" in source
                                                                        for source in collapsed)
    placeholders = page.locator(".jp-CodeCell .jp-InputPlaceholder")
    assert placeholders.count() == len(collapsed)
    assert all(placeholders.nth(i).is_visible() for i in range(placeholders.count()))
    inputs = page.locator(".jp-CodeCell .jp-InputArea")  # a collapsed cell has a placeholder instead
    assert inputs.count() + len(collapsed) == page.locator(".jp-CodeCell").count()
    assert all(inputs.nth(i).is_visible() for i in range(inputs.count()))
    # the first lines of the schedule, the samplers, the update, the loop and the parameters (the editor draws
    # only the lines in view, so a cell is found by its first line)
    for code in ("class Schedule", "def half_log_snr", "GRAD_CLIP = 1.0", "def train(", "IMAGE_SIZE = 64"):
        assert page.locator(".jp-CodeCell .jp-InputArea", has_text=code).first.is_visible(), code
    page.locator(".jp-Cell").first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "top-of-the-notebook.png")
