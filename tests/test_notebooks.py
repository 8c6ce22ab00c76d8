"""Execute every notebook top to bottom with smoke parameters (papermill), one test each."""
import nbformat
import papermill as pm
import pytest
from conftest import NOTEBOOKS


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_smoke_parameters(path, tmp_path):
    out = tmp_path / path.name
    parameters = {"SMOKE": True}
    if "OUT = None" in path.read_text():  # a notebook that writes a run folder writes it here, not in the repo
        parameters["OUT"] = str(tmp_path / "run")
    pm.execute_notebook(
        str(path), str(out), parameters=parameters,
        cwd=str(path.parent), kernel_name="python3", progress_bar=False,
        store_widget_state=False, execution_timeout=600,
    )
    # static fallback: figures also come as HTML, for viewers that run no widgets (nbviewer, HTML export)
    outputs = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    static = [o for o in outputs
              if "application/vnd.plotly.v1+json" in o.get("data", {}) and "text/html" in o.get("data", {})]
    assert static, f"{path.name}: no static plotly figure in the executed notebook"
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors


def _parameters_and_next_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    i = next(k for k, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    return cells[i].source, next(c.source for c in cells[i + 1:] if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_are_checked_where_they_enter(path):
    """The first code cell after ``parameters`` checks every parameter the cell defines (no more, no
    fewer), and the cell's own defaults pass."""
    from elm_lite.params import NOTEBOOKS as SPECS
    from elm_lite.params import check_parameters
    source, following = _parameters_and_next_cell(path)
    notebook = path.stem.split("_")[0]
    assert following.startswith(f'from elm_lite.params import check_parameters\n\ncheck_parameters("{notebook}", '
                                "globals())"), following[:200]
    defaults = {}
    exec(source, {}, defaults)
    assert set(defaults) == set(SPECS[notebook])
    check_parameters(notebook, defaults)


@pytest.mark.notebook
def test_papermill_text_false_for_smoke_is_refused(tmp_path):
    """``papermill -r SMOKE False`` passes the string "False" (truthy): the notebook stops at once
    instead of running at smoke sizes and reporting as if it were the real run."""
    path = next(p for p in NOTEBOOKS if p.stem == "workshop")
    with pytest.raises(pm.PapermillExecutionError, match=r"parameter SMOKE must be True or False, got 'False' "
                                                         r"\(str\)\. papermill's -r passes text"):
        pm.execute_notebook(str(path), str(tmp_path / path.name), parameters={"SMOKE": "False"}, cwd=str(path.parent),
                            kernel_name="python3", progress_bar=False, execution_timeout=120)
