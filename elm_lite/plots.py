"""Plotly figure builders. Trace builders return lists of traces so that widgets can update
an existing figure in place; figure builders assemble them for static display."""
from __future__ import annotations

import os

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
from torch import nn

from .data import ToyData
from .train import History, predict_logits

# In Jupyter, figures also carry an HTML rendering (plotly.js from its CDN), so that notebooks
# exported to HTML or opened in nbviewer keep interactive figures. Colab's renderer is left alone.
# ELM_PLOTLY_RENDERER overrides (tools/build_site.py asks for plain plotly outputs, drawn by the site's plotly.js).
if os.environ.get("ELM_PLOTLY_RENDERER"):
    pio.renderers.default = os.environ["ELM_PLOTLY_RENDERER"]
elif "plotly_mimetype" in str(pio.renderers.default) and "notebook" not in str(pio.renderers.default):
    pio.renderers.default = "plotly_mimetype+notebook_connected"

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def class_color(c: int) -> str:
    return CLASS_COLORS[c % len(CLASS_COLORS)]


def discrete_colorscale(n_classes: int) -> list:
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
    gap = (np.take_along_axis(logits, top[..., None], -1)[..., 0]
           - np.take_along_axis(logits, second[..., None], -1)[..., 0])
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


def region_heatmap(xs, ys, labels: np.ndarray, n_classes: int) -> go.Heatmap:
    """Predicted classes ``labels (R, R)`` on the grid ``xs``, ``ys`` as translucent class colours."""
    return go.Heatmap(x=xs, y=ys, z=labels, zmin=-0.5, zmax=n_classes - 0.5, colorscale=discrete_colorscale(n_classes),
                      opacity=0.3, showscale=False, hoverinfo="skip", name="predicted class")


def region_traces(model: nn.Module, data: ToyData, resolution: int = 150, show: str = "train") -> list:
    """A heatmap of the model's predicted class, then :func:`point_traces`."""
    xs, ys, labels = decision_grid(model, data.bounds(), resolution)
    return [region_heatmap(xs, ys, labels, data.n_classes)] + point_traces(data, show)


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
    if history.held_out_balanced_accuracy:
        fig.add_trace(go.Scatter(x=history.epoch, y=history.held_out_balanced_accuracy,
                                 name="balanced accuracy (held out)", yaxis="y2"))
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


