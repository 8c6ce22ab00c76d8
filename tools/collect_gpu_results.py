"""Gather the results.json files of full-scale runs (e.g. the device check's output folder) into
data/results/cifar_lt_gpu.json, the file notebook 06 shows.

    python tools/collect_gpu_results.py RUNS_DIR [RUNS_DIR ...]
"""
import json
import pathlib
import sys

from elm_lite.fullscale import summarize_runs

ROOT = pathlib.Path(__file__).resolve().parents[1]
runs = [json.loads(p.read_text()) for d in sys.argv[1:] for p in sorted(pathlib.Path(d).rglob("results.json"))]
if not runs:
    sys.exit("no results.json found under " + " ".join(sys.argv[1:]))
out = ROOT / "data" / "results" / "cifar_lt_gpu.json"
out.write_text(json.dumps({"hardware": ", ".join(sorted({r["hardware"] for r in runs})), "runs": runs}, indent=1))
print(summarize_runs(runs))
print(f"wrote {out}")
