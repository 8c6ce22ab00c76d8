"""The precomputed sweeps behind the workshop dashboard (``notebooks/workshop.ipynb``): the course's
story in five panels -- long-tailed data, logit margins, the embedding term on the toy, the methods on the
toy, real data (the shipped CIFAR-10-LT CNN rows and the two laptop rungs, :func:`real_panel`) --, each a
grid of trained models or shipped results, so that every slider move only looks up a result. :func:`sweeps`
computes them (about 15 s on 2 cores, runs trained together where they can be);
``tools/make_workshop_data.py`` ships them as ``elm_lite/measured/workshop_sweeps.npz``, and
``tests/test_workshop.py`` checks the shipped file against a fresh computation.
"""
from __future__ import annotations

import numpy as np

from . import methods, metrics
from .data import bayes_predict, make_toy, monte_carlo_errors
from .experiments import paired_differences, run_summary, train_embedding_models, train_logit_method
from .plots import decision_grid
from .recipes import EMBEDDING_TOY, TOY_2D, TOY_2D_N_EVAL
from .results import load_results
from .train import predict

RHOS = (1, 10, 100)                      # panel 1: imbalance ratios (plain CE)
TAUS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)    # panel 2: logit-adjustment strengths (rho = 100)
LAMS = (0.0, 0.25, 0.5, 1.0, 2.0)        # panel 3: weight of the embedding term (ELM)
PANEL4_METHODS = ("ce", "la", "reweight-inverse", "ldam-drw", "supcon-la", "elm")
PANEL4_MEASURES = ("balanced_accuracy", "acc_few", "spread_few", "margin_few")
SEEDS = (0, 1, 2, 3, 4)                  # panels 3-4: every run of the toy embedding problem, these training seeds
GRID = 100                               # panel 2: decision regions on a GRID x GRID raster


def _logit_panels(seed: int) -> dict[str, np.ndarray]:
    """Panels 1-2 on the 2-D Gaussian toy problem."""
    out = {"rhos": np.array(RHOS, float), "taus": np.array(TAUS)}
    per_class, counts = [], []
    for rho in RHOS:
        data = make_toy(**{**TOY_2D, "rho": rho}, seed=seed)
        model, _ = train_logit_method("ce", data, seed=seed)
        per_class.append(1 - monte_carlo_errors(lambda x, m=model: predict(m, x), data, TOY_2D_N_EVAL)["per_class"])
        counts.append(data.counts)
    out["imbalance_per_class_accuracy"], out["imbalance_counts"] = np.array(per_class), np.array(counts)
    data = make_toy(**TOY_2D, seed=seed)
    regions, accuracy = [], []
    for tau in TAUS:
        model, _ = train_logit_method("la", data, tau=tau, seed=seed)
        xs, ys, labels = decision_grid(model, data.bounds(), GRID)
        regions.append(labels.astype(np.uint8))
        accuracy.append(1 - monte_carlo_errors(lambda x, m=model: predict(m, x), data, TOY_2D_N_EVAL)["per_class"])
    bayes = 1 - monte_carlo_errors(lambda x: bayes_predict(data, x), data, TOY_2D_N_EVAL)["per_class"]
    points = np.stack([g.ravel() for g in np.meshgrid(xs, ys)], 1)                 # the same grid, for the Bayes rule
    out.update(margin_regions=np.array(regions), margin_per_class_accuracy=np.array(accuracy),
               margin_bayes_per_class_accuracy=bayes, grid_x=xs, grid_y=ys,
               bayes_regions=bayes_predict(data, points).reshape(GRID, GRID).astype(np.uint8),
               toy_x_train=data.x_train.astype(np.float32), toy_y_train=data.y_train, toy_counts=data.counts)
    return out


def _embedding_panels(seed: int) -> dict[str, np.ndarray]:
    """Panels 3-4 on the embedding toy problem of notebooks 03-05 (data drawn under ``seed``), one set of
    runs for both: every method of panel 4 and ELM at every lambda of panel 3, each trained under every seed
    of :data:`SEEDS` (all together). Panel 3's "LA alone" is panel 4's LA runs: one LA number per page."""
    data = make_toy(**EMBEDDING_TOY, seed=seed)
    elm = methods.get("elm")
    table_methods = [methods.get(n) for n in PANEL4_METHODS]
    everything = table_methods + [elm.variant(f"lambda {lam:g}", lam=lam) for lam in LAMS]
    runs = train_embedding_models(data, [(m, s) for m in everything for s in SEEDS])
    k = len(SEEDS)
    per_method = [runs[i * k:(i + 1) * k] for i in range(len(everything))]
    mean = [{key: np.mean([getattr(r, key) for r in rs], 0) for key in ("spread", "train_margin", "balanced_accuracy")}
            for rs in per_method]
    la, sweep = mean[PANEL4_METHODS.index("la")], mean[len(table_methods):]
    table = np.array([[[run_summary(r, data.counts)[m] for r in rs] for m in PANEL4_MEASURES]
                      for rs in per_method[:len(table_methods)]])                   # (M, measures, seeds)
    return {"lams": np.array(LAMS), "embedding_counts": data.counts, "panel3_seeds": np.array(SEEDS),
            "lam_spread": np.array([r["spread"] for r in sweep]),
            "lam_train_margin": np.array([r["train_margin"] for r in sweep]),
            "lam_balanced_accuracy": np.array([r["balanced_accuracy"] for r in sweep]),
            "la_spread": la["spread"], "la_train_margin": la["train_margin"],
            "la_balanced_accuracy": np.array(la["balanced_accuracy"]),
            "methods": np.array(PANEL4_METHODS),
            "method_labels": np.array([methods.get(n).label for n in PANEL4_METHODS]),
            "measures": np.array(PANEL4_MEASURES), "method_table": table}


