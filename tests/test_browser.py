"""The widget notebooks in a real JupyterLab, driven by headless Chromium (Playwright).

For each notebook that builds a widget app: run all cells, check that every plotly figure and every
slider renders (no "Error displaying widget"), move a slider with the mouse and check that the
app's figure data changed. Screenshots go to ``artifacts/browser/``.

Needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package (a test dependency). Without them the test skips and says so.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from conftest import NOTEBOOKS, ROOT, chromium_or_skip

ARTIFACTS = ROOT / "artifacts" / "browser"
WIDGET_NOTEBOOKS = [p for p in NOTEBOOKS if "_app(" in p.read_text()]
chromium_or_skip()   # skips the module without Chromium; CI sets ELM_REQUIRE_BROWSER=1: then it fails
pytest.importorskip("playwright.sync_api", reason="pip install playwright to run the browser test")

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A private JupyterLab on a free port, serving a copy of the notebooks (autosave cannot touch
    the committed ones) from the folder ``work``; yields ``(url, token, work)``; shut down with its
    kernels at the end."""
    work = tmp_path_factory.mktemp("lab")
    for nb in NOTEBOOKS:
        shutil.copy(nb, work / nb.name)
    port, token = _free_port(), "elm-lite-test"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(work / ".config"), JUPYTER_RUNTIME_DIR=str(work / ".runtime"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--allow-root",
         f"--LabApp.user_settings_dir={work / '.settings'}", f"--LabApp.workspaces_dir={work / '.workspaces'}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "lab.log", "w"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"JupyterLab did not start; log:\n{(work / 'lab.log').read_text()[-3000:]}")
    yield base, token, work
    req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        proc.wait(timeout=30)
    except Exception:
        proc.kill()


def _wait_idle(page, timeout_s: float) -> None:
    """Wait until the kernel status reads Idle and no cell shows the busy prompt ``[*]``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        busy = page.locator(".jp-InputPrompt:has-text('[*]')").count()
        status = page.locator(".jp-StatusBar-TextItem:has-text('Idle')").count()
        if status and not busy:
            return
        page.wait_for_timeout(500)
    raise AssertionError("the notebook did not finish running in time")


def _run_all_cells(browser, base: str, token: str, name: str):
    """Open notebook ``name`` in the lab, Run All Cells, wait until idle; returns ``(page, errors)``
    (the page's JavaScript errors, collected as they happen)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector(".jp-StatusBar-TextItem:has-text('Idle')", timeout=60_000)
    for toast in page.locator(".jp-toast-button:has-text('No')").all():  # the news / update toast
        toast.click()
    page.locator(".jp-Notebook").click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_timeout(2000)
    _wait_idle(page, timeout_s=300)
    return page, errors


TRACEBACK = ".jp-OutputArea-output [data-mime-type='application/vnd.jupyter.stderr']:has-text('Traceback')"
FINGERPRINT = """el => JSON.stringify((el.data || []).map(t => [t.type, (t.x || []).length,
    t.z ? JSON.stringify(t.z).length + ':' + JSON.stringify(t.z).split('1').length : '',
    t.y ? JSON.stringify(t.y).slice(0, 200) : '']))"""


@pytest.mark.parametrize("path", WIDGET_NOTEBOOKS, ids=lambda p: p.name)
def test_widgets_render_and_react_in_jupyterlab(path, lab, browser):
    base, token, _ = lab
    stem = path.stem
    page, errors = _run_all_cells(browser, base, token, path.name)

    app = page.locator(".widget-vbox").first
    app.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / f"{stem}-1-after-run.png"), full_page=False)

    assert page.locator("text=Error displaying widget").count() == 0, "a widget failed to render"
    assert page.locator(TRACEBACK).count() == 0
    n_code_figures = len([c for c in nbformat.read(path, 4).cells if c.cell_type == "code" and ".show()" in c.source])
    assert page.locator(".js-plotly-plot").count() >= n_code_figures + 1, "missing plotly figures"
    assert app.locator(".widget-slider").count() >= 1, "the app shows no slider"
    if stem.startswith("04"):  # issue 13: the delta_max slider moves the quantity the readout names
        before, after = _drag_slider_and_check(page, app, ARTIFACTS / f"{stem}-2-after-slider.png", slider=1)
        assert "delta_max = 0.5" in before and "delta_max = 0.5" not in after
        assert abs(_tail_training_margin(after) - _tail_training_margin(before)) > 0.05, (before, after)
    else:
        _drag_slider_and_check(page, app, ARTIFACTS / f"{stem}-2-after-slider.png")
    _push_slider_to_both_ends(page, app, ARTIFACTS / f"{stem}-3-slider-ends.png")
    for k, readout in enumerate(SECOND_APPS.get(stem[:2], ())):   # the notebook's further apps, by their readout
        more = page.locator(".widget-vbox").filter(has_text=readout).last
        _drag_slider_and_check(page, more, ARTIFACTS / f"{stem}-{4 + 2 * k}-app-{k + 2}-after-slider.png")
        _push_slider_to_both_ends(page, more, ARTIFACTS / f"{stem}-{5 + 2 * k}-app-{k + 2}-slider-ends.png")
    assert not [e for e in errors if "widget" in e.lower()], errors
    page.close()


# Notebooks with more than one app: the readout text that finds each further one (the first is found above).
SECOND_APPS = {"02": ("error under it",)}


