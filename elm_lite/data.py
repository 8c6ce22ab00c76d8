"""Long-tailed data: per-class count profiles and 2-D toy problems with known structure.

Everything here returns NumPy arrays; models and losses turn them into tensors.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

PROFILES = ("exp", "step")
TOY_KINDS = ("gaussian", "spirals", "rings")


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def _check_rho(rho) -> float:
    if isinstance(rho, bool):
        raise ValueError(f"rho (imbalance ratio n_max / n_min) must be a number >= 1, got {rho!r} (a bool).")
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise ValueError(f"rho (imbalance ratio n_max / n_min) must be a number >= 1, got {rho!r}.") from None
    if not np.isfinite(rho) or rho < 1:
        raise ValueError(f"rho (imbalance ratio n_max / n_min) must be a finite number >= 1, got {rho}. "
                         "Use rho=1 for balanced data, rho=100 for the usual long-tail benchmark.")
    return rho


def longtail_counts(n_max: int, n_classes: int, rho: float, profile: str = "exp") -> np.ndarray:
    """Per-class training counts of a long-tailed dataset, head class first.

    - ``"exp"``: ``n_i = floor(n_max * (1/rho) ** (i / (C-1)))`` -- the CIFAR-LT profile
      (``longtail_counts(5000, 10, 100)`` sums to 12,406 as in CIFAR-10-LT).
    - ``"step"``: the first ``C // 2`` classes keep ``n_max``, the rest ``floor(n_max / rho)``.

    Returns an int64 array of shape ``(n_classes,)``, non-increasing.
    Raises ``ValueError`` if the rarest class would get no example.
    """
    n_max = _check_positive_int("n_max", n_max)
    n_classes = _check_positive_int("n_classes", n_classes, minimum=2)
    rho = _check_rho(rho)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}.")
    if profile == "exp":
        counts = [int(n_max * (1.0 / rho) ** (i / (n_classes - 1.0))) for i in range(n_classes)]
    else:
        n_head = n_classes // 2
        counts = [n_max] * n_head + [int(n_max / rho)] * (n_classes - n_head)
    if min(counts) < 1:
        raise ValueError(f"n_max={n_max} is too small for rho={rho:g}: the rarest class would get "
                         f"{min(counts)} examples. Need n_max >= rho (here n_max >= {int(np.ceil(rho))}).")
    return np.asarray(counts, dtype=np.int64)


def _counts_and_batch(counts, batch_size) -> tuple[np.ndarray, int, int]:
    """Checked ``(counts as int64, total, batch_size)`` for drawing batches from those counts."""
    raw = np.asarray(counts)
    if raw.ndim != 1 or raw.size == 0 or raw.dtype.kind not in "iuf" or np.any(raw < 0) or np.any(raw % 1):
        raise ValueError(f"counts must be a 1-D sequence of non-negative whole numbers (examples per class), "
                         f"got {counts!r}.")
    counts = raw.astype(np.int64)
    total = int(counts.sum())
    batch_size = _check_positive_int("batch_size", batch_size)
    if batch_size > total:
        raise ValueError(f"batch_size={batch_size} exceeds the dataset size {total}.")
    return counts, total, batch_size


def batch_class_stats(counts, batch_size: int) -> dict[str, np.ndarray]:
    """What a uniformly drawn mini-batch (without replacement) holds of each class.

    Returns ``expected`` (mean count per class, shape ``(C,)``) and ``p_none`` (probability the
    batch holds no example of the class, exact hypergeometric).
    """
    counts, total, batch_size = _counts_and_batch(counts, batch_size)
    k = np.arange(batch_size)
    # P(no example of class c) = prod_k (N - n_c - k) / (N - k)
    p_none = np.array([np.prod(np.clip(total - n - k, 0, None) / (total - k)) for n in counts])
    return {"expected": batch_size * counts / total, "p_none": p_none}


@dataclass
class ToyData:
    """A long-tailed classification problem (2-D unless ``info["dim"]`` says otherwise) with a
    balanced test set.

    ``x_*`` are float32 arrays of shape ``(N, dim)``; ``y_*`` int64 of shape ``(N,)``;
    ``counts`` the training counts per class, head first. For ``kind="gaussian"``,
    ``means`` ``(C, 2)`` and ``covs`` ``(C, 2, 2)`` give the exact class-conditional densities.
    """
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    counts: np.ndarray
    means: np.ndarray | None = None
    covs: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.counts)

    @property
    def prior(self) -> np.ndarray:
        """Training label distribution, shape ``(C,)``."""
        return self.counts / self.counts.sum()

    def bounds(self, pad: float = 0.5) -> tuple[float, float, float, float]:
        """``(x_min, x_max, y_min, y_max)`` covering train and test points (first two coordinates)."""
        pts = np.concatenate([self.x_train, self.x_test])
        lo, hi = pts[:, :2].min(0) - pad, pts[:, :2].max(0) + pad
        return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _gaussian_params(n_classes: int, separation: float, noise: float, dim: int, seed: int):
    """2-D: means on a circle of radius ``separation``. Higher ``dim``: means at distance
    ``separation`` from the origin along random orthonormal directions (needs dim >= C)."""
    if dim == 2:
        angles = 2 * np.pi * np.arange(n_classes) / n_classes + np.pi / 2
        means = separation * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:
        q, _ = np.linalg.qr(np.random.default_rng([seed, 7]).normal(size=(dim, dim)))
        means = separation * q[:n_classes]
    return means, np.stack([noise**2 * np.eye(dim)] * n_classes)


def _sample_class(kind, c, n, n_classes, rng, separation, noise, means, covs):
    if kind == "gaussian":
        return rng.multivariate_normal(means[c], covs[c], size=n)
    if kind == "spirals":  # arm c of a C-armed spiral
        t = np.sqrt(rng.uniform(0.05, 1.0, size=n))
        angle = 2 * np.pi * c / n_classes + 3.0 * np.pi * t
        r = separation * t
        pts = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
        return pts + rng.normal(scale=noise * 0.25, size=pts.shape)
    # rings: class c lives on a circle of radius (c + 1) * separation / C
    angle = rng.uniform(0, 2 * np.pi, size=n)
    r = (c + 1) * separation / n_classes + rng.normal(scale=noise * 0.15, size=n)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


def make_toy(kind: str = "gaussian", n_classes: int = 5, n_max: int = 500, rho: float = 100.0,
             profile: str = "exp", n_test_per_class: int = 500, seed: int = 0,
             separation: float = 2.5, noise: float = 1.0, dim: int = 2) -> ToyData:
    """Sample a long-tailed 2-D toy problem; the test set is balanced.

    Args:
        kind: ``"gaussian"`` (isotropic blobs with means on a circle of radius ``separation``,
            std ``noise``), ``"spirals"`` (C interleaved arms) or ``"rings"`` (concentric circles).
        n_classes, n_max, rho, profile: as in :func:`longtail_counts`; class 0 is the head.
        n_test_per_class: test examples per class (balanced).
        seed: the whole sample (train and test) is a function of this seed.
        dim: input dimension; only ``"gaussian"`` supports ``dim > 2`` (then ``dim >= n_classes``).
    """
    if kind not in TOY_KINDS:
        raise ValueError(f"kind must be one of {TOY_KINDS}, got {kind!r}.")
    counts = longtail_counts(n_max, n_classes, rho, profile)
    n_test_per_class = _check_positive_int("n_test_per_class", n_test_per_class)
    for name, value in (("separation", separation), ("noise", noise)):
        if not (isinstance(value, numbers.Real) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    dim = _check_positive_int("dim", dim, minimum=2)
    if dim != 2 and (kind != "gaussian" or dim < n_classes):
        raise ValueError(f"dim={dim} needs kind='gaussian' and dim >= n_classes={n_classes} "
                         f"(kind={kind!r}); the curved kinds are 2-D only.")
    rng = np.random.default_rng(seed)
    means, covs = _gaussian_params(n_classes, separation, noise, dim, seed) if kind == "gaussian" else (None, None)

    def sample(sizes):
        xs = [_sample_class(kind, c, int(n), n_classes, rng, separation, noise, means, covs)
              for c, n in enumerate(sizes)]
        ys = [np.full(int(n), c, dtype=np.int64) for c, n in enumerate(sizes)]
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys)

    x_train, y_train = sample(counts)
    x_test, y_test = sample([n_test_per_class] * n_classes)
    order = rng.permutation(len(y_train))
    return ToyData(kind, x_train[order], y_train[order], x_test, y_test, counts, means, covs,
                   info=dict(n_max=n_max, rho=float(rho), profile=profile, seed=seed,
                             separation=separation, noise=noise, dim=dim))


def sample_balanced(data: ToyData, n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fresh balanced sample from the same class-conditional distributions as ``data``:
    ``x (C * n_per_class, dim)`` float32, ``y`` int64."""
    n_per_class = _check_positive_int("n_per_class", n_per_class)
    rng = np.random.default_rng(seed)
    info = data.info
    xs = [_sample_class(data.kind, c, n_per_class, data.n_classes, rng, info["separation"], info["noise"],
                        data.means, data.covs) for c in range(data.n_classes)]
    return np.concatenate(xs).astype(np.float32), np.repeat(np.arange(data.n_classes), n_per_class)


