"""The workshop slide deck (``make slides``, tools/make_slides.py), opened in headless Chromium offline.

The deck is built into a temporary folder and served by a local static server; every request that leaves
it is blocked and recorded. The test steps through every slide with reveal.js's own API and checks that
each slide's figures have drawn, that nothing logged a console error, and that nothing was asked of the
network; reveal.js and plotly.js must come from the deck's own folder. Screenshots go to
``artifacts/slides/``.
"""
import base64
import json
import re
import sys

import numpy as np
import pytest
from conftest import ROOT, chromium_or_skip, open_offline

from elm_lite.results import load_results
from elm_lite.widgets import real_panel_readout, real_panel_view, workshop_dashboard

sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402  (tools/ is no package)
import make_slides  # noqa: E402

chromium_or_skip()
pytest.importorskip("playwright.sync_api", reason="pip install playwright to run the browser test")
pytest.importorskip("sphinx_revealjs", reason="pip install sphinx-revealjs (the site extra): reveal.js for the deck")
pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "artifacts" / "slides"


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    out = tmp_path_factory.mktemp("deck") / "slides"
    make_slides.build(out)
    return out


def test_deck_refers_only_to_its_own_files(deck):
    page = (deck / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(not re.match(r"[a-z]+:|//", r) for r in refs), refs
    for ref in refs:
        assert (deck / ref).is_file(), f"{ref} is not in the deck's folder"
    counts = json.loads((deck / "slides.json").read_text())
    every_setting = len(load_results("workshop_sweeps.npz")["real_settings"])    # panel 5 shows each one
    assert counts["figures"] == sum(len(settings) if settings is not None else every_setting
                                    for _, settings, _ in make_slides.STEPS)


def test_deck_tells_the_dashboards_story_in_its_order():
    """Every dashboard panel, in the dashboard's order, under its own title, with its own readouts; the real
    data's panel at every shipped setting (the end-to-end image rows with no mean above LA's); one LA number
    for the toy problem (panel 3's "LA alone" is panel 4's LA bar)."""
    sweeps = load_results("workshop_sweeps.npz")
    deck = make_slides.slides(sweeps)
    titles = [make_slides.panel_title(row) for row in workshop_dashboard(sweeps)[0].children]
    panels = deck[1:-1]
    assert list(dict.fromkeys(s["title"] for s in panels)) == titles and len(titles) == 5
    real = [s for s in panels if s["title"] == titles[4] and s["figure"]]
    assert len(real) == len(sweeps["real_settings"])
    for slide, setting in zip(real, sweeps["real_settings"]):
        assert slide["text"] == real_panel_readout(real_panel_view(str(setting), sweeps=sweeps))
        if "carved splits" not in str(setting):   # trained end to end on images: no mean above LA's
            assert "no method's mean above LA's" in slide["text"]
    la_alone = {m for s in panels for m in re.findall(r"LA alone (\d+\.\d)%", s["text"])}
    la = [str(m) for m in sweeps["methods"]].index("la")
    methods_figure = next(s["figure"] for s in panels if s["title"] == titles[3] and s["figure"])
    bars = json.loads(methods_figure)["data"][0]["y"]    # balanced accuracy, the panel's first measure
    if isinstance(bars, dict):                           # plotly >= 6 writes arrays as base64
        bars = np.frombuffer(base64.b64decode(bars["bdata"]), dtype=bars["dtype"])
    la_bar = bars[la]
    assert la_alone == {f"{100 * sweeps['method_table'][la, 0].mean():.1f}"} == {f"{100 * la_bar:.1f}"}


def test_every_slide_shows_offline_without_errors(deck, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url, httpd = build_site.serve(deck)
    page, outside, errors, local = open_offline(browser, url + "index.html", viewport=(1280, 800))
    try:
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
        page.evaluate("Reveal.configure({transition: 'none', backgroundTransition: 'none'})")  # still screenshots
        total = page.evaluate("Reveal.getTotalSlides()")
        assert total == json.loads((deck / "slides.json").read_text())["slides"]
        seen = []
        for k in range(total):
            if k:
                page.evaluate("Reveal.next()")
            page.wait_for_timeout(150)
            current = page.evaluate("Reveal.getIndices().h")
            seen.append(current)
            figures = page.evaluate("""() => { const s = Reveal.getCurrentSlide();
                return [s.querySelectorAll('.elm-slide-figure').length, s.querySelectorAll('.main-svg').length,
                        s.querySelectorAll('.elm-slide-figure .bars, .elm-slide-figure .hm, .elm-slide-figure image')
                         .length]; }""")
            assert figures[0] == 0 or (figures[1] > 0 and figures[2] > 0), f"slide {k}: its figure did not draw"
            page.screenshot(path=str(ARTIFACTS / f"slide-{k:02d}.png"))
        assert seen == list(range(total)) and page.evaluate("Reveal.isLastSlide()")
        assert not outside, f"the deck asked for outside resources: {outside}"
        assert not errors, f"console errors: {errors}"
        assert any(u.endswith("/plotly.min.js") for u in local) and any(u.endswith("/reveal/dist/reveal.js")
                                                                         for u in local)
    finally:
        page.close()
        httpd.shutdown()
