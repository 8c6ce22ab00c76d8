"""Interactive apps (ipywidgets + plotly ``FigureWidget``).

Each app separates a plain *compute* function (no UI, testable, e.g. :func:`longtail_view`)
from the code that draws its result into widgets, so every callback can run headless.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import nn

from . import metrics
from .data import PROFILES, ToyData, batch_class_stats, make_toy
from .models import toy_model
from .plots import accuracy_bar_trace, region_traces
from .train import History, fit, predict


@dataclass
class LongTailView:
    """Everything notebook 01 shows for one setting of the sliders."""
    data: ToyData
    model: nn.Module
    history: History
    per_class_acc: np.ndarray
    standard_error: float
    balanced_error: float
    shots: dict
    batch_size: int
    batch_stats: dict


def longtail_view(rho: float = 100.0, profile: str = "exp", *, kind: str = "gaussian", n_classes: int = 5,
                  n_max: int = 500, seed: int = 0, epochs: int = 200, lr: float = 0.05, batch_size: int = 32,
                  many: int = 100, few: int = 20) -> LongTailView:
    """Sample the toy problem, train plain ERM (cross-entropy) and evaluate on the balanced test set."""
    data = make_toy(kind, n_classes, n_max, rho, profile, seed=seed)
    model = toy_model(kind, n_classes, seed)
    history = fit(model, data.x_train, data.y_train, epochs=epochs, lr=lr, seed=seed, progress=False)
    y_pred = predict(model, data.x_test)
    per_class_acc = metrics.per_class_accuracy(data.y_test, y_pred, n_classes)
    return LongTailView(
        data, model, history,
        per_class_acc=per_class_acc,
        # error on test data distributed like the training data: sum_c prior_c * error_c
        standard_error=float(np.dot(data.prior, 1 - per_class_acc)),
        balanced_error=1 - metrics.balanced_accuracy(data.y_test, y_pred, n_classes),
        shots=metrics.shot_accuracy(data.y_test, y_pred, data.counts, many, few),
        batch_size=batch_size,
        batch_stats=batch_class_stats(data.counts, min(batch_size, int(data.counts.sum()))),
    )


def longtail_readout(view: LongTailView) -> str:
    """An HTML summary: errors, many/medium/few, and what a mini-batch holds of the rarest class."""
    fmt = lambda v: "n/a" if np.isnan(v) else f"{v:.1%}"  # noqa: E731
    tail = view.data.n_classes - 1
    shots = " &middot; ".join(f"{k}: {fmt(v)}" for k, v in view.shots.items())
    return (
        f"<b>rho = {view.data.info['rho']:g}</b>, profile <i>{view.data.info['profile']}</i>, "
        f"counts {list(map(int, view.data.counts))}<br>"
        f"standard error (test weighted like training): {view.standard_error:.1%} &nbsp; "
        f"<b>balanced error</b>: {view.balanced_error:.1%}<br>"
        f"accuracy by split: {shots}<br>"
        f"a batch of {view.batch_size} holds on average {view.batch_stats['expected'][tail]:.2f} examples of "
        f"class {tail}; P(none at all) = {view.batch_stats['p_none'][tail]:.0%}"
    )


def longtail_figure(view: LongTailView, widget: bool = False) -> go.Figure:
    """Decision regions (left) and per-class test accuracy (right); a ``FigureWidget`` if ``widget``."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.12,
                        subplot_titles=("decision regions of plain ERM (training points)",
                                        "per-class test accuracy"))
    for trace in region_traces(view.model, view.data):
        fig.add_trace(trace, row=1, col=1)
    fig.add_trace(accuracy_bar_trace(view.per_class_acc, view.data.counts), row=1, col=2)
    fig.update_layout(width=980, height=460, legend=dict(itemsizing="constant", x=0.5, y=1.0),
                      margin=dict(t=60, b=40))
    fig.update_yaxes(scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", row=1, col=2)
    return go.FigureWidget(fig) if widget else fig


def update_figure_traces(fig: go.Figure, traces: list) -> None:
    """Replace the data of ``fig``'s traces, in order, by those of ``traces`` (same types)."""
    with fig.batch_update():
        for old, new in zip(fig.data, traces):
            old.update({k: v for k, v in new.to_plotly_json().items() if k != "type"})


class LongTailApp:
    """``rho`` slider + profile selector: regenerate the data, retrain ERM, redraw in place.

    ``app.widget`` is what a notebook displays; ``app.update(rho=..., profile=...)`` is the
    same callback the sliders call, usable without a browser.
    """

    def __init__(self, rho: float = 100.0, profile: str = "exp", **view_kwargs):
        import ipywidgets as W

        self.view_kwargs = view_kwargs
        self.view = longtail_view(rho, profile, **view_kwargs)
        self.figure = longtail_figure(self.view, widget=True)
        self.rho = W.FloatLogSlider(value=rho, base=10, min=0, max=3, step=0.05, description="rho",
                                    continuous_update=False, readout_format=".0f")
        self.profile = W.Dropdown(options=PROFILES, value=profile, description="profile")
        self.readout = W.HTML(longtail_readout(self.view))
        self._setting = False
        for control in (self.rho, self.profile):
            control.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox([self.rho, self.profile]), self.figure, self.readout])

    def _on_change(self, _change) -> None:
        if not self._setting:
            self.update()

    def update(self, rho: float | None = None, profile: str | None = None) -> LongTailView:
        """Set the controls (if given), recompute the view and redraw; returns the new view."""
        self._setting = True
        try:
            if rho is not None:
                self.rho.value = rho
            if profile is not None:
                self.profile.value = profile
        finally:
            self._setting = False
        self.view = longtail_view(self.rho.value, self.profile.value, **self.view_kwargs)
        update_figure_traces(self.figure, longtail_figure(self.view).data)
        self.readout.value = longtail_readout(self.view)
        return self.view
