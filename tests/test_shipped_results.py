"""The measured results shipped in elm_lite/measured/ are complete and say what the docs say they say."""
import numpy as np
import pytest

from elm_lite.engine.fullscale import summarize_runs
from elm_lite.engine.ladder import ladder_table
from elm_lite.results import load_results


@pytest.fixture(scope="module")
def gpu():
    return load_results("cifar_lt_gpu.json")


def _mean(runs, method, key=lambda r: r["balanced_accuracy"]):
    values = [key(r) for r in runs if r["method"] == method]
    assert values, f"no {method} run shipped"
    return float(np.mean(values))


def test_gpu_runs_are_complete_and_use_the_standard_construction(gpu):
    assert "H200" in gpu["hardware"]
    for r in gpu["runs"]:
        assert r["dataset"] == "cifar10" and r["rho"] == 100 and sum(r["counts"]) == 12406
        assert r["recipe"]["model"] == "resnet32" and r["compile"] and r["bf16"]
        assert len(r["per_class_accuracy"]) == len(r["per_class_spread"]) == 10
        assert len(r["history"]["epoch"]) == r["recipe"]["epochs"] == 120  # as notebook 06 and the README say
    assert sorted((r["method"], r["seed"]) for r in gpu["runs"]) == [("ce", 0), ("elm-positive", 0), ("la", 0),
                                                                   ("la", 1)]
    assert sorted(line.split()[2] for line in summarize_runs(gpu["runs"]).splitlines()[1:4]) == [
        "ce", "elm-positive", "la"]


def test_gpu_results_match_the_prose(gpu):
    """Notebook 06 and the README: LA beats CE by about 7 points; ELM is within a point of LA; ELM's
    medium-split (tail) spread is higher than LA's."""
    runs = gpu["runs"]
    ce, la, elm = (_mean(runs, method) for method in ("ce", "la", "elm-positive"))
    assert 0.06 < la - ce < 0.09
    assert abs(elm - la) < 0.01
    # notebook 06's first reveal: the medium split (CIFAR-10-LT's tail) gains > 20 points from LA
    assert _mean(runs, "la", lambda r: r["shot_accuracy"]["medium"]) - _mean(
        runs, "ce", lambda r: r["shot_accuracy"]["medium"]) > 0.20
    tail = lambda r: r["spread"]["medium"]  # noqa: E731 -- CIFAR-10-LT's few split is empty
    assert _mean(runs, "elm-positive", tail) > _mean(runs, "la", tail)


def test_gpu_ladder_has_every_rung_with_times(gpu):
    rows = gpu["ladder"]["rows"]
    assert [r["rung"].split()[0] for r in rows] == ["DataLoader,", "GPU-resident", "+", "ELM", "+", "ELM"]
    assert all(r["steady_s_per_epoch"] > 0 and r["run_s"] > r["first_epoch_s"] for r in rows)
    compiled = {r["rung"]: r for r in rows if "measured_run" in r}
    assert len(compiled) == 2 and "measured" in ladder_table(gpu["ladder"])


def test_gpu_embedding_samples(gpu):
    sample = load_results("cifar_lt_gpu_embeddings.npz")
    for method in ("ce", "la", "elm-positive"):
        z, y = sample[f"{method}_features"], sample[f"{method}_labels"]
        assert z.shape == (1000, 64) and np.bincount(y).tolist() == [100] * 10


def test_200_epoch_table_matches_the_readme():
    """The README's 200-epoch CE / LA numbers are the shipped runs' mean and std over seeds."""
    import re
    from pathlib import Path
    table = load_results("cifar10_lt_gpu_table_200ep.json")
    assert table["epochs"] == 200 and "H200" in table["hardware"]
    expected = [(method, s) for method in ("ce", "la") for s in range(3)]
    assert sorted((r["method"], r["seed"]) for r in table["runs"]) == expected
    assert set(table["unfinished"]) == {"ldam-drw", "supcon-la", "elm"}
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    for method, label in (("ce", "CE"), ("la", "LA")):
        acc = np.array([r["balanced_accuracy"] for r in table["runs"] if r["method"] == method]) * 100
        assert f"{label} {acc.mean():.1f} ± {acc.std(ddof=1):.1f} %" in readme
    assert f"took {table['table_wall_seconds']:.0f} s in one network" in readme
    assert "epoch 185 of 200" in table["unfinished"]["supcon-la"] and "stopped at epoch 185 of 200" in readme
    solo = table["solo_baseline"]
    assert re.search(rf"about {solo['estimated_200_epoch_run_s']:.0f} s for 200 epochs\s+\(first epoch "
                     rf"{solo['first_epoch_s']:.1f} s \+ 199 x {solo['steady_s_per_epoch']:.3f} s", readme)


