"""The course's static web site (`make site`), built at smoke sizes, opened in headless Chromium offline.

The site is served by a local static server; every request that leaves it is blocked and recorded.
Each page must load with no console error and no outside request, with plotly.js from the site's one
local copy; each kernel-free app (:mod:`elm_lite.static_apps`) must change its figure and its readout
when a slider is moved or a button pressed. ``ELM_SITE_DIR=site`` reuses a site already built (e.g. by
``make site SMOKE=1``) instead of building one. Screenshots go to ``artifacts/site/``.
"""
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import ROOT, chromium_or_skip
from conftest import open_offline as _open

sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402  (tools/ is no package)

chromium_or_skip()   # skips the module without Chromium; CI sets ELM_REQUIRE_BROWSER=1: then it fails
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright to run the browser test")
pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "artifacts" / "site"
FINGERPRINT = """gd => { let s = JSON.stringify(gd.data.map(t => [t.type, t.x, t.y, t.z]), (k, v) =>
    ArrayBuffer.isView(v) ? Array.from(v) : v); let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0; return s.length + ':' + h; }"""


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> pathlib.Path:
    if os.environ.get("ELM_SITE_DIR"):
        return pathlib.Path(os.environ["ELM_SITE_DIR"]).resolve()
    out = tmp_path_factory.mktemp("site") / "site"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py"), "--smoke", "--out", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def server(site):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url, httpd = build_site.serve(site)
    yield url
    httpd.shutdown()


def test_site_has_every_notebook_and_doc(site):
    built = build_site.pages(site)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.stem}.html" in built
    handouts = [f"docs/handouts/{p.stem}.html" for p in (ROOT / "docs" / "handouts").glob("*.md")]
    for doc in ("README.html", "docs/teachers.html", "search.html", *handouts):
        assert doc in built
    assert "docs/answer_key.html" not in built, "the answer key is for teachers, not the public site"
    assert [p.name for p in site.rglob("*plotly*.js")] == ["plotly.min.js"], "plotly.js must be in the site once"
    for page in built:
        assert "* plotly.js v" not in (site / page).read_text(), f"{page} embeds plotly.js instead of linking it"


def test_every_page_loads_offline_without_errors(site, server, browser):
    for name in build_site.pages(site):
        page, outside, errors, local = _open(browser, server + name)
        page.wait_for_function(build_site.READY_JS, timeout=60_000)
        page.wait_for_timeout(300)
        assert not outside, f"{name} asked for outside resources: {outside}"
        assert not errors, f"{name}: console errors {errors}"
        plotly = [u for u in local if "plotly" in u]
        assert len(plotly) == 1 and "/_static/plotly.min.js" in plotly[0], f"{name} loads plotly.js as {plotly}"
        assert page.evaluate("typeof Plotly") == "object"
        n = page.locator(".js-plotly-plot").count()
        assert n == page.locator(".elm-figure, .elm-static-app").count(), f"{name}: a figure did not draw"
        if name.startswith("notebooks/"):
            page.screenshot(path=str(ARTIFACTS / f"{pathlib.Path(name).stem}.png"), full_page=False)
        page.close()


# each page with live apps: (how many apps, how many controls at least) -- notebook 02: logit margins and the
# deployment prior; notebook 03: weight decay (one slider); the workshop: its five panels, one control each
APP_PAGES = {"01_long_tail_problem": (1, 2), "02_logit_margins": (2, 2), "03_embeddings": (1, 1),
             "04_embedding_margins": (1, 2), "05_elm": (1, 2), "workshop": (5, 5)}


@pytest.mark.parametrize("stem", APP_PAGES)
def test_every_static_control_changes_its_figure(stem, server, browser):
    page, outside, errors, _ = _open(browser, f"{server}notebooks/{stem}.html")
    apps = page.locator(".elm-static-app")
    page.wait_for_function(build_site.READY_JS, timeout=60_000)
    n_apps, n_controls = APP_PAGES[stem]
    assert apps.count() == n_apps, "one kernel-free app per live app"
    moved = 0
    for i in range(apps.count()):
        app = apps.nth(i)
        app.scroll_into_view_if_needed()
        figure, readout = app.locator(".js-plotly-plot"), app.locator(".elm-static-readout")
        for kind, selector in (("slider", ".slider-group"), ("menu", ".updatemenu-header-group")):
            for k in range(app.locator(selector).count()):
                # from the page's first state, another value; a second or third if that one draws the same
                page.reload()
                page.wait_for_function(build_site.READY_JS, timeout=60_000)
                app.scroll_into_view_if_needed()
                before, text = figure.evaluate(FINGERPRINT), readout.inner_html()
                for target in _targets(app, kind, k):
                    _move(page, app, kind, k, target)
                    try:
                        page.wait_for_function("([gd, fp]) => (" + FINGERPRINT + ")(gd) !== fp",
                                               arg=[figure.element_handle(), before], timeout=5_000)
                        break
                    except playwright.TimeoutError:
                        continue
                else:
                    raise AssertionError(f"{stem} app {i}: moving {kind} {k} never changed the figure")
                assert readout.inner_html() != text, f"{stem} app {i}: {kind} {k} left the readout as it was"
                moved += 1
        page.screenshot(path=str(ARTIFACTS / f"{stem}-app{i}-moved.png"), full_page=False)
    assert moved >= n_controls, f"{stem}: only {moved} controls"
    assert not outside and not errors, (outside, errors)
    page.close()


def _targets(app, kind: str, k: int) -> list[int]:
    """Up to three steps (or buttons) of control ``k`` other than its active one: the ends first."""
    entry, items = ("sliders", "steps") if kind == "slider" else ("updatemenus", "buttons")
    n, active = app.locator(".js-plotly-plot").evaluate(
        f"gd => [gd.layout.{entry}[{k}].{items}.length, gd.layout.{entry}[{k}].active]")
    return [i for i in dict.fromkeys((0, n - 1, n // 2, 1)) if i != active and 0 <= i < n][:3]


def _move(page, app, kind: str, k: int, target: int) -> None:
    """Move plotly slider ``k`` of ``app`` to step ``target`` (a click on its rail), or press button
    ``target`` of menu ``k`` (a dropdown opens first)."""
    if kind == "slider":
        slider = app.locator(".slider-group").nth(k)
        rail = slider.locator(".slider-rail-touch-rect")
        rail.scroll_into_view_if_needed()
        box, steps = rail.bounding_box(), slider.locator(".slider-label").count()
        page.mouse.click(box["x"] + 15 + (box["width"] - 30) * target / max(steps - 1, 1), box["y"] + box["height"] / 2)
        return
    menu = app.locator(".updatemenu-header-group").nth(k)
    if menu.locator(".updatemenu-header").count():          # a dropdown: open it, its buttons show apart
        menu.locator(".updatemenu-header").click()
        app.locator(".updatemenu-dropdown-button-group .updatemenu-dropdown-button").nth(target).click()
    else:
        menu.locator(".updatemenu-button").nth(target).click()


def test_search_finds_a_lesson(server, browser):
    page, outside, errors, _ = _open(browser, server + "search.html?q=imbalance")
    page.wait_for_selector("#search-results li", timeout=30_000)
    assert page.locator("#search-results li a[href*='notebooks/01_long_tail_problem']").count() >= 1
    assert not outside and not errors, (outside, errors)
    page.close()
