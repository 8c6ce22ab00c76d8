"""The training loop of large runs: :func:`fit_at_scale` is :func:`elm_lite.train.fit` with what only
full-scale runs and the speed ladder need -- SGD with a learning-rate schedule, bf16 autocast, full
batches only, a progress bar, and :class:`FitHooks`: checkpoints with resume and run identity
(:class:`~elm_lite.engine.checkpoints.RunHooks`), and distributed training, where each process trains
on its share of the batch and the hooks gather the whole batch for the loss.

With its defaults (Adam, no schedule, fp32, no hooks) it trains exactly as :func:`~elm_lite.train.fit`
does: ``tests/test_train.py`` holds the two equal. :func:`~elm_lite.engine.many.fit_many` shares its
settings and helpers.
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..interfaces import uses_prototypes
from ..metrics import balanced_accuracy
from ..recipes import LONGTAIL_TOY, check, integer, number, one_of, or_none, plain
from ..train import (
    SAMPLINGS,
    EpochSampler,
    History,
    by_example,
    check_finite,
    compute_loss,
    prepare,
    run_generators,
    start_epoch,
)

OPTIMIZERS = ("adam", "sgd")


def check_loop_args(epochs, lr, weight_decay, batch_size, n_views, augment, optimizer, sampling) -> None:
    """Refuse a bad training setting before any work starts."""
    check("epochs", epochs, integer(1))
    check("lr", lr, number(0, low_open=True))
    check("weight_decay", weight_decay, number(0))
    check("batch_size", batch_size, or_none(integer(1)))
    check("n_views", n_views, integer(1))
    if n_views > 1 and augment is None:
        raise ValueError("n_views > 1 needs an augment function (e.g. crop_flip); identical "
                         "views would only duplicate each example.")
    check("optimizer", optimizer, one_of(*OPTIMIZERS))
    check("sampling", sampling, one_of(*SAMPLINGS))


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``"adam"`` or ``"sgd"`` (momentum 0.9; the multi-tensor ``foreach`` update)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, foreach=True)


def set_learning_rate(opt: torch.optim.Optimizer, epoch: int, lr: float,
                      lr_schedule: Callable[[int], float] | None) -> None:
    """Set the learning rate of ``epoch`` (from 1): ``lr * lr_schedule(epoch)``."""
    factor = lr_schedule(epoch) if lr_schedule else 1.0
    if not (isinstance(factor, numbers.Real) and 0 <= factor < math.inf):   # NaN fails too
        raise ValueError(f"lr_schedule({epoch}) returned {factor!r}; it must return a learning-rate multiplier "
                         ">= 0 (a finite number) for every epoch.")
    for group in opt.param_groups:
        group["lr"] = lr * factor


def loss_precision(t: torch.Tensor) -> torch.Tensor:
    """Losses run in float32 at least (bf16 forward passes are cast up; float64 stays float64)."""
    return t if t.dtype == torch.float64 else t.float()


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch of ``n`` examples (an incomplete last batch is dropped with ``drop_last``)."""
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


def loop_settings(x: torch.Tensor, batch_size: int, lr: float, weight_decay: float, optimizer: str, n_views: int,
                  epochs: int, sampling: str, **run) -> dict:
    """What defines a training loop besides its model and loss: data shape, loop settings and ``run``
    (seed(s), parameter count); ``sampling`` only when not uniform."""
    return {"examples": len(x), "input": list(x.shape[1:]), **run, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "optimizer": optimizer, "n_views": n_views, "epochs": epochs,
            **({"sampling": sampling} if sampling != "uniform" else {})}


