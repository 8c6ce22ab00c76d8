"""Notebook parameters, checked where they enter: the first code cell after each notebook's
``parameters`` cell calls :func:`check_parameters`, so that a bad value -- or papermill's
``-r SMOKE False``, which passes the *text* "False" -- is refused under the notebook's own name
(``N_EVAL``, not the ``n_per_class`` of a function deep inside) before anything runs.

    check_parameters("02", globals())
"""
from __future__ import annotations

from .data import PROFILES, TOY_KINDS
from .methods import FULLSCALE_METHODS
from .recipes import APP_RHO_MAX, FLAG, SEED, TEXT, TOY_N_MAX, integer, number, numbers, one_of, or_none

# The ranges of values that feed an app are its sliders' (elm_lite.widgets; a slider would clamp a value outside,
# and rho = 1e9 would build 10^9 examples): rho in [1, 1000], tau in [0, 3], lambda in [0, 2], delta_max in [0, 1],
# temperature in [0.05, 1].

# every notebook's parameters cell, name by name (tests/test_notebooks.py keeps these in step with the cells)
NOTEBOOKS = {
    "01": {"SMOKE": FLAG, "SEED": SEED, "KIND": one_of(*TOY_KINDS), "N_CLASSES": integer(2, 20),
           "N_MAX": integer(1, TOY_N_MAX), "RHO": number(1, APP_RHO_MAX), "PROFILE": one_of(*PROFILES),
           "EPOCHS": integer(1),
           "BATCH_SIZE": integer(1), "MANY": integer(1), "FEW": integer(1), "INTERACTIVE": FLAG},
    "02": {"SMOKE": FLAG, "SEED": SEED, "N_CLASSES": integer(2, 20), "N_MAX": integer(1, TOY_N_MAX),
           "RHO": number(1, APP_RHO_MAX), "TAU": number(0, 3), "EPOCHS": integer(1),
           "N_EVAL": integer(1, 1_000_000),
           "N_SEEDS": integer(1),
           "SVM_WEIGHT_DECAY": number(0),
           "INTERACTIVE": FLAG},
    "03": {"SMOKE": FLAG, "SEED": SEED, "EMBED_DIM": integer(2, 1024), "EPOCHS": integer(1),
           "SNAPSHOT_EVERY": integer(1)},
    "04": {"SMOKE": FLAG, "SEED": SEED, "N_SEEDS": integer(1), "EPOCHS": integer(1), "LAM": number(0, 2),
           "DELTA_MAX": number(0, 1), "TEMPERATURE": number(0.05, 1), "SWEEP_LAMS": numbers(0, 2),
           "GRID_DELTAS": numbers(0, 1), "INTERACTIVE": FLAG},
    "05": {"SMOKE": FLAG, "SEED": SEED, "N_SEEDS": integer(1), "EPOCHS": integer(1), "RUN_CIFAR": FLAG,
           "CIFAR_NPZ": or_none(TEXT), "CIFAR_EPOCHS": integer(1), "INTERACTIVE": FLAG},
    "06": {"SMOKE": FLAG, "DATASET": one_of("cifar10-lt", "cifar100-lt"), "RHO": number(1),
           "METHOD": one_of(*FULLSCALE_METHODS), "DEVICE": TEXT, "EPOCHS": or_none(integer(1)),
           "MODEL": or_none(one_of("resnet32", "small_cnn")), "CIFAR_NPZ": or_none(TEXT), "ROOT": TEXT,
           "DOWNLOAD": FLAG, "OUT": or_none(TEXT), "SEED": SEED},
    "07": {"SMOKE": FLAG, "SEED": SEED, "N_SEEDS": integer(2), "EPOCHS": integer(1),
           "CONFIDENCE": number(0, 0.999, low_open=True), "REAL_SEEDS": integer(1)},
    "08": {"SMOKE": FLAG, "N_SEEDS": integer(1), "N_SPLITS": integer(1), "EPOCHS": integer(1), "OUT": or_none(TEXT)},
    "A1": {"SMOKE": FLAG},
    "workshop": {"SMOKE": FLAG, "RECOMPUTE": FLAG, "STATIC": FLAG},
}


def check_parameters(notebook: str, values: dict) -> None:
    """Refuse any parameter of ``notebook`` (a key of :data:`NOTEBOOKS`) whose value in ``values``
    (the notebook's ``globals()``) is missing, of the wrong type or out of range, with a
    ``ValueError`` naming the parameter, the value, what it must be and how to pass it."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"notebook must be one of {sorted(NOTEBOOKS)}, got {notebook!r}.")
    for name, (ok, expectation) in NOTEBOOKS[notebook].items():
        if name not in values:
            raise ValueError(f"parameter {name} is missing: the notebook's parameters cell defines it; run that "
                             "cell first.")
        value = values[name]
        if ok(value):
            continue
        hint = ""
        if isinstance(value, str) and "list" in expectation:
            hint = (f" papermill's -p and -r pass a list as text; pass it as YAML: papermill -y "
                    f"\"{name}: {value if value.lstrip().startswith('[') else '[0.5, 1.0]'}\".")
        elif isinstance(value, str) and (expectation.startswith("True") or "integer" in expectation
                                         or "number" in expectation):
            hint = (f" papermill's -r passes text; pass it with -p (papermill -p {name} ... reads True, False, "
                    "None and numbers).")
        raise ValueError(f"parameter {name} must be {expectation}, got {value!r} ({type(value).__name__}).{hint}")