def test_margin_study_doc_quotes_only_intervals_the_study_computed():
    """docs/margin_study.md part 2: every "x [low, high]" it quotes is an effect or a level in the
    shipped study file, and the file holds what the plan promised (6 seeds, 5 forms, 2 regimes)."""
    import pathlib
    import re

    study = load_results("margin_study.json")
    assert study["seeds"] == [0, 1, 2, 3, 4, 5] and study["deltas"] == [0.0, 0.25, 0.5, 1.0]
    assert {"positive", "negative", "outside", "hinge", "centroid"} <= set(study["forms"])
    known = set()
    for regime in study["regimes"].values():
        assert len(regime["rows"]) == len(study["seeds"]) * (len(study["forms"]) * 4 + len(study["references"]))
        for by_delta in regime["effects"].values():
            known |= {f"{e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"
                      for by_measure in by_delta.values() for e in by_measure.values()}
        known |= {f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"
                  for by_measure in regime["levels"].values() for e in by_measure.values()}
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "margin_study.md").read_text()
    quoted = re.findall(r"[+-]?\d\.\d{3} \[[+-]?\d\.\d{3}, [+-]?\d\.\d{3}\]", text.split("## Part 2")[1])
    assert len(quoted) > 40
    assert [q for q in quoted if q not in known] == []


def test_real_image_tail_is_not_diffuse_as_notebook_03_says(gpu):
    """Notebook 03, section 6: under CE and LA the two rarest classes' feature spread is below 1.2x
    the two largest classes' (the toy problem's ratio is several-fold)."""
    for r in gpu["runs"]:
        if r["method"] in ("ce", "la"):
            spread = np.asarray(r["per_class_spread"])
            assert spread[-2:].mean() / spread[:2].mean() < 1.2, (r["method"], r["seed"])


def test_shipped_runs_carry_their_schema_version(gpu):
    """Every shipped run says which results schema it was written in, and reads as one."""
    from elm_lite.results import SCHEMA_VERSION, check_run_results
    for r in gpu["runs"]:
        assert 1 <= r["schema_version"] <= SCHEMA_VERSION
        check_run_results(r)


def test_notebook_05_quotes_only_numbers_of_the_shipped_cpu_runs():
    """Notebook 05, section 4: every percentage and spread its prose quotes is a per-run value or a
    per-method mean / std (over seeds) of the shipped CPU comparison files (or, for the full-scale
    sentence, of the shipped GPU runs)."""
    import pathlib
    import re

    import nbformat
    known = set()
    for name in ("cifar10_lt_cpu.json", "cifar10_lt_cpu_elm_variants.json"):
        rows = load_results(name)["rows"]
        for method in {r["method"] for r in rows}:
            mine = [r for r in rows if r["method"] == method]
            for key, fmt in (("balanced_accuracy", "pct"), ("acc_medium", "pct"), ("spread_medium", "spread")):
                values = np.array([r[key] for r in mine], dtype=float)
                for v in (*values, values.mean(), values.std(ddof=1) if len(values) > 1 else values.mean()):
                    known.add(f"{100 * v:.1f}" if fmt == "pct" else f"{v:.3f}")
    gpu_runs = load_results("cifar_lt_gpu.json")["runs"]
    known |= {f"{100 * _mean(gpu_runs, method):.1f}" for method in {r["method"] for r in gpu_runs}}
    nb = nbformat.read(pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "05_elm.ipynb", as_version=4)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown" and "CPU-sized" in c.source
                      or c.cell_type == "markdown" and "none of the variants wins" in c.source)
    quoted = (re.findall(r"(\d+\.\d) ?%", prose) + re.findall(r"± (\d\.\d)", prose)
              + re.findall(r"\b(0\.\d{3})\b", prose))
    assert len(quoted) >= 15
    assert [q for q in quoted if q not in known] == []


SHIPPED_RUNS = {"cifar_lt_gpu.json": "runs", "cifar10_lt_gpu_table_200ep.json": "runs", "cifar10_lt_cpu.json": "rows",
                "cifar10_lt_cpu_elm_variants.json": "rows"}


@pytest.mark.parametrize("name", SHIPPED_RUNS)
def test_every_shipped_run_records_its_methods_constants(name):
    """Each run names what it trained in full (tools/migrate_results.py for the files written before):
    the registry name, the loss and every constant -- for an embedding term its placement and averaging --
    and, for a registered method, exactly the registry's constants, so tables label runs from them."""
    from elm_lite import methods
    f = load_results(name)
    for run in f[SHIPPED_RUNS[name]]:
        identity = run["method_identity"]
        registered = methods.get(identity["method"])
        # a margin-study variant (studies/margin_form_losses.py) trains the registered loss's Study subclass
        assert identity["loss"] in (registered.loss.__name__, f"Study{registered.loss.__name__}")
        assert identity["views"] == registered.views
        if identity["loss"] in ("ELMLoss", "StudyELMLoss"):
            assert {"placement", "anchor_average", "delta_max", "temperature", "lam", "tau"} <= set(
                identity["constants"])
        if SHIPPED_RUNS[name] == "runs":                                    # full-scale results
            assert run["method"] == identity["method"]
            assert identity["constants"] == dict(registered.constants)
    if any(r["method_identity"]["method"] == "elm-positive" for r in f[SHIPPED_RUNS[name]]):
        assert "margin on the positives" in f["migrated"]
    assert not any(r.get("method") == "elm" for r in f[SHIPPED_RUNS[name]])   # no first-form run named as today's
