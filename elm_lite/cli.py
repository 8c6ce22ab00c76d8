"""Command line: full-scale runs and benchmarks.

    python -m elm_lite train --dataset cifar10-lt --rho 100 --loss elm --epochs 200 --out runs/elm
    python -m elm_lite train ... --resume          # continue an interrupted run from its checkpoint
    python -m elm_lite bench --npz ../shared/data/cifar10_from_jpeg.npz   # the GPU speed ladder
"""
from __future__ import annotations

import argparse
import sys

DATASETS = {"cifar10-lt": "cifar10", "cifar100-lt": "cifar100"}


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10-lt")
    p.add_argument("--rho", type=float, default=100.0, help="imbalance ratio (>= 1)")
    p.add_argument("--npz", help="a .npz with x_train, y_train, x_test, y_test instead of the archive")
    p.add_argument("--root", default="data/cifar", help="where the extracted CIFAR archive lives")
    p.add_argument("--download", action="store_true", help="download with torchvision if missing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _load(args):
    from .data import load_cifar_lt
    return load_cifar_lt(DATASETS[args.dataset], rho=args.rho, seed=args.data_seed, root=args.root,
                         download=args.download, npz=args.npz)


def main(argv: list[str] | None = None) -> None:
    from .methods import FULLSCALE_METHODS
    from .recipes import CIFAR_RECIPE
    parser = argparse.ArgumentParser(prog="python -m elm_lite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one CIFAR-LT run with the standard recipe")
    _data_args(train)
    train.add_argument("--loss", choices=FULLSCALE_METHODS, default="la")
    train.add_argument("--epochs", type=int, default=CIFAR_RECIPE["epochs"])
    train.add_argument("--model", choices=("resnet32", "small_cnn"), default=CIFAR_RECIPE["model"])
    train.add_argument("--batch-size", type=int, default=CIFAR_RECIPE["batch_size"])
    train.add_argument("--lr", type=float, default=CIFAR_RECIPE["lr"])
    train.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    train.add_argument("--data-seed", type=int, default=0, help="the long-tailed subset (0 = the standard one)")
    train.add_argument("--out", required=True, help="folder for checkpoint.pt, results.json, embeddings.npz")
    train.add_argument("--checkpoint-every", type=int, default=10)
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--compile", action="store_true", help="torch.compile(mode='reduce-overhead')")
    train.add_argument("--no-bf16", action="store_true", help="train in float32 on a GPU too")
    bench = sub.add_parser("bench", help="speed ladder: DataLoader fp32 -> GPU-resident -> bf16 -> compile -> ELM")
    _data_args(bench)
    bench.add_argument("--epochs", type=int, default=3, help="timed epochs per rung (after one warm-up)")
    bench.add_argument("--data-seed", type=int, default=0)
    bench.add_argument("--out", help="also write the ladder as OUT/ladder.json")
    bench.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rung (quick)")
    args = parser.parse_args(argv)
    try:
        data = _load(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    if args.command == "train":
        from .fullscale import train_cifar
        results = train_cifar(data, args.loss, out_dir=args.out, seed=args.seed, device=args.device,
                              compile=args.compile, bf16=False if args.no_bf16 else None,
                              checkpoint_every=args.checkpoint_every, resume=args.resume,
                              model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
        shots = ", ".join(f"{k} {v:.1%}" for k, v in results["shot_accuracy"].items() if v == v)
        print(f"{args.dataset} rho={args.rho:g} {args.loss}: balanced accuracy {results['balanced_accuracy']:.2%} "
              f"({shots}); {results['seconds_per_epoch']:.2f} s/epoch on {results['hardware']}; wrote {args.out}/")
    else:
        from pathlib import Path

        from .fullscale import ladder_table, speed_ladder, write_json_atomic
        ladder = speed_ladder(data, device=args.device, epochs=args.epochs, compile=not args.no_compile)
        print(ladder_table(ladder))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            write_json_atomic(ladder, Path(args.out) / "ladder.json")
