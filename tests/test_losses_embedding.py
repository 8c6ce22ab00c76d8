"""Embedding losses (SupCon, embedding margins, ELM) against explicit loop references, an
independent oracle (pytorch-metric-learning), identities, and bad input."""
import math

import numpy as np
import pytest
import torch

from elm_lite import losses as L
from elm_lite.engine import fused
from elm_lite.metrics import embedding_spread, spread_summary

COUNTS = [500, 158, 50, 15, 5]


def log_sum_exp(exponents):
    """``log sum_k e^{x_k}`` of a 1-D float64 array, exact at any scale (the largest taken out first)."""
    top = np.max(exponents)
    return top + math.log(np.sum(np.exp(exponents - top)))


def ref_margin_contrastive(z, labels, temperature, margins=None, placement="positive", prototypes=None,
                           average="class"):
    """The embedding term of docs/design.md, written with loops over anchors and positives (numpy over
    the contrast set), in float64 and in log space (each term ``-log e^a / sum_k e^{b_k} = lse(b) - a``),
    so that it holds at any temperature. Every placement: the core's two and the margin study's three
    (tests/test_margin_form_losses.py)."""
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    z, labels = unit(z.double().numpy()), labels.numpy()
    pool, pool_labels = z, labels
    if prototypes is not None:
        pool = np.concatenate([z, unit(prototypes.double().numpy())])
        pool_labels = np.concatenate([labels, np.arange(len(prototypes))])
    cos = z @ pool.T                                                     # (N, M): s_ia
    per_anchor = {}
    for i, yi in enumerate(labels):
        d = 0.0 if margins is None else margins[yi]
        members = np.arange(len(pool)) != i
        positives = np.flatnonzero(members & (pool_labels == yi))
        negatives = pool_labels != yi
        if len(positives) == 0:
            continue
        if placement == "centroid":
            def cos_to_mean(keep):
                mean = pool[keep].sum(0)
                return z[i] @ mean / np.linalg.norm(mean)
            own = (cos_to_mean(members & (pool_labels == yi)) - d) / temperature
            rest = [cos_to_mean(members & (pool_labels == k)) / temperature
                    for k in sorted(set(pool_labels[negatives]))]
            per_anchor[i] = log_sum_exp(np.array([own, *rest])) - own
            continue
        terms = []
        for p in positives:
            others = members & (np.arange(len(pool)) != p)
            if placement == "positive":
                num = (cos[i, p] - d) / temperature
                den = np.concatenate([[num], cos[i, others] / temperature])
            elif placement == "outside":
                num = (cos[i, p] - d) / temperature
                den = np.concatenate([[num], cos[i, negatives] / temperature])
            elif placement == "hinge":
                terms.append(max(0.0, d - cos[i, p] + cos[i, negatives].max()) if negatives.any() else 0.0)
                continue
            else:
                num = cos[i, p] / temperature
                den = np.concatenate([[num], (cos[i, others] + d * negatives[others]) / temperature])
            terms.append(log_sum_exp(den) - num)
        per_anchor[i] = sum(terms) / len(terms)
    if not per_anchor:
        return 0.0
    if average == "all":
        return sum(per_anchor.values()) / len(per_anchor)
    by_class = {}
    for i, v in per_anchor.items():
        by_class.setdefault(labels[i], []).append(v)
    return sum(sum(v) / len(v) for v in by_class.values()) / len(by_class)


def embeddings(b=14, e=4, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, e, generator=g, dtype=dtype), torch.randint(0, c, (b,), generator=g)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("average", ["all", "class"])
def test_supcon_matches_reference(temperature, average):
    z, y = embeddings()
    got = L.SupConLoss(temperature, anchor_average=average)(z, y).item()
    assert got == pytest.approx(ref_margin_contrastive(z, y, temperature, average=average), rel=1e-9)


