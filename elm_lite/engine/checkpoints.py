"""Checkpoints with resume and run identity, and distributed training: the collaborators that
:func:`elm_lite.engine.loop.fit_at_scale` takes as ``hooks`` (:class:`RunHooks`), and that
:func:`~elm_lite.engine.many.fit_many` uses for its groups.

A checkpoint holds model, optimizer, every random stream and the histories, with a fingerprint (the
loop's settings, :func:`~elm_lite.engine.loop.loop_settings`, plus the caller's identity: method, data,
recipe) that a resumed run must match. Under ``torchrun`` (a process group initialised and the model
wrapped in DDP) ``fit``'s ``batch_size`` is the global batch: each process trains on its share, and
logits, embeddings and labels are gathered (:func:`gather_batch`) so that the loss -- including the
contrastive term, whose negatives and positives are the *global* batch -- is the single-process loss.
Random augmentation is drawn per process; an incomplete last batch is dropped; only rank 0 writes.
"""
from __future__ import annotations

import sys
import zipfile
import zlib
from pathlib import Path

import torch
from torch import distributed as dist
from torch import nn
from torch.distributed.nn import functional as dist_nn

from ..train import History
from .loop import FitHooks, Run
from .runfiles import differences, save_atomic


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


def verify_checkpoint(path) -> None:
    """Refuse a checkpoint whose bytes changed after it was written: ``torch.save`` writes a zip whose
    every entry carries a CRC-32, which ``torch.load`` does not check (one flipped bit in a weight
    would resume silently with other numbers). Reading the entries once checks them all."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"checkpoint {path} is damaged or incomplete ({type(e).__name__}: {e}); delete it to start "
                         "afresh, or restore it from a backup.") from None
    if bad is not None:
        raise ValueError(f"checkpoint {path} is damaged: its entry {bad} fails its CRC check (the file changed after "
                         "it was written: a disk or copy error); delete it to start afresh, or restore it from a "
                         "backup.")


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :class:`RunHooks` or :func:`~elm_lite.engine.many.fit_many`, its bytes
    verified first (:func:`verify_checkpoint`); a damaged file gets a clear error."""
    verify_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is damaged or incomplete ({type(e).__name__}: {e}); delete it "
                         "to start afresh, or restore it from a backup.") from None
    if not isinstance(ckpt, dict) or not {"model", "epoch", "generators"} <= set(ckpt):
        raise ValueError(f"{path} is not a checkpoint written by elm_lite's training loops (fit_at_scale, fit_many); "
                         "start over (overwrite=True / --overwrite) or use another folder.")
    return ckpt


def _resume(checkpoint, fingerprint: dict, core: nn.Module, opt, gens) -> tuple[list, int]:
    """Load ``checkpoint`` into model, optimizer and random states; returns (history, next epoch).
    A checkpoint of a different run (any fingerprint field differs) is refused, naming the fields."""
    ckpt = load_checkpoint(checkpoint)
    differ = differences(ckpt.get("fingerprint"), fingerprint, ("checkpoint", "this run"))
    if differ:
        raise ValueError(f"checkpoint {checkpoint} was written by a different run; it differs in "
                         + "; ".join(differ) + ". Use another output folder, or start over "
                         "(overwrite / delete the checkpoint).")
    fields = sorted(History.__dataclass_fields__)
    if any(sorted(h) != fields for h in ckpt["histories"]):
        raise ValueError(f"checkpoint {checkpoint} records its history with the fields {sorted(ckpt['histories'][0])}, "
                         f"this elm_lite with {fields}: another version wrote it. Start over (overwrite / delete "
                         "the checkpoint) or use another folder.")
    try:
        core.load_state_dict(compile_neutral(ckpt["model"], core))
    except RuntimeError as e:
        first_line = str(e).splitlines()[0]
        raise ValueError(f"checkpoint {checkpoint} holds a model of another shape or version ({first_line}); "
                         "start over (overwrite / delete the checkpoint) or use another folder.") from None
    opt.load_state_dict(ckpt["optimizer"])
    for gen, state in zip(gens, ckpt["generators"]):
        gen.set_state(state)
    print(f"resume: continuing {checkpoint} after epoch {ckpt['epoch']}", file=sys.stderr)
    return [History(**h) for h in ckpt["histories"]], ckpt["epoch"] + 1


