import numpy as np
import pytest

from elm_lite.data import batch_class_stats, longtail_counts, make_toy

CIFAR10_LT_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_exp_profile_gives_cifar10_lt_counts():
    counts = longtail_counts(5000, 10, 100, "exp")
    assert counts.tolist() == CIFAR10_LT_COUNTS
    assert counts.sum() == 12406


@pytest.mark.parametrize("n_max,n_classes,rho,total", [
    (5000, 10, 100, 12406), (5000, 10, 50, 13996), (5000, 10, 10, 20431),
    (500, 100, 100, 10847), (500, 100, 50, 12608), (500, 100, 10, 19573),
])
def test_exp_profile_totals_match_cifar_lt(n_max, n_classes, rho, total):
    assert longtail_counts(n_max, n_classes, rho).sum() == total


def test_step_profile_halves():
    assert longtail_counts(500, 5, 10, "step").tolist() == [500, 500, 50, 50, 50]
    assert longtail_counts(500, 4, 100, "step").tolist() == [500, 500, 5, 5]


@pytest.mark.parametrize("profile", ["exp", "step"])
@pytest.mark.parametrize("rho", [1, 7.5, 100])
def test_ratio_and_monotone(profile, rho):
    counts = longtail_counts(1000, 6, rho, profile)
    assert np.all(np.diff(counts) <= 0)
    assert counts[0] == 1000
    assert counts[0] / counts[-1] == pytest.approx(rho, rel=0.02)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_max=500, n_classes=5, rho=0.5), "rho"),
    (dict(n_max=500, n_classes=5, rho=float("nan")), "rho"),
    (dict(n_max=500, n_classes=1, rho=10), "n_classes"),
    (dict(n_max=50, n_classes=5, rho=100), "n_max=50 is too small"),
    (dict(n_max=0, n_classes=5, rho=10), "n_max"),
    (dict(n_max=10.5, n_classes=5, rho=10), "n_max"),
    (dict(n_max=500, n_classes=5, rho=10, profile="linear"), "profile"),
])
def test_longtail_counts_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        longtail_counts(**kwargs)


@pytest.mark.parametrize("kind", ["gaussian", "spirals", "rings"])
def test_make_toy_counts_balanced_test_and_seed(kind):
    d = make_toy(kind, n_classes=4, n_max=200, rho=20, n_test_per_class=50, seed=3)
    assert np.bincount(d.y_train, minlength=4).tolist() == d.counts.tolist() == [200, 73, 27, 10]
    assert np.bincount(d.y_test).tolist() == [50] * 4
    assert d.x_train.shape == (310, 2) and d.x_train.dtype == np.float32
    again = make_toy(kind, n_classes=4, n_max=200, rho=20, n_test_per_class=50, seed=3)
    np.testing.assert_array_equal(d.x_train, again.x_train)
    np.testing.assert_array_equal(d.y_test, again.y_test)
    other = make_toy(kind, n_classes=4, n_max=200, rho=20, n_test_per_class=50, seed=4)
    assert not np.array_equal(d.x_train, other.x_train)


def test_gaussian_returns_the_sampling_densities():
    d = make_toy("gaussian", n_classes=3, n_max=4000, rho=2, n_test_per_class=4000, separation=3.0, noise=0.7)
    assert d.means.shape == (3, 2) and d.covs.shape == (3, 2, 2)
    np.testing.assert_allclose(np.linalg.norm(d.means, axis=1), 3.0)
    for c in range(3):
        pts = d.x_test[d.y_test == c]
        np.testing.assert_allclose(pts.mean(0), d.means[c], atol=0.05)
        np.testing.assert_allclose(np.cov(pts.T), d.covs[c], atol=0.05)
    assert d.prior.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="moons3d"), "kind"),
    (dict(n_classes=1), "n_classes"),
    (dict(rho=0), "rho"),
    (dict(n_max=20, rho=100), "too small"),
    (dict(profile="zipf"), "profile"),
    (dict(noise=-1.0), "noise"),
    (dict(n_test_per_class=0), "n_test_per_class"),
])
def test_make_toy_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_toy(**kwargs)


def test_batch_class_stats_matches_simulation():
    counts = np.array([500, 158, 50, 15, 5])
    stats = batch_class_stats(counts, 32)
    np.testing.assert_allclose(stats["expected"], 32 * counts / counts.sum())
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), counts)
    draws = np.array([np.bincount(rng.choice(labels, 32, replace=False), minlength=5) for _ in range(20000)])
    np.testing.assert_allclose((draws == 0).mean(0), stats["p_none"], atol=0.01)
    assert stats["p_none"][0] < 1e-12  # the head class is (almost) always present


def test_batch_class_stats_bad_batch():
    with pytest.raises(ValueError, match="batch_size"):
        batch_class_stats([3, 2], 6)


def test_fake_cifar_overlap_makes_classes_confusable():
    """overlap = 0: each class's mean colour is far from the others (a small CNN learns them all);
    overlap > 0: the nearest-mean-colour rule makes mistakes but stays far above chance (notebook 06's
    offline run: some classes learned, some confused, the rarest mostly lost)."""
    from elm_lite.engine.cifar import fake_cifar

    def nearest_mean_accuracy(arrays):
        colour = lambda x: x.reshape(len(x), -1, 3).mean(1)  # noqa: E731
        means = np.stack([colour(arrays["x_train"][arrays["y_train"] == c]).mean(0) for c in range(10)])
        pred = np.argmin(((colour(arrays["x_test"])[:, None] - means[None]) ** 2).sum(-1), 1)
        return (pred == arrays["y_test"]).mean()
    assert nearest_mean_accuracy(fake_cifar(10, 50, 50)) == 1.0
    hard = nearest_mean_accuracy(fake_cifar(10, 50, 50, noise=50.0, overlap=0.4))
    assert 0.2 < hard < 0.97
    with pytest.raises(ValueError, match="overlap"):
        fake_cifar(overlap=1.0)