VALIDATION_SEED_OFFSET = 1_000_003   # keeps a validation sample apart from the data's own draws


def validation_sample(data: ToyData, n_per_class: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A held-out balanced validation sample for choosing hyperparameters (tau, lambda, delta)
    without touching the test set: fresh draws from the same class distributions, under a seed
    of its own. ``x (C * n_per_class, dim)``, ``y``."""
    return sample_balanced(data, n_per_class, seed=data.info.get("seed", 0) + VALIDATION_SEED_OFFSET)


def class_log_densities(data: ToyData, x) -> np.ndarray:
    """``log p(x | y)`` for every class, shape ``(N, C)``; Gaussian toy problems only."""
    if data.means is None:
        raise ValueError(f"class densities are known in closed form only for kind='gaussian', not {data.kind!r}.")
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((len(x), data.n_classes))
    for c, (mu, cov) in enumerate(zip(data.means, data.covs)):
        diff = x - mu
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        out[:, c] = -0.5 * (maha + np.log(np.linalg.det(cov)) + len(mu) * np.log(2 * np.pi))
    return out


def bayes_predict(data: ToyData, x, balanced: bool = True) -> np.ndarray:
    """The Bayes-optimal prediction, shape ``(N,)``: ``argmax_y p(x|y)`` for the balanced error
    (``balanced=True``), ``argmax_y pi_y p(x|y)`` for the standard error on the training distribution."""
    scores = class_log_densities(data, x)
    return (scores if balanced else scores + np.log(data.prior)).argmax(1)


def monte_carlo_errors(predict_fn, data: ToyData, n_per_class: int = 20_000, seed: int = 12345) -> dict:
    """Per-class, balanced and standard (prior-weighted) error of ``predict_fn`` (x -> labels) on a
    fresh balanced sample of ``n_per_class`` points per class, with the standard error of the
    balanced-error estimate: ``sqrt(sum_c e_c (1 - e_c) / n) / C``."""
    x, y = sample_balanced(data, n_per_class, seed)
    pred = np.asarray(predict_fn(x))
    if pred.shape != y.shape or not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(f"predict_fn must return labels: integers of shape {y.shape} (one per point), got dtype "
                         f"{pred.dtype} of shape {pred.shape}"
                         + ("; it returned class scores (N, C): take their argmax, e.g. lambda x: "
                            "model_scores(x).argmax(1)." if pred.ndim == 2 and pred.shape[0] == len(y) else "."))
    per_class = np.array([np.mean(pred[y == c] != c) for c in range(data.n_classes)])
    return {
        "per_class": per_class,
        "balanced": float(per_class.mean()),
        "balanced_se": float(np.sqrt(np.sum(per_class * (1 - per_class) / n_per_class)) / data.n_classes),
        "standard": float(np.dot(data.prior, per_class)),
    }


def anchor_positive_prob(counts, batch_size: int) -> np.ndarray:
    """For an anchor of each class in a uniformly drawn batch (without replacement), the
    probability that the batch holds at least one *other* example of its class -- a positive
    for a supervised-contrastive loss. Shape ``(C,)``. (With two views per image, or class
    prototypes in the contrast set, every anchor has a positive.)"""
    counts, total, batch_size = _counts_and_batch(counts, batch_size)
    k = np.arange(batch_size - 1)  # the other B-1 slots, drawn from the other N-1 examples
    return np.array([1 - np.prod(np.clip(total - n - k, 0, None) / (total - 1 - k)) for n in counts])


# ----------------------------------------------------------------------------- CIFAR-LT

CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}
CIFAR_MD5 = {"cifar10": "c58f30108f718f92721af3b95e74349a",   # the archives' published checksums
             "cifar100": "eb9058c3a382ffc7106e4002c42a8d85"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def longtail_indices(labels, rho: float, seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset, built as the LDAM-DRW code (and later work) builds CIFAR-LT:
    class ``i`` keeps ``n_i = int(n_max * (1/rho) ** (i / (C-1)))`` examples, ``n_max`` being the
    size of class 0; one ``RandomState(seed)`` shuffles each class's indices in turn (class order)
    and the first ``n_i`` are kept. Returns int64 indices ``(sum n_i,)``, grouped by class."""
    labels = np.asarray(labels)
    n_classes, head = int(labels.max()) + 1, int(np.sum(labels == 0))
    if head < rho:   # longtail_counts would name its own argument, n_max: say it in this function's words
        raise ValueError(f"rho={rho:g} is too large for these data: class 0 (the head) has {head} images, so the "
                         f"rarest class would keep none (it keeps {head} / rho). Use rho <= {head} (--rho), or "
                         "data with more images of class 0.")
    counts = longtail_counts(head, n_classes, rho, "exp")
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed) + np.random.shuffle
    keep = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than the {n} the profile asks for.")
        rng.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep).astype(np.int64)


