"""Many runs at once (elm_lite.engine.many): K models trained together must equal K separate runs of the
engine's single-run loop (fit_at_scale, itself held equal to the core's fit in tests/test_train.py),
and the stacked losses must equal each loss called on its own slice."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elm_lite import losses as L
from elm_lite import methods
from elm_lite.data import make_toy
from elm_lite.engine import fused
from elm_lite.engine.augment import crop_flip
from elm_lite.engine.cifar import fake_cifar
from elm_lite.engine.loop import fit_at_scale
from elm_lite.engine.many import fit_many
from elm_lite.engine.stacked import StackedModels
from elm_lite.models import MLP, ResNet32, SmallCNN
from elm_lite.train import fit, gaussian_jitter, set_seed

pytestmark = pytest.mark.outcome   # trains and compares: CI runs it again under another arithmetic

COUNTS = np.array([40, 20, 10, 5, 3])


def _images(n_per_class=8):
    arrays = fake_cifar(n_classes=4, n_per_class=n_per_class, seed=3)
    keep = np.concatenate([np.flatnonzero(arrays["y_train"] == c)[:n] for c, n in enumerate((16, 8, 4, 3))])
    return arrays["x_train"][keep], arrays["y_train"][keep]


def _assert_close_tensor(actual, expected, name, rel):
    """Relative difference in norm at most ``rel``."""
    actual, expected = actual.double(), expected.double()
    assert torch.linalg.norm(actual - expected) <= rel * torch.linalg.norm(expected) + 1e-12, (
        f"{name}: relative difference {float(torch.linalg.norm(actual - expected) / torch.linalg.norm(expected)):.2e}")


def core_fit(model, x, y, loss, *, seed, progress, n_views=1, augment=None, **recipe):
    """The core's fit, called with fit_many's view settings (n_views copies of ``augment``)."""
    return fit(model, x, y, loss, seed=seed, views=n_views * [augment] if augment else [], **recipe)


def _assert_same_runs(build, loss_list, seeds, x, y, dtype=torch.float64, alone_fit=fit_at_scale, **recipe):
    """Train each (model, loss, seed) alone with ``alone_fit`` (the engine's single-run loop, or the
    core's fit: ``core_fit``) and all together with fit_many; compare every
    parameter and batch-norm statistic, and the per-epoch losses. In float64 the two may differ only
    by summation order (grouped vs plain convolutions, batched vs single losses; Adam divides by
    tiny second moments): relative 1e-7, a hundredth of the float32 bound.
    In float32 that rounding is amplified by batch norm over tiny batches, so the float32 case is
    an MLP (relative 1e-5)."""
    rel = 1e-7 if dtype == torch.float64 else 1e-5
    build_in_dtype = build
    build = lambda: build_in_dtype().to(dtype)  # noqa: E731
    alone, histories = [], []
    for loss, seed in zip(loss_list, seeds):
        set_seed(seed)
        model = build()
        histories.append(alone_fit(model, x, y, loss(), seed=seed, progress=False, **recipe))
        alone.append(model)
    together = []
    for seed in seeds:
        set_seed(seed)
        together.append(build())
    many = fit_many(together, x, y, [loss() for loss in loss_list], seeds, progress=False, **recipe)
    for a, b, ha, hb in zip(alone, together, histories, many):
        for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
            _assert_close_tensor(tb, ta, name, rel)
        np.testing.assert_allclose(hb.loss, ha.loss, rtol=rel)
        assert hb.train_balanced_accuracy == pytest.approx(ha.train_balanced_accuracy)


SGD = dict(optimizer="sgd", lr=0.05, weight_decay=5e-4, batch_size=8, drop_last=True)


def test_image_runs_with_momentum_weight_decay_and_augmentation_equal_separate_runs():
    x, y = _images()
    counts = np.bincount(y)
    loss_list = [lambda: methods.get("ce").build_loss(counts), lambda: methods.get("la").build_loss(counts),
                 lambda: methods.get("la").build_loss(counts, tau=2.0)]
    _assert_same_runs(lambda: SmallCNN(4), loss_list, [0, 1, 2], x, y, epochs=3, augment=crop_flip, **SGD)


def test_ldam_drw_switch_in_a_group_equals_separate_runs():
    """DRW turns on at epoch 3 of 4 for two runs; a third (plain LDAM) never re-weights."""
    x, y = _images()
    counts = np.bincount(y)
    loss_list = [lambda: methods.get("ldam-drw").build_loss(counts, 4), lambda: methods.get("ldam").build_loss(counts),
                 lambda: methods.get("ldam-drw").build_loss(counts, 4)]
    _assert_same_runs(lambda: ResNet32(4, cosine=True), loss_list, [5, 6, 7], x, y, epochs=4, augment=crop_flip, **SGD)


def test_two_view_contrastive_runs_equal_separate_runs():
    x, y = _images()
    counts = np.bincount(y)
    loss_list = [lambda: methods.get("supcon-la").build_loss(counts), lambda: methods.get("elm").build_loss(counts),
                 lambda: methods.get("elm").build_loss(counts, delta_max=1.0, anchor_average="all")]
    _assert_same_runs(lambda: SmallCNN(4, projection_dim=8), loss_list, [0, 1, 2], x, y, epochs=2, n_views=2,
                      augment=crop_flip, **SGD)


def test_toy_mlp_runs_with_adam_jitter_and_prototypes_equal_separate_runs():
    """The notebooks' comparisons: K toy runs trained together equal the core's fit run alone."""
    data = make_toy("gaussian", n_classes=4, n_max=60, rho=10, dim=6, seed=0)
    counts = data.counts
    mlp = lambda: MLP(6, 4, hidden=16, depth=2, embed_dim=5, normalize=True)  # noqa: E731
    loss_list = [lambda: methods.get("elm").build_loss(counts, lam=0.5), lambda: methods.get("elm").build_loss(counts),
                 lambda: methods.get("supcon-la").build_loss(counts, temperature=0.2),
                 lambda: methods.get("elm-positive").build_loss(counts, anchor_average="all")]
    _assert_same_runs(mlp, loss_list, [0, 1, 2, 3], data.x_train, data.y_train, alone_fit=core_fit, epochs=3,
                      batch_size=32, lr=0.01, n_views=2, augment=gaussian_jitter(0.5))
    _assert_same_runs(mlp, loss_list, [0, 1, 2, 3], data.x_train, data.y_train, dtype=torch.float32, alone_fit=core_fit,
                      epochs=3, batch_size=32, lr=0.01, n_views=2, augment=gaussian_jitter(0.5))
    protos = [lambda: methods.get("elm").build_loss(counts, use_prototypes=True),
              lambda: methods.get("la").build_loss(counts)]
    _assert_same_runs(mlp, protos, [3, 4], data.x_train, data.y_train, alone_fit=core_fit, epochs=3, batch_size=32,
                      lr=0.01)


def test_stack_and_unstack_round_trip_outputs_and_state():
    models = []
    for seed in range(3):
        set_seed(seed)
        models.append(ResNet32(5, projection_dim=8).double())
    stacked = StackedModels(models).eval()
    x = torch.rand(3, 4, 32, 32, 3, dtype=torch.float64) * 255
    logits, z = stacked(x)
    for k, m in enumerate(models):
        one_logits, one_z = m.eval()(x[k])
        torch.testing.assert_close(logits[k], one_logits, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(z[k], one_z, rtol=1e-10, atol=1e-10)
    fresh = [ResNet32(5, projection_dim=8).double() for _ in range(3)]
    stacked.unstack(fresh)
    for a, b in zip(models, fresh):
        for ta, tb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(ta, tb)


def test_stacked_models_refuse_different_architectures():
    with pytest.raises(ValueError, match="one architecture"):
        StackedModels([SmallCNN(4), SmallCNN(4, cosine=True)])
    with pytest.raises(ValueError, match="one architecture"):
        StackedModels([SmallCNN(4), SmallCNN(4, projection_dim=8)])
    with pytest.raises(ValueError, match="one architecture"):
        StackedModels([SmallCNN(4), ResNet32(4)])


def _slices(kind_losses, logits, z, y, protos=None):
    return torch.stack([L.ELMLoss.forward(loss, logits[k], z[k], y[k], None if protos is None else protos[k])[0]
                        if isinstance(loss, L.ELMLoss) else loss(logits[k].flatten(0, -2),
                                                                 y[k].repeat_interleave(logits.shape[2]))
                        for k, loss in enumerate(kind_losses)])


@pytest.mark.parametrize("build", [
    lambda: [L.LogitAdjustedLoss(COUNTS, t) for t in (0.0, 1.0, 2.5)],
    lambda: [L.LDAMLoss(COUNTS, m, drw_epoch=d) for m, d in ((0.5, 2), (0.3, None), (0.5, 1))],
    lambda: [L.ELMLoss(COUNTS, lam=lam, delta_max=d, temperature=t)
             for lam, d, t in ((1, 0.5, 0.1), (0.5, 0, 0.2), (2, 1, 0.1))],
    lambda: [L.ELMLoss(COUNTS, delta_max=d, anchor_average=a, placement="positive")
             for d, a in ((0.0, "all"), (0.5, "class"), (1.0, "all"))],
    lambda: [L.ELMLoss(COUNTS, delta_max=d, use_prototypes=True) for d in (0.2, 0.9)],
    lambda: [L.ELMLoss(COUNTS, delta_max=d, temperature=t, placement="centroid") for d, t in ((0.3, 0.1), (1.0, 0.5))],
], ids=["la", "ldam-drw", "elm-class", "elm-mixed-averages", "elm-prototypes-warmup", "elm-centroid"])
def test_stacked_loss_equals_each_loss_on_its_slice(build):
    kind_losses = build()
    for loss in kind_losses:
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(2)                      # DRW on for drw_epoch <= 2; lambda warm-up half way
    k, b, v, e = len(kind_losses), 12, 2, 6
    gen = torch.Generator().manual_seed(0)
    cosine = isinstance(kind_losses[0], L.LDAMLoss)
    logits = torch.rand(k, b, v, 5, generator=gen) * 2 - 1 if cosine else torch.randn(k, b, v, 5, generator=gen)
    logits.requires_grad_(True)
    z = torch.randn(k, b, v, e, generator=gen, requires_grad=True)
    y = torch.randint(0, 5, (k, b), generator=gen)
    y[0, :] = 4                                   # one run whose batch is a single class
    protos = torch.randn(k, 5, e, generator=gen) if getattr(kind_losses[0], "use_prototypes", False) else None
    together = fused.stacked_loss(kind_losses)(logits, z, y, protos)
    alone = _slices(kind_losses, logits, z, y, protos)
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6)
    g1 = torch.autograd.grad(together.sum(), (logits, z), allow_unused=True)
    g2 = torch.autograd.grad(alone.sum(), (logits, z), allow_unused=True)
    for a, b_ in zip(g1, g2):
        if b_ is not None:
            torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-7)


def test_stacked_loss_declines_kinds_it_does_not_cover():
    assert fused.stacked_loss([L.LogitAdjustedLoss(COUNTS), L.LDAMLoss(COUNTS)]) is None
    assert fused.stacked_loss([L.MulticlassHingeLoss(COUNTS), L.MulticlassHingeLoss(COUNTS)]) is None
    assert fused.stacked_loss([L.ELMLoss(COUNTS, logit="ldam"), L.ELMLoss(COUNTS, logit="ldam")]) is None
    positive, centroid = L.ELMLoss(COUNTS, placement="positive"), L.ELMLoss(COUNTS, placement="centroid")
    assert fused.stacked_loss([positive, centroid]) is None


def test_fit_many_resumes_its_group_checkpoint_and_refuses_another_group(tmp_path, monkeypatch):
    data = make_toy("gaussian", n_classes=3, n_max=40, rho=5, dim=4, seed=1)
    ckpt = tmp_path / "group.pt"

    def run(seeds, epochs, resume=False):
        models = []
        for s in seeds:
            set_seed(s)
            models.append(MLP(4, 3, hidden=8, embed_dim=3))
        hs = fit_many(models, data.x_train, data.y_train, [methods.get("la").build_loss(data.counts) for _ in seeds],
                      seeds, epochs=epochs, batch_size=16, lr=0.01, checkpoint=ckpt, checkpoint_every=1,
                      resume=resume, progress=False)
        return models, hs

    straight, hs = run([0, 1], 4)
    ckpt.unlink()
    import elm_lite.engine.many as many
    real_save = many.save_checkpoint

    def save_then_stop(*args):
        real_save(*args)
        if args[4] == 2:                                   # the epoch: interrupted after its checkpoint
            raise KeyboardInterrupt
    monkeypatch.setattr(many, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run([0, 1], 4)
    monkeypatch.setattr(many, "save_checkpoint", real_save)
    resumed, hr = run([0, 1], 4, resume=True)
    assert hr[0].epoch == [1, 2, 3, 4]
    for a, b in zip(straight, resumed):
        for ta, tb in zip(a.state_dict().values(), b.state_dict().values()):
            torch.testing.assert_close(ta, tb)
    with pytest.raises(ValueError, match="seeds"):
        run([0, 2], 4, resume=True)


def test_fit_many_bad_inputs_are_named():
    model = MLP(4, 3)
    with pytest.raises(ValueError, match="one loss and one seed per model"):
        fit_many([model], np.zeros((4, 4)), np.zeros(4, int), [], [0], epochs=1)
    with pytest.raises(ValueError, match="seeds must be integers"):
        fit_many([model], np.zeros((4, 4)), np.zeros(4, int), [torch.nn.CrossEntropyLoss()], [-1], epochs=1)


def test_stacked_loss_declines_losses_it_does_not_know():
    """Plain torch losses (no buffers) and the re-weighted CE fall back to the per-run loop."""
    from torch import nn
    assert fused.stacked_loss([nn.CrossEntropyLoss(), nn.CrossEntropyLoss()]) is None
    assert fused.stacked_loss([L.ReweightedLoss(COUNTS), L.ReweightedLoss(COUNTS)]) is None


def test_a_group_step_never_waits_for_the_device(host_syncs):
    """fit_many reads values back to the host a fixed number of times per epoch, not per step."""
    counts = [40, 20, 10, 5, 3]
    names = ["ce", "la", "supcon-la", "elm", "elm-positive"]
    x, y = torch.rand(24, 32, 32, 3) * 255, torch.arange(24) % 5

    def one_epoch(n):  # n steps of batch 8
        for views in (1, 2):
            chosen = [methods.get(m) for m in names if methods.get(m).views == views]
            models = [SmallCNN(5, projection_dim=8 if views > 1 else None) for _ in chosen]
            fit_many(models, x[:8 * n], y[:8 * n], [m.build_loss(counts, 1) for m in chosen], list(range(len(chosen))),
                     epochs=1, batch_size=8, optimizer="sgd", n_views=views, augment=crop_flip, progress=False)
    syncs = [host_syncs(lambda n=n: one_epoch(n)) for n in (1, 3)]
    assert syncs[0] == syncs[1], f"{syncs[1] - syncs[0]} more host syncs for 2 more steps"
