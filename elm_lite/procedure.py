"""The capstone's procedure on a learner's data, in one call (and one command, ``elm-lite compare``):

    data = owndata.load_dataset("train.csv", label_column="species", test="test.csv")
    table = procedure.compare_methods(data, ["ce", "la", "reweight-inverse"], seeds=(0, 1, 2), out="runs/mine")

For each of ``n_splits`` validation splits carved from the training data (:mod:`elm_lite.splits`) and each
seed, every method trains on the split's training part -- an MLP on standardised feature vectors
(:data:`~elm_lite.recipes.OWN_FEATURES_RECIPE`, runs that share a recipe trained together), the small CNN on
images (:data:`~elm_lite.recipes.IMAGE_RECIPE`) -- and is scored on the split's validation part and, when
a test set is given, on the test set. The method is *chosen on validation only* (:func:`~elm_lite.splits.choose`);
the test set is read after training, for the test column, and never by the choice.

    OUT/runs.json      every finished run (one row per method, split and seed) and the comparison's identity
    OUT/table.json     per method: validation and test balanced accuracy (mean, sample sd, n), many / medium /
                       few, ECE (expected calibration error of the softmax probabilities the method predicts
                       with; on test also after temperature scaling, the temperature fitted on the split's
                       validation part), paired differences to LA, per-class accuracy; the choice and its
                       stability

Weight balancing's weight decay is chosen per split on that split's carved validation part (from
:data:`~elm_lite.recipes.WEIGHT_BALANCING`'s grid, best mean validation balanced accuracy over the seeds);
its row records the choice. Its validation column is therefore the chosen candidate's (optimistic by the
choice); its test column is not.
    OUT/report.html    one self-contained page (plotly inside, no outside request) with the same
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .calibration import fit_temperature, probabilities
from .capstone import CAPSTONE_METHODS, interval
from .experiments import embed, paired_differences, train_embedding_models, train_image_model
from .losses import posthoc_adjust
from .methods import get as get_method
from .owndata import OwnData
from .recipes import IMAGE_RECIPE, OWN_FEATURES_RECIPE, VALIDATION_SPLITS, WEIGHT_BALANCING
from .splits import carve_splits, choose
from .train import evaluate_features

REFERENCE = "la"   # paired differences are taken to logit adjustment, the course's default


class _Part:
    """A split's view of the data in the shape the trainers take: ``x_test`` / ``y_test`` is the
    split's *validation* part."""

    def __init__(self, x_train, y_train, x_val, y_val, n_classes: int):
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_val, y_val
        self.counts = np.bincount(y_train, minlength=n_classes)
        self.n_classes = n_classes


def _standardised(data: OwnData) -> tuple[np.ndarray, np.ndarray | None]:
    """Feature vectors standardised with the training set's per-feature mean and std (no labels, no test
    data read); images are returned as they are."""
    if data.kind != "features":
        return data.x_train, data.x_test
    mean, std = data.x_train.mean(0), data.x_train.std(0)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    scale = lambda x: None if x is None else ((x - mean) / std).astype(np.float32)  # noqa: E731
    return scale(data.x_train), scale(data.x_test)


def _logits(method, model, x, counts, kind: str) -> np.ndarray:
    """The logits ``(N, C)`` a trained run predicts ``x`` with (post-hoc adjusted for post-hoc methods)."""
    logits = evaluate_features(model, x, torch.device("cpu"))[0] if kind == "images" else embed(model, x)[0]
    return posthoc_adjust(torch.as_tensor(logits), counts).numpy() if method.posthoc else logits


def _scores(prefix: str, y, logits, n_classes: int, counts, temperature: float | None = None) -> dict:
    """Balanced accuracy, ECE, per-class and many / medium / few accuracy of ``logits`` ``(N, C)`` against
    ``y`` ``(N,)``; with ``temperature`` (fitted on validation) also the ECE after temperature scaling."""
    pred = logits.argmax(1)
    scaled = ({} if temperature is None else
              {f"{prefix}_ece_scaled": metrics.expected_calibration_error(y, probabilities(logits, temperature))})
    shots = metrics.shot_accuracy(y, pred, counts)
    return {f"{prefix}_balanced_accuracy": metrics.balanced_accuracy(y, pred, n_classes),
            f"{prefix}_ece": metrics.expected_calibration_error(y, probabilities(logits)),
            f"{prefix}_per_class": metrics.per_class_accuracy(y, pred, n_classes).tolist(),
            **{f"{prefix}_acc_{k}": shots[k] for k in metrics.SPLITS}, **scaled}


