"""Logit-margin losses against slow explicit references, identities, and bad input."""
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from elm_lite import losses as L
from elm_lite import methods
from elm_lite.models import LinearModel

COUNTS = [500, 158, 50, 15, 5]


def ref_cross_entropy(logits, labels, weights=None):
    """Mean (or weighted mean) of -log softmax(logits)[y], one example at a time."""
    total, norm = 0.0, 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        lse = math.log(sum(math.exp(v) for v in row))
        w = 1.0 if weights is None else weights[y]
        total += w * (lse - row[y])
        norm += w
    return total / norm


def ref_la(logits, labels, counts, tau):
    total = sum(counts)
    shifted = [[v + tau * math.log(n / total) for v, n in zip(row, counts)] for row in logits.tolist()]
    return ref_cross_entropy(torch.tensor(shifted, dtype=torch.float64), labels)


def ref_ldam(cosines, labels, counts, max_m, s, weights=None):
    m = [n ** -0.25 for n in counts]
    m = [v * max_m / max(m) for v in m]
    rows = []
    for row, y in zip(cosines.tolist(), labels.tolist()):
        rows.append([s * (v - (m[y] if j == y else 0.0)) for j, v in enumerate(row)])
    return ref_cross_entropy(torch.tensor(rows, dtype=torch.float64), labels, weights)


def ref_hinge(logits, labels, margins):
    losses = []
    for row, y in zip(logits.tolist(), labels.tolist()):
        worst = max(v for j, v in enumerate(row) if j != y)
        losses.append(max(0.0, margins[y] + worst - row[y]))
    return sum(losses) / len(losses)


def batch(dtype, b=17, c=5, seed=0, cosine=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=dtype) * 3
    if cosine:
        logits = torch.tanh(logits)
    labels = torch.randint(0, c, (b,), generator=g)
    return logits, labels


