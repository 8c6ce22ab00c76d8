"""The one training loop of every scale (:func:`fit`, in named steps), checkpoints, prediction
and the augmentations.

Distributed training: under ``torchrun`` (a process group initialised and the model wrapped in
DDP), ``fit``'s ``batch_size`` is the global batch; each process trains on its share, and logits,
embeddings and labels are gathered (:func:`gather_batch`) so that the loss -- including the
contrastive term, whose negatives and positives are the *global* batch -- is the single-process
loss. Random augmentation is drawn per process; an incomplete last batch is dropped; only rank 0
writes checkpoints.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.distributed.nn import functional as dist_nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .interfaces import EmbeddingLoss, ImageModel, Scheduled, uses_prototypes
from .metrics import balanced_accuracy
from .runfiles import atomic_write


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation and batch order)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run (lists of equal length)."""
    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    train_balanced_accuracy: list = field(default_factory=list)
    val_balanced_accuracy: list = field(default_factory=list)
    elapsed: list = field(default_factory=list)  # seconds since the start at each epoch's end
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def record(self, epoch: int, loss: float, train_balanced_accuracy: float, seconds: float,
               val_balanced_accuracy: float | None = None) -> None:
        """Append one finished epoch that took ``seconds`` of training."""
        self.seconds += seconds
        self.epoch.append(epoch)
        self.loss.append(loss)
        self.elapsed.append(self.seconds)
        self.train_balanced_accuracy.append(train_balanced_accuracy)
        if val_balanced_accuracy is not None:
            self.val_balanced_accuracy.append(val_balanced_accuracy)


def _as_tensor(name: str, a, dtype: torch.dtype) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {t.dtype}; expected real numbers.")
    if dtype == torch.long and t.is_floating_point():
        raise ValueError(f"{name} must hold integer class labels, got dtype {t.dtype}.")
    return t.to(dtype)


def _check_xy(x, y, n_classes: int | None, dtype: torch.dtype = torch.float32):
    """``x`` as ``dtype`` (the model's: float64 models train on float64 inputs), ``y`` as int64, checked."""
    x = _as_tensor("x", x, dtype if dtype == torch.float64 else torch.float32)
    y = _as_tensor("y", y, torch.long)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, D) or (N, ...) for images, got {tuple(x.shape)}.")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape (N,) with N = len(x) = {len(x)}, got {tuple(y.shape)}.")
    if len(y) == 0:
        raise ValueError("x and y are empty: nothing to train on.")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"x contains {int((~torch.isfinite(x)).sum())} NaN or inf values; clean or impute them "
                         "before training (a NaN input makes every loss NaN).")
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes}) for a model with {n_classes} outputs; "
                         f"got min {int(y.min())}, max {int(y.max())}.")
    return x, y


def gather_batch(t: torch.Tensor) -> torch.Tensor:
    """This process's rows ``(b, ...)`` -> the global batch ``(world * b, ...)``, in rank order.
    Every process then computes the same loss on the global batch; with DDP's gradient averaging
    the update equals a single process's on that batch: ``torch.distributed.nn``'s all-gather keeps
    the graph, its backward pass sums every process's gradient for this process's rows."""
    if not t.requires_grad:
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)
    return torch.cat(dist_nn.all_gather(t.contiguous()))


def loss_precision(t: torch.Tensor) -> torch.Tensor:
    """Losses run in float32 at least (bf16 forward passes are cast up; float64 stays float64)."""
    return t if t.dtype == torch.float64 else t.float()


def compute_loss(loss_fn: Callable, logits: torch.Tensor, embedding: torch.Tensor, y: torch.Tensor,
                 prototypes: torch.Tensor | None = None) -> torch.Tensor:
    """Call ``loss_fn(logits, y)``, or ``loss_fn(logits, embedding, y[, prototypes])`` for losses
    that set ``uses_embedding = True``; a loss returning ``(total, parts)`` contributes ``total``.
    With several views (``logits`` ``(B, V, C)``) a logit-only loss sees every view."""
    if isinstance(loss_fn, EmbeddingLoss):
        out = loss_fn(logits, embedding, y, prototypes) if prototypes is not None else loss_fn(logits, embedding, y)
    elif logits.ndim == 3:
        out = loss_fn(logits.reshape(-1, logits.shape[-1]), y.repeat_interleave(logits.shape[1]))
    else:
        out = loss_fn(logits, y)
    return out[0] if isinstance(out, tuple) else out


