"""The margin study's three extra forms (studies/margin_form_losses.py: on the negatives, outside the
denominator, a hinge) against the loop reference of tests/test_losses_embedding.py, and as ELM methods."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from elm_lite import losses as L
from elm_lite import methods
from elm_lite.engine import fused

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))
import margin_form_losses as M  # noqa: E402
from test_losses_embedding import COUNTS, embeddings, ref_margin_contrastive  # noqa: E402


@pytest.mark.parametrize("placement", M.STUDY_PLACEMENTS)
@pytest.mark.parametrize("dim", [2, 6])
def test_study_forms_match_reference(placement, dim):
    z, y = embeddings(e=dim, seed=dim)
    loss = M.StudyMarginLoss(COUNTS, 0.2, delta_max=0.4, placement=placement)
    margins = L.embedding_margins(COUNTS, 0.4).tolist()
    assert loss(z, y).item() == pytest.approx(ref_margin_contrastive(z, y, 0.2, margins, placement), rel=1e-9)


@pytest.mark.parametrize("placement", M.STUDY_PLACEMENTS)
def test_views_and_prototypes_match_reference(placement):
    z, y = embeddings(b=6, e=3, seed=3)
    z2 = torch.stack([z, z + 0.1 * torch.randn_like(z)], 1)  # (B, 2, E)
    protos = torch.randn(5, 3, dtype=torch.float64)
    loss = M.StudyMarginLoss(COUNTS, 0.3, delta_max=0.5, placement=placement)
    margins = L.embedding_margins(COUNTS, 0.5).tolist()
    expected = ref_margin_contrastive(z2.reshape(-1, 3), y.repeat_interleave(2), 0.3, margins, placement, protos)
    assert loss(z2, y, protos).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("placement", M.STUDY_PLACEMENTS)
def test_anchors_without_a_positive_have_loss_zero_and_gradients_are_finite(placement):
    z, _ = embeddings(b=6, e=3, seed=13)
    y = torch.tensor([0, 0, 1, 2, 3, 3])
    per_anchor, has_pos = M.contrastive_terms(z, y, 0.2, L.embedding_margins(COUNTS, 0.5)[y], placement, n_classes=5)
    assert has_pos.tolist() == [True, True, False, False, True, True] and (per_anchor[~has_pos] == 0).all()
    loss = M.StudyMarginLoss(COUNTS, 0.2, 0.5, placement=placement)
    for y in (torch.tensor([0, 0, 1, 2, 2, 4]), torch.tensor([3, 3, 3])):
        z = torch.randn(len(y), 4, dtype=torch.float64, requires_grad=True)
        value = loss(z, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all(), (placement, y)
    z, y = embeddings(b=8, e=3, seed=5)
    loss = M.StudyMarginLoss(COUNTS, 0.5, 0.3, placement=placement)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z.clone().requires_grad_(),))


def test_negative_form_without_margin_is_supcon_and_grows_with_delta():
    z, y = embeddings(b=40, e=5, seed=6)
    for average in L.ANCHOR_AVERAGES:
        torch.testing.assert_close(M.StudyMarginLoss(COUNTS, 0.2, 0.0, "negative", average)(z, y),
                                   L.SupConLoss(0.2, anchor_average=average)(z, y))
    values = [M.StudyMarginLoss(COUNTS, 0.2, d, placement="negative")(z, y).item() for d in np.linspace(0, 1, 11)]
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_hinge_form_is_zero_without_a_negative():
    """A batch of one class has no negative: the hinge against the nearest negative is 0, not 1."""
    z = torch.randn(4, 3, dtype=torch.float64)
    assert M.StudyMarginLoss(COUNTS, 0.2, 0.5, placement="hinge")(z, torch.tensor([2, 2, 2, 2])).item() == 0.0


def test_study_method_trains_the_core_forms_unchanged_and_refuses_unknown_forms():
    """A study ELM with a core placement is the core's ELM; the core refuses the study's forms."""
    logits, z = torch.randn(12, 2, 5, dtype=torch.float64), torch.randn(12, 2, 3, dtype=torch.float64)
    y = torch.arange(12) % 5
    elm = methods.get("elm")
    for placement in L.MARGIN_PLACEMENTS:
        study = M.study_method(elm).variant("x", placement=placement).build_loss(COUNTS)
        torch.testing.assert_close(study(logits, z, y)[0],
                                   elm.variant("x", placement=placement).build_loss(COUNTS)(logits, z, y)[0])
    with pytest.raises(ValueError, match=r"placement must be one of \['positive', 'centroid'\], got 'negative'"):
        L.EmbeddingMarginLoss(COUNTS, placement="negative")
    with pytest.raises(ValueError, match=r"placement must be one of .*'hinge'\], got 'middle'"):
        M.StudyMarginLoss(COUNTS, placement="middle")


def test_the_engine_trains_the_study_forms_one_by_one():
    """fit_many stacks only the core's forms; a study loss is computed alone (train.compute_loss), as hinge is."""
    study = [M.StudyELMLoss(COUNTS, placement=p, delta_max=d) for p, d in (("negative", 0.5), ("negative", 0.7))]
    assert fused.stacked_loss(study) is None
