"""The training loop (:func:`fit`, on one screen, in named steps: :func:`train_epoch`,
:func:`train_step`), prediction and decoupled training.

Large runs (schedules, SGD, bf16, checkpoints, several processes) train through the engine's loop,
:func:`elm_lite.engine.loop.fit_at_scale`, and K runs at once through
:func:`elm_lite.engine.many.fit_many`; tests hold both equal to :func:`fit` where their settings meet.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from .interfaces import EmbeddingLoss, ImageModel, Scheduled, uses_prototypes
from .losses import SupConLoss
from .metrics import balanced_accuracy
from .recipes import LONGTAIL_TOY, SEED, check, integer, number, one_of, or_none, tensor


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation and batch order)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run (lists of equal length; ``held_out_balanced_accuracy``
    only where :func:`track_balanced_accuracy` fills it)."""
    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    train_balanced_accuracy: list = field(default_factory=list)
    held_out_balanced_accuracy: list = field(default_factory=list)
    elapsed: list = field(default_factory=list)  # seconds since the start at each epoch's end
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def record(self, epoch: int, loss: float, train_balanced_accuracy: float, seconds: float) -> None:
        """Append one finished epoch that took ``seconds`` of training."""
        self.seconds += seconds
        self.epoch.append(epoch)
        self.loss.append(loss)
        self.train_balanced_accuracy.append(train_balanced_accuracy)
        self.elapsed.append(self.seconds)


def track_balanced_accuracy(x, y) -> Callable:
    """An ``on_epoch_end`` for :func:`fit`: after each epoch, the balanced accuracy on held-out data
    ``x`` ``(N, ...)``, ``y`` ``(N,)`` goes into ``history.held_out_balanced_accuracy`` (for curves;
    choose nothing on test data)."""
    def record(epoch: int, model: nn.Module, history: History) -> None:
        history.held_out_balanced_accuracy.append(balanced_accuracy(y, predict(model, x)))
    return record


def as_tensor(a) -> torch.Tensor:
    """``a`` (a tensor, a NumPy array or a list) as a tensor."""
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def check_xy(x, y, n_classes: int | None, dtype: torch.dtype = torch.float32):
    """``x`` ``(N, ...)`` as ``dtype`` (the model's: float64 models train on float64 inputs, the rest on
    float32), ``y`` ``(N,)`` as int64, checked at the door."""
    x, y = as_tensor(x), as_tensor(y)
    check("x", x.flatten(1) if x.ndim > 1 else x, tensor(("examples", "features"), "number", finite=True),
          "Images may come as (N, H, W, C). Clean or impute NaN and inf before training: they make every loss NaN.")
    check("y", y, tensor((len(x),), "int", below=n_classes), "y holds the class index of each row of x"
          + (f", in [0, {n_classes}) for a model with {n_classes} outputs." if n_classes else "."))
    return x.to(dtype if dtype == torch.float64 else torch.float32), y.long()


def check_model_takes(model: nn.Module, x: torch.Tensor) -> None:
    """Run 2 rows through the eager model so that a wrong input shape is reported here, not from
    deep inside a layer mid-training (under torch.compile: no extra 2-row graph is compiled)."""
    eager, was_training = getattr(model, "_orig_mod", model), model.training
    try:
        with torch.no_grad():
            eager.eval()(x[:2])
    except RuntimeError as e:
        raise ValueError(f"the model cannot take inputs of shape {tuple(x.shape[1:])}: {e}") from None
    finally:
        model.train(was_training)


def compute_loss(loss_fn: Callable, logits: torch.Tensor, embedding: torch.Tensor, y: torch.Tensor,
                 prototypes: torch.Tensor | None = None) -> torch.Tensor:
    """``loss_fn(logits, y)``, or for a loss on logits and embeddings (an
    :class:`~elm_lite.interfaces.EmbeddingLoss`: attributes ``uses_embedding`` and ``use_prototypes``)
    the total of ``loss_fn(logits, embedding, y, prototypes)``.
    With several views (``logits`` ``(B, V, C)``) a logit-only loss sees every view."""
    if isinstance(loss_fn, EmbeddingLoss):
        return loss_fn(logits, embedding, y, prototypes)[0]                  # (total, parts)
    if logits.ndim == 3:
        logits, y = logits.flatten(0, 1), y.repeat_interleave(logits.shape[1])
    return loss_fn(logits, y)


