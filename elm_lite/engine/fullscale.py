"""Full-scale CIFAR-LT training: the standard recipe, the fast GPU path, results files.

The engine's loop (:func:`elm_lite.engine.loop.fit_at_scale`, the core's ``fit`` with schedules, SGD, bf16
and hooks) runs every single run; this module adds the recipe (ResNet-32,
SGD, warm-up and step decay), device placement (GPU-resident data and augmentation, bf16,
channels_last, optional ``torch.compile``), atomic checkpoints with resume, and a results JSON.
"""
from __future__ import annotations

import os
import platform
import signal
import threading
import time
import warnings
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .. import __version__, methods, metrics
from ..interfaces import uses_embedding
from ..methods import Method
from ..models import IMAGE_MODELS, image_model
from ..recipes import CHECKPOINT_EVERY, CIFAR_RECIPE, SEED, check, integer, number, one_of, plain
from ..results import SCHEMA_VERSION, check_run_results
from ..train import evaluate_features, set_seed
from .augment import VIEW_AUGMENTATIONS, view_augmentation
from .checkpoints import RunHooks, check_every
from .cifar import ImageData, content_hash
from .fused import trusted_batches
from .loop import fit_at_scale
from .runfiles import atomic_write, run_lock, save_atomic

MODELS = IMAGE_MODELS


def lr_schedule(recipe: dict, epoch: int) -> float:
    """The recipe's learning-rate multiplier at ``epoch`` (counting from 1): a linear warm-up over
    ``warmup_epochs``, then ``decay_to[i]`` from the epoch after ``decay_at[i]`` of the run."""
    if epoch <= recipe["warmup_epochs"]:
        return epoch / recipe["warmup_epochs"]
    factor = 1.0
    for frac, to in zip(recipe["decay_at"], recipe["decay_to"]):
        if epoch > round(frac * recipe["epochs"]):
            factor = to
    return factor


TORCHRUN_VARIABLE = "TORCHELASTIC_RUN_ID"   # set by torchrun (torch.distributed.run) for every process it starts
RENDEZVOUS_TIMEOUT_S = 120.0   # how long a process waits for the others to join before it gives up


