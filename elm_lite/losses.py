"""Losses for long-tail learning, each a small device- and dtype-agnostic ``nn.Module``.

Every loss is built from the training class counts ``counts`` (shape ``(C,)``, all > 0) and keeps
its per-class quantities as float64 buffers, so ``loss.to(device)`` moves them with the model;
they are cast to the logits' dtype in ``forward``, so any float dtype works.
Inputs are checked: ``logits`` ``(B, C)`` finite floats, ``labels`` ``(B,)`` integers in ``[0, C)``;
anything else raises a ``ValueError`` that names the argument, the value and what it must be
(:func:`elm_lite.recipes.check`, at the door of each public function; the formulas below read without
checks). Inside the engine's training loops (:data:`CHECK_VALUES` off) the checks that read values back
from the device (label range, finiteness: one host sync each on a GPU) are skipped.

Notation: prior ``pi_y = n_y / sum(n)``. All margins are in logit units. Each logit-margin loss
has ``pairwise_margins()``: the ``(C, C)`` matrix ``M[y, j]`` of how much the true logit ``f_y`` must
exceed ``f_j`` -- the common view in which hinge, LDAM and logit adjustment are the same idea.
"""
from __future__ import annotations

import contextvars

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .interfaces import Scheduled
from .recipes import (
    CLASS_COUNTS,
    ELM_RECOMMENDED,
    MARGIN_SCHEDULE,
    check,
    integer,
    number,
    one_of,
    or_none,
    probabilities,
    tensor,
)

# ----------------------------------------------------------------------------- input checks

# Checks that read values back from the device (label range, finiteness): one host sync each on a GPU.
# The engine's training loops switch them off (``elm_lite.engine.fused.trusted_batches``) after
# checking the data once; called directly, every loss checks its inputs.
CHECK_VALUES = contextvars.ContextVar("elm_lite_check_values", default=True)


def as_counts(counts, name: str = "counts") -> torch.Tensor:
    """Validate class counts and return them as a float64 tensor of shape ``(C,)``."""
    # float64 from the start: [1, 1e-300] must not be rounded to [1, 0] before it is checked
    values = counts.detach().cpu().double() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    return torch.as_tensor(check(name, values, CLASS_COUNTS), dtype=torch.float64)


def check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``(B, n_classes)`` finite float and ``labels`` is
    ``(B,)`` integer in ``[0, n_classes)`` (values read only under :data:`CHECK_VALUES`)."""
    values = CHECK_VALUES.get()
    check("logits", logits, tensor(("batch", n_classes), "float", finite=values),
          "(NaN or inf logits: check the model's outputs and the learning rate.)")
    check("labels", labels, tensor((len(logits),), "int", below=n_classes if values else None))


# ----------------------------------------------------------------------------- margin schedules


def log_prior(counts) -> torch.Tensor:
    """``log pi_y``, shape ``(C,)`` (float64)."""
    n = as_counts(counts)
    return torch.log(n / n.sum())


def logit_adjustment(counts, tau: float = 1.0) -> torch.Tensor:
    """The logit-adjustment offsets ``tau * log pi_y``, shape ``(C,)``. Adding them to the logits
    during training (or subtracting them after) enforces the pairwise margin
    ``tau * log(pi_j / pi_y)`` of class ``y`` against class ``j``: large when ``y`` is rare."""
    return check("tau", tau, number(0, 10)) * log_prior(counts)


def ldam_margins(counts, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_y proportional to n_y^(-1/4)``, scaled so the rarest class gets ``max_m``."""
    n = as_counts(counts)
    m = n ** -0.25
    return m * (check("max_m", max_m, number(0, 10)) / m.max())


def effective_number_weights(counts, beta: float = 0.9999) -> torch.Tensor:
    """Effective-number weights ``(1 - beta) / (1 - beta^n_y)`` normalised to sum to ``C``
    (Cui et al. 2019), used by LDAM's deferred re-weighting."""
    n = as_counts(counts)
    w = (1 - check("beta", beta, number(0, 0.999999))) / (1 - beta ** n)
    return w * len(n) / w.sum()


