"""The embedding experiments behind notebooks 03-05: the premise and the measured effect."""
import numpy as np
import pytest

import elm_lite as el
from elm_lite import methods
from elm_lite.experiments import compare, run_summary, summarize, train_embedding_model
from elm_lite.recipes import EMBEDDING_RECIPE, EMBEDDING_TOY


@pytest.fixture(scope="module")
def toy():
    return el.make_toy(**EMBEDDING_TOY)


@pytest.fixture(scope="module")
def la_run(toy):
    return train_embedding_model(toy, methods.get("la"), seed=0)


def test_premise_tail_test_embeddings_are_diffuse_under_la(toy, la_run):
    """Measured (seed 0, 2-core CPU): few-shot test spread about 0.38 vs 0.08 for the head,
    while the tail's *training* embeddings are tight (memorised)."""
    s = run_summary(la_run, toy.counts)
    assert s["spread_few"] > 2.5 * s["spread_many"]
    assert s["train_spread_few"] < 0.5 * s["spread_few"]


def test_embedding_margin_term_tightens_the_tail_without_hurting_balanced_accuracy(toy, la_run):
    """Measured (seed 0): few-shot spread 0.378 -> 0.090, balanced accuracy 76.4 % -> 84.7 %.
    Tolerance: balanced accuracy may not drop by more than 3 points."""
    elm = train_embedding_model(toy, methods.get("elm"), seed=0)
    la, ours = run_summary(la_run, toy.counts), run_summary(elm, toy.counts)
    assert ours["spread_few"] < 0.5 * la["spread_few"]
    assert ours["balanced_accuracy"] > la["balanced_accuracy"] - 0.03


def test_compare_returns_one_finite_row_per_method_and_seed():
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 60, "rho": 10})
    rows = compare(methods.by_label(("ce", "elm")), data, seeds=(0, 1), epochs=2)
    assert [(r["method"], r["seed"]) for r in rows] == [("CE", 0), ("CE", 1), ("ELM", 0), ("ELM", 1)]
    for r in rows:
        assert np.isfinite(r["balanced_accuracy"]) and np.isfinite(r["spread_few"])
    table = summarize(rows)
    assert "CE" in table and "ELM" in table and "±" in table


def test_snapshots_for_animation():
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 60, "rho": 10})
    run = train_embedding_model(data, methods.get("la"), epochs=4, snapshot_every=2, snapshot_points=5)
    assert [e for e, _ in run.snapshots] == [1, 2, 4]
    assert run.snapshots[0][1].shape == (5 * data.n_classes, EMBEDDING_RECIPE["embed_dim"])


def test_embedding_figure_projects_to_two_or_three_dimensions():
    from elm_lite import plots
    z, y = np.random.default_rng(0).normal(size=(40, 8)), np.repeat(np.arange(4), 10)
    flat = plots.embedding_figure(z, y, [10] * 4, dims=2)
    assert flat.data[0].type == "scatter" and "2 principal directions" in flat.layout.title.text
    assert plots.embedding_figure(z, y, [10] * 4).data[0].type == "scatter3d"
    assert plots.embedding_figure(z[:, :2], y, [10] * 4).data[0].type == "scatter"


def test_compare_resumes_from_finished_rows():
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 60, "rho": 10})
    two = methods.by_label(("ce", "la"))
    saved = []
    rows = compare(two, data, seeds=(0,), on_row=lambda r: saved.append(len(r)), epochs=2,
                   train=train_embedding_model)
    assert saved == [1, 2]
    marker = {**rows[0], "balanced_accuracy": -1.0}  # a finished row is reused, not retrained
    again = compare(two, data, seeds=(0,), done=[marker], epochs=2)
    assert again[0]["balanced_accuracy"] == -1.0
    assert again[1]["balanced_accuracy"] == pytest.approx(rows[1]["balanced_accuracy"], abs=2e-3)


def test_toy_runs_trained_together_equal_runs_trained_one_by_one():
    """compare's default trains all runs at once (elm_lite.many); each row matches the same run
    trained alone. Metrics are compared at 2e-3: float32 rounding may flip a borderline test point."""
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 60, "rho": 10})
    chosen = methods.by_label(("la", "supcon-la", "elm", "ldam-drw"))
    together = compare(chosen, data, seeds=(0, 1), epochs=3)
    alone = compare(chosen, data, seeds=(0, 1), epochs=3, train=train_embedding_model)
    for a, b in zip(together, alone):
        assert (a["method"], a["seed"]) == (b["method"], b["seed"])
        for key in ("balanced_accuracy", "spread_few", "train_margin_few"):
            assert a[key] == pytest.approx(b[key], abs=2e-3), (a["method"], a["seed"], key)
