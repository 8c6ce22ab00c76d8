"""Project hygiene: dependencies in step, notebooks stored clean with a parameters cell."""
import os
import re
import subprocess
import sys
import tomllib

import nbformat
import pytest
import yaml
from conftest import NOTEBOOKS, ROOT

CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pypi = {_name(d) for d in project["dependencies"]}
    for extra in ("course", "test", "site"):
        pypi |= {_name(d) for d in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    conda |= {_name(d) for entry in env["dependencies"] if isinstance(entry, dict)   # from PyPI, via pip
              for d in entry.get("pip", []) if not d.startswith("-e")}
    conda = {CONDA_TO_PYPI.get(n, n) for n in conda}
    assert conda == pypi, f"only in environment.yml: {conda - pypi}; only in pyproject: {pypi - conda}"
    assert "conda-forge" in env["channels"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_with_parameters(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; clear them before committing"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one code cell tagged 'parameters'"
    assert "SMOKE" in tagged[0].source, f"{path.name}: the parameters cell must define SMOKE"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    if path.name[0].isdigit():  # a lesson; the workshop dashboard is a demo page without exercises
        assert "## Summary" in text and "## Exercises" in text, f"{path.name}: needs Summary and Exercises"
    else:
        assert "exercises" not in "".join(c.source for c in code), f"{path.name}: a demo page runs no exercise checks"


def test_site_pages_use_the_sites_own_plotly_and_no_widgets():
    """tools/build_site.py (`make site`): a plotly output becomes a figure that the site's one plotly.js
    draws, a live widget's output is dropped (its static version stands in), an external image (the
    Colab badge) becomes its link text, a demo page hides its code; the build never downloads."""
    import importlib.util

    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "tools" / "build_site.py")
    build_site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_site)
    figure = {"data": [{"type": "bar", "y": [1, 2]}], "layout": {}}
    outputs = [new_output("display_data", {build_site.PLOTLY_MIME: figure, "text/plain": "fig"}),
               new_output("display_data", {build_site.WIDGET_MIME: {"model_id": "x"}, "text/plain": "VBox()"}),
               new_output("stream", name="stdout", text="hello")]
    nb = new_notebook(cells=[new_markdown_cell("[![Open In Colab](https://colab.research.google.com/b.svg)](https://x)"),
                             new_code_cell("1", outputs=outputs)])
    build_site.for_the_page(nb, lesson=False)
    assert nb.cells[0].source == "[Open In Colab](https://x)"
    kept = nb.cells[1].outputs
    assert len(kept) == 2 and kept[1]["text"] == "hello"
    assert list(kept[0]["data"]) == ["text/html"] and 'class="elm-figure"' in kept[0]["data"]["text/html"]
    assert "remove-input" in nb.cells[1].metadata["tags"]
    assert build_site.parameters_of(ROOT / "notebooks" / "06_cifar_lt_gpu.ipynb", smoke=True) == {
        "DOWNLOAD": False, "SMOKE": True}
    assert build_site.parameters_of(ROOT / "notebooks" / "01_long_tail_problem.ipynb", smoke=False) == {}
    assert "answer_key.md" not in {p.name for p in build_site.docs()}


CORE = {"data", "models", "losses", "train", "metrics", "plots", "recipes", "interfaces", "methods", "source"}


def _package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file, functions included); the
    engine's modules are named ``engine.<name>``."""
    import ast
    package = ROOT / "elm_lite"
    files = {(".".join(p.relative_to(package).with_suffix("").parts)): p for p in package.rglob("*.py")}
    files = {name: p for name, p in files.items() if name.split(".")[-1] not in ("__init__", "__main__")}
    graph = {}
    for name, path in files.items():
        here = name.split(".")[:-1]              # the module's package, relative to elm_lite
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = here[:len(here) - (node.level - 1)]
                targets = [node.module] if node.module else [a.name for a in node.names]
                found |= {".".join([*base, t]) for t in targets}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("elm_lite."):
                found.add(node.module.removeprefix("elm_lite."))
        graph[name] = {m for m in files if any(f == m or f.startswith(m + ".") for f in found)}
    return graph


