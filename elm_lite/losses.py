"""Losses for long-tail learning, each a small device- and dtype-agnostic ``nn.Module``.

Every loss is built from the training class counts ``counts`` (shape ``(C,)``, all > 0) and keeps
its per-class quantities as float64 buffers, so ``loss.to(device)`` moves them with the model;
they are cast to the logits' dtype in ``forward``, so any float dtype works.
Inputs are checked: ``logits`` ``(B, C)`` finite floats, ``labels`` ``(B,)`` integers in ``[0, C)``;
anything else raises a ``ValueError`` that names the problem. Set ``validate=False`` on a loss to
skip the checks in a tight GPU loop (the finiteness check synchronises with the device).

Notation: prior ``pi_y = n_y / sum(n)``. All margins are in logit units. Each logit-margin loss
has ``pairwise_margins()``: the ``(C, C)`` matrix ``M[y, j]`` of how much the true logit ``f_y`` must
exceed ``f_j`` -- the common view in which hinge, LDAM and logit adjustment are the same idea.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# ----------------------------------------------------------------------------- input checks


def as_counts(counts, name: str = "counts") -> torch.Tensor:
    """Validate class counts and return them as a float64 tensor of shape ``(C,)``."""
    t = counts.detach().cpu() if isinstance(counts, torch.Tensor) else torch.as_tensor(counts)
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real numbers, got dtype {t.dtype}.")
    t = t.to(torch.float64)
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(f"{name} must be a 1-D sequence with one count per class (at least 2), "
                         f"got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{name} must be finite and > 0 for every class (a class with no training "
                         f"example has no prior); got {t.tolist()}.")
    return t


def check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``(B, n_classes)`` finite float and ``labels`` is
    ``(B,)`` integer in ``[0, n_classes)``."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(f"logits and labels must be torch tensors, got {type(logits).__name__} "
                         f"and {type(labels).__name__}.")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}.")
    if logits.ndim != 2 or logits.shape[1] != n_classes:
        raise ValueError(f"logits must have shape (batch, {n_classes}) to match the {n_classes} class "
                         f"counts, got {tuple(logits.shape)}.")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"labels must be an integer tensor (class indices), got dtype {labels.dtype}.")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match the logits' batch size, "
                         f"got {tuple(labels.shape)}.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got min {int(labels.min())}, "
                         f"max {int(labels.max())}.")
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf; check the model's outputs and the learning rate.")


def _check_range(name: str, value: float, low: float, high: float = math.inf) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
    return float(value)


# ----------------------------------------------------------------------------- margin schedules


def log_prior(counts) -> torch.Tensor:
    """``log pi_y``, shape ``(C,)`` (float64)."""
    n = as_counts(counts)
    return torch.log(n / n.sum())


def logit_adjustment(counts, tau: float = 1.0) -> torch.Tensor:
    """The logit-adjustment offsets ``tau * log pi_y``, shape ``(C,)``. Adding them to the logits
    during training (or subtracting them after) enforces the pairwise margin
    ``tau * log(pi_j / pi_y)`` of class ``y`` against class ``j``: large when ``y`` is rare."""
    return _check_range("tau", tau, 0.0, 10.0) * log_prior(counts)


def ldam_margins(counts, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_y proportional to n_y^(-1/4)``, scaled so the rarest class gets ``max_m``."""
    n = as_counts(counts)
    m = n ** -0.25
    return m * (_check_range("max_m", max_m, 0.0, 10.0) / m.max())


def class_balanced_weights(counts, beta: float = 0.9999) -> torch.Tensor:
    """Effective-number weights ``(1 - beta) / (1 - beta^n_y)`` normalised to sum to ``C``
    (Cui et al. 2019), used by LDAM's deferred re-weighting."""
    n = as_counts(counts)
    w = (1 - _check_range("beta", beta, 0.0, 0.999999)) / (1 - beta ** n)
    return w * len(n) / w.sum()


# ----------------------------------------------------------------------------- logit-margin losses


class _CountsLoss(nn.Module):
    """Base: holds the class counts and validates inputs."""

    def __init__(self, counts, validate: bool = True):
        super().__init__()
        self.register_buffer("counts", as_counts(counts))
        self.validate = validate

    @property
    def n_classes(self) -> int:
        return len(self.counts)

    def _check(self, logits, labels):
        if self.validate:
            check_logits_labels(logits, labels, self.n_classes)