def content_hash(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes: equal exactly when the data are equal."""
    import hashlib
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class ImageData:
    """A long-tailed image training set and its balanced test set.

    ``x_*`` uint8 ``(N, 32, 32, 3)`` (HWC, RGB), ``y_*`` int64 ``(N,)``; ``counts`` ``(C,)``."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    counts: np.ndarray
    source: str
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.counts)


def _check_images(x: np.ndarray, key: str, where: str) -> np.ndarray:
    """``x`` as uint8 ``(N, 32, 32, 3)``; floats or out-of-range integers are refused, never cast."""
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise ValueError(f"{where}: {key} must have shape (N, 32, 32, 3) (height, width, RGB), got {x.shape}; "
                         "for (N, 3, 32, 32) arrays use x.transpose(0, 2, 3, 1).")
    if np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: {key} must be uint8 pixels in [0, 255], got dtype {x.dtype}; for floats in "
                         "[0, 1] convert with (x * 255).round().astype(np.uint8).")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{where}: {key} must be uint8 pixels in [0, 255], got dtype {x.dtype}.")
    if x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"{where}: {key} must hold pixels in [0, 255], got values from {x.min()} to {x.max()}; "
                         "rescale to [0, 255] and convert with .astype(np.uint8).")
    return x.astype(np.uint8, copy=False)


