"""Real rung (a): digits-lt -- scikit-learn's bundled handwritten digits made long-tailed
(elm_lite.owndata.digits_lt: rho 40, training counts 140 ... 3, a balanced test set of 30 per class) --
every capstone method x seeds x 5 carved validation splits (elm_lite.procedure, an MLP). Prints the table
and the time it took with the machine named, and writes it as JSON (the runtime notebooks 07 and 08 quote).

    python benchmarks/digits_lt.py --out elm_lite/measured/digits_lt.json
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    from run_benchmarks import machine

    from elm_lite import capstone, owndata, procedure
    from elm_lite.engine.runfiles import save_atomic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(capstone.CAPSTONE_METHODS))
    p.add_argument("--out", help="write the table as JSON here")
    args = p.parse_args()
    data = owndata.digits_lt()
    start = time.perf_counter()
    table = procedure.compare_methods(data, args.methods, seeds=args.seeds, progress=False)
    table.update(machine=machine(), wall_seconds=time.perf_counter() - start)
    print(procedure.text_table(table))
    print(f"{len(table['rows'])} runs in {table['wall_seconds']:.0f} s on {table['machine']}")
    if args.out:
        save_atomic(table, pathlib.Path(args.out))


if __name__ == "__main__":
    main()