def _train_part(part: _Part, jobs: list, kind: str, recipe: dict) -> list:
    """The trained models of ``jobs`` ``[(method, seed)]`` on ``part`` (MLPs together, CNNs one by one),
    each after its method's second stage (:meth:`~elm_lite.methods.Method.finish`)."""
    if kind == "images":
        return [train_image_model(part, m, seed=s, **recipe).model for m, s in jobs]
    return [run.model for run in train_embedding_models(part, jobs, **recipe)]


def _identity(data: OwnData, split_settings: dict, recipe: dict) -> dict:
    return {"data": data.identity(), "splits": split_settings, "model": "small_cnn" if data.kind == "images" else "mlp",
            "recipe": recipe, "test": data.x_test is not None,
            "scores": ["balanced_accuracy", "shots", "ece", "ece_scaled"]}


def _candidates(method) -> list:
    """What trains for ``method`` on a split: weight balancing once per weight decay of its grid (the
    choice is made on the split's validation part, :func:`_keep_chosen`), every other method as it is."""
    if method.decoupling != "weight-balancing":
        return [method]
    return [method.variant(method.label, recipe={"weight_decay": wd}) for wd in WEIGHT_BALANCING["weight_decay_grid"]]


def _run_identity(method) -> dict:
    """A finished run's method fingerprint (weight balancing's includes the grid its weight decay is chosen from)."""
    grid = {"weight_decay_grid": list(WEIGHT_BALANCING["weight_decay_grid"])} if len(_candidates(method)) > 1 else {}
    return json.loads(json.dumps({**method.identity(), **grid}))


def _keep_chosen(method, candidates: list[tuple], rows: list[dict]) -> list[int]:
    """Which of ``rows`` (one per ``(candidate, seed)`` of ``candidates``, one split) to keep: all for a
    method without a choice; for weight balancing those of the weight decay with the best mean *validation*
    balanced accuracy over the seeds (the choice recorded in each kept row)."""
    if len(_candidates(method)) == 1:
        return list(range(len(rows)))
    scores: dict[float, list] = {}
    for (candidate, _), row in zip(candidates, rows):
        scores.setdefault(candidate.recipe["weight_decay"], []).append(row["val_balanced_accuracy"])
    means = {wd: float(np.mean(v)) for wd, v in scores.items()}
    best = max(means, key=means.get)
    keep = [i for i, (c, _) in enumerate(candidates) if c.recipe["weight_decay"] == best]
    for i in keep:
        rows[i].update(weight_decay=best, weight_decay_validation={str(wd): m for wd, m in means.items()})
    return keep


def _earlier_rows(out: Path | None, identity: dict, resume: bool) -> list[dict]:
    """The finished rows of an earlier call in ``out`` (only with ``resume``, and only for the same
    identity); a folder holding another comparison is refused with what differs."""
    if out is None or not (out / "runs.json").exists():
        return []
    from .engine.runfiles import differences, read_json
    saved = read_json(out / "runs.json", "delete it, or use another out folder.")
    differs = differences(json.loads(json.dumps(saved.get("identity", {}))), json.loads(json.dumps(identity)),
                          ("folder", "now"))
    if differs:
        raise ValueError(f"{out} holds the runs of another comparison; it differs in {'; '.join(differs)}. Use "
                         "another out folder (--out).")
    if not resume:
        raise ValueError(f"{out} already holds runs of this comparison; pass resume=True (--resume) to continue "
                         "it, or use another out folder (--out).")
    return saved["rows"]