@pytest.mark.parametrize("average", ["all", "class"])
def test_supcon_with_prototypes_and_views_matches_reference(average):
    """Prototypes join SupCon's contrast set (as positives and negatives, never as anchors)."""
    z, y = embeddings(b=6, e=3, seed=12)
    z2 = torch.stack([z, z + 0.2 * torch.randn_like(z)], 1)
    protos = torch.randn(5, 3, dtype=torch.float64)
    got = L.SupConLoss(0.3, anchor_average=average)(z2, y, protos).item()
    assert got == pytest.approx(ref_margin_contrastive(z2.reshape(-1, 3), y.repeat_interleave(2), 0.3,
                                                       prototypes=protos, average=average), rel=1e-9)
    y1 = torch.tensor([0, 0, 0, 1, 2, 4])        # one view: classes 1, 2, 4 have one anchor, its positive a prototype
    got = L.SupConLoss(0.3, anchor_average=average)(z, y1, protos).item()
    assert got == pytest.approx(ref_margin_contrastive(z, y1, 0.3, prototypes=protos, average=average), rel=1e-9)


@pytest.mark.parametrize("placement", L.MARGIN_PLACEMENTS)
def test_anchors_without_a_positive_have_loss_zero(placement):
    """contrastive_terms' per-anchor loss is 0 (not merely unweighted) where an anchor has no positive."""
    z, _ = embeddings(b=6, e=3, seed=13)
    y = torch.tensor([0, 0, 1, 2, 3, 3])
    per_anchor, has_pos = L.contrastive_terms(z, y, 0.2, L.embedding_margins(COUNTS, 0.5)[y], placement, n_classes=5)
    assert has_pos.tolist() == [True, True, False, False, True, True]
    assert (per_anchor[~has_pos] == 0).all() and (per_anchor[has_pos] != 0).all()
    per_anchor, has_pos = L.supcon_terms(z, y, 0.2)
    assert (per_anchor[~has_pos] == 0).all() and (per_anchor[has_pos] > 0).all()


def test_contrastive_terms_defaults():
    """No margins: zero margins (the positive form is SupCon's L_out, float64 in, float64 out); no n_classes:
    read from the labels (the centroid form equals the one told)."""
    z, y = embeddings(b=10, e=3, seed=21)
    zero = torch.zeros(10, dtype=torch.float64)
    no_margin = L.contrastive_terms(z, y, 0.2, placement="positive")
    torch.testing.assert_close(no_margin, L.contrastive_terms(z, y, 0.2, zero, "positive"))
    torch.testing.assert_close(no_margin, L.supcon_terms(z, y, 0.2))
    margins = L.embedding_margins(COUNTS, 0.5)[y]
    for prototypes in (None, torch.randn(5, 3, dtype=torch.float64)):
        torch.testing.assert_close(L.contrastive_terms(z, y, 0.2, margins, "centroid", prototypes),
                                   L.contrastive_terms(z, y, 0.2, margins, "centroid", prototypes, n_classes=5))
    torch.testing.assert_close(L.contrastive_terms(z, y, 0.2, None, "centroid", n_classes=5),
                               L.contrastive_terms(z, y, 0.2, zero, "centroid", None, 5))


