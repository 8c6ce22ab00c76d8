"""Results: the declared schema of a run's results (``results.json``), read by every consumer,
and the measured results shipped with the course (``elm_lite/measured/``, package data).

:func:`~elm_lite.engine.fullscale.train_cifar` writes a run's results; the CLI, the table, the collect
tool, the shipped-results tests and notebook 06 read them through :func:`check_run_results`.
"""
from __future__ import annotations

import io
import json
from importlib import resources
from typing import TypedDict

import numpy as np

# 1: files written before the schema was declared (no "schema_version" key); 2: embedding margin;
# 3: spread and margin of the contrastive projection, for methods that have one; 4: the run's identity
# (fullscale.run_identity: method constants, data seed and content hash, recipe), strict JSON (null for nan);
# 5: the method's name under "method" (it was "loss"; the shipped files were migrated, tools/migrate_results.py),
# and margins summarised by fullscale.margin_summary (split means, min, max; no tail / head ratio)
SCHEMA_VERSION = 5


class RunResults(TypedDict, total=False):
    """One training run, test-set measurements included. Accuracies are fractions in [0, 1]."""
    schema_version: int
    dataset: str                     # "cifar10" or "cifar100"
    rho: float                       # imbalance ratio of the training subset
    method: str                      # the method's registry name (elm_lite.methods)
    seed: int
    recipe: dict                     # the full recipe the run trained with
    identity: dict                   # what a finished run must match to be reused (schema 4)
    counts: list                     # training images per class (C,)
    source: str                      # where the images came from
    balanced_accuracy: float
    per_class_accuracy: list         # (C,)
    shot_accuracy: dict              # {"many", "medium", "few"}; nan for an empty split (null in the file)
    per_class_spread: list           # (C,) backbone-feature spread
    spread: dict                     # {"many", "medium", "few", "tail_head_ratio"}
    per_class_margin: list           # (C,) backbone-feature embedding margin (schema 2)
    margin: dict                     # its many / medium / few means (schema 2), min and max (schema 5)
    per_class_projection_spread: list  # (C,) spread of the contrastive projection (schema 3; methods with one)
    projection_spread: dict
    per_class_projection_margin: list  # (C,) its embedding margin
    projection_margin: dict          # as margin
    history: dict                    # elm_lite.train.History.as_dict()
    seconds_per_epoch: float         # training time only
    first_epoch_seconds: float       # holds compilation
    steady_seconds_per_epoch: float
    total_seconds: float
    hardware: str
    versions: dict
    compile: bool
    bf16: bool


REQUIRED = ("dataset", "rho", "method", "seed", "recipe", "counts", "balanced_accuracy", "per_class_accuracy",
            "shot_accuracy", "per_class_spread", "spread", "history", "seconds_per_epoch", "hardware")


def check_run_results(obj: dict, where: str = "results") -> RunResults:
    """``obj`` as :class:`RunResults`: refuses a newer schema than this package reads and a file
    that lacks a required field; version-1 files (before the schema) read as they are."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a JSON object (a run's results), got {type(obj).__name__}.")
    version = obj.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"{where} has schema_version {version!r}; this elm_lite reads up to {SCHEMA_VERSION}: "
                         "upgrade elm_lite.")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"{where} is not a run's results: it lacks {missing}.")
    return RunResults(**{**obj, **{k: _nan_for_null(obj[k]) for k in MEASURES if k in obj}})


# measurements that may hold nan (an empty split): JSON null in the file, nan when read
MEASURES = ("shot_accuracy", "per_class_spread", "spread", "per_class_margin", "margin", "per_class_projection_spread",
            "projection_spread", "per_class_projection_margin", "projection_margin")


def _nan_for_null(value):
    """JSON ``null`` (how :func:`~elm_lite.engine.runfiles.save_atomic` writes nan) read back as nan,
    in ``value`` and everything it holds."""
    if value is None:
        return float("nan")
    if isinstance(value, dict):
        return {k: _nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_for_null(v) for v in value]
    return value


def load_results(name: str) -> dict:
    """A measured results file shipped with the package (``elm_lite/measured/``), read from the
    installed package -- a checkout or a wheel, no network. ``name`` is one of those files' names (any
    other is refused with the list). A ``.json`` file gives its object (``null`` read as nan, the way
    it was measured; older files hold ``NaN``), a ``.npz`` file a dict of its arrays."""
    shipped = resources.files("elm_lite") / "measured"
    names = sorted(p.name for p in shipped.iterdir() if p.name.endswith((".json", ".npz")))
    if name not in names:  # only these names: never a path, never another file of the folder
        raise ValueError(f"name={name!r} is not a shipped results file; load_results reads one of {names}.")
    raw = (shipped / name).read_bytes()
    if name.endswith(".npz"):
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    return _nan_for_null(json.loads(raw))  # measurements only: null stands for nan (an empty split)