class LogitAdjustedLoss(_CountsLoss):
    """Logit-adjusted cross-entropy (Menon et al. 2021): ``CE(logits + tau * log pi, y)``.

    logits ``(B, C)``, labels ``(B,)`` -> scalar (mean over the batch).
    ``tau = 0`` is plain cross-entropy; ``tau = 1`` equals :class:`BalancedSoftmaxLoss`.
    Safe range: ``tau`` in [0, 3]; 1 is the Fisher-consistent choice for the balanced error.
    """

    def __init__(self, counts, tau: float = 1.0, validate: bool = True):
        super().__init__(counts, validate)
        self.tau = _check_range("tau", tau, 0.0, 10.0)
        self.register_buffer("offsets", logit_adjustment(counts, tau))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(logits, labels)
        return F.cross_entropy(logits + self.offsets.to(logits.dtype), labels.long())

    def pairwise_margins(self) -> torch.Tensor:
        """``M[y, j] = tau * log(pi_j / pi_y)``: how far ``f_y`` must beat ``f_j`` before the
        adjusted logits tie; positive when ``y`` is rarer than ``j``. Shape ``(C, C)``."""
        return self.offsets[None, :] - self.offsets[:, None]

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class BalancedSoftmaxLoss(_CountsLoss):
    """Balanced Softmax (Ren et al. 2020): ``CE(logits + log n_y, y)``; logits ``(B, C)`` -> scalar.

    Adding ``log n`` or ``log pi`` differs by a constant per row, so this equals logit-adjusted
    cross-entropy with ``tau = 1``.
    """

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(logits, labels)
        return F.cross_entropy(logits + torch.log(self.counts).to(logits.dtype), labels.long())

    def pairwise_margins(self) -> torch.Tensor:
        """``M[y, j] = log(n_j / n_y)``, shape ``(C, C)`` (as logit adjustment with ``tau = 1``)."""
        log_n = torch.log(self.counts)
        return log_n[None, :] - log_n[:, None]


