"""Probabilities a model can be trusted with: softmax of (adjusted) logits, and temperature scaling
(Guo et al. 2017) -- one number ``T`` that divides the logits, fitted on validation data by the
negative log-likelihood. It changes no prediction (argmax is unchanged), only how confident each is;
:func:`elm_lite.metrics.expected_calibration_error` measures the effect."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

TEMPERATURE_RANGE = (0.02, 50.0)   # the search interval for T (log-spaced golden-section search)


def probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)``, ``(N, C)`` float64 NumPy."""
    t = torch.as_tensor(np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=np.float64))
    if t.ndim != 2 or not torch.isfinite(t).all():
        raise ValueError(f"logits must be a finite (N, C) array, got shape {tuple(t.shape)}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    return F.softmax(t / temperature, dim=1).numpy()


def nll(logits, y, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels ``y`` ``(N,)`` under ``softmax(logits / temperature)``."""
    t = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    return float(F.cross_entropy(t / temperature, torch.as_tensor(np.asarray(y), dtype=torch.long)))


def fit_temperature(logits_val, y_val) -> float:
    """The temperature ``T`` in :data:`TEMPERATURE_RANGE` minimising the validation NLL of
    ``softmax(logits_val / T)`` (logits ``(N, C)``, labels ``(N,)`` from validation data, never the test
    set). T > 1 softens an over-confident model, T < 1 sharpens an under-confident one."""
    from scipy.optimize import minimize_scalar
    logits_val, y_val = np.asarray(logits_val, dtype=np.float64), np.asarray(y_val)
    if logits_val.ndim != 2 or len(logits_val) != len(y_val) or not len(y_val):
        raise ValueError(f"need validation logits (N, C) and labels (N,), got {logits_val.shape} and {y_val.shape}.")
    lo, hi = np.log(TEMPERATURE_RANGE)
    best = minimize_scalar(lambda log_t: nll(logits_val, y_val, float(np.exp(log_t))), bounds=(lo, hi),
                           method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


def choose_threshold(y_val, scores_val, positive_prior: float) -> float:
    """The threshold on ``scores_val`` (validation scores of class 1, labels ``y_val`` in {0, 1}) with the
    best F1 of class 1 under the deployment prior ``positive_prior``
    (:func:`~elm_lite.metrics.precision_recall`): chosen on validation data, then used on the test set."""
    from .metrics import precision_recall
    best, best_f1 = float("nan"), -1.0
    for t in np.unique(np.asarray(scores_val, dtype=float)):
        precision, recall = precision_recall(y_val, scores_val, t, positive_prior)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best
