"""Where does a training epoch's time go? `torch.profiler` over the second epoch of a `train` run
(the first one compiles), for each method asked for: the busiest operations, and how much of the
epoch's wall time the device spent running kernels (the rest it waited for the host: launches,
Python, syncs). Issue 12, single-run speed.

    python benchmarks/profile_train.py --npz .carry/cifar10_lt_rho100.npz --methods la,elm [--compile]
"""
import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from elm_lite.engine.cifar import load_cifar_lt
from elm_lite.engine.fullscale import MODELS, resolve_device, train_cifar


def device_time(event) -> float:
    """An event's own device (kernel) time in microseconds, whichever name this torch gives it."""
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def profile_one(data, method: str, args, dev) -> dict:
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else []))
    clock = {}

    def hook(epoch, model, history):  # profile epoch 2 only
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if epoch == 1:
            prof.start()
            clock["start"] = time.perf_counter()
        elif epoch == 2:
            clock["wall"] = time.perf_counter() - clock["start"]
            prof.stop()

    train_cifar(data, method, epochs=3, device=str(dev), compile=args.compile, progress=False, on_epoch_end=hook,
                model=args.model)
    events = prof.key_averages()
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(f"\n== {method}: epoch 2, {clock['wall']:.3f} s wall\n{events.table(sort_by=sort, row_limit=15)}")
    kernels_s = sum(device_time(e) for e in events) / 1e6
    return {"method": method, "epoch_wall_s": clock["wall"], "device_busy_s": kernels_s,
            "device_busy_fraction": kernels_s / clock["wall"] if dev.type == "cuda" else None}


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npz", required=True)
    p.add_argument("--methods", default="la,elm")
    p.add_argument("--model", default="resnet32", choices=sorted(MODELS))
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    args = p.parse_args(argv)
    dev, data = resolve_device(args.device), load_cifar_lt(npz=args.npz)
    rows = [profile_one(data, method, args, dev) for method in args.methods.split(",")]
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