class LDAMLoss(_CountsLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019) on **cosine** logits in [-1, 1]:
    ``CE(s * (cos - m_y * onehot(y)), y, weight)`` with ``m_y`` from :func:`ldam_margins`.

    logits ``(B, C)`` cosine similarities (use a model with ``cosine=True``), labels ``(B,)`` -> scalar.
    Deferred re-weighting (DRW): with ``drw_epoch`` set, class-balanced weights
    (:func:`class_balanced_weights`) switch on from that epoch; the training loop calls
    :meth:`set_epoch`. Safe ranges: ``max_m`` in [0, 1], ``s`` in [1, 64].
    """

    def __init__(self, counts, max_m: float = 0.5, s: float = 30.0, drw_epoch: int | None = None,
                 beta: float = 0.9999, validate: bool = True):
        super().__init__(counts, validate)
        self.max_m, self.s = max_m, _check_range("s", s, 1e-3, 1e3)
        self.register_buffer("margins", ldam_margins(counts, max_m))
        self.register_buffer("drw_weights", class_balanced_weights(counts, beta))
        if drw_epoch is not None and (not isinstance(drw_epoch, int) or drw_epoch < 0):
            raise ValueError(f"drw_epoch must be None or an integer >= 0, got {drw_epoch!r}.")
        self.drw_epoch = drw_epoch
        self.reweight = drw_epoch == 0

    def set_epoch(self, epoch: int) -> None:
        """Turn DRW on once ``epoch >= drw_epoch`` (epochs count from 1 in :func:`elm_lite.fit`)."""
        self.reweight = self.drw_epoch is not None and epoch >= self.drw_epoch

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(logits, labels)
        if self.validate and logits.detach().abs().max() > 1 + 1e-4:
            raise ValueError("LDAMLoss expects cosine logits in [-1, 1] (got values up to "
                             f"{float(logits.detach().abs().max()):.3g}); use a model with cosine=True.")
        labels = labels.long()
        shifted = logits - F.one_hot(labels, self.n_classes).to(logits.dtype) * self.margins.to(logits.dtype)
        weight = self.drw_weights.to(logits.dtype) if self.reweight else None
        return F.cross_entropy(self.s * shifted, labels, weight=weight)

    def pairwise_margins(self) -> torch.Tensor:
        """``M[y, j] = m_y`` in cosine units, shape ``(C, C)``, zero diagonal."""
        return self.margins[:, None] * (1 - torch.eye(self.n_classes, device=self.margins.device))

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, drw_epoch={self.drw_epoch}"


HINGE_SCHEDULES = ("equal", "n^-1/4")


class MulticlassHingeLoss(_CountsLoss):
    """Multiclass hinge loss with per-class margins (Crammer-Singer SVM form):
    ``mean_i max(0, m_{y_i} + max_{j != y_i} f_j - f_{y_i})``; logits ``(B, C)`` -> scalar.

    ``schedule="equal"``: every class needs margin ``margin`` (the classic SVM).
    ``schedule="n^-1/4"``: ``m_y`` proportional to ``n_y^(-1/4)`` with the rarest class at ``margin``
    (the margin trade-off that LDAM derives). Pair with weight decay, as an SVM pairs with its
    norm penalty. Safe range: ``margin`` in (0, 5].
    """

    def __init__(self, counts, margin: float = 1.0, schedule: str = "equal", validate: bool = True):
        super().__init__(counts, validate)
        if schedule not in HINGE_SCHEDULES:
            raise ValueError(f"schedule must be one of {HINGE_SCHEDULES}, got {schedule!r}.")
        margin = _check_range("margin", margin, 0.0, 100.0)
        self.schedule = schedule
        margins = (torch.full((self.n_classes,), margin, dtype=torch.float64) if schedule == "equal"
                   else ldam_margins(counts, margin))
        self.register_buffer("margins", margins)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(logits, labels)
        labels = labels.long()
        true = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(labels, self.n_classes).bool(), float("-inf")).amax(1)
        return F.relu(self.margins.to(logits.dtype)[labels] + others - true).mean()

    def pairwise_margins(self) -> torch.Tensor:
        """``M[y, j] = m_y``, shape ``(C, C)``, zero diagonal."""
        return self.margins[:, None] * (1 - torch.eye(self.n_classes, device=self.margins.device))

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, margins={[round(m, 3) for m in self.margins.tolist()]}"


# ----------------------------------------------------------------------------- post-hoc adjustment


def posthoc_adjust(logits: torch.Tensor, counts, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment for a model trained with plain CE: ``logits - tau * log pi``,
    shape ``(B, C)``. Predict with ``argmax`` of the result."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D float tensor (batch, classes), got {getattr(logits, 'shape', logits)!r}.")
    offsets = logit_adjustment(counts, tau)
    if logits.shape[1] != len(offsets):
        raise ValueError(f"logits have {logits.shape[1]} classes but counts has {len(offsets)}.")
    return logits - offsets.to(logits.device, logits.dtype)


class PosthocAdjusted(nn.Module):
    """Wrap a trained model so that its logits are post-hoc adjusted: forward returns
    ``(logits - tau * log pi, embedding)``; plots and ``predict`` work on it unchanged."""

    def __init__(self, model: nn.Module, counts, tau: float = 1.0):
        super().__init__()
        self.model, self.n_classes = model, getattr(model, "n_classes", None)
        self.register_buffer("offsets", logit_adjustment(counts, tau))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, z = self.model(x)
        return logits - self.offsets.to(logits.dtype), z


# ----------------------------------------------------------------------------- registry

LOSSES = {
    "ce": lambda counts, **kw: LogitAdjustedLoss(counts, tau=0.0, **kw),
    "la": LogitAdjustedLoss,
    "balanced_softmax": BalancedSoftmaxLoss,
    "ldam": LDAMLoss,
    "hinge": MulticlassHingeLoss,
}


def get(name: str, counts, **kwargs) -> nn.Module:
    """Build a loss by name: ``"ce"`` (plain cross-entropy, i.e. LA with ``tau=0``), ``"la"``,
    ``"balanced_softmax"``, ``"ldam"``, ``"hinge"``; ``kwargs`` go to its constructor."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}.")
    try:
        return LOSSES[name](counts, **kwargs)
    except TypeError as e:  # an unknown keyword: say which loss and what it takes
        raise ValueError(f"bad arguments for loss {name!r}: {e}") from None
