"""Execute every notebook top to bottom with smoke parameters (papermill), one test each."""
import papermill as pm
import pytest

from conftest import NOTEBOOKS


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_smoke_parameters(path, tmp_path):
    pm.execute_notebook(
        str(path), str(tmp_path / path.name), parameters={"SMOKE": True},
        cwd=str(path.parent), kernel_name="python3", progress_bar=False,
        store_widget_state=False, execution_timeout=600,
    )
