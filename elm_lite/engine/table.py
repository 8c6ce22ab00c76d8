"""A whole comparison table -- methods x seeds at full scale -- in one call, the runs trained
together in groups (:func:`elm_lite.engine.many.fit_many`) or, with ``separate=True``, each alone
(:func:`elm_lite.engine.fullscale.train_cifar`, the reference path).

    OUT/<method>-s<seed>/results.json   every run, the schema of ``train`` (history included)
    OUT/groups/<name>.pt                a group's checkpoint (atomic; an interrupted table resumes)
    OUT/table.json                      every run's summary and the mean ± sample std per method

A run whose ``results.json`` is there and matches its identity (seed and
:func:`~elm_lite.engine.fullscale.run_identity`, the identity ``train`` checkpoints carry: method constants,
data seed and content hash, recipe) is never trained again; one that does not match, or a damaged
file, is refused with what differs and the way out. ``overwrite`` clears the old table first
(:func:`clear_table`). Each run folder is locked (:func:`~elm_lite.engine.runfiles.run_lock`) for the whole
call: two tables with other methods or seeds may share ``OUT`` (``table.json`` then holds both tables' runs,
each read back from its ``results.json``), two with a run in common may not.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import torch

from .. import methods
from ..interfaces import uses_embedding
from ..methods import Method
from ..recipes import CHECKPOINT_EVERY
from ..results import check_run_results
from ..train import evaluate_features, set_seed
from .augment import view_augmentation
from .checkpoints import load_checkpoint
from .cifar import ImageData
from .fullscale import (
    build_image_model,
    check_recipe,
    hardware,
    lr_schedule,
    resolve_device,
    run_identity,
    run_results,
    save_run,
    summarize_runs,
    train_cifar,
)
from .many import fit_many
from .runfiles import RunFolderLocked, read_json, run_lock, save_atomic


def run_folder(out_dir, method: Method, seed: int) -> Path:
    return Path(out_dir) / f"{method.name}-s{seed}"


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"recipe": {"lr": 0.1}}`` -> ``{"recipe.lr": 0.1}`` (one entry per field, for messages)."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _finished(folder: Path, identity: dict) -> dict | None:
    """The run's results if its folder holds a finished run of exactly this ``identity`` (seed and
    :func:`~elm_lite.engine.fullscale.run_identity`: method constants, data seed and content hash, recipe);
    ``None`` if there is none. A run of another setting or a damaged file is refused, named."""
    path = folder / "results.json"
    if not path.exists():
        return None
    fix = "delete it to train that run again, or start the table over with overwrite=True (--overwrite)."
    results = check_run_results(read_json(path, fix), str(path))
    saved = _flat({"seed": results["seed"], **results.get("identity", {})})   # a field it lacks differs too
    now = _flat(json.loads(json.dumps(identity)))
    differs = [f"{k} (finished run {saved.get(k, '(absent)')!r}, this table {now.get(k, '(absent)')!r})"
               for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if differs:
        raise ValueError(f"{path} holds a finished run of another setting; it differs in {'; '.join(differs)}. "
                         "Use another --out, or --overwrite to clear the old table and train again.")
    return results


def clear_table(out: Path, runs: list[tuple[Method, int]]) -> None:
    """Remove every file of an old table in ``out`` that could pass for this one's: ``table.json``,
    each run's results, embeddings and checkpoint, and every group checkpoint in ``out/groups``
    that trained one of these runs (a damaged one too). Another process's runs in the same folder
    (other methods or seeds, their folders locked) are left alone."""
    names = {f"{m.name}-s{s}" for m, s in runs}
    (out / "table.json").unlink(missing_ok=True)
    for name in names:
        for old in ("results.json", "embeddings.npz", "checkpoint.pt"):
            (out / name / old).unlink(missing_ok=True)
    for checkpoint in sorted((out / "groups").glob("*.pt")):
        try:
            trained = set(load_checkpoint(checkpoint)["fingerprint"].get("runs", []))
        except (ValueError, KeyError, AttributeError):
            trained = names
        if trained & names:
            checkpoint.unlink()


def auto_group_size(device: torch.device, views: int) -> int:
    """How many runs to train together: 16 on a GPU with room for them (about 0.6 GB per model and
    view with ResNet-32 at batch 128 in bf16, a generous bound), fewer on a small one; 4 on a CPU,
    whose cores a group already keeps busy."""
    if device.type != "cuda":
        return 4
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(16, free // (views * 600 * 2**20))))


def _groups(pending: list[tuple[Method, int]], group_size: int | None, device: torch.device) -> list[list]:
    """Runs that can share a network (same head, projection, views and sampling), in chunks of the group size."""
    by_shape: dict[tuple, list] = {}
    for method, seed in pending:
        key = (method.views, method.cosine, uses_embedding(method.loss), method.sampling,
               json.dumps(dict(method.recipe), sort_keys=True))
        by_shape.setdefault(key, []).append((method, seed))
    chunks = []
    for runs in by_shape.values():
        size = group_size or auto_group_size(device, runs[0][0].views)
        chunks += [runs[i:i + size] for i in range(0, len(runs), size)]
    return chunks


def _train_group(data: ImageData, runs: list, recipe: dict, out_dir: Path, dev: torch.device, compile: bool,
                 bf16: bool, checkpoint_every: int, progress: bool) -> list[dict]:
    """Train one group together; write and return each run's results."""
    models, run_losses = [], []
    for method, seed in runs:
        set_seed(seed)
        models.append(build_image_model(method, data.n_classes, recipe, dev))
        run_losses.append(method.build_loss(data.counts, recipe["epochs"]))
    names = [f"{m.name}-s{s}" for m, s in runs]
    checkpoint = out_dir / "groups" / (hashlib.sha256(",".join(names).encode()).hexdigest()[:12] + ".pt")
    identity = {"runs": names, "identities": [run_identity(data, m, recipe) for m, _ in runs]}
    start = time.perf_counter()
    histories = fit_many(models, torch.as_tensor(data.x_train, device=dev), torch.as_tensor(data.y_train, device=dev),
                         run_losses, [s for _, s in runs], epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                         lr=recipe["lr"], weight_decay=recipe["weight_decay"], optimizer="sgd",
                         lr_schedule=partial(lr_schedule, recipe), drop_last=True, n_views=runs[0][0].views,
                         augment=view_augmentation(recipe["view_augment"], runs[0][0].views), bf16=bf16,
                         compile=compile, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, resume=True, identity=identity, progress=progress,
                         sampling=runs[0][0].sampling)
    seconds = time.perf_counter() - start
    out = []
    for (method, seed), net, history in zip(runs, models, histories):
        method.finish(net, data.x_train, data.y_train, seed)
        logits, feats, projected = evaluate_features(net, data.x_test, dev)
        results = run_results(data, method, seed, recipe, logits, feats, projected, history,
                              setup={"total_seconds": seconds, "hardware": hardware(dev), "compile": compile,
                                     "bf16": bf16, "trained_together": names})
        folder = run_folder(out_dir, method, seed)
        folder.mkdir(parents=True, exist_ok=True)
        save_run(folder, data, results, feats)
        out.append(results)
    checkpoint.unlink(missing_ok=True)  # the runs' results now stand for the group
    return out


