"""Models. Every model maps ``x`` of shape ``(B, D)`` to ``(logits (B, C), embedding (B, E))``,
the same interface the losses, the training loop and the plots rely on."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CosineLinear(nn.Module):
    """``logits[b, c] = cos(z_b, w_c)`` in [-1, 1]: the head that LDAM's margins assume.
    ``z`` ``(B, E)`` -> ``(B, C)``."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, in_dim) / in_dim**0.5)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T


def _head(in_dim: int, n_classes: int, cosine: bool) -> nn.Module:
    return CosineLinear(in_dim, n_classes) if cosine else nn.Linear(in_dim, n_classes)


class LinearModel(nn.Module):
    """Multinomial logistic regression / linear SVM: ``logits = x W^T + b``
    (or cosine logits ``cos(x, w_c)`` with ``cosine=True``, for LDAM).

    The embedding is the input itself, so its geometry is fixed: only the boundaries move.
    """

    def __init__(self, in_dim: int = 2, n_classes: int = 2, cosine: bool = False):
        super().__init__()
        self.n_classes = n_classes
        self.head = _head(in_dim, n_classes, cosine)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x), x


class MLP(nn.Module):
    """``x -> [Linear, ReLU] * depth -> Linear(embed_dim) -> embedding -> Linear(C) -> logits``.

    With ``normalize=True`` the embedding is projected onto the unit sphere (as in the
    contrastive losses) and the head sees the normalised vector. ``cosine=True`` gives cosine logits.
    """

    def __init__(self, in_dim: int = 2, n_classes: int = 2, hidden: int = 64, depth: int = 2,
                 embed_dim: int = 2, normalize: bool = False, cosine: bool = False):
        super().__init__()
        self.n_classes = n_classes
        layers, width = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, embed_dim))
        self.body = nn.Sequential(*layers)
        self.head = _head(embed_dim, n_classes, cosine)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        if self.normalize:
            z = F.normalize(z, dim=1)
        return self.head(z), z


def toy_model(kind: str, n_classes: int, seed: int = 0, cosine: bool = False) -> nn.Module:
    """The default model for a 2-D toy problem: linear for Gaussian blobs (the Bayes boundary
    between equal-covariance Gaussians is linear), a small MLP for the curved kinds."""
    torch.manual_seed(seed)
    if kind == "gaussian":
        return LinearModel(2, n_classes, cosine=cosine)
    return MLP(2, n_classes, hidden=64, depth=2, embed_dim=16, cosine=cosine)