# Panel 5's laptop rungs (notebook 07's "Real data on a laptop"): the shipped comparison tables of
# elm_lite.procedure, and what each ran on
REAL_RUNGS = (("digits_lt.json", "digits-lt: MLP on scikit-learn's digits"),
              ("cifar10_lt_features.json", "CIFAR-10-LT: MLP on label-free features"))


def _cnn_setting(rows: list[dict], labels: list[str]) -> list[dict]:
    """One CNN setting of :func:`~elm_lite.capstone.real_image_rows`, per method of ``labels``: balanced
    accuracy (mean, sample sd, n over seeds) and minus LA paired by seed (mean, 95 % half-width)."""
    from .capstone import interval
    out = []
    for label in labels:
        mine = [r["balanced_accuracy"] for r in rows if r["method"] == label]
        try:
            diff = interval(paired_differences(rows, label, "LA")) if mine and label != "LA" else None
        except ValueError:   # no seed shared with LA
            diff = None
        out.append({"test": dict(zip(("mean", "sd", "n"), metrics.mean_sd(mine))), "minus_la": diff})
    return out


def _rung_setting(table: dict, labels: list[str]) -> list[dict]:
    """One rung's table (:func:`elm_lite.procedure.summarise`), per method of ``labels``: its test column
    and its paired test difference to LA (split and seed); NaN and n = 0 for a method it did not run."""
    by_label = {m["label"]: m for m in table["methods"].values()}
    none = {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return [{"test": by_label[label]["test"] if label in by_label else none,
             "minus_la": by_label[label].get("minus_la", {}).get("test") if label in by_label else None}
            for label in labels]


def real_panel() -> dict[str, np.ndarray]:
    """Panel 5, read from the shipped files (no training; ``tools/make_workshop_data.py --real-only``
    refreshes just these arrays): the capstone's CIFAR-10-LT CNN rows setting by setting
    (:func:`elm_lite.capstone.real_image_rows`, over seeds) and the laptop rungs of :data:`REAL_RUNGS`
    (any set of methods; over seeds x carved splits, on the test set). Per setting and method: test
    balanced accuracy mean, sample sd and n (NaN and 0 where the setting did not run the method), and the
    difference to LA, paired by seed (and split), with its 95 % t half-width (NaN where not measured)."""
    from .capstone import real_image_rows
    cnn = real_image_rows()
    rungs = [(load_results(file), name) for file, name in REAL_RUNGS]
    labels = list(dict.fromkeys([r["method"] for rows in cnn.values() for r in rows]
                                + [m["label"] for table, _ in rungs for m in table["methods"].values()]))
    settings = [(name, _cnn_setting(rows, labels)) for name, rows in cnn.items()]
    settings += [(f"{name}, {len(t['seeds'])} seeds x {t['splits']['n_splits']} carved splits (notebook 07)",
                  _rung_setting(t, labels)) for t, name in rungs]
    cell = lambda e, part, key: np.nan if e[part] is None else e[part][key]  # noqa: E731
    arrays = {key: np.array([[cell(e, part, k) for e in entries] for _, entries in settings], float)
              for key, part, k in (("real_mean", "test", "mean"), ("real_sd", "test", "sd"), ("real_n", "test", "n"),
                                   ("real_minus_la", "minus_la", "mean"), ("real_minus_la_half", "minus_la", "half"))}
    return {"real_settings": np.array([name for name, _ in settings]), "real_methods": np.array(labels),
            **arrays, "real_n": arrays["real_n"].astype(int)}


def sweeps(seed: int = 0) -> dict[str, np.ndarray]:
    """Every array the dashboard shows (see the module docstring), as a flat dict."""
    return {**_logit_panels(seed), **_embedding_panels(seed), **real_panel(), "seed": np.array(seed),
            "shot_split": metrics.shot_split(make_toy(**EMBEDDING_TOY, seed=seed).counts)}
