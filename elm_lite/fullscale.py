"""Full-scale CIFAR-LT training: the standard recipe, the fast GPU path, results files.

The same :func:`elm_lite.train.fit` loop runs everything; this module adds the recipe (ResNet-32,
SGD, warm-up and step decay), device placement (GPU-resident data and augmentation, bf16,
channels_last, optional ``torch.compile``), atomic checkpoints with resume, and a results JSON.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, losses, metrics
from .data import ImageData
from .models import ResNet32, SmallCNN
from .train import crop_flip, fit, set_seed

# The standard CIFAR-LT recipe (LDAM-DRW and later work), each knob with its meaning.
CIFAR_RECIPE = dict(
    model="resnet32",         # ResNet-32, 0.46 M parameters ("small_cnn" for CPU-sized runs)
    epochs=200,               # passes over the long-tailed training set
    batch_size=128,           # per step (per process under torchrun: the global batch is split)
    lr=0.1,                   # SGD learning rate, momentum 0.9
    weight_decay=2e-4,        # L2 penalty
    warmup_epochs=5,          # linear warm-up from lr/5 to lr
    decay_at=(0.8, 0.9),      # fractions of the run where lr drops (epochs 160 and 180 of 200)
    decay_to=(0.01, 0.0001),  # ... to these multiples of lr
    projection_dim=128,       # projection head for the embedding term (ELM / SupCon)
    embedding_views=2,        # two crop+flip views per image for the embedding term
)
LOSS_NAMES = ("ce", "la", "ldam", "ldam-drw", "elm", "supcon-la")


def lr_multiplier(epoch: int, epochs: int, warmup_epochs: int, decay_at, decay_to) -> float:
    """The recipe's learning-rate multiplier at ``epoch`` (counting from 1)."""
    if epoch <= warmup_epochs:
        return epoch / warmup_epochs
    factor = 1.0
    for frac, to in zip(decay_at, decay_to):
        if epoch > round(frac * epochs):
            factor = to
    return factor


def make_loss(name: str, counts, epochs: int) -> torch.nn.Module:
    """The loss of a run by name (:data:`LOSS_NAMES`); ELM uses :data:`~elm_lite.experiments.ELM_TOY_LOSS`'s
    reading of the paper (our constants, not the paper's text)."""
    from .experiments import ELM_TOY_LOSS
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSS_NAMES}.")
    if name in ("ldam", "ldam-drw"):
        return losses.LDAMLoss(counts, drw_epoch=round(0.8 * epochs) if name == "ldam-drw" else None)
    if name in ("elm", "supcon-la"):
        return losses.ELMLoss(counts, **{**ELM_TOY_LOSS, **({"delta_max": 0.0} if name == "supcon-la" else {})})
    return losses.get(name, counts)


