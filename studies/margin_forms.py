"""Which form of class-dependent embedding margin changes the geometry? (docs/margin_study.md)

For every seed s: the toy problem of notebook 04 drawn with seed s, and every (form, delta_max)
ELM variant trained on it with model seed s, all together (``experiments.compare``). Effects are
paired by seed: a form at ``delta_max`` minus the same form at ``delta_max = 0``; mean and 95 %
t-interval over the seeds. Writes ``elm_lite/measured/margin_study.json`` and prints the tables.

    python studies/margin_forms.py                 # 6 seeds, three regimes (about 3 minutes on 2 cores)
    python studies/margin_forms.py --seeds 0,1 --regimes separated --out /tmp/m.json   # a quick look
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import numpy as np
from margin_form_losses import PLACEMENTS, study_method
from scipy import stats

from elm_lite import make_toy, methods
from elm_lite.engine.runfiles import json_safe
from elm_lite.experiments import compare
from elm_lite.recipes import EMBEDDING_TOY

DELTAS = (0.0, 0.25, 0.5, 1.0)
# Added after the first look at the results (docs/margin_study.md, part 2): the hinge's loss is in
# cosine units, the softmax forms' in cosine / T units, so at lambda = 1 the hinge pulls 1/T = 10
# times more weakly; this variant gives it the same scale.
POST_HOC_FORMS = {"hinge-lam10": dict(placement="hinge", lam=10.0)}
# Reference methods trained beside the variants on the same data and seeds (levels, not effects).
REFERENCES = ("la",)
# regime -> (data settings, training recipe entries) changed from notebook 04's
REGIMES = {"separated": ({}, {}), "overlapping": ({"separation": 2.0}, {}),
           # added after the first look (docs/margin_study.md, part 2): a third of the epochs, so that
           # the loss cannot saturate on the training set
           "short": ({}, {"epochs": 10})}
MEASURES = ("train_margin_few", "margin_few", "spread_few", "balanced_accuracy", "acc_few")
RESULTS = pathlib.Path(__file__).resolve().parents[1] / "elm_lite" / "measured" / "margin_study.json"


def variants(forms=PLACEMENTS, deltas=DELTAS) -> dict:
    """``{"<form> d=<delta>": ELM method}`` for every form and margin, then the reference methods."""
    elm = study_method(methods.get("elm"))     # the core's two forms and the study's three
    constants = {form: POST_HOC_FORMS.get(form, {"placement": form}) for form in forms}
    table = {f"{form} d={d:g}": elm.variant(f"ELM {form} {d:g}", delta_max=d, **constants[form])
             for form in forms for d in deltas}
    return {**table, **{name: methods.get(name) for name in REFERENCES}}


def levels(rows: list[dict]) -> dict:
    """``{method: {measure: mean and 95 % t-interval over seeds}}`` (absolute values)."""
    out = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        out[name] = {m: interval([r[m] for r in mine]) for m in MEASURES}
    return out


def interval(diffs) -> dict:
    """Mean and 95 % t-interval of paired differences."""
    diffs = np.asarray(diffs, dtype=float)
    half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs))
    return {"mean": float(diffs.mean()), "low": float(diffs.mean() - half), "high": float(diffs.mean() + half)}


def effects(rows: list[dict], forms, deltas) -> dict:
    """``{form: {delta: {measure: interval of (value at delta - value at 0)}}}`` paired by seed."""
    value = {(r["method"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = {}
    for form in forms:
        base = [value[(f"{form} d=0", s)] for s in seeds]
        out[form] = {f"{d:g}": {m: interval([value[(f"{form} d={d:g}", s)][m] - b[m] for s, b in zip(seeds, base)])
                                for m in MEASURES} for d in deltas if d}
    return out


def run_regime(regime: str, seeds, forms, deltas) -> list[dict]:
    table, (settings, recipe) = variants(forms, deltas), REGIMES[regime]
    rows = []
    for seed in seeds:
        data = make_toy(**{**EMBEDDING_TOY, **settings}, seed=seed)
        rows += compare(table, data, seeds=(seed,), **recipe)
    return rows


def print_effects(regime: str, result: dict, deltas) -> None:
    print(f"\n{regime}: effect of delta_max (value at delta minus value at 0, same seed; mean [95% CI])")
    for form, by_delta in result.items():
        for d in (f"{d:g}" for d in deltas if d):
            cells = "  ".join(f"{m} {e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"
                              for m, e in by_delta[d].items())
            print(f"  {form:9s} d={d:4s} {cells}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--forms", default=",".join((*PLACEMENTS, *POST_HOC_FORMS)))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    forms = args.forms.split(",")
    out = {"about": "docs/margin_study.md; written by studies/margin_forms.py", "deltas": list(DELTAS),
           "forms": forms, "post_hoc_forms": POST_HOC_FORMS, "references": list(REFERENCES), "seeds": seeds,
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "regimes": {}}
    for regime in args.regimes.split(","):
        start = time.perf_counter()
        rows = run_regime(regime, seeds, forms, DELTAS)
        result = effects(rows, forms, DELTAS)
        out["regimes"][regime] = {"settings": {**EMBEDDING_TOY, **REGIMES[regime][0]}, "recipe": REGIMES[regime][1],
                                  "rows": rows, "effects": result,
                                  "levels": levels(rows), "seconds": round(time.perf_counter() - start, 1)}
        print_effects(regime, result, DELTAS)
        print(f"{regime}: levels (mean [95% CI])")
        for name, by_measure in out["regimes"][regime]["levels"].items():
            print(f"  {name:16s} " + "  ".join(f"{m} {e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"
                                                for m, e in by_measure.items()))
        print(f"  ({len(rows)} runs in {out['regimes'][regime]['seconds']} s)")
    pathlib.Path(args.out).write_text(json.dumps(json_safe(out), indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
