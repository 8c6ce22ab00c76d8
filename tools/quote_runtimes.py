"""Copy the measured notebook runtimes of docs/runtimes.json into every place that quotes them: each
notebook's header ("**Runtime:** about N s ..."), the README's notebook table and the teacher's guide
("N s (whole notebook)"). Run it after ``python benchmarks/run_benchmarks.py --only notebooks``;
tests/test_project.py checks that the quotes and the file agree.

    python tools/quote_runtimes.py
"""
from __future__ import annotations

import json
import pathlib
import re

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quoted(seconds: float) -> str:
    """How a runtime is quoted everywhere: whole seconds."""
    return f"{seconds:.0f} s"


def main() -> None:
    measured = json.loads((ROOT / "docs" / "runtimes.json").read_text())["seconds"]
    readme, teachers = ROOT / "README.md", ROOT / "docs" / "teachers.md"
    readme_text, teachers_text = readme.read_text(), teachers.read_text()
    for name, seconds in measured.items():
        path = ROOT / "notebooks" / name
        nb = nbformat.read(path, as_version=4)
        header = re.sub(r"(\*\*Runtime:\*\* about )\d+ s", rf"\g<1>{quoted(seconds)}", nb.cells[0].source)
        if header != nb.cells[0].source:
            nb.cells[0].source = header
            nbformat.write(nb, path)
        readme_text = re.sub(rf"(\(notebooks/{re.escape(name)}\) \|[^|]*\| )\d+ s\b", rf"\g<1>{quoted(seconds)}",
                             readme_text)
        readme_text = re.sub(rf"(`notebooks/{re.escape(name)}`\) runs in )\d+ s", rf"\g<1>{quoted(seconds)}",
                             readme_text)
        teachers_text = re.sub(rf"(\| {name[:2]} [^\n]*?)\d+ s \(whole notebook",
                               rf"\g<1>{quoted(seconds)} (whole notebook", teachers_text)
    readme.write_text(readme_text)
    teachers.write_text(teachers_text)
    print(f"quoted {len(measured)} runtimes from docs/runtimes.json")


if __name__ == "__main__":
    main()
