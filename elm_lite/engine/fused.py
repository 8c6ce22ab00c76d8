"""Fused losses for the engine: K runs' losses in one pass (:func:`stacked_loss`) and the positive
margin form with its gradient written out (:class:`_PositiveMarginMean`). Each equals the core's loss
of :mod:`elm_lite.losses` (``tests/test_many.py``, ``tests/test_losses_embedding.py``: loop references,
gradcheck, stacked == per run); the core keeps the forms a learner reads.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch.nn import functional as F

from .. import losses
from ..losses import ELMLoss, FocalLoss, LDAMLoss, LogitAdjustedLoss, focal_terms


@contextlib.contextmanager
def trusted_batches() -> Iterator[None]:
    """Inside it, losses skip the input checks that read values back from the device (label range,
    finiteness, :data:`elm_lite.losses.CHECK_VALUES`): on a GPU each is a host sync that stalls the
    step. The engine's training runs train inside it, having checked the labels once before training;
    they check every epoch's loss for finiteness (shapes and dtypes are still checked every call)."""
    token = losses.CHECK_VALUES.set(False)
    try:
        yield
    finally:
        losses.CHECK_VALUES.reset(token)


# The fused positive form holds ``e^{margin / T}`` in the working precision: it is used while that
# stays far inside float32's range (``e^40 = 2e17``); beyond it (T = 0.001 with a margin of 0.5 is
# e^500) the core's form, which works in log space, runs under vmap.
FUSED_MAX_MARGIN_LOGITS = 40.0


def fusable(margins: torch.Tensor, temperature: torch.Tensor) -> bool:
    """Whether the fused positive form is exact for class margins ``(K, C)`` (cosine units) and
    temperatures ``(K,)``: their largest ``margin / T`` is at most :data:`FUSED_MAX_MARGIN_LOGITS`."""
    return float((margins / temperature[:, None]).abs().max()) <= FUSED_MAX_MARGIN_LOGITS


def contrastive_terms(z: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor, margins: torch.Tensor,
                      placement: str, prototypes: torch.Tensor | None, n_classes: int, fuse: bool = True):
    """:func:`elm_lite.losses.contrastive_terms` of K batches at once: z ``(K, N, E)``, labels and
    margins ``(K, N)``, temperature ``(K,)``, prototypes ``(K, C, E)`` or None -> ``((K, N), (K, N))``.
    With ``fuse`` (see :func:`fusable`) the ``"positive"`` form runs through :class:`_PositiveMarginMean`
    (a handful of passes over the ``(K, N, M)`` similarities instead of autograd's dozens), the
    ``"centroid"`` form through :func:`_centroid_terms`; the positive form beyond :func:`fusable` runs the
    core's one-batch function under ``torch.vmap``."""
    protos_dim = None if prototypes is None else 0
    temperature = torch.as_tensor(temperature, device=z.device).to(torch.promote_types(z.dtype, torch.float32))
    if placement == "positive" and not fuse:
        def each(z, labels, temperature, margins, prototypes):
            return losses.contrastive_terms(z, labels, temperature, margins, placement, prototypes, n_classes)
        return torch.vmap(each, in_dims=(0, 0, 0, 0, protos_dim))(z, labels, temperature, margins, prototypes)
    z, pool, pool_labels = _contrast_sets(z, labels, prototypes)
    if placement == "centroid":
        return _centroid_terms(z, labels, pool, pool_labels, temperature[:, None, None],
                               margins.to(z.dtype)[..., None], n_classes)
    return _positive_terms(z @ pool.transpose(-1, -2), labels, pool_labels, temperature[:, None, None],
                           margins.to(z.dtype)[..., None])


def _contrast_sets(z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor | None) -> tuple:
    """:func:`elm_lite.losses.contrast_set` of K batches (``(K, N, E)``, ``(K, N)``, ``(K, C, E)``), without
    vmap's overhead per call; half precision in float32 as there."""
    z = F.normalize(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z, dim=-1)
    if prototypes is None:
        return z, z, labels
    protos = F.normalize(prototypes.to(z.dtype), dim=-1)
    proto_labels = torch.arange(protos.shape[-2], device=labels.device, dtype=labels.dtype).expand(len(labels), -1)
    return z, torch.cat([z, protos], -2), torch.cat([labels, proto_labels], -1)