def _init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1); returns (world, rank)."""
    from torch import distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_world_size(), dist.get_rank()) if world > 1 else (1, 0)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'.")
    return torch.device(device)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


@torch.no_grad()
def evaluate(model, x: np.ndarray, device: torch.device, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, C), backbone features (N, F))`` of an image model, in eval mode."""
    model.eval()
    logits, feats = [], []
    for i in range(0, len(x), batch):
        h = model.backbone_features(torch.as_tensor(x[i:i + batch], device=device).float())
        logits.append(model.head(h).float().cpu())
        feats.append(h.float().cpu())
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def write_json_atomic(obj, path) -> None:
    """Write ``obj`` as JSON to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def train_cifar(data: ImageData, loss_name: str = "la", *, out_dir=None, seed: int = 0, device: str = "auto",
                compile: bool = False, bf16: bool | None = None, checkpoint_every: int = 10, resume: bool = False,
                progress: bool = True, on_epoch_end=None, **recipe) -> dict:
    """Train one CIFAR-LT run with :data:`CIFAR_RECIPE` (entries overridable as keywords) and return
    its results; with ``out_dir``, also write ``checkpoint.pt`` (atomically, every
    ``checkpoint_every`` epochs; ``resume=True`` continues from it), ``results.json`` and
    ``embeddings.npz`` (a sample of test features for plots). ``bf16=None`` means "on a GPU".
    ``on_epoch_end(epoch, model, history)`` is passed to :func:`~elm_lite.train.fit` (live curves)."""
    recipe = {**CIFAR_RECIPE, **recipe}
    unknown = set(recipe) - set(CIFAR_RECIPE)
    if unknown:
        raise ValueError(f"unknown recipe entries {sorted(unknown)}; known: {sorted(CIFAR_RECIPE)}.")
    dev = resolve_device(device)
    world, rank = _init_distributed()
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # static shapes: let cuDNN pick the fastest kernels
    loss = make_loss(loss_name, data.counts, recipe["epochs"])
    uses_embedding = getattr(loss, "uses_embedding", False)
    set_seed(seed)
    net = {"resnet32": ResNet32, "small_cnn": SmallCNN}[recipe["model"]](
        data.n_classes, cosine=loss_name.startswith("ldam"),
        projection_dim=recipe["projection_dim"] if uses_embedding else None).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    runner = net
    if world > 1:  # data parallel: synchronised batch norm on GPUs, one global batch (see fit)
        if dev.type == "cuda":
            runner = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        runner = torch.nn.parallel.DistributedDataParallel(runner, device_ids=[dev.index] if dev.type == "cuda" else None)
    runner = torch.compile(runner, mode="reduce-overhead") if compile else runner
    out = Path(out_dir) if out_dir is not None and rank == 0 else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    schedule = lambda e: lr_multiplier(e, recipe["epochs"], recipe["warmup_epochs"],  # noqa: E731
                                       recipe["decay_at"], recipe["decay_to"])
    start = time.perf_counter()
    history = fit(runner, torch.as_tensor(data.x_train, device=dev), torch.as_tensor(data.y_train, device=dev),
                  loss, epochs=recipe["epochs"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                  weight_decay=recipe["weight_decay"], optimizer="sgd", lr_schedule=schedule, drop_last=True,
                  n_views=recipe["embedding_views"] if uses_embedding else 1, augment=crop_flip, seed=seed,
                  bf16=dev.type == "cuda" if bf16 is None else bf16, progress=progress,
                  checkpoint=Path(out_dir) / "checkpoint.pt" if out_dir is not None else None,
                  checkpoint_every=checkpoint_every, resume=resume, on_epoch_end=on_epoch_end)
    logits, feats = evaluate(net, data.x_test, dev)
    y_pred = logits.argmax(1)
    spread = metrics.embedding_spread(feats, data.y_test, data.n_classes)
    results = {
        "dataset": data.name, "rho": data.info.get("rho"), "loss": loss_name, "seed": seed, "recipe": recipe,
        "counts": data.counts.tolist(), "source": data.source,
        "balanced_accuracy": metrics.balanced_accuracy(data.y_test, y_pred, data.n_classes),
        "per_class_accuracy": metrics.per_class_accuracy(data.y_test, y_pred, data.n_classes).tolist(),
        "shot_accuracy": metrics.shot_accuracy(data.y_test, y_pred, data.counts),
        "per_class_spread": spread.tolist(), "spread": metrics.spread_summary(spread, data.counts),
        "history": history.as_dict(), "seconds_per_epoch": history.seconds / max(len(history.epoch), 1),
        "first_epoch_seconds": history.elapsed[0] if history.elapsed else None,  # holds compilation
        "steady_seconds_per_epoch": float(np.median(np.diff(history.elapsed))) if len(history.elapsed) > 1 else None,
        "total_seconds": time.perf_counter() - start, "hardware": hardware(dev),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "elm_lite": __version__},
        "compile": compile, "bf16": dev.type == "cuda" if bf16 is None else bf16,
    }
    if out is not None:
        keep = np.concatenate([np.flatnonzero(data.y_test == c)[:100] for c in range(data.n_classes)])
        np.savez_compressed(out / "embeddings.npz", features=feats[keep].astype(np.float16), labels=data.y_test[keep])
        write_json_atomic(results, out / "results.json")
    return results


def _epoch_times(run_epochs) -> list[float]:
    """Call ``run_epochs(on_epoch_end)`` and return the wall time of each epoch."""
    stamps = [time.perf_counter()]

    def tick(epoch, *_):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    run_epochs(tick)
    return list(np.diff(stamps))


def speed_ladder(data: ImageData, device: str = "auto", epochs: int = 3, model: str = "resnet32",
                 batch_size: int = 128, run_epochs: int = 200, compile: bool = True) -> dict:
    """Seconds per epoch on ``data`` for each step of the ladder, same machine, one call, LA loss:
    (1) a DataLoader with CPU augmentation in fp32, (2) data and augmentation resident on the
    device, (3) + bf16 autocast and channels_last, (4) + ``torch.compile``; then (5) the ELM loss
    (two views, projection head, contrastive term) on rung 4. One warm-up epoch per rung is timed
    apart (it holds compilation). ``compile=False`` leaves rung 4 out and times the ELM loss on
    rung 3 (a quick ladder; a whole ``train --compile`` run then measures the compiled rung).

    Returns ``{"setup", "run_epochs", "rows": [{"rung", "first_epoch_s", "steady_s_per_epoch",
    "run_s"} | {"rung", "error"}]}`` with ``run_s`` = first epoch + median steady epoch x
    (``run_epochs`` - 1); :func:`ladder_table` prints it."""
    dev = resolve_device(device)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    build = {"resnet32": ResNet32, "small_cnn": SmallCNN}[model]

    def dataloader_rung(tick):
        set_seed(0)
        net = build(data.n_classes).to(dev)
        loss = losses.get("la", data.counts).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                             num_workers=min(4, os.cpu_count() or 1),
                                             collate_fn=lambda b: (crop_flip(torch.stack([x for x, _ in b]).float()),
                                                                   torch.stack([y for _, y in b])))
        for epoch in range(1, epochs + 2):
            net.train()
            for xb, yb in loader:
                logits, _ = net(xb.to(dev, non_blocking=True))
                out = loss(logits, yb.to(dev, non_blocking=True))
                opt.zero_grad(set_to_none=True)
                out.backward()
                opt.step()
            tick(epoch)

    def resident_rung(bf16: bool, compiled: bool, loss_name: str = "la"):
        def run(tick):
            set_seed(0)
            loss = make_loss(loss_name, data.counts, run_epochs)
            views = CIFAR_RECIPE["embedding_views"] if getattr(loss, "uses_embedding", False) else 1
            net = build(data.n_classes, projection_dim=CIFAR_RECIPE["projection_dim"] if views > 1 else None).to(dev)
            if bf16 and dev.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
            fit(torch.compile(net, mode="reduce-overhead") if compiled else net,
                torch.as_tensor(data.x_train, device=dev), torch.as_tensor(data.y_train, device=dev), loss,
                epochs=epochs + 1, batch_size=batch_size, lr=0.1, weight_decay=2e-4, optimizer="sgd",
                drop_last=True, n_views=views, augment=crop_flip, bf16=bf16 and dev.type == "cuda",
                progress=False, on_epoch_end=tick)
        return run

    rungs = [("DataLoader, CPU augmentation, fp32", dataloader_rung),
             ("GPU-resident data + augmentation, fp32", resident_rung(False, False)),
             ("+ bf16 autocast + channels_last", resident_rung(True, False))]
    if compile:
        rungs.append(("+ torch.compile (reduce-overhead)", resident_rung(True, True)))
    rungs.append(("ELM loss (2 views, projection), as above", resident_rung(True, compile, "elm")))
    rows = []
    for name, run in rungs:
        try:
            times = _epoch_times(run)
        except Exception as e:  # e.g. compile unavailable: report the rung, keep the ladder
            rows.append({"rung": name, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            continue
        steady = float(np.median(times[1:]))
        rows.append({"rung": name, "first_epoch_s": times[0], "steady_s_per_epoch": steady,
                     "run_s": times[0] + steady * (run_epochs - 1)})
    setup = (f"{data.name}-LT rho={data.info.get('rho')}, {len(data.y_train)} images, {model}, batch {batch_size}, "
             f"{epochs} timed epochs per rung after a warm-up, on {hardware(dev)} (torch {torch.__version__})")
    return {"setup": setup, "run_epochs": run_epochs, "rows": rows}


def ladder_table(ladder: dict) -> str:
    """The speed ladder of :func:`speed_ladder` as a text table."""
    lines = [f"speed ladder: {ladder['setup']}",
             f"{'rung':42s} {'1st epoch':>9s} {'s/epoch':>9s} {str(ladder['run_epochs']) + ' epochs':>12s}"]
    for r in ladder["rows"]:
        measured = r.get("measured_run")  # a row taken from a whole run rather than a few epochs
        lines.append(f"{r['rung']:42s} failed: {r['error'][:80]}" if "error" in r else
                     f"{r['rung']:42s} {r['first_epoch_s']:9.2f} {r['steady_s_per_epoch']:9.3f} {r['run_s']:12.0f}"
                     + (f"   (measured: {measured['epochs']} epochs in {measured['total_s']:.0f} s)" if measured else ""))
    return "\n".join(lines)


def _mean(values) -> float:
    """Mean of the non-nan values; nan when there are none."""
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def summarize_runs(runs: list[dict]) -> str:
    """A text table of results dicts (from :func:`train_cifar`), grouped by dataset, rho and loss:
    mean +- std over seeds of balanced accuracy, many / medium / few accuracy and tail spread."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["rho"], r["loss"]), []).append(r)
    lines = [f"{'dataset':10s} {'rho':>5s} {'loss':10s} {'seeds':>5s} {'balanced acc':>15s} {'many':>7s} "
             f"{'medium':>7s} {'few':>7s} {'tail spread':>12s} {'s/epoch':>8s}"]
    for (dataset, rho, loss), rs in groups.items():
        acc = np.array([r["balanced_accuracy"] for r in rs]) * 100
        shots = {k: _mean([r["shot_accuracy"][k] for r in rs]) * 100 for k in ("many", "medium", "few")}
        tail = _mean([r["spread"]["few"] if r["spread"]["few"] == r["spread"]["few"] else r["spread"]["medium"]
                      for r in rs])
        fmt = lambda v: f"{v:7.1f}" if v == v else f"{'n/a':>7s}"  # noqa: E731
        lines.append(f"{dataset:10s} {rho:5g} {loss:10s} {len(rs):5d} {acc.mean():9.1f} ± {acc.std():3.1f} "
                     f"{fmt(shots['many'])} {fmt(shots['medium'])} {fmt(shots['few'])} {tail:12.3f} "
                     f"{np.mean([r['seconds_per_epoch'] for r in rs]):8.2f}")
    return "\n".join(lines)
