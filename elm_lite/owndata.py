"""A learner's own data in, one entry point for every form (:func:`load_dataset`):

    load_dataset("train.csv", label_column="species", test="test.csv")   # numeric columns + a label column
    load_dataset("features.npz")               # x_train, y_train (optional x_test, y_test)
    load_dataset("photos/")                    # one subfolder per class (PNG / JPEG, one size), test="photos_test/"
    load_dataset(embeddings, labels)           # arrays: feature vectors, e.g. a pretrained model's embeddings

Labels of any type (text, integers) become class indices ``0..C-1`` in sorted order; their names are
kept (``class_names``) for tables and figures. Unusable data is refused with one ``ValueError`` that
names the file, the column or the class and says how to fix it. :func:`digits_lt` is the course's bundled
real set: scikit-learn's handwritten digits, made long-tailed.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import longtail_counts
from .engine.cifar import content_hash

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass
class OwnData:
    """A labelled training set and an optional test set.

    ``kind="features"``: ``x_*`` float32 ``(N, D)``; ``kind="images"``: ``x_*`` uint8 ``(N, H, W, 3)``.
    ``y_*`` int64 ``(N,)`` in ``[0, C)``; ``class_names[c]`` the label class ``c`` had in the source.
    ``x_test`` / ``y_test`` are None when no test set was given."""
    name: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    class_names: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def counts(self) -> np.ndarray:
        """Training examples per class ``(C,)``."""
        return np.bincount(self.y_train, minlength=self.n_classes)

    def identity(self) -> dict:
        """What makes this data set this one (run identity of ``elm-lite compare``): name, kind, classes,
        counts and a hash of the training (and test) arrays."""
        arrays = [self.x_train, self.y_train] + ([self.x_test, self.y_test] if self.x_test is not None else [])
        return {"name": self.name, "kind": self.kind, "class_names": list(self.class_names),
                "counts": self.counts.tolist(), "content_hash": content_hash(*arrays)}


def _encode(labels: np.ndarray, where: str, names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Labels of any type -> ``(indices int64, class names)``; with ``names`` (the training set's classes)
    a label outside them is refused."""
    text = np.array([str(v) for v in labels.tolist()]) if labels.dtype.kind not in "iub" else labels
    if names is None:
        values = np.unique(text)
        names = [str(v) for v in values]
        return np.searchsorted(values, text).astype(np.int64), names
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in text.tolist()} - set(lookup))
    if unknown:
        raise ValueError(f"{where} has labels {unknown[:5]} that the training set does not have (its classes: "
                         f"{names[:20]}); remove those examples or add training examples of those classes.")
    return np.array([lookup[str(v)] for v in text.tolist()], dtype=np.int64), names


def _check_features(x: np.ndarray, where: str, columns: list[str] | None = None) -> np.ndarray:
    """``x`` as float32 ``(N, D)``; NaN or infinite values are refused, named by column."""
    if x.ndim != 2:
        raise ValueError(f"{where}: features must have shape (N, D) (one row per example), got {x.shape}; "
                         "flatten each example first, e.g. x.reshape(len(x), -1).")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{where}: features must be numbers, got dtype {x.dtype}; encode text columns as numbers "
                         "or leave them out.")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = f"column {columns[col]!r}" if columns else f"column {col}"
        raise ValueError(f"{where}: {name} holds {x[row, col]} in row {row} ({int(bad.sum())} such values in all); "
                         "drop those rows or fill the gaps (e.g. with the column's median) before comparing.")
    return x


