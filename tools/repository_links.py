"""The project's repository address lives in one place, ``[project.urls] Repository`` of pyproject.toml.
This tool writes it into everything that opens or installs the course from GitHub: each notebook's
Open-in-Colab badge (first cell) and Colab setup cell (first code cell, generated whole from
:data:`SETUP`), the README's Colab and Binder links, the teacher's guide's install line and CITATION.cff.
Moved or forked the repository? Change pyproject.toml, then run this tool.

    python tools/repository_links.py            # rewrite what differs
    python tools/repository_links.py --check    # change nothing; list what differs, exit 1 if anything does

tests/test_colab.py runs the check.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tomllib

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
SLUG = r"[\w.-]+/[\w.-]+"                       # owner/name
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]" \
        "(https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook})"
SETUP = """# Setup: on Colab, install elm_lite and turn on its widget manager; elsewhere this does nothing.
import sys

if "google.colab" in sys.modules:
    %pip install -q "elm_lite @ git+https://github.com/{slug}"
    from google.colab import output

    output.enable_custom_widget_manager()"""
# every other place an address appears: the pattern (its group is the owner/name), and the files
LINKS = (
    (re.compile(rf"colab\.research\.google\.com/github/({SLUG})/blob"), ("README.md",)),
    (re.compile(rf"mybinder\.org/v2/gh/({SLUG})/"), ("README.md",)),
    (re.compile(rf"git\+https://github\.com/({SLUG})\""), ("docs/teachers.md",)),
    (re.compile(rf"repository-code: \"https://github\.com/({SLUG})\""), ("CITATION.cff",)),
)


def repository() -> str:
    """``owner/name`` from pyproject.toml's ``[project.urls] Repository`` (a GitHub address)."""
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    found = re.fullmatch(rf"https://github\.com/({SLUG})", url)
    if not found:
        raise ValueError(f"[project.urls] Repository must be https://github.com/<owner>/<name>, got {url!r}.")
    return found.group(1)


def _badge_cell(source: str, slug: str, notebook: str) -> str:
    badge = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")
    if not badge.search(source):
        raise ValueError(f"{notebook}: its first cell has no Open-in-Colab badge to update.")
    return badge.sub(lambda _: BADGE.format(slug=slug, notebook=notebook), source, count=1)


def sync(write: bool) -> list[str]:
    """Bring every link in line with :func:`repository` (``write``) or only report; returns the paths
    that differ(ed)."""
    slug, changed = repository(), []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first, setup = nb.cells[0], next(c for c in nb.cells if c.cell_type == "code")
        want = (_badge_cell(first.source, slug, path.name), SETUP.format(slug=slug))
        if (first.source, setup.source) != want:
            changed.append(str(path.relative_to(ROOT)))
            if write:
                first.source, setup.source = want
                nbformat.write(nb, path)
    for pattern, files in LINKS:
        for name in files:
            path = ROOT / name
            text = path.read_text()
            new = pattern.sub(lambda m: m.group(0).replace(m.group(1), slug), text)
            if new != text:
                changed.append(name)
                if write:
                    path.write_text(new)
    return sorted(set(changed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a link differs")
    args = p.parse_args()
    changed = sync(write=not args.check)
    verb = "differ from" if args.check else "updated to"
    for name in changed:
        print(f"{name}: {verb} github.com/{repository()}")
    if args.check and changed:
        sys.exit("run: python tools/repository_links.py (the address is pyproject.toml's [project.urls])")


if __name__ == "__main__":
    main()