def pca_basis(z: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (E,), components (k, E))`` of the top-``k`` principal directions of ``z`` ``(N, E)``."""
    z = np.asarray(z, dtype=float)
    mean = z.mean(0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    return mean, vt[:k]


def for_display(z: np.ndarray, basis=None) -> np.ndarray:
    """Embeddings ready to draw: 2-D and 3-D as they are, higher dimensions projected on 3
    principal directions (``basis`` from :func:`pca_basis`, fitted on ``z`` if not given)."""
    z = np.asarray(z, dtype=float)
    if basis is None and z.shape[1] <= 3:
        return z
    mean, comps = basis if basis is not None else pca_basis(z)
    return (z - mean) @ comps.T


def align_to(z: np.ndarray, y: np.ndarray, reference_z: np.ndarray, reference_y: np.ndarray) -> np.ndarray:
    """``z`` ``(N, E)`` rotated (orthogonal Procrustes on the class means) to sit as close as possible
    to ``reference_z``'s class means, so that two trained networks' embeddings can be drawn in one
    orientation. Classes absent from either set are left out of the fit."""
    classes = np.intersect1d(np.unique(y), np.unique(reference_y))
    means = np.stack([z[y == c].mean(0) for c in classes])
    target = np.stack([reference_z[reference_y == c].mean(0) for c in classes])
    u, _, vt = np.linalg.svd(means.T @ target)
    return z @ (u @ vt)


def embedding_traces(z: np.ndarray, y: np.ndarray, counts, max_per_class: int = 300, basis=None) -> list:
    """One scatter per class of embeddings ``z`` ``(N, E)``; 3-D (or projected, see
    :func:`for_display`) uses ``Scatter3d``."""
    z = for_display(z, basis)
    traces = []
    for k in range(len(counts)):
        pts = z[np.asarray(y) == k][:max_per_class]
        common = dict(mode="markers", name=f"class {k} (n={counts[k]})")
        if z.shape[1] == 3:
            traces.append(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2],
                                       marker=dict(size=2.5, color=class_color(k)), **common))
        else:
            traces.append(go.Scatter(x=pts[:, 0], y=pts[:, 1], marker=dict(size=4, color=class_color(k)), **common))
    return traces


SCENE_AXIS = dict(showticklabels=False, title="")


def _embedding_layout(fig: go.Figure, dim: int, shown: int, title: str) -> go.Figure:
    if dim > shown:
        title += f" ({dim}-D, shown on its {shown} principal directions)"
    fig.update_layout(title=title, width=640, height=540, legend=dict(itemsizing="constant"),
                      margin=dict(l=0, r=0, t=40, b=0))
    if shown == 3:
        fig.update_layout(scene=dict(xaxis=SCENE_AXIS, yaxis=SCENE_AXIS, zaxis=SCENE_AXIS, aspectmode="cube"))
    else:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def embedding_figure(z: np.ndarray, y: np.ndarray, counts, title: str = "test embeddings", dims: int = 3) -> go.Figure:
    """Embeddings coloured by class: on the circle (2-D), the sphere (3-D), or projected on their
    ``dims`` (2 or 3) principal directions when they have more dimensions."""
    z = np.asarray(z)
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}.")
    basis = pca_basis(z, dims) if z.shape[1] > dims else None
    shown = min(z.shape[1], dims)
    return _embedding_layout(go.Figure(embedding_traces(z, y, counts, basis=basis)), z.shape[1], shown, title)


def embedding_frames_figure(frames: list, y: np.ndarray, counts, title: str, prefix: str = "") -> go.Figure:
    """Scrub through ``frames`` ``[(label, z (M, E))]`` with a slider that runs in the browser
    alone (no kernel): training epochs, or a precomputed sweep. One projection for all frames."""
    first_label, first = frames[0]
    basis = pca_basis(frames[-1][1]) if first.shape[1] > 3 else None
    fig = go.Figure(embedding_traces(first, y, counts, basis=basis),
                    frames=[go.Frame(data=embedding_traces(z, y, counts, basis=basis), name=str(label))
                            for label, z in frames])
    steps = [dict(method="animate", label=str(label),
                  args=[[str(label)], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
             for label, _ in frames]
    fig.update_layout(
        updatemenus=[dict(type="buttons", x=0, y=0, xanchor="left", yanchor="top", buttons=[
            dict(label="play", method="animate",
                 args=[None, dict(frame=dict(duration=400, redraw=True), fromcurrent=True)])])],
        sliders=[dict(steps=steps, currentvalue=dict(prefix=prefix), x=0.12, len=0.88, y=0, yanchor="top")])
    return _embedding_layout(fig, first.shape[1], min(first.shape[1], 3), title)


def spread_vs_count_figure(spreads: dict[str, np.ndarray], counts,
                           title: str = "embedding spread vs class size") -> go.Figure:
    """Per-class spread (y) against training count (log x), one line per method."""
    fig = go.Figure([go.Scatter(x=list(counts), y=list(s), mode="lines+markers", name=name)
                     for name, s in spreads.items()])
    fig.update_layout(title=title, xaxis_title="training examples of the class (log scale)",
                      yaxis_title="spread = 1 - mean cos(z, class mean)", width=640, height=380)
    fig.update_xaxes(type="log")
    return fig


def reliability_figure(y_true, probs_by_name: dict[str, np.ndarray], n_bins: int = 15,
                       title: str = "reliability diagram") -> go.Figure:
    """Accuracy against confidence in equal-width confidence bins (:func:`elm_lite.metrics.calibration_bins`),
    one line per ``{name: probs (N, C)}``, marker size by the bin's share of the examples, with the
    diagonal of perfect calibration; each name carries its ECE."""
    from .metrics import calibration_bins, expected_calibration_error
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                                line=dict(dash="dot", color="grey"))])
    for name, probs in probs_by_name.items():
        bins = calibration_bins(y_true, probs, n_bins)
        full = bins["count"] > 0
        share = bins["count"][full] / bins["count"].sum()
        fig.add_trace(go.Scatter(x=bins["confidence"][full], y=bins["accuracy"][full], mode="lines+markers",
                                 name=f"{name} (ECE {expected_calibration_error(y_true, probs, n_bins):.3f})",
                                 marker=dict(size=6 + 30 * np.sqrt(share))))
    fig.update_layout(title=title, xaxis_title="confidence (max probability)", yaxis_title="accuracy",
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02], height=420)
    return fig
