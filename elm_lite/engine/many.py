"""Many runs at once: K independent models trained together in one process, each exactly as
:func:`elm_lite.train.fit` would train it alone.

The K models become one network (:class:`~elm_lite.engine.stacked.StackedModels`: batched linear
layers, or the models under ``torch.func.vmap``), so a step costs about what one model's step costs
while the device is launch-bound. Each run keeps everything that makes it a run: its own weights and batch-norm
statistics, its own seed (batch order and augmentation streams, :func:`~elm_lite.train.run_generators`),
its own loss with its own constants (LDAM-DRW switches on its own schedule) and its own history.
The sum of the K losses is differentiated once; model k's weights only meet loss k, so each gets
exactly its own gradient, and SGD / Adam (momentum, weight decay) update every element on its own.
``tests/test_many.py`` checks the result against K separate :func:`~elm_lite.train.fit` runs.
"""
from __future__ import annotations

import ctypes
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..interfaces import uses_prototypes
from ..metrics import balanced_accuracy
from ..recipes import CHECKPOINT_EVERY, LONGTAIL_TOY
from ..train import (
    EpochSampler,
    History,
    by_example,
    check_finite,
    check_model_takes,
    check_xy,
    compute_loss,
    run_generators,
    start_epoch,
)
from .checkpoints import check_every, resume_or_start, run_fingerprint, save_checkpoint
from .fused import stack_key, stacked_loss, trusted_batches
from .loop import batch_count, check_loop_args, loop_settings, loss_precision, make_optimizer, set_learning_rate
from .stacked import StackedModels


def _check_runs(models, losses, seeds) -> int:
    k = len(models)
    if k < 1 or len(losses) != k or len(seeds) != k:
        raise ValueError(f"fit_many needs one loss and one seed per model; got {k} models, {len(losses)} losses "
                         f"and {len(seeds)} seeds.")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds must be integers >= 0, got {s!r}.")
    return k


class _RunLosses:
    """The K runs' losses: ``(logits (K, B[, V], C), embeddings (K, B[, V], E), labels (K, B),
    prototypes (K, C, E) | None) -> (K,)``. Runs whose losses stack (:func:`~elm_lite.engine.fused.stacked_loss`,
    one group per :func:`~elm_lite.engine.fused.stack_key`) are computed together, the rest one by one
    (:func:`~elm_lite.train.compute_loss`)."""

    def __init__(self, losses: list, device: torch.device):
        self.losses, by_kind = losses, {}
        for k, loss in enumerate(losses):
            by_kind.setdefault((stack_key(loss), uses_prototypes(loss)), []).append(k)
        self.groups = [(members, torch.tensor(members, device=device), with_prototypes,
                        stacked_loss([losses[k] for k in members]))
                       for (_, with_prototypes), members in by_kind.items()]

    def __call__(self, logits, emb, y, prototypes) -> torch.Tensor:
        if len(self.groups) == 1 and self.groups[0][3] is not None:   # one stack of every run, in order
            return self.groups[0][3](logits, emb, y, prototypes)
        out = [None] * len(self.losses)
        for members, idx, with_prototypes, together in self.groups:
            if together is not None:
                protos = prototypes[idx] if with_prototypes else None
                out_values = together(logits[idx], emb[idx], y[idx], protos).unbind(0)
            else:
                out_values = [compute_loss(self.losses[k], logits[k], emb[k], y[k],
                                           prototypes[k] if with_prototypes else None) for k in members]
            for k, value in zip(members, out_values):
                out[k] = value
        return torch.stack(out)


@dataclass
class _Group:
    """What one step of K runs together needs (the stacked network, possibly compiled, as ``runner``)."""
    stacked: nn.Module
    runner: nn.Module
    losses: _RunLosses
    opt: torch.optim.Optimizer
    streams: list           # [(order generator, augment generator)] per run
    samplers: list          # an EpochSampler per run (its order generator)
    n_views: int
    augment: Callable | None
    bf16: bool
    use_prototypes: bool


def _augment_views(g: _Group, xb: torch.Tensor) -> torch.Tensor:
    """Every run's views of its batch ``xb`` ``(K, b, ...)`` -> ``(K, V * b, ...)``, view after view as
    :func:`~elm_lite.train.fit` draws them. An augmentation that takes a list of streams
    (``stream_lists``, :func:`~elm_lite.engine.augment.draw`) augments all K batches in one call per view."""
    streams = [aug for _, aug in g.streams]
    if getattr(g.augment, "stream_lists", False):
        views = [g.augment(xb.flatten(0, 1), streams).unflatten(0, xb.shape[:2]) for _ in range(g.n_views)]
        return torch.stack(views, 1).flatten(1, 2)
    return torch.stack([torch.cat([g.augment(xb[j], aug) for _ in range(g.n_views)]) for j, aug in enumerate(streams)])


