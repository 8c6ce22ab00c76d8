"""Before class: the GitHub Actions workflows (CI runs .ci/run; Pages publishes `make site`) and the Binder
configuration, read as GitHub and repo2docker read them."""
import os
import tomllib

import yaml
from conftest import ROOT


def _workflow(name: str) -> dict:
    w = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return {**w, "on": w.get("on", w.get(True))}   # YAML 1.1 reads the key `on` as True


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def test_ci_workflow_runs_the_ci_script_on_every_change():
    w = _workflow("ci.yml")
    assert {"push", "pull_request"} <= set(w["on"])
    (job,) = w["jobs"].values()
    runs = [s["run"].strip() for s in _steps(job) if "run" in s]
    assert runs == [".ci/run"]
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in _steps(job))
    assert "3.11" in job["container"]     # the Python the course is tested with
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_pages_workflow_builds_make_site_and_publishes_it():
    w = _workflow("pages.yml")
    assert w["on"]["push"]["branches"] == ["main"]
    assert w["permissions"]["pages"] == "write" and w["permissions"]["id-token"] == "write"
    build, deploy = w["jobs"]["build"], w["jobs"]["deploy"]
    assert [s["run"].strip() for s in _steps(build) if "run" in s] == ["make site"]
    upload = next(s for s in _steps(build) if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "site"       # where tools/build_site.py writes (its --out default)
    assert 'add_argument("--out", default=str(ROOT / "site")' in (ROOT / "tools" / "build_site.py").read_text()
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in _steps(deploy))


def test_binder_configuration_is_what_repo2docker_reads():
    binder = ROOT / "binder"
    runtime = (binder / "runtime.txt").read_text().strip()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert runtime == "python-" + requires.removeprefix(">=")
    requirements = [line for line in (binder / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements   # torch's CPU build
    assert any(line.startswith("torch") for line in requirements)
    post = binder / "postBuild"
    assert os.access(post, os.X_OK) and post.read_text().startswith("#!")
    assert 'pip install --no-cache-dir -e ".[course]"' in post.read_text()
