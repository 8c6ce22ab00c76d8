"""Benchmarks that print tables (never timed unit tests).

    python benchmarks/run_benchmarks.py                 # everything
    python benchmarks/run_benchmarks.py --only callbacks

1. notebooks: each notebook executed top to bottom with its defaults (papermill), wall seconds; written to
   docs/runtimes.json, the one source every quoted runtime (README, notebook headers, teacher's guide)
   reads (tests/test_project.py checks them). ``--no-record`` prints without writing.
2. callbacks: median latency of each widget callback (recompute + redraw the FigureWidget).
3. losses: forward+backward time of the embedding losses relative to cross-entropy, per batch size.
4. sweeps: notebook 04's trainings (its two 3-seed comparisons and its app's lambda x delta_max grid), runs
   one by one (as before the multi-model trainer) vs all together (elm_lite.engine.many), and all of them in total.
5. stacking: one training step of K models as one network, the engine's layer swap (batched linear layers,
   grouped convolutions: elm_lite.engine.stacked) against PyTorch's ensembling route (torch.func.stack_module_state
   + vmap over functional_call) and against K separate models, ms per step.
6. workshop: the dashboard (notebooks/workshop.ipynb) served by Voila and driven by headless Chromium:
   time until its four panels show, and each slider's latency in the browser (key press to redrawn
   figure); the same callbacks in-process; notebook 04's time to its sliders (cells run in order).
6. site: every page of the built site (`make site`; --site DIR), served locally and opened in headless
   Chromium offline: its HTML size, everything it loads, the time until its figures and apps have drawn;
   the whole site's size.
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
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


RUNTIMES = ROOT / "docs" / "runtimes.json"


def record_runtimes(rows: list[tuple[str, float]]) -> None:
    """Write the measured notebook runtimes to :data:`RUNTIMES` with the machine that measured them."""
    import datetime
    import json
    RUNTIMES.write_text(json.dumps({
        "machine": machine(), "date": datetime.date.today().isoformat(),
        "how": "python benchmarks/run_benchmarks.py --only notebooks (each notebook with its defaults, papermill)",
        "seconds": {name: round(sec, 1) for name, sec in rows}}, indent=2) + "\n")


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

    import elm_lite as el
    from elm_lite import methods
    from elm_lite.experiments import train_embedding_model
    from elm_lite.recipes import EMBEDDING_TOY
    from elm_lite.widgets import embedding_margin_app

    lt, lm = longtail_app(rho=100), logit_margin_app("la", rho=100)
    data = el.make_toy(**EMBEDDING_TOY)
    baseline = train_embedding_model(data, methods.get("la"))
    em = embedding_margin_app(data=data, baseline=baseline)
    slow = max(3, repeats // 3)
    return [("01 rho slider (regenerate + retrain + redraw)", alternate(lt, "rho", 10, 100), "< 300 ms"),
            ("02 tau slider (retrain LA + redraw)", alternate(lm, "tau", 0.5, 1.0), "< 200 ms"),
            ("02 method selector (retrain + redraw)", alternate(lm, "method", "ce", "ldam"), "< 200 ms"),
            ("04 delta_max slider (retrain MLP + redraw)", median_ms(
                lambda: em.update(delta_max=0.5 if em.values()["delta_max"] != 0.5 else 0.2), slow), "< 2000 ms")]


def bench_losses(repeats: int) -> list[tuple[int, float, float, float]]:
    """(batch, CE ms, embedding-margin ms, ELM ms): forward+backward on one batch, embedding dim 128,
    100 classes; CE on logits of a linear head over the same embeddings."""
    import torch

    from elm_lite import losses, methods
    counts = [int(500 * 0.01 ** (i / 99)) for i in range(100)]
    rows = []
    for batch in (256, 512, 1024):
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(batch, 128, generator=gen, requires_grad=True)
        head = torch.randn(128, 100, generator=gen, requires_grad=True)
        y = torch.randint(0, 100, (batch,), generator=gen)
        ce, emb = methods.get("ce").build_loss(counts), losses.EmbeddingMarginLoss(counts, 0.1, 0.5)
        elm = losses.ELMLoss(counts)

        def step(fn):
            z.grad = head.grad = None
            fn().backward()

        rows.append((batch, median_ms(lambda: step(lambda: ce(z @ head, y)), repeats),
                     median_ms(lambda: step(lambda: emb(z, y)), repeats),
                     median_ms(lambda: step(lambda: elm(z @ head, z, y)[0]), repeats)))
    return rows


def bench_sweeps() -> list[tuple[str, int, float, float, float]]:
    """(sweep, runs, seconds one by one, seconds together, largest |difference| in balanced accuracy),
    notebook 04's sweeps with its defaults, then their total."""
    from elm_lite import make_toy, methods
    from elm_lite.experiments import compare, train_embedding_model
    from elm_lite.recipes import EMBEDDING_TOY
    data = make_toy(**EMBEDDING_TOY)
    la, supcon, elm = methods.get("la"), methods.get("supcon-la"), methods.get("elm")
    grid = [(lam, d, "centroid") for lam in (0.0, 0.25, 0.5, 1.0, 2.0) for d in (0.0, 0.5, 1.0)]
    grid += [(1.0, d, "positive") for d in (0.0, 0.5, 1.0)]
    sweeps = {  # name: (methods, seeds)
        "notebook 04 candidates (5 methods)": ({m.label: m for m in (
            la, la.variant("LA, two views", views=2), supcon.variant("per-anchor", anchor_average="all"),
            supcon.variant("per-class"), supcon.variant("prototypes", views=1, use_prototypes=True))}, (0, 1, 2)),
        "notebook 04 margin forms x delta_max": ({
            f"{form} {d}": elm.variant(f"{form} {d}", placement=form, delta_max=d)
            for form in ("positive", "centroid") for d in (0.0, 0.25, 0.5, 1.0)}, (0, 1, 2)),
        "notebook 04 app grid (lambda x delta_max)": ({
            f"{p} {lam} {d}": elm.variant(f"{p} {lam} {d}", lam=lam, delta_max=d, placement=p)
            for lam, d, p in grid}, (0,)),
    }
    rows = []
    for name, (chosen, seeds) in sweeps.items():
        start = time.perf_counter()
        alone = compare(chosen, data, seeds=seeds, train=train_embedding_model)
        one_by_one = time.perf_counter() - start
        start = time.perf_counter()
        together = compare(chosen, data, seeds=seeds)
        at_once = time.perf_counter() - start
        diff = max(abs(a["balanced_accuracy"] - b["balanced_accuracy"]) for a, b in zip(alone, together))
        rows.append((name, len(alone), one_by_one, at_once, diff))
    rows.append(("all of notebook 04's sweeps", *(sum(r[i] for r in rows) for i in (1, 2, 3)), max(r[4] for r in rows)))
    return rows