def _tail_training_margin(readout: str) -> float:
    return float(re.search(r"training embedding margin (-?[0-9.]+)", readout).group(1))


def _drag_slider_and_check(page, app, screenshot, slider: int = 0) -> tuple[str, str]:
    """Drag the app's slider number ``slider`` to the left with the mouse; the figure's data and
    the readout must change. Returns the readout's text before and after."""
    figure = app.locator(".js-plotly-plot").first
    assert figure.is_visible()
    before = figure.evaluate(FINGERPRINT)
    readout_before = app.locator(".widget-html").last.inner_text()
    handle = app.locator(".widget-slider").nth(slider).locator(".noUi-handle")
    handle.scroll_into_view_if_needed()  # JupyterLab renders long notebooks lazily: bring the slider on screen
    page.wait_for_timeout(500)
    box = handle.bounding_box()
    assert box is not None and 0 <= box["y"] <= page.viewport_size["height"], f"the slider is off screen: {box}"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] - 80, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    deadline = time.time() + 60
    while time.time() < deadline and figure.evaluate(FINGERPRINT) == before:
        page.wait_for_timeout(500)
    page.wait_for_timeout(1000)
    app.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot), full_page=False)
    assert figure.evaluate(FINGERPRINT) != before, "moving the slider did not change the figure"
    readout_after = app.locator(".widget-html").last.inner_text()
    assert readout_after != readout_before, "the readout did not update"
    return readout_before, readout_after


def _push_slider_to_both_ends(page, app, screenshot, slider: int = 0) -> None:
    """Drag the app's slider number ``slider`` past the left end of its track, then past the right end
    (the handle stops at the first and the last position); wherever the slider's value changed, the
    figure must redraw, and the readout must never report a failed setting."""
    figure = app.locator(".js-plotly-plot").first
    control = app.locator(".widget-slider").nth(slider)
    for side in ("left", "right"):
        before, value = figure.evaluate(FINGERPRINT), control.locator(".widget-readout").inner_text()
        handle = control.locator(".noUi-handle")
        handle.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        box, track = handle.bounding_box(), control.locator(".noUi-target").bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] / 2, y)
        page.mouse.down()
        page.mouse.move(track["x"] - 40 if side == "left" else track["x"] + track["width"] + 40, y, steps=10)
        page.mouse.up()
        page.wait_for_timeout(500)
        if control.locator(".widget-readout").inner_text() == value:
            continue                                    # it was at that end already
        deadline = time.time() + 90
        while time.time() < deadline and figure.evaluate(FINGERPRINT) == before:
            page.wait_for_timeout(500)
        page.wait_for_timeout(500)
        assert figure.evaluate(FINGERPRINT) != before, f"the slider's {side} end did not redraw the figure"
        readout = app.locator(".widget-html").last.inner_text()
        assert "this setting failed" not in readout, readout
    app.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot), full_page=False)


def test_workshop_dashboard_in_voila(browser, tmp_path):
    """`make workshop` serves notebooks/workshop.ipynb with Voila: five panels render with their
    figures, no error or traceback or unfinished-exercise text, and a slider moves its figure."""
    nb = ROOT / "notebooks" / "workshop.ipynb"
    shutil.copy(nb, tmp_path / nb.name)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(tmp_path / nb.name), "--no-browser",
                             f"--port={port}", "--Voila.ip=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "voila.log", "w"))
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        deadline = time.time() + 60
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
                break
            except Exception as e:
                if time.time() > deadline or proc.poll() is not None:
                    log = (tmp_path / "voila.log").read_text()[-2000:]
                    raise AssertionError(f"voila did not answer:\n{log}") from e
                time.sleep(1)
        page.wait_for_function("document.querySelectorAll('.elm-panel .js-plotly-plot').length >= 5",
                               timeout=180_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "workshop-1-open.png"), full_page=True)
        text = page.inner_text("body")
        for bad in ("Error displaying widget", "Traceback", "NOT YET", "Error"):
            assert bad not in text, f"the dashboard shows {bad!r}"
        margins = page.locator(".elm-panel").nth(1)                 # panel 2: tau
        margins.scroll_into_view_if_needed()
        _drag_slider_and_check(page, margins, ARTIFACTS / "workshop-2-after-slider.png")
        for k in range(3):                                          # panels 1-3 have a slider each
            panel = page.locator(".elm-panel").nth(k)
            _push_slider_to_both_ends(page, panel, ARTIFACTS / f"workshop-3-panel-{k + 1}-ends.png")
        page.close()
    finally:
        proc.terminate()


def test_capstone_runs_in_jupyterlab(lab, browser):
    """The capstone (notebook 07) has no widget app: it runs all its cells at smoke sizes in the lab, and
    every figure renders without a traceback."""
    base, token, work = lab
    capstone = ROOT / "notebooks" / "07_what_to_use.ipynb"
    nb = nbformat.read(capstone, 4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = parameters.source.replace("SMOKE = False", "SMOKE = True")
    nbformat.write(nb, work / capstone.name)                  # the lab serves a copy: the smoke version
    page, errors = _run_all_cells(browser, base, token, capstone.name)
    assert page.locator(TRACEBACK).count() == 0
    shown = sum(".show()" in c.source for c in nb.cells if c.cell_type == "code")
    assert page.locator(".js-plotly-plot").count() >= shown, "a figure did not render"
    assert page.locator("text=paired differences to LA").count() >= 1
    assert not errors, errors
    page.close()