def test_supcon_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    for seed in range(3):
        z, y = embeddings(b=32, e=8, c=4, seed=seed)
        for t in (0.07, 0.2, 1.0):
            oracle = pml.SupConLoss(temperature=t)(z, y)
            torch.testing.assert_close(L.SupConLoss(t, anchor_average="all")(z, y), oracle, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("placement", L.MARGIN_PLACEMENTS)
@pytest.mark.parametrize("dim", [2, 6])
def test_embedding_margin_matches_reference(placement, dim):
    z, y = embeddings(e=dim, seed=dim)
    loss = L.EmbeddingMarginLoss(COUNTS, 0.2, delta_max=0.4, placement=placement)
    margins = L.embedding_margins(COUNTS, 0.4).tolist()
    assert loss(z, y).item() == pytest.approx(ref_margin_contrastive(z, y, 0.2, margins, placement), rel=1e-9)


@pytest.mark.parametrize("placement", L.MARGIN_PLACEMENTS)
def test_views_and_prototypes_match_reference(placement):
    z, y = embeddings(b=6, e=3, seed=3)
    z2 = torch.stack([z, z + 0.1 * torch.randn_like(z)], 1)  # (B, 2, E)
    protos = torch.randn(5, 3, dtype=torch.float64)
    loss = L.EmbeddingMarginLoss(COUNTS, 0.3, delta_max=0.5, placement=placement)
    margins = L.embedding_margins(COUNTS, 0.5).tolist()
    expected = ref_margin_contrastive(z2.reshape(-1, 3), y.repeat_interleave(2), 0.3, margins, placement, protos)
    assert loss(z2, y, protos).item() == pytest.approx(expected, rel=1e-9)
    assert loss.last_stats == {"anchors": 12, "with_positive": 12}


@pytest.mark.parametrize("placement", L.MARGIN_PLACEMENTS)
def test_singletons_and_one_class_batches_give_finite_gradients(placement):
    """A class with one member (no positive) and a batch of one class (no negative) are legal."""
    loss = L.EmbeddingMarginLoss(COUNTS, 0.2, 0.5, placement=placement)
    for y in (torch.tensor([0, 0, 1, 2, 2, 4]), torch.tensor([3, 3, 3])):
        z = torch.randn(len(y), 4, dtype=torch.float64, requires_grad=True)
        value = loss(z, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all(), (placement, y)


@pytest.mark.parametrize("placement", L.MARGIN_PLACEMENTS)
def test_float32_close_to_float64(placement):
    z, y = embeddings(b=64, e=16, seed=4)
    loss = L.EmbeddingMarginLoss(COUNTS, 0.1, 0.3, placement=placement)
    torch.testing.assert_close(loss(z.float(), y).double(), loss(z, y), rtol=1e-4, atol=1e-5)


def test_gradcheck():
    z, y = embeddings(b=8, e=3, seed=5)
    for placement in L.MARGIN_PLACEMENTS:
        loss = L.EmbeddingMarginLoss(COUNTS, 0.5, 0.3, placement=placement)
        assert torch.autograd.gradcheck(lambda t: loss(t, y), (z.clone().requires_grad_(),)), placement


def test_fused_positive_form_values_and_gradients():
    """The positive form's hand-written gradient (elm_lite.engine.fused._PositiveMarginMean): values against a loop over
    pairs; gradients in the similarities, the temperature and the margins (negative margins too, two
    stacked problems, two extra contrast-set members) by gradcheck."""
    g = torch.Generator().manual_seed(7)
    cos = torch.rand(2, 5, 7, generator=g, dtype=torch.float64) * 2 - 1            # (K, N, M)
    inv_t = torch.tensor([3.0, 0.7], dtype=torch.float64)[:, None, None]
    delta = torch.randn(2, 5, 1, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 0, 1, 1, 0, 1], [2, 2, 2, 0, 1, 0, 1]])           # pool labels; anchors: first 5
    positive = ((labels[:, :5, None] == labels[:, None, :]) & ~torch.eye(5, 7, dtype=torch.bool)).double()
    inv_n_pos = 1 / positive.sum(-1, keepdim=True).clamp(min=1)
    got = fused._PositiveMarginMean.apply(cos, inv_t, delta, positive, inv_n_pos)
    for k in range(2):
        for i in range(5):
            l = (cos[k, i] * inv_t[k, 0, 0]).tolist()  # noqa: E741
            terms = []
            for p in (p for p in range(7) if positive[k, i, p]):
                num = math.exp(l[p] - delta[k, i, 0].item())
                terms.append(-math.log(num / (num + sum(math.exp(l[a]) for a in range(7) if a not in (i, p)))))
            assert got[k, i].item() == pytest.approx(sum(terms) / len(terms) if terms else 0.0, rel=1e-12, abs=1e-12)
    assert torch.autograd.gradcheck(lambda c, t, d: fused._PositiveMarginMean.apply(c, t, d, positive, inv_n_pos),
                                     (cos.requires_grad_(), inv_t.requires_grad_(), delta.requires_grad_()))


