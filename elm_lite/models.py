"""Models. Every model maps ``x`` of shape ``(B, D)`` to ``(logits (B, C), embedding (B, E))``,
the same interface the losses, the training loop and the plots rely on.

The MLP and the image models also come as *K independent models in one network* (``models=K``):
input ``(K, B, ...)`` (each model its own batch) -> ``(logits (K, B, C), embedding (K, B, E))``.
Convolutions use ``groups=K``, batch norm runs over ``K * channels`` (each model keeps its own
statistics) and linear layers are batched matrix products (:class:`ModelsLinear`), so model k's
outputs and gradients depend only on its own weights and batch. :func:`stack_models` builds one
from K trained or freshly initialised models; :func:`unstack_models` copies the weights back.
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


class ModelsLinear(nn.Module):
    """K independent linear maps (or cosine heads, ``cosine=True``): ``(K, B, in) -> (K, B, out)``;
    weight ``(K, out, in)`` and bias ``(K, out)``, model k's rows of :class:`torch.nn.Linear`."""

    def __init__(self, in_dim: int, out_dim: int, models: int, cosine: bool = False):
        super().__init__()
        self.cosine = cosine
        self.weight = nn.Parameter(torch.empty(models, out_dim, in_dim))
        self.bias = None if cosine else nn.Parameter(torch.zeros(models, out_dim))
        nn.init.normal_(self.weight, std=in_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            return F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).transpose(1, 2)
        return torch.baddbmm(self.bias[:, None, :].to(x.dtype), x, self.weight.transpose(1, 2).to(x.dtype))


def _head(in_dim: int, n_classes: int, cosine: bool, models: int = 1) -> nn.Module:
    if models > 1:
        return ModelsLinear(in_dim, n_classes, models, cosine)
    return CosineLinear(in_dim, n_classes) if cosine else nn.Linear(in_dim, n_classes)


def _linear(in_dim: int, out_dim: int, models: int) -> nn.Module:
    return ModelsLinear(in_dim, out_dim, models) if models > 1 else nn.Linear(in_dim, out_dim)