def draw(sample: Callable[[int, torch.Generator | None], torch.Tensor], n: int, generator) -> torch.Tensor:
    """``sample(n, generator)``: random values for ``n`` images. ``generator`` may also be a list of
    streams, one per equal share of the images (K runs augmented in one call,
    :func:`~elm_lite.engine.many.fit_many`): each share then draws from its own stream exactly what it would
    draw alone, and the costly image operations run once for all of them. Augmentations built on it
    say so with ``augment.stream_lists = True``."""
    if not isinstance(generator, (list, tuple)):
        return sample(n, generator)
    if n % len(generator):
        raise ValueError(f"{n} images cannot be split into {len(generator)} equal shares, one per stream.")
    return torch.cat([sample(n // len(generator), g) for g in generator])


def gaussian_jitter(sigma: float) -> Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]:
    """A toy augmentation: ``(x, generator) -> x + sigma * noise`` (for two-view contrastive training);
    ``generator`` as in :func:`draw`."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}.")

    def jitter(x: torch.Tensor, generator=None) -> torch.Tensor:
        noise = draw(lambda m, g: torch.randn((m, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype),
                     len(x), generator)
        return x + sigma * noise
    jitter.stream_lists = True
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
    order = torch.Generator().manual_seed(seed)
    augment = torch.Generator(device=device).manual_seed(seed + 7919 * (rank + 1))
    return order, augment


@torch.no_grad()
def predict_outputs(model: nn.Module, x, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, C), embeddings (N, E))`` of ``model`` on ``x`` ``(N, D)``, in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    x = _as_tensor("x", x, torch.float32)
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


def save_atomic(obj, path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (:func:`~elm_lite.runfiles.atomic_write`):
    an interruption never leaves a half-written file under ``path``, a failed write no temporary file."""
    try:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    except (OSError, RuntimeError) as e:  # torch reports a read-only folder without the path
        raise OSError(f"cannot write the checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                      "check that the folder is writable and the disk has space.") from None


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`fit`; a damaged file gets a clear error."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is damaged or incomplete ({type(e).__name__}: {e}); delete it "
                         "to start afresh, or restore it from a backup.") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint written by elm_lite.fit.")
    if "generators" not in ckpt:
        raise ValueError(f"{path} was written by an older elm_lite (before each run kept its own random streams) "
                         "and cannot be continued; start over (overwrite=True / --overwrite) or use another folder.")
    return ckpt


def _check_fit_args(epochs, lr, weight_decay, batch_size, n_views, augment, optimizer, checkpoint_every,
                    sampling: str = "uniform") -> None:
    """Refuse a bad training setting before any work starts."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}.")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None (full batch) or an integer >= 1, got {batch_size!r}.")
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be an integer >= 1, got {n_views!r}.")
    if n_views > 1 and augment is None:
        raise ValueError("n_views > 1 needs an augment function (e.g. gaussian_jitter(0.3)); identical "
                         "views would only duplicate each example.")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1 (epochs), got {checkpoint_every!r}.")


def _check_model_takes(model: nn.Module, x: torch.Tensor) -> None:
    """Run 2 rows through the eager model so that a wrong input shape is reported here, not from
    deep inside a layer mid-training (under torch.compile: no extra 2-row graph is compiled)."""
    eager, was_training = getattr(model, "_orig_mod", model), model.training
    try:
        with torch.no_grad():
            eager.eval()
            eager(x[:2])
    except RuntimeError as e:
        raise ValueError(f"the model cannot take inputs of shape {tuple(x.shape[1:])} (x has shape "
                         f"{tuple(x.shape)}): {e}") from None
    finally:
        model.train(was_training)


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``"adam"`` or ``"sgd"`` (momentum 0.9; the multi-tensor ``foreach`` update)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, foreach=True)


def fingerprint_differences(saved: dict | None, current: dict) -> list[str]:
    """``"field: checkpoint X, this run Y"`` for every field in which two run fingerprints differ."""
    saved = saved or {}
    return [f"{k}: checkpoint {saved.get(k, '(absent)')!r}, this run {current.get(k, '(absent)')!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def _resume(checkpoint, fingerprint: dict, core: nn.Module, opt, gens) -> tuple[list, int]:
    """Load ``checkpoint`` into model, optimizer and random states; returns (history, next epoch).
    A checkpoint of a different run (any fingerprint field differs) is refused, naming the fields."""
    ckpt = load_checkpoint(checkpoint)
    differences = fingerprint_differences(ckpt.get("fingerprint"), fingerprint)
    if differences:
        raise ValueError(f"checkpoint {checkpoint} was written by a different run; it differs in "
                         + "; ".join(differences) + ". Use another output folder, or start over "
                         "(overwrite / delete the checkpoint).")
    try:
        core.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first_line = str(e).splitlines()[0]
        raise ValueError(f"checkpoint {checkpoint} holds a model of another shape or version ({first_line}); "
                         "start over (overwrite / delete the checkpoint) or use another folder.") from None
    opt.load_state_dict(ckpt["optimizer"])
    for gen, state in zip(gens, ckpt["generators"]):
        gen.set_state(state)
    return [History(**h) for h in ckpt["histories"]], ckpt["epoch"] + 1


def resume_or_start(resume: bool, checkpoint, fingerprint: dict, core: nn.Module, opt, gens,
                    runs: int) -> tuple[list[History], int]:
    """``runs`` fresh histories and epoch 1, or -- with ``resume`` and an existing ``checkpoint`` of
    the same run(s) -- its histories and the epoch after it (model, optimizer, generators restored)."""
    if resume and checkpoint is not None and Path(checkpoint).exists():
        return _resume(checkpoint, fingerprint, core, opt, gens)
    return [History() for _ in range(runs)], 1


def _save(checkpoint, core: nn.Module, opt, gens, epoch: int, histories: list, fingerprint: dict) -> None:
    """Model, optimizer, every random stream (:func:`run_generators`) and the histories of a run
    (or of K runs trained together), atomically."""
    save_atomic({"model": core.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                 "generators": [g.get_state() for g in gens], "histories": [h.as_dict() for h in histories],
                 "fingerprint": fingerprint}, checkpoint)


@dataclass
class _Step:
    """What one training step needs besides the batch (fixed for a whole :func:`fit`)."""
    model: nn.Module
    core: nn.Module
    loss_fn: Callable
    opt: torch.optim.Optimizer
    n_views: int
    augment: Callable | None
    bf16: bool
    world: int
    use_prototypes: bool
    augment_gen: torch.Generator | None = None


def train_step(s: _Step, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SGD step on a batch ``xb`` ``(B, ...)``, ``yb`` ``(B,)``; returns (loss, logits of the
    first view ``(B', C)``, labels ``(B',)``), ``B'`` the global batch under DDP. No host sync."""
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=s.bf16):
        if s.n_views > 1:  # (V*B, D) -> model -> (B, V, ...)
            logits, emb = s.model(torch.cat([s.augment(xb, s.augment_gen) for _ in range(s.n_views)]))
            logits, emb = (t.view(s.n_views, len(yb), -1).transpose(0, 1) for t in (logits, emb))
        else:
            logits, emb = s.model(s.augment(xb, s.augment_gen) if s.augment else xb)
        if s.world > 1:  # every process sees the global batch (the contrastive term needs it)
            logits, emb, yb = gather_batch(logits), gather_batch(emb), gather_batch(yb)
        loss = compute_loss(s.loss_fn, loss_precision(logits), loss_precision(emb), yb,
                            s.core.head.weight if s.use_prototypes else None)
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    s.opt.step()
    return loss.detach(), logits.detach().reshape(len(yb), -1, logits.shape[-1])[:, 0], yb


def train_epoch(s: _Step, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor | None, batch_size: int,
                n_batches: int, rank: int) -> tuple[float, float]:
    """One pass over ``(x, y)`` in ``order`` (``None``: one full batch); returns (mean loss,
    balanced accuracy on the batches as trained). Syncs with the device once, at the end, where the
    losses skip their per-call value checks (inside :func:`~elm_lite.engine.fused.trusted_batches`)."""
    total, preds, labels = torch.zeros((), device=x.device, dtype=torch.float64), [], []
    for i in range(0, n_batches * batch_size, batch_size):
        idx = order[i:i + batch_size] if order is not None else None
        if s.world > 1:  # this process's share of the global batch
            idx = (idx if idx is not None else torch.arange(len(x), device=x.device))[rank::s.world]
        loss, logits, yb = train_step(s, *((x, y) if idx is None else (x[idx], y[idx])))
        total += loss * len(yb)      # stays on the device: no sync per step
        preds.append(logits.argmax(1))
        labels.append(yb)
    labels = torch.cat(labels)
    return total.item() / len(labels), balanced_accuracy(labels.cpu(), torch.cat(preds).cpu())


def start_epoch(model: nn.Module, losses: list, opt: torch.optim.Optimizer, epoch: int, lr: float,
                lr_schedule: Callable[[int], float] | None) -> None:
    """Put the model in training mode, tell each loss the epoch (from 1; e.g. LDAM's deferred
    re-weighting) and set the learning rate."""
    model.train()
    for loss in losses:
        if isinstance(loss, Scheduled):
            loss.set_epoch(epoch)
    for group in opt.param_groups:
        group["lr"] = lr * (lr_schedule(epoch) if lr_schedule else 1.0)


def run_fingerprint(x: torch.Tensor, batch_size: int, lr: float, weight_decay: float, optimizer: str,
                    n_views: int, epochs: int, identity: dict | None, sampling: str = "uniform", **run) -> dict:
    """What a checkpoint must match to be resumed: data shape, loop settings, ``run`` (seed(s),
    parameter count) and the caller's ``identity`` (``sampling`` only when not uniform)."""
    return {"examples": len(x), "input": list(x.shape[1:]), **run, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "optimizer": optimizer, "n_views": n_views, "epochs": epochs,
            **({"sampling": sampling} if sampling != "uniform" else {}), **(identity or {})}


def check_finite(mean_losses: list[float], epoch: int, lr: float, seeds: list | None = None) -> None:
    """Stop with ``FloatingPointError`` naming the run(s) whose epoch loss is not finite."""
    bad = [j for j, v in enumerate(mean_losses) if not math.isfinite(v)]
    if bad:
        runs = f"of run(s) {bad} (seeds {[seeds[j] for j in bad]}) " if seeds is not None else ""
        values = ", ".join(str(mean_losses[j]) for j in bad)
        raise FloatingPointError(f"the training loss {runs}became {values} in epoch {epoch}: "
                                 "check the inputs for NaN or inf and the labels, or lower the learning rate "
                                 f"(lr={lr}). Nothing of this epoch was saved.")


def _world(batch_size: int | None, n: int) -> tuple[int, int, int]:
    """``(processes, this process's rank, global batch size)``; the batch must split evenly."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() else (1, 0)
    bs = batch_size or n
    if bs % world:
        raise ValueError(f"batch_size={bs} must be divisible by the number of processes ({world}).")
    return world, rank, bs


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch of ``n`` examples (an incomplete last batch is dropped with ``drop_last``)."""
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


def _on_device(model: nn.Module, loss_fn, x, y, x_val, y_val):
    """Check the data against the model, move it and the loss to the model's device (on a CPU:
    :func:`keep_freed_memory`); returns ``(core, params, loss_fn, x, y, x_val, y_val)`` (``core``: the
    model inside DDP)."""
    core = getattr(model, "module", model)
    params = list(model.parameters()) + list(getattr(loss_fn, "parameters", lambda: [])())
    if not params:
        raise ValueError(f"the model ({type(core).__name__}) has no parameters to train.")
    n_classes, dtype, device = getattr(core, "n_classes", None), params[0].dtype, params[0].device
    x, y = (t.to(device) for t in _check_xy(x, y, n_classes, dtype))
    if x_val is not None:
        x_val, y_val = _check_xy(x_val, y_val, n_classes, dtype)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    if hasattr(loss_fn, "to"):
        loss_fn.to(device)
    _check_model_takes(model, x)
    if device.type == "cpu":
        keep_freed_memory()
    return core, params, loss_fn, x, y, x_val, y_val


@functools.cache
def keep_freed_memory() -> bool:
    """On Linux (glibc), keep freed memory in the process: raise glibc's mmap and trim thresholds to
    1 GiB (``mallopt``; the effect of the ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
    variables). A CPU step frees and re-allocates the same few-MB temporaries (K runs' ``(K, N, N)``
    similarities); by default glibc hands them back to the kernel and the next step faults them in
    again, page by page (``benchmarks/run_benchmarks.py --only sweeps`` measures what this saves).
    The price: the process keeps its peak heap. :func:`fit` and :func:`~elm_lite.engine.many.fit_many` call
    it on a CPU; elsewhere (another C library) it does nothing. Returns whether the thresholds are set."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")           # raises where the C library is not glibc
    except (ValueError, OSError):
        return False
    libc = ctypes.CDLL(None)                        # the running process's C library
    m_trim_threshold, m_mmap_threshold = -1, -3     # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30))


def fit(model: nn.Module, x, y, loss_fn: Callable | None = None, *, epochs: int = 200,
        batch_size: int | None = None, lr: float = 0.05, weight_decay: float = 0.0,
        x_val=None, y_val=None, seed: int = 0, progress: bool = True, n_views: int = 1,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_epoch_end: Callable[[int, nn.Module, History], None] | None = None,
        optimizer: str = "adam", lr_schedule: Callable[[int], float] | None = None, drop_last: bool = False,
        bf16: bool = False, checkpoint=None, checkpoint_every: int = 10, resume: bool = False,
        identity: dict | None = None, sampling: str = "uniform") -> History:
    """Train ``model`` on ``(x, y)`` and return its :class:`History`. One loop for every scale.

    Args:
        x, y: training inputs ``(N, D)`` (or images) and labels ``(N,)`` int.
        loss_fn: default plain cross-entropy; see :func:`compute_loss` for the calling convention.
        batch_size: ``None`` trains full-batch (fast and deterministic for toy data).
        x_val, y_val: optional held-out data; its balanced accuracy is recorded per epoch.
        seed: fixes the batch order (model initialisation is the caller's, see :func:`set_seed`).
        n_views, augment: with ``n_views > 1`` each batch is seen as ``n_views`` views ``augment(x,
            generator)`` (the run's own stream, :func:`run_generators`); the loss gets ``(B, V, ...)``.
        on_epoch_end: called as ``on_epoch_end(epoch, model, history)`` after each epoch (snapshots,
            live plots), after the checkpoint; its time is not training time.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9); ``lr_schedule(epoch)`` multiplies ``lr`` (epochs
            from 1); ``drop_last`` keeps batches one shape (CUDA graphs); ``bf16``: autocast to bfloat16.
        sampling: ``"uniform"`` or ``"class_balanced"`` (re-sampling, :class:`EpochSampler`).
        checkpoint, checkpoint_every, resume: save model, optimizer, RNG states and history to the
            file ``checkpoint`` (atomically) every ``checkpoint_every`` epochs and at the end; with
            ``resume=True`` an existing checkpoint of the *same run* is loaded and training continues
            after its epoch. ``identity``: what else defines the run (loss, data, recipe), added to
            the fingerprint that a checkpoint must match.

    ``History.seconds`` and ``elapsed`` count training only (not validation or ``on_epoch_end``).
    Training stops with ``FloatingPointError`` at the first epoch whose loss is not finite.
    A loss with ``set_epoch(epoch)`` is told the epoch (from 1); one with ``use_prototypes = True``
    gets the classifier weights ``model.head.weight`` ``(C, E)``. Under ``torchrun``: the module docstring.
    """
    _check_fit_args(epochs, lr, weight_decay, batch_size, n_views, augment, optimizer, checkpoint_every, sampling)
    core, params, loss_fn, x, y, x_val, y_val = _on_device(model, loss_fn, x, y, x_val, y_val)
    world, rank, bs = _world(batch_size, len(x))
    drop_last = drop_last or world > 1  # equal shards in every step
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    gen, augment_gen = run_generators(seed, x.device, rank)
    fingerprint = run_fingerprint(x, bs, lr, weight_decay, optimizer, n_views, epochs, identity, sampling,
                                  parameters=sum(p.numel() for p in params), seed=seed)
    sampler = EpochSampler(y, bs, sampling, gen)
    (history,), first_epoch = resume_or_start(resume, checkpoint, fingerprint, core, opt, (gen, augment_gen), 1)
    step = _Step(model, core, loss_fn, opt, n_views, augment, bf16, world, uses_prototypes(loss_fn),
                 augment_gen)
    for epoch in (bar := tqdm(range(first_epoch, epochs + 1), desc="training", disable=not progress)):
        start = time.perf_counter()
        start_epoch(model, [loss_fn], opt, epoch, lr, lr_schedule)
        loss, train_acc = train_epoch(step, x, y, sampler.order(x.device), bs, batch_count(len(x), bs, drop_last), rank)
        check_finite([loss], epoch, lr)
        history.record(epoch, loss, train_acc, time.perf_counter() - start,  # the clock stops before validation
                       None if x_val is None else balanced_accuracy(y_val, predict(model, x_val)))
        bar.set_postfix(loss=f"{loss:.3f}", bal_acc=f"{train_acc:.3f}")
        if checkpoint is not None and rank == 0 and (epoch % checkpoint_every == 0 or epoch == epochs):
            _save(checkpoint, core, opt, (gen, augment_gen), epoch, [history], fingerprint)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, history)
    return history


def crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch ``(B, H, W, C)`` or ``(B, C, H, W)`` tensor:
    a random ``H x W`` crop of the zero-padded image and a random horizontal flip, per image,
    on whatever device the batch is on (``generator``: a stream on that device, or one per share of
    the batch, :func:`draw`)."""
    channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    img = x.permute(0, 3, 1, 2) if channels_last else x
    b, _, h, w = img.shape
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    offsets = lambda m, g: torch.randint(0, 2 * pad + 1, (m,), device=x.device, generator=g)  # noqa: E731
    dy, dx = draw(offsets, b, generator), draw(offsets, b, generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (B, 1, 1, W)
    flip = draw(lambda m, g: torch.rand(m, device=x.device, generator=g), b, generator) < 0.5
    cols = torch.where(flip[:, None, None, None], 2 * dx[:, None, None, None] + w - 1 - cols, cols)
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(img.shape[1], device=x.device)[None, :, None, None], rows, cols]
    return out.permute(0, 2, 3, 1) if channels_last else out


def strong_augment(x: torch.Tensor, generator: torch.Generator | None = None, max_value: float = 255.0,
                   min_scale: float = 0.2, aspect: tuple = (3 / 4, 4 / 3), jitter: float = 0.4,
                   jitter_p: float = 0.8, grey_p: float = 0.2) -> torch.Tensor:
    """SimCLR-style augmentation for contrastive views, per image, on the batch's device: a random
    resized crop (area ``min_scale``-1 of the image, aspect ratio in ``aspect``, bilinear) with a random
    horizontal flip; with probability ``jitter_p`` a colour jitter (brightness, contrast and
    saturation factors in ``1 +- jitter``, in that order; no hue); with probability ``grey_p``
    greyscale. Pixels are floats in ``[0, max_value]``; ``x`` is ``(B, H, W, C)`` or
    ``(B, C, H, W)`` with C = 3 and comes back in its layout; ``generator`` as in :func:`draw`."""
    channels_last = x.shape[-1] == 3 and x.shape[1] != 3
    img = (x.permute(0, 3, 1, 2) if channels_last else x).float()
    b, dev = img.shape[0], x.device

    def uniform(low, high):
        return low + (high - low) * draw(lambda m, g: torch.rand(m, device=dev, generator=g), b, generator)
    area, ratio = uniform(min_scale, 1.0), torch.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))
    crop_h, crop_w = (area / ratio).sqrt().clamp(max=1.0), (area * ratio).sqrt().clamp(max=1.0)
    top, left = uniform(0.0, 1.0) * (1 - crop_h), uniform(0.0, 1.0) * (1 - crop_w)
    flip = torch.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)                    # output [-1, 1] -> input coordinates
    theta[:, 0, 0], theta[:, 0, 2] = crop_w * flip, 2 * left + crop_w - 1
    theta[:, 1, 1], theta[:, 1, 2] = crop_h, 2 * top + crop_h - 1
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def grey(t):  # (B, 1, H, W) luminance
        return (t * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
    on = (uniform(0.0, 1.0) < jitter_p).float()
    factors = [1 + on * uniform(-jitter, jitter) for _ in range(3)]   # brightness, contrast, saturation
    out = (out * factors[0].view(b, 1, 1, 1)).clamp(0, max_value)
    mean = grey(out).mean((2, 3), keepdim=True)
    out = ((out - mean) * factors[1].view(b, 1, 1, 1) + mean).clamp(0, max_value)
    out = ((out - grey(out)) * factors[2].view(b, 1, 1, 1) + grey(out)).clamp(0, max_value)
    to_grey = (uniform(0.0, 1.0) < grey_p).view(b, 1, 1, 1)
    out = torch.where(to_grey, grey(out).expand_as(out), out)
    return out.permute(0, 2, 3, 1) if channels_last else out


crop_flip.stream_lists = strong_augment.stream_lists = True   # they take a list of streams (draw)
VIEW_AUGMENTATIONS = {"crop_flip": crop_flip, "strong": strong_augment}


def view_augmentation(name: str, views: int) -> Callable:
    """The augmentation a full-scale run applies: ``crop_flip`` for one view; for two or more views
    (contrastive methods) the recipe's ``view_augment`` (``"crop_flip"`` or ``"strong"``)."""
    if name not in VIEW_AUGMENTATIONS:
        raise ValueError(f"view_augment must be one of {sorted(VIEW_AUGMENTATIONS)}, got {name!r}.")
    return VIEW_AUGMENTATIONS[name] if views > 1 else crop_flip


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
    return fit(_HeadOnly(model.head, model.n_classes), features, y, nn.CrossEntropyLoss(), epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed, progress=False, sampling="class_balanced")


@torch.no_grad()
def tau_normalize(model: nn.Module, tau: float = 1.0) -> None:
    """Tau-normalisation (Kang et al. 2020), in place: every class's weight vector ``w_c`` of
    ``model.head`` becomes ``w_c / ||w_c||^tau`` and the bias is dropped (set to 0). A long-tailed
    training run leaves the head classes' weights longer; ``tau = 1`` makes them all unit length."""
    head = model.head
    if not isinstance(head, nn.Linear):
        raise ValueError(f"tau-normalisation rescales a linear head's weights; this model's head is "
                         f"{type(head).__name__} (a cosine head is normalised already).")
    head.weight.div_(head.weight.norm(dim=1, keepdim=True).clamp(min=1e-12) ** tau)
    if head.bias is not None:
        head.bias.zero_()

