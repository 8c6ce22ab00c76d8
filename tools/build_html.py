"""Build readable HTML pages of every notebook, executed, with interactive plotly figures kept,
plus an index page.

    python tools/build_html.py            # defaults (the full notebooks, a few minutes on a CPU)
    python tools/build_html.py --smoke    # SMOKE=True sizes, for a quick check
    python tools/build_html.py --out site --only 01_long_tail_problem

Widgets need a live kernel, so in the pages each app shows only its static figure next to it.
"""
from __future__ import annotations

import argparse
import html
import os
import pathlib
import time

import nbformat
import papermill as pm
from nbconvert import HTMLExporter

ROOT = pathlib.Path(__file__).resolve().parents[1]


def title_of(nb) -> str:
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    return first.splitlines()[0].lstrip("# ").strip() if first else "notebook"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "site"))
    p.add_argument("--smoke", action="store_true", help="run with SMOKE=True (tiny sizes)")
    p.add_argument("--only", nargs="+", help="notebook stems to build (default: all)")
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["ELM_PLOTLY_RENDERER"] = "plotly_mimetype+notebook"  # pages carry plotly.js: readable offline
    exporter = HTMLExporter(template_name="lab")
    entries = []
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if args.only and nb_path.stem not in args.only:
            continue
        start = time.perf_counter()
        executed = out / nb_path.name
        parameters = {"SMOKE": True} if args.smoke else {}
        if "STATIC = False" in nb_path.read_text():  # the dashboard: draw its panels as plain figures too
            parameters["STATIC"] = True
        pm.execute_notebook(str(nb_path), str(executed), parameters=parameters,
                            cwd=str(nb_path.parent), kernel_name="python3", progress_bar=False,
                            store_widget_state=False)
        nb = nbformat.read(executed, as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        (out / f"{nb_path.stem}.html").write_text(body)
        executed.unlink()
        entries.append((nb_path.stem, title_of(nb), time.perf_counter() - start))
        print(f"{nb_path.stem}: {entries[-1][2]:.0f} s")
    rows = "\n".join(f'<li><a href="{stem}.html">{html.escape(title)}</a> <small>(built in {sec:.0f} s)</small></li>'
                     for stem, title, sec in entries)
    (out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>elm_lite course</title>"
        "<h1>elm_lite: an interactive course on long-tail learning</h1>"
        f"<p>Executed notebooks{' (smoke sizes)' if args.smoke else ''}. Sliders need a live kernel: "
        "run <code>make course</code> to use them.</p>"
        f"<ol>{rows}</ol>")
    print(f"wrote {out / 'index.html'}")


if __name__ == "__main__":
    main()
