"""The capstone (notebook 07): the course's own measurements side by side -- every method on the toy
problem over several seeds, with intervals and cost; the shipped CIFAR-10-LT rows -- and the check
that reconciles the two re-weighting verdicts of notebooks 02 and 05."""
from __future__ import annotations

import numpy as np
import torch

from . import calibration, methods, metrics
from .data import ToyData, bayes_predict, make_toy, monte_carlo_errors
from .experiments import (
    method_logits,
    paired_differences,
    run_summary,
    train_embedding_model,
    train_embedding_models,
    train_logit_method,
)
from .plots import go, reliability_figure  # plotly, with the course's notebook renderer (static HTML copies)
from .recipes import DECOUPLING, EMBEDDING_TOY, TOY_2D
from .results import load_results
from .train import predict

# The candidates of the decision table, one per family (CE is the reference).
CAPSTONE_METHODS = ("ce", "la", "posthoc-la", "balanced-softmax", "ldam-drw", "reweight-inverse", "cb-sampling",
                    "crt", "tau-norm", "focal", "weight-balancing", "supcon-la", "elm")
# The calibration comparison: which methods' probabilities can be used as they are.
CALIBRATION_METHODS = ("ce", "la", "posthoc-la", "reweight-inverse", "focal", "elm")


def interval(values, confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample std (:func:`~elm_lite.metrics.mean_sd`), the half-width of the ``confidence``
    t-interval of the mean, and n of ``values`` (NaNs dropped; std and half-width are NaN for fewer than
    two values)."""
    from scipy import stats
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}; 0.95 gives a 95 % interval.")
    mean, sd, n = metrics.mean_sd(values)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "half": half, "n": n}


def distinct_seeds(seeds) -> list:
    """``seeds`` as a list, refused if one repeats: a repeated seed trains the same run again, and the
    interval would count one run as two independent ones (sd 0.000, n=2)."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (each seed is one independent run), got {seeds}; e.g. "
                         "seeds=(0, 1, 2, 3, 4).")
    return seeds


def toy_runs(data: ToyData, names=CAPSTONE_METHODS, seeds=(0, 1, 2, 3, 4), **recipe) -> tuple[list, list]:
    """Every method of ``names`` on ``data`` for every seed, trained together
    (:func:`~elm_lite.experiments.train_embedding_models`). Returns ``(rows, runs)`` in (method, seed)
    order: ``rows`` as :func:`~elm_lite.experiments.compare` gives them (``method`` is the label)."""
    jobs = [(methods.get(n), s) for n in names for s in distinct_seeds(seeds)]
    runs = train_embedding_models(data, jobs, **recipe)
    rows = [{"method": m.label, "seed": s, **run_summary(r, data.counts)} for (m, s), r in zip(jobs, runs)]
    return rows, runs


def passes_per_example(name: str, epochs: int) -> dict[str, int]:
    """What one training run of method ``name`` costs in passes, exactly: ``{"passes"}`` forward-and-backward
    passes of the whole model per training example over ``epochs`` epochs (one per view per epoch), and
    ``{"head_passes"}`` of the classifier alone in a second stage (cRT re-trains it on frozen features,
    after one forward pass of the features)."""
    m = methods.get(name)
    return {"passes": m.views * epochs, "head_passes": DECOUPLING["crt_epochs"] if m.decoupling == "crt" else 0}