def distributed_requested(ddp: bool | None = None) -> bool:
    """Whether to train data-parallel: ``ddp=True`` (``--ddp``), or ``None`` and started by ``torchrun``
    (its own variable, ``TORCHELASTIC_RUN_ID``, is set). ``WORLD_SIZE`` alone -- left over in a shell --
    does not switch a run to DDP: it is named in a warning and the run trains in one process."""
    world = os.environ.get("WORLD_SIZE", "1")
    if ddp is None:
        ddp = TORCHRUN_VARIABLE in os.environ
        if not ddp and world not in ("", "1"):
            warnings.warn(f"WORLD_SIZE={world} is set but this process was not started by torchrun "
                          f"({TORCHRUN_VARIABLE} is not set): training in one process. To train data-parallel, "
                          "start it with torchrun or pass --ddp (ddp=True); otherwise `unset WORLD_SIZE`.",
                          stacklevel=3)
    if ddp:
        missing = [v for v in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise ValueError(f"data-parallel training (ddp) needs the environment variables {missing}, which "
                             "torchrun sets; start the run with `torchrun --nproc_per_node=N -m elm_lite train ...`.")
    return bool(ddp) and int(world or 1) > 1


def _init_distributed(ddp: bool | None = None, timeout_s: float = RENDEZVOUS_TIMEOUT_S) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes (see :func:`distributed_requested`); returns
    (world, rank). The rendezvous gives up after ``timeout_s`` with a ``TimeoutError`` naming the
    address, and ``kill`` (SIGTERM) ends the process while it waits (the wait is one C++ call that a
    Python signal handler would only see after it returns)."""
    from datetime import timedelta

    from torch import distributed as dist
    if not distributed_requested(ddp):
        return 1, 0
    if not dist.is_initialized():
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL) if main_thread else None
        try:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                    timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, dist.DistError) as e:
            where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
            raise TimeoutError(f"data-parallel rendezvous at {where} failed within {timeout_s:g} s "
                               f"({str(e).splitlines()[0][:200]}): are all WORLD_SIZE={os.environ.get('WORLD_SIZE')} "
                               "processes started (torchrun --nproc_per_node=N)?") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return dist.get_world_size(), dist.get_rank()


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` (a GPU if one is visible), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device that exists."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not a device this course trains on; use 'auto', 'cpu', "
                         "'cuda' or 'cuda:N'.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} GPU(s) are visible "
                         f"(cuda:0 ... cuda:{torch.cuda.device_count() - 1}).")
    return dev


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def check_recipe(recipe: dict) -> dict:
    """:data:`CIFAR_RECIPE` updated by ``recipe``; unknown entries and out-of-range values are refused."""
    unknown = set(recipe) - set(CIFAR_RECIPE)
    if unknown:
        raise ValueError(f"unknown recipe entries {sorted(unknown)}; known: {sorted(CIFAR_RECIPE)}.")
    r = {**CIFAR_RECIPE, **{k: tuple(map(plain, v)) if isinstance(v, (list, tuple)) else plain(v)
                            for k, v in recipe.items()}}   # NumPy scalars as the numbers they mean

    def need(ok: bool, key: str, expectation: str) -> None:
        if not ok:
            raise ValueError(f"recipe entry {key}={r[key]!r} is out of range: it must be {expectation}.")

    kinds = {"model": one_of(*MODELS), "epochs": integer(1), "batch_size": integer(1), "lr": number(0, low_open=True),
             "weight_decay": number(0), "warmup_epochs": integer(0), "projection_dim": integer(1),
             "view_augment": one_of(*VIEW_AUGMENTATIONS)}
    for key, (ok, expectation) in kinds.items():   # the vocabulary of recipes.check, in the recipe's words
        need(ok(r[key]), key, expectation)
    need(len(r["decay_at"]) == len(r["decay_to"]) and all(0 < f <= 1 for f in r["decay_at"]), "decay_at",
         f"fractions in (0, 1], one per decay_to entry ({len(r['decay_to'])})")
    need(all(0 <= m < float("inf") for m in r["decay_to"]), "decay_to", "multipliers >= 0")
    need(all(a < b for a, b in zip(r["decay_at"], r["decay_at"][1:])), "decay_at",
         "increasing (e.g. 0.8,0.9, with --decay-to in the same order: 0.01,0.0001); the schedule applies the "
         "drops in this order")
    return r


def run_identity(data: ImageData, method: Method, recipe: dict) -> dict:
    """Everything besides the training loop's own settings that changes what a run trains: the
    method and its constants, the data (name, imbalance, subset seed and a content hash of the
    arrays actually trained on) and the whole recipe. Checkpoints must match it to be resumed."""
    return {"method": method.identity(), "dataset": data.name, "rho": data.info.get("rho"),
            "data_seed": data.info.get("seed"), "data_sha256": content_hash(data.x_train, data.y_train),
            "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}}


FINISHED = ("results.json", "embeddings.npz")   # the files of a finished run


def prepare_run_folder(out_dir, resume: bool, overwrite: bool) -> Path | None:
    """The checked run folder (created), or ``None`` without one. A folder holding a run -- a
    checkpoint or a finished result (``results.json``, e.g. a table's run) -- is written only with
    ``resume`` (continue its checkpoint; a finished result without one is refused: there is nothing to
    continue) or ``overwrite`` (start over). ``resume`` in a folder with neither warns that the run
    starts fresh."""
    if out_dir is None:
        if resume:
            raise ValueError("resume=True needs out_dir: the folder whose checkpoint.pt to continue.")
        return None
    if not str(out_dir).strip():
        raise ValueError("out_dir is empty; name a folder for the run, e.g. runs/la-s0.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a folder; name a folder for the run.")
    checkpoint, results = out / "checkpoint.pt", out / "results.json"
    held = [name for name in ("checkpoint.pt", *FINISHED) if (out / name).exists()]
    if held and not (resume or overwrite):
        what = "a finished run" if results.exists() else "a run"
        raise ValueError(f"{out} already holds {what} ({', '.join(held)}); "
                         + ("continue it with resume=True (--resume), " if checkpoint.exists() else "")
                         + "start over with overwrite=True (--overwrite), or use another folder.")
    if resume and not checkpoint.exists():
        if results.exists():
            raise ValueError(f"resume: {out} holds a finished run (results.json) but no checkpoint.pt, so there "
                             "is nothing to continue and its result stays as it is; train it again with "
                             "overwrite=True (--overwrite), or use another folder.")
        warnings.warn(f"resume: no checkpoint in {out}; starting a fresh run.", stacklevel=3)
    if overwrite and not resume:  # nothing of the old run may pass for the new one if it stops early
        for old in ("checkpoint.pt", *FINISHED):
            (out / old).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the run folder {out}: {e.strerror or e}") from None
    return out


def build_image_model(method: Method, n_classes: int, recipe: dict, device: torch.device) -> torch.nn.Module:
    """The recipe's model for ``method`` (cosine head for LDAM, projection head for the embedding
    term) on ``device`` (channels_last on a GPU)."""
    embedding = uses_embedding(method.loss)
    net = image_model(recipe["model"], n_classes, method.cosine, recipe["projection_dim"] if embedding else None)
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if device.type == "cuda" else net


def train_cifar(data: ImageData, method: str | Method = "la", *, out_dir=None, seed: int = 0, device: str = "auto",
                compile: bool = False, bf16: bool | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
                resume: bool = False, overwrite: bool = False, progress: bool = True, on_epoch_end=None,
                ddp: bool | None = None, **recipe) -> dict:
    """Train one CIFAR-LT run with :data:`CIFAR_RECIPE` (entries overridable as keywords) and return
    its results (:class:`~elm_lite.results.RunResults`); with ``out_dir``, also write
    ``checkpoint.pt`` (atomically, every ``checkpoint_every`` epochs), ``results.json`` and
    ``embeddings.npz`` (a sample of test features for plots). ``resume=True`` continues the same
    run from its checkpoint (another run's is refused, see :func:`run_identity`);
    ``overwrite=True`` starts over in a folder that holds one. The folder is locked for this process
    (:func:`~elm_lite.engine.runfiles.run_lock`) before anything is written. ``bf16=None`` means "on a GPU".
    ``on_epoch_end(epoch, model, history)`` is passed to :func:`~elm_lite.engine.loop.fit_at_scale` (live curves).
    ``ddp``: train data-parallel (True), in one process (False), or as started (None: under
    ``torchrun``, see :func:`distributed_requested`)."""
    recipe, every = check_recipe(recipe), check_every(plain(checkpoint_every))
    seed = check("seed", plain(seed), SEED)
    method = methods.get(method) if isinstance(method, str) else method
    dev = resolve_device(device)
    world, rank = _init_distributed(ddp)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    with run_lock(out_dir) if out_dir is not None and rank == 0 else nullcontext():
        out = prepare_run_folder(out_dir, resume, overwrite) if rank == 0 else None
        torch.backends.cudnn.benchmark = dev.type == "cuda"  # static shapes: let cuDNN pick the fastest kernels
        loss = method.build_loss(data.counts, recipe["epochs"])
        set_seed(seed)
        net = build_image_model(method, data.n_classes, recipe, dev)
        runner = net
        if world > 1:  # data parallel: synchronised batch norm on GPUs, one global batch (see fit)
            if dev.type == "cuda":
                runner = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
            runner = torch.nn.parallel.DistributedDataParallel(runner,
                                                               device_ids=[dev.index] if dev.type == "cuda" else None)
        runner = torch.compile(runner, mode="reduce-overhead") if compile else runner
        bf16 = dev.type == "cuda" if bf16 is None else bf16
        start = time.perf_counter()
        with trusted_batches():  # the labels are checked once, by fit_at_scale: no host sync per step
            history = fit_at_scale(
                          runner, torch.as_tensor(data.x_train, device=dev), torch.as_tensor(data.y_train, device=dev),
                          loss, epochs=recipe["epochs"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                          weight_decay=recipe["weight_decay"], optimizer="sgd",
                          lr_schedule=partial(lr_schedule, recipe), drop_last=True, n_views=method.views,
                          augment=view_augmentation(recipe["view_augment"], method.views), seed=seed, bf16=bf16,
                          progress=progress,
                          on_epoch_end=on_epoch_end, sampling=method.sampling,
                          hooks=RunHooks(Path(out_dir) / "checkpoint.pt" if out_dir is not None else None,
                                         every, resume, run_identity(data, method, recipe)))
        method.finish(net, data.x_train, data.y_train, seed)
        logits, feats, projected = evaluate_features(net, data.x_test, dev)
        results = run_results(data, method, seed, recipe, logits, feats, projected, history,
                              setup={"total_seconds": time.perf_counter() - start, "hardware": hardware(dev),
                                     "compile": compile, "bf16": bf16})
        if out is not None:
            save_run(out, data, results, feats)
    return results


def save_run(out: Path, data: ImageData, results: dict, feats: np.ndarray) -> None:
    """A finished run's files in its folder: ``results.json`` and ``embeddings.npz`` (100 test
    features ``(F,)`` per class, float16, for plots)."""
    keep = np.concatenate([np.flatnonzero(data.y_test == c)[:100] for c in range(data.n_classes)])
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: numpy would append ".npz" to the temporary's name
            np.savez_compressed(f, features=feats[keep].astype(np.float16), labels=data.y_test[keep])
    atomic_write(out / "embeddings.npz", write)
    save_atomic(results, out / "results.json")


def margin_summary(margin: np.ndarray, counts) -> dict[str, float]:
    """Per-class embedding margins ``(C,)`` summarised: the mean of the many / medium / few classes
    (nan for an empty split, as :func:`~elm_lite.metrics.spread_summary` takes them) and the smallest
    and largest class margin (``min`` < 0: some class's test features sit, on average, nearer another
    class's mean than their own). No tail / head ratio: a margin can be zero or negative."""
    means = metrics.spread_summary(margin, counts)
    present = margin[~np.isnan(margin)]
    low, high = (float(present.min()), float(present.max())) if present.size else (float("nan"), float("nan"))
    return {**{split: means[split] for split in metrics.SPLITS}, "min": low, "max": high}


def run_results(data: ImageData, method: Method, seed: int, recipe: dict, logits: np.ndarray, feats: np.ndarray,
                projected: np.ndarray | None, history, setup: dict) -> dict:
    """A run's results dict (the schema of :class:`~elm_lite.results.RunResults`) from its test
    logits ``(N, C)``, backbone features ``(N, F)`` and projection ``(N, P)`` (None without one)."""
    y_pred = logits.argmax(1)
    spread = metrics.embedding_spread(feats, data.y_test, data.n_classes)
    margin = metrics.embedding_margin(feats, data.y_test, data.n_classes)
    geometry = {}
    if projected is not None:  # where the contrastive term acts
        p_spread = metrics.embedding_spread(projected, data.y_test, data.n_classes)
        p_margin = metrics.embedding_margin(projected, data.y_test, data.n_classes)
        geometry = {"per_class_projection_spread": p_spread.tolist(),
                    "projection_spread": metrics.spread_summary(p_spread, data.counts),
                    "per_class_projection_margin": p_margin.tolist(),
                    "projection_margin": margin_summary(p_margin, data.counts)}
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": data.name, "rho": data.info.get("rho"), "method": method.name, "seed": seed, "recipe": recipe,
        "identity": run_identity(data, method, recipe),
        "counts": data.counts.tolist(), "source": data.source,
        "balanced_accuracy": metrics.balanced_accuracy(data.y_test, y_pred, data.n_classes),
        "per_class_accuracy": metrics.per_class_accuracy(data.y_test, y_pred, data.n_classes).tolist(),
        "shot_accuracy": metrics.shot_accuracy(data.y_test, y_pred, data.counts),
        "per_class_spread": spread.tolist(), "spread": metrics.spread_summary(spread, data.counts),
        "per_class_margin": margin.tolist(), "margin": margin_summary(margin, data.counts), **geometry,
        "history": history.as_dict(), "seconds_per_epoch": history.seconds / max(len(history.epoch), 1),
        "first_epoch_seconds": history.elapsed[0] if history.elapsed else None,  # holds compilation
        "steady_seconds_per_epoch": float(np.median(np.diff(history.elapsed))) if len(history.elapsed) > 1 else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "elm_lite": __version__},
        **setup,
    }