def _check_image_arrays(arrays: dict, n_classes: int, where: str) -> dict:
    """The four arrays checked: images uint8 ``(N, 32, 32, 3)``, labels int64 ``(N,)`` in
    ``[0, n_classes)`` with every class present in both splits."""
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{where} lacks the arrays {missing}; it needs {list(NPZ_KEYS)} "
                         "(x_* uint8 of shape (N, 32, 32, 3), y_* integer labels of shape (N,)).")
    out = {k: np.asarray(arrays[k]) for k in NPZ_KEYS}
    for split in ("train", "test"):
        x, y = _check_images(out[f"x_{split}"], f"x_{split}", where), out[f"y_{split}"]
        if y.shape != (len(x),):
            raise ValueError(f"{where}: y_{split} must have shape ({len(x)},), got {y.shape}.")
        if not len(y):
            raise ValueError(f"{where}: the {split} split is empty (x_{split} holds 0 images); it needs images of "
                             f"every class in both splits.")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"{where}: y_{split} must hold integer labels in [0, {n_classes}), got dtype "
                             f"{y.dtype}, values {y.min()}..{y.max()}.")
        absent = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
        if absent:
            raise ValueError(f"{where}: y_{split} has no example of class(es) {absent[:10]} of the {n_classes} "
                             f"classes; pass the full data set (or the dataset with {len(np.unique(y))} classes).")
        out[f"x_{split}"], out[f"y_{split}"] = x, y.astype(np.int64)
    return out


