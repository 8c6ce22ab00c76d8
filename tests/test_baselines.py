"""The baselines every student asks about -- re-weighting, re-sampling, decoupled training --
against hand-computed cases and the properties that define them."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import elm_lite as el
from elm_lite import losses as L
from elm_lite import methods
from elm_lite.models import MLP, CosineLinear
from elm_lite.train import EpochSampler, head_inputs, retrain_classifier, tau_normalize

pytestmark = pytest.mark.outcome   # trains and compares: CI runs it again under another arithmetic


def test_inverse_frequency_reweighting_by_hand():
    """counts (3, 1): weights 1/3 and 1, normalised to sum to 2 -> (0.5, 1.5). Logits chosen so that
    CE_0 = log 2 and CE_1 = log(4/3); the weighted mean is (0.5 log 2 + 1.5 log 4/3) / 2."""
    loss = L.ReweightedLoss([3, 1], "inverse")
    torch.testing.assert_close(loss.weights, torch.tensor([0.5, 1.5], dtype=torch.float64))
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]], dtype=torch.float64)
    expected = (0.5 * math.log(2) + 1.5 * math.log(4 / 3)) / 2
    assert loss(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-12)


def test_effective_number_reweighting_by_hand():
    """beta = 0.5, counts (3, 1): (1 - beta) / (1 - beta^n) = 0.5 / 0.875 and 1, normalised to sum to 2."""
    loss = L.ReweightedLoss([3, 1], "effective_number", beta=0.5)
    raw = np.array([0.5 / 0.875, 1.0])
    np.testing.assert_allclose(loss.weights.numpy(), raw * 2 / raw.sum(), rtol=1e-12)


def test_reweighting_with_equal_counts_is_plain_cross_entropy():
    logits, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 4, (20,))
    for scheme in L.REWEIGHTINGS:
        torch.testing.assert_close(L.ReweightedLoss([7] * 4, scheme)(logits, y), nn.functional.cross_entropy(logits, y))
    with pytest.raises(ValueError, match="scheme must be one of"):
        L.ReweightedLoss([3, 1], "sqrt")


def test_class_balanced_sampler_draws_every_class_equally_often():
    y = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    sampler = EpochSampler(y, 10, "class_balanced", torch.Generator().manual_seed(0))
    drawn = torch.cat([sampler.order(torch.device("cpu")) for _ in range(300)])   # 30,000 draws
    share = torch.bincount(y[drawn], minlength=3).double() / len(drawn)
    torch.testing.assert_close(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0)
    assert set(drawn[y[drawn] == 2].tolist()) == {99}                            # the one example, again and again


def test_class_balanced_sampler_draws_every_example_of_a_class_equally_often():
    """Within a class, each example is drawn uniformly (not always the class's first)."""
    y = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    sampler = EpochSampler(y, 10, "class_balanced", torch.Generator().manual_seed(1))
    drawn = torch.cat([sampler.order(torch.device("cpu")) for _ in range(300)])   # about 10,000 draws of class 1
    per_member = torch.bincount(drawn[y[drawn] == 1], minlength=100)[90:99].double()
    assert (per_member > 0).all()
    torch.testing.assert_close(per_member / per_member.sum(), torch.full((9,), 1 / 9, dtype=torch.float64),
                               atol=0.02, rtol=0)


def test_uniform_sampler_is_the_plain_permutation():
    y = torch.randint(0, 3, (50,))
    sampler = EpochSampler(y, 10, "uniform", torch.Generator().manual_seed(4))
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sampler.order(torch.device("cpu")), expected)
    assert EpochSampler(y, 50, "uniform", torch.Generator()).order(torch.device("cpu")) is None   # full batch


def test_tau_normalisation_gives_unit_weights_and_no_bias():
    model = MLP(4, 3, embed_dim=5)
    direction = nn.functional.normalize(model.head.weight.detach().clone(), dim=1)
    tau_normalize(model, 1.0)
    torch.testing.assert_close(model.head.weight.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(model.head.weight, direction)                   # directions unchanged
    assert torch.all(model.head.bias == 0)
    before = model.head.weight.detach().clone()
    tau_normalize(model, 0.0)                                                  # tau = 0: weights unchanged
    torch.testing.assert_close(model.head.weight, before)
    with torch.no_grad():                                                      # tau = 0.5: w / ||w||^0.5
        model.head.weight.copy_(torch.tensor([[3.0, 0, 4, 0, 0], [0, 0, 0, 0, 1], [0, 0.5, 0, 0, 0]]))
    tau_normalize(model, 0.5)
    torch.testing.assert_close(model.head.weight, torch.tensor([[3.0, 0, 4, 0, 0], [0, 0, 0, 0, 1], [0, 0.5, 0, 0, 0]])
                               / torch.tensor([[5.0], [1.0], [0.5]]) ** 0.5)
    cosine = MLP(4, 3, cosine=True)
    assert isinstance(cosine.head, CosineLinear)
    with pytest.raises(ValueError, match="cosine head"):
        tau_normalize(cosine)


def test_classifier_retraining_changes_the_head_only_and_helps_the_tail():
    data = el.make_toy(**{**el.recipes.EMBEDDING_TOY, "n_max": 200, "rho": 50})
    el.set_seed(0)
    model = MLP(data.x_train.shape[1], data.n_classes, hidden=32, embed_dim=8, normalize=True)
    el.fit(model, data.x_train, data.y_train, epochs=20, batch_size=64, lr=0.01)
    body = [p.detach().clone() for p in model.body.parameters()]
    features = head_inputs(model, data.x_train)
    ce = el.balanced_accuracy(data.y_test, el.predict(model, data.x_test))
    retrain_classifier(model, data.x_train, data.y_train, epochs=10, lr=0.01, batch_size=64, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(body, model.body.parameters()))   # the representation is frozen
    torch.testing.assert_close(head_inputs(model, data.x_train), features)
    assert el.balanced_accuracy(data.y_test, el.predict(model, data.x_test)) > ce


def test_baseline_methods_are_registered_with_their_stage():
    assert methods.get("cb-sampling").sampling == "class_balanced"
    assert methods.get("crt").decoupling == "crt" and methods.get("tau-norm").decoupling == "tau-norm"
    assert "sampling" in methods.get("cb-sampling").identity() and "decoupling" in methods.get("crt").identity()
    assert set(methods.get("la").identity()) == {"method", "loss", "constants", "views", "cosine", "drw", "posthoc",
                                                 "recipe"}           # older runs' identities stay what they were
    assert set(methods.BASELINES) <= set(methods.FULLSCALE_METHODS)


def test_class_balanced_runs_trained_together_equal_runs_trained_alone():
    from elm_lite.engine.many import fit_many
    data = el.make_toy(**{**el.recipes.EMBEDDING_TOY, "n_max": 60, "rho": 20})

    def model(seed):
        el.set_seed(seed)
        return MLP(data.x_train.shape[1], data.n_classes, hidden=16, embed_dim=4).double()
    settings = dict(epochs=3, batch_size=32, lr=0.01, sampling="class_balanced")
    together = [model(s) for s in (0, 1)]
    fit_many(together, data.x_train, data.y_train, [nn.CrossEntropyLoss(), nn.CrossEntropyLoss()], [0, 1],
             progress=False, **settings)
    for seed, trained in zip((0, 1), together):
        alone = model(seed)
        el.fit(alone, data.x_train, data.y_train, nn.CrossEntropyLoss(), seed=seed, **settings)
        for a, b in zip(alone.parameters(), trained.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
