"""The margin study's three extra forms of a class-dependent embedding margin (docs/margin_study.md).

The course's core (:mod:`elm_lite.losses`) keeps the two forms its methods use: the margin on the
positives and against the class centres. The study also tried, and found wanting, three more; they live
here, beside the study that needs them. For anchor i with positives P(i), negatives N(i) (other labels),
``s = cos`` and margin ``d_i``, each the mean over p in P(i) of:

- ``"negative"``: ``-log e^{s_ip/T} / sum_{a != i} e^{(s_ia + d_i [a in N(i)])/T}`` (margin added to the negatives)
- ``"outside"``: ``-log e^{(s_ip - d_i)/T} / (e^{(s_ip - d_i)/T} + sum_{a in N(i)} e^{s_ia/T})`` (other positives
  out of the denominator)
- ``"hinge"``: ``max(0, d_i - s_ip + max_{a in N(i)} s_ia)`` (against the nearest negative; no temperature)

:func:`study_method` turns a registered ELM method into one that also takes these placements. Its runs
train one by one inside ``fit_many`` (the engine stacks only the core's forms). Tested against loop
references in ``tests/test_margin_form_losses.py``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from elm_lite import losses
from elm_lite.recipes import ELM_RECOMMENDED, check, one_of

STUDY_PLACEMENTS = ("negative", "outside", "hinge")
PLACEMENTS = (*losses.MARGIN_PLACEMENTS, *STUDY_PLACEMENTS)


def pair_terms(cos: torch.Tensor, temperature, margins: torch.Tensor, positive: torch.Tensor,
               not_self: torch.Tensor, placement: str) -> torch.Tensor:
    """Each (anchor i, contrast-set member p) pair's loss ``(N, M)`` in the study's forms, from the cosines
    ``s`` ``(N, M)`` and the anchors' margins ``d`` ``(N, 1)`` (cosine units); only the positive pairs are used."""
    scaled, delta = cos / temperature, margins / temperature
    negative = ~positive & not_self
    if placement == "negative":  # -log e^{l_p} / sum_{a != i} e^{l_a + d [a in N(i)]}
        return (scaled + delta * negative).masked_fill(~not_self, float("-inf")).logsumexp(-1, keepdim=True) - scaled
    if placement == "outside":   # -log e^{l_p - d} / (e^{l_p - d} + sum_{a in N(i)} e^{l_a})
        return F.softplus(scaled.masked_fill(~negative, float("-inf")).logsumexp(-1, keepdim=True) - (scaled - delta))
    # hinge: max(0, d - s_ip + max_{a in N(i)} s_ia), 0 without a negative
    nearest = cos.masked_fill(~negative, float("-inf")).amax(-1, keepdim=True)
    return torch.where(negative.any(-1, keepdim=True), F.relu(margins + nearest - cos), 0.0)


def contrastive_terms(z: torch.Tensor, labels: torch.Tensor, temperature, margins: torch.Tensor | None = None,
                      placement: str = ELM_RECOMMENDED["placement"], prototypes: torch.Tensor | None = None,
                      n_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`elm_lite.losses.contrastive_terms` with the study's forms as well (shapes as there)."""
    if placement in losses.MARGIN_PLACEMENTS:
        return losses.contrastive_terms(z, labels, temperature, margins, placement, prototypes, n_classes)
    z, pool, pool_labels = losses.contrast_set(z, labels, prototypes)
    margins = torch.zeros(labels.shape, dtype=z.dtype, device=z.device) if margins is None else margins.to(z.dtype)
    cos = z @ pool.T                                                       # (N, M)
    not_self = ~torch.eye(*cos.shape, dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == pool_labels[None, :]) & not_self
    per_pair = pair_terms(cos, temperature, margins[:, None], positive, not_self, placement)
    n_positive = positive.sum(-1)
    return torch.where(positive, per_pair, 0.0).sum(-1) / n_positive.clamp(min=1), n_positive > 0


class StudyMarginLoss(losses.EmbeddingMarginLoss):
    """:class:`elm_lite.losses.EmbeddingMarginLoss` that also takes the placements of :data:`STUDY_PLACEMENTS`."""

    def __init__(self, counts, temperature: float = ELM_RECOMMENDED["temperature"],
                 delta_max: float = ELM_RECOMMENDED["delta_max"], placement: str = ELM_RECOMMENDED["placement"],
                 anchor_average: str = ELM_RECOMMENDED["anchor_average"]):
        super().__init__(counts, temperature, delta_max, "positive", anchor_average)
        self.placement = check("placement", placement, one_of(*PLACEMENTS))

    def forward(self, z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        n_classes = len(self.margins)
        z, labels = losses._check_embeddings(z, labels, prototypes, n_classes)
        per_anchor, has_positive = contrastive_terms(z, labels, self.temperature, self.margins[labels],
                                                     self.placement, prototypes, n_classes)
        self._stats = (len(labels), has_positive.sum())
        return losses.average_anchors(per_anchor, has_positive, labels, self.anchor_average)


class StudyELMLoss(losses.ELMLoss):
    """:class:`elm_lite.losses.ELMLoss` whose embedding term is a :class:`StudyMarginLoss`."""

    def __init__(self, counts, placement: str = ELM_RECOMMENDED["placement"], **constants):
        super().__init__(counts, **constants)
        core = self.embedding_loss
        self.embedding_loss = StudyMarginLoss(counts, core.temperature, core.delta_max, placement, core.anchor_average)


def study_method(method):
    """The ELM ``method`` (of :mod:`elm_lite.methods`) with :class:`StudyELMLoss`: its variants may set any
    placement of :data:`PLACEMENTS`."""
    return dataclasses.replace(method, loss=StudyELMLoss)