def _group_epoch(g: _Group, x: torch.Tensor, y: torch.Tensor, bs: int, n_batches: int) -> tuple[list, list]:
    """One epoch of every run: each its own batch order and views. Returns each run's mean loss and
    training balanced accuracy (first view). Syncs with the device once, at the end."""
    k, device = len(g.streams), x.device
    orders = torch.stack([o if (o := s.order(device)) is not None else torch.arange(len(x), device=device)
                          for s in g.samplers])                            # (K, N)
    total, preds, labels = torch.zeros(k, device=device, dtype=torch.float64), [], []
    for i in range(0, n_batches * bs, bs):
        idx = orders[:, i:i + bs]                                          # (K, b): each run's own batch
        xb, yb = x[idx], y[idx]
        if g.augment is not None:  # (K, V * b, ...): run k's views from run k's stream, as fit draws them
            xb = _augment_views(g, xb)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=g.bf16), trusted_batches():
            logits, emb = g.runner(xb)                                     # (K, V * b, C | E)
            if g.n_views > 1:                                              # -> (K, b, V, ...)
                logits, emb = by_example(logits, g.n_views), by_example(emb, g.n_views)
            prototypes = g.stacked.head_weight() if g.use_prototypes else None
            per_model = g.losses(loss_precision(logits), loss_precision(emb), yb, prototypes)
        g.opt.zero_grad(set_to_none=True)
        per_model.sum().backward()
        g.opt.step()
        total += per_model.detach() * yb.shape[1]
        preds.append(logits.detach().reshape(k, yb.shape[1], -1, logits.shape[-1])[:, :, 0].argmax(-1))
        labels.append(yb)
    mean_loss = (total / sum(t.shape[1] for t in labels)).tolist()
    preds, labels = torch.cat(preds, 1).cpu(), torch.cat(labels, 1).cpu()
    return mean_loss, [balanced_accuracy(labels[j], preds[j]) for j in range(k)]


def fit_many(models: list[nn.Module], x, y, losses: list, seeds: list[int], *,
             epochs: int = LONGTAIL_TOY["epochs"], batch_size: int | None = LONGTAIL_TOY["batch_size"],
             lr: float = LONGTAIL_TOY["lr"], weight_decay: float = 0.0, optimizer: str = "adam",
             lr_schedule: Callable[[int], float] | None = None, drop_last: bool = False, n_views: int = 1,
             augment: Callable | None = None, bf16: bool = False, compile: bool = False, checkpoint=None,
             checkpoint_every: int = CHECKPOINT_EVERY, resume: bool = False, identity: dict | None = None,
             progress: bool = True, sampling: str = "uniform") -> list[History]:
    """Train ``models[k]`` with ``losses[k]`` and ``seeds[k]`` on ``(x, y)``, all K together, and
    return their histories; the trained weights are written back into ``models`` (in place).

    The models must share one architecture (an MLP, SmallCNN or ResNet32 with equal settings), and
    the runs one recipe (the keywords, as in :func:`~elm_lite.engine.loop.fit_at_scale`) and one number of views;
    ``seeds[k]`` fixes run k's batch order and augmentation (initialise each model under its seed,
    :func:`~elm_lite.train.set_seed`, before calling). ``compile`` wraps the stacked network in
    ``torch.compile(mode="reduce-overhead")``. ``checkpoint`` / ``resume`` / ``identity`` as in
    ``fit``: one file holds all K runs and is resumed only by the same K runs.
    ``History.seconds`` is the wall time of the group, the same for each of its runs.
    """
    k = _check_runs(models, losses, seeds)
    check_loop_args(epochs, lr, weight_decay, batch_size, n_views, augment, optimizer, sampling)
    check_every(checkpoint_every)
    first = next(models[0].parameters())
    device = first.device
    x, y = (t.to(device) for t in check_xy(x, y, getattr(models[0], "n_classes", None), first.dtype))
    for m in models:
        check_model_takes(m, x)
    if device.type == "cpu":
        keep_freed_memory()
    stacked = StackedModels(models).train()
    bs = batch_size or len(x)
    streams = [run_generators(s, device) for s in seeds]                 # [(order, augment)] per run
    group = _Group(stacked, torch.compile(stacked, mode="reduce-overhead") if compile else stacked,
                   _RunLosses([loss.to(device) if hasattr(loss, "to") else loss for loss in losses], device),
                   make_optimizer(optimizer, list(stacked.parameters()), lr, weight_decay),
                   streams, [EpochSampler(y, bs, sampling, order) for order, _ in streams], n_views, augment,
                   bf16, any(uses_prototypes(loss) for loss in losses))
    fingerprint = run_fingerprint(loop_settings(x, bs, lr, weight_decay, optimizer, n_views, epochs, sampling,
                                                models=k, seeds=list(seeds)), identity)
    generators = [g for stream in group.streams for g in stream]
    histories, first_epoch = resume_or_start(resume, checkpoint, fingerprint, stacked, group.opt, generators, k)
    for epoch in tqdm(range(first_epoch, epochs + 1), desc=f"training {k} models", disable=not progress):
        start = time.perf_counter()
        start_epoch(stacked, losses, epoch)
        set_learning_rate(group.opt, epoch, lr, lr_schedule)
        mean_loss, accuracy = _group_epoch(group, x, y, bs, batch_count(len(x), bs, drop_last))
        for j, loss in enumerate(mean_loss):
            check_finite(loss, epoch, lr, f"of run {j} (seed {seeds[j]}) ")
        seconds = time.perf_counter() - start
        for h, loss, acc in zip(histories, mean_loss, accuracy):
            h.record(epoch, loss, acc, seconds)
        if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
            save_checkpoint(checkpoint, stacked, group.opt, generators, epoch, histories, fingerprint)
    stacked.unstack(models)
    return histories


@functools.cache
def keep_freed_memory() -> bool:
    """On Linux (glibc), keep freed memory in the process: raise glibc's mmap and trim thresholds to
    1 GiB (``mallopt``; the effect of the ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
    variables). A CPU step frees and re-allocates the same few-MB temporaries (K runs' ``(K, N, N)``
    similarities); by default glibc hands them back to the kernel and the next step faults them in
    again, page by page (``benchmarks/run_benchmarks.py --only sweeps`` measures what this saves).
    The price: the process keeps its peak heap. :func:`fit_many` calls it on a CPU; elsewhere (another C
    library) it does nothing. Returns whether the thresholds are set."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")           # raises where the C library is not glibc
    except (ValueError, OSError):
        return False
    libc = ctypes.CDLL(None)                        # the running process's C library
    m_trim_threshold, m_mmap_threshold = -1, -3     # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30))