def _centroid_terms(z, labels, pool, pool_labels, temperature, margin, n_classes: int):
    """:func:`elm_lite.losses.centroid_terms` of K batches through norm algebra: no ``(K, N, C, E)``
    tensor of class centres (4x faster than the core's form under vmap, K = 10 toy runs, N = 256). With
    ``S_k`` the sum of class k's members, the centre without anchor i is ``S_k - z_i [k = y_i]``:
    ``z_i . (S_k - z_i [k = y_i]) = z_i . S_k - [k = y_i]`` and ``||S_k - z_i||^2 = ||S_k||^2 - 2 z_i . S_k + 1``.
    z ``(K, N, E)`` normalised, pool ``(K, M, E)``, temperature ``(K, 1, 1)``, margin ``(K, N, 1)``."""
    members = F.one_hot(pool_labels, n_classes).to(z.dtype)              # (K, M, C)
    own = F.one_hot(labels, n_classes).to(z.dtype)                       # (K, N, C)
    sums = members.transpose(-1, -2) @ pool                              # (K, C, E)
    z_sums = z @ sums.transpose(-1, -2)                                  # (K, N, C) z_i . S_k
    norms2 = (sums * sums).sum(-1)[..., None, :] - 2 * own * z_sums + own  # ||S_k - z_i [k = y_i]||^2
    present = members.sum(-2)[..., None, :] - own > 0                    # (K, N, C) members but i
    cos = (z_sums - own) / norms2.clamp(min=1e-12).sqrt()
    scaled = ((cos - own * margin) / temperature).masked_fill(~present, float("-inf"))
    has_positive = (present & own.bool()).any(-1)
    own_scaled = scaled.masked_fill(~own.bool(), 0.0).sum(-1)
    return torch.where(has_positive, scaled.logsumexp(-1) - own_scaled, 0.0), has_positive


def average_anchors(per_anchor: torch.Tensor, has_positive: torch.Tensor, labels: torch.Tensor, how: str,
                    n_classes: int) -> torch.Tensor:
    """:func:`elm_lite.losses.average_anchors` of K batches at once: ``(K, N)`` -> ``(K,)``. An anchor's
    class size is counted through a ``(K, N, C)`` one-hot, not the core's ``(K, N, N)`` label
    equality (at N = 256 that was most of a toy step's loss)."""
    weight = has_positive.to(per_anchor.dtype)
    if how == "class":
        per_class = (F.one_hot(labels, n_classes).to(per_anchor.dtype) * weight[..., None]).sum(-2)  # (K, C)
        weight = weight / per_class.gather(-1, labels).clamp(min=1)
    return (per_anchor * weight).sum(-1) / weight.sum(-1).clamp(min=torch.finfo(weight.dtype).tiny)


def _positive_terms(cos, labels, pool_labels, temperature, margin) -> tuple[torch.Tensor, torch.Tensor]:
    """``placement="positive"`` of :func:`~elm_lite.losses.contrastive_terms` (shapes as there): the positive pairs as a
    0/1 mask, the loss by :class:`_PositiveMarginMean`."""
    cos = cos.float() if cos.dtype in (torch.float16, torch.bfloat16) else cos   # bf16 runs: the loss in float32
    same = labels[..., :, None] == pool_labels[..., None, :]              # (..., N, M)
    positive = same.view(torch.uint8).to(cos.dtype)                      # 0/1 (through uint8: 3x faster on a CPU)
    positive.diagonal(dim1=-2, dim2=-1).zero_()                           # same class, not the anchor itself
    n_pos = positive.sum(-1, keepdim=True)                                # (..., N, 1), exact in float32
    if cos.shape[-1] < 2:                                                 # the anchor alone: nothing to contrast
        return cos.new_zeros(labels.shape), n_pos[..., 0] > 0
    per_anchor = _PositiveMarginMean.apply(cos, 1 / temperature, margin / temperature, positive, 1 / n_pos.clamp(min=1))
    return per_anchor, n_pos[..., 0] > 0


