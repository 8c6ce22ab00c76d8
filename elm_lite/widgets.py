"""Interactive apps (ipywidgets + plotly ``FigureWidget``).

Each app separates a plain *compute* function (no UI, testable, e.g. :func:`longtail_view`)
from the code that draws its result into widgets, so every callback can run headless.
"""
from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass
from functools import partial

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import nn

from . import losses, methods, metrics
from .data import PROFILES, ToyData, batch_class_stats, bayes_predict, make_toy, monte_carlo_errors
from .experiments import (
    EmbeddingRun,
    margin_spread_simulation,
    run_summary,
    train_embedding_models,
    train_logit_method,
)
from .models import toy_model
from .plots import (
    SCENE_AXIS,
    accuracy_bar_trace,
    align_to,
    boundary_mask,
    class_color,
    embedding_traces,
    grid_logits,
    margin_band_mask,
    mask_trace,
    pca_basis,
    point_traces,
    region_heatmap,
    region_traces,
)
from .recipes import APP_RHO_MAX, ELM_RECOMMENDED, LOGIT_TOY, LONGTAIL_TOY, TOY_2D, TOY_2D_N_EVAL, TOY_N_MAX
from .train import History, fit, predict


def head_count(n_max: int, rho: float) -> int:
    """The head class's example count for an app's ``rho`` slider: ``n_max``, raised to ``ceil(rho)``
    when ``rho > n_max`` so that every position of the slider (up to rho = 1000) builds a dataset whose
    rarest class keeps at least one example."""
    if np.isfinite(rho) and rho > TOY_N_MAX:   # ceil(rho) examples would not fit in memory
        raise ValueError(f"rho={rho:g} would need a head class of {math.ceil(rho):,} examples for the rarest class "
                         f"to keep one; the toy problems build at most {TOY_N_MAX:,}: use rho <= {APP_RHO_MAX} (the "
                         "apps' slider range).")
    return max(int(n_max), math.ceil(rho)) if np.isfinite(rho) else int(n_max)


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


def longtail_view(rho: float = TOY_2D["rho"], profile: str = "exp", *, kind: str = TOY_2D["kind"],
                  n_classes: int = TOY_2D["n_classes"], n_max: int = TOY_2D["n_max"], seed: int = 0,
                  epochs: int = LONGTAIL_TOY["epochs"], lr: float = LONGTAIL_TOY["lr"],
                  batch_size: int = LONGTAIL_TOY["batch_size"], many: int = 100, few: int = 20) -> LongTailView:
    """Sample the toy problem, train plain ERM (cross-entropy) and evaluate on the balanced test set.
    ``n_max`` grows to ``ceil(rho)`` where it must, so that the rarest class keeps one example."""
    data = make_toy(kind, n_classes, head_count(n_max, rho), rho, profile, seed=seed)
    model = toy_model(kind, n_classes, seed)
    history = fit(model, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
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


def _two_panel(left_title: str, right_title: str) -> go.Figure:
    return make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1,
                         subplot_titles=(left_title, right_title))


