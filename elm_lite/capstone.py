"""The capstone (notebook 07): the course's own measurements side by side -- every method on the toy
problem over several seeds, with intervals and cost; the shipped CIFAR-10-LT rows -- and the check
that reconciles the two re-weighting verdicts of notebooks 02 and 05."""
from __future__ import annotations

import numpy as np
import torch

from . import calibration, methods, metrics
from .data import ToyData
from .experiments import (
    embed,
    method_logits,
    paired_differences,
    run_summary,
    train_embedding_model,
    train_embedding_models,
    train_logit_method,
)
from .plots import go, reliability_figure  # plotly, with the course's notebook renderer (static HTML copies)
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


def toy_runs(data: ToyData, names=CAPSTONE_METHODS, seeds=(0, 1, 2, 3, 4), **recipe) -> tuple[list, list]:
    """Every method of ``names`` on ``data`` for every seed, trained together
    (:func:`~elm_lite.experiments.train_embedding_models`). Returns ``(rows, runs)`` in (method, seed)
    order: ``rows`` as :func:`~elm_lite.experiments.compare` gives them (``method`` is the label), plus
    ``train_balanced_accuracy`` (how well the model fits its own training set)."""
    jobs = [(methods.get(n), s) for n in names for s in seeds]
    runs = train_embedding_models(data, jobs, **recipe)
    rows = [{"method": m.label, "seed": s, **run_summary(r, data.counts),
             "train_balanced_accuracy": training_fit(r.model, data)} for (m, s), r in zip(jobs, runs)]
    return rows, runs


def training_fit(model, data: ToyData) -> float:
    """Balanced accuracy of ``model`` on its own training set (1.0: it separates the training data)."""
    logits, _ = embed(model, data.x_train)
    return metrics.balanced_accuracy(data.y_train, logits.argmax(1), data.n_classes)


def cost_seconds(data: ToyData, names=CAPSTONE_METHODS, seed: int = 0, repeats: int = 2,
                 **recipe) -> dict[str, float]:
    """``{label: seconds}``: the training time (``History.seconds``; measurements and a second stage
    left out) of one run of each method trained alone on this machine -- what one try costs. Timed on one
    CPU thread (threads that share a loaded machine wait for each other, by up to tens of times on the
    course's 2-core VM), the best of ``repeats`` runs: other work only ever slows a run down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {methods.get(name).label: min(train_embedding_model(data, methods.get(name), seed=seed, **recipe)
                                             .history.seconds for _ in range(repeats)) for name in names}
    finally:
        torch.set_num_threads(threads)


def _mean(values) -> float:
    """The mean of the values that are not NaN (NaN if none is)."""
    return metrics.mean_sd(values)[0]


def _cell(values, confidence: float) -> str:
    s = interval(values, confidence)
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.3f} (n=1)"
    return f"{s['mean']:.3f} ± {s['sd']:.3f} [{s['mean'] - s['half']:.3f}, {s['mean'] + s['half']:.3f}]"


def toy_table(rows: list[dict], seconds: dict[str, float], confidence: float = 0.95) -> str:
    """The toy decision table: per method, balanced accuracy as mean ± sample std [t-interval], many /
    medium / few accuracy, validation balanced accuracy and test ECE (means), ``seconds`` (one run alone,
    :func:`cost_seconds`), n seeds."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    w = max(map(len, names)) + 2
    head = (f"{'method':{w}s}{'balanced accuracy: mean ± sd [' + f'{confidence:.0%}' + ' CI]':>38s}"
            f"{'many':>7s}{'medium':>8s}{'few':>7s}{'val':>7s}{'ECE':>7s}{'cost s':>7s}{'n':>3s}")
    lines = [head]
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        means = [_mean([r.get(k, np.nan) for r in mine])
                 for k in ("acc_many", "acc_medium", "acc_few", "val_balanced_accuracy", "ece")]
        lines.append(f"{name:{w}s}{_cell([r['balanced_accuracy'] for r in mine], confidence):>38s}"
                     + "".join(f"{m:{7 if i != 1 else 8}.3f}" for i, m in enumerate(means))
                     + f"{seconds.get(name, float('nan')):7.2f}{len(mine):3d}")
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
        parts = [_mean([r[f"ece_{k}"] for r in mine]) for k in metrics.SPLITS]
        temperature = _mean([r["temperature"] for r in mine])
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
    ``{"method", "seed", "balanced_accuracy" (test), "train_balanced_accuracy"}``."""
    rows = []
    for name in names:
        for seed in seeds:
            model, _ = train_logit_method(name, data, seed=seed)
            rows.append({"method": methods.get(name).label, "seed": seed,
                         "balanced_accuracy": metrics.balanced_accuracy(data.y_test, predict(model, data.x_test),
                                                                        data.n_classes),
                         "train_balanced_accuracy": metrics.balanced_accuracy(
                             data.y_train, predict(model, data.x_train), data.n_classes)})
    return rows


# The shipped real-image results (elm_lite/measured/), one entry per setting: file, what it trained.
REAL_IMAGE_FILES = (
    ("cifar10_lt_cpu.json", "CPU: small CNN, 10 epochs, Adam (notebook 05)"),
    ("cifar_lt_gpu.json", "GPU: ResNet-32, 120 epochs, SGD, one H200 (notebook 06)"),
    ("cifar10_lt_gpu_table_200ep.json", "GPU: ResNet-32, 200 epochs, SGD, one H200, trained together (notebook 06)"),
)
# Their ELM rows were trained before the margin study, with the margin on the positives.
_FIRST_FORM_FILES = ("cifar10_lt_cpu.json", "cifar_lt_gpu.json")


def _label(name_or_label: str, file: str) -> str:
    """A row's method label; ELM in the files trained before the margin study has the margin on the positives."""
    by_label = {m.label: m.name for m in methods.METHODS.values()}
    name = by_label.get(name_or_label, name_or_label)
    if name == "elm" and file in _FIRST_FORM_FILES:
        name = "elm-positive"
    return methods.get(name).label


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
                             "method": _label(r["method"], file), "seconds": each} for r in f["rows"]]
            continue
        runs = f["runs"]
        share = len(runs) if "table_wall_seconds" in f else 1
        out[setting] = [{"method": _label(r["loss"], file), "seed": r["seed"],
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
            many, medium, few = (_mean([r[f"acc_{k}"] for r in mine]) for k in metrics.SPLITS)
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
    few = [_mean([r["acc_few"] for r in rows if r["method"] == n]) for n in names]
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
