"""Build the course's nbgrader assignments (``make assignments``): one per lesson with exercises (01-05)
and the capstone, "your own decision table" (07).

Nothing is copied by hand: each exercise's task is its check's docstring (:mod:`elm_lite.exercises`),
its solution the reference function (:mod:`elm_lite.solutions`) between nbgrader's solution markers, its
autograded test cell the check itself -- so a failed test's message names the mistake, as in the lesson.
The script writes a complete nbgrader course directory and runs nbgrader on it:

    OUT/nbgrader_config.py
    OUT/source/NAME/NAME.ipynb     the instructor's versions (solutions, test cells with points)
    OUT/release/NAME/NAME.ipynb    the student versions (solutions removed): the folder to hand out
    OUT/gradebook.db               nbgrader's database (assignments, points)

    python tools/make_assignments.py                 # into assignments/ (build output, not in git)
    python tools/make_assignments.py --out DIR --only 02_logit_margins --no-release
"""
from __future__ import annotations

import argparse
import ast
import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from elm_lite import exercises, solutions  # noqa: E402  (this checkout's package, not an installed one)

# lesson notebook -> its exercises with a check: (check, reference solution, points)
LESSON_EXERCISES = {
    "01_long_tail_problem": [("check_balanced_error", "balanced_error", 5), ("check_p_no_example", "p_no_example", 5)],
    "02_logit_margins": [("check_la_loss", "my_la_loss", 5), ("check_ldam_margins", "my_ldam_margins", 5)],
    "03_embeddings": [("check_spread", "my_spread", 5)],
    "04_embedding_margins": [("check_has_positive", "has_positive", 3), ("check_supcon", "my_supcon", 7)],
    "05_elm": [("check_elm", "my_elm", 4), ("check_centroid_margin", "my_centroid_margin", 6)],
}
CAPSTONE = "07_decision_table"
SETUP = """import numpy as np
import torch
from torch.nn import functional as F

import elm_lite as el
from elm_lite import capstone, losses"""
# the capstone's hand-graded answer in the instructor's version (students see "YOUR ANSWER HERE")
RUBRIC = ("*Rubric, one point each:* names one method and the verdicts it rests on, with their paired intervals; says "
          "that a verdict of 0 means the difference is within the seed noise (not that the methods are equal); names a "
          "next check before trusting it (more seeds, a balanced validation split, a separate test set touched once).")
TIMEOUT_S = 600   # per cell when nbgrader autogrades (the capstone trains 3 methods x 3 seeds, ~10 s on 2 cores)
CONFIG = f"""# nbgrader's configuration for the elm_lite assignments (written by tools/make_assignments.py)
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "elm_lite"
c.ExecutePreprocessor.timeout = {TIMEOUT_S}
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
"""


