"""Compute the workshop dashboard's sweeps (elm_lite.workshop.sweeps) and ship them as
elm_lite/measured/workshop_sweeps.npz (about 10 s on 2 CPU cores).

    python tools/make_workshop_data.py [--out PATH]
"""
import argparse
import pathlib
import time

import numpy as np

from elm_lite.workshop import sweeps

ROOT = pathlib.Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default=str(ROOT / "elm_lite" / "measured" / "workshop_sweeps.npz"))
args = parser.parse_args()
start = time.perf_counter()
arrays = sweeps()
np.savez_compressed(args.out, **arrays)
size = pathlib.Path(args.out).stat().st_size / 1024
print(f"wrote {args.out} ({size:.0f} KiB) in {time.perf_counter() - start:.1f} s")