def _check_saved_methods(rows: list[dict], chosen: list, out) -> None:
    """A finished run counts only for the method as it is defined now: refuse runs of an older definition."""
    for m in chosen:
        saved = next((r["identity"] for r in rows if r["method"] == m.name), None)
        if saved is not None and saved != _run_identity(m):
            raise ValueError(f"{out} holds runs of method {m.name!r} as defined before ({saved}); it is now "
                             f"{_run_identity(m)}. Use another out folder (--out).")


def _checked(data: OwnData, names, seeds, recipe: dict) -> tuple[list, list, dict]:
    """The methods (LA among them), the seeds (distinct) and the model's recipe with ``recipe``'s entries."""
    chosen, seeds = [get_method(n) for n in names], list(seeds)
    if REFERENCE not in [m.name for m in chosen]:
        raise ValueError(f"methods must include {REFERENCE!r} (the reference of the paired differences), got "
                         f"{list(names)}.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}.")
    defaults = IMAGE_RECIPE if data.kind == "images" else OWN_FEATURES_RECIPE
    unknown = set(recipe) - set(defaults)
    if unknown:
        raise ValueError(f"unknown recipe entries {sorted(unknown)}; this model's recipe has {sorted(defaults)}.")
    return chosen, seeds, {**defaults, **recipe}


def compare_methods(data: OwnData, names=CAPSTONE_METHODS, seeds=(0, 1, 2), out=None, *, resume: bool = False,
                    n_splits: int = VALIDATION_SPLITS["n_splits"], fraction: float = VALIDATION_SPLITS["fraction"],
                    min_train: int = VALIDATION_SPLITS["min_train"], progress: bool = True, **recipe) -> dict:
    """Every method of ``names`` (registry names) x ``seeds`` x ``n_splits`` carved splits on ``data``
    (see the module); ``recipe`` entries override the model's recipe. With ``out`` the runs, the table
    and the report are written there (``resume``: continue an interrupted comparison of the same data
    and settings). Returns the table (:func:`summarise`)."""
    from tqdm.auto import tqdm
    chosen, seeds, recipe = _checked(data, names, seeds, recipe)
    settings = {"n_splits": n_splits, "fraction": fraction, "min_train": min_train}
    identity = _identity(data, settings, recipe)
    out = Path(out) if out is not None else None
    rows = _earlier_rows(out, identity, resume)
    _check_saved_methods(rows, chosen, out)
    splits = carve_splits(data.y_train, data.n_classes, class_names=data.class_names, **settings)
    x_train, x_test = _standardised(data)
    start = time.perf_counter()
    done = {(r["method"], r["split"], r["seed"]) for r in rows}
    for split in tqdm(splits, desc=f"{len(chosen)} methods x {len(seeds)} seeds, split", disable=not progress):
        jobs = [(m, s) for m in chosen for s in seeds if (m.name, split.seed, s) not in done]
        if not jobs:
            continue
        part = _Part(x_train[split.train], data.y_train[split.train], x_train[split.validation],
                     data.y_train[split.validation], data.n_classes)
        trained = [(c, s) for m, s in jobs for c in _candidates(m)]
        clock = time.perf_counter()
        models = _train_part(part, trained, data.kind, recipe)
        each = (time.perf_counter() - clock) / len(trained)   # runs trained together share their wall time
        val_logits = [_logits(c, model, part.x_test, part.counts, data.kind) for (c, _), model in zip(trained, models)]
        scored = [{"method": c.name, "split": split.seed, "seed": s, "temperature": fit_temperature(v, part.y_test),
                   **_scores("val", part.y_test, v, data.n_classes, data.counts)}
                  for (c, s), v in zip(trained, val_logits)]
        for method in [m for m in chosen if any(j is m for j, _ in jobs)]:
            mine = [i for i, (c, _) in enumerate(trained) if c.name == method.name]
            for k in _keep_chosen(method, [trained[i] for i in mine], [scored[i] for i in mine]):
                i = mine[k]
                row = {**scored[i], "identity": _run_identity(method), "seconds": each * len(_candidates(method))}
                if x_test is not None:   # read only here, after training and the choice, for the test column
                    row.update(_scores("test", data.y_test, _logits(trained[i][0], models[i], x_test, part.counts,
                                                                    data.kind), data.n_classes, data.counts,
                                       row["temperature"]))
                rows.append(row)
        if out is not None:
            from .engine.runfiles import save_atomic
            save_atomic({"identity": identity, "rows": rows}, out / "runs.json")
    rows = [r for r in rows if r["method"] in {m.name for m in chosen} and r["seed"] in seeds]
    table = summarise(data, rows, [m.name for m in chosen], splits, seconds=time.perf_counter() - start)
    if out is not None:
        from .engine.runfiles import save_atomic
        save_atomic(table, out / "table.json")
        (out / "report.html").write_text(report_html(table))
    return table


