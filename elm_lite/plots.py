"""Plotly figure builders. Trace builders return lists of traces so that widgets can update
an existing figure in place; figure builders assemble them for static display."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from torch import nn

from .data import ToyData
from .train import History, predict_logits

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def class_color(c: int) -> str:
    return CLASS_COLORS[c % len(CLASS_COLORS)]


def _discrete_colorscale(n_classes: int) -> list:
    scale = []
    for c in range(n_classes):
        scale += [(c / n_classes, class_color(c)), ((c + 1) / n_classes, class_color(c))]
    return scale


def grid_logits(model: nn.Module, bounds, resolution: int = 150):
    """The model's logits on a ``resolution x resolution`` grid over ``bounds``.

    Returns ``(xs (R,), ys (R,), logits (R, R, C))`` with ``logits[j, i]`` at ``(xs[i], ys[j])``.
    """
    x0, x1, y0, y1 = bounds
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    return xs, ys, predict_logits(model, pts).numpy().reshape(resolution, resolution, -1)


def decision_grid(model: nn.Module, bounds, resolution: int = 150):
    """Predicted class on the grid of :func:`grid_logits`: ``(xs, ys, labels (R, R))``."""
    xs, ys, logits = grid_logits(model, bounds, resolution)
    return xs, ys, logits.argmax(-1)


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """1 where a grid cell's label differs from its right or upper neighbour, shape ``(R, R)``."""
    mask = np.zeros(labels.shape)
    mask[:, :-1] += labels[:, :-1] != labels[:, 1:]
    mask[:-1, :] += labels[:-1, :] != labels[1:, :]
    return (mask > 0).astype(float)


def margin_band_mask(logits: np.ndarray, pairwise_margins: np.ndarray) -> np.ndarray:
    """1 where the top logit beats the runner-up by less than the margin the loss demands of the
    top class against it (``pairwise_margins[top, second]``); ``logits`` ``(..., C)``."""
    order = np.argsort(logits, axis=-1)
    top, second = order[..., -1], order[..., -2]
    gap = np.take_along_axis(logits, top[..., None], -1)[..., 0] - np.take_along_axis(logits, second[..., None], -1)[..., 0]
    return (gap < np.asarray(pairwise_margins)[top, second]).astype(float)


def mask_trace(xs, ys, mask: np.ndarray, color: str, name: str, opacity: float = 1.0) -> go.Heatmap:
    """Cells where ``mask`` is 1 painted in ``color``, the rest transparent."""
    return go.Heatmap(x=xs, y=ys, z=mask, zmin=0, zmax=1, colorscale=[[0, "rgba(0,0,0,0)"], [1, color]],
                      opacity=opacity, showscale=False, hoverinfo="skip", name=name, showlegend=False)


def point_traces(data: ToyData, show: str = "train", max_points: int = 4000) -> list:
    """One scatter per class of the training (``show="train"``) or test points."""
    if show not in ("train", "test"):
        raise ValueError(f"show must be 'train' or 'test', got {show!r}.")
    x, y = (data.x_train, data.y_train) if show == "train" else (data.x_test, data.y_test)
    traces = []
    for k in range(data.n_classes):
        pts = x[y == k][:max_points]
        traces.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=f"class {k} (n={data.counts[k]})",
                                 marker=dict(size=4, color=class_color(k), line=dict(width=0.3, color="white"))))
    return traces


def region_traces(model: nn.Module, data: ToyData, resolution: int = 150, show: str = "train") -> list:
    """A heatmap of the model's predicted class, then :func:`point_traces`."""
    xs, ys, labels = decision_grid(model, data.bounds(), resolution)
    c = data.n_classes
    return [go.Heatmap(x=xs, y=ys, z=labels, zmin=-0.5, zmax=c - 0.5, colorscale=_discrete_colorscale(c),
                       opacity=0.3, showscale=False, hoverinfo="skip", name="predicted class")
            ] + point_traces(data, show)


def accuracy_bar_trace(per_class_acc, counts) -> go.Bar:
    """Per-class test accuracy, one bar per class, labelled with its training count."""
    acc = np.nan_to_num(np.asarray(per_class_acc, dtype=float))
    classes = [f"{k}<br>n={n}" for k, n in enumerate(counts)]
    return go.Bar(x=classes, y=acc, marker_color=[class_color(k) for k in range(len(acc))],
                  text=[f"{a:.0%}" for a in acc], textposition="outside", name="test accuracy",
                  showlegend=False)


def _plane_figure(traces: list, title: str) -> go.Figure:
    fig = go.Figure(traces)
    fig.update_layout(title=title, width=560, height=480, xaxis_title="x1", yaxis_title="x2",
                      legend=dict(itemsizing="constant"))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def points_figure(data: ToyData, show: str = "train", title: str = "") -> go.Figure:
    """The toy data on the plane, coloured by class."""
    return _plane_figure(point_traces(data, show), title)


def decision_regions_figure(model: nn.Module, data: ToyData, title: str = "", show: str = "train",
                            resolution: int = 150) -> go.Figure:
    """Predicted-class regions of ``model`` under the training or test points."""
    return _plane_figure(region_traces(model, data, resolution, show), title)


def counts_figure(counts_by_name: dict[str, np.ndarray], log_y: bool = True) -> go.Figure:
    """Training count per class for one or more profiles (``{"exp": counts, ...}``)."""
    fig = go.Figure([go.Bar(x=list(range(len(c))), y=c, name=name) for name, c in counts_by_name.items()])
    fig.update_layout(barmode="group", xaxis_title="class (head first)", yaxis_title="training examples",
                      width=600, height=360, title="How many examples each class gets")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def per_class_accuracy_figure(per_class_acc, counts, title: str = "Per-class test accuracy") -> go.Figure:
    fig = go.Figure([accuracy_bar_trace(per_class_acc, counts)])
    fig.update_layout(title=title, yaxis=dict(range=[0, 1.15], tickformat=".0%"), width=520, height=360,
                      xaxis_title="class (training count)")
    return fig


def training_curves_figure(history: History, title: str = "Training") -> go.Figure:
    fig = go.Figure([go.Scatter(x=history.epoch, y=history.loss, name="loss", yaxis="y1"),
                     go.Scatter(x=history.epoch, y=history.train_balanced_accuracy,
                                name="balanced accuracy (train)", yaxis="y2")])
    if history.val_balanced_accuracy:
        fig.add_trace(go.Scatter(x=history.epoch, y=history.val_balanced_accuracy,
                                 name="balanced accuracy (test)", yaxis="y2"))
    fig.update_layout(title=title, xaxis_title="epoch", width=640, height=360,
                      yaxis=dict(title="loss"),
                      yaxis2=dict(title="balanced accuracy", overlaying="y", side="right", range=[0, 1]))
    return fig


def lines_figure(x, lines: dict[str, np.ndarray], x_title: str, y_title: str, title: str = "",
                 hlines: dict[str, float] | None = None, percent: bool = True) -> go.Figure:
    """One line per entry of ``lines`` over ``x``, plus optional dashed horizontal references."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=name) for name, y in lines.items()])
    for name, value in (hlines or {}).items():
        fig.add_hline(y=value, line_dash="dash", annotation_text=name, annotation_position="top left")
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, width=640, height=380)
    if percent:
        fig.update_yaxes(tickformat=".0%")
    return fig
