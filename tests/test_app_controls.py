"""Every position of every control of every app gives a live figure and a readout: each control of the
apps of notebooks 01, 02, 04 and 05 and of the workshop dashboard is driven to both ends of its range and
to a middle value through ``app.update`` (the callback a slider triggers), and every move must redraw
the figure and raise nothing. A failing setting shows its error in the readout (never a stale figure)."""
import math

import numpy as np
import plotly.io as pio
import pytest

import elm_lite as el
from elm_lite import widgets
from elm_lite.experiments import train_embedding_model
from elm_lite.recipes import EMBEDDING_TOY

pytestmark = pytest.mark.slow   # every control of every app, each training its models: make check leaves these out

W = pytest.importorskip("ipywidgets")
SMALL = dict(n_max=200, epochs=40)   # small problems: the ranges are what is tested, not the learning


def positions(control) -> list:
    """The values a learner can reach at both ends of ``control`` and in its middle."""
    if isinstance(control, (W.FloatLogSlider,)):
        lo, hi, base = control.min, control.max, control.base
        return [base ** lo, base ** hi, base ** (lo + round((hi - lo) / 2 / control.step) * control.step)]
    if isinstance(control, (W.FloatSlider, W.IntSlider)):
        mid = control.min + round((control.max - control.min) / 2 / control.step) * control.step
        return [control.min, control.max, type(control.value)(mid)]
    values = [v[1] if isinstance(v, tuple) else v for v in control.options]   # dropdowns, selection sliders
    return [values[0], values[-1], values[len(values) // 2]]


def drive_every_control(app) -> int:
    """Move each control of ``app`` to its ends and middle, one at a time, the others at the app's
    starting setting; returns the number of moves."""
    moves, start = 0, app.values()
    for name, control in app.controls.items():
        app.update(**start)
        for value in positions(control):
            if np.isclose(float(value), float(control.value)) if not isinstance(value, str) else value == control.value:
                continue
            before = pio.to_json(app.figure)
            app.update(**{name: value})
            assert pio.to_json(app.figure) != before, f"{name} = {value}: the figure did not change"
            assert "failed" not in app.readout.value, app.readout.value
            moves += 1
    return moves


def test_notebook_01_app_reaches_every_rho_and_profile():
    app = widgets.longtail_app(rho=100, **SMALL)
    assert drive_every_control(app) >= 4
    app.update(rho=1000)                          # the slider's end: the head grows so the tail keeps one example
    assert app.view.data.counts[-1] >= 1 and "rho = 1000" in app.readout.value


def test_notebook_02_app_reaches_every_loss_tau_and_rho():
    app = widgets.logit_margin_app("la", tau=1.0, rho=100, n_max=200, epochs=30, n_eval=500)
    assert drive_every_control(app) >= 8
    app.update(method="ce")
    assert "tau does not apply" in app.readout.value


def test_the_views_build_the_slider_end_that_used_to_fail():
    """``rho = 1000`` with ``n_max = 500`` once raised inside the callback (only the browser console
    showed it); the head now grows to ``ceil(rho)``."""
    assert widgets.head_count(500, 1000.0) == 1000 and widgets.head_count(500, 100.0) == 500
    assert widgets.head_count(500, 10 ** 2.95) == math.ceil(10 ** 2.95)
    view = widgets.longtail_view(1000.0, n_max=500, epochs=5)
    assert view.data.counts[0] == 1000 and view.data.counts[-1] == 1


def test_notebook_04_app_reaches_every_setting_on_and_off_its_grid():
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 100, "rho": 20}, seed=0)
    recipe = dict(epochs=3)
    baseline = train_embedding_model(data, el.methods.get("la"), seed=0, **recipe)
    grid = widgets.embedding_margin_grid(data, baseline, [(1.0, 0.5, 0.1, "centroid")], **recipe)
    app = widgets.embedding_margin_app(data=data, baseline=baseline, grid=grid, **recipe)
    assert drive_every_control(app) >= 10


def test_notebook_05_app_reaches_every_spread_margin_and_n():
    app = widgets.margin_spread_app(1.0, 0.1, 5)
    assert drive_every_control(app) >= 8


def test_every_dashboard_panel_reaches_both_ends():
    from elm_lite.results import load_results
    _, apps = widgets.workshop_dashboard(load_results("workshop_sweeps.npz"))
    assert sum(drive_every_control(app) for app in apps) >= 4 * 2


def test_a_failing_setting_says_so_in_the_readout():
    app = widgets.margin_spread_app(1.0, 0.1, 5)
    figure = pio.to_json(app.figure)

    def broken(**values):
        raise RuntimeError("the simulation broke")
    app._compute = broken
    with pytest.raises(RuntimeError):
        app.update(margin=0.2)
    assert "this setting failed" in app.readout.value and "the simulation broke" in app.readout.value
    assert pio.to_json(app.figure) == figure         # the previous setting's figure, said so in the readout
    app.controls["margin"].value = 0.3                # a slider move: the error goes to the readout, not the console
    assert "this setting failed" in app.readout.value


def test_notebook_02_deployment_prior_app_reaches_both_ends():
    from elm_lite import toolkit_apps
    base = toolkit_apps.prior_shift_base(el.make_toy("gaussian", 5, 200, 100, seed=0), epochs=30, n_eval=300)
    app = toolkit_apps.prior_shift_app(1.0, base=base)
    assert drive_every_control(app) >= 2
    app.update(shift=2.0)
    assert "shift 2" in app.readout.value and app.view.prior[-1] > app.view.prior[0]


def test_notebook_03_weight_decay_app_reaches_both_ends():
    from elm_lite import toolkit_apps
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 100, "rho": 20}, seed=0)
    app = toolkit_apps.weight_norm_app(0.0, grid=toolkit_apps.weight_norm_grid(data, epochs=3))
    assert drive_every_control(app) >= 2
    with pytest.raises(ValueError, match="weight_decay must be one of"):
        toolkit_apps.weight_norm_view(0.5, grid={0.0: app.view})