def _read_cifar_batches(folder, name: str) -> dict:
    """Read the extracted official python-format archive (``cifar-10-batches-py`` or
    ``cifar-100-python``)."""
    import pickle
    from pathlib import Path

    folder = Path(folder)

    def load(file):
        with open(folder / file, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(d[b"labels" if name == "cifar10" else b"fine_labels"], dtype=np.int64)

    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    parts = [load(f) for f in train_files]
    x_test, y_test = load("test_batch" if name == "cifar10" else "test")
    return {"x_train": np.concatenate([p[0] for p in parts]), "y_train": np.concatenate([p[1] for p in parts]),
            "x_test": x_test, "y_test": y_test}


def fetch_url(url: str, dest, deadline_s: float = 1800.0, read_timeout_s: float = 60.0,
              progress: bool = True) -> None:
    """Copy ``url`` into the file ``dest`` with a progress bar. Fails with ``TimeoutError`` when one
    read waits longer than ``read_timeout_s`` or the whole transfer exceeds ``deadline_s`` (a server
    that trickles one byte every few seconds is cut off, not waited for forever)."""
    import time
    import urllib.request

    from tqdm.auto import tqdm

    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=read_timeout_s) as response, open(dest, "wb") as out, \
            tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                 desc=f"downloading {url.rsplit('/', 1)[-1]}", disable=not progress) as bar:
        while chunk := response.read1(1 << 16):  # returns what one read brought: the deadline is checked often
            out.write(chunk)
            bar.update(len(chunk))
            if time.monotonic() - start > deadline_s:
                raise TimeoutError(f"the download of {url} took longer than {deadline_s:.0f} s "
                                   f"({bar.n} bytes received); the connection is too slow.")


def download_cifar(name: str, root, deadline_s: float = 1800.0) -> None:
    """Download the official archive into ``root`` (within ``deadline_s`` seconds, progress shown),
    check its MD5 against :data:`CIFAR_MD5` and extract it. Nothing is left behind on failure (a
    partial or corrupt download is deleted)."""
    import hashlib
    import tarfile
    from pathlib import Path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / (Path(CIFAR_URLS[name]).name + ".part")
    try:
        fetch_url(CIFAR_URLS[name], archive, deadline_s)  # a dead network fails within a minute
        digest = hashlib.md5(archive.read_bytes()).hexdigest()
        if digest != CIFAR_MD5[name]:
            raise ValueError(f"the downloaded {name} archive has MD5 {digest}, expected {CIFAR_MD5[name]}: "
                             "the download is corrupt or not the official file.")
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
            if any(Path(m.name).is_absolute() or ".." in Path(m.name).parts for m in members):
                raise ValueError(f"the {name} archive holds paths outside its folder; refusing to extract it.")
            tar.extractall(root, members=members)
    except OSError as e:
        raise FileNotFoundError(f"could not download {CIFAR_URLS[name]} ({e}). Download it by hand, extract it "
                                f"into {root}/, or pass npz=PATH.") from None
    finally:
        archive.unlink(missing_ok=True)