def _finish_two_panel(fig: go.Figure, widget: bool) -> go.Figure:
    """Shared layout: the plane (left, equal aspect) and per-class accuracy bars (right)."""
    fig.update_layout(width=980, height=520, font=dict(size=11), margin=dict(t=50, b=20),
                      legend=dict(itemsizing="constant", orientation="h", x=0, y=-0.12))
    fig.update_yaxes(scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", row=1, col=2)
    return go.FigureWidget(fig) if widget else fig


def longtail_figure(view: LongTailView, widget: bool = False) -> go.Figure:
    """Decision regions (left) and per-class test accuracy (right); a ``FigureWidget`` if ``widget``."""
    fig = _two_panel("decision regions of plain ERM (training points)", "per-class test accuracy")
    for trace in region_traces(view.model, view.data):
        fig.add_trace(trace, row=1, col=1)
    fig.add_trace(accuracy_bar_trace(view.per_class_acc, view.data.counts), row=1, col=2)
    return _finish_two_panel(fig, widget)


def update_figure_traces(fig: go.Figure, traces: list) -> None:
    """Replace the data of ``fig``'s traces, in order, by those of ``traces`` (same types)."""
    with fig.batch_update():
        for old, new in zip(fig.data, traces):
            old.update({k: v for k, v in new.to_plotly_json().items() if k != "type"})


class App:
    """A widget app: ``controls`` (name -> ipywidget) feed ``compute(**values) -> view``; the view is
    drawn by ``figure(view, widget)`` and summarised by ``readout(view)`` (HTML).

    ``app.widget`` is what a notebook displays; ``app.update(name=value, ...)`` is the same
    callback the controls trigger, usable without a browser. Figures are updated in place.
    """

    def __init__(self, controls: dict, compute, figure, readout, requested: dict | None = None):
        import ipywidgets as W

        for name, value in (requested or {}).items():   # a control would clamp a value outside its range
            check_control_value(name, controls[name], value)
        self.controls, self._compute, self._figure, self._readout = controls, compute, figure, readout
        self.view = compute(**self.values())
        self.figure = figure(self.view, widget=True)
        self.readout = W.HTML(readout(self.view))
        self._setting = False
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox(list(controls.values()), layout=W.Layout(flex_flow="row wrap")), self.figure,
                              self.readout])

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def static_figure(self) -> go.Figure:
        """The current view as a plain figure (for viewers that run no widgets)."""
        return self._figure(self.view)

    def _on_change(self, _change) -> None:
        if not self._setting:
            try:
                self.update()
            except Exception:   # update() showed it in the readout; raised here it would reach only the browser console
                pass

    def update(self, **values):
        """Set the named controls (if given), recompute the view and redraw; returns the view.
        If the computation fails, the readout shows the error (in red) and the error is raised again:
        a slider never leaves a silently stale figure."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown control(s) {sorted(unknown)}; this app has {sorted(self.controls)}.")
        for name, value in values.items():
            check_control_value(name, self.controls[name], value)
        self._setting = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._setting = False
        try:
            view = self._compute(**self.values())
            traces = self._figure(view).data
            text = self._readout(view)
        except Exception as error:
            self.readout.value = (f"<span style='color:#c00'><b>this setting failed</b> "
                                  f"({html.escape(type(error).__name__)}: {html.escape(str(error))}); "
                                  "the figure still shows the previous setting</span>")
            raise
        self.view = view
        update_figure_traces(self.figure, traces)
        self.readout.value = text
        return self.view


def slider_range(control) -> tuple[float, float] | None:
    """The values a slider control can hold, ``(low, high)`` (a log slider's ``base ** min``, ``base ** max``);
    ``None`` for a control without a numeric range (a selector)."""
    if hasattr(control, "options") or not hasattr(control, "max"):
        return None
    base = getattr(control, "base", None)
    return (base ** control.min, base ** control.max) if base else (control.min, control.max)


def check_control_value(name: str, control, value) -> None:
    """Refuse a value that ``control`` would silently clamp to its range (an ipywidgets slider does):
    an app computes with the value it shows, or says why it cannot."""
    bounds = slider_range(control)
    if bounds is None:
        return
    low, high = bounds
    integral = type(control).__name__.startswith("Int")
    kind = numbers.Integral if integral else numbers.Real
    if not (isinstance(value, kind) and not isinstance(value, (bool, np.bool_)) and low <= value <= high):
        raise ValueError(f"{name} must be {'an integer' if integral else 'a number'} in [{low:.4g}, {high:.4g}] "
                         f"(the range of this app's {name} slider), got {value!r}; choose a value inside it, or "
                         "compute that setting with the notebook's code outside the app.")


def _rho_slider(rho: float):
    import ipywidgets as W
    return W.FloatLogSlider(value=rho, base=10, min=0, max=3, step=0.05, description="rho",
                            continuous_update=False, readout_format=".0f")


def longtail_app(rho: float = TOY_2D["rho"], profile: str = "exp", **view_kwargs) -> App:
    """Notebook 01: a ``rho`` slider and a profile selector; regenerate, retrain ERM, redraw."""
    import ipywidgets as W
    controls = {"rho": _rho_slider(rho),
                "profile": W.Dropdown(options=PROFILES, value=profile, description="profile")}
    return App(controls, partial(longtail_view, **view_kwargs), longtail_figure, longtail_readout,
               requested={"rho": rho})


# ----------------------------------------------------------------------------- notebook 02: logit margins

@dataclass
class LogitMarginView:
    """Everything notebook 02's app shows for one setting of its controls."""
    method: str
    tau: float
    data: ToyData
    model: nn.Module
    pairwise_margins: np.ndarray
    errors: dict
    bayes: dict


def logit_margin_view(method: str = "la", tau: float = 1.0, rho: float = TOY_2D["rho"], *,
                      kind: str = TOY_2D["kind"], n_classes: int = TOY_2D["n_classes"], n_max: int = TOY_2D["n_max"],
                      seed: int = 0, epochs: int = LOGIT_TOY["epochs"], lr: float = LOGIT_TOY["lr"],
                      weight_decay: float | None = None, n_eval: int = TOY_2D_N_EVAL) -> LogitMarginView:
    """Train ``method`` on the Gaussian toy problem and measure its errors and the Bayes-balanced
    classifier's on the same fresh balanced sample (``n_eval`` points per class). ``n_max`` grows to
    ``ceil(rho)`` where it must (:func:`head_count`)."""
    data = make_toy(kind, n_classes, head_count(n_max, rho), rho, seed=seed)
    model, loss = train_logit_method(method, data, tau, seed, epochs, lr, weight_decay)
    margins = loss.pairwise_margins().numpy() if hasattr(loss, "pairwise_margins") else np.zeros((n_classes,) * 2)
    return LogitMarginView(method, tau, data, model, margins,
                           errors=monte_carlo_errors(lambda x: predict(model, x), data, n_eval),
                           bayes=monte_carlo_errors(lambda x: bayes_predict(data, x), data, n_eval))


def logit_margin_figure(view: LogitMarginView, widget: bool = False, title: str | None = None) -> go.Figure:
    """Decision regions, margin band (grey), Bayes-balanced boundary (black), training points;
    per-class accuracy on the right. ``title`` (static figures): a heading above both panels."""
    data = view.data
    xs, ys, logits = grid_logits(view.model, data.bounds())
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    bayes_labels = bayes_predict(data, grid).reshape(len(ys), len(xs))
    # titles stay fixed (an app updates traces in place, not titles): the readout names the method
    fig = _two_panel("regions, margin band (grey), Bayes-balanced boundary (black)",
                     "per-class accuracy (balanced sample)")
    plane = [region_heatmap(xs, ys, logits.argmax(-1), data.n_classes),
             mask_trace(xs, ys, margin_band_mask(logits, view.pairwise_margins), "#555555", "margin band", 0.35),
             mask_trace(xs, ys, boundary_mask(bayes_labels), "black", "Bayes-balanced boundary")]
    for trace in plane + point_traces(data):
        fig.add_trace(trace, row=1, col=1)
    fig.add_trace(accuracy_bar_trace(1 - view.errors["per_class"], data.counts), row=1, col=2)
    fig = _finish_two_panel(fig, widget)
    if title:
        fig.update_layout(title=dict(text=title, y=0.98), margin=dict(t=90))
    return fig


def logit_margin_errors(method_names, seeds, **view_kwargs) -> dict[str, dict[str, np.ndarray]]:
    """Notebook 02's comparisons over several seeds (each seed: its own data draw, initialisation and
    evaluation sample): for every method, ``{"balanced": (S,), "per_class": (S, C), "bayes": (S,)}``
    balanced error, per-class error and the Bayes-balanced error of the same draw."""
    out = {}
    for name in method_names:
        views = [logit_margin_view(name, **{**view_kwargs, "seed": seed}) for seed in seeds]
        out[name] = {"balanced": np.array([v.errors["balanced"] for v in views]),
                     "per_class": np.array([v.errors["per_class"] for v in views]),
                     "bayes": np.array([v.bayes["balanced"] for v in views])}
    return out


def logit_margin_table(errors: dict) -> str:
    """A text table of :func:`logit_margin_errors`: balanced error, mean ± sample std over the seeds, and
    the mean per-class accuracy head -> tail; the Bayes-balanced error of the same draws last."""
    n = len(next(iter(errors.values()))["balanced"])
    lines = [f"{'method':36s} {'balanced error':>16s}   per-class accuracy (head -> tail), mean of {n} seeds"]
    for name, e in errors.items():
        mean, sd, _ = metrics.mean_sd(e["balanced"])
        accs = " ".join(f"{1 - v:4.0%}" for v in e["per_class"].mean(0))
        lines.append(f"{methods.get(name).label:36s} {mean:9.1%} ± {sd:4.1%}   {accs}")
    bayes, sd, _ = metrics.mean_sd(next(iter(errors.values()))["bayes"])
    lines.append(f"{'Bayes-balanced':36s} {bayes:9.1%} ± {sd:4.1%}")
    lines.append("(± is the sample standard deviation over seeds, ddof = 1)")
    return "\n".join(lines)


TAU_METHODS = ("la", "posthoc-la")   # the losses of notebook 02's app that the tau slider acts on


def logit_margin_readout(view: LogitMarginView) -> str:
    e, b = view.errors, view.bayes
    accs = ", ".join(f"{1 - err:.0%}" for err in e["per_class"])
    tail, head = view.data.n_classes - 1, 0
    tau = f"tau = {view.tau:g}" if view.method in TAU_METHODS else "tau does not apply to this loss"
    return (f"<b>{methods.get(view.method).label}</b> ({tau}, rho = {view.data.info['rho']:g}): "
            f"<b>balanced error {e['balanced']:.1%}</b> vs Bayes-balanced {b['balanced']:.1%} "
            f"(&plusmn; {max(e['balanced_se'], b['balanced_se']):.1%}); standard error {e['standard']:.1%}<br>"
            f"per-class accuracy, head to tail: {accs}<br>"
            f"margin demanded of the rarest class against the head: "
            f"{view.pairwise_margins[tail, head]:.2f} "
            f"(against itself: the head, {view.pairwise_margins[head, tail]:.2f})")


def logit_margin_app(method: str = "la", tau: float = 1.0, rho: float = TOY_2D["rho"], **view_kwargs) -> App:
    """Notebook 02: method selector, ``tau`` and ``rho`` sliders; retrain the linear model, redraw."""
    import ipywidgets as W
    options = [(methods.get(name).label, name) for name in methods.LOGIT_MARGIN_METHODS]
    controls = {"method": W.Dropdown(options=options, value=method, description="method"),
                "tau": W.FloatSlider(value=tau, min=0, max=3, step=0.1, description="tau",
                                     continuous_update=False),
                "rho": _rho_slider(rho)}
    return App(controls, partial(logit_margin_view, **view_kwargs), logit_margin_figure, logit_margin_readout,
               requested={"tau": tau, "rho": rho})


# ----------------------------------------------------------------------------- notebook 04: embedding margins


@dataclass
class EmbeddingMarginView:
    """One retrain of notebook 04's app, next to the logit-adjustment baseline."""
    lam: float
    delta_max: float
    temperature: float
    placement: str
    data: ToyData
    run: EmbeddingRun
    baseline: EmbeddingRun
    precomputed: bool = False   # looked up in the app's grid (True) or trained for this move


def embedding_margin_view(lam: float = ELM_RECOMMENDED["lam"], delta_max: float = ELM_RECOMMENDED["delta_max"],
                          temperature: float = ELM_RECOMMENDED["temperature"],
                          placement: str = ELM_RECOMMENDED["placement"], *, data: ToyData, baseline: EmbeddingRun,
                          seed: int = 0, **recipe) -> EmbeddingMarginView:
    """Train ELM with ``lam``, ``delta_max``, ``temperature`` and the margin's form ``placement``
    under :data:`~elm_lite.recipes.EMBEDDING_RECIPE` (entries overridable as keywords), through the engine
    (:func:`~elm_lite.experiments.train_embedding_models`: its fused losses answer a slider move sooner)."""
    method = methods.get("elm").variant("ELM (app)", lam=lam, delta_max=delta_max, temperature=temperature,
                                        placement=placement)
    run = train_embedding_models(data, [(method, seed)], **recipe)[0]
    return EmbeddingMarginView(lam, delta_max, temperature, placement, data, run, baseline)


def embedding_margin_grid(data: ToyData, baseline: EmbeddingRun, keys, seed: int = 0, **recipe) -> dict:
    """Notebook 04's app, precomputed: each ``(lam, delta_max, temperature, placement)`` of ``keys``
    trained, all together (:func:`~elm_lite.experiments.train_embedding_models`, the same runs as one
    by one). Returns ``{key: EmbeddingMarginView}`` for :func:`embedding_margin_app`'s ``grid``."""
    keys = [(float(lam), float(d), float(t), p) for lam, d, t, p in keys]
    elm = methods.get("elm")
    runs = train_embedding_models(data, [(elm.variant("ELM (app)", lam=lam, delta_max=d, temperature=t, placement=p),
                                          seed) for lam, d, t, p in keys], **recipe)
    return {key: EmbeddingMarginView(*key, data, run, baseline, precomputed=True) for key, run in zip(keys, runs)}


def _grid_key(lam: float, delta_max: float, temperature: float, placement: str) -> tuple:
    return round(lam, 6), round(delta_max, 6), round(temperature, 6), placement


def embedding_margin_figure(view: EmbeddingMarginView, widget: bool = False) -> go.Figure:
    """Left: test embeddings, rotated onto the LA baseline's class means and drawn on its principal
    directions (the view keeps its orientation as the sliders move). Right: per class, test spread
    and training embedding margin, each beside the LA baseline."""
    data = view.data
    fig = make_subplots(rows=2, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.08, vertical_spacing=0.14,
                        specs=[[{"type": "scene", "rowspan": 2}, {"type": "xy"}], [None, {"type": "xy"}]],
                        subplot_titles=("test embeddings (3 principal directions)", "test spread per class",
                                        "measured training embedding margin per class"))
    reference = view.baseline.z_test                     # the same test set, embedded by LA alone
    z = align_to(view.run.z_test, data.y_test, reference, data.y_test)
    basis = pca_basis(reference) if reference.shape[1] > 3 else None
    for trace in embedding_traces(z, data.y_test, data.counts, max_per_class=150, basis=basis):
        fig.add_trace(trace, row=1, col=1)
    classes = [f"{k}<br>n={n}" for k, n in enumerate(data.counts)]
    for row, field in ((1, "spread"), (2, "train_margin")):
        fig.add_trace(go.Bar(x=classes, y=getattr(view.baseline, field), name="LA alone", marker_color="#bbbbbb",
                             showlegend=row == 1), row=row, col=2)
        fig.add_trace(go.Bar(x=classes, y=getattr(view.run, field), name="LA + embedding term",
                             marker_color="#d62728", showlegend=row == 1), row=row, col=2)
    fig.update_layout(width=1000, height=560, barmode="group", font=dict(size=11), margin=dict(t=50, b=20, l=0),
                      uirevision="keep",  # a rotated 3-D view stays rotated when the data change
                      legend=dict(itemsizing="constant", orientation="h", x=0, y=-0.1),
                      scene=dict(xaxis=SCENE_AXIS, yaxis=SCENE_AXIS, zaxis=SCENE_AXIS, aspectmode="cube"))
    fig.update_yaxes(range=[0, 0.8], title="1 - mean cos(z, class mean)", row=1, col=2)
    fig.update_yaxes(range=[-0.5, 1.5], title="cos to own - nearest other mean", row=2, col=2)
    return go.FigureWidget(fig) if widget else fig


def embedding_margin_readout(view: EmbeddingMarginView) -> str:
    counts = view.data.counts
    now, base = run_summary(view.run, counts), run_summary(view.baseline, counts)
    lam_zero = ("<br>lambda = 0 is LA trained on <i>two</i> jittered views of each example; the grey bars are LA "
                "on one view, so the two differ by the views alone" if view.lam == 0 else "")
    source = "precomputed" if view.precomputed else "trained now: off the precomputed grid"
    return (f"<b>lambda = {view.lam:g}, delta_max = {view.delta_max:g}, T = {view.temperature:g}, "
            f"margin form {view.placement!r}</b> ({source})<br>"
            f"tail (few) <b>training embedding margin {now['train_margin_few']:.3f}</b> (LA alone "
            f"{base['train_margin_few']:.3f}) -- what delta_max asks for: cosine to the own class mean minus the "
            f"largest cosine to another class mean; on test data {now['margin_few']:.3f} ({base['margin_few']:.3f})<br>"
            f"tail (few) test spread <b>{now['spread_few']:.3f}</b> (LA alone {base['spread_few']:.3f}), "
            f"head (many) {now['spread_many']:.3f} ({base['spread_many']:.3f})<br>"
            f"balanced accuracy <b>{now['balanced_accuracy']:.1%}</b> (LA alone {base['balanced_accuracy']:.1%}); "
            f"few-shot accuracy {now['acc_few']:.1%} ({base['acc_few']:.1%}){lam_zero}")


def embedding_margin_app(lam: float = ELM_RECOMMENDED["lam"], delta_max: float = ELM_RECOMMENDED["delta_max"],
                         temperature: float = ELM_RECOMMENDED["temperature"],
                         placement: str = ELM_RECOMMENDED["placement"], *, data: ToyData, baseline: EmbeddingRun,
                         grid: dict | None = None, **view_kwargs) -> App:
    """Notebook 04: ``lambda``, ``delta_max``, temperature and margin-form controls. A setting in
    ``grid`` (:func:`embedding_margin_grid`) is looked up; any other retrains the small model."""
    import ipywidgets as W
    slider = dict(continuous_update=False, style={"description_width": "initial"})
    controls = {"lam": W.FloatSlider(value=lam, min=0, max=2, step=0.25, description="lambda", **slider),
                "delta_max": W.FloatSlider(value=delta_max, min=0, max=1, step=0.1, description="delta_max", **slider),
                "temperature": W.FloatLogSlider(value=temperature, base=10, min=-1.4, max=0, step=0.1,
                                                description="temperature", **slider),
                "placement": W.Dropdown(options=losses.MARGIN_PLACEMENTS, value=placement, description="margin form",
                                        style={"description_width": "initial"})}
    lookup = {_grid_key(*key): view for key, view in (grid or {}).items()}

    def compute(**values):
        key = _grid_key(values["lam"], values["delta_max"], values["temperature"], values["placement"])
        return lookup.get(key) or embedding_margin_view(**values, data=data, baseline=baseline, **view_kwargs)
    return App(controls, compute, embedding_margin_figure, embedding_margin_readout,
               requested={"lam": lam, "delta_max": delta_max, "temperature": temperature})


# ----------------------------------------------------------------------------- notebook 05: margin vs spread

NOISES = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
MARGINS = (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


@dataclass
class MarginSpreadView:
    """The tail's test error along a spread sweep (fixed margin) and a margin sweep (fixed spread)."""
    noise: float
    margin: float
    n_train: int
    current: dict
    by_spread: list   # [(spread, error)] for NOISES at this margin
    by_margin: list   # [(margin, error)] for MARGINS at this noise


def margin_spread_view(noise: float = 1.0, margin: float = 0.1, n_train: int = 5) -> MarginSpreadView:
    sim = margin_spread_simulation
    by_spread = [(r["spread"], r["error"]) for r in (sim(v, margin, n_train) for v in NOISES)]
    by_margin = [(m, sim(noise, m, n_train)["error"]) for m in MARGINS]
    return MarginSpreadView(noise, margin, n_train, sim(noise, margin, n_train), by_spread, by_margin)


def margin_spread_figure(view: MarginSpreadView, widget: bool = False) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("tail test error vs spread, at the chosen offset b",
                                        "tail test error vs boundary offset b, at the chosen spread"))
    sx, sy = zip(*view.by_spread)
    mx, my = zip(*view.by_margin)
    fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines+markers", name="vary the spread"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[view.current["spread"]], y=[view.current["error"]], mode="markers",
                             marker=dict(size=14, color="#d62728"), name="you are here"), row=1, col=1)
    fig.add_trace(go.Scatter(x=mx, y=my, mode="lines+markers", name="vary the offset b"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[view.margin], y=[view.current["error"]], mode="markers",
                             marker=dict(size=14, color="#d62728"), showlegend=False), row=1, col=2)
    fig.update_xaxes(title="spread of the tail's embeddings", row=1, col=1)
    fig.update_xaxes(title="boundary offset b (cosine units)", row=1, col=2)
    fig.update_yaxes(title="tail test error", tickformat=".0%", rangemode="tozero")
    fig.update_layout(width=980, height=420, font=dict(size=11), legend=dict(orientation="h", x=0, y=-0.2))
    return go.FigureWidget(fig) if widget else fig