COMPILED = "_orig_mod."   # the prefix torch.compile's wrapper puts before every parameter's name


def compile_neutral(state: dict, core: nn.Module) -> dict:
    """``state`` with its keys as ``core`` names them: a checkpoint written with ``--compile`` (keys
    ``_orig_mod.*``) resumes without it, and the other way round -- the weights are the same."""
    wanted = set(core.state_dict())
    compiled_core = any(k.startswith(COMPILED) for k in wanted)
    renamed = {}
    for k, v in state.items():
        bare = k.replace(COMPILED, "")
        renamed[COMPILED + bare if compiled_core and COMPILED + bare in wanted else bare if bare in wanted else k] = v
    return renamed


def resume_or_start(resume: bool, checkpoint, fingerprint: dict, core: nn.Module, opt, gens,
                    runs: int) -> tuple[list[History], int]:
    """``runs`` fresh histories and epoch 1, or -- with ``resume`` and an existing ``checkpoint`` of
    the same run(s) -- its histories and the epoch after it (model, optimizer, generators restored)."""
    if resume and checkpoint is not None and Path(checkpoint).exists():
        return _resume(checkpoint, fingerprint, core, opt, gens)
    return [History() for _ in range(runs)], 1


def save_checkpoint(checkpoint, core: nn.Module, opt, gens, epoch: int, histories: list, fingerprint: dict) -> None:
    """Model, optimizer, every random stream (:func:`~elm_lite.train.run_generators`) and the histories of a run
    (or of K runs trained together), atomically."""
    save_atomic({"model": core.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                 "generators": [g.get_state() for g in gens], "histories": [h.as_dict() for h in histories],
                 "fingerprint": fingerprint}, checkpoint)


def check_every(every) -> int:
    """``checkpoint_every``, refused unless an integer >= 1 (epochs)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1 (epochs), got {every!r}.")
    return every


def run_fingerprint(settings: dict, identity: dict | None) -> dict:
    """What a checkpoint must match to be resumed: the loop's settings and the caller's ``identity``."""
    return {**settings, **(identity or {})}


class RunHooks(FitHooks):
    """:func:`~elm_lite.engine.loop.fit_at_scale`'s collaborators for a full-scale run: a checkpoint ``checkpoint``
    (atomically, every ``every`` epochs and at the end, rank 0 only), ``resume`` from one of the same
    run (the fingerprint: the loop's settings and ``identity``), and under ``torchrun`` each process's
    share of a batch (``batch_size`` is the global batch, divisible by the number of processes)."""

    def __init__(self, checkpoint=None, every: int = 10, resume: bool = False, identity: dict | None = None):
        self.checkpoint, self.every, self.resume, self.identity = checkpoint, check_every(every), resume, identity
        distributed = dist.is_available() and dist.is_initialized()
        self.world, self.rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        self.drop_last = self.world > 1   # equal shares in every step

    def start(self, run: Run) -> int:
        if run.settings["batch_size"] % self.world:
            raise ValueError(f"batch_size={run.settings['batch_size']} must be divisible by the number of processes "
                             f"({self.world}).")
        self.fingerprint, self.device = run_fingerprint(run.settings, self.identity), run.generators[1].device
        (run.history,), first_epoch = resume_or_start(self.resume, self.checkpoint, self.fingerprint, run.core,
                                                      run.opt, run.generators, 1)
        return first_epoch

    def end_epoch(self, run: Run, epoch: int) -> None:
        if self.checkpoint is not None and self.rank == 0 and (epoch % self.every == 0
                                                               or epoch == run.settings["epochs"]):
            save_checkpoint(self.checkpoint, run.core, run.opt, run.generators, epoch, [run.history], self.fingerprint)

    def shard(self, idx: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if self.world == 1:
            return idx
        return (idx if idx is not None else torch.arange(n, device=self.device))[self.rank::self.world]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return gather_batch(t) if self.world > 1 else t