def cost_per_epoch(data: ToyData, names=CAPSTONE_METHODS, seed: int = 0, rounds: int = 7, epochs: int = 4,
                   **recipe) -> dict[str, dict[str, float]]:
    """``{label: {"seconds", "spread", "ratio", "ratio_low", "ratio_high", "n"}}``: the time of one training
    epoch of each method, measured in this process ``rounds`` times, every method once per round (so that
    a busy spell slows every method alike), each time a fresh run of ``epochs`` epochs whose first epoch
    (warm-up) is left out. ``seconds``: the median over all those epochs; ``spread``: their interquartile
    range; ``ratio``: the median over rounds of the method's median epoch divided by LA's in the same round,
    ``ratio_low`` / ``ratio_high`` the smallest and largest of those ratios. Timed on one CPU thread
    (threads that share a loaded machine wait for each other); measurements and a second stage left out."""
    if rounds < 1 or epochs < 2:
        raise ValueError(f"cost_per_epoch needs rounds >= 1 and epochs >= 2 (the first epoch is warm-up), "
                         f"got rounds={rounds!r}, epochs={epochs!r}.")
    names = tuple(dict.fromkeys(("la", *names)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    per_round = {n: [] for n in names}   # per method, per round: its epoch times
    try:
        for _ in range(rounds):
            for name in names:
                elapsed = train_embedding_model(data, methods.get(name), seed=seed, **{**recipe, "epochs": epochs}
                                                ).history.elapsed
                per_round[name].append(np.diff(elapsed))  # epochs 2.. (the first is warm-up)
    finally:
        torch.set_num_threads(threads)
    out = {}
    for name in names:
        every = np.concatenate(per_round[name])
        ratios = [np.median(mine) / np.median(la) for mine, la in zip(per_round[name], per_round["la"])]
        q1, q3 = np.percentile(every, [25, 75])
        out[methods.get(name).label] = {"seconds": float(np.median(every)), "spread": float(q3 - q1),
                                        "ratio": float(np.median(ratios)), "ratio_low": float(min(ratios)),
                                        "ratio_high": float(max(ratios)), "n": len(every)}
    return out


def cost_table(cost: dict[str, dict[str, float]], epochs: int) -> str:
    """The cost of each method: exact passes per training example over ``epochs`` epochs
    (:func:`passes_per_example`), and the measured time per epoch (:func:`cost_per_epoch`) as a ratio to LA."""
    by_label = {methods.get(n).label: n for n in methods.METHODS}
    w = max(map(len, cost)) + 2
    lines = [f"{'method':{w}s}{'passes':>7s}{'+ head':>7s}{'time per epoch / LA: median [range]':>37s}"
             f"{'ms per epoch (IQR)':>20s}"]
    for label, c in cost.items():
        p = passes_per_example(by_label[label], epochs)
        ratio = f"{c['ratio']:.2f}x [{c['ratio_low']:.2f}, {c['ratio_high']:.2f}]"
        ms = f"{1e3 * c['seconds']:.1f} ({1e3 * c['spread']:.1f})"
        lines.append(f"{label:{w}s}{p['passes']:7d}{p['head_passes']:7d}{ratio:>37s}{ms:>20s}")
    return "\n".join(lines)


def _cell(values, confidence: float) -> str:
    s = interval(values, confidence)
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.3f} (n=1)"
    return f"{s['mean']:.3f} ± {s['sd']:.3f} [{s['mean'] - s['half']:.3f}, {s['mean'] + s['half']:.3f}]"


def toy_table(rows: list[dict], cost: dict[str, dict[str, float]], confidence: float = 0.95) -> str:
    """The toy decision table: per method, balanced accuracy as mean ± sample std [t-interval], many /
    medium / few accuracy, validation balanced accuracy and test ECE (means), the time per epoch as a ratio
    to LA's (``cost`` from :func:`cost_per_epoch`, median over rounds), n seeds."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    w = max(map(len, names)) + 2
    head = (f"{'method':{w}s}{'balanced accuracy: mean ± sd [' + f'{confidence:.0%}' + ' CI]':>38s}"
            f"{'many':>7s}{'medium':>8s}{'few':>7s}{'val':>7s}{'ECE':>7s}{'cost':>7s}{'n':>3s}")
    lines = [head]
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        means = [metrics.mean_sd([r.get(k, np.nan) for r in mine])[0]
                 for k in ("acc_many", "acc_medium", "acc_few", "val_balanced_accuracy", "ece")]
        lines.append(f"{name:{w}s}{_cell([r['balanced_accuracy'] for r in mine], confidence):>38s}"
                     + "".join(f"{m:{7 if i != 1 else 8}.3f}" for i, m in enumerate(means))
                     + f"{cost.get(name, {}).get('ratio', float('nan')):6.2f}x{len(mine):3d}")
    return "\n".join(lines)


def calibration_table(rows: list[dict]) -> str:
    """Per method: test ECE of ``softmax(logits)`` (mean ± sample std over seeds), its many / medium /
    few parts, the temperature fitted on the validation sample, and the ECE after that temperature
    scaling -- which methods' probabilities are usable as they are, and which need the fix."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    w = max(map(len, names)) + 2
    lines = [f"{'method':{w}s}{'ECE: mean ± sd':>16s}{'many':>7s}{'medium':>8s}{'few':>7s}"
             f"{'T (val)':>9s}{'ECE after T':>18s}{'n':>3s}"]
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        ece, scaled = (metrics.mean_sd([r[k] for r in mine]) for k in ("ece", "ece_scaled"))
        parts = [metrics.mean_sd([r[f"ece_{k}"] for r in mine])[0] for k in metrics.SPLITS]
        temperature = metrics.mean_sd([r["temperature"] for r in mine])[0]
        lines.append(f"{name:{w}s}{ece[0]:>9.3f} ± {ece[1]:.3f}"
                     + "".join(f"{m:{8 if i == 1 else 7}.3f}" for i, m in enumerate(parts))
                     + f"{temperature:9.2f}{scaled[0]:>11.3f} ± {scaled[1]:.3f}{len(mine):3d}")
    lines.append("(ECE: 15 equal-width confidence bins on the balanced test set; many / medium / few: the test "
                 "examples of those classes; ± is the sample sd over seeds)")
    return "\n".join(lines)


def paired_difference(rows: list[dict], a: str, b: str, column: str = "balanced_accuracy",
                      confidence: float = 0.95) -> dict[str, float]:
    """``a`` minus ``b`` (method labels) in ``column``, seed by seed
    (:func:`~elm_lite.experiments.paired_differences`), summarised by :func:`interval`."""
    return interval(paired_differences(rows, a, b, column), confidence)


def logit_toy_rows(data: ToyData, names=("ce", "la", "reweight-inverse"), seeds=(0, 1, 2, 3, 4)) -> list[dict]:
    """Notebook 02's setting: each method on ``data`` with the linear full-batch recipe, per seed:
    ``{"method", "seed", "balanced_accuracy" (test)}``."""
    rows, seeds = [], distinct_seeds(seeds)
    for name in names:
        for seed in seeds:
            model, _ = train_logit_method(name, data, seed=seed)
            rows.append({"method": methods.get(name).label, "seed": seed,
                         "balanced_accuracy": metrics.balanced_accuracy(data.y_test, predict(model, data.x_test),
                                                                        data.n_classes)})
    return rows


# Section 4: the two re-weighting verdicts. Notebook 02's problem (5 Gaussian classes in 2-D, its linear
# model; recipes.TOY_2D) and notebook 05's (recipes.EMBEDDING_TOY, its MLP), then variants of them that each move one
# factor: the rarest class's count (dimension and overlap fixed), the dimension (count and overlap fixed),
# the overlap (through ``separation``; measured by the Bayes-balanced error), the number of classes.
REWEIGHTING_PROBLEMS = (
    # (what it is, what it moves, make_toy arguments, model)
    ("notebook 02's problem", "", TOY_2D, "linear"),
    ("notebook 02's problem", "the model", TOY_2D, "mlp"),
    ("notebook 02's problem", "classes 5 -> 8", {**TOY_2D, "n_classes": 8}, "mlp"),
    ("notebook 05's problem", "", EMBEDDING_TOY, "mlp"),
    ("notebook 05's problem", "rarest 5 -> 10 (n_max 1000)", {**EMBEDDING_TOY, "n_max": 1000}, "mlp"),
    ("notebook 05's problem", "rarest 5 -> 20 (rho 25)", {**EMBEDDING_TOY, "rho": 25}, "mlp"),
    ("notebook 05's problem", "dimension 16 -> 8", {**EMBEDDING_TOY, "dim": 8}, "mlp"),
    ("notebook 05's problem", "dimension 16 -> 32", {**EMBEDDING_TOY, "dim": 32}, "mlp"),
    ("notebook 05's problem", "overlap up (separation 2)", {**EMBEDDING_TOY, "separation": 2.0}, "mlp"),
    ("notebook 05's problem", "overlap down (separation 4)", {**EMBEDDING_TOY, "separation": 4.0}, "mlp"),
)


def bayes_balanced_error(problem: dict, n_per_class: int = 20_000) -> float:
    """The Bayes-balanced error of the toy problem ``problem`` (make_toy arguments): the overlap of its
    classes, whatever their counts (Monte Carlo, :func:`~elm_lite.data.monte_carlo_errors`)."""
    data = make_toy(**problem, seed=0)
    return monte_carlo_errors(lambda x: bayes_predict(data, x), data, n_per_class)["balanced"]


def reweighting_variant(problem: dict, model: str, seeds=(0, 1, 2, 3, 4), **recipe) -> list[dict]:
    """LA and re-weighting by 1/n on ``problem`` (make_toy arguments), seed by seed: seed ``s`` draws the
    data and trains both methods (``model`` "linear": notebook 02's full-batch recipe; "mlp": the embedding
    MLP, ``recipe`` overriding :data:`~elm_lite.recipes.EMBEDDING_RECIPE`). Rows as :func:`toy_runs`
    (``method``, ``seed``, ``balanced_accuracy``, ...)."""
    if model not in ("linear", "mlp"):
        raise ValueError(f"model must be 'linear' or 'mlp', got {model!r}.")
    rows = []
    for seed in seeds:
        data = make_toy(**problem, seed=seed)
        rows += (logit_toy_rows(data, ("la", "reweight-inverse"), (seed,)) if model == "linear"
                 else toy_runs(data, ("la", "reweight-inverse"), (seed,), **recipe)[0])
    return rows


def reweighting_variants(problems=REWEIGHTING_PROBLEMS, seeds=(0, 1, 2, 3, 4), confidence: float = 0.95,
                         **recipe) -> list[dict]:
    """Every problem of ``problems`` (:data:`REWEIGHTING_PROBLEMS`) through :func:`reweighting_variant`:
    ``{"problem", "moves", "model", "counts", "dim", "bayes_error", "la" (LA's balanced accuracy, interval),
    "difference" (re-weighting minus LA, paired by seed, :func:`interval`)}`` per problem."""
    rw, la = methods.get("reweight-inverse").label, methods.get("la").label
    out = []
    for name, moves, problem, model in problems:
        rows = reweighting_variant(problem, model, seeds, **recipe)
        data = make_toy(**problem, seed=0)
        out.append({"problem": name, "moves": moves, "model": model, "counts": data.counts.tolist(),
                    "dim": int(data.x_train.shape[1]), "bayes_error": bayes_balanced_error(problem),
                    "la": interval([r["balanced_accuracy"] for r in rows if r["method"] == la], confidence),
                    "difference": paired_difference(rows, rw, la, confidence=confidence)})
    return out


def reweighting_table(variants: list[dict], confidence: float = 0.95) -> str:
    """Section 4's table: per problem, what it moves, its classes, rarest count, dimension, Bayes-balanced
    error, LA's balanced accuracy and re-weighting minus LA with its paired ``confidence`` t-interval."""
    lines = [f"{'problem':22s}{'moves':30s}{'model':>7s}{'C':>3s}{'rarest':>7s}{'dim':>4s}{'Bayes err':>10s}"
             f"{'LA':>7s}   re-weighting minus LA [{confidence:.0%} CI]"]
    for v in variants:
        d = v["difference"]
        lines.append(f"{v['problem']:22s}{v['moves'] or '(as in the notebook)':30s}{v['model']:>7s}"
                     f"{len(v['counts']):3d}{v['counts'][-1]:7d}{v['dim']:4d}{v['bayes_error']:10.3f}"
                     f"{v['la']['mean']:7.3f}   {d['mean']:+.3f} [{d['mean'] - d['half']:+.3f}, "
                     f"{d['mean'] + d['half']:+.3f}]  n={d['n']}")
    return "\n".join(lines)


# The shipped real-image results (elm_lite/measured/), one entry per setting: file, what it trained.
REAL_IMAGE_FILES = (
    ("cifar10_lt_cpu.json", "CPU: small CNN, 10 epochs, Adam (notebook 05)"),
    ("cifar_lt_gpu.json", "GPU: ResNet-32, 120 epochs, SGD, one H200 (notebook 06)"),
    ("cifar10_lt_gpu_table_200ep.json", "GPU: ResNet-32, 200 epochs, SGD, one H200, trained together (notebook 06)"),
)


def _label(run: dict) -> str:
    """A shipped run's method label, from the constants it records (``method_identity``: the registry
    name of what it trained; ELM runs trained before the margin study are ``elm-positive``)."""
    return methods.get(run["method_identity"]["method"]).label


def real_image_rows() -> dict[str, list[dict]]:
    """``{setting: [row]}`` from the shipped CIFAR-10-LT files; a row is ``{"method" (label), "seed",
    "balanced_accuracy", "acc_many", "acc_medium", "acc_few", "seconds"}``. ``seconds``: one run's training
    time where the file records it; the CPU file records only its total, shared out over its runs; the
    200-epoch file its group's wall time, shared out over the group's runs."""
    out = {}
    for file, setting in REAL_IMAGE_FILES:
        f = load_results(file)
        if "machine" in f:  # the CPU comparison: rows of run_summary, one total time
            each = f["seconds"] / len(f["rows"])
            out[setting] = [{**{k: r[k] for k in ("seed", "balanced_accuracy", "acc_many", "acc_medium", "acc_few")},
                             "method": _label(r), "seconds": each} for r in f["rows"]]
            continue
        runs = f["runs"]
        share = len(runs) if "table_wall_seconds" in f else 1
        out[setting] = [{"method": _label(r), "seed": r["seed"],
                         "balanced_accuracy": r["balanced_accuracy"],
                         **{f"acc_{k}": r["shot_accuracy"][k] for k in metrics.SPLITS},
                         "seconds": r["total_seconds"] / share} for r in runs]
    return out


def real_image_table(confidence: float = 0.95) -> str:
    """The shipped CIFAR-10-LT rows, setting by setting: balanced accuracy (mean ± sd, n), many /
    medium / few means (CIFAR-10-LT has no few split: "--"), seconds per run; then the candidates of
    :data:`CAPSTONE_METHODS` that the setting did not train, and runs its file names as unfinished."""
    lines = []
    for (file, setting), rows in zip(REAL_IMAGE_FILES, real_image_rows().values()):
        lines += ["", setting, f"  {'method':28s}{'balanced accuracy: mean ± sd [CI]':>36s}{'n':>3s}"
                  f"{'many':>7s}{'medium':>8s}{'few':>6s}{'s/run':>8s}"]
        names = list(dict.fromkeys(r["method"] for r in rows))
        for name in names:
            mine = [r for r in rows if r["method"] == name]
            many, medium, few = (metrics.mean_sd([r[f"acc_{k}"] for r in mine])[0] for k in metrics.SPLITS)
            lines.append(f"  {name:28s}{_cell([r['balanced_accuracy'] for r in mine], confidence):>36s}{len(mine):3d}"
                         f"{many:7.3f}{medium:8.3f}{'--' if np.isnan(few) else f'{few:.3f}':>6s}"
                         f"{np.mean([r['seconds'] for r in mine]):8.0f}")
        unfinished = load_results(file).get("unfinished", {})
        missing = [methods.get(n).label for n in CAPSTONE_METHODS if methods.get(n).label not in names
                   and n not in unfinished]
        lines.append("  not run: " + ", ".join(missing))
        lines += [f"  unfinished: {methods.get(name).label} -- {why}" for name, why in unfinished.items()]
    return "\n".join(lines[1:])


def decision_figure(rows: list[dict], confidence: float = 0.95):
    """Balanced accuracy per method (mean, t-interval as error bar) and its few-shot accuracy (mean,
    open marker), methods sorted by mean balanced accuracy: the toy decision table at a glance."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    stats = {n: interval([r["balanced_accuracy"] for r in rows if r["method"] == n], confidence) for n in names}
    names.sort(key=lambda n: stats[n]["mean"])
    few = [metrics.mean_sd([r["acc_few"] for r in rows if r["method"] == n])[0] for n in names]
    fig = go.Figure([
        go.Scatter(x=[stats[n]["mean"] for n in names], y=names, mode="markers", name="balanced accuracy",
                   error_x=dict(type="data", array=[stats[n]["half"] for n in names], visible=True)),
        go.Scatter(x=few, y=names, mode="markers", name="few-shot accuracy",
                   marker=dict(symbol="circle-open", size=9))])
    n = max(s["n"] for s in stats.values())
    fig.update_layout(title=f"toy problem, {n} seeds: mean and {confidence:.0%} t-interval",
                      xaxis_title="test accuracy (balanced test set)", height=420, margin=dict(l=220))
    return fig


def calibration_figure(data: ToyData, runs: list, names=CALIBRATION_METHODS, seeds=(0, 1, 2, 3, 4), seed: int = 0,
                       scaled: bool = False):
    """The reliability diagram (:func:`~elm_lite.plots.reliability_figure`) of the test predictions of
    each method of ``names`` for one ``seed``; ``runs`` as :func:`toy_runs` returns them for
    :data:`CAPSTONE_METHODS` and ``seeds``. ``scaled``: after the temperature each run fitted on validation."""
    jobs = [(n, s) for n in CAPSTONE_METHODS for s in seeds]
    probs = {}
    for name in names:
        run = runs[jobs.index((name, seed))]
        logits = method_logits(methods.get(name), run.model, data.x_test, data.counts)
        probs[methods.get(name).label] = calibration.probabilities(logits, run.temperature if scaled else 1.0)
    return reliability_figure(data.y_test, probs, title=f"toy test set, seed {seed}"
                              + (", after temperature scaling on validation" if scaled else ""))
