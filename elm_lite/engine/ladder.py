"""The speed ladder: seconds per epoch of one CIFAR-LT run on the same machine, one rung per speed-up
(:func:`speed_ladder`, printed by :func:`ladder_table`). A benchmark, kept beside the engine that it
measures, never in the core.
"""
from __future__ import annotations

import os
import time
from functools import partial

import numpy as np
import torch

from .. import methods
from ..recipes import CIFAR_RECIPE
from ..train import set_seed
from .augment import crop_flip
from .cifar import ImageData
from .fullscale import MODELS, hardware, resolve_device
from .fused import trusted_batches
from .loop import fit_at_scale


def _epoch_times(run_epochs) -> list[float]:
    """Call ``run_epochs(on_epoch_end)`` and return the wall time of each epoch."""
    stamps = [time.perf_counter()]

    def tick(epoch, *_):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    run_epochs(tick)
    return list(np.diff(stamps))


def _dataloader_rung(tick, *, data: ImageData, build, dev, epochs: int, batch_size: int) -> None:
    """Speed-ladder rung 1: LA with a DataLoader and CPU augmentation, fp32; ``tick(epoch)`` after each."""
    set_seed(0)
    net = build(data.n_classes).to(dev)
    loss = methods.get("la").build_loss(data.counts).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=CIFAR_RECIPE["lr"], momentum=0.9,
                          weight_decay=CIFAR_RECIPE["weight_decay"])
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


def _resident_rung(tick, *, data: ImageData, build, dev, epochs: int, batch_size: int, run_epochs: int,
                   bf16: bool, compiled: bool, method_name: str = "la") -> None:
    """Speed-ladder rungs 2-5: data and augmentation on the device, through
    :func:`~elm_lite.engine.loop.fit_at_scale`."""
    set_seed(0)
    method = methods.get(method_name)
    loss, views = method.build_loss(data.counts, run_epochs), method.views
    net = build(data.n_classes, projection_dim=CIFAR_RECIPE["projection_dim"] if views > 1 else None).to(dev)
    if bf16 and dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    with trusted_batches():
        fit_at_scale(torch.compile(net, mode="reduce-overhead") if compiled else net,
            torch.as_tensor(data.x_train, device=dev), torch.as_tensor(data.y_train, device=dev), loss,
            epochs=epochs + 1, batch_size=batch_size, lr=CIFAR_RECIPE["lr"], weight_decay=CIFAR_RECIPE["weight_decay"],
            optimizer="sgd", drop_last=True, n_views=views, augment=crop_flip, bf16=bf16 and dev.type == "cuda",
            progress=False, on_epoch_end=tick)


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
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("run_epochs", run_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}.")
    dev = resolve_device(device)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    common = dict(data=data, build=MODELS[model], dev=dev, epochs=epochs, batch_size=batch_size)
    resident = partial(_resident_rung, run_epochs=run_epochs, **common)
    rungs = [("DataLoader, CPU augmentation, fp32", partial(_dataloader_rung, **common)),
             ("GPU-resident data + augmentation, fp32", partial(resident, bf16=False, compiled=False)),
             ("+ bf16 autocast + channels_last", partial(resident, bf16=True, compiled=False))]
    if compile:
        rungs.append(("+ torch.compile (reduce-overhead)", partial(resident, bf16=True, compiled=True)))
    rungs.append(("ELM loss (2 views, projection), as above", partial(resident, bf16=True, compiled=compile,
                                                                      method_name="elm")))
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
                     + (f"   (measured: {measured['epochs']} epochs in {measured['total_s']:.0f} s)"
                        if measured else ""))
    return "\n".join(lines)
