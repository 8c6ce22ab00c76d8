"""The practitioner's toolkit apps: notebook 02's deployment prior (the error under any test prior, and
the rule adjusted toward it) with the binary case (a threshold chosen on validation), and notebook 03's
weight-decay slider (the classifier's per-class weight norms). As :mod:`elm_lite.widgets`: a view
function computes what a setting shows, a figure function draws it, a readout summarises it, and
:class:`~elm_lite.widgets.App` wires them to the controls."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from . import losses, methods, metrics
from .balancing import balanced_classifier_stage, class_weight_norms
from .data import ToyData, class_log_densities, sample_balanced, validation_sample
from .experiments import train_embedding_models, train_logit_method
from .recipes import LOGIT_TOY, TOY_2D_N_EVAL
from .train import predict_logits
from .widgets import App

# ----------------------------------------------------------------------------- notebook 02: the deployment prior

SHIFTS = np.round(np.arange(-0.5, 2.01, 0.125), 3)   # the slider's grid: 0 training prior, 1 uniform, 2 inverted
PRIOR_SHIFT_GRID = {"shift": (-0.5, 0.0, 0.5, 1.0, 1.5, 2.0)}   # the site's kernel-free states (static_apps.show)


def deployment_prior(train_prior, shift: float) -> np.ndarray:
    """The deployment prior ``p`` proportional to ``pi ** (1 - shift)``, shape ``(C,)``: ``shift = 0`` the
    training prior, 1 the uniform prior, 2 the training prior inverted (the tail becomes the head); between
    and beyond, a geometric mix (negative: more imbalanced than training)."""
    log_p = (1 - float(shift)) * np.log(np.asarray(train_prior, dtype=float))
    p = np.exp(log_p - log_p.max())
    return p / p.sum()


@dataclass
class PriorShiftBase:
    """What every setting of the deployment-prior app reads: a CE model's logits ``(N, C)`` and the class
    log densities ``(N, C)`` on a fresh balanced sample with labels ``y`` ``(N,)``."""
    data: ToyData
    logits: torch.Tensor
    log_densities: np.ndarray
    y: np.ndarray


def prior_shift_base(data: ToyData, seed: int = 0, n_eval: int = TOY_2D_N_EVAL,
                     epochs: int = LOGIT_TOY["epochs"]) -> PriorShiftBase:
    """Train plain CE (notebook 02's linear recipe) on ``data`` and evaluate it on ``n_eval`` fresh points
    per class (Gaussian toy problems: their densities give the Bayes rule of any prior)."""
    model, _ = train_logit_method("ce", data, seed=seed, epochs=epochs)
    x, y = sample_balanced(data, n_eval, seed=seed + 12345)
    return PriorShiftBase(data, predict_logits(model, x).double(), class_log_densities(data, x), y)


RULES = ("CE as trained", "adjusted to uniform (post-hoc LA)", "adjusted to the deployment prior",
         "Bayes rule for the deployment prior")


def prior_errors(base: PriorShiftBase, shift: float) -> dict[str, float]:
    """``{rule: error under the deployment prior of shift}`` for the four rules of :data:`RULES`."""
    p, counts = deployment_prior(base.data.prior, shift), base.data.counts
    predictions = (base.logits.argmax(1).numpy(), losses.posthoc_adjust(base.logits, counts).argmax(1).numpy(),
                   losses.posthoc_adjust(base.logits, counts, target_prior=p).argmax(1).numpy(),
                   (base.log_densities + np.log(p)).argmax(1))
    return {rule: metrics.error_under_prior(base.y, pred, p) for rule, pred in zip(RULES, predictions)}


@dataclass
class PriorShiftView:
    shift: float
    prior: np.ndarray            # (C,) the deployment prior
    train_prior: np.ndarray      # (C,)
    errors: dict                 # {rule: error under the deployment prior} at this shift
    curves: dict                 # {rule: (S,) error over SHIFTS}


def prior_shift_view(shift: float = 1.0, *, base: PriorShiftBase) -> PriorShiftView:
    """One setting of the deployment-prior slider: the prior, and each rule's error under it (and over the grid)."""
    if not isinstance(shift, (int, float)) or not SHIFTS[0] <= shift <= SHIFTS[-1]:
        raise ValueError(f"shift must be a number in [{SHIFTS[0]}, {SHIFTS[-1]}] (0: the training prior, 1: "
                         f"uniform, 2: inverted), got {shift!r}.")
    by_shift = [prior_errors(base, s) for s in SHIFTS]
    return PriorShiftView(float(shift), deployment_prior(base.data.prior, shift), base.data.prior,
                          prior_errors(base, shift), {r: np.array([e[r] for e in by_shift]) for r in RULES})


def prior_shift_figure(view: PriorShiftView, widget: bool = False) -> go.Figure:
    """Left: the training and the deployment prior per class. Right: each rule's error under the
    deployment prior over the whole slider range, the current setting marked."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.1,
                        subplot_titles=("class prior (head -> tail)", "error under the deployment prior"))
    classes = [f"class {k}" for k in range(len(view.prior))]
    fig.add_trace(go.Bar(x=classes, y=view.train_prior, name="training prior", marker_color="#bbbbbb"), row=1, col=1)
    fig.add_trace(go.Bar(x=classes, y=view.prior, name="deployment prior", marker_color="#1f77b4"), row=1, col=1)
    for k, rule in enumerate(RULES):
        style = dict(dash="dot", color="black") if k == 3 else dict(color=("#d62728", "#ff7f0e", "#2ca02c")[k])
        fig.add_trace(go.Scatter(x=SHIFTS, y=view.curves[rule], mode="lines", name=rule, line=style), row=1, col=2)
        fig.add_trace(go.Scatter(x=[view.shift], y=[view.errors[rule]], mode="markers", showlegend=False,
                                 marker=dict(size=10, color=style["color"])), row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title="shift (0: training prior, 1: uniform, 2: inverted)", row=1, col=2)
    fig.update_layout(width=980, height=430, margin=dict(t=40, b=20), font=dict(size=11), barmode="group",
                      legend=dict(orientation="h", x=0, y=-0.25))
    return go.FigureWidget(fig) if widget else fig


def prior_shift_readout(view: PriorShiftView) -> str:
    e = view.errors
    return (f"deployment prior (shift {view.shift:g}): the head class {view.prior[0]:.1%}, the rarest "
            f"{view.prior[-1]:.1%}<br>error under it: CE as trained <b>{e[RULES[0]]:.1%}</b>, adjusted to uniform "
            f"{e[RULES[1]]:.1%}, adjusted to this prior <b>{e[RULES[2]]:.1%}</b>, Bayes rule {e[RULES[3]]:.1%}")


def prior_shift_app(shift: float = 1.0, *, base: PriorShiftBase) -> App:
    """Notebook 02: a slider over the deployment prior; the errors are recomputed from the stored logits."""
    import ipywidgets as W
    controls = {"shift": W.FloatSlider(value=shift, min=float(SHIFTS[0]), max=float(SHIFTS[-1]), step=0.125,
                                       description="deployment prior", continuous_update=False,
                                       style={"description_width": "initial"})}
    return App(controls, partial(prior_shift_view, base=base), prior_shift_figure, prior_shift_readout)


# ----------------------------------------------------------------------------- notebook 02: the binary case


def binary_scores(data: ToyData, seed: int = 0, n_eval: int = TOY_2D_N_EVAL,
                  epochs: int = LOGIT_TOY["epochs"]) -> dict:
    """A two-class problem (class 1 rare): plain CE's score ``p(class 1 | x)`` on the validation sample and
    on a fresh balanced test sample: ``{"val": (scores, y), "test": (scores, y)}``."""
    if data.n_classes != 2:
        raise ValueError(f"the binary case needs a two-class problem, got {data.n_classes} classes.")
    model, _ = train_logit_method("ce", data, seed=seed, epochs=epochs)

    def scored(x, y):
        return torch.softmax(predict_logits(model, x), 1)[:, 1].numpy(), y
    return {"val": scored(*validation_sample(data)), "test": scored(*sample_balanced(data, n_eval, seed=seed + 12345))}


def precision_recall_figure(scores: dict, positive_prior: float, threshold: float) -> go.Figure:
    """Precision (under the deployment prior of the rare class, ``positive_prior``) against recall on the
    test sample over all thresholds, the threshold chosen on validation marked."""
    s, y = scores["test"]
    grid = np.unique(np.quantile(s, np.linspace(0, 1, 201)))
    pr = np.array([metrics.precision_recall(y, s, t, positive_prior) for t in grid])
    at = metrics.precision_recall(y, s, threshold, positive_prior)
    fig = go.Figure([go.Scatter(x=pr[:, 1], y=pr[:, 0], mode="lines", name="all thresholds (test)"),
                     go.Scatter(x=[at[1]], y=[at[0]], mode="markers", marker=dict(size=12),
                                name=f"threshold {threshold:.3f}, chosen on validation")])
    fig.update_layout(title=f"the rare class: precision-recall, deployment prior {positive_prior:.1%}",
                      xaxis_title="recall", yaxis_title="precision", width=560, height=420,
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig

# ----------------------------------------------------------------------------- notebook 03: weight decay and norms


WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2)   # the slider's grid
WEIGHT_NORM_GRID = {"weight_decay": WEIGHT_DECAYS}     # the site's kernel-free states (static_apps.show)


@dataclass
class WeightNormView:
    weight_decay: float
    counts: np.ndarray
    norms: np.ndarray              # (C,) per-class weight norms of CE trained with this weight decay
    balanced_norms: np.ndarray     # (C,) after weight balancing's classifier stage on that model
    accuracy: float                # balanced test accuracy of CE
    balanced_accuracy: float       # ... after the classifier stage


def weight_norm_grid(data: ToyData, seed: int = 0, weight_decays=WEIGHT_DECAYS, **recipe) -> dict:
    """CE on ``data`` for every weight decay of the grid (the toy embedding recipe, trained together),
    then a copy of each through weight balancing's classifier stage: ``{weight_decay: WeightNormView}``.
    ``recipe``: other entries of the toy recipe (a ``weight_decay`` among them is ignored: the grid sets it)."""
    recipe = {k: v for k, v in recipe.items() if k != "weight_decay"}
    ce = methods.get("ce")
    jobs = [(ce.variant(f"CE, weight decay {wd:g}", recipe={"weight_decay": wd}), seed) for wd in weight_decays]
    out = {}
    for wd, run in zip(weight_decays, train_embedding_models(data, jobs, **recipe)):
        balanced = copy.deepcopy(run.model)
        balanced_classifier_stage(balanced, data.x_train, data.y_train, weight_decay=wd)
        out[float(wd)] = WeightNormView(float(wd), data.counts, class_weight_norms(run.model),
                                        class_weight_norms(balanced), run.balanced_accuracy,
                                        _balanced_accuracy(balanced, data))
    return out


def _balanced_accuracy(model: nn.Module, data: ToyData) -> float:
    return metrics.balanced_accuracy(data.y_test, predict_logits(model, data.x_test).argmax(1).numpy(), data.n_classes)


def weight_norm_view(weight_decay: float = 0.0, *, grid: dict) -> WeightNormView:
    if weight_decay not in grid:
        raise ValueError(f"weight_decay must be one of the precomputed {sorted(grid)}, got {weight_decay!r}.")
    return grid[weight_decay]


def weight_norm_figure(view: WeightNormView, widget: bool = False) -> go.Figure:
    """Per-class weight norms of the classifier (head -> tail): CE with this weight decay, and after
    weight balancing's classifier stage (class-balanced loss, MaxNorm cap)."""
    classes = [f"{k} (n={n})" for k, n in enumerate(view.counts)]
    fig = go.Figure([go.Bar(x=classes, y=view.norms, name="CE, this weight decay", marker_color="#1f77b4"),
                     go.Bar(x=classes, y=view.balanced_norms, name="after the classifier stage (MaxNorm)",
                            marker_color="#2ca02c")])
    fig.update_layout(title="per-class weight norm ||w_c|| of the classifier", barmode="group", width=820,
                      height=400, yaxis_title="norm", yaxis_range=[0, 6], margin=dict(t=50, b=20))
    return go.FigureWidget(fig) if widget else fig


def weight_norm_readout(view: WeightNormView) -> str:
    return (f"weight decay <b>{view.weight_decay:g}</b>: tail / head norm <b>{view.norms[-1] / view.norms[0]:.2f}</b> "
            f"(after the classifier stage {view.balanced_norms[-1] / view.balanced_norms[0]:.2f}); balanced "
            f"accuracy {view.accuracy:.1%} (after the classifier stage {view.balanced_accuracy:.1%})")


def weight_norm_app(weight_decay: float = 0.0, *, grid: dict) -> App:
    """Notebook 03: a slider over the precomputed weight decays; the classifier's norms redrawn."""
    import ipywidgets as W
    controls = {"weight_decay": W.SelectionSlider(options=[(f"{wd:g}", wd) for wd in sorted(grid)],
                                                  value=weight_decay, description="weight decay",
                                                  continuous_update=False, style={"description_width": "initial"})}
    return App(controls, partial(weight_norm_view, grid=grid), weight_norm_figure, weight_norm_readout)
