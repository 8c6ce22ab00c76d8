"""K models of one architecture as one network, so that K runs train in one process at about the cost
of one (:func:`~elm_lite.engine.many.fit_many`): input ``(K, B, ...)`` (each model its own batch) ->
``(logits (K, B, C), embeddings (K, B, E))``, model k's outputs and gradients depending only on its own
weights and batch. The core models stay plain: :class:`StackedModels` copies one and swaps its layers
for K-model ones -- linear layers become batched matrix products (:class:`ModelsLinear`), convolutions
use ``groups=K`` on ``K x channels`` (model k's channels side by side), batch norm runs over
``K x channels`` (each model keeps its own statistics). PyTorch's ensembling route
(``torch.func.stack_module_state`` + ``vmap`` over ``functional_call``) computes the same but was
slower on a 2-core CPU (one thread: 4.0 vs 3.1 ms per step for 15 toy MLPs, 128 vs 102 for 4 SmallCNNs,
511 vs 449 for 4 ResNet-32s; ``benchmarks/run_benchmarks.py --only stacking`` measures both).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ..interfaces import ImageModel
from ..models import BasicBlock, CosineLinear, Standardize


class ModelsLinear(nn.Module):
    """K independent linear maps (or cosine heads, ``cosine=True``): ``(K, B, in) -> (K, B, out)``;
    weight ``(K, out, in)`` and bias ``(K, out)``, model k's rows of :class:`torch.nn.Linear`."""

    def __init__(self, in_dim: int, out_dim: int, models: int, cosine: bool = False):
        super().__init__()
        self.cosine = cosine
        self.weight = nn.Parameter(torch.empty(models, out_dim, in_dim))
        self.bias = None if cosine else nn.Parameter(torch.zeros(models, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            return F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).transpose(1, 2)
        return torch.baddbmm(self.bias[:, None, :].to(x.dtype), x, self.weight.transpose(1, 2).to(x.dtype))


class _ModelsStandardize(Standardize):
    """Images ``(K, B, 3, H, W)`` or ``(K, B, H, W, 3)`` -> standardised ``(B, K * 3, H, W)``: model k's
    images in channels ``3k .. 3k + 2``, the layout of the grouped convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or 3 not in (x.shape[2], x.shape[-1]):
            raise ValueError(f"images of K models must have shape (K, B, 3, H, W) or (K, B, H, W, 3), got "
                             f"{tuple(x.shape)}.")
        k = len(x)
        x = super().forward(x.flatten(0, 1))                               # (K * B, 3, H, W)
        return x.unflatten(0, (k, -1)).transpose(0, 1).flatten(1, 2)


class _ModelsBlock(BasicBlock):
    """:class:`~elm_lite.models.BasicBlock` of K models: the shortcut's zero channels are padded
    around each model's own channels."""
    models: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            b, _, h, w = shortcut.shape
            shortcut = F.pad(shortcut.reshape(b, self.models, -1, h, w),
                             (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)).reshape(b, -1, h, w)
        return F.relu(out + shortcut)


def _for_k_models(layer: nn.Module, k: int) -> nn.Module | None:
    """The K-model version of one layer (its values filled in later), or ``None`` if it needs none."""
    if isinstance(layer, nn.Linear):
        return ModelsLinear(layer.in_features, layer.out_features, k)
    if isinstance(layer, CosineLinear):
        return ModelsLinear(layer.weight.shape[1], layer.weight.shape[0], k, cosine=True)
    if isinstance(layer, nn.Conv2d):
        return nn.Conv2d(k * layer.in_channels, k * layer.out_channels, layer.kernel_size, layer.stride,
                         layer.padding, bias=layer.bias is not None, groups=k * layer.groups)
    if isinstance(layer, nn.BatchNorm2d):
        return nn.BatchNorm2d(k * layer.num_features, layer.eps, layer.momentum)
    if isinstance(layer, Standardize):
        return _ModelsStandardize(layer.mean.flatten().tolist(), layer.std.flatten().tolist())
    return None


class StackedModels(nn.Module):
    """``K = len(models)`` models of one architecture (same class, same parameter shapes) as one
    network, with exactly their weights and batch-norm statistics:
    ``stacked(x (K, B, ...))[0][k] == models[k](x[k])[0]``. :meth:`unstack` copies them back."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        first = models[0]
        shapes = lambda m: [(n, t.shape) for n, t in m.state_dict().items()]  # noqa: E731
        if any(type(m) is not type(first) or shapes(m) != shapes(first) for m in models):
            raise ValueError("StackedModels needs models of one architecture (the same class and settings); got "
                             f"{[type(m).__name__ for m in models]}.")
        self.k, self.net = len(models), copy.deepcopy(first)
        for name, layer in list(self.net.named_modules()):
            if isinstance(layer, BasicBlock):
                layer.__class__, layer.models = _ModelsBlock, self.k
            elif (replacement := _for_k_models(layer, self.k)) is not None:
                self.net.set_submodule(name, replacement)
        self.net.to(device=next(first.parameters()).device, dtype=next(first.parameters()).dtype)
        self._copy(models, into_stack=True)
        self.train(first.training)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        if not isinstance(net, ImageModel):                 # linear layers: its forward works on (K, B, D)
            return net(x)
        h = net.features(net.standardize(x))                  # (B, K * F)
        h = h.view(len(h), self.k, -1).transpose(0, 1)        # (K, B, F)
        return net.head(h), (F.normalize(net.projection(h), dim=-1) if net.projection is not None else h)

    def head_weight(self) -> torch.Tensor:
        """The K classifier heads' weights ``(K, C, E)`` (the prototypes of a loss that asks for them)."""
        return self.net.head.weight

    def unstack(self, models: list[nn.Module]) -> None:
        """Copy the weights and statistics of model k into ``models[k]`` (in place)."""
        self._copy(models, into_stack=False)

    @torch.no_grad()
    def _copy(self, models: list[nn.Module], into_stack: bool) -> None:
        """Each tensor of the stack is its models' tensors stacked on a new first axis (linear layers),
        concatenated along the first axis (convolutions, batch norm), or -- for a counter such as
        ``num_batches_tracked`` -- the same for all."""
        singles = [m.state_dict() for m in models]
        for name, t in self.net.state_dict().items():
            parts = [s[name] for s in singles]
            if t.shape == parts[0].shape:
                pieces = [t] * len(parts)
            elif t.ndim == parts[0].ndim + 1:
                pieces = list(t.unbind(0))
            else:
                pieces = list(t.chunk(len(parts), 0))
            for piece, part in zip(pieces, parts):
                (piece if into_stack else part).copy_(part if into_stack else piece)