def summarize_runs(runs: list[dict]) -> str:
    """A text table of results dicts (from :func:`train_cifar`), grouped by dataset, rho and method:
    mean ± sample standard deviation over seeds (:func:`~elm_lite.metrics.mean_sd`) of balanced accuracy,
    and the means of many / medium / few accuracy and tail spread."""
    groups: dict[tuple, list[dict]] = {}
    for r in map(check_run_results, runs):
        groups.setdefault((r["dataset"], r["rho"], r["method"]), []).append(r)
    lines = [f"{'dataset':10s} {'rho':>5s} {'method':18s} {'seeds':>5s} {'balanced acc':>15s} {'many':>7s} "
             f"{'medium':>7s} {'few':>7s} {'tail spread':>12s} {'s/epoch':>8s}"]
    for (dataset, rho, method), rs in groups.items():   # mean_sd leaves nan out: an empty split's mean is nan
        acc, sd, n = metrics.mean_sd([100 * r["balanced_accuracy"] for r in rs])
        shots = {k: metrics.mean_sd([100 * r["shot_accuracy"][k] for r in rs])[0] for k in ("many", "medium", "few")}
        tail, _, _ = metrics.mean_sd([r["spread"]["few"] if r["spread"]["few"] == r["spread"]["few"]
                                      else r["spread"]["medium"] for r in rs])
        fmt = lambda v: f"{v:7.1f}" if v == v else f"{'n/a':>7s}"  # noqa: E731
        spread = f"± {sd:3.1f}" if n > 1 else "     "
        lines.append(f"{dataset:10s} {rho:5g} {method:18s} {len(rs):5d} {acc:9.1f} {spread} "
                     f"{fmt(shots['many'])} {fmt(shots['medium'])} {fmt(shots['few'])} {tail:12.3f} "
                     f"{np.mean([r['seconds_per_epoch'] for r in rs]):8.2f}")
    lines.append("(± is the sample standard deviation over seeds, ddof = 1; none for a single seed)")
    return "\n".join(lines)