class _PositiveMarginMean(torch.autograd.Function):
    """``placement="positive"`` of :func:`~elm_lite.losses.contrastive_terms` with its gradient written out, so that a
    step makes a handful of passes over the ``(..., N, M)`` similarities instead of autograd's dozens
    (notebook 04 trains dozens of these models; ``benchmarks/run_benchmarks.py --only sweeps``).

    With scaled similarities ``l = cos / T``, ``e_a = exp(l_a - max)`` over the contrast set (0 for the anchor
    itself), ``s = sum_a e_a``, ``r_p = s - e_p`` and ``D_p = e_p + e^d r_p``, pair (i, p)'s loss
    ``-log e^{l_p - d} / (e^{l_p - d} + sum_{a != i, p} e^{l_a})`` is ``log D_p - log e_p``; the
    anchor's loss is ``sum_p w_p`` of it (``w = positive / |P(i)|``), and ``d/dl_a = e^d (e_a sum_p
    w_p / D_p - w_a s / D_a)``, ``d/dd = e^d sum_p w_p r_p / D_p``. ``r`` of the top member (``e = 1``)
    is summed without it, not taken as ``s - 1``: a large margin ``e^d`` would magnify that difference's
    rounding (temperature 0.01 gave NaN in float32).
    ``forward(cos (..., N, M), 1/T (..., 1, 1), d = margin / T (..., N, 1), positive (..., N, M) 0/1,
    1/|P(i)| (..., N, 1)) -> (..., N)``; the masks take no gradient.
    ``tests/test_losses_embedding.py`` checks values and gradients against a loop and gradcheck.
    """

    @staticmethod
    def forward(ctx, cos, inv_t, delta, positive, inv_n_pos):
        shifted = cos * inv_t                                            # (..., N, M), ours to change in place
        self_pair = shifted.diagonal(dim1=-2, dim2=-1)                   # a view: the anchor with itself
        self_pair.fill_(float("-inf"))
        top, top_at = shifted.max(-1, keepdim=True)
        e = shifted.sub_(top).exp()                                      # 0 on the anchor
        self_pair.fill_(0.0)                                             # finite there (its weight is 0)
        beside_top = e.scatter_(-1, top_at, 0.0).sum(-1, keepdim=True)   # (..., N, 1) sum_{a != i, top} e_a
        e.scatter_(-1, top_at, 1.0)
        s = beside_top + 1
        r = (s - e).scatter_(-1, top_at, beside_top)                     # sum_{a != i, p} e_a; >= 1 but at the top
        exp_delta = delta.exp()
        d = torch.addcmul(e, exp_delta, r)                               # > 0 off the anchor
        ctx.save_for_backward(cos, inv_t, e, s, r, d, exp_delta, positive, inv_n_pos)
        return d.log().sub_(shifted).mul_(positive).sum(-1) * inv_n_pos[..., 0]

    @staticmethod
    def backward(ctx, grad):
        cos, inv_t, e, s, r, d, exp_delta, positive, inv_n_pos = ctx.saved_tensors
        w_over_d = positive / d                                          # (..., N, M), times |P(i)|
        scale = grad[..., None] * inv_n_pos * exp_delta                  # (..., N, 1)
        grad_scaled = (e * w_over_d.sum(-1, keepdim=True)).addcmul_(w_over_d, s, value=-1).mul_(scale)
        grad_inv_t = ((grad_scaled * cos).sum((-2, -1), keepdim=True).sum_to_size(inv_t.shape)
                      if ctx.needs_input_grad[1] else None)
        grad_delta = scale * (w_over_d * r).sum(-1, keepdim=True) if ctx.needs_input_grad[2] else None
        return grad_scaled * inv_t, grad_inv_t, grad_delta, None, None


def _cross_entropy_per_run(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None):
    """Mean (or class-weighted mean) cross-entropy of each run: logits ``(K, N, C)``, labels
    ``(K, N)``, weight ``(K, C)`` -> ``(K,)``."""
    each = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    if weight is None:
        return each.mean(-1)
    w = weight.gather(1, labels)
    return (each * w).sum(-1) / w.sum(-1)