def test_import_graph_is_a_strict_layering():
    """No module imports one that imports it, directly or through others."""
    graph = _package_imports()

    def reaches(start, target, seen=()):
        return any(m == target or (m not in seen and reaches(m, target, (*seen, m))) for m in graph[start])
    cycles = [m for m in graph if reaches(m, m)]
    assert not cycles, f"import cycles through {sorted(cycles)}: {graph}"
    assert graph["recipes"] == set() and graph["results"] == set()


def test_the_core_never_imports_the_engine():
    """The teaching core (data, models, losses, train, metrics, plots, ...) reads on its own: no core
    module reaches ``elm_lite.engine``, directly or through another module; the engine uses the core."""
    graph = _package_imports()
    assert CORE <= set(graph) and any(m.startswith("engine.") for m in graph)

    def reached(start, seen=frozenset()):
        return set().union(*({m} | reached(m, seen | {m}) for m in graph[start] if m not in seen))
    leaks = {m: sorted(e for e in reached(m) if e.startswith("engine.")) for m in CORE}
    assert not any(leaks.values()), f"core modules reaching the engine: {leaks}"
    assert graph["engine.many"] & CORE, "the engine is built on the core"


def test_the_engine_uses_no_private_helper_of_the_core():
    """The engine imports only public names of the core. (What fit's old 'one screen' line count meant
    to protect -- fit is the plain loop -- is tests/test_train.py::test_fit_is_the_textbook_loop.)"""
    import ast
    private = [f"{path.name}: {node.module}.{a.name}" for path in (ROOT / "elm_lite" / "engine").glob("*.py")
               for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom) and node.level == 2
               for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
    assert private == []


def test_notebooks_show_the_short_code_under_their_formulas(capsys):
    """Notebooks 02 and 04 show the code of LA, SupCon and the centroid margin under the formulas
    (elm_lite.source.show_source); each shown function is short (at most 20 lines without its docstring)."""
    from elm_lite import losses
    from elm_lite.source import show_source, source_text
    calls = {name: [c.source for c in nbformat.read(ROOT / "notebooks" / name, as_version=4).cells
                    if "show_source(" in c.source] for name in ("02_logit_margins.ipynb", "04_embedding_margins.ipynb")}
    assert any("losses.LogitAdjustedLoss.forward" in c for c in calls["02_logit_margins.ipynb"])
    assert any("losses.SupConLoss.forward" in c for c in calls["04_embedding_margins.ipynb"])
    assert any("losses.centroid_terms" in c for c in calls["04_embedding_margins.ipynb"])
    shown = (losses.logit_adjustment, losses.LogitAdjustedLoss.forward, losses.SupConLoss.forward,
             losses.supcon_terms, losses.contrastive_terms, losses.centroid_terms)
    assert all(len(source_text(f, docstring=False).splitlines()) <= 20 for f in shown)
    show_source(losses.LogitAdjustedLoss.forward)
    out = capsys.readouterr().out
    assert out.startswith("def forward(self, logits") and "F.cross_entropy(logits + self.offsets" in out
    show_source(losses.centroid_terms, docstring=False)
    out = capsys.readouterr().out
    assert out.startswith("def centroid_terms(") and '"""' not in out and "logsumexp" in out


def test_docs_are_self_contained():
    """Every design reference points inside the repository (docs/design.md)."""
    assert (ROOT / "docs" / "design.md").is_file()
    outside = ("DESIGN" + ".md", "design " + "notes")  # spelled apart so that this test does not cite them
    for path in [*ROOT.glob("elm_lite/**/*.py"), *ROOT.glob("tests/*.py"), *NOTEBOOKS, ROOT / "README.md"]:
        text = path.read_text()
        for phrase in outside:
            assert phrase not in text, f"{path.name} cites {phrase!r}, which is not in the repository: docs/design.md"