def margin_spread_readout(view: MarginSpreadView) -> str:
    return (f"{view.n_train} training examples, spread <b>{view.current['spread']:.3f}</b>, boundary offset b "
            f"<b>{view.margin:g}</b> (the offset slider): expected tail test error <b>{view.current['error']:.1%}</b> "
            f"(with b = 0 it would be about 1/(n+1) = {1 / (view.n_train + 1):.1%})")


def margin_spread_app(noise: float = 1.0, margin: float = 0.1, n_train: int = 5) -> App:
    """Notebook 05: the generalisation argument; sliders for the noise (which sets the spread), the boundary
    offset b (notebook 01's notation) and n."""
    import ipywidgets as W
    slider = dict(continuous_update=False, style={"description_width": "initial"})
    controls = {"noise": W.FloatLogSlider(value=noise, base=10, min=-1.3, max=0.5, step=0.05,
                                          description="noise (sets the spread)", **slider),
                "margin": W.FloatSlider(value=margin, min=0, max=0.4, step=0.025, description="offset b", **slider),
                "n_train": W.IntSlider(value=n_train, min=1, max=50, description="tail examples", **slider)}
    return App(controls, margin_spread_view, margin_spread_figure, margin_spread_readout,
               requested={"noise": noise, "margin": margin, "n_train": n_train})


