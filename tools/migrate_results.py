"""Migrate the shipped results files written before runs recorded their method's constants: every run
(or row) gets ``method_identity`` (:meth:`elm_lite.methods.Method.identity`: registry name, loss, all
constants -- the margin's form and placement, the contrastive averaging --, views, recipe entries), and the
ELM runs trained before the margin study are named for the form they trained, ``elm-positive`` (the margin
on the positives; labelled "ELM (margin on positives)"), not ``elm`` (today's centroid form). What those
runs trained is known from the course's documents of the time (docs/margin_study.md, part 1: the
shipped form was ``placement="positive"``), not from the files: each migrated file says so in ``migrated``.
Full-scale runs name their method under ``"method"`` (results schema 5; it was ``"loss"``), and their margin
summaries lose ``tail_head_ratio`` (a ratio of margins means nothing; every shipped one was nan).
Idempotent; tests/test_shipped_results.py checks that every shipped run carries its identity.

    python tools/migrate_results.py
"""
from __future__ import annotations

import io
import json
import pathlib

import numpy as np

from elm_lite import methods
from elm_lite.experiments import summarize

MEASURED = pathlib.Path(__file__).resolve().parents[1] / "elm_lite" / "measured"
NOTE = ("method_identity added after the runs (tools/migrate_results.py) from the registry (elm_lite.methods); "
        "the ELM runs of this file trained before the margin study, with the margin on the positives "
        "(docs/margin_study.md, part 1): registry name elm-positive")
FULL_SCALE_NOTE = NOTE + "; the method's name moved from \"loss\" to \"method\" (results schema 5)"
FIRST_FORM = methods.get("elm-positive")
# the CPU ELM variants (benchmarks/cifar_cpu_comparison.py --variants), as they were run: first-form ELM
CPU_VARIANTS = {
    "ELM, lambda 0.25": FIRST_FORM.variant("ELM (margin on positives), lambda 0.25", lam=0.25),
    "ELM, temperature 0.5": FIRST_FORM.variant("ELM (margin on positives), temperature 0.5", temperature=0.5),
    "ELM, no projection head": FIRST_FORM.variant("ELM (margin on positives), no projection head",
                                                  recipe={"projection_dim": None}),
    "ELM, margin on negatives": FIRST_FORM.variant("ELM (margin on negatives)", placement="negative"),
}
CPU_COLUMNS = ("balanced_accuracy", "acc_many", "acc_medium", "spread_medium", "spread_many")


def _full_scale(name: str) -> None:
    path = MEASURED / name
    f = json.loads(path.read_text())
    f["runs"] = [{("method" if k == "loss" else k): v for k, v in run.items()} for run in f["runs"]]  # key order kept
    for run in f["runs"]:
        if run["method"] == "elm" and "method_identity" not in run:
            run["method"] = FIRST_FORM.name
        run["method_identity"] = methods.get(run["method"]).identity()
        run.get("margin", {}).pop("tail_head_ratio", None)
    f["migrated"] = FULL_SCALE_NOTE
    path.write_text(json.dumps(f, indent=1) + "\n")


def _cpu(name: str, by_label: dict) -> None:
    path = MEASURED / name
    f = json.loads(path.read_text())
    for row in f["rows"]:
        method = by_label[row["method"]]
        row["method"], row["method_identity"] = method.label, method.identity()
    f["table"] = summarize(f["rows"], CPU_COLUMNS)
    f["migrated"] = NOTE
    path.write_text(json.dumps(f, indent=1) + "\n")


def _embeddings(name: str) -> None:
    path = MEASURED / name
    with np.load(path, allow_pickle=False) as z:
        arrays = {k.replace("elm_", f"{FIRST_FORM.name}_", 1) if k.startswith("elm_") else k: z[k] for k in z.files}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def main() -> None:
    done = {m.label: m for m in (*map(methods.get, methods.METHODS), *CPU_VARIANTS.values())}
    _full_scale("cifar_lt_gpu.json")
    _full_scale("cifar10_lt_gpu_table_200ep.json")
    _cpu("cifar10_lt_cpu.json", {**done, "ELM": FIRST_FORM})
    _cpu("cifar10_lt_cpu_elm_variants.json", {**done, **CPU_VARIANTS})
    _embeddings("cifar_lt_gpu_embeddings.npz")


if __name__ == "__main__":
    main()
