"""The one training loop of every scale (:func:`fit`, on one screen, in named steps: :func:`train_epoch`,
:func:`train_step`), prediction, the augmentations and decoupled training.

What only large runs need comes in through :class:`FitHooks`, supplied by the engine
(:mod:`elm_lite.engine`): checkpoints with resume and run identity, and distributed training, where
each process trains on its share of the batch and the hooks gather the whole batch for the loss.
"""
from __future__ import annotations

import math
import numbers
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .interfaces import EmbeddingLoss, ImageModel, Scheduled, uses_prototypes
from .metrics import balanced_accuracy
from .recipes import LONGTAIL_TOY, check, integer, number, or_none, plain


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


def check_xy(x, y, n_classes: int | None, dtype: torch.dtype = torch.float32):
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


def check_fit_args(epochs, lr, weight_decay, batch_size, n_views, augment, optimizer, sampling: str = "uniform"
                   ) -> None:
    """Refuse a bad training setting before any work starts."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}.")
    check("epochs", epochs, integer(1))
    check("lr", lr, number(0, low_open=True))
    check("weight_decay", weight_decay, number(0))
    check("batch_size", batch_size, or_none(integer(1)))
    check("n_views", n_views, integer(1))
    if n_views > 1 and augment is None:
        raise ValueError("n_views > 1 needs an augment function (e.g. gaussian_jitter(0.3)); identical "
                         "views would only duplicate each example.")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")


def check_model_takes(model: nn.Module, x: torch.Tensor) -> None:
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


def start_epoch(model: nn.Module, losses: list, opt: torch.optim.Optimizer, epoch: int, lr: float,
                lr_schedule: Callable[[int], float] | None) -> None:
    """Put the model in training mode, tell each loss the epoch (from 1; e.g. LDAM's deferred
    re-weighting) and set the learning rate."""
    model.train()
    for loss in losses:
        if isinstance(loss, Scheduled):
            loss.set_epoch(epoch)
    factor = lr_schedule(epoch) if lr_schedule else 1.0
    if not (isinstance(factor, numbers.Real) and 0 <= factor < math.inf):   # NaN fails too
        raise ValueError(f"lr_schedule({epoch}) returned {factor!r}; it must return a learning-rate multiplier "
                         ">= 0 (a finite number) for every epoch.")
    for group in opt.param_groups:
        group["lr"] = lr * factor


def check_finite(mean_losses: list[float], epoch: int, lr: float, seeds: list | None = None) -> None:
    """Stop with ``FloatingPointError`` naming the run(s) whose epoch loss is not finite."""
    bad = [j for j, v in enumerate(mean_losses) if not math.isfinite(v)]
    if bad:
        runs = f"of run(s) {bad} (seeds {[seeds[j] for j in bad]}) " if seeds is not None else ""
        values = ", ".join(str(mean_losses[j]) for j in bad)
        raise FloatingPointError(f"the training loss {runs}became {values} in epoch {epoch}: "
                                 "check the inputs for NaN or inf and the labels, lower the learning rate "
                                 f"(lr={lr}), or raise a contrastive term's temperature if it is far below 0.1 "
                                 "(logits of cosine / temperature grow as 1 / temperature). Nothing of this epoch "
                                 "was saved.")


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch of ``n`` examples (an incomplete last batch is dropped with ``drop_last``)."""
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


class FitHooks:
    """The optional collaborators of :func:`fit`; these defaults do nothing (one process, no files).
    The engine supplies others (:class:`elm_lite.engine.checkpoints.RunHooks`: checkpoints with resume,
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
    """Everything one :func:`fit` run holds besides the data (what a step and the hooks need)."""
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
    """One SGD step on a batch ``xb`` ``(B, ...)``, ``yb`` ``(B,)``; returns (loss, logits of the
    first view ``(B', C)``, labels ``(B',)``), ``B'`` the whole batch across processes. No host sync."""
    views = [run.augment(xb, run.generators[1]) if run.augment else xb for _ in range(run.n_views)]
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        logits, emb = run.model(torch.cat(views) if run.n_views > 1 else views[0])
        if run.n_views > 1:  # (V * B, ...) -> (B, V, ...)
            logits, emb = (t.view(run.n_views, len(yb), -1).transpose(0, 1) for t in (logits, emb))
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