# ----------------------------------------------------------------------------- notebook 06: live curves


class LiveCurves:
    """A training-curve figure that grows while :func:`~elm_lite.train.fit` runs: pass
    ``live.on_epoch_end`` as ``on_epoch_end`` and display ``live.figure``."""

    def __init__(self, title: str = "training"):
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_trace(go.Scatter(x=[], y=[], name="loss"), secondary_y=False)
        fig.add_trace(go.Scatter(x=[], y=[], name="balanced accuracy (train batches)"), secondary_y=True)
        fig.update_layout(title=title, xaxis_title="epoch", width=720, height=360,
                          legend=dict(orientation="h", y=-0.3))
        fig.update_yaxes(title="loss", secondary_y=False)
        fig.update_yaxes(title="balanced accuracy", range=[0, 1], tickmode="linear", tick0=0, dtick=0.25,
                         tickformat=".0%", showgrid=False, secondary_y=True)
        self.figure = go.FigureWidget(fig)

    def on_epoch_end(self, epoch: int, model, history: History) -> None:
        with self.figure.batch_update():
            self.figure.data[0].update(x=history.epoch, y=history.loss)
            self.figure.data[1].update(x=history.epoch, y=history.train_balanced_accuracy)


# ----------------------------------------------------------------------------- workshop dashboard
# Four panels over the precomputed sweeps of elm_lite.workshop: a slider move is a lookup.


