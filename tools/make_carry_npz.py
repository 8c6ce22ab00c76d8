"""Write the CIFAR-10-LT (rho = 100) training subset and the test set as one compressed .npz small
enough to carry to the device machine (under 64 MiB). Re-applying the long-tail construction to it
keeps every image (the counts already match), so `--npz` runs train on exactly CIFAR-10-LT.

    python tools/make_carry_npz.py [--src ../shared/data/cifar10_from_jpeg.npz] [--out .carry/cifar10_lt_rho100.npz]
"""
import argparse
import pathlib

import numpy as np

from elm_lite.engine.cifar import load_cifar_lt

ROOT = pathlib.Path(__file__).resolve().parents[1]

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "cifar10_from_jpeg.npz"))
p.add_argument("--out", default=str(ROOT / ".carry" / "cifar10_lt_rho100.npz"))
args = p.parse_args()
data = load_cifar_lt("cifar10", rho=100, npz=args.src)
out = pathlib.Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
np.savez_compressed(out, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
print(f"wrote {out}: {len(data.y_train)} training images, {out.stat().st_size / 2**20:.1f} MiB")