def bench_stacking(repeats: int) -> list[tuple[str, int, float, float, float]]:
    """(model, K, ms per step: K models one after another, vmap over stacked state, the engine's swap).
    One SGD step of a squared-output loss, best of ``repeats`` rounds of a few steps."""
    import copy

    import torch
    from torch.func import functional_call, stack_module_state, vmap

    from elm_lite.engine.stacked import StackedModels
    from elm_lite.models import MLP, ResNet32, SmallCNN

    class Vmapped(torch.nn.Module):
        """The K models under vmap (randomness-free; batch norm keeps each model's statistics)."""

        def __init__(self, models):
            super().__init__()
            params, self.buffers_ = stack_module_state(models)
            self.params = torch.nn.ParameterList(params.values())
            self.names, self.base = list(params), [copy.deepcopy(models[0]).to("meta").train()]

        def forward(self, x):
            def one(p, b, xk):
                return functional_call(self.base[0], (dict(zip(self.names, p)), b), (xk,))
            return vmap(one)(list(self.params), self.buffers_, x)

    def ms_per_step(step, steps: int) -> float:
        best = float("inf")
        for _ in range(repeats):
            step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            best = min(best, (time.perf_counter() - start) / steps * 1000)
        return best

    def sgd_step(net, x):
        opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.9)

        def step():
            logits, z = net(x)
            (logits.square().mean() + z.square().mean()).backward()
            opt.step()
            opt.zero_grad()
        return step

    cases = [("MLP 16-64-64-8, batch 256", lambda: MLP(16, 8, 64, 2, 8, normalize=True), (256, 16), 15, 20),
             ("SmallCNN, batch 32", lambda: SmallCNN(10), (32, 32, 32, 3), 4, 2),
             ("ResNet-32, batch 32", lambda: ResNet32(10), (32, 32, 32, 3), 4, 1)]
    rows = []
    for name, build, shape, k, steps in cases:
        torch.manual_seed(0)
        models, x = [build() for _ in range(k)], torch.rand(k, *shape) * 255
        separate = [sgd_step(m, xk) for m, xk in zip(models, x)]
        rows.append((name, k, ms_per_step(lambda: [s() for s in separate], steps),
                     ms_per_step(sgd_step(Vmapped(models), x), steps),
                     ms_per_step(sgd_step(StackedModels(models), x), steps)))
    return rows