def _paired(rows: list[dict], name: str, column: str) -> dict:
    """``name`` minus LA in ``column``, paired by (split, seed), summarised by :func:`~elm_lite.capstone.interval`."""
    keyed = [{**r, "seed": (r["split"], r["seed"])} for r in rows]
    return interval(paired_differences(keyed, name, REFERENCE, column))


def _msn(values) -> dict:
    mean, sd, n = metrics.mean_sd(values)
    return {"mean": mean, "sd": sd, "n": n}


def summarise(data: OwnData, rows: list[dict], names: list[str], splits, seconds: float = float("nan")) -> dict:
    """The table of :func:`compare_methods` (plain JSON values)."""
    import os
    import platform
    has_test = data.x_test is not None
    on = "test" if has_test else "val"
    choice = choose([{**r, "method": get_method(r["method"]).label} for r in rows])
    methods_out = {}
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        entry = {"label": get_method(name).label,
                 "validation": _msn([r["val_balanced_accuracy"] for r in mine]),
                 "test": _msn([r["test_balanced_accuracy"] for r in mine]) if has_test else None,
                 "ece": {"validation": _msn([r["val_ece"] for r in mine]),
                         "test": _msn([r["test_ece"] for r in mine]) if has_test else None,
                         "test_scaled": _msn([r["test_ece_scaled"] for r in mine]) if has_test else None},
                 "shots_on": "test" if has_test else "validation",
                 **{k: _msn([r[f"{on}_acc_{k}"] for r in mine])["mean"] for k in metrics.SPLITS},
                 "per_class": {"validation": np.nanmean([r["val_per_class"] for r in mine], 0).tolist(),
                               **({"test": np.nanmean([r["test_per_class"] for r in mine], 0).tolist()}
                                  if has_test else {})},
                 "wins": choice["wins"][get_method(name).label]}
        if name != REFERENCE:
            entry["minus_la"] = {"validation": _paired(rows, name, "val_balanced_accuracy"),
                                 **({"test": _paired(rows, name, "test_balanced_accuracy")} if has_test else {})}
            entry["ece_minus_la"] = {"validation": _paired(rows, name, "val_ece"),
                                     **({"test": _paired(rows, name, "test_ece")} if has_test else {})}
        methods_out[name] = entry
    split_counts = metrics.shot_split(data.counts)
    return {"data": {**{k: v for k, v in data.identity().items() if k != "content_hash"}, "source": data.source,
                     "n_test": None if not has_test else int(len(data.y_test)), "info": data.info,
                     "shot_split": split_counts.tolist()},
            "splits": {"n_splits": len(splits), "validation_per_class": np.bincount(
                           data.y_train[splits[0].validation], minlength=data.n_classes).tolist(),
                       "not_validated": [data.class_names[c] for c in splits[0].not_validated]},
            "seeds": sorted({r["seed"] for r in rows}), "methods": methods_out,
            "choice": {**choice, "chosen_on": "validation (carved from training; the test set is never read)"},
            "seconds": seconds, "train_seconds": float(sum(r.get("seconds", np.nan) for r in rows)),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "rows": rows}


