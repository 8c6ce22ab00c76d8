"""The capstone (notebook 07) in a real JupyterLab, driven by headless Chromium: it has no widget app, so
the widget test of ``test_browser.py`` does not open it; here it runs all its cells (with its smoke
parameters, so that the page finishes in seconds) and every figure renders without a traceback."""
import nbformat
import pytest
from conftest import ROOT
from test_browser import TRACEBACK, _run_all_cells, browser, lab  # noqa: F401 -- fixtures used by name

pytestmark = pytest.mark.browser
CAPSTONE = ROOT / "notebooks" / "07_what_to_use.ipynb"


def test_capstone_runs_in_jupyterlab(lab, browser):  # noqa: F811 -- the imported fixtures
    base, token, work = lab
    nb = nbformat.read(CAPSTONE, 4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = parameters.source.replace("SMOKE = False", "SMOKE = True")
    nbformat.write(nb, work / CAPSTONE.name)                  # the lab serves a copy: the smoke version
    page, errors = _run_all_cells(browser, base, token, CAPSTONE.name)
    assert page.locator(TRACEBACK).count() == 0
    shown = sum(".show()" in c.source for c in nb.cells if c.cell_type == "code")
    assert page.locator(".js-plotly-plot").count() >= shown, "a figure did not render"
    assert page.locator("text=paired differences to LA").count() >= 1
    assert not errors, errors
    page.close()
