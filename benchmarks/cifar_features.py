"""Real rung (b): CIFAR-10-LT (rho = 100) through frozen features learned WITHOUT labels -- random-patch
k-means (elm_lite.patchfeatures, Coates & Ng 2011), computed on the CPU -- standing in for features from a
pretrained backbone; then every capstone method x seeds x carved validation splits on those features
(elm_lite.procedure, an MLP). Prints the table with the machine named and writes it as JSON (the file
notebook 07 shows).

    python benchmarks/cifar_features.py --npz ../shared/data/cifar10_from_jpeg.npz \\
        --out elm_lite/measured/cifar10_lt_features.json

The features are cached (runs/cifar10_lt_patch_features.npz, with the settings that made them), so a rerun
-- e.g. after methods are added to the capstone's list -- only trains. Without a CIFAR-10 file the script
says so and exits without writing anything.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

FEATURES = dict(n_centroids=400, patch=6, n_patches=100_000, iterations=20, seed=0)   # 1,600 features
PCA_DIM = 256   # then their first principal components (of the training images' features; no labels)
MLP = dict(batch_size=256, epochs=20)   # 10,000 training images: a larger batch, ~780 steps a run


def features(data, cache: pathlib.Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(train features, test features, seconds)``: from ``cache`` when it holds features of the same
    settings and images, else computed (k-means on the training images' patches; no label is read)."""
    from elm_lite.engine.cifar import content_hash
    from elm_lite.patchfeatures import fit_patch_kmeans, patch_features
    key = json.dumps({**FEATURES, "images": content_hash(data.x_train, data.x_test)}, sort_keys=True)
    if cache.exists():
        with np.load(cache) as f:
            if "key" in f.files and str(f["key"]) == key:
                return f["f_train"], f["f_test"], float(f["seconds"])
    start = time.perf_counter()
    model = fit_patch_kmeans(data.x_train, **FEATURES)
    f_train, f_test = patch_features(model, data.x_train, progress=True), patch_features(model, data.x_test)
    seconds = time.perf_counter() - start
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, key=key, f_train=f_train, f_test=f_test, seconds=seconds)
    return f_train, f_test, seconds


def principal_components(f_train: np.ndarray, f_test: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Both sets projected on the first ``dim`` principal components of the standardised training features
    (fitted on the training images' features alone): a 6x smaller first layer for every run."""
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    _, vectors = np.linalg.eigh(np.cov((f_train - mean) / std, rowvar=False))
    top = vectors[:, ::-1][:, :dim]
    return tuple((((f - mean) / std) @ top).astype(np.float32) for f in (f_train, f_test))


def main() -> None:
    from run_benchmarks import machine

    from elm_lite import capstone, owndata, procedure
    from elm_lite.engine.cifar import load_cifar_lt
    from elm_lite.engine.runfiles import save_atomic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npz", help="a .npz with x_train, y_train, x_test, y_test (CIFAR-10)")
    p.add_argument("--root", default=str(ROOT / "data" / "cifar"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(capstone.CAPSTONE_METHODS))
    p.add_argument("--cache", default=str(ROOT / "runs" / "cifar10_lt_patch_features.npz"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "cifar10_lt_features"), help="procedure folder (resumable)")
    p.add_argument("--out", help="write the table as JSON here")
    args = p.parse_args()
    try:
        data = load_cifar_lt("cifar10", rho=100, seed=0, root=args.root, npz=args.npz)
    except (FileNotFoundError, ValueError) as e:
        print(f"skipped: {e}")
        return
    f_train, f_test, feature_seconds = features(data, pathlib.Path(args.cache))
    f_train, f_test = principal_components(f_train, f_test, PCA_DIM)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    own = owndata.load_dataset(f_train, np.array(names)[data.y_train], test=f_test,
                               y_test=np.array(names)[data.y_test], name="cifar10-lt-patch-features")
    start = time.perf_counter()
    table = procedure.compare_methods(own, args.methods, seeds=args.seeds, out=args.runs, resume=True, **MLP)
    table.update(machine=machine(), call_seconds=time.perf_counter() - start, feature_seconds=feature_seconds,
                 features={**FEATURES, "pca_dim": PCA_DIM, "labels_read": False,
                           "method": "random-patch k-means, triangle codes, 4-quadrant sum pooling, PCA"},
                 recipe_overrides=MLP, data_source=data.source, rho=100)
    print(procedure.text_table(table))
    print(f"features {feature_seconds:.0f} s, training {table['train_seconds']:.0f} s (the runs' own time, summed; "
          f"this call {table['call_seconds']:.0f} s) on {table['machine']}")
    if args.out:
        save_atomic(table, pathlib.Path(args.out))


if __name__ == "__main__":
    main()