def _check_models(models) -> int:
    if isinstance(models, bool) or not isinstance(models, int) or models < 1:
        raise ValueError(f"models must be an integer >= 1 (how many independent models), got {models!r}.")
    return models


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
                 embed_dim: int = 2, normalize: bool = False, cosine: bool = False, models: int = 1):
        super().__init__()
        self.config = dict(in_dim=in_dim, n_classes=n_classes, hidden=hidden, depth=depth, embed_dim=embed_dim,
                           normalize=normalize, cosine=cosine)
        self.n_classes, self.models = n_classes, _check_models(models)
        layers, width = [], in_dim
        for _ in range(depth):
            layers += [_linear(width, hidden, models), nn.ReLU()]
            width = hidden
        layers.append(_linear(width, embed_dim, models))
        self.body = nn.Sequential(*layers)
        self.head = _head(embed_dim, n_classes, cosine, models)
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
    also accepts channels-last ``(B, H, W, 3)`` and permutes it. With ``models=K`` the input is
    ``(K, B, 3, H, W)`` or ``(K, B, H, W, 3)`` and the output ``(B, K * 3, H, W)``: model k's images
    in channels ``3k .. 3k + 2``, the layout of the grouped convolutions."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD, models: int = 1):
        super().__init__()
        self.models = models
        self.register_buffer("mean", torch.tensor(mean).repeat(models).view(1, 3 * models, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).repeat(models).view(1, 3 * models, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = 4 if self.models == 1 else 5
        if x.ndim != expected or 3 not in (x.shape[-3], x.shape[-1]):
            k = self.models
            shape = "(B, 3, H, W) or (B, H, W, 3)" if k == 1 else f"({k}, B, 3, H, W) or ({k}, B, H, W, 3)"
            raise ValueError(f"images must have shape {shape}, got {tuple(x.shape)}.")
        if x.shape[-3] != 3:
            x = x.movedim(-1, -3)
        if self.models > 1:  # (K, B, 3, H, W) -> (B, K * 3, H, W)
            x = x.transpose(0, 1).flatten(1, 2)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class _ImageModel(nn.Module):
    """Shared tail of the image models: features -> optional projection -> (logits, embedding).

    ``projection_dim``: an MLP head ``g`` whose normalised output is the embedding for the
    contrastive term (the classifier always reads the backbone features)."""

    def _init_heads(self, feat_dim: int, n_classes: int, cosine: bool, projection_dim: int | None, models: int):
        self.n_classes, self.feat_dim = n_classes, feat_dim
        self.head = _head(feat_dim, n_classes, cosine, models)
        self.projection = (nn.Sequential(_linear(feat_dim, feat_dim, models), nn.ReLU(),
                                         _linear(feat_dim, projection_dim, models)) if projection_dim else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone_features(x)
        z = F.normalize(self.projection(h), dim=-1) if self.projection is not None else h
        return self.head(h), z

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier reads, ``(B, feat_dim)`` (``(K, B, feat_dim)`` for K models;
        spread is measured on these)."""
        h = self.features(self.standardize(x))                   # (B, K * feat_dim)
        return h if self.models == 1 else h.view(len(h), self.models, self.feat_dim).transpose(0, 1)


class SmallCNN(_ImageModel):
    """Three conv blocks (32-64-128 channels) for CPU-sized CIFAR runs; about 0.1 M parameters."""

    def __init__(self, n_classes: int = 10, cosine: bool = False, projection_dim: int | None = None, models: int = 1):
        super().__init__()
        self.config = dict(n_classes=n_classes, cosine=cosine, projection_dim=projection_dim)
        self.models = k = _check_models(models)
        self.standardize = Standardize(models=k)

        def block(cin, cout):
            return [nn.Conv2d(k * cin, k * cout, 3, padding=1, bias=False, groups=k), nn.BatchNorm2d(k * cout),
                    nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._init_heads(128, n_classes, cosine, projection_dim, k)


class _BasicBlock(nn.Module):
    """3x3-3x3 residual block; the shortcut subsamples and zero-pads channels ("option A")."""

    def __init__(self, cin: int, cout: int, stride: int, models: int = 1):
        super().__init__()
        k = models
        self.conv1 = nn.Conv2d(k * cin, k * cout, 3, stride, 1, bias=False, groups=k)
        self.bn1 = nn.BatchNorm2d(k * cout)
        self.conv2 = nn.Conv2d(k * cout, k * cout, 3, 1, 1, bias=False, groups=k)
        self.bn2 = nn.BatchNorm2d(k * cout)
        self.pad, self.stride, self.models = cout - cin, stride, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:  # zero channels on both sides of each model's own channels
            b, _, h, w = shortcut.shape
            shortcut = F.pad(shortcut.reshape(b, self.models, -1, h, w),
                             (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)).reshape(b, -1, h, w)
        return F.relu(out + shortcut)


class ResNet32(_ImageModel):
    """CIFAR ResNet-32 (He et al. 2016): 3 stages of 5 basic blocks, 16/32/64 channels, about
    0.46 M parameters; the embedding is the 64-d pooled feature (or the projection's output)."""

    def __init__(self, n_classes: int = 10, cosine: bool = False, projection_dim: int | None = None, models: int = 1):
        super().__init__()
        self.config = dict(n_classes=n_classes, cosine=cosine, projection_dim=projection_dim)
        self.models = k = _check_models(models)
        self.standardize = Standardize(models=k)
        layers, cin = [nn.Conv2d(3 * k, 16 * k, 3, 1, 1, bias=False, groups=k), nn.BatchNorm2d(16 * k), nn.ReLU()], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(5):
                layers.append(_BasicBlock(cin, cout, stride if i == 0 else 1, k))
                cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._init_heads(64, n_classes, cosine, projection_dim, k)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)


# ----------------------------------------------------------------------------- K models as one network


def stack_models(models: list[nn.Module]) -> nn.Module:
    """One network holding ``K = len(models)`` models of the same architecture (an :class:`MLP`,
    :class:`SmallCNN` or :class:`ResNet32` with equal settings), with exactly their weights and
    batch-norm statistics: ``stacked(x (K, B, ...))[0][k] == models[k](x[k])[0]``."""
    first = models[0]
    if not hasattr(first, "config") or any(type(m) is not type(first) or m.config != first.config for m in models):
        raise ValueError("stack_models needs models of one architecture (MLP, SmallCNN or ResNet32 with equal "
                         f"settings); got {[type(m).__name__ for m in models]}.")
    like = next(first.parameters())
    stacked = type(first)(**first.config, models=len(models)).to(device=like.device, dtype=like.dtype)
    _copy_between(stacked, models, into_stack=True)
    return stacked.train(first.training)


def unstack_models(stacked: nn.Module, models: list[nn.Module]) -> None:
    """Copy the weights and statistics of model k of ``stacked`` into ``models[k]`` (in place)."""
    _copy_between(stacked, models, into_stack=False)


@torch.no_grad()
def _copy_between(stacked: nn.Module, models: list[nn.Module], into_stack: bool) -> None:
    """Each tensor of the stack is its models' tensors stacked on a new first axis (linear layers),
    concatenated along the first axis (convolutions, batch norm: the grouped layout), or -- for a
    counter such as ``num_batches_tracked`` -- the same for all."""
    singles = [m.state_dict() for m in models]
    for name, t in stacked.state_dict().items():
        parts = [s[name] for s in singles]
        if t.shape == parts[0].shape:
            pieces = [t] * len(parts)
        elif t.ndim == parts[0].ndim + 1:
            pieces = list(t.unbind(0))
        else:
            pieces = list(t.chunk(len(parts), 0))
        for piece, part in zip(pieces, parts):
            (piece if into_stack else part).copy_(part if into_stack else piece)
