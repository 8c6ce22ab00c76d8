"""Gather the device check's output (benchmarks/gpu_check.py: its runs.tar.gz, or folders holding
results.json / ladder.json files) into the files notebook 06 shows:

    elm_lite/measured/cifar_lt_gpu.json             every run's results.json, and the speed ladder
    elm_lite/measured/cifar_lt_gpu_embeddings.npz   the test-feature samples of the seed-0 runs

    python tools/collect_gpu_results.py runs.tar.gz [FOLDER ...] [--out DIR]   (DIR: elm_lite/measured)
"""
import argparse
import json
import pathlib
import sys
import tarfile
import tempfile

import numpy as np

from elm_lite.engine.fullscale import summarize_runs
from elm_lite.engine.ladder import ladder_table
from elm_lite.engine.runfiles import save_atomic
from elm_lite.results import check_run_results

ROOT = pathlib.Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("sources", nargs="+", help="runs.tar.gz files or folders holding results.json files")
parser.add_argument("--out", default=str(ROOT / "elm_lite" / "measured"), help="folder for the two output files")
args = parser.parse_args()
folders = []
for arg in args.sources:
    if arg.endswith(".tar.gz"):
        folders.append(pathlib.Path(tempfile.mkdtemp()))
        with tarfile.open(arg) as tar:
            tar.extractall(folders[-1], filter="data")
    else:
        folders.append(pathlib.Path(arg))
found = [p for d in folders for p in sorted(d.rglob("results.json"))]
if not found:
    sys.exit("no results.json found under " + " ".join(args.sources))
runs = [check_run_results(json.loads(p.read_text()), str(p)) for p in found]
for r in runs:  # every shipped run names the full constants of what it trained
    r["method_identity"] = r["identity"]["method"]
ladder = next((json.loads(p.read_text()) for d in folders for p in d.rglob("ladder.json")), None)
if ladder is not None:  # the compiled rungs come from whole runs: their own first and steady epochs
    for r in sorted(runs, key=lambda r: r["method"] != "la"):
        if r["compile"] and r["seed"] == 0 and r["method"] in ("la", "elm"):
            name = "+ torch.compile (whole LA run)" if r["method"] == "la" else "ELM loss, compiled (whole run)"
            ladder["rows"].append({
                "rung": name, "first_epoch_s": r["first_epoch_seconds"],
                "steady_s_per_epoch": r["steady_seconds_per_epoch"],
                "run_s": r["first_epoch_seconds"] + r["steady_seconds_per_epoch"] * (ladder["run_epochs"] - 1),
                "measured_run": {"epochs": r["recipe"]["epochs"], "total_s": r["total_seconds"]}})
out = pathlib.Path(args.out) / "cifar_lt_gpu.json"
save_atomic({"hardware": ", ".join(sorted({r["hardware"] for r in runs})), "ladder": ladder, "runs": runs}, out)
samples = {}
for path, r in zip(found, runs):
    emb = path.parent / "embeddings.npz"
    if r["seed"] == 0 and emb.exists():
        with np.load(emb) as f:
            samples[f"{r['method']}_features"], samples[f"{r['method']}_labels"] = f["features"], f["labels"]
np.savez_compressed(out.with_name("cifar_lt_gpu_embeddings.npz"), **samples)
print(summarize_runs(runs))
if ladder is not None:
    print(ladder_table(ladder))
print(f"wrote {out} and {out.with_name('cifar_lt_gpu_embeddings.npz')}")
