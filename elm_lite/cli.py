"""Command line: full-scale runs and benchmarks.

    python -m elm_lite train --dataset cifar10-lt --rho 100 --method elm --epochs 200 --out runs/elm
    python -m elm_lite train ... --resume          # continue an interrupted run from its checkpoint
    python -m elm_lite train ... --overwrite       # start over in a folder that holds a run
    python -m elm_lite table --methods ce,la,ldam-drw,supcon-la,elm --seeds 0,1,2 --out runs/table
    python -m elm_lite bench --npz ../shared/data/cifar10_from_jpeg.npz   # the GPU speed ladder
    python -m elm_lite compare --data train.csv --label-column species --test test.csv --out runs/mine

Every entry of the recipe (elm_lite.recipes.CIFAR_RECIPE) has its own flag (--weight-decay,
--warmup-epochs, --decay-at 0.8,0.9, ...). A bad option or file ends in one line and exit code 2.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings

from .methods import COMPARISON, FULLSCALE_METHODS
from .recipes import CHECKPOINT_EVERY, CIFAR_RECIPE

DATASETS = {"cifar10-lt": "cifar10", "cifar100-lt": "cifar100"}


def _number(kind, low: float, inclusive: bool = True, high: float = float("inf")):
    """An argparse type: ``kind`` (int or float) in ``[low, high]`` (``(low, high]`` if not inclusive)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value != value or value > high or value < low or (not inclusive and value == low):
            bound = f"{'>=' if inclusive else '>'} {low:g}" + (f" and <= {high}" if high < float("inf") else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


def _floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.8,0.9, got {text!r}") from None


def _names(text: str) -> tuple:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FULLSCALE_METHODS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated methods from {', '.join(FULLSCALE_METHODS)}, "
                                         f"got {text!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"methods repeat in {text!r}; each run needs its own method and seed")
    return names


def _seeds(text: str) -> tuple:
    try:
        seeds = tuple(SEED(v) for v in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds >= 0 such as 0,1,2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds repeat in {text!r}; each run needs its own seed")
    return seeds


def _optional_int(text: str):
    return None if text.lower() == "none" else _number(int, 1)(text)


SEED = _number(int, 0, high=2**32 - 1)
# one flag per recipe entry: (type, help)
RECIPE_FLAGS = {
    "model": (str, "resnet32 (the standard recipe) or small_cnn (CPU-sized)"),
    "epochs": (_number(int, 1), "passes over the training set"),
    "batch_size": (_number(int, 1), "images per step (the global batch under torchrun)"),
    "lr": (_number(float, 0, inclusive=False), "SGD learning rate (momentum 0.9)"),
    "weight_decay": (_number(float, 0), "L2 penalty"),
    "warmup_epochs": (_number(int, 0), "linear learning-rate warm-up"),
    "decay_at": (_floats, "fractions of the run where lr drops, e.g. 0.8,0.9"),
    "decay_to": (_floats, "multiples of lr after each drop, e.g. 0.01,0.0001"),
    "projection_dim": (_optional_int, "projection head size for the embedding term"),
    "view_augment": (str, "augmentation of two-view runs: crop_flip, or strong (SimCLR-style)"),
}


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10-lt")
    p.add_argument("--rho", type=_number(float, 1), default=100.0, help="imbalance ratio (>= 1)")
    p.add_argument("--npz", help="a .npz with x_train, y_train, x_test, y_test instead of the archive")
    p.add_argument("--root", default="data/cifar", help="where the extracted CIFAR archive lives")
    p.add_argument("--download", action="store_true",
                   help="download the official archive (MD5-checked) into --root if it is missing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-seed", type=SEED, default=0, help="the long-tailed subset (0 = the standard one)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m elm_lite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one CIFAR-LT run with the standard recipe")
    _data_args(train)
    train.add_argument("--method", choices=FULLSCALE_METHODS, default="la", help="the method (elm_lite.methods)")
    train.add_argument("--seed", type=SEED, default=0, help="initialisation and batch order")
    train.add_argument("--out", required=True, help="folder for checkpoint.pt, results.json, embeddings.npz")
    train.add_argument("--checkpoint-every", type=_number(int, 1), default=CHECKPOINT_EVERY,
                       help="epochs between checkpoints")
    train.add_argument("--resume", action="store_true", help="continue the same run from OUT/checkpoint.pt")
    train.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run")
    train.add_argument("--compile", action="store_true", help="torch.compile(mode='reduce-overhead')")
    train.add_argument("--no-bf16", action="store_true", help="train in float32 on a GPU too")
    train.add_argument("--ddp", action="store_true",
                       help="train data-parallel in the process group that WORLD_SIZE, RANK, MASTER_ADDR and "
                            "MASTER_PORT describe (torchrun does this by itself; a leftover WORLD_SIZE does not)")
    table = sub.add_parser("table", help="methods x seeds, trained together in groups (or --separate)")
    _data_args(table)
    table.add_argument("--methods", type=_names, default=COMPARISON, help="comma-separated methods")
    table.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated seeds")
    table.add_argument("--out", required=True, help="folder for <method>-s<seed>/results.json and table.json")
    table.add_argument("--group-size", type=_number(int, 1), default=None,
                       help="runs trained together (default: as many as the device holds, up to 16)")
    table.add_argument("--separate", action="store_true", help="train each run alone (the reference path)")
    table.add_argument("--overwrite", action="store_true",
                       help="clear the old table in OUT (its runs' results, group checkpoints, table.json) first")
    table.add_argument("--checkpoint-every", type=_number(int, 1), default=CHECKPOINT_EVERY,
                       help="epochs between checkpoints")
    table.add_argument("--compile", action="store_true", help="torch.compile(mode='reduce-overhead')")
    table.add_argument("--no-bf16", action="store_true", help="train in float32 on a GPU too")
    for command in (train, table):
        for key, (kind, text) in RECIPE_FLAGS.items():
            command.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, default=CIFAR_RECIPE[key],
                                 help=f"{text} (default {CIFAR_RECIPE[key]})")
    bench = sub.add_parser("bench", help="speed ladder: DataLoader fp32 -> GPU-resident -> bf16 -> compile -> ELM")
    _data_args(bench)
    bench.add_argument("--epochs", type=_number(int, 1), default=3, help="timed epochs per rung (after one warm-up)")
    bench.add_argument("--out", help="also write the ladder as OUT/ladder.json")
    bench.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rung (quick)")
    from .procedure import add_compare_parser
    add_compare_parser(sub)   # elm-lite compare: the capstone's procedure on your own data
    return p


def _check_before_work(args) -> None:
    """What can be refused before any data is read or any model trained."""
    from .engine.fullscale import check_recipe, resolve_device
    resolve_device(args.device)
    if args.command in ("train", "table"):
        if not args.out.strip():
            raise ValueError("--out is empty; name a folder for the run, e.g. --out runs/la-s0.")
        if getattr(args, "resume", False) and args.overwrite:
            raise ValueError("--resume continues a run and --overwrite starts it over: pass one of them.")
        check_recipe({k: getattr(args, k) for k in CIFAR_RECIPE})


def _run(args) -> None:
    if args.command == "compare":
        from .procedure import run_from_args
        return run_from_args(args)
    from .engine.cifar import load_cifar_lt
    data = load_cifar_lt(DATASETS[args.dataset], rho=args.rho, seed=args.data_seed, root=args.root,
                         download=args.download, npz=args.npz)
    if args.command == "train":
        from .engine.fullscale import train_cifar
        results = train_cifar(data, args.method, out_dir=args.out, seed=args.seed, device=args.device,
                              compile=args.compile, bf16=False if args.no_bf16 else None,
                              checkpoint_every=args.checkpoint_every, resume=args.resume, overwrite=args.overwrite,
                              ddp=True if args.ddp else None,
                              **{k: getattr(args, k) for k in CIFAR_RECIPE})
        shots = ", ".join(f"{k} {v:.1%}" for k, v in results["shot_accuracy"].items() if v == v)
        print(f"{args.dataset} rho={args.rho:g} {args.method}: balanced accuracy {results['balanced_accuracy']:.2%} "
              f"({shots}); {results['seconds_per_epoch']:.2f} s/epoch on {results['hardware']}; wrote {args.out}/")
    elif args.command == "table":
        from .engine.table import train_table
        table = train_table(data, args.methods, args.seeds, args.out, device=args.device, compile=args.compile,
                            bf16=False if args.no_bf16 else None, group_size=args.group_size, separate=args.separate,
                            overwrite=args.overwrite, checkpoint_every=args.checkpoint_every,
                            **{k: getattr(args, k) for k in CIFAR_RECIPE})
        print(table["table"])
        others = f", {len(table['from_other_tables'])} of another table in OUT" if table["from_other_tables"] else ""
        print(f"{len(table['runs'])} runs ({len(table['trained_now'])} trained now{others}) in "
              f"{table['wall_seconds']:.0f} s on {table['hardware']}; wrote {args.out}/table.json")
    else:
        from pathlib import Path

        from .engine.ladder import ladder_table, speed_ladder
        from .engine.runfiles import save_atomic
        ladder = speed_ladder(data, device=args.device, epochs=args.epochs, compile=not args.no_compile)
        print(ladder_table(ladder))
        if args.out:
            save_atomic(ladder, Path(args.out) / "ladder.json")


def _stop(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Parse, check, run. Anticipated errors (bad options, missing or damaged files, a run that
    diverged, a run folder in use) end in one ``error:`` line and exit code 2; anything else keeps
    its traceback. ``kill PID`` (SIGTERM) stops a run as an error does: its run folders' locks are
    given back (only ``kill -9`` leaves a stale lock)."""
    args = parser().parse_args(argv)
    warnings.filterwarnings("default", category=UserWarning, module="elm_lite")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:
        _checked_run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _checked_run(args) -> None:
    from .engine.runfiles import RunFolderLocked
    try:
        _check_before_work(args)
        _run(args)
    except (ValueError, FileNotFoundError, FloatingPointError, PermissionError, IsADirectoryError,
            RunFolderLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk or a read-only folder: name the path
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(2)
