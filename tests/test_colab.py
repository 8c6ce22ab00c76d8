"""Every notebook opens in Colab: a badge pointing at itself and a setup cell that installs this
package (only on Colab) and enables Colab's custom widget manager."""
import re
import tomllib

import nbformat
import pytest
from conftest import NOTEBOOKS, ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
BADGE = re.compile(r"\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/notebooks/([\w.-]+\.ipynb)\)")
INSTALL = re.compile(r'%pip install -q "(\w+) @ git\+https://github\.com/([\w.-]+/[\w.-]+)"')


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_and_setup_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    badge = BADGE.search(cells[0].source)
    assert badge, f"{path.name}: the first cell needs an Open-in-Colab badge"
    repo, target = badge.groups()
    assert target == path.name, f"{path.name}: the badge opens {target}"
    setup = next((c for c in cells if c.cell_type == "code" and "google.colab" in c.source), None)
    assert setup is not None, f"{path.name}: no Colab setup cell"
    assert 'if "google.colab" in sys.modules:' in setup.source, "the setup must do nothing outside Colab"
    assert "enable_custom_widget_manager()" in setup.source
    install = INSTALL.search(setup.source)
    assert install, f"{path.name}: the setup cell must pip-install the package from its repository"
    name, install_repo = install.groups()
    assert name == PROJECT and install_repo == repo, \
        "the install line must name this package and the badge's repository"
    first_code = next(i for i, c in enumerate(cells) if c.cell_type == "code")
    assert cells[first_code] is setup, "the setup cell must be the first code cell"


def test_every_link_names_the_repository_of_pyproject():
    """One address, in pyproject.toml's [project.urls]: badges, setup cells (generated whole), the README's
    Colab and Binder links, the install line of the teacher's guide and CITATION.cff all follow it."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import repository_links
    slug = repository_links.repository()
    assert "https://github.com/" + slug == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"][
        "Repository"]
    done = subprocess.run([sys.executable, "tools/repository_links.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for pattern, files in repository_links.LINKS:      # each place still holds its link (none lost)
        for name in files:
            assert [m.group(1) for m in pattern.finditer((ROOT / name).read_text())] != [], (name, pattern)
    for path in NOTEBOOKS:
        badge = BADGE.search(nbformat.read(path, as_version=4).cells[0].source)
        assert badge.group(1) == slug
