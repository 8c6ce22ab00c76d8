"""Every recipe of the course, one dictionary per scale, each knob with its meaning and range.

Function defaults and the command line read from here; change a recipe here and every notebook,
benchmark and CLI run follows. This module imports nothing from the package (it is the bottom
layer), so any module may read it.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

# ----------------------------------------------------------------------------- toy scale (notebooks 01-02)

# The 2-D toy problem of notebooks 01-02, as their apps (elm_lite.widgets) and the workshop's first two
# panels (elm_lite.workshop) draw it; the notebooks' parameters cells start from the same values.
TOY_2D = dict(
    kind="gaussian",   # Gaussian blobs in the plane (notebook 01 also draws "spirals" and "rings")
    n_classes=5,       # classes; class 0 is the head
    n_max=500,         # head-class training examples
    rho=100,           # imbalance ratio n_max / n_min
)
TOY_2D_N_EVAL = 5000   # fresh balanced evaluation points per class behind the apps' errors (Monte Carlo)
# Notebook 01: plain ERM on 2-D Gaussian blobs, mini-batches so that "what a batch holds" is real.
LONGTAIL_TOY = dict(
    epochs=200,        # passes over the training set
    lr=0.05,           # Adam learning rate
    batch_size=32,     # mini-batch size (the readout counts tail examples per batch)
)
# Notebook 02: logit-margin losses on 2-D Gaussian blobs, full batch (deterministic, fast).
LOGIT_TOY = dict(
    epochs=100,        # passes over the training set (full batch: one step each)
    lr=0.1,            # Adam learning rate
    weight_decay=0.0,  # L2 penalty (the hinge methods set their own, as an SVM pairs with its norm)
)

# ----------------------------------------------------------------------------- toy scale (notebooks 03-05)

# The embedding toy problem of notebooks 03-05.
EMBEDDING_TOY = dict(
    kind="gaussian",   # isotropic Gaussian classes with known densities
    n_classes=8,       # classes; counts 500, 258, 134, 69, 35, 18, 9, 5 with the values below
    n_max=500,         # head-class training examples (100-2000)
    rho=100,           # imbalance ratio (1-1000)
    dim=16,            # input dimension (>= n_classes): high enough that a few examples under-cover a class
    separation=3.0,    # distance of each class mean from the origin (2-5: harder to easier)
)
# How a toy embedding model (MLP, normalised embedding) is trained on it.
EMBEDDING_RECIPE = dict(
    embed_dim=8,       # normalised embedding dimension (3 is too crowded for 8 classes, see notebook 04)
    hidden=64,         # MLP width
    epochs=30,         # passes over the training set (10-200)
    batch_size=128,    # mini-batch size; with 5 tail examples most batches hold no tail positive
    lr=0.01,           # Adam learning rate (1e-3 - 3e-2)
    jitter=1.0,        # std of the Gaussian input jitter of each view of a two-view method (0-1.5)
    weight_decay=0.0,  # L2 penalty (weight balancing sets its own, chosen on validation)
)

# ----------------------------------------------------------------------------- ELM constants

# The course's recommended ELM constants: our reading of arXiv 2204.13208 (the paper's own
# constants were not available to us), chosen on the toy problem of notebooks 04-05; the margin's
# form by the margin study (docs/margin_study.md: the only form whose margin changes anything).
# ``ELMLoss``'s defaults are these values.
ELM_RECOMMENDED = dict(
    tau=1.0,                 # logit-adjustment strength (0-3)
    lam=1.0,                 # weight of the embedding term (0-2); 0 = logit adjustment alone
    temperature=0.1,         # contrastive temperature (0.05-1)
    delta_max=0.5,           # embedding margin of the rarest class, cosine units (0-1)
    anchor_average="class",  # average the contrastive loss per class first ("all": per anchor)
    placement="centroid",    # margin between an embedding and its class's centre in the batch
)

# How a class-dependent margin grows as a class gets rarer: proportional to n_y^(-1/4), LDAM's trade-off
# (the embedding margins of ELM, and the hinge's "n^-1/4" schedule).
MARGIN_SCHEDULE = "n^-1/4"

# ----------------------------------------------------------------------------- decoupled training

# Decoupling representation and classifier (Kang et al. 2020), at every scale: after training with
# plain CE, either re-train the classifier alone on the frozen features with class-balanced sampling
# (cRT) or rescale its weight vectors (tau-normalisation).
DECOUPLING = dict(
    crt_epochs=10,       # epochs of classifier re-training (the paper's 10)
    crt_lr=0.01,         # its Adam learning rate
    crt_batch_size=128,  # its mini-batch size
    kappa=1.0,           # tau-normalisation's exponent: w_c / ||w_c||^kappa (0: unchanged, 1: unit norm)
)

# Weight balancing (Alshammari et al. 2022), two stages: (1) CE with a tuned weight decay; (2) the
# classifier alone re-trained on the frozen features with the class-balanced loss (effective number),
# weight decay and MaxNorm (each class's weight vector projected back to norm <= max_norm after every
# step). The paper also applies MaxNorm in stage 1; the course keeps stage 1 the common CE recipe.
WEIGHT_BALANCING = dict(
    weight_decay=1e-4,                           # stage 1 and 2 (toy, Adam): balancing.choose_weight_decay's pick
                                                 # on the toy's validation sample (tests/test_practitioner_methods.py)
    weight_decay_grid=(0.0, 1e-4, 1e-3, 1e-2),   # what balancing.choose_weight_decay tries
    stage2_epochs=100,                           # full-batch steps of stage 2
    stage2_lr=0.01,                              # its Adam learning rate
    max_norm=2.0,                                # the per-class weight-norm cap of stage 2 (toy validation,
                                                 # 3 seeds: cap 0.5 0.731, 1 0.747, 2 0.759, 4 0.763, none 0.758)
)

# ----------------------------------------------------------------------------- real images

# CPU-sized CIFAR-10-LT runs (notebook 05, benchmarks/cifar_cpu_comparison.py).
IMAGE_RECIPE = dict(
    model="small_cnn",   # "small_cnn" (CPU-sized, 0.1 M parameters) or "resnet32" (0.46 M)
    epochs=10,           # passes over CIFAR-10-LT (10 is "a few": minutes per run on 2 CPU cores)
    batch_size=128,      # mini-batch size
    lr=1e-3,             # Adam learning rate
    weight_decay=5e-4,   # L2 penalty
    projection_dim=64,   # projection head for the contrastive term (None: contrast the features)
)

# The standard CIFAR-LT recipe (LDAM-DRW and later work) for full-scale GPU runs.
CIFAR_RECIPE = dict(
    model="resnet32",         # ResNet-32, 0.46 M parameters ("small_cnn" for CPU-sized runs)
    epochs=200,               # passes over the long-tailed training set
    batch_size=128,           # per step (under torchrun the global batch, split across processes)
    lr=0.1,                   # SGD learning rate, momentum 0.9
    weight_decay=2e-4,        # L2 penalty
    warmup_epochs=5,          # linear warm-up from lr/5 to lr
    decay_at=(0.8, 0.9),      # fractions of the run where lr drops (epochs 160 and 180 of 200)
    decay_to=(0.01, 0.0001),  # ... to these multiples of lr
    projection_dim=128,       # projection head for the embedding term (ELM / SupCon)
    view_augment="crop_flip", # two-view (contrastive) runs: "crop_flip", or "strong" (SimCLR-style:
                              # resized crop, colour jitter, greyscale), as contrastive methods use
)

# Epochs between a full-scale run's checkpoints (train_cifar, train_table, --checkpoint-every): an
# interrupted 200-epoch run loses at most this many epochs.
CHECKPOINT_EVERY = 10

# LDAM-DRW's deferred re-weighting starts at this fraction of the run (epoch 160 of 200, as in
# Cao et al. 2019); the one DRW rule of the course, used at every scale.
DRW_START = 0.8


def drw_epoch(epochs: int) -> int:
    """The first epoch (counting from 1) of class-balanced re-weighting in a run of ``epochs``."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1 to place LDAM-DRW's re-weighting, got {epochs!r}.")
    return max(1, round(DRW_START * epochs))


