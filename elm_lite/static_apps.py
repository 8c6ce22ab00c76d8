"""Kernel-free versions of the course's apps, for the web pages of ``make site``.

A widget app needs a running kernel. Its static version steps the app's own callback
(:meth:`~elm_lite.widgets.App.update`: the same ``*_view``, ``*_figure`` and ``*_readout`` functions)
through a grid of settings and stores every state -- a plotly figure and its readout (HTML). In the page,
plotly's own controls switch between the stored states: a ``layout.sliders`` slider per numeric control,
``layout.updatemenus`` buttons per choice. The switching is ``tools/site/static_apps.js`` (a few lines:
several controls combine into one state, which plotly's step methods cannot express alone).

Notebooks call :func:`show` next to their app: it draws nothing in a live kernel, and the static version
when the site build runs them (it sets ``ELM_STATIC_APPS=1``).
"""
from __future__ import annotations

import base64
import gzip
import html
import itertools
import json
import os

import plotly.io as pio

from .data import PROFILES
from .methods import LOGIT_MARGIN_METHODS
from .widgets import MARGINS, NOISES

ENV = "ELM_STATIC_APPS"   # set by tools/build_site.py while it executes the notebooks

# The grids of the notebooks' apps in the pages: each control's values (a coarser grid than the live
# slider where that one has many steps; the page says so).
LONGTAIL_GRID = {"rho": (1, 3, 10, 30, 100, 300, 1000), "profile": PROFILES}
LOGIT_MARGIN_GRID = {"method": LOGIT_MARGIN_METHODS, "tau": (0.0, 0.5, 1.0, 2.0, 3.0), "rho": (1, 10, 100, 1000)}
MARGIN_SPREAD_GRID = {"noise": tuple(v for v in NOISES if 10 ** -1.3 <= v <= 10 ** 0.5), "margin": MARGINS,
                      "n_train": (1, 2, 5, 10, 20, 50)}

SLIDER_PX, MENU_PX = 95, 45   # vertical room of a plotly slider, of a row of buttons, under the figure


def enabled() -> bool:
    """True while the site build executes the notebooks."""
    return os.environ.get(ENV) == "1"


def _options(control) -> list[tuple[str, object]]:
    """(label, value) of every option of a selection control (Dropdown, SelectionSlider, ToggleButtons)."""
    return [o if isinstance(o, tuple) else (str(o), o) for o in control.options]


def live_settings(control) -> int:
    """How many values the live control offers (a slider's steps, a selector's options)."""
    if hasattr(control, "options"):
        return len(control.options)
    return int(round((control.max - control.min) / getattr(control, "step", 1))) + 1


def _label(control, value) -> str:
    if hasattr(control, "options"):
        return next(label for label, v in _options(control) if v == value)
    return f"{value:g}"


def _settings(app, grid) -> list[dict]:
    """``grid``: {control: values} (every combination), a list of settings (dicts, or tuples in the
    order of ``app.controls``), or None (every option of each control). Returns the settings."""
    names = list(app.controls)
    if grid is None:
        missing = [n for n in names if not hasattr(app.controls[n], "options")]
        if missing:
            raise ValueError(f"grid=None needs selection controls; {missing} are sliders: pass grid={{name: values}}.")
        grid = {n: [v for _, v in _options(app.controls[n])] for n in names}
    if isinstance(grid, dict):
        unknown = set(grid) ^ set(names)
        if unknown:
            raise ValueError(f"grid must name every control of the app, {names}; got {sorted(grid)}.")
        settings = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    else:
        settings = [s if isinstance(s, dict) else dict(zip(names, s)) for s in grid]
    if not settings:
        raise ValueError("grid has no setting: give at least one value per control.")
    return settings


def _controls_layout(app, values: dict, shown: list[str], layout: dict) -> dict:
    """plotly buttons (choices), then sliders (numbers), for the controls in ``shown``, stacked under the
    plot area of ``layout`` and below a legend placed under it. Returns the layout entries and the height
    they add to the figure (``extra``)."""
    height, margin = layout.get("height", 450), layout.get("margin", {})
    bottom = margin.get("b", 80)
    plot_height = height - margin.get("t", 100) - bottom
    legend_y = layout.get("legend", {}).get("y", 1)
    offset = max(bottom, -legend_y * plot_height + 45 if legend_y < 0 else 0) + 10   # px under the plot area
    sliders, menus, annotations = [], [], []
    choices = [n for n in shown if not isinstance(values[n][0], float | int)]
    for name in choices + [n for n in shown if n not in choices]:
        control, description = app.controls[name], app.controls[name].description or name
        labels = [_label(control, v) for v in values[name]]
        y = -offset / plot_height
        if name in choices:
            few = len(labels) <= 4   # a row of buttons; more: a dropdown list, opening over the plot
            menus.append(dict(name=name, type="buttons" if few else "dropdown", direction="right" if few else "up",
                              showactive=True, x=0.16, xanchor="left", y=y, yanchor="top",
                              buttons=[dict(label=lab, method="skip", args=[]) for lab in labels]))
            annotations.append(dict(text=f"{description}:", x=0.15, xanchor="right", xref="paper", y=y,
                                    yanchor="top", yref="paper", showarrow=False, yshift=-4))
            offset += MENU_PX
        else:
            sliders.append(dict(name=name, currentvalue=dict(prefix=f"{description} = "), len=0.9, x=0.05,
                                y=y, yanchor="top", pad=dict(t=30),
                                steps=[dict(label=lab, method="skip", args=[]) for lab in labels]))
            offset += SLIDER_PX
    return {"sliders": sliders, "updatemenus": menus, "annotations": annotations, "extra": offset + 15 - bottom}