def _at(grid, value, name: str = "value") -> int:
    """Index of the grid point nearest ``value``; a value that is not a finite number inside the
    precomputed grid's range is refused, naming ``name`` and the grid."""
    grid = np.asarray(grid, dtype=float)
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not (number and grid.min() <= value <= grid.max()):  # NaN fails the comparison too
        raise ValueError(f"{name} must be a number in [{grid.min():g}, {grid.max():g}] (the precomputed grid: "
                         f"{', '.join(f'{v:g}' for v in grid)}), got {value!r}.")
    return int(np.argmin(np.abs(grid - value)))


def _selection_slider(name: str, grid, value):
    import ipywidgets as W
    return W.SelectionSlider(options=[(f"{v:g}", float(v)) for v in grid], value=float(grid[_at(grid, value)]),
                             description=name, continuous_update=False, style={"description_width": "initial"})


def imbalance_panel_view(rho: float = 100.0, *, sweeps: dict) -> dict:
    i = _at(sweeps["rhos"], rho, "rho")
    return {"rho": float(sweeps["rhos"][i]), "counts": sweeps["imbalance_counts"][i],
            "accuracy": sweeps["imbalance_per_class_accuracy"][i]}


def imbalance_panel_figure(view: dict, widget: bool = False) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training examples per class", "plain CE: test accuracy"))
    classes = [f"class {k}" for k in range(len(view["counts"]))]
    fig.add_trace(go.Bar(x=classes, y=view["counts"], marker_color="#888888", showlegend=False), row=1, col=1)
    fig.add_trace(accuracy_bar_trace(view["accuracy"], view["counts"]), row=1, col=2)
    fig.update_yaxes(type="log", range=[0, 3], row=1, col=1)
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", row=1, col=2)
    fig.update_layout(width=900, height=330, margin=dict(t=40, b=20), font=dict(size=11))
    return go.FigureWidget(fig) if widget else fig


