"""Models. Every model maps ``x`` ``(B, D)`` (images: ``(B, H, W, 3)``) to ``(logits (B, C), embedding (B, E))``,
the same interface the losses, the training loop and the plots rely on. (K models trained as one
network are the engine's: :class:`elm_lite.engine.stacked.StackedModels`.)
"""
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
        widths = [in_dim] + [hidden] * depth                                # [Linear, ReLU] * depth, then Linear
        layers = [layer for a, b in zip(widths, widths[1:]) for layer in (nn.Linear(a, b), nn.ReLU())]
        self.body = nn.Sequential(*layers, nn.Linear(widths[-1], embed_dim))
        self.head = _head(embed_dim, n_classes, cosine)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return self.head(z), z


def toy_model(kind: str, n_classes: int, seed: int = 0, cosine: bool = False) -> nn.Module:
    """The default model for a 2-D toy problem: linear for Gaussian blobs (the Bayes boundary
    between equal-covariance Gaussians is linear), a small MLP for the curved kinds."""
    torch.manual_seed(seed)
    if kind == "gaussian":
        return LinearModel(2, n_classes, cosine=cosine)
    return MLP(2, n_classes, hidden=64, depth=2, embed_dim=16, cosine=cosine)


# ----------------------------------------------------------------------------- image models (CIFAR)

CIFAR_MEAN = (125.3, 123.0, 113.9)   # per-channel mean of CIFAR-10 training pixels (0-255)
CIFAR_STD = (63.0, 62.1, 66.7)


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel for images given as floats in [0, 255], ``(B, 3, H, W)``;
    also accepts channels-last ``(B, H, W, 3)`` and permutes it."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
            raise ValueError(f"images must have shape (B, 3, H, W) or (B, H, W, 3), got {tuple(x.shape)}.")
        if x.shape[1] != 3:
            x = x.movedim(-1, 1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class _ImageModel(nn.Module):
    """Shared tail of the image models: features -> optional projection -> (logits, embedding).

    ``projection_dim``: an MLP head ``g`` whose normalised output is the embedding for the
    contrastive term (the classifier always reads the backbone features)."""

    def _init_heads(self, feat_dim: int, n_classes: int, cosine: bool, projection_dim: int | None):
        self.n_classes, self.feat_dim = n_classes, feat_dim
        self.head = _head(feat_dim, n_classes, cosine)
        self.projection = (nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(), nn.Linear(feat_dim, projection_dim))
                           if projection_dim else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone_features(x)
        z = F.normalize(self.projection(h), dim=-1) if self.projection is not None else h
        return self.head(h), z

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier reads, ``(B, feat_dim)`` (spread is measured on these)."""
        return self.features(self.standardize(x))


class SmallCNN(_ImageModel):
    """Three conv blocks (32-64-128 channels) for CPU-sized CIFAR runs; about 0.1 M parameters."""

    def __init__(self, n_classes: int = 10, cosine: bool = False, projection_dim: int | None = None):
        super().__init__()
        self.standardize = Standardize()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._init_heads(128, n_classes, cosine, projection_dim)


class BasicBlock(nn.Module):
    """3x3-3x3 residual block; the shortcut subsamples and zero-pads channels ("option A")."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride]
        if self.pad:  # zero channels on both sides
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class ResNet32(_ImageModel):
    """CIFAR ResNet-32 (He et al. 2016): 3 stages of 5 basic blocks, 16/32/64 channels, about
    0.46 M parameters; the embedding is the 64-d pooled feature (or the projection's output)."""

    def __init__(self, n_classes: int = 10, cosine: bool = False, projection_dim: int | None = None):
        super().__init__()
        self.standardize = Standardize()
        layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(5):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._init_heads(64, n_classes, cosine, projection_dim)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)


IMAGE_MODELS = {"small_cnn": SmallCNN, "resnet32": ResNet32}


def image_model(name: str, n_classes: int, cosine: bool = False, projection_dim: int | None = None) -> nn.Module:
    """The image model ``name`` (``"small_cnn"`` or ``"resnet32"``), with a cosine head and a
    projection head of ``projection_dim`` (for an embedding term) where asked."""
    if name not in IMAGE_MODELS:
        raise ValueError(f"model must be one of {sorted(IMAGE_MODELS)}, got {name!r}.")
    return IMAGE_MODELS[name](n_classes, cosine=cosine, projection_dim=projection_dim)