def gaussian_jitter(sigma: float) -> Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]:
    """A toy augmentation: ``(x, generator) -> x + sigma * noise`` (a view for contrastive training)."""
    check("sigma", sigma, number(0))

    def jitter(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return jitter


SAMPLINGS = ("uniform", "class_balanced")


class EpochSampler:
    """The example order of each epoch, from a run's order generator. ``"uniform"``: a random
    permutation (``None`` for a full batch: every example, in order). ``"class_balanced"``
    (re-sampling): each draw picks a class uniformly, then one of its examples uniformly, with
    replacement -- every class is seen equally often, its few examples over and over.
    ``sampler.order(device)`` -> ``(N,)`` indices or ``None``."""

    def __init__(self, y: torch.Tensor, batch_size: int, sampling: str, generator: torch.Generator):
        self.n, self.batch_size, self.sampling, self.generator = len(y), batch_size, sampling, generator
        labels = y.cpu()
        members = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)] if sampling != "uniform" else []
        self.sizes = torch.tensor([len(m) for m in members])
        self.flat = torch.cat(members) if members else torch.empty(0, dtype=torch.long)

    def order(self, device: torch.device) -> torch.Tensor | None:
        if self.sampling == "uniform":
            return torch.randperm(self.n, generator=self.generator).to(device) if self.batch_size < self.n else None
        cls = torch.randint(len(self.sizes), (self.n,), generator=self.generator)
        within = (torch.rand(self.n, generator=self.generator) * self.sizes[cls]).long()
        return self.flat[(torch.cumsum(self.sizes, 0) - self.sizes)[cls] + within].to(device)


def run_generators(seed: int, device: torch.device, rank: int = 0) -> tuple[torch.Generator, torch.Generator]:
    """A run's two random streams, both fixed by its seed: batch order (CPU) and augmentation (on
    ``device``, one stream per process under DDP). Separate streams let K runs trained together
    (:func:`elm_lite.engine.many.fit_many`) draw exactly what each would draw alone."""
    order = torch.Generator().manual_seed(int(seed))
    augment = torch.Generator(device=device).manual_seed(int(seed) + 7919 * (rank + 1))
    return order, augment