def _packed(obj) -> str:
    """``obj`` as JSON, gzip-compressed (app states repeat a lot, e.g. decision-region rasters: 20-30x
    smaller) and base64-encoded, in a script element that ``static_apps.js`` unpacks in the page."""
    payload = base64.b64encode(gzip.compress(json.dumps(obj, separators=(",", ":")).encode(), mtime=0)).decode()
    return f'<script type="application/gzip" class="elm-packed">{payload}</script>'


def figure_html(figure: dict) -> str:
    """A plain plotly figure (``{"data", "layout", "frames"}``) for a page that loads plotly.js once:
    drawn by ``static_apps.js`` when the page has loaded."""
    return f'<div class="elm-figure">{_packed(figure)}</div>'


def _note(app, values: dict, n_states: int, refused: list, computed: list) -> str:
    """What the page says above a static app: precomputed, how much coarser than the live controls, and
    the settings the app refused."""
    live = {n: live_settings(control) for n, control in app.controls.items()}
    coarser = [f"{app.controls[n].description or n}: {len(values[n])} of the live app's {live[n]}"
               for n in app.controls if len(values[n]) < live[n]]
    never = [f"{n} = {_label(app.controls[n], v)}" for n in app.controls   # values refused in every setting
             for v in dict.fromkeys(r[n] for r, _ in refused) if all(s[n] != v for s, _ in computed)]
    note = ("Precomputed: every state below was computed in advance by the app's own code; move the controls "
            "under the figure. " + (f"A coarser grid than the live app ({'; '.join(coarser)} values). " if coarser
                                    else "") + f"{n_states} states.")
    if refused:
        note += (f" Left out: {len(refused)} settings the app refuses" + (f" ({', '.join(never)})" if never else "")
                 + f", e.g. {refused[0][1]}")
    return note


def static_app(app, grid=None, *, title: str = "") -> str:
    """The static version of ``app`` (a :class:`~elm_lite.widgets.App`) as an HTML fragment: every
    setting of ``grid`` computed by the app's own callback (see :func:`_settings` for ``grid``). The
    app's controls are set back to their values at the start."""
    start = app.values()
    computed, layouts, refused = [], [], []
    for setting in _settings(app, grid):
        try:
            app.update(**setting)
        except ValueError as e:   # a setting the app itself refuses (e.g. rho above n_max): left out, said
            refused.append((setting, str(e)))
            continue
        figure = json.loads(pio.to_json(app.static_figure(), validate=False))
        layout = json.dumps(figure["layout"], sort_keys=True)
        if layout not in layouts:
            layouts.append(layout)
        computed.append((app.values(),   # the setting as the controls hold it (App refuses what a slider would clamp)
                         {"data": figure["data"], "layout": layouts.index(layout), "readout": app.readout.value}))
    if not computed:
        raise ValueError(f"the app refused every setting of the grid, e.g. {refused[0][0]}: {refused[0][1]}")
    if app.values() != start:
        app.update(**start)
    values = {n: list(dict.fromkeys(s[n] for s, _ in computed)) for n in app.controls}   # choices: the grid's order
    values = {n: sorted(v) if all(isinstance(x, float | int) for x in v) else v for n, v in values.items()}
    shown = [n for n in app.controls if len(values[n]) > 1]
    states = {",".join(str(values[n].index(s[n])) for n in shown): state for s, state in computed}
    controls = _controls_layout(app, values, shown, json.loads(layouts[0]))
    initial = ",".join(str(values[n].index(start[n]) if start[n] in values[n] else 0) for n in shown)
    initial = initial if initial in states else next(iter(states))   # the app's own setting, where computed
    spec = {"controls": [["sliders" if any(s["name"] == n for s in controls["sliders"]) else "updatemenus", n]
                         for n in shown],
            "initial": [int(i) for i in initial.split(",")] if shown else [],
            "extra_height": controls.pop("extra"), "controls_layout": controls,
            "layouts": [json.loads(s) for s in layouts], "states": states}
    note = _note(app, values, len(states), refused, computed)
    heading = f"<h4>{html.escape(title)}</h4>" if title else ""
    return (f'<div class="elm-static-app">{heading}<p class="elm-static-note"><i>{html.escape(note)}</i></p>'
            '<div class="elm-static-figure"></div><div class="elm-static-readout"></div>'
            f'{_packed(spec)}</div>')


def show(app, grid=None, *, title: str = "") -> None:
    """Display :func:`static_app` when the site build runs the notebook; nothing in a live kernel."""
    if enabled():
        from IPython.display import HTML, display
        display(HTML(static_app(app, grid, title=title)))


def show_dashboard(dashboard, panels) -> None:
    """The workshop dashboard's panels (:func:`~elm_lite.widgets.workshop_dashboard`), each with its
    heading, as static versions over all their options (site build only)."""
    for row, panel in zip(dashboard.children, panels):
        heading = row.children[0].value   # the panel's title, an HTML widget "<h3>...</h3>"
        show(panel, title=html.unescape(heading.removeprefix("<h3>").removesuffix("</h3>")))

