"""CPU-sized real-image comparison on CIFAR-10-LT (rho = 100): CE, LA, LDAM-DRW, SupCon + LA and
ELM under one recipe (a small CNN, a few epochs), mean ± sample std over seeds. Prints the table with the
machine named and writes it as JSON (the file notebook 05 shows).

    python benchmarks/cifar_cpu_comparison.py --npz ../shared/data/cifar10_from_jpeg.npz \\
        --seeds 0 1 --epochs 10 --out elm_lite/measured/cifar10_lt_cpu.json

Without --npz the loader looks for the extracted archive under data/cifar (see load_cifar_lt);
if no CIFAR-10 is found the script says so and exits without writing anything.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "studies"))     # the margin on the negatives is one of the margin study's forms


def elm_variants() -> dict:
    """What we tried when ELM did not beat LA: weaker embedding term, warmer temperature, contrasting
    the backbone features themselves (no projection head), the margin on the negatives."""
    from margin_form_losses import study_method

    from elm_lite import methods
    elm = methods.get("elm")
    return {v.label: v for v in (elm.variant("ELM, lambda 0.25", lam=0.25),
                                 elm.variant("ELM, temperature 0.5", temperature=0.5),
                                 elm.variant("ELM, no projection head", recipe={"projection_dim": None}),
                                 study_method(elm).variant("ELM, margin on negatives", placement="negative"))}


def main() -> None:
    from run_benchmarks import machine

    from elm_lite import methods
    from elm_lite.engine.cifar import load_cifar_lt
    from elm_lite.engine.runfiles import save_atomic
    from elm_lite.experiments import compare, summarize, train_image_model
    from elm_lite.recipes import IMAGE_RECIPE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npz", help="a .npz with x_train, y_train, x_test, y_test (CIFAR-10)")
    p.add_argument("--root", default=str(ROOT / "data" / "cifar"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=IMAGE_RECIPE["epochs"])
    p.add_argument("--methods", nargs="+", help="a subset of the method names")
    p.add_argument("--variants", action="store_true", help="run the ELM variants instead of the five methods")
    p.add_argument("--out", help="write the rows and the table as JSON here")
    args = p.parse_args()
    try:
        data = load_cifar_lt("cifar10", rho=100, seed=0, root=args.root, npz=args.npz)
    except (FileNotFoundError, ValueError) as e:
        print(f"skipped: {e}")
        return
    chosen = elm_variants() if args.variants else methods.by_label(methods.COMPARISON)
    if args.methods:
        chosen = {k: v for k, v in chosen.items() if k in args.methods}
    recipe = {**IMAGE_RECIPE, "epochs": args.epochs}
    # progress survives an interruption: finished rows go to OUT.partial.json and are not redone
    partial = pathlib.Path(args.out).with_suffix(".partial.json") if args.out else None
    done = json.loads(partial.read_text())["rows"] if partial and partial.exists() else []
    if done:
        print(f"resuming: {len(done)} finished runs read from {partial}")

    def save(rows):
        if partial:
            save_atomic({"recipe": recipe, "rows": rows}, partial)
    start = time.perf_counter()
    rows = compare(chosen, data, seeds=tuple(args.seeds), progress=True, train=train_image_model, done=done,
                   on_row=save, epochs=args.epochs)
    seconds = time.perf_counter() - start
    # every row records the full constants of what it trained (form, placement, averaging, ...)
    rows = [{**r, "method_identity": chosen[r["method"]].identity()} for r in rows]
    # CIFAR-10-LT has no class under 20 images: its tail is the "medium" split (83 and 50 images)
    columns = ("balanced_accuracy", "acc_many", "acc_medium", "spread_medium", "spread_many")
    table = summarize(rows, columns)
    print(f"machine: {machine()}\ndata: {data.source}, CIFAR-10-LT rho=100, {len(data.y_train)} training images\n"
          f"recipe: {recipe}\n{table}\n{seconds:.0f} s in all")
    if args.out:
        out = pathlib.Path(args.out)
        save_atomic({"machine": machine(), "data": data.source, "recipe": recipe, "seeds": args.seeds,
                           "seconds": seconds, "rows": rows, "table": table, "python": platform.python_version()}, out)
        if partial and partial.exists():
            partial.unlink()


if __name__ == "__main__":
    main()
