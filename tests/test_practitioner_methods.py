"""What practitioners also reach for: focal loss (Lin et al. 2017) and weight balancing (Alshammari et
al. 2022) -- the loss against a slow explicit reference and its identity (gamma = 0 is CE), MaxNorm
and the class-balanced classifier stage by hand, the weight decay chosen on validation, and both
trained by the engine (elm_lite.engine.many, fused losses) exactly as by the core (fit)."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import elm_lite as el
from elm_lite import balancing, methods
from elm_lite import losses as L
from elm_lite.engine import fused
from elm_lite.models import MLP

COUNTS = np.array([40, 20, 10, 5, 3])


def _focal_reference(logits, labels, gamma):
    """One example at a time: p = softmax(f)_y, loss -(1 - p)^gamma log p, then the mean."""
    total = 0.0
    for f, y in zip(logits, labels):
        p = torch.exp(f[y]) / torch.exp(f).sum()
        total = total - (1 - p) ** gamma * torch.log(p)
    return total / len(labels)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_loss_equals_the_slow_reference_in_value_and_gradient(gamma):
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(16, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    labels = torch.randint(0, 5, (16,), generator=gen)
    fast, slow = L.FocalLoss(COUNTS, gamma)(logits, labels), _focal_reference(logits, labels, gamma)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(torch.autograd.grad(fast, logits)[0], torch.autograd.grad(slow, logits)[0])


def test_focal_with_gamma_zero_is_cross_entropy_and_gamma_down_weights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.2, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    torch.testing.assert_close(L.FocalLoss([5, 3, 1], 0.0)(logits, labels), F.cross_entropy(logits, labels))
    easy, hard = (L.FocalLoss([5, 3, 1], 2.0)(logits[i:i + 1], labels[i:i + 1]) /
                  F.cross_entropy(logits[i:i + 1], labels[i:i + 1]) for i in (0, 1))
    p_easy, p_hard = np.exp(4) / (np.exp(4) + 2), 1 / (2 + np.exp(0.2))  # 0.965 and 0.310
    assert float(easy) == pytest.approx((1 - p_easy) ** 2) and float(hard) == pytest.approx((1 - p_hard) ** 2)
    with pytest.raises(ValueError, match="gamma"):
        L.FocalLoss([5, 3, 1], -1.0)


def test_focal_stacked_loss_equals_each_loss_on_its_slice():
    kind_losses = [L.FocalLoss(COUNTS, g) for g in (0.0, 1.0, 2.0)]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, 2, 5, generator=gen, requires_grad=True)
    y = torch.randint(0, 5, (3, 12), generator=gen)
    together = fused.stacked_loss(kind_losses)(logits, None, y)
    alone = torch.stack([loss(logits[k].flatten(0, 1), y[k].repeat_interleave(2))
                         for k, loss in enumerate(kind_losses)])
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(together.sum(), logits)[0],
                               torch.autograd.grad(alone.sum(), logits)[0], rtol=1e-5, atol=1e-7)


def test_max_norm_caps_long_rows_and_leaves_short_ones():
    head = nn.Linear(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 2.0]]))
    balancing.max_norm_(head, 1.0)
    torch.testing.assert_close(head.weight, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 1.0]]))


def _toy():
    return el.make_toy(**{**el.recipes.EMBEDDING_TOY, "n_max": 60, "rho": 20})


def test_balanced_classifier_stage_changes_the_head_only_and_caps_its_norms():
    data = _toy()
    el.set_seed(0)
    model = MLP(data.x_train.shape[1], data.n_classes, hidden=16, embed_dim=4, normalize=True)
    el.fit(model, data.x_train, data.y_train, epochs=5, batch_size=32, lr=0.05)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    balancing.balanced_classifier_stage(model, data.x_train, data.y_train, max_norm=0.5)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]) != name.startswith("head."), name
    assert balancing.class_weight_norms(model).max() <= 0.5 + 1e-6
    with pytest.raises(ValueError, match="linear head"):
        balancing.balanced_classifier_stage(MLP(16, 8, cosine=True), data.x_train, data.y_train)


def test_choose_weight_decay_picks_the_best_validation_mean():
    """A stand-in trainer whose model predicts class 0 unless the weight decay is 0.1: validation
    balanced accuracy 0.5 against 1.0."""
    class Fixed(nn.Module):
        def __init__(self, right):
            super().__init__()
            self.right, self.n_classes = right, 2

        def forward(self, x):
            ones = torch.ones_like(x[:, 0])
            return (torch.stack([-x[:, 0], x[:, 0]], 1) if self.right else torch.stack([ones, 0 * ones], 1)), x
    x_val, y_val = np.array([[-1.0], [1.0]], dtype=np.float32), np.array([0, 1])
    best, scores = balancing.choose_weight_decay(lambda wd, seed: Fixed(wd == 0.1), x_val, y_val, grid=(0.0, 0.1, 1.0),
                                                 seeds=(0, 1))
    assert best == 0.1 and scores[0.1] == (1.0, 0.0, 2) and scores[0.0][0] == 0.5
    with pytest.raises(ValueError, match="non-empty grid"):
        balancing.choose_weight_decay(lambda wd, seed: None, x_val, y_val, grid=())


def test_both_methods_are_registered():
    focal, wb = methods.get("focal"), methods.get("weight-balancing")
    assert isinstance(focal.build_loss(COUNTS), L.FocalLoss) and focal.build_loss(COUNTS).gamma == 2.0
    assert wb.decoupling == "weight-balancing"
    assert wb.recipe["weight_decay"] == el.recipes.WEIGHT_BALANCING["weight_decay"]
    assert wb.build_loss(COUNTS).tau == 0.0                          # stage 1 is plain CE


@pytest.mark.outcome
def test_focal_and_weight_balancing_trained_by_the_engine_equal_the_core():
    """Both methods under the toy embedding recipe: trained together by the engine (fit_many, focal
    through its stacked loss) and alone by fit -- the same weights (float32, up to summation order) after
    stage 1 and, for weight balancing, after its classifier stage."""
    from elm_lite.experiments import train_embedding_model, train_embedding_models
    data = _toy()
    jobs = [(methods.get("focal"), 0), (methods.get("focal").variant("focal 1", gamma=1.0), 1),
            (methods.get("weight-balancing"), 0), (methods.get("weight-balancing"), 1)]
    recipe = dict(epochs=3, hidden=16)
    together = train_embedding_models(data, jobs, **recipe)
    alone = [train_embedding_model(data, m, seed=s, **recipe) for m, s in jobs]
    for (m, s), a, b in zip(jobs, alone, together):
        for (name, ta), tb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            ta, tb = ta.double(), tb.double()   # float32: equal up to summation order (relative 1e-5 in norm)
            assert torch.linalg.norm(ta - tb) <= 1e-5 * torch.linalg.norm(ta) + 1e-9, f"{m.label} seed {s}: {name}"
        assert a.balanced_accuracy == pytest.approx(b.balanced_accuracy, abs=2e-3)


@pytest.mark.outcome
def test_the_recipe_weight_decay_is_on_the_validation_plateau():
    """balancing.choose_weight_decay on the capstone's toy problem (EMBEDDING_TOY, data seed 0), seeds 0-2,
    weight balancing trained under the toy recipe. Measured (2-core AMD EPYC; seeds 0-4, two data draws):
    validation balanced accuracy 0.720 / 0.736 / 0.729 / 0.647 for weight decay 0 / 1e-4 / 1e-3 / 1e-2
    (sd 0.02-0.036 over seeds; data seed 1: 0.693 / 0.703 / 0.698 / 0.633): 1e-4 picked on both draws, but
    within one sd of 0 and 1e-3; 1e-2 is clearly worse. Held: the recipe's value within 0.02 of the best
    mean, and 1e-2 at least 0.03 below it."""
    from elm_lite.data import validation_sample
    from elm_lite.experiments import train_embedding_model
    data = el.make_toy(**el.recipes.EMBEDDING_TOY, seed=0)
    wb = methods.get("weight-balancing")
    best, scores = balancing.choose_weight_decay(
        lambda wd, s: train_embedding_model(data, wb.variant("wb", recipe={"weight_decay": wd}), seed=s).model,
        *validation_sample(data))
    top = scores[best][0]
    assert scores[el.recipes.WEIGHT_BALANCING["weight_decay"]][0] >= top - 0.02
    assert scores[1e-2][0] < top - 0.03


@pytest.mark.outcome
def test_weight_decay_shrinks_the_tails_short_weights_most_on_the_toy():
    """Notebook 03 and 07's reading: on the toy problem (EMBEDDING_TOY, the toy recipe: Adam, a normalised
    embedding) CE leaves the tail's classifier weights shorter than the head's, and weight decay does not
    even them out -- it shrinks the short ones most. Measured (seeds 0-2, mean norms): tail / head norm
    0.53 without weight decay, 0.12 with 1e-2. Held: below 0.8 without, and at most half of that with 1e-2."""
    from elm_lite.experiments import train_embedding_models
    data = el.make_toy(**el.recipes.EMBEDDING_TOY, seed=0)
    ratio = {}
    for wd in (0.0, 1e-2):
        ce = methods.get("ce").variant("CE", recipe={"weight_decay": wd})
        norms = np.mean([balancing.class_weight_norms(r.model) for r in train_embedding_models(
            data, [(ce, s) for s in range(3)])], 0)
        ratio[wd] = norms[-1] / norms[0]
    assert ratio[0.0] < 0.8 and ratio[1e-2] < 0.5 * ratio[0.0]


def test_both_methods_train_at_full_scale_alone_and_in_a_table(tmp_path):
    """The real-image paths (engine.fullscale, engine.table) train both methods, weight balancing with its
    classifier stage; tiny fake CIFAR, two epochs: the paths run, not the learning."""
    from elm_lite.engine.cifar import fake_cifar, load_cifar_lt
    from elm_lite.engine.fullscale import train_cifar
    from elm_lite.engine.table import train_table
    assert set(methods.PRACTITIONER_METHODS) <= set(methods.FULLSCALE_METHODS)
    data = load_cifar_lt("cifar10", rho=10, arrays=fake_cifar(10, n_per_class=40, n_test_per_class=10))
    tiny = dict(model="small_cnn", epochs=2, batch_size=32, lr=0.05, projection_dim=16)
    for name in methods.PRACTITIONER_METHODS:
        assert 0 <= train_cifar(data, name, out_dir=tmp_path / name, progress=False, **tiny)["balanced_accuracy"] <= 1
    table = train_table(data, list(methods.PRACTITIONER_METHODS), [0], tmp_path / "table", progress=False, **tiny)
    assert len(table["table"]) >= 1
