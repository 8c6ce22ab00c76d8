"""Validation carved from the training data -- what real data has instead of the toy problem's fresh
validation sample (:func:`elm_lite.data.validation_sample`, a luxury only a known generator gives).

Stratified by class: class ``c`` gives ``round(fraction * n_c)`` examples (at least one) to validation
and keeps at least ``min_train`` for training. A class too small for both is *not validated* -- named in
:attr:`Split.not_validated` and in a warning, never silently dropped: it still trains. The validation
score is balanced accuracy (:func:`~elm_lite.metrics.balanced_accuracy`: the mean recall of the classes
present, here the validated ones), so every class counts equally however many examples it gave.
:func:`carve_splits` repeats the carving (seeds ``0..n_splits-1``) so that a choice
comes with its stability (:func:`choose`: "LA chosen on 4 of 5 splits"). Nothing here reads a test set.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .recipes import VALIDATION_SPLITS

_V = VALIDATION_SPLITS


@dataclass(frozen=True)
class Split:
    """One carving of a training set: indices ``train`` and ``validation`` into it, and the classes
    (indices) with no validation example."""
    seed: int
    train: np.ndarray
    validation: np.ndarray
    not_validated: tuple[int, ...]


def carve_validation(y, n_classes: int | None = None, *, fraction: float = _V["fraction"],
                     min_train: int = _V["min_train"], seed: int = 0) -> Split:
    """Carve a stratified validation split out of training labels ``y`` ``(N,)`` (see the module)."""
    y = np.asarray(y)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}; 0.2 holds out a fifth of each class.")
    if isinstance(min_train, bool) or not isinstance(min_train, int) or min_train < 1:
        raise ValueError(f"min_train must be an integer >= 1, got {min_train!r}.")
    n_classes = n_classes or int(y.max()) + 1
    rng = np.random.default_rng(seed)
    train, validation, not_validated = [], [], []
    for c in range(n_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(1, round(fraction * len(idx))), len(idx) - min_train)
        if n_val < 1:
            not_validated.append(c)
            n_val = 0
        validation.append(idx[:n_val])
        train.append(idx[n_val:])
    return Split(seed, np.sort(np.concatenate(train)), np.sort(np.concatenate(validation)), tuple(not_validated))


def carve_splits(y, n_classes: int | None = None, *, n_splits: int = _V["n_splits"],
                 fraction: float = _V["fraction"], min_train: int = _V["min_train"], class_names=None) -> list[Split]:
    """:func:`carve_validation` with seeds ``0..n_splits-1``; warns once, naming them, about classes
    too small to validate (``class_names`` for the names, else indices)."""
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be an integer >= 1 (5 or more to see how stable a choice is), got "
                         f"{n_splits!r}.")
    splits = [carve_validation(y, n_classes, fraction=fraction, min_train=min_train, seed=s) for s in range(n_splits)]
    if splits[0].not_validated:
        names = [class_names[c] if class_names is not None else c for c in splits[0].not_validated]
        warnings.warn(f"classes {names} have too few training examples to keep {min_train} for training and "
                      "validate on one: they train, but the validation score leaves them out (lower min_train, "
                      "or collect more examples of them).", UserWarning, stacklevel=2)
    return splits


def choose(rows: list[dict], column: str = "val_balanced_accuracy") -> dict:
    """The method with the best mean ``column`` over all rows (``{"method", "split", "seed", column}``),
    and how stable that choice is: on each split, the method(s) with the best mean over that split's seeds
    (a tie credits each tied method). Returns ``{"method", "wins" {method: splits won}, "n_splits", "text"}``."""
    names = list(dict.fromkeys(r["method"] for r in rows))
    splits = sorted({r["split"] for r in rows})
    mean = {n: np.mean([r[column] for r in rows if r["method"] == n]) for n in names}
    best = max(names, key=lambda n: mean[n])
    wins = dict.fromkeys(names, 0)
    for s in splits:
        on_s = {n: np.mean([r[column] for r in rows if r["method"] == n and r["split"] == s]) for n in names}
        top = max(on_s.values())
        for n in names:
            wins[n] += bool(np.isclose(on_s[n], top, rtol=0, atol=1e-12))
    return {"method": best, "wins": wins, "n_splits": len(splits),
            "text": f"{best} chosen (best mean validation score); best or tied on {wins[best]} of {len(splits)} splits"}