def inverse_frequency_weights(counts) -> torch.Tensor:
    """Weights ``1 / n_y`` normalised to sum to ``C``: every class weighs as much in the loss as
    if the data were balanced. Shape ``(C,)``."""
    w = 1 / as_counts(counts)
    return w * len(w) / w.sum()


REWEIGHTINGS = ("inverse", "effective_number")

# ----------------------------------------------------------------------------- logit-margin losses


class _CountsLoss(nn.Module):
    """Base: holds the class counts ``(C,)``, checked; ``forward`` checks its inputs (:func:`check_logits_labels`)."""

    def __init__(self, counts):
        super().__init__()
        self.register_buffer("counts", as_counts(counts))

    @property
    def n_classes(self) -> int:
        return len(self.counts)


class LogitAdjustedLoss(_CountsLoss):
    """Logit-adjusted cross-entropy (Menon et al. 2021): ``CE(logits + tau * log pi, y)``.

    logits ``(B, C)``, labels ``(B,)`` -> scalar (mean over the batch).
    ``tau = 0`` is plain cross-entropy; ``tau = 1`` equals :class:`BalancedSoftmaxLoss`.
    Safe range: ``tau`` in [0, 3]; 1 is the Fisher-consistent choice for the balanced error.
    """

    def __init__(self, counts, tau: float = 1.0):
        super().__init__(counts)
        self.tau = float(check("tau", tau, number(0, 10)))
        self.register_buffer("offsets", logit_adjustment(counts, tau))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_logits_labels(logits, labels, self.n_classes)
        return F.cross_entropy(logits + self.offsets.to(logits.dtype), labels.long())

    def pairwise_margins(self) -> torch.Tensor:
        """``M[y, j] = tau * log(pi_j / pi_y)``: how far ``f_y`` must beat ``f_j`` before the
        adjusted logits tie; positive when ``y`` is rarer than ``j``. Shape ``(C, C)``."""
        return self.offsets[None, :] - self.offsets[:, None]

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class ReweightedLoss(_CountsLoss):
    """Class-weighted cross-entropy, the oldest long-tail baseline: ``sum_b w_{y_b} CE_b / sum_b w_{y_b}``
    (PyTorch's weighted mean). ``scheme="inverse"``: ``w_y`` proportional to ``1 / n_y``;
    ``"effective_number"``: ``(1 - beta) / (1 - beta^n_y)`` (Cui et al. 2019); both normalised to
    sum to ``C``. It changes how much each example *counts*, not where the boundary must sit
    (notebook 02 measures where that stops short of logit adjustment; in deep networks that separate
    their training data the weights are reported to lose their effect, Byrd & Lipton 2019).
    logits ``(B, C)``, labels ``(B,)`` -> scalar."""

    def __init__(self, counts, scheme: str = "inverse", beta: float = 0.9999):
        super().__init__(counts)
        self.scheme, self.beta = check("scheme", scheme, one_of(*REWEIGHTINGS)), beta
        weights = inverse_frequency_weights(counts) if scheme == "inverse" else effective_number_weights(counts, beta)
        self.register_buffer("weights", weights)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_logits_labels(logits, labels, self.n_classes)
        return F.cross_entropy(logits, labels.long(), weight=self.weights.to(logits.dtype))

    def extra_repr(self) -> str:
        return f"scheme={self.scheme!r}" + (f", beta={self.beta}" if self.scheme == "effective_number" else "")


