import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def chromium_or_skip() -> tuple[str, list[str]]:
    """Debian's Chromium for the browser tests: (path, launch arguments). Without it the calling test
    module skips and says so, unless ELM_REQUIRE_BROWSER=1 (CI), where a missing browser is an error."""
    chromium = os.environ.get("ELM_CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(chromium):
        message = (f"no Chromium at {chromium}: apt-get install chromium (or set ELM_CHROMIUM) to run the "
                   "browser test")
        if os.environ.get("ELM_REQUIRE_BROWSER"):
            raise RuntimeError(message)
        pytest.skip(message, allow_module_level=True)
    return chromium, ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright, shared by the browser tests of the session."""
    chromium, args = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        yield b
        b.close()


def open_offline(browser, url: str, viewport=(1400, 1000)):
    """A page at ``url`` with every request that leaves the local server blocked (the static site's and
    the slide deck's and the compare report's browser tests; a file:// page may read only file:// URLs); returns
    ``(page, outside, errors, local)``: blocked URLs, console errors and page errors, local requests."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    base, outside, errors, local = url.split("/", 3)[:3], [], [], []
    origin = "/".join(base) + "/"

    def route(r):
        if r.request.url.startswith(origin):
            local.append(r.request.url)
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()
    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load")
    return page, outside, errors, local


@pytest.fixture(scope="session")
def root():
    return ROOT


class HostSyncs:
    """Counts the reads of a tensor value back to the host (``aten::_local_scalar_dense``: ``.item()``,
    ``int(t)``, ``if t``) -- each one a stall of the GPU's queue. ``F.one_hot``'s own checks are left out:
    they run on a CPU only (on a GPU a bad class index is a device-side assert)."""

    def __init__(self, monkeypatch):
        import torch
        from torch.nn import functional as F
        from torch.utils._python_dispatch import TorchDispatchMode
        self.count, depth, one_hot = 0, [0], F.one_hot

        def counted_one_hot(*args, **kwargs):
            depth[0] += 1
            try:
                return one_hot(*args, **kwargs)
            finally:
                depth[0] -= 1
        monkeypatch.setattr(F, "one_hot", counted_one_hot)
        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default and not depth[0]:
                    counter.count += 1
                return func(*args, **(kwargs or {}))
        self.mode = Mode

    def __call__(self, fn) -> int:
        """How many host syncs ``fn()`` makes."""
        self.count = 0
        with self.mode():
            fn()
        return self.count


@pytest.fixture
def host_syncs(monkeypatch):
    return HostSyncs(monkeypatch)


def per_seed(rows: list[dict], method: str, column: str):
    """``column`` of ``method`` in :func:`elm_lite.experiments.compare`'s rows, one value per seed
    (seed order): the unit of every claim about learning in these tests, which are about effects over
    several seeds, never one seed near its threshold."""
    import numpy as np
    mine = sorted((r["seed"], r[column]) for r in rows if r["method"] == method)
    assert mine, f"no rows of {method!r}"
    return np.array([v for _, v in mine], dtype=float)


def notebook_parameters(name: str) -> dict:
    """The default values of a notebook's ``parameters`` cell (what a learner's run uses), so that a
    claim check trains exactly what the notebook trains."""
    import nbformat
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)
    return values
