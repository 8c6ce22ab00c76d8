"""The reference for `python -m elm_lite train`'s speed: one LA run of the standard recipe written as
the shortest loop we can think of (issue 12 measured such a loop 1.31x faster than the package's).

Same model, data, recipe, augmentation and loss as `train --method la --compile`: ResNet-32
(channels_last, compiled with mode="reduce-overhead"), GPU-resident data, `engine.augment.crop_flip`, bf16
autocast, SGD momentum 0.9 with the recipe's warm-up and decays; no checkpoints, no history, one
host sync per epoch. Prints one JSON line: first epoch (compilation) and median steady epoch, seconds.

    python benchmarks/minimal_loop.py --npz .carry/cifar10_lt_rho100.npz --epochs 12
"""
import argparse
import json
import statistics
import time

import torch
from torch.nn import functional as F

from elm_lite.engine.augment import crop_flip
from elm_lite.engine.cifar import load_cifar_lt
from elm_lite.engine.fullscale import MODELS, lr_schedule, resolve_device
from elm_lite.recipes import CIFAR_RECIPE
from elm_lite.train import set_seed


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npz", required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--model", default=CIFAR_RECIPE["model"], choices=sorted(MODELS))
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    dev, recipe = resolve_device(args.device), {**CIFAR_RECIPE, "epochs": 200}   # the 200-epoch schedule's start
    gpu = dev.type == "cuda"
    data = load_cifar_lt(npz=args.npz)
    x = torch.as_tensor(data.x_train, device=dev).float()
    y = torch.as_tensor(data.y_train, device=dev)
    offsets = torch.log(torch.as_tensor(data.counts / data.counts.sum(), device=dev, dtype=torch.float32))
    set_seed(0)
    net = MODELS[args.model](data.n_classes).to(dev)
    net = net.to(memory_format=torch.channels_last) if gpu else net
    step_net = torch.compile(net, mode="reduce-overhead") if gpu else net
    opt = torch.optim.SGD(net.parameters(), lr=recipe["lr"], momentum=0.9, weight_decay=recipe["weight_decay"])
    bs, gen, seconds = recipe["batch_size"], torch.Generator(device=dev).manual_seed(0), []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = recipe["lr"] * lr_schedule(recipe, epoch)
        order = torch.randperm(len(x), device=dev, generator=gen)
        total = torch.zeros((), device=dev)
        for i in range(0, len(x) - bs + 1, bs):
            idx = order[i:i + bs]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
                logits, _ = step_net(crop_flip(x[idx], gen))
                loss = F.cross_entropy(logits.float() + offsets, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        total.item()                                    # the epoch's one host sync
        seconds.append(time.perf_counter() - start)
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else None
    out = {"loop": "minimal", "epochs": args.epochs, "first_epoch_s": seconds[0], "steady_s_per_epoch": steady,
           "device": torch.cuda.get_device_name(dev) if gpu else "cpu"}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