@pytest.mark.parametrize("placement", L.MARGIN_PLACEMENTS)
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_engine_forms_equal_the_core_form(temperature, placement):
    """The engine's K-batch contrastive terms (engine.fused.contrastive_terms: the fused positive form,
    the others through vmap) equal the core's one-batch function called on each batch: values and
    gradients, with margins and prototypes, in float64; so does the engine's K-batch averaging."""
    g = torch.Generator().manual_seed(11)
    z = torch.randn(3, 12, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (3, 12), generator=g)
    protos = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    margins = L.embedding_margins(COUNTS, 0.5)[y]
    weights = torch.linspace(0.5, 1.5, 12, dtype=torch.float64)
    core_z, engine_z = z.clone().requires_grad_(), z.clone().requires_grad_()
    core = [L.contrastive_terms(core_z[k], y[k], temperature, margins[k], placement, protos[k], 5) for k in range(3)]
    core_per_anchor, core_has_pos = (torch.stack(t) for t in zip(*core))
    per_anchor, has_pos = fused.contrastive_terms(engine_z, y, torch.full((3,), temperature, dtype=torch.float64),
                                                  margins, placement, protos, 5)
    (core_per_anchor * weights).sum().backward()
    (per_anchor * weights).sum().backward()
    torch.testing.assert_close(per_anchor, core_per_anchor, rtol=1e-10, atol=1e-12)
    assert torch.equal(has_pos, core_has_pos)
    torch.testing.assert_close(engine_z.grad, core_z.grad, rtol=1e-10, atol=1e-12)
    for how in L.ANCHOR_AVERAGES:
        torch.testing.assert_close(fused.average_anchors(per_anchor, has_pos, y, how, 5),
                                   torch.stack([L.average_anchors(per_anchor[k], has_pos[k], y[k], how)
                                                for k in range(3)]))


def test_positive_form_stays_finite_at_a_small_temperature():
    """Logits 100 apart and a margin of 50 logit units (temperature 0.01): finite in float32, exact in float64."""
    z, y = embeddings(b=32, e=4, seed=8)
    loss = L.EmbeddingMarginLoss(COUNTS, 0.01, 0.5, placement="positive")
    z32 = z.float().requires_grad_()
    value = loss(z32, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z32.grad).all()
    torch.testing.assert_close(value.double(), loss(z, y), rtol=1e-4, atol=1e-4)
    margins = L.embedding_margins(COUNTS, 0.5).tolist()
    assert loss(z, y).item() == pytest.approx(ref_margin_contrastive(z, y, 0.01, margins), rel=1e-9)


def test_delta_zero_equals_supcon_and_loss_grows_with_delta():
    z, y = embeddings(b=40, e=5, seed=6)
    for average in L.ANCHOR_AVERAGES:
        base = L.SupConLoss(0.2, anchor_average=average)(z, y)
        torch.testing.assert_close(L.EmbeddingMarginLoss(COUNTS, 0.2, 0.0, placement="positive",
                                                         anchor_average=average)(z, y), base)
    values = [L.EmbeddingMarginLoss(COUNTS, 0.2, d, placement="positive")(z, y).item() for d in np.linspace(0, 1, 11)]
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_margins_by_hand():
    """Counts 16 and 1: n^-1/4 gives 1/2 and 1 of delta_max."""
    torch.testing.assert_close(L.embedding_margins([16, 1], 0.4), torch.tensor([0.2, 0.4], dtype=torch.float64))