@pytest.mark.slow
def test_wheel_installs_and_reads_the_shipped_results_offline(tmp_path):
    """`pip wheel .` installed in a fresh venv, away from the repository: the version has one
    source, `elm-lite` is on the path, and the shipped results load from the package (no network)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True)
    wheel = next(wheels.glob("elm_lite-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True)
    # numpy, torch, ... from this environment (PYTHONPATH: no .pth files, so not its editable elm_lite)
    deps = os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": deps, "HOME": str(tmp_path),
           "no_proxy": "*", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    code = ("import elm_lite, elm_lite.results as r; print(elm_lite.__file__, elm_lite.__version__); "
            "print(len(r.load_results('cifar_lt_gpu.json')['runs']), "
            "sorted(r.load_results('cifar_lt_gpu_embeddings.npz')))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=env, cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    where, version = done.stdout.splitlines()[0].split()
    assert where.startswith(str(venv)) and version == wheel.name.split("-")[1]
    assert done.stdout.splitlines()[1].startswith("4 ")
    cli = subprocess.run([str(venv / "bin" / "elm-lite"), "--help"], env=env, cwd=tmp_path, capture_output=True,
                         text=True)
    assert cli.returncode == 0 and "table" in cli.stdout, cli.stderr[-2000:]


def test_no_function_in_the_package_is_over_60_lines():
    """Code a reader can hold in their head: every function of elm_lite/, docstring included."""
    import ast
    long = [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((ROOT / "elm_lite").rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60]
    assert long == []


def test_models_and_losses_meet_the_declared_interfaces():
    from elm_lite import losses
    from elm_lite.interfaces import EmbeddingLoss, ImageModel, Scheduled, uses_prototypes
    from elm_lite.models import MLP, ResNet32, SmallCNN
    assert not isinstance(MLP(4, 3), ImageModel)
    assert all(isinstance(m, ImageModel) for m in (SmallCNN(10), ResNet32(10, projection_dim=16)))
    counts = [50, 10, 3]
    assert isinstance(losses.LDAMLoss(counts), Scheduled) and isinstance(losses.ELMLoss(counts), Scheduled)
    assert not isinstance(losses.LogitAdjustedLoss(counts), Scheduled | EmbeddingLoss)
    assert isinstance(losses.ELMLoss(counts), EmbeddingLoss)
    assert uses_prototypes(losses.ELMLoss(counts, use_prototypes=True)) and not uses_prototypes(losses.ELMLoss(counts))


def _prompts_and_reveals(nb):
    """For each "Predict, then reveal" prompt: the first markdown cell after the code that answers it."""
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and "Predict, then reveal" in cell.source:
            later = [c for c in cells[i + 1:] if c.cell_type == "markdown"]
            yield i, later[0] if later else None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_predict_prompt_has_its_answer_hidden(path):
    """The answer to a "predict" prompt waits: the next markdown cell opens with a collapsed
    <details> block (a learner clicks to read it), never plain prose under the question."""
    nb = nbformat.read(path, as_version=4)
    for i, answer in _prompts_and_reveals(nb):
        assert answer is not None, f"{path.name}: the prompt in cell {i} has no answer"
        assert answer.source.lstrip().startswith("<details><summary><b>Reveal</b>"), \
            f"{path.name}: the answer to the prompt in cell {i} is not hidden: {answer.source[:80]!r}"
        assert "</details>" in answer.source


def test_teacher_material_covers_every_notebook():
    """A lab handout per lesson notebook, and the answer key answers each lesson's prompts."""
    key = (ROOT / "docs" / "answer_key.md").read_text()
    for path in NOTEBOOKS:
        if not path.name[0].isdigit():
            continue
        assert (ROOT / "docs" / "handouts" / f"{path.stem}.md").is_file(), f"no handout for {path.name}"
        prompts = sum("Predict, then reveal" in c.source for c in nbformat.read(path, as_version=4).cells)
        section = key.split(f"## {path.stem[:2]} ")[1].split("\n## ")[0]
        assert section.count("\n- **") >= prompts, f"the answer key misses prompts of {path.name}"