class FitHooks:
    """The optional collaborators of :func:`fit_at_scale`; these defaults do nothing (one process, no
    files). :class:`elm_lite.engine.checkpoints.RunHooks` supplies others (checkpoints with resume,
    run identity, DDP)."""
    rank = 0              # this process among the training processes
    drop_last = False     # whether every step must see a full batch (equal shares under DDP)

    def start(self, run: Run) -> int:
        """Called before the first epoch; returns the epoch to start from (a resumed run's next one)."""
        return 1

    def end_epoch(self, run: Run, epoch: int) -> None:
        """Called after each epoch's record (e.g. to save a checkpoint)."""

    def shard(self, idx: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """This process's share of a batch's indices ``(B,)`` (``None``: all ``n`` examples, in order)."""
        return idx

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """This process's rows -> the whole batch's."""
        return t


@dataclass
class Run:
    """Everything one :func:`fit_at_scale` run holds besides the data (what a step and the hooks need)."""
    model: nn.Module
    core: nn.Module            # the model itself (inside DDP: ``model.module``)
    loss_fn: Callable
    opt: torch.optim.Optimizer
    n_views: int
    augment: Callable | None
    bf16: bool
    generators: tuple          # (batch order, augmentation): the run's random streams, run_generators
    hooks: FitHooks
    settings: dict             # the loop's settings (loop_settings): what a checkpoint must match
    history: History = field(default_factory=History)


def train_step(run: Run, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch ``xb`` ``(B, ...)``, ``yb`` ``(B,)``; returns (loss, logits of the
    first view ``(B', C)``, labels ``(B',)``), ``B'`` the whole batch across processes. No host sync."""
    views = [run.augment(xb, run.generators[1]) if run.augment else xb for _ in range(run.n_views)]
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        logits, emb = run.model(torch.cat(views) if run.n_views > 1 else views[0])
        if run.n_views > 1:  # (V * B, ...) -> (B, V, ...)
            logits, emb = by_example(logits, run.n_views), by_example(emb, run.n_views)
        logits, emb, yb = (run.hooks.gather(t) for t in (logits, emb, yb))
        prototypes = run.core.head.weight if uses_prototypes(run.loss_fn) else None
        loss = compute_loss(run.loss_fn, loss_precision(logits), loss_precision(emb), yb, prototypes)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return loss.detach(), logits.detach().reshape(len(yb), -1, logits.shape[-1])[:, 0], yb


def train_epoch(run: Run, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor | None, batch_size: int,
                n_batches: int) -> tuple[float, float]:
    """One pass over ``(x, y)`` in ``order`` (``None``: one full batch); returns (mean loss,
    balanced accuracy on the batches as trained). Syncs with the device once, at the end."""
    total, preds, labels = torch.zeros((), device=x.device, dtype=torch.float64), [], []
    for i in range(0, n_batches * batch_size, batch_size):
        idx = run.hooks.shard(order[i:i + batch_size] if order is not None else None, len(x))
        loss, logits, yb = train_step(run, *((x, y) if idx is None else (x[idx], y[idx])))
        total += loss * len(yb)      # stays on the device: no sync per step
        preds.append(logits.argmax(1))
        labels.append(yb)
    labels = torch.cat(labels)
    return total.item() / len(labels), balanced_accuracy(labels.cpu(), torch.cat(preds).cpu())


def fit_at_scale(model: nn.Module, x, y, loss_fn: Callable | None = None, *, epochs: int = LONGTAIL_TOY["epochs"],
                 batch_size: int | None = LONGTAIL_TOY["batch_size"], lr: float = LONGTAIL_TOY["lr"],
                 weight_decay: float = 0.0, seed: int = 0, n_views: int = 1, augment: Callable | None = None,
                 sampling: str = "uniform", optimizer: str = "adam", lr_schedule: Callable | None = None,
                 drop_last: bool = False, bf16: bool = False, hooks: FitHooks | None = None, progress: bool = True,
                 on_epoch_end: Callable | None = None) -> History:
    """:func:`~elm_lite.train.fit` for large runs: the same loop, with each batch seen as ``n_views``
    views ``augment(x, generator)``, an ``optimizer`` (``"adam"`` or ``"sgd"``), a learning-rate
    multiplier ``lr_schedule(epoch)`` per epoch, ``drop_last`` (full batches only), ``bf16``
    autocast, a progress bar and ``hooks`` (:class:`FitHooks`); ``batch_size=None``: one full batch
    (its defaults are fit's and :func:`~elm_lite.engine.many.fit_many`'s). Returns the run's :class:`History`."""
    check_loop_args(epochs, lr, weight_decay, batch_size, n_views, augment, optimizer, sampling)
    epochs, lr, weight_decay, batch_size, n_views, seed = map(plain, (epochs, lr, weight_decay, batch_size, n_views,
                                                                       seed))
    hooks = hooks or FitHooks()
    params, loss_fn, x, y = prepare(model, loss_fn, x, y)
    bs = batch_size or len(x)
    generators = run_generators(seed, x.device, hooks.rank)
    run = Run(model, getattr(model, "module", model), loss_fn, make_optimizer(optimizer, params, lr, weight_decay),
              n_views, augment, bf16, generators, hooks,
              loop_settings(x, bs, lr, weight_decay, optimizer, n_views, epochs, sampling,
                            parameters=sum(p.numel() for p in params), seed=seed))
    sampler = EpochSampler(y, bs, sampling, generators[0])
    n_batches = batch_count(len(x), bs, drop_last or hooks.drop_last)
    for epoch in (bar := tqdm(range(hooks.start(run), epochs + 1), desc="training", disable=not progress)):
        start = time.perf_counter()
        start_epoch(model, [loss_fn], epoch)
        set_learning_rate(run.opt, epoch, lr, lr_schedule)
        loss, train_acc = train_epoch(run, x, y, sampler.order(x.device), bs, n_batches)
        check_finite(loss, epoch, lr)
        run.history.record(epoch, loss, train_acc, time.perf_counter() - start)
        bar.set_postfix(loss=f"{loss:.3f}", bal_acc=f"{train_acc:.3f}")
        hooks.end_epoch(run, epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, run.history)
    return run.history
