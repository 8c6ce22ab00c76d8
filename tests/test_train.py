import numpy as np
import pytest
import torch

from elm_lite import MLP, LinearModel, balanced_accuracy, fit, make_toy, predict, set_seed, track_balanced_accuracy
from elm_lite.engine.loop import fit_at_scale
from elm_lite.train import gaussian_jitter

pytestmark = pytest.mark.outcome   # trains and compares: CI runs it again under another arithmetic


def test_fit_learns_a_separable_problem():
    d = make_toy("gaussian", n_classes=3, n_max=100, rho=2, separation=6.0, noise=0.5, n_test_per_class=200)
    set_seed(0)
    model = LinearModel(2, 3)
    hist = fit(model, d.x_train, d.y_train, epochs=150, batch_size=None,
               on_epoch_end=track_balanced_accuracy(d.x_test, d.y_test))
    assert balanced_accuracy(d.y_test, predict(model, d.x_test)) > 0.98
    assert hist.loss[-1] < 0.2 * hist.loss[0]
    assert len(hist.epoch) == len(hist.held_out_balanced_accuracy) == 150
    assert hist.held_out_balanced_accuracy[-1] > 0.98


def test_fit_minibatches_mlp_and_is_reproducible():
    d = make_toy("rings", n_classes=2, n_max=200, rho=2, n_test_per_class=200, noise=0.5)
    results = []
    for _ in range(2):
        set_seed(1)
        model = MLP(2, 2, hidden=32, embed_dim=8)
        hist = fit(model, d.x_train, d.y_train, epochs=60, batch_size=64, lr=0.01)
        results.append((hist.loss, predict(model, d.x_test)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert balanced_accuracy(d.y_test, results[0][1]) > 0.9


def test_on_epoch_end_is_called():
    calls = []
    fit(LinearModel(2, 2), np.zeros((4, 2)), [0, 1, 0, 1], epochs=3,
        on_epoch_end=lambda e, m, h: calls.append((e, len(h.loss))))
    assert calls == [(1, 1), (2, 2), (3, 3)]


def test_fit_is_the_textbook_loop():
    """fit trains exactly as the plain loop a student writes (d2l's train_epoch): per epoch a
    permutation from the run's order stream, then for each batch forward, cross-entropy, zero_grad,
    backward, Adam step. The same weights, bit for bit."""
    d = make_toy("gaussian", n_classes=3, n_max=50, rho=3, n_test_per_class=10)
    x, y = torch.as_tensor(d.x_train, dtype=torch.float32), torch.as_tensor(d.y_train)
    set_seed(0)
    fitted = MLP(2, 3, hidden=8)
    fit(fitted, d.x_train, d.y_train, torch.nn.CrossEntropyLoss(), epochs=3, batch_size=16, lr=0.01, seed=5)
    set_seed(0)
    model = MLP(2, 3, hidden=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    order = torch.Generator().manual_seed(5)                 # the run's batch-order stream (run_generators)
    for _ in range(3):
        model.train()
        perm = torch.randperm(len(x), generator=order)
        for i in range(0, len(x), 16):
            idx = perm[i:i + 16]
            loss = torch.nn.functional.cross_entropy(model(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(fitted.parameters(), model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("views", [0, 1, 2])
def test_the_engine_loop_with_its_defaults_is_fit(views):
    """fit_at_scale (the engine's loop of large runs) with Adam, no schedule, fp32 and no hooks trains
    exactly as fit: the same history and the same weights, bit for bit, with 0, 1 or 2 augmented views."""
    from elm_lite import losses
    d = make_toy("gaussian", n_classes=3, n_max=50, rho=3, n_test_per_class=10)
    jitter = gaussian_jitter(0.3)
    loss = losses.ELMLoss(d.counts) if views == 2 else losses.LogitAdjustedLoss(d.counts)
    runs = []
    for train in (fit, fit_at_scale):
        set_seed(0)
        model = MLP(2, 3, hidden=8, embed_dim=4, normalize=True)
        settings = dict(epochs=3, batch_size=16, lr=0.01, weight_decay=1e-3, seed=5, sampling="class_balanced")
        if train is fit:
            history = fit(model, d.x_train, d.y_train, loss, views=views * [jitter], **settings)
        else:
            history = fit_at_scale(model, d.x_train, d.y_train, loss, n_views=max(views, 1),
                                   augment=jitter if views else None, progress=False, **settings)
        runs.append((history, model))
    (h1, m1), (h2, m2) = runs
    assert h1.loss == h2.loss and h1.train_balanced_accuracy == h2.train_balanced_accuracy
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_fit_multiplies_the_learning_rate_by_lr_schedule():
    """A schedule of 0 from epoch 2 on freezes the weights after epoch 1: the result equals a 1-epoch run;
    a schedule of 0 throughout leaves the initial weights."""
    d = make_toy("gaussian", n_classes=3, n_max=60, rho=3, n_test_per_class=10)

    def weights(epochs, schedule=None):
        set_seed(0)
        model = MLP(2, 3, hidden=8)
        fit_at_scale(model, d.x_train, d.y_train, epochs=epochs, batch_size=16, lr=0.05, progress=False,
                     lr_schedule=schedule)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    set_seed(0)
    initial = torch.cat([p.detach().flatten() for p in MLP(2, 3, hidden=8).parameters()])
    torch.testing.assert_close(weights(3, lambda epoch: 0.0), initial, rtol=0, atol=0)
    one_epoch = weights(1)
    assert not torch.equal(one_epoch, initial)
    torch.testing.assert_close(weights(3, lambda epoch: 1.0 if epoch == 1 else 0.0), one_epoch, rtol=0, atol=0)


@pytest.mark.parametrize("x,y,kwargs,match", [
    (np.zeros((4, 2)), [0, 1, 0], {}, r"y must be an integer tensor of shape \(4,\)"),
    (np.zeros((4, 2, 1)), [0, 1, 0, 1], {}, r"cannot take inputs of shape \(2, 1\)"),
    (np.zeros(4), [0, 1, 0, 1], {}, r"x must be a non-empty numeric tensor of shape \(examples, features\)"),
    (np.zeros((4, 2)), [0, 1, 0, 5], {}, r"y must be .* with values in \[0, 2\), got .*\[0, 1, 0, 5\]"),
    (np.zeros((4, 2)), [0.0, 1.0, 0.0, 1.0], {}, r"y must be an integer tensor .* dtype torch.float64"),
    (np.zeros((4, 2)), [0, 1, 0, 1], dict(epochs=0), "epochs"),
    (np.zeros((4, 2)), [0, 1, 0, 1], dict(lr=-1.0), "lr"),
    (np.zeros((4, 2)), [0, 1, 0, 1], dict(batch_size=0), "batch_size"),
    (np.zeros((4, 2)), [0, 1, 0, 1], dict(views=[None]), r"views must be a list of augmentations"),
    (np.zeros((4, 2)), [0, 1, 0, 1], dict(loss_fn=__import__("elm_lite").losses.SupConLoss()),
     r"SupConLoss is a loss on embeddings alone; .* use ELMLoss\(counts, lam=...\)"),
    (np.zeros((4, 2)), [0, 1, 0, 1], dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\)"),
])
def test_fit_bad_input(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(LinearModel(2, 2), x, y, **kwargs)


def test_the_engine_loop_refuses_an_unknown_optimizer():
    with pytest.raises(ValueError, match=r"optimizer must be one of .*'adam', 'sgd'.*got 'lbfgs'"):
        fit_at_scale(LinearModel(2, 2), np.zeros((4, 2)), [0, 1, 0, 1], epochs=1, batch_size=2, lr=0.1,
                     optimizer="lbfgs")


def test_models_return_logits_and_embedding():
    x = torch.randn(7, 2)
    logits, z = MLP(2, 4, embed_dim=3, normalize=True)(x)
    assert logits.shape == (7, 4) and z.shape == (7, 3)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(7))
    logits, z = LinearModel(2, 4)(x)
    assert logits.shape == (7, 4) and torch.equal(z, x)


def test_strong_augment_is_seeded_in_range_and_keeps_layout():
    from elm_lite.engine.augment import strong_augment
    x = torch.rand(16, 32, 32, 3) * 255
    a = strong_augment(x, torch.Generator().manual_seed(1))
    b = strong_augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)                        # same stream, same views
    assert not torch.equal(a, strong_augment(x, torch.Generator().manual_seed(2)))
    assert a.min() >= 0 and a.max() <= 255
    chw = strong_augment(x.permute(0, 3, 1, 2), torch.Generator().manual_seed(1))
    torch.testing.assert_close(chw.permute(0, 2, 3, 1), a)                # either layout, same result


def test_strong_augment_identities():
    """With the crop forced to the whole image and no flip, jitter or greyscale it is the identity;
    greyscale output has equal channels; a constant image stays constant through crop and flip."""
    from elm_lite.engine.augment import strong_augment
    x = torch.rand(8, 3, 16, 16) * 255
    same = strong_augment(x, torch.Generator().manual_seed(0), min_scale=1.0, aspect=(1, 1), jitter=0.0, grey_p=0.0)
    flipped = same.flip(-1)
    for k in range(8):  # each image is x or its mirror image
        assert torch.allclose(same[k], x[k], atol=1e-3) or torch.allclose(flipped[k], x[k], atol=1e-3)
    grey = strong_augment(x, torch.Generator().manual_seed(0), grey_p=1.0)
    torch.testing.assert_close(grey[:, 0], grey[:, 1])
    torch.testing.assert_close(grey[:, 1], grey[:, 2])
    flat = torch.full((4, 3, 16, 16), 100.0)
    torch.testing.assert_close(strong_augment(flat, torch.Generator().manual_seed(3), jitter=0.0), flat)


def test_view_augmentation_follows_the_recipe():
    from elm_lite.engine.augment import crop_flip, strong_augment, view_augmentation
    assert view_augmentation("strong", 1) is crop_flip and view_augmentation("strong", 2) is strong_augment
    assert view_augmentation("crop_flip", 2) is crop_flip
    with pytest.raises(ValueError, match="view_augment must be one of"):
        view_augmentation("simclr", 2)


@pytest.mark.parametrize("name", ["crop_flip", "strong_augment"])
def test_augmentations_take_one_stream_per_share_of_the_batch(name):
    """K runs' batches augmented in one call with K streams equal each run's batch augmented alone."""
    from elm_lite.engine import augment as augmentations
    augment = getattr(augmentations, name)
    x = torch.rand(3 * 4, 8, 8, 3) * 255                                   # 3 runs x 4 images
    together = augment(x, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    alone = torch.cat([augment(x[4 * k:4 * k + 4], torch.Generator().manual_seed(s)) for k, s in enumerate((5, 6, 7))])
    assert augment.stream_lists and torch.equal(together, alone)
    with pytest.raises(ValueError, match="12 images cannot be split into 5 equal shares"):
        augment(x, [torch.Generator() for _ in range(5)])


def test_fit_many_with_an_augmentation_that_takes_one_stream_equals_separate_runs():
    """An augmentation without ``stream_lists`` is called once per run and view, as fit calls it."""
    from elm_lite.engine.many import fit_many
    data = make_toy("gaussian", n_classes=3, n_max=30, rho=5, dim=4, seed=0)

    def flip_sign(x, generator=None):
        return x * torch.where(torch.rand(len(x), 1, generator=generator) < 0.5, -1.0, 1.0)

    runs = []
    for together in (False, True):
        models = []
        for seed in (0, 1):
            set_seed(seed)
            models.append(MLP(4, 3, hidden=8, depth=1, embed_dim=3, normalize=True))
        if together:
            fit_many(models, data.x_train, data.y_train, [torch.nn.CrossEntropyLoss()] * 2, [0, 1], epochs=2,
                     batch_size=16, n_views=2, augment=flip_sign, progress=False)
        else:
            for m, seed in zip(models, (0, 1)):
                fit(m, data.x_train, data.y_train, epochs=2, batch_size=16, views=2 * [flip_sign], seed=seed)
        runs.append(models)
    for a, b in zip(*runs):
        for ta, tb in zip(a.state_dict().values(), b.state_dict().values()):
            torch.testing.assert_close(tb, ta, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "la", "ldam-drw", "supcon-la", "elm", "elm-positive"])
def test_a_training_step_never_waits_for_the_device(name, host_syncs):
    """fit's epoch reads values back to the host once, at its end, however many steps it has: no
    per-step syncs (the losses' value checks are off inside the engine's trusted_batches, as full-scale runs train)."""
    from elm_lite import methods
    from elm_lite.engine.augment import crop_flip
    from elm_lite.engine.fused import trusted_batches
    from elm_lite.engine.loop import FitHooks, Run, make_optimizer, train_epoch
    from elm_lite.models import SmallCNN
    method, counts = methods.get(name), [40, 20, 10, 5, 3]
    net = SmallCNN(5, cosine=method.cosine, projection_dim=8 if method.views > 1 else None)
    loss = method.build_loss(counts, 10)
    run = Run(net, net, loss, make_optimizer("sgd", list(net.parameters()), 0.05, 5e-4), method.views, crop_flip,
              False, (torch.Generator().manual_seed(1), torch.Generator().manual_seed(0)), FitHooks(), {})
    x, y = torch.rand(24, 32, 32, 3) * 255, torch.arange(24) % 5
    order = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    with trusted_batches():
        syncs = [host_syncs(lambda n=n: train_epoch(run, x, y, order, 8, n)) for n in (1, 3)]
    assert syncs[0] == syncs[1], f"{name}: {syncs[1] - syncs[0]} more host syncs for 2 more steps"
    with pytest.raises(ValueError, match=r"labels .*values in \[0, 5\)"):   # outside the loop, checked as before
        loss(*((torch.zeros(2, 2, 5), torch.zeros(2, 2, 8)) if method.views > 1 else (torch.zeros(2, 5),)),
             torch.tensor([0, 7]))


@pytest.mark.parametrize("factor", [-1.0, float("inf"), float("nan"), "1"])
def test_the_engine_loop_refuses_a_learning_rate_multiplier_that_is_not_a_finite_number_at_least_0(factor):
    with pytest.raises(ValueError, match=r"lr_schedule\(1\) returned .*; it must return a learning-rate multiplier"):
        fit_at_scale(LinearModel(2, 2), np.zeros((4, 2)), [0, 1, 0, 1], epochs=1, batch_size=2, lr=0.1,
                     lr_schedule=lambda epoch: factor, progress=False)
    fit_at_scale(LinearModel(2, 2), np.zeros((4, 2)), [0, 1, 0, 1], epochs=1, batch_size=2, lr=0.1,
                 lr_schedule=lambda epoch: 0.0, progress=False)          # 0 (a frozen epoch) is allowed