class FocalLoss(_CountsLoss):
    """Focal loss (Lin et al. 2017): ``mean_b -(1 - p_b)^gamma log p_b`` with ``p_b`` the softmax
    probability of the true class. ``gamma = 0`` is cross-entropy; larger ``gamma`` down-weights the
    examples the model already gets right -- whichever class they belong to: it never reads ``counts``
    (kept for the common interface and the input checks), so it has no notion of the class prior.
    logits ``(B, C)``, labels ``(B,)`` -> scalar. Safe range: ``gamma`` in [0, 5] (the paper's 2)."""

    def __init__(self, counts, gamma: float = 2.0):
        super().__init__(counts)
        self.gamma = float(check("gamma", gamma, number(0, 10)))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_logits_labels(logits, labels, self.n_classes)
        return focal_terms(logits, labels.long(), self.gamma).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


def focal_terms(logits: torch.Tensor, labels: torch.Tensor, gamma) -> torch.Tensor:
    """Per-example focal loss ``-(1 - p)^gamma log p``: logits ``(..., B, C)``, labels ``(..., B)``,
    ``gamma`` a number or a tensor that broadcasts against ``(..., B)`` -> ``(..., B)``."""
    log_p = F.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    return -(1 - log_p.exp()).pow(gamma) * log_p


class BalancedSoftmaxLoss(_CountsLoss):
    """Balanced Softmax (Ren et al. 2020): ``CE(logits + log n_y, y)``; logits ``(B, C)`` -> scalar.

    Adding ``log n`` or ``log pi`` differs by a constant per row, so this equals logit-adjusted
    cross-entropy with ``tau = 1``.
    """

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_logits_labels(logits, labels, self.n_classes)
        return F.cross_entropy(logits + torch.log(self.counts).to(logits.dtype), labels.long())

    def pairwise_margins(self) -> torch.Tensor:
        """``M[y, j] = log(n_j / n_y)``, shape ``(C, C)`` (as logit adjustment with ``tau = 1``)."""
        log_n = torch.log(self.counts)
        return log_n[None, :] - log_n[:, None]


