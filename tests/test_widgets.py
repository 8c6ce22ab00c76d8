"""Widget callbacks are plain functions; the apps update their figures without a browser."""
import re

import numpy as np
import pytest

from elm_lite import losses as L
from elm_lite.widgets import longtail_app, longtail_figure, longtail_readout, longtail_view

pytestmark = pytest.mark.outcome   # trains and compares: CI runs it again under another arithmetic

SMALL = dict(n_max=200, epochs=60)


@pytest.mark.parametrize("seed", range(3))
def test_view_shows_erm_hurting_the_tail(seed):
    """Notebook 01's claim on three draws. Measured (2-core AMD EPYC): head accuracy 0.97-0.98, the
    rarest class 0.23-0.40; balanced minus standard error 0.16-0.20."""
    view = longtail_view(100, n_max=500, epochs=200, seed=seed)
    acc = view.per_class_acc
    assert acc[0] > 0.9 and acc[-1] < acc[0] - 0.3          # the tail class suffers
    assert view.balanced_error > view.standard_error + 0.05  # and the standard error hides it


@pytest.mark.parametrize("seed", range(3))
def test_balanced_data_treats_classes_alike(seed):
    """Measured on the same three draws with rho = 1: per-class accuracies within 0.05-0.06."""
    view = longtail_view(1, n_max=500, epochs=200, seed=seed)
    assert view.per_class_acc.max() - view.per_class_acc.min() < 0.15


def test_readout_mentions_errors_and_batch():
    text = longtail_readout(longtail_view(10, **SMALL))
    assert "balanced error" in text and "a batch of 32" in text and "rho = 10" in text


def test_static_figure_has_regions_points_and_bars():
    view = longtail_view(10, **SMALL)
    fig = longtail_figure(view)
    types = [t.type for t in fig.data]
    assert types == ["heatmap"] + ["scatter"] * 5 + ["bar"]
    assert len(fig.data[5].x) == view.data.counts[4]


def test_app_update_changes_figure_in_place():
    app = longtail_app(rho=1, **SMALL)
    fig = app.figure
    before_tail = len(fig.data[5].x)
    before_z = np.array(fig.data[0].z).copy()
    view = app.update(rho=100, profile="step")
    assert app.figure is fig
    assert app.values() == {"rho": pytest.approx(100), "profile": "step"}
    assert len(fig.data[5].x) == view.data.counts[4] == 2 < before_tail
    assert not np.array_equal(np.array(fig.data[0].z), before_z)
    assert "rho = 100" in app.readout.value


def test_slider_move_triggers_the_callback():
    app = longtail_app(rho=1, **SMALL)
    app.controls["rho"].value = 50  # as a learner dragging the slider would
    assert app.view.data.info["rho"] == pytest.approx(50)
    assert len(app.figure.data[5].x) == app.view.data.counts[4]


def test_app_rejects_unknown_control():
    app = longtail_app(rho=1, **SMALL)
    with pytest.raises(ValueError, match="unknown control"):
        app.update(tau=2)


def test_logit_margin_view_and_app():
    from elm_lite.methods import LOGIT_MARGIN_METHODS
    from elm_lite.widgets import logit_margin_app, logit_margin_figure, logit_margin_view
    view = logit_margin_view("ce", rho=100, epochs=60)
    assert np.allclose(view.pairwise_margins, 0)  # plain CE demands no margin
    types = [t.type for t in logit_margin_figure(view).data]
    assert types == ["heatmap"] * 3 + ["scatter"] * 5 + ["bar"]
    app = logit_margin_app("ce", tau=1.0, rho=100, epochs=60)
    band_before = np.array(app.figure.data[1].z).sum()
    view = app.update(method="la")
    assert np.array(app.figure.data[1].z).sum() > band_before == 0  # LA draws a margin band
    assert "<b>LA</b>" in app.readout.value and "Bayes-balanced" in app.readout.value
    for method in LOGIT_MARGIN_METHODS:  # every selector entry trains and draws
        app.update(method=method)


