"""One small training loop for the toy-scale notebooks (CPU friendly)."""
from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .metrics import balanced_accuracy


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


def _as_tensor(name: str, a, dtype: torch.dtype) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {t.dtype}; expected real numbers.")
    if dtype == torch.long and t.is_floating_point():
        raise ValueError(f"{name} must hold integer class labels, got dtype {t.dtype}.")
    return t.to(dtype)


def _check_xy(x, y, n_classes: int | None):
    x = _as_tensor("x", x, torch.float32)
    y = _as_tensor("y", y, torch.long)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, D) or (N, ...) for images, got {tuple(x.shape)}.")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape (N,) with N = len(x) = {len(x)}, got {tuple(y.shape)}.")
    if len(y) == 0:
        raise ValueError("x and y are empty: nothing to train on.")
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes}) for a model with {n_classes} outputs; "
                         f"got min {int(y.min())}, max {int(y.max())}.")
    return x, y


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 that keeps the graph: the backward pass sums every process's gradient
    for this process's rows (an all-reduce, which gloo supports too)."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = len(x), dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_batch(t: torch.Tensor) -> torch.Tensor:
    """This process's rows ``(b, ...)`` -> the global batch ``(world * b, ...)``, in rank order.
    Every process then computes the same loss on the global batch; with DDP's gradient averaging
    the update equals a single process's on that batch (each process's gradient for its own rows
    is summed over the processes by the backward all-reduce, then averaged by DDP)."""
    if not t.requires_grad:
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)
    return _GatherWithGrad.apply(t)


def compute_loss(loss_fn: Callable, logits: torch.Tensor, embedding: torch.Tensor, y: torch.Tensor,
                 prototypes: torch.Tensor | None = None) -> torch.Tensor:
    """Call ``loss_fn(logits, y)``, or ``loss_fn(logits, embedding, y[, prototypes])`` for losses
    that set ``uses_embedding = True``; a loss returning ``(total, parts)`` contributes ``total``.
    With several views (``logits`` ``(B, V, C)``) a logit-only loss sees every view."""
    if getattr(loss_fn, "uses_embedding", False):
        out = loss_fn(logits, embedding, y, prototypes) if prototypes is not None else loss_fn(logits, embedding, y)
    elif logits.ndim == 3:
        out = loss_fn(logits.reshape(-1, logits.shape[-1]), y.repeat_interleave(logits.shape[1]))
    else:
        out = loss_fn(logits, y)
    return out[0] if isinstance(out, tuple) else out


