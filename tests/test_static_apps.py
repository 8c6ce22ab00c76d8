"""elm_lite.static_apps: the kernel-free versions of the apps hold, per setting, exactly what the live
app's own functions draw and print; grids, refused settings and the page's note."""
import base64
import gzip
import html
import json
import re

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from elm_lite import static_apps, widgets
from elm_lite.results import load_results


def unpack(fragment: str) -> dict:
    payload = re.search(r'class="elm-packed">([^<]*)</script>', fragment).group(1)
    return json.loads(gzip.decompress(base64.b64decode(payload)))


def note(fragment: str) -> str:
    return html.unescape(re.search(r'class="elm-static-note"><i>(.*?)</i>', fragment).group(1))


def test_a_dashboard_panel_holds_what_the_live_panel_draws():
    sweeps = load_results("workshop_sweeps.npz")
    _, panels = widgets.workshop_dashboard(sweeps)
    fragment = static_apps.static_app(panels[1])                       # tau: every option of its slider
    spec = unpack(fragment)
    taus = [float(t) for t in sweeps["taus"]]
    assert len(spec["states"]) == len(taus) and spec["controls"] == [["sliders", "tau"]]
    assert [s["label"] for s in spec["controls_layout"]["sliders"][0]["steps"]] == [f"{t:g}" for t in taus]
    for i, tau in enumerate(taus):
        view = widgets.margin_panel_view(tau, sweeps=sweeps)
        state = spec["states"][str(i)]
        assert state["readout"] == widgets.margin_panel_readout(view)
        assert state["data"] == json.loads(pio.to_json(widgets.margin_panel_figure(view), validate=False))["data"]
    assert spec["initial"] == [taus.index(1.0)]                        # the live panel's own setting
    assert "coarser" not in note(fragment) and f"{len(taus)} states" in note(fragment)
    assert panels[1].values() == {"tau": 1.0}


def test_a_coarser_grid_is_said_and_the_app_is_left_as_it_was():
    app = widgets.margin_spread_app(1.0, 0.1, 5)
    fragment = static_apps.static_app(app, {"noise": (0.5, 1.0), "margin": (0.1,), "n_train": (5,)})
    spec = unpack(fragment)
    assert spec["controls"] == [["sliders", "noise"]] and sorted(spec["states"]) == ["0", "1"]
    assert "noise (sets the spread): 2 of the live app's 37" in note(fragment)
    assert "offset b: 1 of the live app's 17" in note(fragment)
    assert app.values() == {"noise": 1.0, "margin": 0.1, "n_train": 5}
    assert spec["states"]["1"]["readout"] == widgets.margin_spread_readout(widgets.margin_spread_view(1.0, 0.1, 5))


def toy_app(calls: list) -> widgets.App:
    """A two-control app that refuses x = 3, for checking the builder without training anything."""
    def compute(x, kind):
        calls.append((x, kind))
        if x == 3:
            raise ValueError("x = 3 is refused: pick 1 or 2")
        return {"x": x, "kind": kind}

    def figure(view, widget=False):
        fig = go.Figure(go.Bar(y=[view["x"], len(view["kind"])]))
        return go.FigureWidget(fig) if widget else fig
    controls = {"x": W.SelectionSlider(options=[1, 2, 3], value=1, description="x"),
                "kind": W.Dropdown(options=[("first", "a"), ("second", "bb")], value="a", description="kind")}
    return widgets.App(controls, compute, figure, lambda view: f"x = {view['x']}, kind {view['kind']}")


def test_refused_settings_are_left_out_and_said_and_menus_carry_labels():
    app = toy_app([])
    fragment = static_apps.static_app(app)                              # None: every option of each control
    spec = unpack(fragment)
    assert spec["controls"] == [["sliders", "x"], ["updatemenus", "kind"]]
    assert sorted(spec["states"]) == ["0,0", "0,1", "1,0", "1,1"]     # x = 3 refused for both kinds
    assert "Left out: 2 settings the app refuses (x = 3), e.g. x = 3 is refused: pick 1 or 2" in note(fragment)
    assert [b["label"] for b in spec["controls_layout"]["updatemenus"][0]["buttons"]] == ["first", "second"]
    assert spec["states"]["1,1"]["readout"] == "x = 2, kind bb"


def test_a_grid_that_is_no_product_and_bad_grids():
    app = toy_app([])
    spec = unpack(static_apps.static_app(app, [(1, "a"), (2, "a"), (2, "bb")]))
    assert sorted(spec["states"]) == ["0,0", "1,0", "1,1"]           # the page moves to the nearest stored one
    with pytest.raises(ValueError, match="must name every control"):
        static_apps.static_app(app, {"x": (1, 2)})
    with pytest.raises(ValueError, match="sliders"):
        static_apps.static_app(widgets.margin_spread_app())
    with pytest.raises(ValueError, match="refused every setting"):
        static_apps.static_app(app, [(3, "a")])


def test_show_draws_nothing_in_a_live_kernel(monkeypatch):
    calls = []
    app = toy_app(calls)
    monkeypatch.delenv(static_apps.ENV, raising=False)
    static_apps.show(app)
    assert calls == [(1, "a")]                                          # only the app's own first view
