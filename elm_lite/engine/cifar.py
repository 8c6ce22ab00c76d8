"""CIFAR-LT input and output for the engine's full-scale runs: the long-tailed subset as the LDAM-DRW
code builds it, loading (own MD5-checked download with a deadline, ``.npz`` files, in-memory arrays)
with input checks, content hashes, and a fake CIFAR for tests. The teaching core's data (toy
problems, long-tail counts) is :mod:`elm_lite.data`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import check_rho, longtail_counts

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


def read_npz(npz) -> dict:
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
    rho = check_rho(rho)
    n_classes, root = CIFAR_CLASSES[name], Path(root)
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    if arrays is not None:
        arrays, source = _check_image_arrays(arrays, n_classes, "arrays"), "arrays (in memory)"
    elif npz is not None:
        arrays, source = _check_image_arrays(read_npz(npz), n_classes, f"npz file {npz}"), f"npz:{npz}"
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
