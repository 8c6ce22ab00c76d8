"""The capstone (notebook 07): its statistics against hand-computed cases, its real-image table against
the shipped files, and what its reveals and recommendation say, checked against what it computes with
its defaults (seed 0, 5 seeds, 30 epochs) -- as margins over seeds, not single runs."""
import numpy as np
import pytest

import elm_lite as el
from elm_lite import capstone, methods
from elm_lite.recipes import EMBEDDING_TOY
from elm_lite.results import load_results

pytestmark = pytest.mark.outcome   # trains and compares: CI runs it again under another arithmetic

SEEDS = (0, 1, 2, 3, 4)
LABEL = {name: methods.get(name).label for name in methods.METHODS}


def test_interval_matches_the_t_table():
    # n = 2: t(0.975, 1 dof) = 12.706; values 1 and 3: mean 2, sample sd sqrt(2), half-width 12.706
    s = capstone.interval([1.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == pytest.approx(np.sqrt(2)) and s["n"] == 2
    assert s["half"] == pytest.approx(12.7062, abs=1e-3)
    # n = 5, 90 %: t(0.95, 4 dof) = 2.1318
    v = [0.70, 0.80, 0.75, 0.72, 0.78]
    s = capstone.interval(v, 0.90)
    assert s["half"] == pytest.approx(2.1318 * np.std(v, ddof=1) / np.sqrt(5), rel=1e-4)
    assert np.isnan(capstone.interval([0.5, np.nan])["sd"]) and capstone.interval([0.5, np.nan])["n"] == 1


def test_interval_refuses_a_bad_confidence():
    with pytest.raises(ValueError, match="confidence must be in"):
        capstone.interval([1.0, 2.0], confidence=95)


def test_paired_difference_pairs_by_seed():
    rows = [{"method": "a", "seed": s, "x": v} for s, v in ((0, 1.0), (1, 2.0), (2, 4.0))]
    rows += [{"method": "b", "seed": s, "x": v} for s, v in ((2, 1.0), (0, 0.0), (1, 1.0))]
    d = capstone.paired_difference(rows, "a", "b", "x")
    assert d["mean"] == pytest.approx(5 / 3) and d["n"] == 3
    with pytest.raises(ValueError, match="no seed has both"):
        capstone.paired_difference(rows, "a", "c", "x")


def test_real_image_rows_are_the_shipped_files():
    rows = capstone.real_image_rows()
    cpu, gpu120, gpu200 = rows.values()
    shipped = load_results("cifar10_lt_cpu.json")
    la = [r["balanced_accuracy"] for r in shipped["rows"] if r["method"] == "LA"]
    assert sorted(r["balanced_accuracy"] for r in cpu if r["method"] == LABEL["la"]) == sorted(la)
    # the ELM rows of the files trained before the margin study have the margin on the positives
    assert {r["method"] for r in cpu + gpu120} >= {LABEL["elm-positive"]} and LABEL["elm"] not in {
        r["method"] for r in cpu + gpu120}
    assert len(gpu200) == len(load_results("cifar10_lt_gpu_table_200ep.json")["runs"])
    table = capstone.real_image_table()
    assert table.count("not run:") == 3 and "unfinished: ELM" in table
    assert all(np.isnan(r["acc_few"]) for r in cpu + gpu120 + gpu200)  # CIFAR-10-LT has no few split
    assert load_results("cifar_lt_gpu.json")["runs"][0]["counts"][-2:] == [83, 50]  # section 3: its rarest two


def _by(rows, column="balanced_accuracy"):
    out = {}
    for r in rows:
        out.setdefault(r["method"], []).append(r[column])
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.fixture(scope="module")
def toy():
    data = el.make_toy(**EMBEDDING_TOY, seed=0)
    rows, _ = capstone.toy_runs(data, capstone.CAPSTONE_METHODS, SEEDS)
    return rows


def test_capstone_toy_reveal(toy):
    """Section 2: ELM on top (balanced, few-shot, validation), ahead of LA beyond its paired interval;
    post-hoc LA and Balanced Softmax level with LA; re-weighting ahead of LA beyond its interval,
    class-balanced sampling ahead on average; decoupling recovers much of LA's gain over CE, not more."""
    acc, few, val = _by(toy), _by(toy, "acc_few"), _by(toy, "val_balanced_accuracy")
    assert max(acc, key=acc.get) == max(few, key=few.get) == max(val, key=val.get) == LABEL["elm"]
    diff = {n: capstone.paired_difference(toy, LABEL[n], LABEL["la"]) for n in capstone.CAPSTONE_METHODS}
    assert diff["elm"]["mean"] - diff["elm"]["half"] > 0.03
    for name in ("posthoc-la", "balanced-softmax"):
        assert abs(diff[name]["mean"]) < 0.01 and abs(diff[name]["mean"]) < diff[name]["half"]
    assert diff["reweight-inverse"]["mean"] - diff["reweight-inverse"]["half"] > 0
    assert diff["cb-sampling"]["mean"] > 0.01
    for name in ("supcon-la", "ldam-drw"):  # "follow": below ELM, above LA
        assert acc[LABEL["la"]] + 0.03 < acc[LABEL[name]] < acc[LABEL["elm"]] - 0.02
    gain = acc[LABEL["la"]] - acc[LABEL["ce"]]
    for name in ("crt", "tau-norm"):
        assert 0.5 * gain < acc[LABEL[name]] - acc[LABEL["ce"]] < gain + 0.01


def test_capstone_real_image_reading():
    """Section 3 and the recommendation: LA far above CE in every setting; on the CPU no mean above LA's,
    both embedding-term methods below it on both seeds; at 120 epochs first-form ELM level with LA
    (within a point) at more than 1.5 times its time per run."""
    cpu, gpu120, gpu200 = capstone.real_image_rows().values()
    for rows in (cpu, gpu120, gpu200):
        acc = _by(rows)
        assert acc[LABEL["la"]] > acc[LABEL["ce"]] + 0.05
    acc = _by(cpu)
    assert max(acc, key=acc.get) == LABEL["la"]
    for name in ("supcon-la", "elm-positive"):
        assert capstone.paired_difference(cpu, LABEL[name], LABEL["la"])["n"] == 2
        by_seed = {(r["method"], r["seed"]): r["balanced_accuracy"] for r in cpu}
        assert all(by_seed[(LABEL[name], s)] < by_seed[(LABEL["la"], s)] for s in (0, 1))
    acc, cost = _by(gpu120), _by(gpu120, "seconds")
    assert abs(acc[LABEL["elm-positive"]] - acc[LABEL["la"]]) < 0.01
    assert cost[LABEL["elm-positive"]] > 1.5 * cost[LABEL["la"]]


def test_capstone_reweighting_verdicts(toy):
    """Section 4: re-weighting minus LA is below zero on notebook 02's problem (linear model, and the MLP),
    above zero on notebook 05's (rarest class 5 examples in 16-D); with 20 examples (rho 25) its interval
    contains zero; CE fits its training set about equally in notebooks 02 and 05."""
    three = ("ce", "la", "reweight-inverse")
    nb02 = el.make_toy("gaussian", 5, 500, 100, seed=0)
    linear = capstone.logit_toy_rows(nb02, three, SEEDS)
    mlp02 = capstone.toy_runs(nb02, three, SEEDS)[0]
    rho25 = capstone.toy_runs(el.make_toy(**{**EMBEDDING_TOY, "rho": 25}, seed=0), three, SEEDS)[0]
    rw, la = LABEL["reweight-inverse"], LABEL["la"]
    d_linear, d_mlp02 = capstone.paired_difference(linear, rw, la), capstone.paired_difference(mlp02, rw, la)
    d05, d25 = capstone.paired_difference(toy, rw, la), capstone.paired_difference(rho25, rw, la)
    assert d_linear["mean"] + d_linear["half"] < 0 and d_mlp02["mean"] < 0
    assert d05["mean"] - d05["half"] > 0
    assert abs(d25["mean"]) < d25["half"] and d25["mean"] < d05["mean"] - 0.02
    fit02, fit05 = (_by(rows, "train_balanced_accuracy")[LABEL["ce"]] for rows in (linear, toy))
    assert abs(fit02 - fit05) < 0.05


def test_capstone_focal_and_weight_balancing(toy):
    """Section 2, what practitioners also reach for. Measured (seeds 0-4, 2-core AMD EPYC): focal loss
    0.679 ± 0.040, minus LA -0.062 [-0.088, -0.036], minus CE +0.035 [+0.012, +0.058]; weight balancing
    0.747 ± 0.033, minus LA +0.006 [-0.024, +0.037], minus CE +0.103. Held: focal below LA beyond its
    paired interval and above CE on average; weight balancing level with LA (its interval holds zero)
    and more than 5 points above CE."""
    focal_la = capstone.paired_difference(toy, LABEL["focal"], LABEL["la"])
    assert focal_la["mean"] + focal_la["half"] < 0
    assert capstone.paired_difference(toy, LABEL["focal"], LABEL["ce"])["mean"] > 0.01
    wb_la = capstone.paired_difference(toy, LABEL["weight-balancing"], LABEL["la"])
    assert abs(wb_la["mean"]) < wb_la["half"]
    assert capstone.paired_difference(toy, LABEL["weight-balancing"], LABEL["ce"])["mean"] > 0.05


def test_capstone_calibration_reading(toy):
    """Section 2's calibration table (ECE, 15 bins, balanced test set; temperature fitted on the validation
    sample). Measured means over seeds 0-4: CE 0.181 (many 0.027, few 0.482); LA 0.071, Balanced
    Softmax 0.073, re-weighted 1/n 0.050, focal 0.101; LDAM-DRW 0.566, tau-norm 0.451, SupCon + LA 0.351,
    cRT 0.271, weight balancing 0.250, ELM 0.229, all under-confident (T 0.21-0.63); after temperature
    scaling LDAM-DRW 0.036, SupCon + LA 0.043, cRT 0.070, weight balancing 0.085, ELM 0.017 (the lowest of
    the comparison; next re-weighted 0.035), CE still 0.131; post-hoc LA 0.185 before scaling."""
    ece, scaled = _by(toy, "ece"), _by(toy, "ece_scaled")
    few, many, temperature = _by(toy, "ece_few"), _by(toy, "ece_many"), _by(toy, "temperature")
    assert ece[LABEL["ce"]] > 0.15 and few[LABEL["ce"]] > 0.35 and many[LABEL["ce"]] < 0.08
    for name in ("la", "balanced-softmax", "reweight-inverse", "focal"):      # usable as they are
        assert ece[LABEL[name]] < 0.12, name
    for name in ("ldam-drw", "tau-norm", "supcon-la", "crt", "weight-balancing", "elm"):   # under-confident
        assert ece[LABEL[name]] > 0.2 and temperature[LABEL[name]] < 0.75, name
    for name in ("ldam-drw", "supcon-la", "crt", "weight-balancing", "elm"):   # fixed by temperature scaling
        assert scaled[LABEL[name]] < 0.1, name
    compared = {LABEL[n]: scaled[LABEL[n]] for n in capstone.CALIBRATION_METHODS}
    assert min(compared, key=compared.get) == LABEL["elm"] and compared[LABEL["elm"]] < 0.04
    assert scaled[LABEL["ce"]] > 0.1                                          # a temperature does not fix a prior
    assert ece[LABEL["posthoc-la"]] > 0.15                                    # adjusted decisions, CE's confidence
    five_best = sorted(scaled, key=scaled.get)[:5]
    assert {LABEL["elm"], LABEL["supcon-la"], LABEL["ldam-drw"]} <= set(five_best), five_best