def loop_settings(x: torch.Tensor, batch_size: int, lr: float, weight_decay: float, optimizer: str, n_views: int,
                  epochs: int, sampling: str, **run) -> dict:
    """What defines a training loop besides its model and loss: data shape, loop settings and ``run``
    (seed(s), parameter count); ``sampling`` only when not uniform."""
    return {"examples": len(x), "input": list(x.shape[1:]), **run, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "optimizer": optimizer, "n_views": n_views, "epochs": epochs,
            **({"sampling": sampling} if sampling != "uniform" else {})}


def prepare(model: nn.Module, loss_fn, x, y, x_val, y_val):
    """Check the data against the model, move it and the loss to the model's device; returns
    ``(core, params, loss_fn, x, y, x_val, y_val)`` (``core``: the model inside DDP)."""
    core = getattr(model, "module", model)
    params = list(model.parameters()) + list(getattr(loss_fn, "parameters", lambda: [])())
    if not params:
        raise ValueError(f"the model ({type(core).__name__}) has no parameters to train.")
    n_classes, dtype, device = getattr(core, "n_classes", None), params[0].dtype, params[0].device
    x, y = (t.to(device) for t in check_xy(x, y, n_classes, dtype))
    if x_val is not None:
        x_val, y_val = check_xy(x_val, y_val, n_classes, dtype)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    if hasattr(loss_fn, "to"):
        loss_fn.to(device)
    check_model_takes(model, x)
    return core, params, loss_fn, x, y, x_val, y_val


def fit(model: nn.Module, x, y, loss_fn: Callable | None = None, *, epochs: int = LONGTAIL_TOY["epochs"],
        batch_size: int | None = None, lr: float = LONGTAIL_TOY["lr"], weight_decay: float = 0.0,
        x_val=None, y_val=None, seed: int = 0, progress: bool = True, n_views: int = 1, augment: Callable | None = None,
        on_epoch_end: Callable | None = None, optimizer: str = "adam", lr_schedule: Callable | None = None,
        drop_last: bool = False, bf16: bool = False, sampling: str = "uniform", hooks: FitHooks | None = None
        ) -> History:
    """Train ``model`` on ``x`` ``(N, ...)``, ``y`` ``(N,)`` with ``loss_fn`` (default cross-entropy,
    called as :func:`compute_loss` says) and return its :class:`History`: per epoch, an optional
    learning-rate multiplier ``lr_schedule(epoch)``, one pass in the order of ``sampling``
    (:class:`EpochSampler`; ``batch_size=None``: full batch), each batch seen as ``n_views`` views
    ``augment(x, generator)``, the validation balanced accuracy on ``(x_val, y_val)``, then
    ``on_epoch_end(epoch, model, history)``. ``seed`` fixes batch order and augmentation
    (:func:`run_generators`; initialisation is the caller's, :func:`set_seed`); ``optimizer``:
    ``"adam"`` or ``"sgd"``; ``bf16``: autocast. ``hooks``: :class:`FitHooks`. Stops with
    ``FloatingPointError`` at the first epoch whose loss is not finite."""
    check_fit_args(epochs, lr, weight_decay, batch_size, n_views, augment, optimizer, sampling)
    epochs, lr, weight_decay, batch_size, n_views, seed = map(plain, (epochs, lr, weight_decay, batch_size, n_views,
                                                                       seed))
    hooks = hooks or FitHooks()
    core, params, loss_fn, x, y, x_val, y_val = prepare(model, loss_fn, x, y, x_val, y_val)
    bs = batch_size or len(x)
    generators = run_generators(seed, x.device, hooks.rank)
    run = Run(model, core, loss_fn, make_optimizer(optimizer, params, lr, weight_decay), n_views, augment, bf16,
              generators, hooks, loop_settings(x, bs, lr, weight_decay, optimizer, n_views, epochs, sampling,
                                               parameters=sum(p.numel() for p in params), seed=seed))
    sampler = EpochSampler(y, bs, sampling, generators[0])
    n_batches = batch_count(len(x), bs, drop_last or hooks.drop_last)
    for epoch in (bar := tqdm(range(hooks.start(run), epochs + 1), desc="training", disable=not progress)):
        start = time.perf_counter()
        start_epoch(model, [loss_fn], run.opt, epoch, lr, lr_schedule)
        loss, train_acc = train_epoch(run, x, y, sampler.order(x.device), bs, n_batches)
        check_finite([loss], epoch, lr)
        run.history.record(epoch, loss, train_acc, time.perf_counter() - start,  # the clock stops before validation
                           None if x_val is None else balanced_accuracy(y_val, predict(model, x_val)))
        bar.set_postfix(loss=f"{loss:.3f}", bal_acc=f"{train_acc:.3f}")
        hooks.end_epoch(run, epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, run.history)
    return run.history


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

