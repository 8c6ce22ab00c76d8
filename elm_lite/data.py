"""Long-tailed data: per-class count profiles and 2-D toy problems with known structure.

Everything here returns NumPy arrays; models and losses turn them into tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .recipes import check, integer, number, one_of, tensor

PROFILES = ("exp", "step")
TOY_KINDS = ("gaussian", "spirals", "rings")


def check_rho(rho) -> float:
    """``rho`` (imbalance ratio ``n_max / n_min``) as a float, or ``ValueError`` naming it."""
    return float(check("rho (imbalance ratio n_max / n_min)", rho, number(1),
                       "Use rho=1 for balanced data, rho=100 for the usual long-tail benchmark."))


def longtail_counts(n_max: int, n_classes: int, rho: float, profile: str = "exp") -> np.ndarray:
    """Per-class training counts of a long-tailed dataset, head class first.

    - ``"exp"``: ``n_i = floor(n_max * (1/rho) ** (i / (C-1)))`` -- the CIFAR-LT profile
      (``longtail_counts(5000, 10, 100)`` sums to 12,406 as in CIFAR-10-LT).
    - ``"step"``: the first ``C // 2`` classes keep ``n_max``, the rest ``floor(n_max / rho)``.

    Returns an int64 array of shape ``(n_classes,)``, non-increasing.
    Raises ``ValueError`` if the rarest class would get no example.
    """
    n_max, n_classes = int(check("n_max", n_max, integer(1))), int(check("n_classes", n_classes, integer(2)))
    rho = check_rho(rho)
    check("profile", profile, one_of(*PROFILES))
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
    counts = np.asarray(counts)
    counts = counts.astype(np.int64) if counts.dtype.kind == "f" and np.all(counts % 1 == 0) else counts   # 3.0 is 3
    check("counts", counts, tensor(("classes",), "int", below=np.inf, noun="array"), "(examples per class)")
    total = int(counts.sum())
    batch_size = int(check("batch_size", batch_size, integer(1, total), f"(the data hold {total} examples)"))
    return counts.astype(np.int64), total, batch_size


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
    ``means`` ``(C, dim)`` and ``covs`` ``(C, dim, dim)`` give the exact class-conditional densities.
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
    """``n`` points ``(n, dim)`` of class ``c``: from its Gaussian, or from its curve (:func:`_curve_class`)."""
    if kind == "gaussian":
        return rng.multivariate_normal(means[c], covs[c], size=n)
    return _curve_class(kind, c, n, n_classes, rng, separation, noise)


def _curve_class(kind, c, n, n_classes, rng, separation, noise):
    """``n`` 2-D points of class ``c`` of the curved kinds: arm c of a C-armed spiral, or ring c."""
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
    check("kind", kind, one_of(*TOY_KINDS))
    counts = longtail_counts(n_max, n_classes, rho, profile)
    n_test_per_class = int(check("n_test_per_class", n_test_per_class, integer(1)))
    for name, value in (("separation", separation), ("noise", noise)):
        check(name, value, number(0, low_open=True))
    dim = int(check("dim", dim, integer(2)))
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
    n_per_class = int(check("n_per_class", n_per_class, integer(1)))
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
    check("data.kind", data.kind, one_of("gaussian"), "(class densities are known in closed form for Gaussians only)")
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
    pred = check("predict_fn(x)", np.asarray(predict_fn(x)), tensor(y.shape, "int", noun="array"),
                 "predict_fn must return labels, one per point; class scores (N, C)? take their argmax, e.g. "
                 "lambda x: model_scores(x).argmax(1).")
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