def test_margins_largest_for_rarest_class():
    m = L.embedding_margins(COUNTS, 0.3)
    assert m.argmax() == 4 and m.max().item() == pytest.approx(0.3)
    assert torch.all(m[1:] >= m[:-1])


def test_no_positive_gives_zero_finite_loss_and_gradient():
    z = torch.randn(5, 3, requires_grad=True)
    y = torch.arange(5)
    loss = L.EmbeddingMarginLoss(COUNTS, 0.1, 0.5)
    out = loss(z, y)
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(z.grad).all() and (z.grad == 0).all()
    assert loss.last_stats == {"anchors": 5, "with_positive": 0}


def test_anchors_without_positive_are_skipped_not_nan():
    z, _ = embeddings(b=6, e=3, seed=7)
    y = torch.tensor([0, 0, 1, 2, 3, 4])  # only the two class-0 anchors have a positive
    z.requires_grad_()
    loss = L.SupConLoss(0.1)
    out = loss(z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    assert loss.last_stats["with_positive"] == 2
    assert out.item() == pytest.approx(ref_margin_contrastive(z.detach(), y, 0.1), rel=1e-6)


@pytest.mark.parametrize("call,match", [
    (lambda: L.SupConLoss(0.0), "temperature"),
    (lambda: L.SupConLoss(-1.0), "temperature"),
    (lambda: L.EmbeddingMarginLoss(COUNTS, delta_max=-0.1), "delta_max"),
    (lambda: L.EmbeddingMarginLoss(COUNTS, placement="both"), "placement"),
    (lambda: L.EmbeddingMarginLoss([5, 0]), "> 0"),
    (lambda: L.SupConLoss(anchor_average="median"), "anchor_average"),
    (lambda: L.SupConLoss()(torch.randn(4), torch.tensor([0, 1, 0, 1])), "shape"),
    (lambda: L.SupConLoss()(torch.randn(4, 2), torch.tensor([0, 1, 0])), r"labels must be .*\(4,\), got .*\(3,\)"),
    (lambda: L.SupConLoss()(torch.randn(4, 2), torch.tensor([0.0, 1.0, 0.0, 1.0])), "integer"),
    (lambda: L.SupConLoss()(torch.full((2, 2), float("nan")), torch.tensor([0, 0])), "NaN"),
    (lambda: L.EmbeddingMarginLoss(COUNTS)(torch.randn(3, 2), torch.tensor([0, 5, 5])), r"\[0, 5\)"),
    (lambda: L.SupConLoss()(torch.randn(3, 2), torch.tensor([0, 0, 1]), torch.randn(2, 3)), "prototypes"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- ELM


def test_elm_lam_zero_is_exactly_the_logit_term():
    logits, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 5, (12,))
    z = torch.randn(12, 3, dtype=torch.float64)
    total, parts = L.ELMLoss(COUNTS, lam=0.0)(logits, z, y)
    assert torch.equal(total, L.LogitAdjustedLoss(COUNTS)(logits, y))
    assert torch.equal(parts["logit"], total)


def test_elm_parts_add_up_and_gradients_reach_both_inputs():
    logits = torch.randn(12, 2, 5, dtype=torch.float64, requires_grad=True)
    z = torch.randn(12, 2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (12,))
    loss = L.ELMLoss(COUNTS, lam=0.7, delta_max=0.3)
    total, parts = loss(logits, z, y)
    torch.testing.assert_close(total, parts["logit"] + 0.7 * parts["embedding"])
    torch.testing.assert_close(parts["logit"],
                               L.LogitAdjustedLoss(COUNTS)(logits.reshape(-1, 5), y.repeat_interleave(2)))
    torch.testing.assert_close(parts["embedding"], L.EmbeddingMarginLoss(COUNTS, 0.1, 0.3, anchor_average="class",
                                                                         placement="centroid")(z, y))
    total.backward()
    assert logits.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


def test_elm_passes_the_epoch_to_ldam():
    loss = L.ELMLoss(COUNTS, logit="ldam", lam=1.0)
    loss.logit_loss.drw_epoch = 3
    loss.set_epoch(2)
    assert not loss.logit_loss.reweight
    loss.set_epoch(3)
    assert loss.logit_loss.reweight
    total, _ = loss(torch.tanh(torch.randn(6, 5)), torch.randn(6, 3), torch.randint(0, 5, (6,)))
    assert torch.isfinite(total)


@pytest.mark.parametrize("kwargs,match", [
    (dict(logit="hinge"), "logit must be"), (dict(lam=-1), "lam"),
    (dict(temperature=0), "temperature"),
])
def test_elm_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.ELMLoss(COUNTS, **kwargs)


def test_elm_shape_mismatch():
    with pytest.raises(ValueError, match=r"embeddings must be .*shape \(4, dim\), got .*shape \(3, 2\)"):
        L.ELMLoss(COUNTS)(torch.randn(4, 5), torch.randn(3, 2), torch.tensor([0, 1, 2, 3]))


# ----------------------------------------------------------------------------- spread


def test_embedding_spread_by_hand():
    tight = np.array([[2.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    assert embedding_spread(tight, [0, 0, 0]).tolist() == [0.0]
    # two unit vectors at +-60 degrees: mean direction (1, 0), cos = 0.5 each
    angle = np.pi / 3
    pair = np.array([[np.cos(angle), np.sin(angle)], [np.cos(angle), -np.sin(angle)]])
    assert embedding_spread(pair, [0, 0])[0] == pytest.approx(0.5)
    # orthogonal pair: mean at 45 degrees, cos = sqrt(2)/2
    spread = embedding_spread(np.array([[1.0, 0], [0, 3.0], [1, 1]]), [1, 1, 0], n_classes=3)
    assert spread[0] == pytest.approx(0.0) and spread[1] == pytest.approx(1 - np.sqrt(0.5)) and np.isnan(spread[2])


def test_spread_summary():
    out = spread_summary([0.1, 0.2, 0.4, 0.8], [500, 50, 10, 5])
    assert out["many"] == pytest.approx(0.1) and out["medium"] == pytest.approx(0.2)
    assert out["few"] == pytest.approx(0.6) and out["tail_head_ratio"] == pytest.approx(6.0)


def test_spread_bad_input():
    with pytest.raises(ValueError, match="shape"):
        embedding_spread(np.zeros(3), [0, 0, 0])


def test_similarity_matrix_is_built_once_per_step():
    """The O(B^2) similarity matrix costs one matrix product per forward pass, whatever the options."""
    from torch.overrides import TorchFunctionMode

    class CountMatmuls(TorchFunctionMode):
        count = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.einsum):
                CountMatmuls.count += 1
            return func(*args, **(kwargs or {}))

    z, y = embeddings(b=32, e=8, seed=8)
    for loss in (L.EmbeddingMarginLoss(COUNTS, 0.1, 0.5, placement="positive"),
                 L.SupConLoss(0.1, anchor_average="class")):
        CountMatmuls.count = 0
        with CountMatmuls():
            loss(z.reshape(16, 2, 8), y[:16], torch.randn(5, 8, dtype=torch.float64))
        # one similarity matrix (the class-averaged mean is a masked sum, no product)
        assert CountMatmuls.count == 1


# ----------------------------------------------------------------------------- every temperature, every precision

TEMPERATURE_ENDS = (0.001, 100.0)          # the range SupConLoss and EmbeddingMarginLoss accept
CONTRASTIVE_FORMS = {                      # name: (loss at temperature T, the reference's placement)
    "supcon": (lambda t: L.SupConLoss(t), "positive"),
    "elm-positive": (lambda t: L.EmbeddingMarginLoss(COUNTS, t, 0.5, placement="positive"), "positive"),
    "centroid": (lambda t: L.EmbeddingMarginLoss(COUNTS, t, 0.5, placement="centroid"), "centroid"),
}


def precision_cases():
    """Issue 32's cases: 8 random 4-d embeddings, and a batch of 128 with two views."""
    g = torch.Generator().manual_seed(0)
    yield torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)
    z, y = torch.randn(128, 16, generator=g, dtype=torch.float64), torch.randint(0, 5, (128,), generator=g)
    yield torch.stack([z, z + 0.3 * torch.randn(z.shape, generator=g, dtype=torch.float64)], 1), y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", TEMPERATURE_ENDS)
@pytest.mark.parametrize("form", CONTRASTIVE_FORMS)
def test_contrastive_losses_are_right_at_the_ends_of_the_temperature_range(form, temperature, dtype):
    """At T = 0.001 the logits reach 1000: the anchor's similarity with itself (1/T) must not be the
    row maximum taken out (it underflowed every other term to 0: SupConLoss(0.001) gave 0.0), and
    half precision must not overflow. Finite values and gradients, equal to the float64 log-space
    loop reference on the same (rounded) inputs; half precision is contrasted in float32, so one
    tolerance serves every dtype."""
    make, placement = CONTRASTIVE_FORMS[form]
    loss = make(temperature)
    margins = None if form == "supcon" else L.embedding_margins(COUNTS, 0.5).tolist()
    for z, y in precision_cases():
        z = z.to(dtype).requires_grad_()
        value = loss(z, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all(), (form, temperature, dtype)
        flat_y = y.repeat_interleave(z.shape[1]) if z.ndim == 3 else y
        expected = ref_margin_contrastive(z.detach().double().reshape(-1, z.shape[-1]), flat_y, temperature,
                                          margins, placement, average=loss.anchor_average)
        assert value.item() == pytest.approx(expected, rel=1e-6), (form, temperature, dtype)
        assert value.item() > 100 if temperature == 0.001 else True     # hundreds, not an underflowed 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", TEMPERATURE_ENDS)
@pytest.mark.parametrize("placement", ["positive", "centroid"])
def test_engine_forms_are_right_at_the_ends_of_the_temperature_range(placement, temperature, dtype):
    """The engine's K-batch forms (the fused positive form where :func:`fused.fusable` allows it, else
    the core's under vmap; the centroid form under vmap) at the temperature range's ends: finite, and
    equal to the float64 reference for each of K = 2 batches."""
    z, y = list(precision_cases())[1]
    z = torch.stack([z.flatten(0, 1), z.flatten(0, 1).flip(0)]).to(dtype).requires_grad_()   # (2, 256, 16)
    y = torch.stack([y.repeat_interleave(2), y.repeat_interleave(2).flip(0)])
    margins = L.embedding_margins(COUNTS, 0.5)
    temperatures = torch.full((2,), temperature)
    fuse = fused.fusable(margins[None].expand(2, -1), temperatures)
    assert fuse == (temperature == 100.0)                 # 0.5 / 0.001 = 500 logit units: the log-space form
    per_anchor, has_pos = fused.contrastive_terms(z, y, temperatures, margins[y], placement, None, 5, fuse)
    value = fused.average_anchors(per_anchor, has_pos, y, "class", 5)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(z.grad).all()
    for k in range(2):
        expected = ref_margin_contrastive(z[k].detach().double(), y[k], temperature, margins.tolist(), placement)
        assert value[k].item() == pytest.approx(expected, rel=1e-6), (k, placement, temperature, dtype)


def test_contrastive_terms_refuses_a_placement_outside_the_core():
    """The study's forms (negative, outside, hinge) and typos are refused by name, never run as the positive form."""
    z, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    for placement in ("negative", "centroids"):
        with pytest.raises(ValueError, match=
                           rf"placement must be one of \['positive', 'centroid'\], got '{placement}'"):
            L.contrastive_terms(z, labels, 0.1, placement=placement)
