"""Where does one training step's work go? Count the tensor operations of each phase of one step
of the full-scale recipe (ResNet-32, batch 128, SGD), for LA and ELM, on any device.

Under `torch.compile(mode="reduce-overhead")` the model's forward and backward passes replay as
CUDA graphs (one launch each); every other operation below still runs eagerly, roughly one kernel
launch each, so the eager count is a floor on a step's launch overhead. Counts, not times: on a GPU,
profile with `torch.profiler` to time them (notebook 06, exercise 4). The counts inside the compiled
phases are for reference only: they depend on memory layout (e.g. layout copies in eager CPU runs).

    python benchmarks/step_anatomy.py [--device cpu|cuda] [--batch-size 128]
"""
import argparse
import collections

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from elm_lite import methods
from elm_lite.engine.augment import crop_flip
from elm_lite.engine.fused import trusted_batches
from elm_lite.models import ResNet32
from elm_lite.recipes import CIFAR_RECIPE
from elm_lite.train import compute_loss

# values read back to the host (.item(), int(t), if t): each a wait for the device. On a CPU this counts
# F.one_hot's own index checks too, which on a GPU do not read back.
SYNCS = "9 host syncs (value reads), all phases"
# operations that only reinterpret memory (no kernel runs for them)
METADATA_OPS = {"view", "_unsafe_view", "reshape", "transpose", "permute", "t", "expand", "select", "slice",
                "unsqueeze", "squeeze", "detach", "alias", "as_strided", "split", "unbind", "lift_fresh",
                "_reshape_alias", "split_with_sizes", "empty", "empty_like", "empty_strided"}


class OpCounter(TorchDispatchMode):
    """Counts the operations dispatched inside it, per phase (``counter.phase = name``)."""

    def __init__(self):
        super().__init__()
        self.phase, self.counts = "", collections.defaultdict(collections.Counter)
        self.counts[SYNCS] = collections.Counter()      # reported even when there is none

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in METADATA_OPS:
            self.counts[self.phase][name] += 1
        if name == "_local_scalar_dense":
            self.counts[SYNCS][name] += 1
        return func(*args, **(kwargs or {}))


def one_step(method_name: str, device: torch.device, batch_size: int) -> dict:
    """Operation counts per phase of the second training step (the first one builds optimizer state)."""
    counts = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    method = methods.get(method_name)
    loss_fn, views = method.build_loss(counts, CIFAR_RECIPE["epochs"]).to(device), method.views
    model = ResNet32(10, projection_dim=CIFAR_RECIPE["projection_dim"] if views > 1 else None).to(device)
    # foreach=True: the multi-tensor SGD that torch picks by default on CUDA (a few ops for all parameters)
    opt = torch.optim.SGD(model.parameters(), lr=CIFAR_RECIPE["lr"], momentum=0.9,
                          weight_decay=CIFAR_RECIPE["weight_decay"], foreach=True)
    x = torch.rand(1024, 32, 32, 3, device=device) * 255
    y = torch.as_tensor(np.repeat(np.arange(10), 103)[:1024], device=device)
    counter = OpCounter()
    for step in range(2):
        with counter if step == 1 else torch.no_grad():
            counter.phase = "1 gather the batch"
            idx = torch.randperm(len(x), device=device)[:batch_size]
            xb, yb = x[idx], y[idx]
            counter.phase = "2 augment"
            inputs = torch.cat([crop_flip(xb) for _ in range(views)]) if views > 1 else crop_flip(xb)
        with counter if step == 1 else torch.enable_grad():
            counter.phase = "3 model forward (compiled: 1 graph)"
            logits, emb = model(inputs)
            if views > 1:
                logits, emb = (t.view(views, len(yb), -1).transpose(0, 1) for t in (logits, emb))
            # the loss sees detached copies, so that its backward is counted apart from the model's,
            # as compilation splits them (the model's backward is a graph, the loss's is not)
            logits_in, emb_in = (t.detach().float().requires_grad_() for t in (logits, emb))
            counter.phase = "4 loss forward"
            with trusted_batches():  # as in the training loops: no value checks per step
                loss = compute_loss(loss_fn, logits_in, emb_in, yb)
            counter.phase = "5 loss backward"
            opt.zero_grad(set_to_none=True)
            loss.backward()
            counter.phase = "6 model backward (compiled: 1 graph)"
            used = [(out, leaf.grad) for out, leaf in ((logits, logits_in), (emb, emb_in)) if leaf.grad is not None]
            torch.autograd.backward([out for out, _ in used], [grad for _, grad in used])
            counter.phase = "7 optimizer step"
            opt.step()
            counter.phase = "8 bookkeeping"
            _ = loss.detach() * len(yb)
            _ = logits.detach().reshape(len(yb), -1, logits.shape[-1])[:, 0].argmax(1)
    return {phase: sum(c.values()) for phase, c in sorted(counter.counts.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=CIFAR_RECIPE["batch_size"])
    args = p.parse_args()
    device = torch.device(args.device)
    table = {name: one_step(name, device, args.batch_size) for name in ("la", "elm")}
    phases = sorted({ph for t in table.values() for ph in t})
    print(f"tensor operations per training step (ResNet-32, batch {args.batch_size}, {device}, "
          f"torch {torch.__version__})")
    print(f"{'phase':38s} {'LA':>6s} {'ELM':>6s}")
    for ph in phases:
        print(f"{ph:38s} {table['la'].get(ph, 0):6d} {table['elm'].get(ph, 0):6d}")
    eager = {name: sum(n for ph, n in t.items() if "compiled" not in ph and ph != SYNCS) for name, t in table.items()}
    print(f"{'eager under compile (all but 3, 6)':38s} {eager['la']:6d} {eager['elm']:6d}")


if __name__ == "__main__":
    main()