def _train_alone(data: ImageData, method: Method, seed: int, folder: Path, **settings) -> dict:
    """One run of a ``separate`` table in its folder: an interrupted one continues from its checkpoint."""
    interrupted = (folder / "checkpoint.pt").exists()
    return train_cifar(data, method, out_dir=folder, seed=seed, resume=interrupted, overwrite=not interrupted,
                       **settings)


def train_table(data: ImageData, method_names, seeds, out_dir, *, device: str = "auto", compile: bool = False,
                bf16: bool | None = None, group_size: int | None = None, separate: bool = False,
                overwrite: bool = False, checkpoint_every: int = CHECKPOINT_EVERY, progress: bool = True,
                **recipe) -> dict:
    """Train every (method, seed) of the table on ``data`` under :data:`~elm_lite.recipes.CIFAR_RECIPE`
    (entries overridable as keywords), skipping finished runs of the same identity (``overwrite``:
    clear the old table and train every run); methods and seeds are named once each. Write
    ``OUT/table.json`` (strict JSON, ``null`` for nan) and return it:
    ``{"runs": [results], "table": text, "wall_seconds", "hardware", "separate"}``."""
    recipe = check_recipe(recipe)
    chosen = [methods.get(n) for n in method_names]
    seeds = list(seeds)
    if not chosen or not seeds:
        raise ValueError(f"a table needs at least one method and one seed; got {list(method_names)} and {seeds}.")
    for what, values in (("methods", [m.name for m in chosen]), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise ValueError(f"{what} repeat in {values}; each run of a table is one method and one seed, "
                             "name each once.")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be None (fit the device) or an integer >= 1, got {group_size!r}.")
    dev = resolve_device(device)
    bf16 = dev.type == "cuda" if bf16 is None else bf16
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    out = Path(out_dir)
    every = [(method, seed) for method in chosen for seed in seeds]
    with ExitStack() as locks:  # every run folder of the table, before anything is written
        for method, seed in every:
            locks.enter_context(run_lock(run_folder(out, method, seed)))
        start = time.perf_counter()
        listed = _listed_runs(out)   # before clear_table removes table.json: other tables' runs stay listed
        if overwrite:
            clear_table(out, every)
        done, pending = {}, []
        for method, seed in every:
            finished = _finished(run_folder(out, method, seed), {"seed": seed, **run_identity(data, method, recipe)})
            if finished is not None:
                done[(method.name, seed)] = finished
            else:
                pending.append((method, seed))
        if separate:
            for method, seed in pending:
                done[(method.name, seed)] = _train_alone(data, method, seed, run_folder(out, method, seed),
                                                         device=device, compile=compile, bf16=bf16,
                                                         checkpoint_every=checkpoint_every, progress=progress, **recipe)
        else:
            for runs in _groups(pending, group_size, dev):
                for (method, seed), results in zip(runs, _train_group(data, runs, recipe, out, dev, compile, bf16,
                                                                      checkpoint_every, progress)):
                    done[(method.name, seed)] = results
        runs = [done[(m.name, s)] for m, s in every]
        with _table_file_lock(out):   # another table sharing OUT: its runs stay in table.json
            others = _other_tables_runs(out, listed + _listed_runs(out), {run_folder(out, m, s).name for m, s in every})
            table = {"table": summarize_runs(runs + others), "wall_seconds": time.perf_counter() - start,
                     "hardware": hardware(dev), "separate": separate,
                     "trained_now": [f"{m.name}-s{s}" for m, s in pending],
                     "from_other_tables": [f"{r['method']}-s{r['seed']}" for r in others],
                     "runs": [{k: r[k] for k in ("method", "seed", "balanced_accuracy", "shot_accuracy", "spread",
                                                 "margin", "total_seconds") if k in r} for r in runs + others]}
            save_atomic(table, out / "table.json")
    return table


def _listed_runs(out: Path) -> list[str]:
    """The run folder names that ``out/table.json`` lists (none if it is missing or damaged: it is rewritten)."""
    try:
        return [f"{r['method']}-s{r['seed']}" for r in json.loads((out / "table.json").read_text()).get("runs", [])]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
        return []


def _other_tables_runs(out: Path, listed: list[str], mine: set[str]) -> list[dict]:
    """The finished runs of ``listed`` (names from ``table.json``) besides this table's (``mine``): a table
    with other methods or seeds that shares ``out`` wrote them. Each is read back from its own
    ``results.json`` (a run whose file is gone is left out: the table says only what is on disk)."""
    found = []
    for name in dict.fromkeys(n for n in listed if n not in mine):
        results = out / name / "results.json"
        if results.exists():
            found.append(check_run_results(read_json(results, "delete that run's folder, or start the table "
                                                              "over with --overwrite."), str(results)))
    return found


@contextmanager
def _table_file_lock(out: Path, wait_s: float = 60.0):
    """``out/table.json`` read, merged and written by one process at a time (``out/table.lock``)."""
    lock, deadline = out / "table.lock", time.monotonic() + wait_s
    out.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise RunFolderLocked(f"{lock} has been held for more than {wait_s:g} s by another table writing "
                                      f"{out}/table.json; if no table runs in {out}, delete {lock} and run "
                                      "again.") from None
            time.sleep(0.2)
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