def bench_workshop(repeats: int) -> list[tuple[str, float, str]]:
    """(what, seconds or ms, target) for the dashboard and notebook 04; the browser rows need Debian's
    chromium and playwright (skipped with a note otherwise)."""
    rows = []
    from elm_lite.results import load_results
    from elm_lite.widgets import workshop_dashboard
    _, apps = workshop_dashboard(load_results("workshop_sweeps.npz"))
    for app, (name, a, b) in zip(apps, (("rho", 10.0, 100.0), ("tau", 0.5, 1.0), ("lam", 0.5, 1.0),
                                        ("measure", "acc_few", "balanced_accuracy"))):
        values = iter([a, b] * (repeats + 1))
        rows.append((f"dashboard {name} callback, in-process (ms)",
                     median_ms(lambda app=app, name=name: app.update(**{name: next(values)}), repeats), "< 200"))
    import elm_lite as el
    from elm_lite import methods, widgets
    from elm_lite.experiments import train_embedding_model
    from elm_lite.recipes import EMBEDDING_TOY
    data = el.make_toy(**EMBEDDING_TOY)
    baseline = train_embedding_model(data, methods.get("la"))
    grid = widgets.embedding_margin_grid(data, baseline, [(1.0, d, 0.1, "centroid") for d in (0.0, 0.5, 1.0)])
    app = widgets.embedding_margin_app(1.0, 0.5, data=data, baseline=baseline, grid=grid)
    deltas = iter([0.0, 1.0] * (repeats + 1))
    rows.append(("notebook 04 delta_max slider on its grid, in-process (ms)",
                 median_ms(lambda: app.update(delta_max=next(deltas)), repeats), "< 200"))
    rows += _browser_rows(repeats)
    rows.append(("notebook 04: Run All to its sliders (s)", _seconds_to_cell("04_embedding_margins.ipynb",
                                                                             "embedding_margin_app("), "< 30"))
    return rows


def _seconds_to_cell(name: str, marker: str) -> float:
    """Seconds from kernel start until the first cell containing ``marker`` has run (defaults)."""
    import nbclient
    import nbformat
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    start = time.perf_counter()
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, i)
                if marker in cell.source:
                    return time.perf_counter() - start
    raise ValueError(f"{name} has no cell with {marker!r}")