TOL = {torch.float32: dict(rel=1e-5, abs=1e-5), torch.float64: dict(rel=1e-10, abs=1e-10)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_matches_reference(dtype, tau):
    logits, labels = batch(dtype)
    got = L.LogitAdjustedLoss(COUNTS, tau).to(dtype)(logits, labels)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(ref_la(logits.double(), labels, COUNTS, tau), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_balanced_softmax_matches_reference(dtype):
    logits, labels = batch(dtype, seed=1)
    shifted = logits.double() + torch.log(torch.tensor(COUNTS, dtype=torch.float64))
    assert L.BalancedSoftmaxLoss(COUNTS).to(dtype)(logits, labels).item() == pytest.approx(
        ref_cross_entropy(shifted, labels), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("max_m,s", [(0.5, 30.0), (0.3, 10.0)])
def test_ldam_matches_reference(dtype, max_m, s):
    cos, labels = batch(dtype, seed=2, cosine=True)
    got = L.LDAMLoss(COUNTS, max_m, s).to(dtype)(cos, labels).item()
    rel = 1e-5 if dtype == torch.float32 else 1e-10
    assert got == pytest.approx(ref_ldam(cos.double(), labels, COUNTS, max_m, s), rel=rel)


def test_ldam_drw_matches_weighted_reference_and_switches_on():
    cos, labels = batch(torch.float64, seed=3, cosine=True)
    loss = L.LDAMLoss(COUNTS, drw_epoch=5, beta=0.999).double()
    before = loss(cos, labels).item()
    assert before == pytest.approx(ref_ldam(cos, labels, COUNTS, 0.5, 30.0), rel=1e-10)
    loss.set_epoch(5)
    beta = 0.999
    w = [(1 - beta) / (1 - beta ** n) for n in COUNTS]
    w = [v * len(w) / sum(w) for v in w]
    assert loss(cos, labels).item() == pytest.approx(ref_ldam(cos, labels, COUNTS, 0.5, 30.0, w), rel=1e-10)
    loss.set_epoch(4)
    assert loss(cos, labels).item() == pytest.approx(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("schedule", ["equal", "n^-1/4"])
def test_hinge_matches_reference(dtype, schedule):
    logits, labels = batch(dtype, seed=4)
    loss = L.MulticlassHingeLoss(COUNTS, margin=1.5, schedule=schedule).to(dtype)
    margins = [1.5] * 5 if schedule == "equal" else L.ldam_margins(COUNTS, 1.5).tolist()
    assert loss(logits, labels).item() == pytest.approx(ref_hinge(logits.double(), labels, margins), **TOL[dtype])


@pytest.mark.parametrize("make", [
    lambda: L.LogitAdjustedLoss(COUNTS, 0.7),
    lambda: L.BalancedSoftmaxLoss(COUNTS),
    lambda: L.LDAMLoss(COUNTS, drw_epoch=0),
    lambda: L.MulticlassHingeLoss(COUNTS, schedule="n^-1/4"),
])
def test_gradcheck(make):
    loss = make().double()
    cosine = isinstance(loss, L.LDAMLoss)
    logits, labels = batch(torch.float64, b=6, seed=5, cosine=cosine)
    logits = (logits * (0.9 if cosine else 1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: loss(z, labels), (logits,))


# ----------------------------------------------------------------------------- identities

def test_tau_zero_is_plain_cross_entropy():
    logits, labels = batch(torch.float64)
    torch.testing.assert_close(L.LogitAdjustedLoss(COUNTS, 0.0)(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(methods.get("ce").build_loss(COUNTS)(logits, labels), F.cross_entropy(logits, labels))


def test_la_tau_one_equals_balanced_softmax():
    logits, labels = batch(torch.float64, seed=6)
    torch.testing.assert_close(L.LogitAdjustedLoss(COUNTS, 1.0)(logits, labels),
                               L.BalancedSoftmaxLoss(COUNTS)(logits, labels))
    torch.testing.assert_close(L.LogitAdjustedLoss(COUNTS, 1.0).pairwise_margins(),
                               L.BalancedSoftmaxLoss(COUNTS).pairwise_margins())


@pytest.mark.parametrize("tau", [0.0, 1.0, 2.5])
def test_posthoc_changes_predictions_exactly_as_argmax_of_adjusted_logits(tau):
    logits, _ = batch(torch.float64, b=200, seed=7)
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    expected = (logits - tau * torch.log(prior)).argmax(1)
    assert torch.equal(L.posthoc_adjust(logits, COUNTS, tau).argmax(1), expected)
    if tau > 0:  # it really moves some predictions toward rarer classes
        assert (expected != logits.argmax(1)).any() and expected.float().mean() > logits.argmax(1).float().mean()


def test_posthoc_wrapper_matches_function():
    net = LinearModel(2, 5)
    x = torch.randn(9, 2)
    wrapped = L.PosthocAdjusted(net, COUNTS, 1.3)
    torch.testing.assert_close(wrapped(x)[0], L.posthoc_adjust(net(x)[0], COUNTS, 1.3))


def test_ldam_margins_proportional_to_n_quarter_with_max():
    m = L.ldam_margins(COUNTS, 0.5)
    assert m.max().item() == pytest.approx(0.5) and m.argmax().item() == 4
    ratio = m * torch.tensor(COUNTS, dtype=torch.float64) ** 0.25
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0].item()))
    torch.testing.assert_close(L.LDAMLoss(COUNTS, max_m=0.3).margins.double(), L.ldam_margins(COUNTS, 0.3),
                               rtol=1e-6, atol=1e-7)


def test_pairwise_margins_are_larger_for_rarer_true_classes():
    for loss in (L.LogitAdjustedLoss(COUNTS), L.LDAMLoss(COUNTS), L.MulticlassHingeLoss(COUNTS, schedule="n^-1/4")):
        m = loss.pairwise_margins()
        assert m.shape == (5, 5)
        assert m[4, 0] > m[0, 4] and m[4, 0] > 0  # tail vs head demands more than head vs tail


def test_losses_are_device_and_dtype_agnostic_buffers():
    loss = L.LogitAdjustedLoss(COUNTS)
    assert {n for n, _ in loss.named_buffers()} == {"counts", "offsets"}
    logits, labels = batch(torch.float64)
    assert loss.double()(logits, labels).dtype == torch.float64


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("counts,match", [
    ([500, 0, 5], "> 0"), ([500, -3, 5], "> 0"), ([500], "at least 2"), ([[1, 2], [3, 4]], "1-D"),
    ([500, float("nan"), 5], "finite"),
])
def test_bad_counts(counts, match):
    with pytest.raises(ValueError, match=match):
        L.LogitAdjustedLoss(counts)


@pytest.mark.parametrize("make", [lambda: L.LogitAdjustedLoss(COUNTS), lambda: L.BalancedSoftmaxLoss(COUNTS),
                                  lambda: L.LDAMLoss(COUNTS), lambda: L.MulticlassHingeLoss(COUNTS)])
@pytest.mark.parametrize("logits,labels,match", [
    (torch.zeros(4, 5), torch.tensor([0, 1, 2, 5]), r"labels must be .* values in \[0, 5\), got .*\[0, 1, 2, 5\]"),
    (torch.zeros(4, 5), torch.tensor([0, 1, -1, 2]), r"labels must be .* values in \[0, 5\), got .*\[0, 1, -1, 2\]"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), r"shape \(batch, 5\)"),
    (torch.zeros(4, 5), torch.tensor([0, 1, 2]), r"shape \(4,\)"),
    (torch.full((4, 5), float("nan")), torch.tensor([0, 1, 2, 3]), "NaN or inf"),
    (torch.tensor([[0, 0, 0, 0, float("inf")]] * 4), torch.tensor([0, 1, 2, 3]), "NaN or inf"),
    (torch.zeros(4, 5, dtype=torch.long), torch.tensor([0, 1, 2, 3]), "floating-point"),
    (torch.zeros(4, 5), torch.tensor([0.0, 1.0, 2.0, 3.0]), "integer tensor"),
    (torch.zeros(20), torch.tensor([0, 1, 2, 3]), r"shape \(batch, 5\)"),
])
def test_bad_logits_and_labels(make, logits, labels, match):
    with pytest.raises(ValueError, match=match):
        make()(logits, labels)


def test_margin_defaults_are_the_documented_ones():
    """logit adjustment's tau 1 (the Fisher-consistent choice), LDAM's largest margin 0.5 (Cao et al.), the
    embedding margins' delta_max from recipes.ELM_RECOMMENDED."""
    from elm_lite.recipes import ELM_RECOMMENDED
    torch.testing.assert_close(L.logit_adjustment(COUNTS), L.log_prior(COUNTS))
    assert L.ldam_margins(COUNTS).max().item() == pytest.approx(0.5)
    assert L.embedding_margins(COUNTS).max().item() == pytest.approx(ELM_RECOMMENDED["delta_max"])


def test_ldam_rejects_raw_logits():
    with pytest.raises(ValueError, match=r"^\|logits\| must be .*\(batch, 5\) with values in \[0, 1.0001\), got .*"
                                         r"LDAM needs cosine logits in \[-1, 1\]: use a model with cosine=True\.$"):
        L.LDAMLoss(COUNTS)(torch.full((2, 5), 3.0), torch.tensor([0, 1]))


@pytest.mark.parametrize("call,match", [
    (lambda: L.LogitAdjustedLoss(COUNTS, tau=-1), "tau"),
    (lambda: L.LDAMLoss(COUNTS, s=0), "s must be"),
    (lambda: L.LDAMLoss(COUNTS, drw_epoch=-2), "drw_epoch"),
    (lambda: L.MulticlassHingeLoss(COUNTS, schedule="sqrt"), "schedule"),
    (lambda: L.posthoc_adjust(torch.zeros(3, 4), COUNTS), r"logits .*\(batch, 5\), got Tensor of shape \(3, 4\)"),
    (lambda: L.posthoc_adjust(np.zeros((3, 5)), COUNTS), r"logits must be .*tensor .*got ndarray"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call,match", [
    (lambda: L.logit_adjustment(COUNTS, 10.5), r"^tau must be a finite number >= 0 and <= 10, got 10.5\.$"),
    (lambda: L.ldam_margins(COUNTS, 10.5), r"^max_m must be a finite number >= 0 and <= 10, got 10.5\.$"),
    (lambda: L.embedding_margins(COUNTS, 2.5), r"^delta_max must be a finite number >= 0 and <= 2, got 2.5\.$"),
])
def test_margin_constants_are_checked_with_their_names_and_ranges(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fit_tells_a_scheduled_loss_each_epoch():
    """fit passes every epoch (from 1) to a loss with a schedule (LDAM-DRW's switch reads it)."""
    from elm_lite import train

    class Spy(L.LDAMLoss):
        def set_epoch(self, epoch):
            self.seen = [*getattr(self, "seen", []), epoch]
            super().set_epoch(epoch)

    x, y = torch.randn(20, 2), torch.arange(20) % 5
    loss = Spy(COUNTS, drw_epoch=2)
    train.fit(LinearModel(2, 5, cosine=True), x, y, loss, epochs=3, batch_size=10)
    assert loss.seen == [1, 2, 3] and loss.reweight