def imbalance_panel_readout(view: dict) -> str:
    acc = view["accuracy"]
    return (f"imbalance ratio <b>{view['rho']:g}</b>: balanced accuracy <b>{acc.mean():.1%}</b>; the head "
            f"{acc[0]:.0%}, the rarest class <b>{acc[-1]:.0%}</b>")


def margin_panel_view(tau: float = 1.0, *, sweeps: dict) -> dict:
    i = _at(sweeps["taus"], tau, "tau")
    return {"tau": float(sweeps["taus"][i]), "regions": sweeps["margin_regions"][i],
            "accuracy": sweeps["margin_per_class_accuracy"][i], "sweeps": sweeps}


def margin_panel_figure(view: dict, widget: bool = False) -> go.Figure:
    s = view["sweeps"]
    c = len(s["toy_counts"])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=("LA's regions, Bayes-balanced boundary (black)", "test accuracy per class"))
    fig.add_trace(region_heatmap(s["grid_x"], s["grid_y"], view["regions"], c), row=1, col=1)
    fig.add_trace(mask_trace(s["grid_x"], s["grid_y"], boundary_mask(s["bayes_regions"]), "black",
                             "Bayes-balanced boundary"), row=1, col=1)
    for k in range(c):
        pts = s["toy_x_train"][s["toy_y_train"] == k]
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False,
                                 marker=dict(size=3, color=class_color(k))), row=1, col=1)
    fig.add_trace(go.Bar(x=[f"class {k}" for k in range(c)], y=s["margin_bayes_per_class_accuracy"],
                         name="Bayes-balanced", marker_color="#bbbbbb"), row=1, col=2)
    fig.add_trace(go.Bar(x=[f"class {k}" for k in range(c)], y=view["accuracy"], name="logit adjustment",
                         marker_color="#d62728"), row=1, col=2)
    fig.update_yaxes(scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", row=1, col=2)
    fig.update_layout(width=900, height=400, barmode="group", margin=dict(t=40, b=20), font=dict(size=11),
                      legend=dict(orientation="h", x=0.55, y=-0.1))
    return go.FigureWidget(fig) if widget else fig


def margin_panel_readout(view: dict) -> str:
    bayes = view["sweeps"]["margin_bayes_per_class_accuracy"]
    return (f"tau = <b>{view['tau']:g}</b>: balanced accuracy <b>{view['accuracy'].mean():.1%}</b> (the best possible, "
            f"Bayes-balanced: {bayes.mean():.1%}); rarest class {view['accuracy'][-1]:.0%} ({bayes[-1]:.0%}). "
            "tau = 0 is plain CE; tau = 1 takes the training prior out of the decision")


def tightening_panel_view(lam: float = 1.0, *, sweeps: dict) -> dict:
    i = _at(sweeps["lams"], lam, "lam")
    return {"lam": float(sweeps["lams"][i]), "spread": sweeps["lam_spread"][i],
            "margin": sweeps["lam_train_margin"][i], "accuracy": float(sweeps["lam_balanced_accuracy"][i]),
            "sweeps": sweeps}


def tightening_panel_figure(view: dict, widget: bool = False) -> go.Figure:
    s = view["sweeps"]
    classes = [f"{k}<br>n={n}" for k, n in enumerate(s["embedding_counts"])]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"test spread per class (lower: tighter), mean of {len(s['panel3_seeds'])} seeds",
        "measured training embedding margin per class"))
    for col, (base, now) in enumerate(((s["la_spread"], view["spread"]), (s["la_train_margin"], view["margin"])), 1):
        fig.add_trace(go.Bar(x=classes, y=base, name="LA alone", marker_color="#bbbbbb", showlegend=col == 1),
                      row=1, col=col)
        fig.add_trace(go.Bar(x=classes, y=now, name="ELM", marker_color="#d62728", showlegend=col == 1),
                      row=1, col=col)
    fig.update_yaxes(range=[0, 0.8], row=1, col=1)
    fig.update_yaxes(range=[-0.5, 1.5], row=1, col=2)
    fig.update_layout(width=900, height=340, barmode="group", margin=dict(t=40, b=20), font=dict(size=11),
                      legend=dict(orientation="h", x=0, y=-0.2))
    return go.FigureWidget(fig) if widget else fig