def gaussian_jitter(sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A toy augmentation: ``x -> x + sigma * noise`` (for two-view contrastive training)."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}.")
    return lambda x: x + sigma * torch.randn_like(x)


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch_size: int = 4096) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on ``x`` ``(N, D)``, in eval mode."""
    was_training = model.training
    model.eval()
    x = _as_tensor("x", x, torch.float32)
    device = next(model.parameters()).device
    out = torch.cat([model(x[i:i + batch_size].to(device))[0].cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def predict(model: nn.Module, x, batch_size: int = 4096) -> np.ndarray:
    """Predicted labels ``(N,)`` as an int64 NumPy array."""
    return predict_logits(model, x, batch_size).argmax(1).numpy()


def save_atomic(obj, path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: an interruption never leaves
    a half-written file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`fit`; a damaged file gets a clear error."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is damaged or incomplete ({type(e).__name__}: {e}); delete it "
                         "to start afresh, or restore it from a backup.") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint written by elm_lite.fit.")
    return ckpt


def fit(model: nn.Module, x, y, loss_fn: Callable | None = None, *, epochs: int = 200,
        batch_size: int | None = None, lr: float = 0.05, weight_decay: float = 0.0,
        x_val=None, y_val=None, seed: int = 0, progress: bool = True, n_views: int = 1,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_epoch_end: Callable[[int, nn.Module, History], None] | None = None,
        optimizer: str = "adam", lr_schedule: Callable[[int], float] | None = None, drop_last: bool = False,
        bf16: bool = False, checkpoint=None, checkpoint_every: int = 10, resume: bool = False) -> History:
    """Train ``model`` on ``(x, y)`` and return its :class:`History`. One loop for every scale.

    Args:
        x, y: training inputs ``(N, D)`` float and labels ``(N,)`` int.
        loss_fn: default plain cross-entropy; see :func:`compute_loss` for the calling convention.
        batch_size: ``None`` trains full-batch (fast and deterministic for toy data).
        x_val, y_val: optional held-out data; its balanced accuracy is recorded per epoch.
        seed: fixes the batch order (model initialisation is the caller's, see :func:`set_seed`).
        n_views, augment: with ``n_views > 1`` each batch is seen as ``n_views`` augmented views
            (``augment(x)`` each); the loss gets logits ``(B, V, C)`` and embeddings ``(B, V, E)``.
        on_epoch_end: called as ``on_epoch_end(epoch, model, history)`` after each epoch (snapshots,
            live plots).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9); ``lr_schedule(epoch)`` multiplies ``lr``
            (epochs count from 1); ``drop_last`` keeps every batch the same shape (CUDA graphs).
        bf16: autocast the forward pass to bfloat16 (CUDA).
        checkpoint, checkpoint_every, resume: save model, optimizer, RNG states and history to the
            file ``checkpoint`` (atomically) every ``checkpoint_every`` epochs and at the end; with
            ``resume=True`` an existing checkpoint is loaded and training continues after its epoch.

    A loss with a ``set_epoch(epoch)`` method is told the epoch (from 1) before each epoch; one with
    ``use_prototypes = True`` gets the model's classifier weights ``model.head.weight`` ``(C, E)``.

    Under ``torchrun`` (a process group initialised and ``model`` wrapped in DDP), ``batch_size`` is
    the global batch: each process trains on its share, and logits, embeddings and labels are
    gathered (:func:`gather_batch`) so that the loss -- including the contrastive term, whose
    negatives and positives are the *global* batch -- is the single-process loss. Random
    augmentation is drawn per process; an incomplete last batch is dropped. Only rank 0 writes
    checkpoints.
    """
    core = getattr(model, "module", model)  # the model itself under DistributedDataParallel
    n_classes = getattr(core, "n_classes", None)
    x, y = _check_xy(x, y, n_classes)
    if x_val is not None:
        x_val, y_val = _check_xy(x_val, y_val, n_classes)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None (full batch) or an integer >= 1, got {batch_size!r}.")
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be an integer >= 1, got {n_views!r}.")
    if n_views > 1 and augment is None:
        raise ValueError("n_views > 1 needs an augment function (e.g. gaussian_jitter(0.3)); identical "
                         "views would only duplicate each example.")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    use_prototypes = getattr(loss_fn, "use_prototypes", False)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    if hasattr(loss_fn, "to"):
        loss_fn.to(device)
    was_training = model.training
    eager = getattr(model, "_orig_mod", model)  # under torch.compile: check without compiling a 2-row graph
    try:  # a wrong input shape is reported here, not from deep inside a layer mid-training
        with torch.no_grad():
            eager.eval()
            eager(x[:2])
    except RuntimeError as e:
        raise ValueError(f"the model cannot take inputs of shape {tuple(x.shape[1:])} (x has shape "
                         f"{tuple(x.shape)}): {e}") from None
    finally:
        model.train(was_training)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")
    params = list(model.parameters()) + [p for p in getattr(loss_fn, "parameters", lambda: [])()]
    opt = (torch.optim.Adam(params, lr=lr, weight_decay=weight_decay) if optimizer == "adam" else
           torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay))
    gen = torch.Generator().manual_seed(seed)
    bs = batch_size or len(x)
    history, first_epoch = History(), 1
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() else (1, 0)
    if bs % world:
        raise ValueError(f"batch_size={bs} must be divisible by the number of processes ({world}).")
    drop_last = drop_last or world > 1  # equal shards in every step
    fingerprint = {"examples": len(x), "input": list(x.shape[1:]), "parameters": sum(p.numel() for p in params),
                   "batch_size": bs, "lr": lr, "optimizer": optimizer, "n_views": n_views, "seed": seed}
    if resume and checkpoint is not None and Path(checkpoint).exists():
        ckpt = load_checkpoint(checkpoint)
        if ckpt.get("fingerprint") != fingerprint:
            raise ValueError(f"checkpoint {checkpoint} was written by a different run ({ckpt.get('fingerprint')}, "
                             f"this run: {fingerprint}); use another output folder or delete the checkpoint.")
        core.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        history, first_epoch = History(**ckpt["history"]), ckpt["epoch"] + 1
    start = time.perf_counter() - history.seconds
    n_batches = len(x) // bs if drop_last and len(x) >= bs else -(-len(x) // bs)
    bar = tqdm(range(first_epoch, epochs + 1), desc="training", disable=not progress)
    for epoch in bar:
        model.train()
        if hasattr(loss_fn, "set_epoch"):  # e.g. LDAM's deferred re-weighting
            loss_fn.set_epoch(epoch)
        for group in opt.param_groups:
            group["lr"] = lr * (lr_schedule(epoch) if lr_schedule else 1.0)
        order = torch.randperm(len(x), generator=gen).to(device) if bs < len(x) else None
        total, preds, labels = torch.zeros((), device=device), [], []
        for i in range(0, n_batches * bs, bs):
            idx = order[i:i + bs] if order is not None else None
            if world > 1:  # this process's share of the global batch
                idx = (idx if idx is not None else torch.arange(len(x), device=device))[rank::world]
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                if n_views > 1:  # (V*B, D) -> model -> (B, V, ...)
                    logits, emb = model(torch.cat([augment(xb) for _ in range(n_views)]))
                    logits, emb = (t.view(n_views, len(yb), -1).transpose(0, 1) for t in (logits, emb))
                else:
                    logits, emb = model(augment(xb) if augment else xb)
                if world > 1:  # every process sees the global batch (the contrastive term needs it)
                    logits, emb, yb = gather_batch(logits), gather_batch(emb), gather_batch(yb)
                loss = compute_loss(loss_fn, logits.float(), emb.float(), yb,
                                    core.head.weight if use_prototypes else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)      # stays on the device: no sync per step
            preds.append(logits.detach().reshape(len(yb), -1, logits.shape[-1])[:, 0].argmax(1))
            labels.append(yb)
        history.epoch.append(epoch)
        history.loss.append(total.item() / sum(len(t) for t in labels))
        # measured on the batches as they were trained on (no extra forward pass)
        history.train_balanced_accuracy.append(balanced_accuracy(torch.cat(labels).cpu(), torch.cat(preds).cpu()))
        if x_val is not None:
            history.val_balanced_accuracy.append(balanced_accuracy(y_val, predict(model, x_val)))
        bar.set_postfix(loss=f"{history.loss[-1]:.3f}", bal_acc=f"{history.train_balanced_accuracy[-1]:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, history)
        history.seconds = time.perf_counter() - start
        history.elapsed.append(history.seconds)
        if checkpoint is not None and rank == 0 and (epoch % checkpoint_every == 0 or epoch == epochs):
            save_atomic({"model": core.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                         "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                         "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                         "history": history.as_dict(), "fingerprint": fingerprint}, checkpoint)
    return history


def crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch ``(B, H, W, C)`` or ``(B, C, H, W)`` tensor:
    a random ``H x W`` crop of the zero-padded image and a random horizontal flip, per image,
    on whatever device the batch is on."""
    channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    img = x.permute(0, 3, 1, 2) if channels_last else x
    b, _, h, w = img.shape
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (B, 1, 1, W)
    flip = torch.rand(b, device=x.device) < 0.5
    cols = torch.where(flip[:, None, None, None], 2 * dx[:, None, None, None] + w - 1 - cols, cols)
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(img.shape[1], device=x.device)[None, :, None, None], rows, cols]
    return out.permute(0, 2, 3, 1) if channels_last else out
