"""Metrics for long-tailed classification, evaluated on a balanced test set.

Inputs may be NumPy arrays, lists or torch tensors of integer labels, shape ``(N,)``.
A class with no test example has accuracy ``nan`` and is left out of every mean.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .recipes import check, integer, number, probabilities, tensor

SPLITS = ("many", "medium", "few")


def _labels(name: str, y, n_classes: float = math.inf, length: int | str = "N") -> np.ndarray:
    """``y`` checked as ``length`` class labels in ``[0, n_classes)``, an int64 array ``(N,)``."""
    y = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y)
    y = y.astype(np.int64) if y.dtype.kind == "f" and np.all(y % 1 == 0) else y   # 3.0 is class 3
    return check(name, y, tensor((length,), "int", below=n_classes, noun="array")).astype(np.int64)


MAX_CLASSES = 100_000  # a (C, C) confusion matrix beyond this would not fit in memory


def _pair(y_true, y_pred, n_classes) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked ``(y_true (N,), y_pred (N,), n_classes)``; ``n_classes`` inferred from the largest label if None."""
    y_true = _labels("y_true", y_true)
    y_pred = _labels("y_pred", y_pred, length=len(y_true))
    n_classes = _n_classes(n_classes, y_true, y_pred)
    return _labels("y_true", y_true, n_classes), _labels("y_pred", y_pred, n_classes), n_classes


def _n_classes(n_classes, *labels) -> int:
    """``n_classes`` checked, or inferred from the largest label."""
    inferred = n_classes is None
    n_classes = max(int(y.max()) for y in labels) + 1 if inferred else n_classes
    return int(check("n_classes" + " (inferred from the largest label)" * inferred, n_classes,
                     integer(1, MAX_CLASSES), "Check the labels or pass n_classes."))


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
    """Mean per-class accuracy over the classes present in ``y_true`` (1 - balanced error; ``y_true`` is
    never empty, so one class at least is present)."""
    return float(np.nanmean(per_class_accuracy(y_true, y_pred, n_classes)))


def shot_split(train_counts, many: int = 100, few: int = 20) -> np.ndarray:
    """Label each class ``"many"`` (more than ``many`` training examples), ``"few"`` (fewer
    than ``few``) or ``"medium"``; shape ``(C,)``. Defaults follow the CIFAR-LT/ImageNet-LT
    convention; toy problems with a few hundred examples may want smaller thresholds."""
    counts = check("train_counts", np.asarray(train_counts), tensor(("classes",), "number", below=math.inf,
                                                                     noun="array"))   # a NaN count is in no split
    check("few", few, number(0, many), f"(the few-shot threshold, at most many={many})")
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
    their normalised mean. 0 for a perfectly tight cluster, 1 for directions that cancel out;
    ``nan`` for a class with no example."""
    unit, y, n_classes = _unit_rows(z, y, n_classes, "spread")
    means = _class_means(unit, y, n_classes)
    spread = np.full(n_classes, np.nan)
    for c in np.unique(y):
        spread[c] = 1 - float(np.mean(unit[y == c] @ means[c]))
    return spread


def _unit_rows(z, y, n_classes, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked ``(unit-normalised z (N, E), labels (N,), n_classes)`` for the embedding metrics."""
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z, dtype=np.float64)
    y = _labels("y", y)
    check("z", z, tensor((len(y), "E"), finite=True, noun="array"), "(one embedding per label; did training diverge?)")
    n_classes = _n_classes(n_classes, y)
    y = _labels("y", y, n_classes)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():   # no direction, so no cosine: left out, never counted as "spread 1"
        warnings.warn(f"{int(zero.sum())} of {len(z)} embeddings are all zero and have no direction; the {what} "
                      "leaves them out (a class with only such embeddings gets nan).", stacklevel=3)
        z, y, norms = z[~zero], y[~zero], norms[~zero]
    return z / norms, y, n_classes


