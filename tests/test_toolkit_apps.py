"""The practitioner's toolkit (elm_lite.toolkit_apps): the deployment prior by hand, precision-recall and the
validation threshold against hand-computed cases, and what notebooks 02 and 03 say about them, over seeds."""
import numpy as np
import pytest

import elm_lite as el
from elm_lite import calibration, metrics
from elm_lite import toolkit_apps as T


def test_deployment_prior_by_hand():
    pi = np.array([0.6, 0.3, 0.1])
    np.testing.assert_allclose(T.deployment_prior(pi, 0.0), pi)
    np.testing.assert_allclose(T.deployment_prior(pi, 1.0), [1 / 3] * 3)
    inverted = (1 / pi) / (1 / pi).sum()
    np.testing.assert_allclose(T.deployment_prior(pi, 2.0), inverted)


def test_precision_recall_by_hand():
    y = np.array([1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.8, 0.3, 0.2, 0.1])
    # threshold 0.35: flags 0.9 (rare), 0.4 (rare), 0.8 (not): recall 1, false-positive rate 1/4
    precision, recall = metrics.precision_recall(y, s, 0.35)            # prior 1/3, the sample's share
    assert recall == 1.0 and precision == pytest.approx((1 / 3) / (1 / 3 + (2 / 3) / 4))
    precision, _ = metrics.precision_recall(y, s, 0.35, positive_prior=0.5)
    assert precision == pytest.approx(0.5 / (0.5 + 0.5 / 4))
    assert np.isnan(metrics.precision_recall(y, s, 0.95)[0])
    with pytest.raises(ValueError, match="positive_prior"):
        metrics.precision_recall(y, s, 0.5, positive_prior=1.0)


def test_choose_threshold_takes_the_best_f1_on_validation():
    y = np.array([1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.8, 0.3, 0.2, 0.1])
    # candidates: 0.9 -> P 1, R 0.5, F1 2/3; 0.4 -> P 2/3, R 1, F1 0.8; 0.8 -> P 1/2, R 1/2; lower -> worse
    assert calibration.choose_threshold(y, s, 1 / 3) == 0.4


@pytest.mark.outcome
@pytest.mark.parametrize("seed", range(5))
def test_notebook_02_deployment_prior_reading(seed):
    """Notebook 02's reveal, on its default problem (5 classes, n_max 500, rho 100, linear CE, 5000 points per
    class). Measured, seeds 0-4 (2-core AMD EPYC): under the training prior (shift 0) CE 0.079-0.085 vs
    adjusted-to-uniform 0.128-0.168; inverted (shift 2) CE 0.460-0.576, uniform 0.122-0.151, adjusted to the
    prior 0.097-0.141 (0.009-0.054 below uniform), Bayes 0.080-0.084; the adjusted rule at most 0.059 above
    Bayes at any of the shifts -0.5, 0, 1, 2."""
    d = el.make_toy("gaussian", 5, 500, 100, seed=seed)
    base = T.prior_shift_base(d, seed=seed)
    e = {s: T.prior_errors(base, s) for s in (-0.5, 0.0, 1.0, 2.0)}
    ce, uniform, adjusted, bayes = T.RULES
    assert e[0.0][ce] < e[0.0][uniform] - 0.03
    assert e[2.0][adjusted] < e[2.0][uniform] < e[2.0][ce] - 0.25
    for s, errors in e.items():
        assert errors[bayes] - 0.005 <= errors[adjusted] < errors[bayes] + 0.08, s


@pytest.mark.outcome
@pytest.mark.parametrize("seed", range(3))
def test_notebook_02_binary_threshold_reading(seed):
    """Notebook 02's binary case (two Gaussian classes, separation 1, rho 50, linear CE; deployed like training).
    Measured, seeds 0-2: the F1-best threshold on validation 0.109-0.124; on the test sample recall 0.49-0.55
    against 0.12-0.17 at 0.5, precision 0.27-0.29 against 0.65-0.75, F1 0.353-0.371 against 0.206-0.267."""
    b = el.make_toy("gaussian", 2, 1000, 50, separation=1.0, seed=seed)
    scores, prior = T.binary_scores(b, seed=seed), float(b.prior[1])
    threshold = calibration.choose_threshold(scores["val"][1], scores["val"][0], prior)
    (p1, r1), (p0, r0) = (metrics.precision_recall(scores["test"][1], scores["test"][0], t, prior)
                          for t in (threshold, 0.5))
    assert threshold < 0.3 and r1 > 2 * r0 and p1 < p0
    assert 2 * p1 * r1 / (p1 + r1) > 2 * p0 * r0 / (p0 + r0) + 0.05


@pytest.mark.outcome
def test_notebook_03_weight_norm_reading():
    """Notebook 03's reveal (EMBEDDING_TOY, seed 0, the toy recipe): CE's tail / head weight norm about one
    half (measured 0.55), falling with weight decay (0.04 at 3e-2); after weight balancing's classifier stage
    the norms sit at the cap (ratio 1.00 at weight decay 0)."""
    grid = T.weight_norm_grid(el.make_toy(**el.recipes.EMBEDDING_TOY, seed=0), weight_decays=(0.0, 1e-2, 3e-2))
    ratio = {wd: v.norms[-1] / v.norms[0] for wd, v in grid.items()}
    assert 0.35 < ratio[0.0] < 0.75 and ratio[3e-2] < ratio[1e-2] < ratio[0.0]
    v = grid[0.0]
    assert v.balanced_norms[-1] / v.balanced_norms[0] > 0.9
    assert np.allclose(v.balanced_norms, el.recipes.WEIGHT_BALANCING["max_norm"], atol=0.05)


def test_the_apps_have_kernel_free_versions_for_the_site():
    """static_apps steps each app's own callback through its site grid: six states each."""
    from elm_lite import static_apps
    base = T.prior_shift_base(el.make_toy("gaussian", 5, 200, 100, seed=0), epochs=30, n_eval=300)
    grid = T.weight_norm_grid(el.make_toy(**{**el.recipes.EMBEDDING_TOY, "n_max": 100, "rho": 20}), epochs=3)
    for app, states in ((T.prior_shift_app(1.0, base=base), T.PRIOR_SHIFT_GRID),
                        (T.weight_norm_app(0.0, grid=grid), T.WEIGHT_NORM_GRID)):
        assert "6 states" in static_apps.static_app(app, states)