def quoted_runtime(seconds: float) -> str:
    """How a measured notebook runtime is quoted everywhere: whole seconds."""
    return f"{seconds:.0f} s"


def test_quoted_notebook_runtimes_come_from_the_one_runtimes_file():
    """Every runtime quoted for a notebook -- its own header, the README's table, the teacher's guide --
    is the one written by ``benchmarks/run_benchmarks.py --only notebooks`` to docs/runtimes.json (with
    the machine that measured it)."""
    import json
    measured = json.loads((ROOT / "docs" / "runtimes.json").read_text())
    assert measured["machine"] and set(measured["seconds"]) == {p.name for p in NOTEBOOKS}
    readme = (ROOT / "README.md").read_text()
    teachers = (ROOT / "docs" / "teachers.md").read_text()
    for name, seconds in measured["seconds"].items():
        expected = quoted_runtime(seconds)
        header = nbformat.read(ROOT / "notebooks" / name, as_version=4).cells[0].source
        quotes = re.findall(r"\*\*Runtime:\*\*[^.]*?about (\d+ s)", header)
        assert quotes == [expected] or "workshop" in name, (name, quotes, expected)
        rows = [line for line in readme.splitlines() if line.startswith("|") and f"(notebooks/{name})" in line]
        assert not rows or re.search(rf"\| {expected}\b", rows[0]), (name, rows, expected)
        for line in teachers.splitlines():
            if re.search(rf"\| {name[:2]} .*\(whole notebook", line):
                assert f"{expected} (whole notebook" in line, (name, line, expected)
        for quote in re.findall(rf"`notebooks/{re.escape(name)}`\) runs in (\d+ s)", readme):
            assert quote == expected, (name, quote, expected)
    assert "docs/runtimes.json" in readme and "docs/runtimes.json" in teachers


@pytest.mark.slow
def test_core_line_count_tool_traces_one_elm_run():
    """tools/count_core_lines.py (docs/design.md quotes it) traces the run a student follows and counts the
    core functions it enters: the loss, the loop, prediction and the metrics, never the engine."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import count_core_lines
    finally:
        sys.path.remove(str(ROOT / "tools"))
    result = count_core_lines.count()
    names = result["by_function"]
    for expected in ("elm_lite/losses.py:ELMLoss.forward", "elm_lite/losses.py:centroid_terms",
                     "elm_lite/train.py:fit", "elm_lite/train.py:predict", "elm_lite/metrics.py:balanced_accuracy",
                     "elm_lite/data.py:make_toy", "elm_lite/models.py:MLP.forward"):
        assert expected in names, expected
    assert not any("/engine/" in name for name in names)
    assert 0 < result["executed"] <= result["lines"] <= sum(names.values())
    design = (ROOT / "docs" / "design.md").read_text()      # the number docs/design.md quotes is this one
    assert f"**{result['lines']} code lines in {result['functions']}" in " ".join(design.split()), result


def test_fit_takes_at_most_twelve_parameters():
    """The core's loop stays a textbook fit: what only large runs need (SGD, schedules, bf16, hooks,
    DDP) is the engine's (engine.loop.fit_at_scale), which holds itself equal to fit (tests/test_train.py)."""
    import inspect

    from elm_lite.train import fit
    assert len(inspect.signature(fit).parameters) <= 12, list(inspect.signature(fit).parameters)


def test_the_reading_order_of_the_design_notes_holds():
    """docs/design.md's reading order of the core: each step imports only the ones before it."""
    order = ["recipes", "interfaces", "data", "models", "losses", "metrics", "train", "balancing", "methods",
             "plots", "source"]
    graph = _package_imports()
    for i, module in enumerate(order):
        assert graph[module] <= set(order[:i]), f"{module} imports {sorted(graph[module] - set(order[:i]))}"
    design = " ".join((ROOT / "docs" / "design.md").read_text().split())
    positions = [design.index(f"`{m}.py` --") for m in order]
    assert positions == sorted(positions), "docs/design.md lists the steps in another order"