def tightening_panel_readout(view: dict) -> str:
    s, few = view["sweeps"], view["sweeps"]["shot_split"] == "few"
    head = s["shot_split"] == "many"
    return (f"lambda = <b>{view['lam']:g}</b>, mean of {len(s['panel3_seeds'])} seeds: the rare classes' test spread "
            f"<b>{view['spread'][few].mean():.3f}</b> (LA alone {s['la_spread'][few].mean():.3f}), the head's "
            f"{view['spread'][head].mean():.3f} (LA alone {s['la_spread'][head].mean():.3f}); the rare classes' "
            f"training margin <b>{view['margin'][few].mean():.3f}</b> "
            f"(LA alone {s['la_train_margin'][few].mean():.3f}); "
            f"balanced accuracy <b>{view['accuracy']:.1%}</b> (LA alone {float(s['la_balanced_accuracy']):.1%}). "
            "lambda = 0 is LA trained on two jittered views")


MEASURE_NAMES = {"balanced_accuracy": "balanced accuracy", "acc_few": "rare-class accuracy",
                 "spread_few": "rare-class test spread", "margin_few": "rare-class test margin"}


def methods_panel_view(measure: str = "balanced_accuracy", *, sweeps: dict) -> dict:
    measures = [str(m) for m in sweeps["measures"]]
    if not isinstance(measure, str) or measure not in measures:
        raise ValueError(f"measure must be one of {measures}, got {measure!r}.")
    j = measures.index(measure)
    values = sweeps["method_table"][:, j, :]                                    # (methods, seeds)
    mean, sd, _ = zip(*map(metrics.mean_sd, values))
    return {"measure": measure, "labels": list(sweeps["method_labels"]), "mean": np.array(mean),
            "std": np.array(sd), "seeds": values.shape[1]}


def methods_panel_figure(view: dict, widget: bool = False) -> go.Figure:
    fig = go.Figure(go.Bar(x=view["labels"], y=view["mean"], error_y=dict(type="data", array=view["std"]),
                           marker_color=["#888888"] * (len(view["labels"]) - 1) + ["#d62728"]))
    fig.update_layout(width=900, height=330, margin=dict(t=40, b=20), font=dict(size=11),
                      title=f"{MEASURE_NAMES[view['measure']]}: mean ± sample std (n = {view['seeds']} seeds)")
    return go.FigureWidget(fig) if widget else fig


def methods_panel_readout(view: dict) -> str:
    best = int(np.argmax(view["mean"])) if view["measure"] != "spread_few" else int(np.argmin(view["mean"]))
    return (f"best on {MEASURE_NAMES[view['measure']]}: <b>{view['labels'][best]}</b> "
            f"({view['mean'][best]:.3f} ± {view['std'][best]:.3f}); every bar is a run of this course's code on "
            "the toy problem, precomputed")


