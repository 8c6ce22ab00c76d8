"""The interfaces the training loop and the tools rely on, declared once (``typing.Protocol``).

Models and losses are plain ``nn.Module``s; these protocols name what the rest of the package may
ask of them, named in one place. This module imports nothing
from the package (it is a bottom layer).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class ImageModel(Protocol):
    """A CIFAR model, ``model(x) -> (logits (B, C), embedding (B, E))`` like every model: backbone
    features ``(B, F)``, the classifier ``head`` on them, and the
    contrastive ``projection`` head (``None`` without one)."""
    n_classes: int
    head: nn.Module
    projection: nn.Module | None

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Scheduled(Protocol):
    """A loss that changes with the epoch (LDAM's deferred re-weighting; ELM passes it on):
    the training loop calls ``set_epoch(epoch)`` (from 1) before each epoch."""

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class EmbeddingLoss(Protocol):
    """A loss on logits *and* embeddings: ``loss(logits, z, labels, prototypes=None) -> (total,
    parts)``; with ``use_prototypes`` the loop passes the classifier weights ``(C, E)``."""
    uses_embedding: bool
    use_prototypes: bool


def uses_prototypes(loss) -> bool:
    """Whether the training loop must pass ``loss`` the classifier weights as prototypes."""
    return isinstance(loss, EmbeddingLoss) and bool(loss.use_prototypes)


def uses_embedding(loss_class: type) -> bool:
    """Whether losses of ``loss_class`` read the embedding (the model then needs a projection head)."""
    return bool(getattr(loss_class, "uses_embedding", False))