def _read_npz(npz) -> dict:
    """The arrays of an ``.npz`` file; a missing, truncated or foreign file gets a clear error."""
    import zipfile
    from pathlib import Path

    if not str(npz) or not Path(npz).is_file():
        raise FileNotFoundError(f"npz={str(npz)!r} does not exist (or is not a file).")
    try:
        loaded = np.load(npz, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as f:
                return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(f"npz={str(npz)!r} is not a readable .npz file ({type(e).__name__}: {e}); it may be "
                         "truncated: copy it again, or rebuild it with numpy.savez.") from None
    raise ValueError(f"npz={str(npz)!r} holds a single array of shape {loaded.shape} (a .npy file renamed?), not "
                     f"the named arrays {list(NPZ_KEYS)}; write them with numpy.savez(path, x_train=..., "
                     "y_train=..., x_test=..., y_test=...).")


def load_cifar_lt(name: str = "cifar10", rho: float = 100.0, seed: int = 0, root: str = "data/cifar",
                  download: bool = False, npz: str | None = None, arrays: dict | None = None) -> ImageData:
    """CIFAR-10-LT / CIFAR-100-LT: the long-tailed training subset of :func:`longtail_indices` and
    the untouched balanced test set.

    Sources, first found wins: ``arrays`` (a dict with ``x_train, y_train, x_test, y_test``, e.g.
    from :func:`fake_cifar`); ``npz`` (a file with those arrays); the
    extracted official archive under ``root`` (``cifar-10-batches-py`` / ``cifar-100-python``);
    with ``download=True``, :func:`download_cifar` fetches and checks it first (no torchvision needed).
    """
    from pathlib import Path

    if name not in CIFAR_CLASSES:
        raise ValueError(f"name must be one of {sorted(CIFAR_CLASSES)}, got {name!r}.")
    rho = _check_rho(rho)
    n_classes, root = CIFAR_CLASSES[name], Path(root)
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    if arrays is not None:
        arrays, source = _check_image_arrays(arrays, n_classes, "arrays"), "arrays (in memory)"
    elif npz is not None:
        arrays, source = _check_image_arrays(_read_npz(npz), n_classes, f"npz file {npz}"), f"npz:{npz}"
    else:
        if not folder.is_dir() and download:
            download_cifar(name, root)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{name} not found: expected the extracted archive at {folder}. Either pass download=True "
                f"(needs network), or download {CIFAR_URLS[name]} and extract it into "
                f"{root}/, or pass npz=PATH to a .npz with arrays {list(NPZ_KEYS)}.")
        arrays, source = _check_image_arrays(_read_cifar_batches(folder, name), n_classes, str(folder)), str(folder)
    keep = longtail_indices(arrays["y_train"], rho, seed)
    y_train = arrays["y_train"][keep]
    return ImageData(name, arrays["x_train"][keep], y_train, arrays["x_test"], arrays["y_test"],
                     np.bincount(y_train, minlength=n_classes), source,
                     info=dict(rho=rho, seed=seed, indices=keep))


def fake_cifar(n_classes: int = 10, n_per_class: int = 50, n_test_per_class: int = 20, seed: int = 0,
               noise: float = 40.0, overlap: float = 0.0) -> dict:
    """Generated 32x32 RGB images with the CIFAR array layout (for tests and offline runs): each
    class is a noisy colour gradient (pixel noise std ``noise``). ``overlap`` in [0, 1) pulls every
    class's colour toward the common mean and gives each image a random brightness, so that
    classes get confused -- with ``overlap=0`` a small CNN learns them all. Returns the four npz arrays."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}.")
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 255, size=(n_classes, 1, 1, 3))
    colours = (1 - overlap) * colours + overlap * colours.mean(0, keepdims=True)
    protos = colours * np.linspace(0.3, 1, 32)[None, :, None, None]

    def make(n):
        y = np.repeat(np.arange(n_classes), n)
        brightness = rng.uniform(1 - overlap / 2, 1 + overlap / 2, size=(len(y), 1, 1, 1))
        x = protos[y] * brightness + rng.normal(0, noise, size=(len(y), 32, 32, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y
    x_train, y_train = make(n_per_class)
    x_test, y_test = make(n_test_per_class)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