def real_panel_view(setting: str = "", *, sweeps: dict) -> dict:
    """Panel 5: one real-data setting (:func:`elm_lite.workshop.real_panel`; the first when ``setting`` is
    empty), the methods it ran."""
    settings = [str(x) for x in sweeps["real_settings"]]
    setting = setting or settings[0]
    if setting not in settings:
        raise ValueError(f"setting must be one of {settings}, got {setting!r}.")
    i = settings.index(setting)
    ran = sweeps["real_n"][i] > 0
    return {"setting": setting, "labels": [str(m) for m, r in zip(sweeps["real_methods"], ran) if r],
            "mean": sweeps["real_mean"][i][ran], "std": np.nan_to_num(sweeps["real_sd"][i][ran]),
            "n": sweeps["real_n"][i][ran], "minus_la": sweeps["real_minus_la"][i][ran],
            "minus_la_half": sweeps["real_minus_la_half"][i][ran]}


def real_panel_figure(view: dict, widget: bool = False) -> go.Figure:
    colors = ["#d62728" if label == "LA" else "#888888" for label in view["labels"]]
    fig = go.Figure(go.Bar(x=[f"{label}<br>n={n}" for label, n in zip(view["labels"], view["n"])], y=view["mean"],
                           error_y=dict(type="data", array=view["std"]), marker_color=colors))
    fig.update_layout(width=900, height=350, margin=dict(t=60, b=20), font=dict(size=11),
                      yaxis=dict(tickformat=".0%"),   # the setting on a line of its own: the longest fills 900 px
                      title=f"{view['setting']}<br>test balanced accuracy, mean ± sample std over n runs")
    return go.FigureWidget(fig) if widget else fig


def _points(difference: float, half: float) -> str:
    """``+1.8 points [+0.7, +2.8]`` (the paired 95 % interval where measured)."""
    interval = f" [{100 * (difference - half):+.1f}, {100 * (difference + half):+.1f}]" if half == half else ""
    return f"{100 * difference:+.1f} points{interval}"


def real_panel_readout(view: dict) -> str:
    labels = view["labels"]
    la = labels.index("LA")
    parts = [f"LA <b>{view['mean'][la]:.1%}</b>"]
    if "CE" in labels:
        ce = labels.index("CE")
        parts.append(f"CE {view['mean'][ce]:.1%}: LA ahead by <b>{100 * (view['mean'][la] - view['mean'][ce]):.1f} "
                     "points</b>")
    above = [j for j, m in enumerate(view["mean"]) if m > view["mean"][la]]
    parts.append(("above LA's mean (minus LA, paired, 95 % interval): " + ", ".join(
        f"<b>{labels[j]}</b> {_points(view['minus_la'][j], view['minus_la_half'][j])}" for j in above))
        if above else "<b>no method's mean above LA's</b>")
    below = int((view["mean"] < view["mean"][la]).sum())
    return ("; ".join(parts) + f"; {below} of {len(labels) - 1} other methods below LA's mean. Runs of this "
            "course's code read from the shipped files (elm_lite/measured/); methods not shown were not run in "
            "this setting")


def workshop_dashboard(sweeps: dict):
    """The course's story on one page (``notebooks/workshop.ipynb``, ``make workshop``), in its order:
    imbalance, logit margins, the embedding term on the toy, methods on the toy, real data. ``sweeps``:
    :func:`elm_lite.workshop.sweeps` (or the shipped ``workshop_sweeps.npz``). Returns ``(widget, apps)``."""
    import ipywidgets as W
    apps = [App({"rho": _selection_slider("imbalance ratio", sweeps["rhos"], 100)},
                partial(imbalance_panel_view, sweeps=sweeps), imbalance_panel_figure, imbalance_panel_readout),
            App({"tau": _selection_slider("tau (logit adjustment)", sweeps["taus"], 1.0)},
                partial(margin_panel_view, sweeps=sweeps), margin_panel_figure, margin_panel_readout),
            App({"lam": _selection_slider("lambda (embedding term)", sweeps["lams"], 1.0)},
                partial(tightening_panel_view, sweeps=sweeps), tightening_panel_figure, tightening_panel_readout),
            App({"measure": W.ToggleButtons(options=[(MEASURE_NAMES[m], m) for m in sweeps["measures"]])},
                partial(methods_panel_view, sweeps=sweeps), methods_panel_figure, methods_panel_readout),
            App({"setting": W.ToggleButtons(options=[str(x) for x in sweeps["real_settings"]])},
                partial(real_panel_view, sweeps=sweeps), real_panel_figure, real_panel_readout)]
    titles = ("1. Long-tailed data: plain training gives the tail away",
              "2. Logit margins work: ask the rare classes to win by more",
              "3. On the toy problem, the embedding term tightens the rare classes' embeddings",
              "4. Which method wins on the toy problem? (8 classes, 5 seeds)",
              "5. On real data LA beats CE everywhere; trained end to end on images no method beat it; on the "
              "two laptop rungs ELM beat it by a point or two")
    for app in apps:
        app.widget.add_class("elm-panel")   # what the browser test and the benchmark look for
    rows = [W.VBox([W.HTML(f"<h3>{title}</h3>"), app.widget]) for title, app in zip(titles, apps)]
    return W.VBox(rows), apps