class LDAMLoss(_CountsLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019) on **cosine** logits in [-1, 1]:
    ``CE(s * (cos - m_y * onehot(y)), y, weight)`` with ``m_y`` from :func:`ldam_margins`.

    logits ``(B, C)`` cosine similarities (use a model with ``cosine=True``), labels ``(B,)`` -> scalar.
    Deferred re-weighting (DRW): with ``drw_epoch`` set, effective-number weights
    (:func:`effective_number_weights`, Cui et al.'s "class-balanced" loss) switch on from that epoch;
    the training loop calls :meth:`set_epoch`. Safe ranges: ``max_m`` in [0, 1], ``s`` in [1, 64].
    """

    def __init__(self, counts, max_m: float = 0.5, s: float = 30.0, drw_epoch: int | None = None,
                 beta: float = 0.9999):
        super().__init__(counts)
        self.max_m, self.s = max_m, float(check("s", s, number(1e-3, 1e3)))
        self.register_buffer("margins", ldam_margins(counts, max_m))
        self.register_buffer("drw_weights", effective_number_weights(counts, beta))
        self.drw_epoch = check("drw_epoch", drw_epoch, or_none(integer(0)))
        self.reweight = drw_epoch == 0

    def set_epoch(self, epoch: int) -> None:
        """Turn DRW on once ``epoch >= drw_epoch`` (epochs count from 1 in :func:`elm_lite.fit`)."""
        self.reweight = self.drw_epoch is not None and epoch >= self.drw_epoch

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_logits_labels(logits, labels, self.n_classes)
        if CHECK_VALUES.get():
            check("|logits|", logits.detach().abs(), tensor(("batch", self.n_classes), below=1 + 1e-4),
                  "LDAM needs cosine logits in [-1, 1]: use a model with cosine=True.")
        labels = labels.long()
        shifted = logits - F.one_hot(labels, self.n_classes).to(logits.dtype) * self.margins.to(logits.dtype)
        weight = self.drw_weights.to(logits.dtype) if self.reweight else None
        return F.cross_entropy(self.s * shifted, labels, weight=weight)

    def pairwise_margins(self) -> torch.Tensor:
        """``M[y, j] = m_y`` in cosine units, shape ``(C, C)``, zero diagonal."""
        return self.margins[:, None] * (1 - torch.eye(self.n_classes, device=self.margins.device))

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, drw_epoch={self.drw_epoch}"


HINGE_SCHEDULES = ("equal", MARGIN_SCHEDULE)


class MulticlassHingeLoss(_CountsLoss):
    """Multiclass hinge loss with per-class margins (Crammer-Singer SVM form):
    ``mean_i max(0, m_{y_i} + max_{j != y_i} f_j - f_{y_i})``; logits ``(B, C)`` -> scalar.

    ``schedule="equal"``: every class needs margin ``margin`` (the classic SVM).
    ``schedule="n^-1/4"``: ``m_y`` proportional to ``n_y^(-1/4)`` with the rarest class at ``margin``
    (the margin trade-off that LDAM derives). Pair with weight decay, as an SVM pairs with its
    norm penalty. Safe range: ``margin`` in (0, 5].
    """

    def __init__(self, counts, margin: float = 1.0, schedule: str = "equal"):
        super().__init__(counts)
        self.schedule = check("schedule", schedule, one_of(*HINGE_SCHEDULES))
        margin = check("margin", margin, number(0, 10))
        margins = (torch.full((self.n_classes,), margin, dtype=torch.float64) if schedule == "equal"
                   else ldam_margins(counts, margin))
        self.register_buffer("margins", margins)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_logits_labels(logits, labels, self.n_classes)
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


def target_log_prior(target_prior, n_classes: int) -> torch.Tensor:
    """``log p`` of a deployment prior ``target_prior`` ``(C,)`` (float64): positive, summing to 1."""
    p = check("target_prior", np.asarray(target_prior, dtype=np.float64), probabilities((n_classes,), positive=True),
              "(a class prior at deployment: divide counts by their sum to turn them into one)")
    return torch.log(torch.as_tensor(p))


def posthoc_adjust(logits: torch.Tensor, counts, tau: float = 1.0, target_prior=None) -> torch.Tensor:
    """Post-hoc logit adjustment for a model trained with plain CE: ``logits - tau * log pi``,
    shape ``(B, C)``; with a deployment prior ``target_prior`` ``p`` ``(C,)``, ``logits - tau * log pi
    + log p`` (``tau = 1``: the Bayes rule for test data drawn with class prior ``p``; ``None``: the
    uniform prior, the balanced error). Predict with ``argmax`` of the result."""
    offsets = logit_adjustment(counts, tau)
    check("logits", logits, tensor(("batch", len(offsets))), "(one column per class of counts)")
    if target_prior is not None:
        offsets = offsets - target_log_prior(target_prior, len(offsets))
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


# ----------------------------------------------------------------------------- embedding losses

MARGIN_PLACEMENTS = ("positive", "centroid")   # the margin study's other forms live beside it (studies/)
ANCHOR_AVERAGES = ("all", "class")


def embedding_margins(counts, delta_max: float = ELM_RECOMMENDED["delta_max"]) -> torch.Tensor:
    """Per-class embedding margins ``delta_y`` (cosine units) proportional to ``n_y^(-1/4)``
    (:data:`~elm_lite.recipes.MARGIN_SCHEDULE`, LDAM's trade-off), the rarest class at ``delta_max``. Shape ``(C,)``."""
    return ldam_margins(counts, check("delta_max", delta_max, number(0, 2)))


def _check_embeddings(z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor | None = None,
                      n_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept z ``(B, E)`` or ``(B, V, E)`` (V views of each sample), labels ``(B,)`` in ``[0, n_classes)``
    and prototypes ``(C, E)`` or None; return ``(B*V, E)`` and the matching labels ``(B*V,)``."""
    values = CHECK_VALUES.get()
    views = ("views",) if getattr(z, "ndim", 0) == 3 else ()
    check("embeddings", z, tensor(("batch", *views, "dim"), finite=values))
    check("labels", labels, tensor((len(z),), "int", below=n_classes if values else None))
    if prototypes is not None:
        check("prototypes", prototypes, tensor(("classes", z.shape[-1])))
    n_views = z.shape[1] if views else 1
    return z.flatten(0, -2), labels.long().repeat_interleave(n_views)


def contrast_set(z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor | None = None) -> tuple:
    """``(z normalised (N, E), the contrast set (M, E), its labels (M,))``: the contrast set is the
    anchors, then the normalised prototypes (row c has label c) if any. Half-precision embeddings
    are contrasted in float32: at ``T = 0.001`` the scaled similarities reach 1000 and a batch's sum of losses
    overflows float16."""
    z = F.normalize(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z, dim=-1)
    if prototypes is None:
        return z, z, labels
    protos = F.normalize(prototypes.to(z.dtype), dim=-1)
    proto_labels = torch.arange(len(protos), device=labels.device, dtype=labels.dtype)
    return z, torch.cat([z, protos]), torch.cat([labels, proto_labels])


def log_sum_exp_without_each(scaled: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``log sum_{a in keep, a != p} e^{l_a}`` for every ``p``: ``(N, M)`` from ``l = scaled`` and a bool mask
    ``keep`` ``(N, M)``. The row's largest member is left out by a sum without it, the others by a
    difference (``total - e^{l_p} >= e^{l_max}``: no cancellation at any temperature)."""
    kept = scaled.masked_fill(~keep, float("-inf"))
    top_value, top = kept.max(-1, keepdim=True)
    is_top = torch.zeros_like(keep).scatter(-1, top, True)
    others = kept.masked_fill(is_top, float("-inf"))
    without_top = others.logsumexp(-1, keepdim=True)                    # sum_{a in keep, a != top}
    total = torch.logaddexp(top_value, without_top)
    without_p = total + torch.log1p(-torch.exp(others - total))           # p != top: log(total - e^{l_p})
    return torch.where(is_top, without_top, without_p)


def contrastive_terms(z: torch.Tensor, labels: torch.Tensor, temperature,
                      margins: torch.Tensor | None = None, placement: str = ELM_RECOMMENDED["placement"],
                      prototypes: torch.Tensor | None = None, n_classes: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The supervised-contrastive loss of every anchor of one batch, with optional per-anchor margins ``d_i``.

    z ``(N, E)`` (normalised here), labels ``(N,)``, margins ``(N,)`` in cosine units; every row is an
    anchor. ``prototypes`` ``(C, E)`` (row c has label c) join the contrast set but are not anchors.
    For anchor i with positives P(i) (same label, i excluded) and ``s = cos``:

    - ``"positive"``: :func:`positive_terms`, the margin on each positive pair; with no margins SupCon's L_out;
    - ``"centroid"``: :func:`centroid_terms`, the margin against the class centres (the course's ELM form).

    (The margin study's other forms -- on the negatives, outside the denominator, a hinge -- are in
    ``studies/margin_form_losses.py``.) Returns ``(loss per anchor (N,), has_positive (N,) bool)``; anchors
    without a positive have loss 0. ``n_classes`` (the centroid form's) is read from the labels if not
    given: a host sync on a GPU. The engine runs K batches at once through this function (``elm_lite.engine.fused``).
    """
    check("placement", placement, one_of(*MARGIN_PLACEMENTS))
    z, pool, pool_labels = contrast_set(z, labels, prototypes)
    margins = torch.zeros(labels.shape, dtype=z.dtype, device=z.device) if margins is None else margins.to(z.dtype)
    if placement == "centroid":
        n_classes = int(pool_labels.max()) + 1 if n_classes is None else n_classes
        return centroid_terms(z, labels, pool, pool_labels, temperature, margins, n_classes)
    return positive_terms(z, labels, pool, pool_labels, temperature, margins)


def positive_terms(z, labels, pool, pool_labels, temperature, margins):
    """``placement="positive"`` of :func:`contrastive_terms`: the mean over p in P(i) of
    ``-log e^{(s_ip - d_i)/T} / (e^{(s_ip - d_i)/T} + sum_{a != i, p} e^{s_ia/T})``.
    z ``(N, E)`` normalised, pool ``(M, E)``, margins ``(N,)`` -> ``((N,), has_positive (N,))``."""
    scaled = z @ pool.T / temperature                                      # (N, M): l_ia = s_ia / T
    not_self = ~torch.eye(*scaled.shape, dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == pool_labels[None, :]) & not_self
    delta = margins[:, None] / temperature                                  # d_i / T
    per_pair = torch.logaddexp(scaled - delta, log_sum_exp_without_each(scaled, not_self)) - (scaled - delta)
    n_positive = positive.sum(-1)
    return torch.where(positive, per_pair, 0.0).sum(-1) / n_positive.clamp(min=1), n_positive > 0


def supcon_terms(z: torch.Tensor, labels: torch.Tensor, temperature,
                 prototypes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SupCon's L_out of every anchor of one batch (Khosla et al. 2020), a masked log-sum-exp:
    ``-1/|P(i)| sum_{p in P(i)} log e^{s_ip/T} / sum_{a != i} e^{s_ia/T}``. Shapes as :func:`contrastive_terms`."""
    z, pool, pool_labels = contrast_set(z, labels, prototypes)
    scaled = z @ pool.T / temperature                                      # (N, M): l_ia = s_ia / T
    not_self = ~torch.eye(*scaled.shape, dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == pool_labels[None, :]) & not_self
    log_denominator = scaled.masked_fill(~not_self, float("-inf")).logsumexp(-1, keepdim=True)
    n_positive = positive.sum(-1)
    per_anchor = torch.where(positive, log_denominator - scaled, 0.0).sum(-1) / n_positive.clamp(min=1)
    return per_anchor, n_positive > 0


def centroid_terms(z, labels, pool, pool_labels, temperature, margins, n_classes: int):
    """``placement="centroid"`` of :func:`contrastive_terms`: ``-log e^{(c_iy - d_i)/T} / (e^{(c_iy - d_i)/T}
    + sum_{k != y} e^{c_ik/T})`` with ``c_ik`` the cosine between ``z_i`` and the mean of class k's
    members of the contrast set, the anchor left out of its own class; classes with no member are
    skipped. z ``(N, E)`` normalised, pool ``(M, E)``, margins ``(N,)`` -> ``((N,), has_positive (N,))``."""
    classes = torch.arange(n_classes, device=labels.device)
    own = labels[:, None] == classes                                         # (N, C) one-hot
    members = (pool_labels[:, None] == classes).to(z.dtype)                  # (M, C) one-hot
    centres = members.T @ pool - own[..., None] * z[:, None, :]             # (N, C, E) class sums, i left out
    present = members.sum(0) - own.to(z.dtype) > 0                            # (N, C)
    cos = F.cosine_similarity(z[:, None, :], centres, dim=-1)               # (N, C)
    scaled = ((cos - own * margins[:, None]) / temperature).masked_fill(~present, float("-inf"))
    has_positive = (present & own).any(-1)
    own_scaled = scaled.masked_fill(~own, 0.0).sum(-1)
    return torch.where(has_positive, scaled.logsumexp(-1) - own_scaled, 0.0), has_positive


def average_anchors(per_anchor: torch.Tensor, has_positive: torch.Tensor, labels: torch.Tensor,
                    how: str) -> torch.Tensor:
    """Mean of the anchors' losses ``(N,)`` over those with a positive: over all of them
    (``how="all"``) or per class first, then over the classes present (``"class"``, as balanced
    contrastive learning does, so the head does not dominate). 0 where no anchor has a positive."""
    weight = has_positive.to(per_anchor.dtype)
    if how == "class":  # each anchor weighs 1 / (anchors of its class with a positive)
        same_class = (labels[:, None] == labels[None, :]).to(per_anchor.dtype)
        weight = weight / (same_class * weight).sum(-1).clamp(min=1)
    return (per_anchor * weight).sum() / weight.sum().clamp(min=torch.finfo(weight.dtype).tiny)


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020, the L_out form) on L2-normalised embeddings.

    ``forward(z, labels, prototypes=None)``: z ``(B, E)`` or ``(B, V, E)`` for V views per sample,
    labels ``(B,)``, optional prototypes ``(C, E)`` -> scalar, the mean over anchors that have at
    least one positive (``anchor_average="all"``, Khosla et al.'s), or the mean over classes of the
    per-class mean (``"class"``, see :func:`average_anchors`; the course's ELM uses it). Anchors with
    no positive are skipped and counted in ``last_stats``; if no anchor has one the loss is 0 (finite,
    zero gradient). Safe range: ``temperature`` in [0.05, 1].
    """

    def __init__(self, temperature: float = ELM_RECOMMENDED["temperature"], anchor_average: str = "all"):
        super().__init__()
        self.temperature = float(check("temperature", temperature, number(1e-3, 100)))
        self.anchor_average = check("anchor_average", anchor_average, one_of(*ANCHOR_AVERAGES))
        self._stats: tuple[int, torch.Tensor] | None = None

    @property
    def last_stats(self) -> dict:
        """The last batch's ``{"anchors", "with_positive"}`` (read back from the device when asked)."""
        return {} if self._stats is None else {"anchors": self._stats[0], "with_positive": int(self._stats[1])}

    def forward(self, z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        z, labels = _check_embeddings(z, labels, prototypes)
        per_anchor, has_positive = supcon_terms(z, labels, self.temperature, prototypes)
        self._stats = (len(labels), has_positive.sum())
        return average_anchors(per_anchor, has_positive, labels, self.anchor_average)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, anchor_average={self.anchor_average!r}"


class EmbeddingMarginLoss(SupConLoss):
    """Supervised contrastive loss with class-dependent embedding margins (the ELM embedding term
    as reconstructed in docs/design.md -- the paper's exact constants are not known).

    The anchor of class y gets margin ``delta_y`` from :func:`embedding_margins` (largest for the
    rarest class), entering the loss as ``placement`` says (:func:`contrastive_terms`): on its
    positives, or against its class's centre in the batch (``"centroid"``, the course's
    ELM form: the only one whose margin changes the geometry, docs/margin_study.md).
    ``delta_max = 0`` with ``"positive"`` and ``anchor_average="all"`` is exactly :class:`SupConLoss` (whose
    default averages per anchor; this class's, per class: ``ELM_RECOMMENDED``). Input as
    for :class:`SupConLoss`; labels must lie in ``[0, C)``. Safe ranges: ``delta_max`` in [0, 1],
    ``temperature`` in [0.05, 1].
    """

    def __init__(self, counts, temperature: float = ELM_RECOMMENDED["temperature"],
                 delta_max: float = ELM_RECOMMENDED["delta_max"], placement: str = ELM_RECOMMENDED["placement"],
                 anchor_average: str = ELM_RECOMMENDED["anchor_average"]):
        super().__init__(temperature, anchor_average)
        check("placement", placement, one_of(*MARGIN_PLACEMENTS))
        self.placement, self.delta_max = placement, delta_max
        self.register_buffer("margins", embedding_margins(counts, delta_max))

    def forward(self, z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        n_classes = len(self.margins)
        z, labels = _check_embeddings(z, labels, prototypes, n_classes)
        per_anchor, has_positive = contrastive_terms(z, labels, self.temperature, self.margins[labels],
                                                     self.placement, prototypes, n_classes)
        self._stats = (len(labels), has_positive.sum())
        return average_anchors(per_anchor, has_positive, labels, self.anchor_average)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, delta_max={self.delta_max}, "
                f"placement={self.placement!r}, anchor_average={self.anchor_average!r}")


# ----------------------------------------------------------------------------- ELM: both margins


class ELMLoss(nn.Module):
    """Embedding and Logit Margins: ``L = L_logit(f(x), y) + lam * L_emb(z, y)``.

    ``L_logit`` is :class:`LogitAdjustedLoss` (``logit="la"``, strength ``tau``) or :class:`LDAMLoss`
    (``logit="ldam"``, cosine logits, ``max_m``, ``s``); ``L_emb`` is :class:`EmbeddingMarginLoss`
    (``temperature``, ``delta_max``, ``placement``; by default the margin between each
    embedding and its class centre). ``lam = 0`` is the logit loss alone.
    The course's reconstruction of arXiv 2204.13208 from its abstract (docs/design.md; the full text
    was not available): form, constants and switches are parameters here; the defaults are the
    course's recommended constants, :data:`~elm_lite.recipes.ELM_RECOMMENDED`.

    ``forward(logits, z, labels, prototypes=None)``: logits ``(B, C)`` or ``(B, V, C)``, z ``(B, E)``
    or ``(B, V, E)`` for V views, labels ``(B,)`` -> ``(total, {"logit", "embedding"})``.
    ``use_prototypes=True`` asks the training loop to pass the classifier weights ``(C, E)`` as
    extra positives.
    Safe ranges: ``lam`` in [0, 2], ``tau`` in [0, 3], ``temperature`` in [0.05, 1], ``delta_max`` in [0, 1].
    """
    uses_embedding = True

    def __init__(self, counts, logit: str = "la", tau: float = ELM_RECOMMENDED["tau"],
                 lam: float = ELM_RECOMMENDED["lam"], temperature: float = ELM_RECOMMENDED["temperature"],
                 delta_max: float = ELM_RECOMMENDED["delta_max"], placement: str = ELM_RECOMMENDED["placement"],
                 anchor_average: str = ELM_RECOMMENDED["anchor_average"],
                 use_prototypes: bool = False, max_m: float = 0.5, s: float = 30.0):
        super().__init__()
        check("logit", logit, one_of("la", "ldam"))
        self.logit_loss = LogitAdjustedLoss(counts, tau) if logit == "la" else LDAMLoss(counts, max_m, s)
        self.embedding_loss = EmbeddingMarginLoss(counts, temperature, delta_max, placement, anchor_average)
        self.lam = float(check("lam", lam, number(0, 100)))
        self.use_prototypes = use_prototypes

    def set_epoch(self, epoch: int) -> None:
        """Advance the logit loss's own schedule (LDAM's DRW)."""
        if isinstance(self.logit_loss, Scheduled):
            self.logit_loss.set_epoch(epoch)

    def forward(self, logits: torch.Tensor, z: torch.Tensor, labels: torch.Tensor,
                prototypes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        views = ("views",) if getattr(logits, "ndim", 0) == 3 else ()
        check("logits", logits, tensor(("batch", *views, "classes")))
        check("embeddings", z, tensor((*logits.shape[:-1], "dim")), "(one per row of the logits)")
        check("labels", labels, tensor((len(logits),), "int"))
        flat_labels = labels.repeat_interleave(logits.shape[1]) if views else labels
        logit_term = self.logit_loss(logits.reshape(-1, logits.shape[-1]), flat_labels)
        embedding_term = self.embedding_loss(z, labels, prototypes)
        return logit_term + self.lam * embedding_term, {"logit": logit_term, "embedding": embedding_term}

    def extra_repr(self) -> str:
        return f"lam={self.lam}, use_prototypes={self.use_prototypes}"
