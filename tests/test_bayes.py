"""Bayes-optimal references for the Gaussian toy problem, and LA approaching them."""
import numpy as np
import pytest

from elm_lite.data import bayes_predict, class_log_densities, make_toy, monte_carlo_errors, sample_balanced
from elm_lite.experiments import train_logit_method
from elm_lite.train import predict

pytestmark = pytest.mark.outcome   # trains and compares: CI runs it again under another arithmetic


def test_log_densities_match_closed_form():
    d = make_toy("gaussian", 3, 100, 10, separation=2.0, noise=0.5)
    x = np.array([[0.3, -1.2]])
    mu, var = d.means[1], 0.25
    expected = -np.sum((x[0] - mu) ** 2) / (2 * var) - np.log(2 * np.pi * var)
    assert class_log_densities(d, x)[0, 1] == pytest.approx(expected)


def test_bayes_rules_differ_by_the_prior():
    d = make_toy("gaussian", 5, 500, 100)
    balanced = monte_carlo_errors(lambda x: bayes_predict(d, x, balanced=True), d, 20000)
    standard = monte_carlo_errors(lambda x: bayes_predict(d, x, balanced=False), d, 20000)
    # each rule is best at its own criterion
    assert balanced["balanced"] < standard["balanced"] - 0.05
    assert standard["standard"] < balanced["standard"] - 0.03
    # symmetric classes: the balanced rule errs equally on each class
    assert np.ptp(balanced["per_class"]) < 0.02
    assert 0 < balanced["balanced_se"] < 0.002


def test_monte_carlo_errors_by_hand():
    d = make_toy("gaussian", 2, 10, 1)
    always_zero = monte_carlo_errors(lambda x: np.zeros(len(x), dtype=int), d, 1000)
    assert always_zero["per_class"].tolist() == [0.0, 1.0]
    assert always_zero["balanced"] == 0.5 and always_zero["balanced_se"] == 0.0


def test_sample_balanced_is_seeded_and_balanced():
    d = make_toy("spirals", 3, 100, 10)
    x1, y1 = sample_balanced(d, 50, seed=1)
    x2, _ = sample_balanced(d, 50, seed=1)
    assert np.bincount(y1).tolist() == [50, 50, 50] and np.array_equal(x1, x2)


def test_densities_need_gaussian():
    with pytest.raises(ValueError, match=r"data.kind must be one of \['gaussian'\], got 'rings'"):
        class_log_densities(make_toy("rings", 2, 10, 1), np.zeros((1, 2)))


@pytest.mark.parametrize("seed", range(5))
def test_la_beats_ce_and_approaches_bayes_balanced_on_default_toy(seed):
    """Default toy problem (5 Gaussian classes, n_max 500, rho 100), five draws. Measured (notebook 02, 20,000
    evaluation points per class) on a 2-core AMD
    EPYC (the same digits under AVX-512 and the generic kernels: full-batch training of a linear model):
    balanced error CE 0.237-0.278, LA 0.148-0.158, post-hoc LA 0.149-0.164, Bayes-balanced 0.140. Every
    draw must show LA and post-hoc LA 5 points below CE and LA within 3 points of Bayes (measured: 1.8 at
    most)."""
    d = make_toy("gaussian", 5, 500, 100, seed=seed)
    err = {}
    for method in ("ce", "la", "posthoc-la"):
        model, _ = train_logit_method(method, d, tau=1.0, seed=seed)
        err[method] = monte_carlo_errors(lambda x: predict(model, x), d)["balanced"]
    bayes = monte_carlo_errors(lambda x: bayes_predict(d, x), d)["balanced"]
    assert err["la"] < err["ce"] - 0.05
    assert err["posthoc-la"] < err["ce"] - 0.05
    assert bayes <= err["la"] < bayes + 0.03