def _meta(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def text(source: str, grade_id: str):
    return nbformat.v4.new_markdown_cell(source, metadata=_meta(grade_id, locked=True))


def code(source: str, grade_id: str):
    return nbformat.v4.new_code_cell(source, metadata=_meta(grade_id, locked=True))


def answer(source: str, grade_id: str):
    return nbformat.v4.new_code_cell(source, metadata=_meta(grade_id, solution=True))


def test(source: str, grade_id: str, points: int):
    return nbformat.v4.new_code_cell(source, metadata=_meta(grade_id, grade=True, locked=True, points=points))


def solution_cell_source(fn) -> str:
    """``fn``'s source with its body (after the docstring) between nbgrader's solution markers."""
    source = textwrap.dedent(inspect.getsource(fn))
    node = ast.parse(source).body[0]
    split = node.body[0].end_lineno if ast.get_docstring(node) else node.body[0].lineno - 1
    source = re.sub(r'"""\d\d\.\d: ', '"""', source, count=1)   # the lesson's exercise number
    source = re.sub(r'"""([a-z])', lambda m: '"""' + m.group(1).upper(), source, count=1)
    lines = source.rstrip().splitlines()
    head, body = lines[:split], lines[split:]
    return "\n".join(head + ["    ### BEGIN SOLUTION", *body, "    ### END SOLUTION"])


def task_text(check) -> str:
    """The task as the check states it (its docstring), in Markdown."""
    doc = " ".join(inspect.cleandoc(check.__doc__).split())
    doc = re.sub(r":\w+:`~?([\w.]+)`", r"``\1``", doc)          # Sphinx roles (:data:`~x.y`) as plain code
    return doc.replace("``", "`")


def check_tests(check_name: str, fn_name: str, points: int) -> list:
    """An exercise's two autograded cells: 1 point when the function runs and returns numbers of the right
    shape (:func:`~elm_lite.exercises.answered`), the rest when it matches the reference."""
    return [test(f"from elm_lite.exercises import answered, {check_name}\n\n"
                 f"result = {check_name}({fn_name})  # prints PASSED, or what to fix\n"
                 "assert answered(result), result.message", f"test_{fn_name}_runs", 1),
            test("assert result.passed, result.message", f"test_{fn_name}", points - 1)]


def header(title: str, lesson: str, total: int) -> str:
    return (f"# Assignment {title}\n\n"
            f"From the lesson `notebooks/{lesson}.ipynb`. Write each function in the cell marked "
            "`YOUR CODE HERE`, replacing `raise NotImplementedError()`; keep its name and arguments. The cell "
            "below each one is the autograder's test (points in the heading above: one when your function runs and "
            "returns numbers of the right shape, the rest when it is right): run it yourself -- it prints "
            "`PASSED`, or a hint that names the likely mistake. Before you submit: *Kernel > Restart and Run "
            f"All*. {total} points in all.")


def lesson_title(lesson: str) -> str:
    """The lesson's own title, from its first heading (e.g. ``02 · Logit margins``)."""
    first = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", 4).cells[0].source.splitlines()[0]
    return first.lstrip("# ").strip()


def lesson_assignment(lesson: str) -> nbformat.NotebookNode:
    items = LESSON_EXERCISES[lesson]
    cells = [text(header(lesson_title(lesson), lesson, sum(p for *_, p in items)), "header"),
             code(SETUP, "setup")]
    for k, (check_name, fn_name, points) in enumerate(items, 1):
        fn, check = getattr(solutions, fn_name), getattr(exercises, check_name)
        task = task_text(check).replace("`fn(", f"`{fn_name}(")
        cells += [text(f"## Exercise {k} ({points} points)\n\n{task}", f"task_{fn_name}"),
                  answer(solution_cell_source(fn), fn_name), *check_tests(check_name, fn_name, points)]
    return notebook(cells)


def capstone_assignment() -> nbformat.NotebookNode:
    """The capstone: a long-tailed problem of the student's own, a small decision table on it, the verdict
    of each method against LA from paired intervals, and a written recommendation (graded by hand)."""
    verdict = solutions.paired_verdict
    cells = [
        text(header("07 · Your own decision table", "07_what_to_use", 15) + "\n\nNotebook 07 built the course's "
             "decision table on one toy problem. Here you build one on a problem of your own, and decide from "
             "paired intervals -- not from means -- which method to use.", "header"),
        code(SETUP, "setup"),
        text("## 1. Your problem (2 points)\n\nMake a long-tailed toy problem `my_data` with `el.make_toy` that "
             "is **not** the course's (`recipes.EMBEDDING_TOY`): change at least one of `n_classes`, `rho`, `dim`, "
             "`separation`. Keep it small (at most a few thousand training examples) so that the table trains in "
             "seconds.", "task_data"),
        answer("### BEGIN SOLUTION\nmy_data = el.make_toy(\"gaussian\", n_classes=6, n_max=300, rho=50, dim=8, "
               "separation=3.0, seed=0)\n### END SOLUTION\nprint(\"training examples per class:\", my_data.counts)",
               "my_data"),
        test("from elm_lite.data import ToyData\nfrom elm_lite.recipes import EMBEDDING_TOY\n\n"
             "assert isinstance(my_data, ToyData), f\"my_data should come from el.make_toy, got {type(my_data)}\"\n"
             "course = el.make_toy(**EMBEDDING_TOY, seed=0)\n"
             "assert (my_data.counts.tolist(), my_data.x_train.shape) != (course.counts.tolist(), "
             "course.x_train.shape), \\\n"
             "    \"my_data is the course's own problem: change n_classes, rho, dim or separation\"\n"
             "assert len(my_data.y_train) <= 5000, \"keep the problem small: at most 5000 training examples\"",
             "test_my_data", 2),
        text("## 2. The table (3 points)\n\nTrain CE, LA and re-weighting (`\"ce\"`, `\"la\"`, "
             "`\"reweight-inverse\"`) on `my_data` with `capstone.toy_runs`, **at least three seeds** each, "
             "`epochs=10`; keep its `rows` (one dict per run: `method` label, `seed`, `balanced_accuracy`, ...) "
             "and print `capstone.toy_table(rows, {})`.", "task_rows"),
        answer("### BEGIN SOLUTION\nrows, runs = capstone.toy_runs(my_data, (\"ce\", \"la\", \"reweight-inverse\"), "
               "seeds=(0, 1, 2), epochs=10)\n### END SOLUTION\nprint(capstone.toy_table(rows, {}))", "rows"),
        test("from collections import Counter\n\n"
             "runs_per_method = Counter(r[\"method\"] for r in rows)\n"
             "assert \"LA\" in runs_per_method, f\"LA is missing from the table: {dict(runs_per_method)}\"\n"
             "assert len(runs_per_method) >= 3, f\"three methods are asked for, got {dict(runs_per_method)}\"\n"
             "assert min(runs_per_method.values()) >= 3, f\"at least three seeds per method: {dict(runs_per_method)}\"",
             "test_rows", 3),
        text("## 3. A verdict from paired intervals (6 points)\n\n" + task_text(exercises.check_paired_verdict)
             .replace("`fn(", "`paired_verdict(") + " Pair the runs by seed (the same seed is the same data order "
             "and initialisation) and use Student's t quantile (`scipy.stats.t.ppf`).", "task_paired_verdict"),
        answer(solution_cell_source(verdict), "paired_verdict"),
        *check_tests("check_paired_verdict", "paired_verdict", 6),
        text("## 4. The verdicts on your problem (1 point)\n\n`verdicts`: a dict from each method label of "
             "`rows` other than `\"LA\"` to its verdict against LA.", "task_verdicts"),
        answer("### BEGIN SOLUTION\nverdicts = {m: paired_verdict(rows, m, \"LA\")\n"
               "            for m in dict.fromkeys(r[\"method\"] for r in rows) if m != \"LA\"}\n"
               "### END SOLUTION\nprint(verdicts)", "verdicts"),
        test("def course_verdict(m):\n    d = capstone.paired_difference(rows, m, \"LA\")\n"
             "    return 1 if d[\"mean\"] - d[\"half\"] > 0 else -1 if d[\"mean\"] + d[\"half\"] < 0 else 0\n\n\n"
             "expected = {m: course_verdict(m) for m in dict.fromkeys(r[\"method\"] for r in rows) if m != \"LA\"}\n"
             "assert verdicts == expected, f\"verdicts {verdicts}; the paired intervals give {expected}\"",
             "test_verdicts", 1),
        nbformat.v4.new_markdown_cell(
            "## 5. Your recommendation (3 points, graded by hand)\n\nWhich method would you use on this problem, "
            "and why? Quote the paired intervals behind your verdicts, say what a verdict of 0 means, and what you "
            "would run next before trusting it (more seeds? a validation split?). Five sentences at most.",
            metadata=_meta("task_recommendation", locked=True)),
        nbformat.v4.new_markdown_cell(RUBRIC, metadata=_meta("recommendation", solution=True, grade=True, points=3)),
    ]
    return notebook(cells)


def notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.language_info = {"name": "python"}
    return nb


def assignments() -> dict[str, nbformat.NotebookNode]:
    """``{name: source notebook}`` for every assignment."""
    return {**{lesson: lesson_assignment(lesson) for lesson in LESSON_EXERCISES}, CAPSTONE: capstone_assignment()}


def nbgrader(course: pathlib.Path, *args: str) -> None:
    """Run an nbgrader command in ``course`` (its nbgrader_config.py is the course's), with this Python's
    scripts on PATH (nbgrader calls ``alembic`` to set up its database) and this checkout importable."""
    env = dict(os.environ, PATH=os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ["PATH"]]),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=course, env=env, check=True)


def write_course(out: pathlib.Path, only=None, release: bool = True) -> list[str]:
    """The course directory in ``out`` (replaced): config, source notebooks and, with ``release``, the
    student versions built by ``nbgrader generate_assignment``. Returns the assignment names."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "nbgrader_config.py").write_text(CONFIG)
    names = []
    for name, nb in assignments().items():
        if only and name not in only:
            continue
        (out / "source" / name).mkdir(parents=True)
        nbformat.write(nb, out / "source" / name / f"{name}.ipynb")
        names.append(name)
        if release:
            nbgrader(out, "generate_assignment", name, "--force")
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "assignments"), help="the nbgrader course directory (replaced)")
    p.add_argument("--only", nargs="+", help="assignment names to build (default: all)")
    p.add_argument("--no-release", action="store_true", help="write the source notebooks only")
    args = p.parse_args()
    out = pathlib.Path(args.out).resolve()
    names = write_course(out, args.only, release=not args.no_release)
    print(f"{len(names)} assignments in {out / 'source'}" + ("" if args.no_release else
          f"; student versions to hand out in {out / 'release'}"))


if __name__ == "__main__":
    main()
