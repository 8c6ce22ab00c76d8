"""Metrics for long-tailed classification, evaluated on a balanced test set.

Inputs may be NumPy arrays, lists or torch tensors of integer labels, shape ``(N,)``.
A class with no test example has accuracy ``nan`` and is left out of every mean.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("many", "medium", "few")


def _labels(name: str, y, n_classes: int | None = None) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}.")
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} holds a negative label ({y.min()}); labels must be in [0, n_classes).")
    if n_classes is not None and y.size and y.max() >= n_classes:
        raise ValueError(f"{name} holds label {y.max()}, outside [0, {n_classes}) for n_classes={n_classes}.")
    return y.astype(np.int64)


MAX_CLASSES = 100_000  # a (C, C) confusion matrix beyond this would not fit in memory


def _n_classes(n_classes, *labels) -> int:
    """``n_classes`` checked, or inferred from the largest label."""
    if n_classes is None:
        n_classes = int(max(y.max(initial=-1) for y in labels) + 1)
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or not 1 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be an integer in [1, {MAX_CLASSES}] (inferred from the largest label "
                         f"when not given), got {n_classes!r}; check the labels or pass n_classes.")
    return int(n_classes)


def _pair(y_true, y_pred, n_classes):
    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}.")
    if not y_true.size:
        raise ValueError("y_true and y_pred are empty: an accuracy over no example is undefined.")
    n_classes = _n_classes(n_classes, y_true, y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        _labels(name, y, n_classes)  # range check against n_classes
    return y_true, y_pred, n_classes


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """``M[i, j]`` = number of test examples of class ``i`` predicted as ``j``; shape ``(C, C)``."""
    y_true, y_pred, n_classes = _pair(y_true, y_pred, n_classes)
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def per_class_accuracy(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """Recall of each class, shape ``(C,)``; ``nan`` for a class with no test example."""
    m = confusion_matrix(y_true, y_pred, n_classes)
    support = m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(m) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y_true, y_pred, n_classes: int | None = None) -> float:
    """Mean per-class accuracy over the classes present in ``y_true`` (1 - balanced error)."""
    acc = per_class_accuracy(y_true, y_pred, n_classes)
    return float(np.nanmean(acc)) if np.any(~np.isnan(acc)) else float("nan")


def shot_split(train_counts, many: int = 100, few: int = 20) -> np.ndarray:
    """Label each class ``"many"`` (more than ``many`` training examples), ``"few"`` (fewer
    than ``few``) or ``"medium"``; shape ``(C,)``. Defaults follow the CIFAR-LT/ImageNet-LT
    convention; toy problems with a few hundred examples may want smaller thresholds."""
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0):
        raise ValueError(f"train_counts must be a 1-D array of non-negative counts, got {counts!r}.")
    if not few <= many:
        raise ValueError(f"need few <= many for the shot thresholds, got few={few}, many={many}.")
    return np.where(counts > many, "many", np.where(counts < few, "few", "medium"))


def shot_accuracy(y_true, y_pred, train_counts, many: int = 100, few: int = 20) -> dict[str, float]:
    """Mean per-class accuracy within the many / medium / few splits of :func:`shot_split`.

    A split with no class (or no tested class) is ``nan``.
    """
    split = shot_split(train_counts, many, few)
    acc = per_class_accuracy(y_true, y_pred, len(split))
    out = {}
    for name in SPLITS:
        vals = acc[(split == name) & ~np.isnan(acc)]
        out[name] = float(vals.mean()) if vals.size else float("nan")
    return out


def embedding_spread(z, y, n_classes: int | None = None) -> np.ndarray:
    """Per-class spread of embeddings ``z`` ``(N, E)`` with labels ``y`` ``(N,)``, shape ``(C,)``:
    ``1 - mean_i cos(z_i, mu_c)`` over the L2-normalised embeddings of class ``c``, ``mu_c``
    their mean. 0 for a perfectly tight cluster, 1 for directions that cancel out;
    ``nan`` for a class with no example."""
    if hasattr(z, "detach"):
        z = z.detach().cpu().numpy()
    z = np.asarray(z, dtype=np.float64)
    y = _labels("y", y)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"z must have shape (N, E) with N = len(y) = {len(y)}, got {z.shape}.")
    if not len(y):
        raise ValueError("z and y are empty: a spread over no embedding is undefined.")
    if not np.isfinite(z).all():
        raise ValueError(f"z contains {int((~np.isfinite(z)).sum())} NaN or inf values; embeddings must be "
                         "finite (did training diverge?).")
    n_classes = _n_classes(n_classes, y)
    _labels("y", y, n_classes)
    unit = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    spread = np.full(n_classes, np.nan)
    for c in range(n_classes):
        members = unit[y == c]
        if len(members):
            mu = members.mean(0)
            mu = mu / max(np.linalg.norm(mu), 1e-12)
            spread[c] = 1 - float(np.mean(members @ mu))
    return spread


def spread_summary(spread, train_counts, many: int = 100, few: int = 20) -> dict[str, float]:
    """Mean spread of the many / medium / few classes, and ``tail_head_ratio`` = few / many
    (``nan`` where a split is empty)."""
    split = shot_split(train_counts, many, few)
    spread = np.asarray(spread, dtype=float)
    out = {}
    for name in SPLITS:
        vals = spread[(split == name) & ~np.isnan(spread)]
        out[name] = float(vals.mean()) if vals.size else float("nan")
    out["tail_head_ratio"] = out["few"] / out["many"] if out["many"] > 0 else float("nan")
    return out
