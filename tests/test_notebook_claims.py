"""What the notebooks' reveals say in words, checked against what the notebooks compute with their
defaults (same data, seeds and recipe): a reveal may not claim a ranking the code does not show."""
import numpy as np
import pytest

import elm_lite as el
from elm_lite import methods
from elm_lite.experiments import compare
from elm_lite.recipes import EMBEDDING_RECIPE, EMBEDDING_TOY
from elm_lite.widgets import logit_margin_view


def _means(rows, column):
    out = {}
    for r in rows:
        out.setdefault(r["method"], []).append(r[column])
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.fixture(scope="module")
def toy_comparison():
    """Notebook 05, section 3 (and notebook 03, section 4): every method on the embedding toy, seeds 0-2."""
    data = el.make_toy(**EMBEDDING_TOY, seed=0)
    return compare(methods.by_label((*methods.COMPARISON, *methods.BASELINES)), data, seeds=(0, 1, 2))


def test_notebook_05_reveal_ranking(toy_comparison):
    acc, spread = _means(toy_comparison, "balanced_accuracy"), _means(toy_comparison, "spread_few")
    margin = _means(toy_comparison, "margin_few")
    label = {name: methods.get(name).label for name in (*methods.COMPARISON, *methods.BASELINES)}
    assert acc[label["ce"]] == min(acc.values()) and acc[label["elm"]] == max(acc.values())
    assert acc[label["la"]] > acc[label["ce"]] + 0.05
    assert acc[label["reweight-inverse"]] > acc[label["la"]] and acc[label["cb-sampling"]] > acc[label["la"]]
    for name in ("crt", "tau-norm"):
        assert acc[label["ce"]] < acc[label[name]] < acc[label["la"]]
    assert spread[label["elm"]] > spread[label["supcon-la"]] and margin[label["elm"]] > margin[label["supcon-la"]]
    assert min(spread[label["elm"]], spread[label["supcon-la"]]) == min(spread.values())
    # section 5: the contrastive term makes the tail's spread about four times smaller, accuracy ~5 points higher
    assert 3.5 < spread[label["la"]] / spread[label["supcon-la"]] < 5.5
    assert 0.04 < acc[label["supcon-la"]] - acc[label["la"]] < 0.065


def test_notebook_03_decoupling_keeps_ce_representation(toy_comparison):
    """Notebook 03, section 4: cRT and tau-norm recover most of LA's gain over CE and leave CE's tail
    spread exactly as it was."""
    spread = _means(toy_comparison, "spread_few")
    ce = spread[methods.get("ce").label]
    assert spread[methods.get("crt").label] == pytest.approx(ce, abs=1e-9)
    assert spread[methods.get("tau-norm").label] == pytest.approx(ce, abs=1e-9)
    acc = _means(toy_comparison, "balanced_accuracy")
    gain = acc[methods.get("la").label] - acc[methods.get("ce").label]
    for name in ("crt", "tau-norm"):  # "recovers most of what LA gains over CE"
        assert acc[methods.get(name).label] - acc[methods.get("ce").label] > 0.5 * gain


def test_notebook_02_logit_margins_reveal():
    """Notebook 02, section 3: LA and post-hoc LA within 1.5 points of Bayes-balanced, far below CE; LDAM
    helps less than LA, LDAM-DRW about as much; equal-margin hinge no better than CE; n^-1/4 hinge partway."""
    common = dict(rho=100, n_max=500, seed=0, epochs=100, n_eval=20000, n_classes=5)
    views = {m: logit_margin_view(m, tau=1.0, **common) for m in methods.LOGIT_MARGIN_METHODS}
    err = {m: v.errors["balanced"] for m, v in views.items()}
    bayes = views["ce"].bayes["balanced"]
    assert err["la"] - bayes < 0.015 and err["posthoc-la"] - bayes < 0.015 and err["ce"] - err["la"] > 0.05
    assert err["ldam"] > err["la"] + 0.02 and abs(err["ldam-drw"] - err["la"]) < 0.01
    assert err["hinge-equal"] > err["ce"] - 0.005
    assert err["la"] + 0.02 < err["hinge-n14"] < err["ce"] - 0.02


def test_notebook_02_baselines_reveal():
    """Notebook 02, section 5: re-weighting and re-sampling close most of CE's gap but stop short of LA,
    with the rarest class behind; tau-norm is about level with LA; cRT does worse than re-weighting."""
    common = dict(rho=100, n_max=500, seed=0, epochs=100, n_eval=20000, n_classes=5)
    err = {m: logit_margin_view(m, tau=1.0, **common).errors for m in ("ce", "la", *methods.BASELINES)}
    for m in ("reweight-inverse", "reweight-effective", "cb-sampling"):
        assert err["la"]["balanced"] < err[m]["balanced"] < err["ce"]["balanced"]
        assert err["ce"]["balanced"] - err[m]["balanced"] > 0.5 * (err["ce"]["balanced"] - err["la"]["balanced"])
        assert err[m]["per_class"][-1] > err["la"]["per_class"][-1] + 0.05      # the rarest class behind
    assert abs(err["tau-norm"]["balanced"] - err["la"]["balanced"]) < 0.01
    assert err["crt"]["balanced"] > err["reweight-inverse"]["balanced"]


def test_notebook_04_margin_reveal():
    """Notebook 04, section 3: the positive form changes nothing beyond noise; the centroid form's
    training margin grows with delta_max while the tail's spread does not fall."""
    data = el.make_toy(**EMBEDDING_TOY, seed=0)
    elm = methods.get("elm")
    table = {f"{form} {d:g}": elm.variant(f"{form} {d:g}", placement=form, delta_max=d)
             for form in ("positive", "centroid") for d in (0.0, 0.25, 0.5, 1.0)}
    rows = compare(table, data, seeds=(0, 1, 2), **EMBEDDING_RECIPE)
    train_margin, spread = _means(rows, "train_margin_few"), _means(rows, "spread_few")
    acc = _means(rows, "balanced_accuracy")
    centroid = [train_margin[f"centroid {d:g}"] for d in (0.0, 0.25, 0.5, 1.0)]
    assert all(b > a + 0.05 for a, b in zip(centroid, centroid[1:]))
    assert spread["centroid 1"] >= spread["centroid 0"]
    positive = [acc[f"positive {d:g}"] for d in (0.0, 0.25, 0.5, 1.0)]
    assert max(positive) - min(positive) < 0.02


def test_notebook_06_offline_run_teaches_something():
    """Notebook 06 without CIFAR (its defaults on a CPU: small CNN, 3 epochs, generated images with
    overlapping classes): some classes are neither 0 % nor 100 % right, and every class has a spread."""
    from elm_lite.fullscale import train_cifar
    arrays = el.data.fake_cifar(10, n_per_class=100, n_test_per_class=50, noise=50.0, overlap=0.4)
    data = el.data.load_cifar_lt("cifar10", 10, arrays=arrays)
    results = train_cifar(data, "la", progress=False, model="small_cnn", epochs=3)
    accuracy = np.asarray(results["per_class_accuracy"])
    assert ((accuracy > 0.02) & (accuracy < 0.98)).sum() >= 2
    assert np.all(np.asarray(results["per_class_spread"]) > 0)
