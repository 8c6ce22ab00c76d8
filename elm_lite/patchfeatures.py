"""Frozen image features learned without labels, on a CPU in minutes: random-patch k-means
(Coates & Ng 2011, *An Analysis of Single-Layer Networks in Unsupervised Feature Learning*; our own
implementation). They stand in for "features from a pretrained backbone" on the course's real rung (b).

    model = fit_patch_kmeans(x_train_images, n_centroids=400, seed=0)   # reads pixels only, never labels
    f_train = patch_features(model, x_train_images)                     # (N, 4 * n_centroids)

Each ``patch x patch`` RGB patch is brightness/contrast-normalised and ZCA-whitened; its code is the
"triangle" activation ``max(0, mean_k d_k - d_k)`` of its distances ``d_k`` to the k-means centroids;
the codes are summed over the four quadrants of the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm.auto import tqdm


@dataclass
class PatchKMeans:
    """What :func:`patch_features` needs: the patch size, the whitening ``(mean (D,), W (D, D))``
    and the centroids ``(K, D)`` in whitened patch space (``D = patch * patch * 3``)."""
    patch: int
    mean: np.ndarray
    whiten: np.ndarray
    centroids: np.ndarray


def _normalise(p: np.ndarray) -> np.ndarray:
    """Each patch ``(M, D)`` minus its mean, divided by its standard deviation (``+ 10`` in the
    variance: 0-255 pixels, as Coates & Ng)."""
    p = p - p.mean(1, keepdims=True)
    return p / np.sqrt(p.var(1, keepdims=True) + 10.0)


def _patches(x: np.ndarray, patch: int) -> np.ndarray:
    """Every ``patch x patch`` patch of ``x`` ``(B, H, W, 3)`` at stride 1: ``(B, H', W', D)`` float32."""
    win = sliding_window_view(x.astype(np.float32), (patch, patch), axis=(1, 2))   # (B, H', W', 3, p, p)
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(*win.shape[:3], -1)


def fit_patch_kmeans(x: np.ndarray, n_centroids: int = 400, patch: int = 6, n_patches: int = 100_000,
                     iterations: int = 20, seed: int = 0) -> PatchKMeans:
    """Learn whitening and ``n_centroids`` k-means centroids from ``n_patches`` random patches of the
    images ``x`` ``(N, H, W, 3)`` uint8 (no labels are read)."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x must be images of shape (N, H, W, 3), got {x.shape}.")
    rng = np.random.default_rng(seed)
    n, h, w, _ = x.shape
    i, r, c = rng.integers(0, n, n_patches), rng.integers(0, h - patch + 1, n_patches), \
        rng.integers(0, w - patch + 1, n_patches)
    p = np.stack([x[i, r + dr, c + dc] for dr in range(patch) for dc in range(patch)], 1)   # (M, p*p, 3)
    p = _normalise(p.reshape(n_patches, -1).astype(np.float32))
    mean = p.mean(0)
    eigval, eigvec = np.linalg.eigh(np.cov(p - mean, rowvar=False))
    whiten = (eigvec / np.sqrt(eigval + 0.1)) @ eigvec.T
    p = (p - mean) @ whiten
    centroids = rng.normal(size=(n_centroids, p.shape[1])).astype(np.float32) * 0.1
    for _ in range(iterations):   # Coates & Ng's k-means: assign by the largest c.x - |c|^2 / 2
        assign = np.argmax(p @ centroids.T - 0.5 * (centroids ** 2).sum(1), 1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, p)
        counts = np.bincount(assign, minlength=n_centroids)[:, None]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    return PatchKMeans(patch, mean.astype(np.float32), whiten.astype(np.float32), centroids.astype(np.float32))


def patch_features(model: PatchKMeans, x: np.ndarray, chunk: int = 100, progress: bool = False) -> np.ndarray:
    """Features ``(N, 4 * K)`` float32 of the images ``x`` ``(N, H, W, 3)``: triangle codes of every
    patch (stride 1), summed over the image's four quadrants."""
    c2 = (model.centroids ** 2).sum(1)
    out = []
    for start in tqdm(range(0, len(x), chunk), desc="patch features", disable=not progress):
        p = _patches(x[start:start + chunk], model.patch)                       # (B, H', W', D)
        b, hh, ww, d = p.shape
        z = (_normalise(p.reshape(-1, d)) - model.mean) @ model.whiten
        dist = np.sqrt(np.maximum((z ** 2).sum(1, keepdims=True) + c2 - 2 * z @ model.centroids.T, 0))
        code = np.maximum(dist.mean(1, keepdims=True) - dist, 0).reshape(b, hh, ww, -1)
        mh, mw = hh // 2, ww // 2
        out.append(np.concatenate([code[:, :mh, :mw].sum((1, 2)), code[:, :mh, mw:].sum((1, 2)),
                                   code[:, mh:, :mw].sum((1, 2)), code[:, mh:, mw:].sum((1, 2))], 1))
    return np.concatenate(out).astype(np.float32)
