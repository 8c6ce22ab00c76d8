"""Compute the workshop dashboard's sweeps (elm_lite.workshop.sweeps) and ship them as
elm_lite/measured/workshop_sweeps.npz (about 10 s on 2 CPU cores).

    python tools/make_workshop_data.py [--out PATH] [--real-only]

--real-only refreshes just panel 5's arrays (elm_lite.workshop.real_panel: read from the shipped result
files, nothing trained, about a second) in the existing file: run it after a shipped CIFAR-10-LT or rung
file (elm_lite/measured/) changes.
"""
import argparse
import pathlib
import time

import numpy as np

from elm_lite.workshop import real_panel, sweeps

ROOT = pathlib.Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default=str(ROOT / "elm_lite" / "measured" / "workshop_sweeps.npz"))
parser.add_argument("--real-only", action="store_true",
                    help="refresh only panel 5's arrays (read from the shipped files) in the existing --out file")
args = parser.parse_args()
start = time.perf_counter()
if args.real_only:
    with np.load(args.out) as shipped:
        trained = {k: shipped[k] for k in shipped.files if not k.startswith("real_")}
    arrays = {**trained, **real_panel()}
else:
    arrays = sweeps()
np.savez_compressed(args.out, **arrays)
size = pathlib.Path(args.out).stat().st_size / 1024
print(f"wrote {args.out} ({size:.0f} KiB) in {time.perf_counter() - start:.1f} s")