def text_table(table: dict) -> str:
    """The decision table as text: validation (and test) balanced accuracy, mean ± sd (n), many / medium / few,
    the paired difference to LA with its 95 % interval, the mean ECE (of the same column; with a test set also
    after temperature scaling fitted on validation, ECE·T), and the choice."""
    has_test = table["data"]["n_test"] is not None
    col = "test" if has_test else "validation"
    lines = [f"{'method':32s}{'validation':>22s}" + (f"{'test':>22s}" if has_test else "")
             + f"{'many':>7s}{'medium':>8s}{'few':>7s}   {col + ' minus LA [95% CI]':34s}{'ECE':>6s}"
             + (f"{'ECE·T':>7s}" if has_test else "")]
    for m in table["methods"].values():
        cell = lambda s: f"{s['mean']:.3f} ± {s['sd']:.3f} ({s['n']})"  # noqa: E731
        d = m.get("minus_la", {}).get("test" if has_test else "validation")
        diff = f"{d['mean']:+.3f} [{d['mean'] - d['half']:+.3f}, {d['mean'] + d['half']:+.3f}]" if d else "(reference)"
        lines.append(f"{m['label']:32s}{cell(m['validation']):>22s}" + (f"{cell(m['test']):>22s}" if has_test else "")
                     + "".join(f"{m[k]:{w}.3f}" if m[k] == m[k] else f"{'--':>{w}s}"
                               for k, w in zip(metrics.SPLITS, (7, 8, 7)))
                     + f"   {diff:34s}{m['ece'][col]['mean']:6.3f}"
                     + (f"{m['ece']['test_scaled']['mean']:7.3f}" if has_test else ""))
    lines.append(f"chosen on validation: {table['choice']['text']}")
    if table["splits"]["not_validated"]:
        lines.append(f"not validated (too few examples): {table['splits']['not_validated']}")
    return "\n".join(lines)


def figures(table: dict) -> list:
    """The report's figures: the decision (validation and test, mean and 95 % t-interval), the paired
    differences to LA, per-class accuracy, and the choice's stability."""
    from .plots import go
    ms = list(table["methods"].values())
    labels = [m["label"] for m in ms]
    has_test = table["data"]["n_test"] is not None
    decision = go.Figure()
    for key, name in (("validation", "validation (carved)"), ("test", "test")):
        if key == "test" and not has_test:
            continue
        s = [m[key] for m in ms]
        half = [interval_half(x) for x in s]
        decision.add_trace(go.Scatter(x=[x["mean"] for x in s], y=labels, mode="markers", name=name,
                                      error_x=dict(type="data", array=half, visible=True)))
    decision.update_layout(title="balanced accuracy: mean and 95 % t-interval over splits and seeds",
                           height=120 + 28 * len(ms), margin=dict(l=220))
    diffs = go.Figure()
    for key in ("validation", "test") if has_test else ("validation",):
        ds = [m["minus_la"][key] for m in ms if "minus_la" in m]
        diffs.add_trace(go.Bar(x=[d["mean"] for d in ds], y=[m["label"] for m in ms if "minus_la" in m],
                               orientation="h", name=key, error_x=dict(type="data", array=[d["half"] for d in ds])))
    diffs.update_layout(title="minus LA, paired by split and seed (95 % t-interval)", barmode="group",
                        height=120 + 40 * len(ms), margin=dict(l=220))
    per_class = go.Figure()
    key = "test" if has_test else "validation"
    names = [f"{c} ({n})" for c, n in zip(table["data"]["class_names"], table["data"]["counts"])]
    for m in ms:
        per_class.add_trace(go.Scatter(x=names, y=m["per_class"][key], mode="lines+markers", name=m["label"]))
    per_class.update_layout(title=f"per-class {key} accuracy (class (training examples), head first by count)",
                            height=420)
    stability = go.Figure(go.Bar(x=labels, y=[m["wins"] for m in ms]))
    stability.update_layout(title=f"splits on which each method has the best validation score "
                                  f"(of {table['splits']['n_splits']})", height=360)
    return [decision, diffs, per_class, stability]


def interval_half(s: dict) -> float:
    """The 95 % t half-width of a ``{"mean", "sd", "n"}`` summary."""
    from scipy import stats
    return float(stats.t.ppf(0.975, s["n"] - 1) * s["sd"] / np.sqrt(s["n"])) if s["n"] > 1 else float("nan")


