"""Build the course as a static web site (``make site``): every notebook executed, with its outputs and
the kernel-free versions of its apps (:mod:`elm_lite.static_apps`), plus the README, the teacher's guide,
the handouts and the other docs; navigation and full-text search. Sphinx with myst-nb and the furo theme;
nothing is fetched from the network (plotly.js and MathJax are served once, from the site's ``_static``).

    python tools/build_site.py            # default sizes (the notebooks' own, several minutes on a CPU)
    python tools/build_site.py --smoke    # SMOKE=True sizes, for a quick check (CI)
    python tools/build_site.py --out site --only 01_long_tail_problem

Open ``site/index.html`` in a browser, or serve the folder: ``python -m http.server -d site``.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import nbformat
import papermill as pm
from plotly.offline import get_plotlyjs

from elm_lite import static_apps

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent / "site"
PRIVATE_DOCS = {"answer_key.md"}         # for teachers only: kept out of the public pages
# parameters the site sets wherever a notebook's parameters cell defines them (never download at build time)
SITE_PARAMETERS = {"DOWNLOAD": False}
WIDGET_MIME, PLOTLY_MIME = "application/vnd.jupyter.widget-view+json", "application/vnd.plotly.v1+json"
EXTERNAL_IMAGE = re.compile(r"!\[([^\]]*)\]\((https?://[^)\s]+)\)")   # e.g. the Colab badge: becomes its text


def docs() -> list[pathlib.Path]:
    """The Markdown pages besides the notebooks (relative to the repository): teacher's guide first."""
    found = [p.relative_to(ROOT) for p in sorted((ROOT / "docs").rglob("*.md")) if p.name not in PRIVATE_DOCS]
    return sorted(found, key=lambda p: (p.name != "teachers.md", "handouts" not in p.parts, str(p)))


def parameters_of(nb_path: pathlib.Path, smoke: bool) -> dict:
    cell = next(c for c in nbformat.read(nb_path, 4).cells if "parameters" in c.metadata.get("tags", []))
    wanted = dict(SITE_PARAMETERS, SMOKE=True) if smoke else SITE_PARAMETERS
    return {k: v for k, v in wanted.items() if re.search(rf"^{k}\s*=", cell.source, re.M)}


def for_the_page(nb, lesson: bool) -> None:
    """Outputs as a static page shows them: a plotly figure as HTML drawn by the site's one plotly.js,
    live widgets dropped (the static versions stand in their place), external images as their text.
    The workshop dashboard (not a numbered lesson) hides its code, as Voila does."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = EXTERNAL_IMAGE.sub(r"\1", cell.source)
            continue
        if not lesson:
            cell.metadata.setdefault("tags", []).append("remove-input")
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                continue
            if PLOTLY_MIME in data:
                out["data"] = {"text/html": static_apps.figure_html(data[PLOTLY_MIME])}
            kept.append(out)
        cell.outputs = kept


def execute(nb_path: pathlib.Path, dest: pathlib.Path, smoke: bool) -> float:
    start = time.perf_counter()
    pm.execute_notebook(str(nb_path), str(dest), parameters=parameters_of(nb_path, smoke), cwd=str(nb_path.parent),
                        kernel_name="python3", progress_bar=False, store_widget_state=False)
    nb = nbformat.read(dest, 4)
    for_the_page(nb, lesson=nb_path.name[0].isdigit())
    nbformat.write(nb, dest)
    return time.perf_counter() - start


def toctree(caption: str, pages) -> str:
    return "\n```{toctree}\n:hidden:\n:caption: " + caption + "\n\n" + "\n".join(pages) + "\n```\n"


def stage(src: pathlib.Path, notebooks: list[pathlib.Path]) -> None:
    """The pages' sources in ``src``, laid out as in the repository so that relative links keep working."""
    import mathjax  # django-static-mathjax: MathJax's own distribution
    static = src / "_static"
    static.mkdir()
    (static / "plotly.min.js").write_text(get_plotlyjs())
    shutil.copy(pathlib.Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg-full.js", static)
    for name in ("static_apps.js", "custom.css"):
        shutil.copy(HERE / name, static / name)
    shutil.copy(HERE / "conf.py", src / "conf.py")
    for page in docs():
        (src / page).parent.mkdir(parents=True, exist_ok=True)
        (src / page).write_text(EXTERNAL_IMAGE.sub(r"\1", (ROOT / page).read_text()))
    readme = EXTERNAL_IMAGE.sub(r"\1", (ROOT / "README.md").read_text())
    readme += toctree("Notebooks", [f"notebooks/{p.stem}" for p in notebooks])
    readme += toctree("Guides and notes", [str(p.with_suffix("")) for p in docs()])
    (src / "README.md").write_text(readme)


# true once every figure and kernel-free app of a page has drawn (static_apps.js marks them)
READY_JS = """() => [...document.querySelectorAll('.elm-figure, .elm-static-app')].every(e =>
    e.classList.contains('elm-figure-ready') || e.classList.contains('elm-static-ready'))"""


def serve(site: pathlib.Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    """Serve ``site`` on a free local port, in a thread; returns (base URL, server to ``shutdown()``)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/", httpd


def pages(site: pathlib.Path) -> list[str]:
    """Every HTML page of a built site, relative to it."""
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if "_static" not in p.parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "site"), help="where the site goes (replaced)")
    p.add_argument("--smoke", action="store_true", help="run the notebooks with SMOKE=True (tiny sizes)")
    p.add_argument("--only", nargs="+", help="notebook stems to build (default: all)")
    args = p.parse_args()
    out = pathlib.Path(args.out).resolve()
    notebooks = [nb for nb in sorted((ROOT / "notebooks").glob("*.ipynb")) if not args.only or nb.stem in args.only]
    if args.only and len(notebooks) != len(args.only):
        raise SystemExit(f"--only {args.only}: no such notebook(s); have {[nb.stem for nb in notebooks]}")
    # the apps' static versions (elm_lite.static_apps.show) and plain plotly outputs, no plotly.js per figure
    os.environ.update(ELM_STATIC_APPS="1", ELM_PLOTLY_RENDERER="plotly_mimetype")
    with tempfile.TemporaryDirectory(prefix="elm-site-") as tmp:
        src = pathlib.Path(tmp)
        stage(src, notebooks)
        (src / "notebooks").mkdir()
        for nb in notebooks:
            print(f"{nb.stem}: {execute(nb, src / 'notebooks' / nb.name, args.smoke):.0f} s", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-d", str(src / ".doctrees"),
                        str(src), str(out)], check=True)   # its caches stay out of the site
    (out / "index.html").write_text('<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" '
                                    'content="0; url=README.html"><a href="README.html">elm_lite course</a>')
    print(f"wrote {out / 'index.html'}")


if __name__ == "__main__":
    main()