def test_embedding_margin_app_updates_in_place():
    import elm_lite as el
    from elm_lite import methods
    from elm_lite.experiments import train_embedding_model
    from elm_lite.recipes import EMBEDDING_TOY
    from elm_lite.widgets import embedding_margin_app
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 100, "rho": 20})
    baseline = train_embedding_model(data, methods.get("la"), epochs=3)
    app = embedding_margin_app(data=data, baseline=baseline, epochs=3)
    bars = np.array(app.figure.data[-1].y)
    app.update(lam=0.0)
    assert app.values()["lam"] == 0.0 and "lambda = 0" in app.readout.value
    assert not np.allclose(np.array(app.figure.data[-1].y), bars)
    assert "two</i> jittered views" in app.readout.value        # why lambda = 0 differs from the grey bars
    for placement in L.MARGIN_PLACEMENTS:                       # every margin form trains and draws
        app.update(placement=placement)


def _tail_training_margin(readout: str) -> float:
    return float(re.search(r"training embedding margin (-?[0-9.]+)", readout).group(1))


def test_delta_slider_moves_the_tail_training_margin_it_names():
    """Issue 13: with the course's margin form, moving delta_max moves the quantity the readout names."""
    import elm_lite as el
    from elm_lite import methods
    from elm_lite.experiments import train_embedding_model
    from elm_lite.recipes import EMBEDDING_TOY
    from elm_lite.widgets import embedding_margin_app
    data = el.make_toy(**EMBEDDING_TOY)
    baseline = train_embedding_model(data, methods.get("la"), epochs=15)
    app = embedding_margin_app(delta_max=0.0, data=data, baseline=baseline, epochs=15)
    without = _tail_training_margin(app.readout.value)
    app.update(delta_max=1.0)
    assert _tail_training_margin(app.readout.value) > without + 0.1, app.readout.value


def test_embedding_margin_app_looks_up_its_grid_and_trains_only_off_it(monkeypatch):
    """On the grid a move trains nothing; the looked-up view reads as the one a retrain gives (the
    grid is trained together, which equals training one by one); off the grid it retrains, saying so."""
    import elm_lite as el
    from elm_lite import methods, widgets
    from elm_lite.experiments import train_embedding_model
    from elm_lite.recipes import EMBEDDING_TOY
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 100, "rho": 20})
    baseline = train_embedding_model(data, methods.get("la"), epochs=3)
    keys = [(lam, d, 0.1, form) for form in ("positive", "centroid") for lam in (0.5, 1.0) for d in (0.0, 0.5)]
    grid = widgets.embedding_margin_grid(data, baseline, keys, epochs=3)
    app = widgets.embedding_margin_app(1.0, 0.5, data=data, baseline=baseline, grid=grid, epochs=3)
    assert "(precomputed)" in app.readout.value
    on_grid = app.readout.value
    monkeypatch.setattr(widgets, "train_embedding_models", lambda *a, **k: pytest.fail("trained on the grid"))
    app.update(lam=0.5, delta_max=0.0, placement="positive")
    assert "(precomputed)" in app.readout.value
    monkeypatch.undo()
    retrained = widgets.embedding_margin_view(1.0, 0.5, data=data, baseline=baseline, epochs=3)
    assert widgets.embedding_margin_readout(retrained).replace("trained now: off the precomputed grid",
                                                               "precomputed") == on_grid
    app.update(lam=0.25)
    assert "off the precomputed grid" in app.readout.value


def test_training_curves_name_the_held_out_curve_for_what_it_is():
    """The curve track_balanced_accuracy records is labelled "held out": notebook 01 draws it on the
    balanced test set (a picture, no choice is made on it), so it is called neither validation nor test
    (issue 31: the plot once read "test", then "validation")."""
    from elm_lite.plots import training_curves_figure
    from elm_lite.train import History
    history = History(epoch=[1, 2], loss=[1.0, 0.5], train_balanced_accuracy=[0.5, 0.7],
                      held_out_balanced_accuracy=[0.4, 0.6])
    names = [trace.name for trace in training_curves_figure(history).data]
    assert names == ["loss", "balanced accuracy (train)", "balanced accuracy (held out)"]