def _browser_rows(repeats: int) -> list[tuple[str, float, str]]:
    import shutil
    import socket
    import subprocess
    import sys
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [("dashboard in the browser: playwright missing, not measured", float("nan"), "")]
    if not os.path.exists("/usr/bin/chromium"):
        return [("dashboard in the browser: no /usr/bin/chromium, not measured", float("nan"), "")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = pathlib.Path(tempfile.mkdtemp())
    shutil.copy(ROOT / "notebooks" / "workshop.ipynb", tmp)
    voila = subprocess.Popen([sys.executable, "-m", "voila", str(tmp / "workshop.ipynb"), "--no-browser",
                              f"--port={port}", "--Voila.ip=127.0.0.1"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    traces = "JSON.stringify((el.data || []).map(t => [t.y, t.z ? t.z[50] : '']))"
    figure, changed = f"el => {traces}", f"([el, before]) => {traces} !== before"
    rows = []
    try:
        time.sleep(2)  # the server's own start, not the page's
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
            page.wait_for_function("document.querySelectorAll('.elm-panel .js-plotly-plot').length >= 4",
                                   timeout=120_000)
            rows.append(("dashboard: request to four panels drawn (s)", time.perf_counter() - start, "< 15"))
            for k, name in enumerate(("rho", "tau", "lambda")):
                panel = page.locator(".elm-panel").nth(k)
                panel.scroll_into_view_if_needed()
                plot, handle = panel.locator(".js-plotly-plot").first, panel.locator(".noUi-handle").first
                times = []
                for i in range(repeats):
                    before = plot.evaluate(figure)
                    handle.focus()
                    t0 = time.perf_counter()
                    page.keyboard.press("ArrowLeft" if i % 2 == 0 else "ArrowRight")
                    page.wait_for_function(changed, arg=[plot.element_handle(), before], timeout=10_000)
                    times.append(time.perf_counter() - t0)
                rows.append((f"dashboard {name} slider in the browser, key to redraw (ms)",
                             1000 * statistics.median(times), "< 200"))
            browser.close()
    finally:
        voila.terminate()
    return rows


def bench_site(site: pathlib.Path, repeats: int) -> list[tuple[str, float, float, float]]:
    """(page, HTML KB, KB the page loads in all, median ms until its figures and apps have drawn) for
    every page of a built site (``make site``), served locally and opened in headless Chromium with a
    cold cache each time; outside requests are blocked."""
    import sys
    from urllib.parse import urlsplit

    from playwright.sync_api import sync_playwright
    sys.path.insert(0, str(ROOT / "tools"))
    import build_site
    url, httpd = build_site.serve(site)
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("ELM_CHROMIUM", "/usr/bin/chromium"),
                                        args=["--no-sandbox", "--disable-gpu"])
            for name in build_site.pages(site):
                times, loaded = [], set()
                for _ in range(repeats):
                    page = browser.new_context().new_page()
                    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else r.abort())
                    page.on("request", lambda r: loaded.add(urlsplit(r.url).path))
                    start = time.perf_counter()
                    page.goto(url + name)
                    page.wait_for_function(build_site.READY_JS, timeout=120_000)
                    times.append(1000 * (time.perf_counter() - start))
                    page.context.close()
                files = [site / path.lstrip("/") for path in loaded]
                kb = sum(f.stat().st_size for f in files if f.is_file()) / 1024
                rows.append((name, (site / name).stat().st_size / 1024, kb, statistics.median(times)))
            browser.close()
    finally:
        httpd.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["notebooks", "callbacks", "losses", "sweeps", "stacking", "workshop",
                                           "site"])
    parser.add_argument("--site", default=str(ROOT / "site"), help="the built site to time (make site)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-record", action="store_true", help="do not write docs/runtimes.json")
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    if args.only in (None, "notebooks"):
        print(f"{'notebook (defaults, papermill)':40s} {'seconds':>8s}")
        rows = bench_notebooks()
        for name, sec in rows:
            print(f"{name:40s} {sec:8.1f}")
        if not args.no_record:
            record_runtimes(rows)
            print(f"(written to {RUNTIMES.relative_to(ROOT)})")
        print()
    if args.only in (None, "callbacks"):
        print(f"{'widget callback':50s} {'median ms':>10s}  target")
        for name, ms, target in bench_callbacks(args.repeats):
            print(f"{name:50s} {ms:10.0f}  {target}")
        print("(the precomputed sweeps and epoch animations are plotly frames: they scrub in the browser, no kernel)\n")
    if args.only in (None, "losses"):
        print(f"{'batch':>6s} {'CE ms':>8s} {'emb-margin ms':>14s} {'ratio':>6s} {'ELM ms':>8s} {'ratio':>6s}"
              "   (forward+backward, dim 128, 100 classes)")
        for batch, ce, emb, elm in bench_losses(args.repeats):
            print(f"{batch:6d} {ce:8.2f} {emb:14.2f} {emb / ce:6.1f} {elm:8.2f} {elm / ce:6.1f}")
        print()
    if args.only in (None, "sweeps"):
        print(f"{'toy sweep':41s} {'runs':>5s} {'one by one s':>13s} {'together s':>11s} {'speed-up':>9s} "
              f"{'max |d bal acc|':>16s}")
        for name, runs, alone, together, diff in bench_sweeps():
            print(f"{name:41s} {runs:5d} {alone:13.1f} {together:11.1f} {alone / together:8.1f}x {diff:16.4f}")
        print()
    if args.only in (None, "stacking"):
        print(f"{'K models, one SGD step':28s} {'K':>3s} {'separate ms':>12s} {'vmap ms':>9s} {'engine ms':>10s}")
        for name, k, separate, vmapped, engine in bench_stacking(min(args.repeats, 8)):
            print(f"{name:28s} {k:3d} {separate:12.1f} {vmapped:9.1f} {engine:10.1f}")
        print()
    if args.only in (None, "workshop"):
        print(f"{'workshop dashboard and notebook 04':62s} {'measured':>9s}  target")
        for name, value, target in bench_workshop(min(args.repeats, 9)):
            print(f"{name:62s} {value:9.1f}  {target}")
        print()
    if args.only in (None, "site"):
        site = pathlib.Path(args.site)
        if not (site / "index.html").exists():
            raise SystemExit(f"no site at {site}: run `make site` (or `make site SMOKE=1`) first")
        print(f"{'site page (local server, headless Chromium, cold cache)':58s} {'HTML KB':>8s} {'loads KB':>9s} "
              f"{'ready ms':>9s}")
        for name, html_kb, kb, ms in bench_site(site, min(args.repeats, 3)):
            print(f"{name:58s} {html_kb:8.0f} {kb:9.0f} {ms:9.0f}")
        total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
        print(f"whole site: {total:.1f} MB in {sum(1 for f in site.rglob('*') if f.is_file())} files")


if __name__ == "__main__":
    main()