def _check_classes(y: np.ndarray, names: list[str], where: str) -> None:
    """Refuse an empty split and a class with a single training example."""
    if len(y) == 0:
        raise ValueError(f"{where} holds no examples; give a file or folder with at least two examples per class.")
    counts = np.bincount(y, minlength=len(names))
    single = [names[c] for c in np.flatnonzero(counts == 1)]
    if single:
        raise ValueError(f"{where}: class(es) {single[:10]} have a single training example, too few to train and "
                         "validate on; add examples of them, or remove (or merge) those classes.")
    if len(names) < 2:
        raise ValueError(f"{where} has a single class ({names}); a classifier needs at least two.")


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(features (N, D) float32, raw labels (N,), feature column names)`` of a CSV with a header row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty; it needs a header row and one row per example.")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if any(v.strip() for v in r)]
    if label_column not in header:
        raise ValueError(f"{path} has no column {label_column!r} (its columns: {header[:20]}); name the label "
                         "column with label_column= (--label-column).")
    if not body:
        raise ValueError(f"{path} holds a header but no examples; an empty split cannot be trained or tested.")
    li = header.index(label_column)
    columns = [h for i, h in enumerate(header) if i != li]
    x = np.empty((len(body), len(columns)), dtype=np.float32)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {r + 2} has {len(row)} fields, the header {len(header)}; fix that line.")
        values = [v for i, v in enumerate(row) if i != li]
        for c, v in enumerate(values):
            try:
                x[r, c] = float(v) if v.strip() else np.nan
            except ValueError:
                raise ValueError(f"{path}: column {columns[c]!r} holds text ({v!r} in line {r + 2}); feature columns "
                                 "must be numbers: encode it as numbers (e.g. one column per category) or delete "
                                 "the column.") from None
            if not np.isfinite(x[r, c]):
                raise ValueError(f"{path}: column {columns[c]!r} holds {v.strip() or 'an empty cell'!r} in line "
                                 f"{r + 2}, not a number; drop those rows or fill the gaps (e.g. with the column's "
                                 "median) before comparing.")
    return x, np.array([row[li].strip() for row in body]), columns


def _read_image_folder(folder: Path, names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images (N, H, W, 3) uint8, raw labels, class names)`` of a folder with one subfolder per class."""
    from PIL import Image
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{folder} has no subfolders; an image folder needs one subfolder per class "
                         "(e.g. photos/cat/*.png, photos/dog/*.png).")
    images, labels, first = [], [], None
    for name in classes:
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{folder / name} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images of class "
                             f"{name!r} or delete the empty folder.")
        for file in files:
            with Image.open(file) as im:
                a = np.asarray(im.convert("RGB"))
            if first is None:
                first = (file, a.shape)
            elif a.shape != first[1]:
                raise ValueError(f"images of mixed sizes: {file} is {a.shape[1]}x{a.shape[0]}, {first[0]} is "
                                 f"{first[1][1]}x{first[1][0]}; resize every image to one size first (e.g. Pillow's "
                                 "Image.resize((32, 32))).")
            images.append(a)
            labels.append(name)
    return np.stack(images), np.array(labels), classes


def _read_npz(path: Path) -> dict:
    from .engine.cifar import read_npz as read
    arrays = read(path)
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing} (it holds {sorted(arrays)}); save it with "
                         "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path} has only one of x_test and y_test; save both, or neither.")
    return arrays


def _read(source, label_column: str, where_test: bool = False):
    """``(x, raw labels, kind, columns)`` of one file or folder."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a .csv, an .npz or a folder of class subfolders.")
    if path.is_dir():
        x, y, _ = _read_image_folder(path)
        return x, y, "images", None
    if path.suffix.lower() == ".csv":
        x, y, columns = _read_csv(path, label_column)
        return x, y, "features", columns
    if path.suffix.lower() == ".npz":
        arrays = _read_npz(path)
        key = "test" if where_test and "x_test" in arrays else "train"
        return arrays[f"x_{key}"], arrays[f"y_{key}"], None, None
    raise ValueError(f"{path}: expected a .csv, an .npz or a folder with one subfolder per class, "
                     f"got a {path.suffix or 'file without suffix'}.")


def _kind(x: np.ndarray, where: str) -> str:
    """``"images"`` for ``(N, H, W, 3)`` integer pixels, ``"features"`` for ``(N, D)``."""
    if x.ndim == 4 and x.shape[-1] == 3 and np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{where}: images must hold pixels in [0, 255], got {x.min()}..{x.max()}.")
        return "images"
    if x.ndim == 2:
        return "features"
    raise ValueError(f"{where}: expected features (N, D) or images (N, H, W, 3) uint8, got shape {x.shape} "
                     f"and dtype {x.dtype}; flatten features with x.reshape(len(x), -1).")