def _flat_views(t: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K, B, V, D)`` -> ``(K, B * V, D)`` with labels ``(K, B)`` repeated per view (as the
    single losses flatten views); ``(K, B, D)`` passes through."""
    if t.ndim == 4:
        return t.flatten(1, 2), labels.repeat_interleave(t.shape[2], dim=1)
    return t, labels


def _stacked_focal(gamma: torch.Tensor) -> Callable:
    """K focal losses with exponents ``gamma`` ``(K,)`` in one pass (the signature of :func:`stacked_loss`)."""
    def focal(logits, z, labels, prototypes=None):
        logits, labels = _flat_views(logits, labels)
        return focal_terms(logits, labels.long(), gamma[:, None].to(logits.dtype)).mean(-1)
    return focal


def stack_key(loss) -> tuple:
    """Losses with equal keys can be computed together by :func:`stacked_loss` (their constants may
    differ): the kind, and for ELM its logit loss and margin placement."""
    if isinstance(loss, ELMLoss):
        return ELMLoss, type(loss.logit_loss), loss.embedding_loss.placement
    return (type(loss),)


def stacked_loss(losses: list) -> Callable | None:
    """One function computing K losses of the same kind with their own constants in one pass:
    ``f(logits (K, B[, V], C), z (K, B[, V], E), labels (K, B), prototypes (K, C, E) | None) -> (K,)``,
    for losses of one :func:`stack_key`, equal to calling each loss on its own slice
    (``tests/test_many.py``). It reads each loss's DRW switch at every call.
    ``None`` for kinds it does not cover (hinge, Balanced Softmax, re-weighted CE, ELM with LDAM logits): the caller
    then loops. Inputs are not validated here -- they come from the training loop, which checks each epoch's loss."""
    kind, key = type(losses[0]), stack_key(losses[0])
    if any(stack_key(loss) != key for loss in losses) or kind not in (LogitAdjustedLoss, LDAMLoss, ELMLoss, FocalLoss):
        return None
    device = next(b for b in losses[0].buffers()).device

    def stack(get) -> torch.Tensor:
        return torch.stack([torch.as_tensor(get(loss), device=device) for loss in losses])

    if kind is LogitAdjustedLoss:
        offsets = stack(lambda loss: loss.offsets)

        def logit_adjusted(logits, z, labels, prototypes=None):
            logits, labels = _flat_views(logits, labels)
            return _cross_entropy_per_run(logits + offsets[:, None].to(logits.dtype), labels.long())
        return logit_adjusted
    if kind is FocalLoss:
        return _stacked_focal(stack(lambda loss: loss.gamma))
    if kind is LDAMLoss:
        margins, scale = stack(lambda loss: loss.margins), stack(lambda loss: loss.s)

        def ldam(logits, z, labels, prototypes=None):
            logits, labels = _flat_views(logits, labels)
            labels = labels.long()
            shifted = logits - F.one_hot(labels, logits.shape[-1]).to(logits.dtype) * margins[:, None].to(logits.dtype)
            weight = torch.stack([loss.drw_weights if loss.reweight else torch.ones_like(loss.drw_weights)
                                  for loss in losses]).to(logits.dtype)
            return _cross_entropy_per_run(scale[:, None, None].to(logits.dtype) * shifted, labels, weight)
        return ldam
    _, logit_kind, placement = key
    if logit_kind is not LogitAdjustedLoss:
        return None
    offsets = stack(lambda loss: loss.logit_loss.offsets)
    margins = stack(lambda loss: loss.embedding_loss.margins)
    temperature = stack(lambda loss: loss.embedding_loss.temperature)
    averages = sorted({loss.embedding_loss.anchor_average for loss in losses})
    per_class = stack(lambda loss: loss.embedding_loss.anchor_average == "class")      # (K,) bool
    lams = stack(lambda loss: loss.lam)
    fuse = placement == "positive" and fusable(margins, temperature)

    def elm(logits, z, labels, prototypes=None):
        flat_logits, flat_labels = _flat_views(logits, labels)
        logit_term = _cross_entropy_per_run(flat_logits + offsets[:, None].to(logits.dtype), flat_labels.long())
        z, flat_labels = _flat_views(z, labels)
        per_anchor, has_pos = contrastive_terms(z, flat_labels, temperature, margins.gather(1, flat_labels),
                                                placement, prototypes, margins.shape[1], fuse)
        by = {how: average_anchors(per_anchor, has_pos, flat_labels, how, margins.shape[1]) for how in averages}
        embedding_term = torch.where(per_class, by["class"], by["all"]) if len(by) > 1 else by[averages[0]]
        return logit_term + lams.to(logit_term.dtype) * embedding_term
    return elm