@torch.no_grad()
def predict_outputs(model: nn.Module, x, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, C), embeddings (N, E))`` of ``model`` on ``x`` ``(N, D)``, in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    x = as_tensor(x).float()
    device = next(iter(model.parameters()), torch.zeros(())).device  # a model without parameters: CPU
    parts = [model(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat([p[0].cpu() for p in parts]), torch.cat([p[1].cpu() for p in parts])


def predict_logits(model: nn.Module, x, batch_size: int = 4096) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on ``x`` ``(N, D)``, in eval mode."""
    return predict_outputs(model, x, batch_size)[0]


@torch.no_grad()
def evaluate_features(model: nn.Module, x, device: torch.device,
                      batch: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(logits (N, C), backbone features (N, F), projection (N, P) or None)`` of an image model
    (one with ``backbone_features``) on images ``x`` ``(N, 32, 32, 3)``, in eval mode. The
    projection is the unnormalised output of the contrastive projection head, where the model has one."""
    model.eval()
    projection = model.projection
    logits, feats, projected = [], [], []
    for i in range(0, len(x), batch):
        h = model.backbone_features(torch.as_tensor(x[i:i + batch], device=device).float())
        logits.append(model.head(h).float().cpu())
        feats.append(h.float().cpu())
        if projection is not None:
            projected.append(projection(h).float().cpu())
    return (torch.cat(logits).numpy(), torch.cat(feats).numpy(),
            torch.cat(projected).numpy() if projected else None)


def predict(model: nn.Module, x, batch_size: int = 4096) -> np.ndarray:
    """Predicted labels ``(N,)`` as an int64 NumPy array."""
    return predict_logits(model, x, batch_size).argmax(1).numpy()


def by_example(t: torch.Tensor, n_views: int) -> torch.Tensor:
    """The outputs of ``n_views`` views of a batch, one view after another ``(..., V * B, D)``,
    regrouped per example: ``(..., B, V, D)``."""
    return t.unflatten(-2, (n_views, -1)).transpose(-3, -2)


def check_fit_args(epochs, batch_size, lr, weight_decay, seed, views, sampling) -> None:
    """Refuse a bad training setting before any work starts."""
    check("epochs", epochs, integer(1))
    check("batch_size", batch_size, or_none(integer(1)))
    check("lr", lr, number(0, low_open=True))
    check("weight_decay", weight_decay, number(0))
    check("seed", seed, SEED)
    check("views", views, (lambda v: isinstance(v, (list, tuple)) and all(map(callable, v)),
                           "a list of augmentations (x, generator) -> x, one per view"),
          "Two jittered views: views=2 * [gaussian_jitter(0.5)]; one plain view: views=[].")
    check("sampling", sampling, one_of(*SAMPLINGS))


def check_finite(loss: float, epoch: int, lr: float, run: str = "") -> None:
    """Stop with ``FloatingPointError`` if an epoch's mean ``loss`` is not finite (``run``: which one)."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"the training loss {run}became {loss} in epoch {epoch}: "
                                 "check the inputs for NaN or inf and the labels, lower the learning rate "
                                 f"(lr={lr}), or raise a contrastive term's temperature if it is far below 0.1 "
                                 "(logits of cosine / temperature grow as 1 / temperature). Nothing of this epoch "
                                 "was saved.")


def prepare(model: nn.Module, loss_fn, x, y) -> tuple[list, Callable, torch.Tensor, torch.Tensor]:
    """Check the data against the model, move it and the loss to the model's device; returns
    ``(parameters to train, loss_fn, x, y)`` (the model's and the loss's own, if it has any)."""
    core = getattr(model, "module", model)   # the model inside DDP
    params = list(model.parameters()) + list(getattr(loss_fn, "parameters", lambda: [])())
    if not params:
        raise ValueError(f"the model ({type(core).__name__}) has no parameters to train.")
    x, y = (t.to(params[0].device) for t in check_xy(x, y, getattr(core, "n_classes", None), params[0].dtype))
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    if isinstance(loss_fn, SupConLoss):
        raise ValueError(f"{type(loss_fn).__name__} is a loss on embeddings alone; fit trains a classifier with a loss "
                         "on its logits: use ELMLoss(counts, lam=...) (logit adjustment plus this term) instead.")
    if hasattr(loss_fn, "to"):
        loss_fn.to(params[0].device)
    check_model_takes(model, x)
    return params, loss_fn, x, y


def start_epoch(model: nn.Module, losses: list, epoch: int) -> None:
    """Put the model in training mode and tell each loss the epoch (from 1; e.g. LDAM's deferred
    re-weighting)."""
    model.train()
    for loss in losses:
        if isinstance(loss, Scheduled):
            loss.set_epoch(epoch)


def train_step(model: nn.Module, loss_fn: Callable, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
               views: Sequence[Callable], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch ``xb`` ``(B, ...)``, ``yb`` ``(B,)``, seen through ``views``;
    returns (loss, logits of the first view ``(B, C)``)."""
    inputs = [augment(xb, generator) for augment in views] or [xb]
    logits, emb = model(torch.cat(inputs))                       # (V * B, C), (V * B, E)
    if len(inputs) > 1:                                           # -> (B, V, C), (B, V, E)
        logits, emb = by_example(logits, len(inputs)), by_example(emb, len(inputs))
    prototypes = model.head.weight if uses_prototypes(loss_fn) else None
    loss = compute_loss(loss_fn, logits, emb, yb, prototypes)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach().reshape(len(yb), -1, logits.shape[-1])[:, 0]


def train_epoch(model: nn.Module, loss_fn: Callable, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                order: torch.Tensor | None, batch_size: int, views: Sequence[Callable],
                generator: torch.Generator) -> tuple[float, float]:
    """One pass over ``(x, y)`` in ``order`` (``None``: one full batch); returns (mean loss,
    balanced accuracy on the batches as trained)."""
    total, preds, labels = torch.zeros((), device=x.device, dtype=torch.float64), [], []
    for idx in order.split(batch_size) if order is not None else [None]:
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        loss, logits = train_step(model, loss_fn, opt, xb, yb, views, generator)
        total += loss * len(yb)      # stays on the device: no sync per step
        preds.append(logits.argmax(1))
        labels.append(yb)
    labels = torch.cat(labels)
    return total.item() / len(labels), balanced_accuracy(labels.cpu(), torch.cat(preds).cpu())


def fit(model: nn.Module, x, y, loss_fn: Callable | None = None, *, epochs: int = LONGTAIL_TOY["epochs"],
        batch_size: int | None = LONGTAIL_TOY["batch_size"], lr: float = LONGTAIL_TOY["lr"], weight_decay: float = 0.0,
        seed: int = 0, views: Sequence[Callable] = (), sampling: str = "uniform",
        on_epoch_end: Callable | None = None) -> History:
    """Train ``model`` on ``x`` ``(N, ...)``, ``y`` ``(N,)`` with Adam and ``loss_fn`` (default
    cross-entropy, called as :func:`compute_loss` says); returns its :class:`History`. Each epoch:
    one pass in the order of ``sampling`` (:class:`EpochSampler`; ``batch_size=None``: one full
    batch), each batch seen through ``views`` (one augmentation ``(x, generator) -> x`` per view;
    none: the batch itself), then ``on_epoch_end(epoch, model, history)``. ``seed`` fixes batch
    order and augmentation (:func:`run_generators`; initialisation is the caller's,
    :func:`set_seed`). Stops with ``FloatingPointError`` at the first epoch whose loss is not finite."""
    check_fit_args(epochs, batch_size, lr, weight_decay, seed, views, sampling)
    params, loss_fn, x, y = prepare(model, loss_fn, x, y)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    order, augment = run_generators(seed, x.device)
    batch_size = int(batch_size or len(x))
    sampler, history = EpochSampler(y, batch_size, sampling, order), History()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        start_epoch(model, [loss_fn], epoch)
        loss, train_acc = train_epoch(model, loss_fn, opt, x, y, sampler.order(x.device), batch_size, views, augment)
        check_finite(loss, epoch, lr)
        history.record(epoch, loss, train_acc, time.perf_counter() - start)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, history)
    return history


# ----------------------------------------------------------------------------- decoupled training


@torch.no_grad()
def head_inputs(model: nn.Module, x, batch_size: int = 1000) -> torch.Tensor:
    """The features ``(N, F)`` the classifier head reads, in eval mode, on the model's device: the
    backbone's for an image model, the embedding for the toy models."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(x)
    read = model.backbone_features if isinstance(model, ImageModel) else (lambda t: model(t)[1])
    out = torch.cat([read(x[i:i + batch_size].to(device).float()) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out.float()


class _HeadOnly(nn.Module):
    """A classifier head as a model of its own: features ``(B, F)`` -> ``(logits, features)``."""

    def __init__(self, head: nn.Module, n_classes: int):
        super().__init__()
        self.head, self.n_classes = head, n_classes

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(f), f


def retrain_classifier(model: nn.Module, x, y, *, epochs: int, lr: float, batch_size: int,
                       seed: int = 0) -> History:
    """Classifier re-training (cRT, Kang et al. 2020): re-initialise ``model.head`` (under ``seed``)
    and train it alone with plain cross-entropy and class-balanced sampling, on the frozen features
    it reads (:func:`head_inputs`, no augmentation). The representation is untouched. One process
    only: under ``torchrun`` every process would re-train its own copy."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ValueError("classifier re-training (cRT) runs in one process; under torchrun train with CE, then "
                         "re-train the classifier of the saved model in a single process.")
    features = head_inputs(model, x)
    set_seed(seed)
    model.head.reset_parameters()
    return fit(_HeadOnly(model.head, model.n_classes), features, y, nn.CrossEntropyLoss(), epochs=epochs,
               batch_size=batch_size, lr=lr, seed=seed, sampling="class_balanced")


@torch.no_grad()
def tau_normalize(model: nn.Module, kappa: float = 1.0) -> None:
    """Tau-normalisation (Kang et al. 2020), in place: every class's weight vector ``w_c`` of
    ``model.head`` becomes ``w_c / ||w_c||^kappa`` and the bias is dropped (set to 0). A long-tailed
    training run leaves the head classes' weights longer; ``kappa = 1`` makes them all unit length.
    Kang et al. write the exponent tau; the course writes kappa, keeping tau for logit adjustment."""
    head = model.head
    if not isinstance(head, nn.Linear):
        raise ValueError(f"tau-normalisation rescales a linear head's weights; this model's head is "
                         f"{type(head).__name__} (a cosine head is normalised already).")
    head.weight.div_(head.weight.norm(dim=1, keepdim=True).clamp(min=1e-12) ** kappa)
    if head.bias is not None:
        head.bias.zero_()