def report_html(table: dict) -> str:
    """One self-contained page: the choice, the decision table, and :func:`figures` (plotly.js inlined once,
    no outside request)."""
    import plotly.io as pio
    figs = [pio.to_html(f, include_plotlyjs=(i == 0), full_html=False, config={"displaylogo": False})
            for i, f in enumerate(figures(table))]
    d = table["data"]
    warn = (f"<p><b>Not validated</b> (too few training examples to hold one out): "
            f"{html.escape(', '.join(table['splits']['not_validated']))}.</p>" if table["splits"]["not_validated"]
            else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>elm-lite compare: {html.escape(d['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}} pre{{background:#f4f4f4;padding:1em;
overflow-x:auto}}</style></head><body>
<h1>Which long-tail method for {html.escape(d['name'])}?</h1>
<p>{d['kind']}, {len(d['class_names'])} classes, training counts {d['counts']};
test set: {d['n_test'] if d['n_test'] is not None else 'none given'}. Seeds {table['seeds']},
{table['splits']['n_splits']} validation splits carved from the training data
(per class {table['splits']['validation_per_class']}).</p>
<h2>The choice</h2><p><b>{html.escape(table['choice']['text'])}</b> -- chosen on validation only; the test set is
never read by the choice.</p>{warn}
<h2>Decision table</h2><pre>{html.escape(text_table(table))}</pre>
<h2>Figures</h2>{''.join(f'<div class="figure">{f}</div>' for f in figs)}
<p>Written by elm_lite.procedure in {table['seconds']:.0f} s on {html.escape(table['machine'])}.</p>
</body></html>"""


BUNDLED = {"digits-lt": "scikit-learn's handwritten digits, long-tailed (owndata.digits_lt)"}


def seed_list(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)`` (an argparse type: seeds are integers >= 0)."""
    import argparse
    try:
        seeds = tuple(int(v) for v in text.split(","))
    except ValueError:
        seeds = (-1,)
    if min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds >= 0 such as 0,1,2, got {text!r}")
    return seeds


def add_compare_parser(sub) -> None:
    """The ``compare`` subcommand of ``elm-lite`` (its options, on the CLI's subparsers ``sub``)."""
    p = sub.add_parser("compare", help="the capstone's procedure on your data: methods x seeds x carved "
                                       "validation splits, table.json and report.html")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a .csv (numeric columns + a label column), an .npz (x_train, y_train, "
                                       "optional x_test, y_test) or a folder with one subfolder of images per class")
    source.add_argument("--dataset", choices=sorted(BUNDLED), help="a bundled real set (no download)")
    p.add_argument("--label-column", default="label", help="the CSV's label column (default label)")
    p.add_argument("--test", help="a test set in the same form as --data (read only for the test column)")
    p.add_argument("--methods", default=",".join(CAPSTONE_METHODS),
                   help=f"comma-separated registry names (default: the capstone's {','.join(CAPSTONE_METHODS)})")
    p.add_argument("--seeds", type=seed_list, default=(0, 1, 2), help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--splits", type=int, default=VALIDATION_SPLITS["n_splits"], help="carved validation splits")
    p.add_argument("--epochs", type=int, help="override the model recipe's epochs (e.g. 1 for a smoke run)")
    p.add_argument("--out", required=True, help="folder for runs.json, table.json and report.html")
    p.add_argument("--resume", action="store_true", help="continue an interrupted comparison in OUT")
    p.set_defaults(device="cpu")


def run_from_args(args) -> None:
    """``elm-lite compare``: load, compare, print the table and where the report is."""
    from .owndata import digits_lt, load_dataset
    if args.dataset:
        if args.test:
            raise ValueError("--test goes with --data; a bundled --dataset brings its own test set.")
        data = digits_lt()
    else:
        data = load_dataset(args.data, label_column=args.label_column, test=args.test)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    table = compare_methods(data, names, seeds=args.seeds, out=args.out, resume=args.resume, n_splits=args.splits,
                            **({"epochs": args.epochs} if args.epochs else {}))
    print(text_table(table))
    print(f"wrote {args.out}/table.json and {args.out}/report.html ({table['seconds']:.0f} s)")
