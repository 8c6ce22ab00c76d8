"""The workshop story as a reveal.js slide deck that works offline (``make slides``).

The figures are the workshop dashboard's (:func:`elm_lite.widgets.workshop_dashboard`), drawn from the
shipped sweeps (``elm_lite/measured/workshop_sweeps.npz``, :mod:`elm_lite.workshop`) at the settings the
20-minute demo of the teacher's guide moves through, panel by panel in the dashboard's order; each slide's
title is the dashboard panel's own title and its caption the panel's own readout for that setting.
reveal.js comes from the ``sphinx-revealjs`` package (its bundled copy, MIT licence) and plotly.js from
plotly: both are copied into the deck's folder, so the deck asks the network for nothing.

    python tools/make_slides.py               # into slides/ (build output, not in git): open slides/index.html
    python tools/make_slides.py --out DIR
"""
from __future__ import annotations

import argparse
import html
import json
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from elm_lite.results import load_results  # noqa: E402  (this checkout's package, not an installed one)
from elm_lite.widgets import workshop_dashboard  # noqa: E402

# the settings each dashboard panel is shown at, one slide each (the demo's moves in the teacher's guide; None:
# every option of the panel's control, i.e. every setting the shipped sweeps hold), and the question to ask
# before the panel's first slide; one entry per panel of the dashboard, in its order
STEPS = (
    ("rho", (1, 10, 100), "Predict: as the imbalance ratio grows, what happens to the rarest class's accuracy?"),
    ("tau", (0.0, 1.0, 3.0), "Predict: logit adjustment asks the rare classes to win by more. Which way do the "
                             "boundaries move, and how far should they go?"),
    ("lam", (0.0, 0.25, 1.0, 2.0), "Predict: an embedding term on top of LA, on the toy problem. Do the rare "
                                   "classes' test embeddings get tighter, and what happens to the head's?"),
    ("measure", ("balanced_accuracy", "acc_few"), "Predict: which method wins on the toy problem, on balanced "
                                                  "accuracy and on the rare classes?"),
    ("setting", None, "Predict: on real images (CIFAR-10-LT), does the toy problem's ranking carry over? Which "
                      "method's mean comes out on top?"),
)
OPENING = ("Long-tail learning: logit and embedding margins",
           "A balanced test set, a long-tailed training set: what happens to the rare classes, and what fixes it? "
           "ELM &mdash; Embedding and Logit Margins (arXiv 2204.13208) &mdash; on the course's toy problems, then on "
           "real images (CIFAR-10-LT); every figure is a run of the course's code (elm_lite), computed in advance.")
CLOSING = ("What to use on your own data",
           "Logit adjustment first, with tau chosen on a balanced validation split; other methods only as far as "
           "validation runs over several seeds support them. The course's notebook 07 builds the decision table "
           "with paired intervals; its assignment builds one on a problem of your own.")
REVEAL_FILES = ("dist/reveal.js", "dist/reveal.css", "dist/reset.css", "dist/theme/white.css",
                "dist/theme/fonts/source-sans-pro", "LICENSE")


def reveal_dir() -> pathlib.Path:
    """reveal.js as bundled by the ``sphinx-revealjs`` package."""
    import sphinx_revealjs
    return pathlib.Path(sphinx_revealjs.__file__).parent / "_static" / "revealjs"


def option_values(control) -> list:
    """The values a selection control (ToggleButtons, SelectionSlider) offers, in its order."""
    return [option[1] if isinstance(option, tuple) else option for option in control.options]


def panel_title(row) -> str:
    """A dashboard panel's title (its row's ``<h3>`` heading) as plain text."""
    return html.unescape(row.children[0].value.removeprefix("<h3>").removesuffix("</h3>"))


def slides(sweeps: dict) -> list[dict]:
    """``[{"title", "text", "figure" (plotly JSON or None)}]``: the opening, each panel at each setting of
    :data:`STEPS` with the dashboard's readout, and the closing."""
    dashboard, apps = workshop_dashboard(sweeps)
    out = [{"title": OPENING[0], "text": OPENING[1], "figure": None}]
    for row, app, (name, settings, question) in zip(dashboard.children, apps, STEPS, strict=True):
        heading = panel_title(row)
        out.append({"title": heading, "text": question, "figure": None})
        for value in settings if settings is not None else option_values(app.controls[name]):
            app.update(**{name: value})
            out.append({"title": heading, "text": app.readout.value, "figure": app.static_figure().to_json()})
    out.append({"title": CLOSING[0], "text": CLOSING[1], "figure": None})
    return out


def section(k: int, slide: dict) -> str:
    figure = ""
    if slide["figure"]:   # the figure's JSON in the page; "</" escaped so that it cannot close the script
        data = slide["figure"].replace("</", "<\\/")
        figure = (f'<div class="elm-slide-figure" id="figure-{k}"></div>\n'
                  f'<script type="application/json" id="figure-{k}-json">{data}</script>')
    return (f'<section>\n<h3>{html.escape(slide["title"])}</h3>\n{figure}\n'
            f'<p class="elm-slide-text">{slide["text"]}</p>\n</section>')


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="reveal/dist/reset.css">
<link rel="stylesheet" href="reveal/dist/reveal.css">
<link rel="stylesheet" href="reveal/dist/theme/white.css">
<style>
.reveal h3 {{ font-size: 1.1em; text-transform: none; }}
.reveal .elm-slide-text {{ font-size: 0.55em; }}
.elm-slide-figure {{ margin: 0 auto; width: 900px; }}
</style>
</head>
<body>
<div class="reveal"><div class="slides">
{sections}
</div></div>
<script src="plotly.min.js"></script>
<script src="reveal/dist/reveal.js"></script>
<script>
document.querySelectorAll('.elm-slide-figure').forEach(div => {{
  const fig = JSON.parse(document.getElementById(div.id + '-json').textContent);
  Plotly.newPlot(div, fig.data, fig.layout, {{displayModeBar: false}});
}});
Reveal.initialize({{hash: true, width: 1000, height: 700, margin: 0.04}});
</script>
</body>
</html>
"""


def build(out: pathlib.Path) -> int:
    """The deck in ``out`` (replaced): index.html, plotly.min.js, reveal/. Returns the number of slides."""
    from plotly.offline import get_plotlyjs
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = reveal_dir()
    for name in REVEAL_FILES:
        target = out / "reveal" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (source / name).is_dir() else shutil.copy)(source / name, target)
    (out / "plotly.min.js").write_text(get_plotlyjs())
    deck = slides(load_results("workshop_sweeps.npz"))
    (out / "index.html").write_text(PAGE.format(title=html.escape(OPENING[0]),
                                                sections="\n".join(section(k, s) for k, s in enumerate(deck))))
    (out / "slides.json").write_text(json.dumps({"slides": len(deck), "figures": sum(bool(s["figure"])
                                                                                      for s in deck)}))
    return len(deck)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "slides"), help="the deck's folder (replaced)")
    args = p.parse_args()
    out = pathlib.Path(args.out).resolve()
    n = build(out)
    print(f"{n} slides: open {out / 'index.html'} (works offline; copy the whole folder)")


if __name__ == "__main__":
    main()
