"""Weight balancing (Alshammari et al., CVPR 2022): tune the weight decay, and cap each class's
classifier weight norm. Under plain CE the head classes' weight vectors grow longer than the tail's
(notebook 03 measures it); weight decay shrinks the long ones most, MaxNorm caps them. Stage 1 is CE
with the weight decay of :data:`~elm_lite.recipes.WEIGHT_BALANCING` (:func:`choose_weight_decay`
picks it on validation data); stage 2 (:func:`balanced_classifier_stage`) re-trains the classifier
on the frozen features with the class-balanced loss, weight decay and MaxNorm."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .losses import ReweightedLoss
from .metrics import balanced_accuracy, mean_sd
from .recipes import WEIGHT_BALANCING
from .train import head_inputs, predict


def class_weight_norms(model: nn.Module) -> np.ndarray:
    """``||w_c||`` of each class's weight vector in ``model.head``, shape ``(C,)``."""
    return model.head.weight.detach().norm(dim=1).cpu().numpy()


@torch.no_grad()
def max_norm_(head: nn.Linear, cap: float) -> None:
    """MaxNorm, in place: every row ``w_c`` of ``head.weight`` longer than ``cap`` is scaled back to
    length ``cap`` (the projection step of projected gradient descent); shorter rows are untouched."""
    norms = head.weight.norm(dim=1, keepdim=True)
    head.weight.mul_((cap / norms.clamp(min=1e-12)).clamp(max=1.0))


def balanced_classifier_stage(model: nn.Module, x, y, *, epochs: int = WEIGHT_BALANCING["stage2_epochs"],
                              lr: float = WEIGHT_BALANCING["stage2_lr"],
                              weight_decay: float = WEIGHT_BALANCING["weight_decay"],
                              max_norm: float = WEIGHT_BALANCING["max_norm"]) -> None:
    """Weight balancing's stage 2, in place: ``model.head`` (kept, not re-initialised) trained alone on
    the frozen features it reads (:func:`~elm_lite.train.head_inputs`) of ``x`` ``(N, ...)``, labels
    ``y`` ``(N,)``, full batch, with the class-balanced (effective-number) cross-entropy, Adam with
    ``weight_decay``, and :func:`max_norm_` after every step. Deterministic (no batch order)."""
    head = model.head
    if not isinstance(head, nn.Linear):
        raise ValueError(f"weight balancing caps a linear head's weight norms; this model's head is "
                         f"{type(head).__name__} (train it with cosine=False).")
    features = head_inputs(model, x)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long, device=features.device)
    loss = ReweightedLoss(np.bincount(labels.cpu().numpy(), minlength=head.out_features),
                          "effective_number").to(features.device)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    max_norm_(head, max_norm)
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss(head(features), labels).backward()
        opt.step()
        max_norm_(head, max_norm)


def choose_weight_decay(train: Callable[[float, int], nn.Module], x_val, y_val,
                        grid=WEIGHT_BALANCING["weight_decay_grid"], seeds=(0, 1, 2)) -> tuple[float, dict]:
    """The weight decay of ``grid`` whose trained models have the best mean balanced accuracy on the
    validation set ``(x_val, y_val)`` (carved from the training data, never the test set).
    ``train(weight_decay, seed) -> model`` trains one model (any data, any method: the own-data
    path reuses it). Returns ``(best, {weight_decay: (mean, sd, n) over seeds})`` -- the spread says
    how stable the choice is."""
    if not len(grid) or not len(seeds):
        raise ValueError(f"need a non-empty grid and seeds, got grid={grid!r}, seeds={seeds!r}.")
    scores = {wd: mean_sd([balanced_accuracy(y_val, predict(train(wd, s), x_val)) for s in seeds]) for wd in grid}
    return max(scores, key=lambda wd: scores[wd][0]), scores