# ----------------------------------------------------------------------------- a learner's own data

# `elm-lite compare` (elm_lite.procedure) on feature vectors (tabular data, embeddings): the toy's MLP,
# wider, on standardised features; its keys are those of EMBEDDING_RECIPE. Images use IMAGE_RECIPE.
OWN_FEATURES_RECIPE = dict(
    embed_dim=32,      # normalised embedding dimension
    hidden=128,        # MLP width
    epochs=50,         # passes over the carved training part
    batch_size=32,     # mini-batch size (small: a few hundred examples still make hundreds of steps)
    lr=3e-3,           # Adam learning rate
    jitter=0.3,        # std of the Gaussian jitter of each view (standardised features: std 1 per feature)
)
# Validation carved from the training data (elm_lite.splits).
VALIDATION_SPLITS = dict(
    n_splits=5,        # repeated carvings: a choice comes with how many of them it wins
    fraction=0.2,      # share of each class held out for validation (at least one example)
    min_train=2,       # training examples every class keeps; a class that cannot also validate is named
)


# ----------------------------------------------------------------------------- what a setting may be

# One vocabulary for every check of a setting -- fit's arguments, a full-scale recipe, a notebook's
# parameters (elm_lite.params): a kind is ``(test, expectation)``, and :func:`check` refuses a value in
# one sentence that names the setting, what it must be and what it got.

def _is_int(v) -> bool:   # numpy integers too (np.int64(2) means 2); a bool is no count
    return isinstance(v, Integral) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


# each kind: (test, expectation)
FLAG = (lambda v: isinstance(v, bool), "True or False")
SEED = (lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)")
TEXT = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")


def integer(low: int, high: int | None = None) -> tuple:
    return (lambda v: _is_int(v) and v >= low and (high is None or v <= high),
            f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""))


