"""Benchmarks that print tables (never timed unit tests).

    python benchmarks/run_benchmarks.py                 # everything
    python benchmarks/run_benchmarks.py --only callbacks

1. notebooks: each notebook executed top to bottom with its defaults (papermill), wall seconds.
2. callbacks: median latency of each widget callback (recompute + redraw the FigureWidget).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def bench_notebooks() -> list[tuple[str, float]]:
    import papermill as pm
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
            start = time.perf_counter()
            pm.execute_notebook(str(nb), f"{tmp}/{nb.name}", cwd=str(nb.parent), kernel_name="python3",
                                progress_bar=False, store_widget_state=False)
            rows.append((nb.name, time.perf_counter() - start))
    return rows


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_callbacks(repeats: int) -> list[tuple[str, float, str]]:
    """Each callback alternates between two values so that every call really recomputes."""
    from elm_lite.widgets import logit_margin_app, longtail_app

    def alternate(app, name, a, b):
        values = iter([a, b] * (repeats + 1))
        return median_ms(lambda: app.update(**{name: next(values)}), repeats)

    lt, lm = longtail_app(rho=100), logit_margin_app("LA loss", rho=100)
    return [("01 rho slider (regenerate + retrain + redraw)", alternate(lt, "rho", 10, 100), "< 300 ms"),
            ("02 tau slider (retrain LA + redraw)", alternate(lm, "tau", 0.5, 1.0), "< 200 ms"),
            ("02 loss selector (retrain + redraw)", alternate(lm, "method", "CE", "LDAM"), "< 200 ms")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["notebooks", "callbacks"])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    if args.only in (None, "notebooks"):
        print(f"{'notebook (defaults, papermill)':40s} {'seconds':>8s}")
        for name, sec in bench_notebooks():
            print(f"{name:40s} {sec:8.1f}")
        print()
    if args.only in (None, "callbacks"):
        print(f"{'widget callback':50s} {'median ms':>10s}  target")
        for name, ms, target in bench_callbacks(args.repeats):
            print(f"{name:50s} {ms:10.0f}  {target}")


if __name__ == "__main__":
    main()