def _prepare(x, y, kind, where, columns, names=None):
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        raise ValueError(f"{where} holds no examples; an empty split cannot be trained or tested.")
    if y.shape != (len(x),):
        raise ValueError(f"{where}: labels must have shape ({len(x)},) (one per example), got {y.shape}.")
    kind = kind or _kind(x, where)
    x = _check_features(x, where, columns) if kind == "features" else x.astype(np.uint8)
    y, names = _encode(y, where, names)
    return x, y, kind, names


def load_dataset(source, y=None, *, label_column: str = "label", test=None, y_test=None,
                 name: str | None = None) -> OwnData:
    """A learner's data as :class:`OwnData`.

    ``source``: a ``.csv`` (numeric feature columns and the column ``label_column``), an ``.npz``
    (``x_train``, ``y_train``, optional ``x_test``, ``y_test``), a folder with one subfolder of images
    per class, or an array of features / embeddings ``(N, D)`` (or uint8 images ``(N, H, W, 3)``) with
    its labels ``y``. ``test``: a test set in the same form (a path, or an array with ``y_test``); an
    ``.npz`` may carry its own. Labels of any type become indices with their names kept."""
    if isinstance(source, (str, Path)):
        where = str(source)
        x, labels, kind, columns = _read(source, label_column)
        if y is not None:
            raise ValueError(f"y is given with a file ({where}); the labels come from the file. Pass y only "
                             "with an array of features.")
    else:
        where, x, labels, kind, columns = "the array x", source, y, None, None
        if y is None:
            raise ValueError("an array of features needs its labels: load_dataset(x, y).")
    x, y_train, kind, names = _prepare(x, labels, kind, where, columns)
    _check_classes(y_train, names, where)
    x_test, where_test = None, "the test array"
    if test is None and isinstance(source, (str, Path)) and Path(source).suffix.lower() == ".npz":
        arrays = _read_npz(Path(source))
        if "x_test" in arrays:
            test, y_test, where_test = arrays["x_test"], arrays["y_test"], f"{where} (x_test, y_test)"
    if test is not None:
        if isinstance(test, (str, Path)):
            where_test = str(test)
            tx, ty, tkind, tcolumns = _read(test, label_column, where_test=True)
        else:
            if y_test is None:
                raise ValueError("a test array needs its labels: test=x_test, y_test=...")
            tx, ty, tkind, tcolumns = test, y_test, None, None
        x_test, y_test, test_kind, _ = _prepare(tx, ty, tkind, where_test, tcolumns, names)
        if test_kind != kind or x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"{where_test}: test examples have shape {x_test.shape[1:]} ({test_kind}), the training "
                             f"examples {x.shape[1:]} ({kind}); give the test set the same columns / image size.")
    return OwnData(name or (Path(source).stem if isinstance(source, (str, Path)) else "arrays"), kind, x, y_train,
                   names, x_test, y_test, where)


def digits_lt(rho: float = 40.0, n_max: int = 140, n_test_per_class: int = 30, seed: int = 0) -> OwnData:
    """scikit-learn's bundled handwritten digits (8x8 pixels, 64 features 0-16, about 180 per class; no
    download), made long-tailed: ``n_test_per_class`` random images per class form a balanced test set,
    and class ``c`` (digit ``c``) keeps ``longtail_counts(n_max, 10, rho)[c]`` of the rest for training
    (with the defaults 140, 92, 61, 40, 27, 18, 11, 7, 5, 3: 404 training images)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    counts = longtail_counts(n_max, 10, rho)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) < n_test_per_class + counts[c]:
            raise ValueError(f"digit {c} has {len(idx)} images, fewer than n_test_per_class + its training count "
                             f"({n_test_per_class} + {counts[c]}); lower n_max or n_test_per_class.")
        test.append(idx[:n_test_per_class])
        train.append(idx[n_test_per_class:n_test_per_class + counts[c]])
    train, test = np.concatenate(train), np.concatenate(test)
    return OwnData("digits-lt", "features", x[train], y[train], [str(c) for c in range(10)], x[test], y[test],
                   "sklearn.datasets.load_digits", info={"rho": rho, "n_max": n_max, "seed": seed,
                                                         "n_test_per_class": n_test_per_class})
