"""Data-parallel training (what torchrun runs) with 2 CPU processes and the gloo backend matches one
process on the same global batch: the embedding term sees the global batch through gather_batch."""
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

import elm_lite as el
from elm_lite import losses
from elm_lite.engine import cifar
from elm_lite.engine.checkpoints import RunHooks
from elm_lite.engine.loop import fit_at_scale
from elm_lite.recipes import ELM_RECOMMENDED, EMBEDDING_TOY

pytestmark = pytest.mark.slow   # two processes per test: make check leaves these out

TOLERANCE = 1e-4  # the gathered batch is a permutation of the single-process one: sums reorder


def _train(ddp: bool):
    data = el.make_toy(**{**EMBEDDING_TOY, "n_max": 64, "rho": 8})
    el.set_seed(0)
    model = el.MLP(16, data.n_classes, hidden=32, embed_dim=8, normalize=True)
    if ddp:
        model = DistributedDataParallel(model)
    loss = losses.ELMLoss(data.counts, **{**ELM_RECOMMENDED, "anchor_average": "all"})
    # SGD, not Adam: Adam's update ignores a constant factor, so a gather whose backward forgot to sum
    # the processes' gradients (the gradient halved) would pass unnoticed
    history = fit_at_scale(model, data.x_train, data.y_train, loss, epochs=3, batch_size=32, lr=0.1, optimizer="sgd",
                           progress=False, drop_last=True, hooks=RunHooks() if ddp else None)  # share and gather
    core = getattr(model, "module", model)
    return torch.cat([p.detach().flatten() for p in core.parameters()]).numpy(), history.loss


def _worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    params, loss = _train(ddp=True)
    if rank == 0:
        np.savez(out, params=params, loss=loss)
    dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.npz"
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    params, loss = _train(ddp=False)
    got = np.load(out)
    np.testing.assert_allclose(got["loss"], loss, rtol=TOLERANCE)
    np.testing.assert_allclose(got["params"], params, rtol=TOLERANCE, atol=TOLERANCE)


def test_torchrun_cli_on_two_cpu_processes(tmp_path):
    """`torchrun --nproc_per_node=2 -m elm_lite train ...` runs data-parallel and writes one result."""
    import json
    import subprocess
    import sys
    np.savez(tmp_path / "fake.npz", **cifar.fake_cifar(10, n_per_class=40, n_test_per_class=5))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "-m", "elm_lite", "train", "--npz", str(tmp_path / "fake.npz"), "--rho", "10", "--method", "elm",
         "--model", "small_cnn", "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["method"] == "elm" and 0 <= results["balanced_accuracy"] <= 1