def _class_means(unit: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Normalised mean of each class's unit embeddings, ``(C, E)``; a row of nan for an absent class."""
    means = np.full((n_classes, unit.shape[1]), np.nan)
    for c in np.unique(y):
        mu = unit[y == c].mean(0)
        means[c] = mu / max(np.linalg.norm(mu), 1e-12)
    return means


def embedding_margin(z, y, n_classes: int | None = None) -> np.ndarray:
    """Per-class mean embedding margin, shape ``(C,)``: for example i,
    ``cos(z_i, mu_{y_i}) - max_{c != y_i} cos(z_i, mu_c)``, with ``mu_c`` the normalised mean of class
    c's normalised embeddings in the same set; averaged over each class (nan for an absent class).
    Positive: the example sits closer to its own class mean than to any other -- what an
    embedding margin asks for. Classes absent from the set have no mean and are not competitors."""
    unit, y, n_classes = _unit_rows(z, y, n_classes, "margin")
    if not len(y):   # every embedding was all zero
        return np.full(n_classes, np.nan)
    means = _class_means(unit, y, n_classes)
    cos = unit @ np.nan_to_num(means).T                                  # (N, C)
    cos[:, np.isnan(means[:, 0])] = -np.inf                              # absent classes compete with nobody
    own = cos[np.arange(len(y)), y]
    cos[np.arange(len(y)), y] = -np.inf
    per_example = own - cos.max(1)                                       # -inf - ... only with one class
    margin = np.full(n_classes, np.nan)
    for c in np.unique(y):
        margin[c] = float(per_example[y == c].mean())
    return margin


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


def mean_sd(values) -> tuple[float, float, int]:
    """``(mean, sample standard deviation, n)`` of the non-NaN ``values`` (e.g. one number per seed).
    The course's one "±" convention: the sample standard deviation (ddof = 1), with n stated beside it;
    NaN where it is undefined (one value: no spread measured; none: no mean)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    mean = float(v.mean()) if v.size else float("nan")
    return mean, float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)


def error_under_prior(y_true, y_pred, prior, n_classes: int | None = None) -> float:
    """The error on test data whose classes occur with ``prior`` ``(C,)`` (a deployment prior; summing
    to 1), estimated from any test set: ``sum_c prior_c * (1 - accuracy_c)``. The uniform prior gives
    the balanced error; the training prior the standard error on data distributed like training."""
    prior = np.asarray(prior, dtype=float)
    acc = per_class_accuracy(y_true, y_pred, n_classes if n_classes is not None else len(prior))
    check("prior", prior, probabilities(acc.shape), "(one per class)")
    if np.any(np.isnan(acc) & (prior > 0)):
        raise ValueError("a class with prior > 0 has no test example: its error under the prior is unknown; "
                         "test on a set that holds every class.")
    return float(np.dot(prior, 1 - np.nan_to_num(acc)))


# ----------------------------------------------------------------------------- calibration

ECE_BINS = 15   # equal-width confidence bins (Guo et al. 2017)


def _probabilities(probs, n_examples: int) -> np.ndarray:
    probs = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs, dtype=np.float64)
    return check("probs", probs, probabilities((n_examples, "classes")),
                 "(one row per label: the softmax of the logits, elm_lite.calibration.probabilities)")


def calibration_bins(y_true, probs, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """The reliability table of predictions ``argmax probs`` with confidence ``max probs``: equal-width
    bins ``((b-1)/n_bins, b/n_bins]`` (a confidence of 0 in the first), each with its ``count``, mean
    ``confidence`` and ``accuracy`` (nan for an empty bin); shapes ``(n_bins,)``. ``probs`` ``(N, C)``."""
    y = _labels("y_true", y_true)
    check("n_bins", n_bins, integer(1))
    probs = _probabilities(probs, len(y))
    confidence, correct = probs.max(1), (probs.argmax(1) == y).astype(float)
    bin_of = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bin_of, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"count": count, "confidence": np.bincount(bin_of, confidence, n_bins) / count,
                "accuracy": np.bincount(bin_of, correct, n_bins) / count}


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS) -> float:
    """ECE: ``sum_b (|B_b| / N) |accuracy(B_b) - confidence(B_b)|`` over the equal-width confidence bins
    of :func:`calibration_bins`. 0: when the model says 80 %, it is right 80 % of the time."""
    bins = calibration_bins(y_true, probs, n_bins)
    full = bins["count"] > 0
    gap = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    return float(np.sum(bins["count"][full] * gap) / bins["count"].sum())


def shot_calibration_error(y_true, probs, train_counts, many: int = 100, few: int = 20,
                           n_bins: int = ECE_BINS) -> dict[str, float]:
    """ECE over the test examples whose true class is many / medium / few-shot (:func:`shot_split`),
    and ``overall``; a split with no test example is nan."""
    y = _labels("y_true", y_true)
    probs = _probabilities(probs, len(y))
    split = shot_split(train_counts, many, few)
    out = {"overall": expected_calibration_error(y, probs, n_bins)}
    for name in SPLITS:
        keep = np.isin(y, np.flatnonzero(split == name))
        out[name] = expected_calibration_error(y[keep], probs[keep], n_bins) if keep.any() else float("nan")
    return out


def precision_recall(y_true, scores, threshold: float, positive_prior: float | None = None) -> tuple[float, float]:
    """``(precision, recall)`` of the binary rule ``scores >= threshold`` for class 1 (the positive, rare
    class), labels ``y_true`` in {0, 1} ``(N,)``. Recall is the rate on class 1's examples; precision is
    computed for test data in which class 1 has prior ``positive_prior`` (default: its share of
    ``y_true``): ``pi recall / (pi recall + (1 - pi) false-positive rate)``, so a balanced sample can
    report the precision of any deployment prior. nan where nothing is predicted positive."""
    y, scores = _labels("y_true", y_true, 2), np.asarray(scores, dtype=float)
    if scores.shape != y.shape or not (y == 0).any() or not (y == 1).any():
        raise ValueError(f"need one score per label and both classes present; got {scores.shape} scores for "
                         f"labels {np.bincount(y, minlength=2).tolist()} (counts of 0 and 1).")
    prior = float(np.mean(y)) if positive_prior is None else float(positive_prior)
    if not 0 < prior < 1:
        raise ValueError(f"positive_prior must be in (0, 1), got {positive_prior!r}.")
    positive = scores >= threshold
    recall, false_positive = float(positive[y == 1].mean()), float(positive[y == 0].mean())
    flagged = prior * recall + (1 - prior) * false_positive
    return (prior * recall / flagged if flagged > 0 else float("nan")), recall