def number(low: float, high: float = math.inf, low_open: bool = False) -> tuple:
    return (lambda v: _is_number(v) and (v > low if low_open else v >= low) and v <= high,
            f"a finite number {'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else ""))


def one_of(*options) -> tuple:
    return (lambda v: isinstance(v, str) and v in options, f"one of {list(options)}")


def numbers(low: float, high: float) -> tuple:
    return (lambda v: isinstance(v, (list, tuple)) and len(v) > 0
            and all(_is_number(x) and low <= x <= high for x in v),
            f"a non-empty list of numbers in [{low:g}, {high:g}]")


def or_none(kind: tuple) -> tuple:
    return (lambda v: v is None or kind[0](v), f"None or {kind[1]}")


def tensor(shape: tuple, dtype: str = "float", finite: bool = False, below: float | None = None,
           noun: str = "tensor") -> tuple:
    """A torch tensor (``noun="array"``: a NumPy array) of ``shape`` -- an int entry is that size, a name
    any size >= 1 -- with ``dtype`` ``"float"``, ``"int"`` (any width) or ``"number"`` (either); with
    ``finite`` no NaN or inf; with ``below`` values in ``[0, below)``. The last two read the values (on a GPU
    one host sync each): pass them only where the values must be read."""
    kinds = ("int", "float") if dtype == "number" else (dtype,)

    def ok(v) -> bool:
        if not (hasattr(v, "requires_grad" if noun == "tensor" else "shape") and len(v.shape) == len(shape)
                and any(k in str(v.dtype) for k in kinds)
                and all(size >= 1 if isinstance(want, str) else size == want for size, want in zip(v.shape, shape))):
            return False
        v = v.detach() if hasattr(v, "detach") else v                       # values only, no autograd graph
        return ((not finite or bool(abs(v).max() < math.inf))
                and (below is None or bool(v.min() >= 0) and bool(v.max() < below)))
    words = ("non-empty " if any(isinstance(n, str) for n in shape) else "") + {
        "float": "floating-point", "int": "integer", "number": "numeric"}[dtype]
    size = str(tuple(shape)).replace("'", "")                              # (batch, 5), not ('batch', 5)
    return ok, (f"{'an' if words[0] in 'aeiou' else 'a'} {words} {noun} of shape {size}"
                + (" with finite values (no NaN or inf)" if finite else "")
                + ("" if below is None else f" with values in [0, {below:g})"))


def probabilities(shape: tuple, positive: bool = False) -> tuple:
    """A NumPy array of ``shape`` whose last axis holds probabilities: finite, >= 0 (``positive``: > 0),
    summing to 1 (within 1e-4): a class prior ``(C,)`` or predicted probabilities ``(N, C)``."""
    array = tensor(shape, "number", finite=True, noun="array")[0]
    return (lambda v: array(v) and bool(((v > 0) if positive else (v >= 0)).all())
            and bool((abs(v.sum(-1) - 1) <= 1e-4).all()),
            f"{tensor(shape, 'number', noun='array')[1]} of probabilities: finite, {'> 0' if positive else '>= 0'} "
            "and summing to 1 along the last axis")


# a loss's training class counts (elm_lite.losses.as_counts)
CLASS_COUNTS = (lambda v: tensor(("classes",), "number", finite=True, noun="array")[0](v) and len(v) >= 2
                and bool((v > 0).all()),
                "a 1-D sequence of class counts, at least 2, all finite and > 0 (a class with no training "
                "example has no prior)")


def plain(value):
    """A NumPy scalar as the Python number it means (``np.int64(2)`` -> ``2``); anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def _shown(value) -> str:
    """``repr(value)``; an array or tensor by its type, shape and dtype, then its values (up to 10 whole
    numbers) or their range and NaN count."""
    if getattr(value, "ndim", 0) < 1 or not hasattr(value, "dtype"):
        return repr(value)
    about = f"{type(value).__name__} of shape {tuple(value.shape)}, dtype {value.dtype}"
    if math.prod(value.shape) <= 10 and "float" not in str(value.dtype):
        return f"{about}: {value.tolist()}"
    try:
        numbers = value[value == value]                                     # NaN left out, counted apart
        nan = math.prod(value.shape) - math.prod(numbers.shape)
        span = f", values {float(numbers.min()):g} to {float(numbers.max()):g}" if math.prod(numbers.shape) else ""
        return about + span + (f", {nan} NaN" if nan else "")
    except (TypeError, ValueError, RuntimeError):   # strings, objects: no range
        return about


def check(name: str, value, kind: tuple, fix: str = ""):
    """``value`` if ``kind`` accepts it, else ``ValueError("<name> must be <expectation>, got <value>. <fix>")``."""
    ok, expectation = kind
    if not ok(value):
        raise ValueError(f"{name} must be {expectation}, got {_shown(value)}." + (f" {fix}" if fix else ""))
    return value


# ----------------------------------------------------------------------------- what the toy apps can build

APP_RHO_MAX = 1000     # the end of the apps' rho sliders (elm_lite.widgets); notebooks 01 and 02 take RHO up to it
TOY_N_MAX = 100_000    # head-class examples of a 2-D toy problem: far beyond the course's 500, well inside memory
