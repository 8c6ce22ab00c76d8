"""The nbgrader assignments (``make assignments``, tools/make_assignments.py).

Fast: the capstone's check passes its reference solution and names each typical mistake; every lesson
exercise with a check has its assignment. Slow (marker ``slow``): the whole course directory is built
and nbgrader really autogrades three students per assignment -- the reference solutions (full marks), the
student version as handed out (zero), and a typical mistake (partial marks, the check's message in the
feedback nbgrader writes) -- and the student versions contain no line of solution code.
"""
import os
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from conftest import NOTEBOOKS, ROOT

from elm_lite import exercises as ex
from elm_lite import solutions
from elm_lite.exercises import _paired_verdict_variant as variant

sys.path.insert(0, str(ROOT / "tools"))
import make_assignments  # noqa: E402  (tools/ is no package)

pytest.importorskip("nbgrader", reason="pip install nbgrader (the test extra) to build the assignments")


def test_paired_verdict_reference_passes():
    assert ex.check_paired_verdict(solutions.paired_verdict).passed


@pytest.mark.parametrize("mistake,hint", [
    (dict(interval=False), "means only"),
    (dict(by_seed=False), "pair the runs by seed"),
    (dict(paired=False), "unpaired"),
    (dict(quantile="normal"), "t quantile"),
    (dict(sign=-1.0), "wrong sign"),
])
def test_paired_verdict_names_each_mistake(mistake, hint):
    result = ex.check_paired_verdict(lambda rows, m, r: variant(rows, m, r, **mistake))
    assert not result.passed and hint in result.message, result.message


def test_paired_verdict_cases_tell_every_mistake_apart():
    """Each mistake differs from the reference on some case (else the check could not catch it)."""
    cases = ex._verdict_cases()
    right = [solutions.paired_verdict(*c) for c in cases]
    assert set(right) == {-1, 0, 1}
    for kw in (dict(interval=False), dict(by_seed=False), dict(paired=False), dict(quantile="normal")):
        assert [variant(*c, **kw) for c in cases] != right, kw


def test_every_checked_lesson_exercise_has_an_assignment():
    in_lessons = {}
    for nb in NOTEBOOKS:
        for check in re.findall(r"from elm_lite\.exercises import (check_\w+)", nb.read_text()):
            in_lessons.setdefault(nb.stem, set()).add(check)
    assigned = {lesson: {c for c, _, _ in items} for lesson, items in make_assignments.LESSON_EXERCISES.items()}
    assert assigned == in_lessons


# one typical wrong answer per assignment: (function or variable, its wrong code, words of the expected hint)
MISTAKES = {
    "01_long_tail_problem": ("balanced_error", "def balanced_error(cm):\n    cm = np.asarray(cm, dtype=float)\n"
                             "    return 1 - np.trace(cm) / cm.sum()\n", "standard error"),
    "02_logit_margins": ("my_la_loss", "def my_la_loss(logits, labels, counts, tau):\n"
                         "    counts = torch.as_tensor(counts, dtype=logits.dtype)\n"
                         "    return F.cross_entropy(logits - tau * torch.log(counts / counts.sum()), labels)\n",
                         "wrong sign"),
    "03_embeddings": ("my_spread", "def my_spread(z, y, c):\n"
                      "    members = np.asarray(z, dtype=float)[np.asarray(y) == c]\n"
                      "    mu = members.mean(0)\n    unit = members / np.linalg.norm(members, axis=1, keepdims=True)\n"
                      "    return float(1 - np.mean(unit @ mu / np.linalg.norm(mu)))\n", "normalise the embeddings"),
    "04_embedding_margins": ("has_positive", "def has_positive(labels):\n    labels = np.asarray(labels)\n"
                             "    return np.bincount(labels)[labels] > 0\n", "not its own positive"),
    "05_elm": ("my_elm", "def my_elm(logits, z, labels, counts, lam):\n"
               "    return (losses.LogitAdjustedLoss(counts).to(logits.dtype)(logits, labels)\n"
               "            + losses.EmbeddingMarginLoss(counts, temperature=0.1, delta_max=0.5,\n"
               "                                         placement='centroid', anchor_average='class')\n"
               "              .to(z.dtype)(z, labels))\n",
               "lambda is missing"),
    make_assignments.CAPSTONE: ("paired_verdict", "def paired_verdict(rows, method, reference):\n"
                                "    def mean(m):\n        return np.mean([r['balanced_accuracy'] for r in rows "
                                "if r['method'] == m])\n    return int(np.sign(mean(method) - mean(reference)))\n",
                                "means only"),
}
STUDENTS = ("reference", "empty", "mistake")


def _submission(source, release, student: str, assignment: str):
    """The student version filled in: every answer from the instructor's version (``reference``), none
    (``empty``: as handed out), or the reference with one typical mistake (``mistake``)."""
    nb = nbformat.from_dict(release)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if student != "empty" and grade_id in answers:
            cell.source = answers[grade_id]
        if student == "mistake" and grade_id == MISTAKES[assignment][0]:
            cell.source = MISTAKES[assignment][1]
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A course built by tools/make_assignments.py, three students' submissions autograded and their
    feedback generated by nbgrader; returns ``(course dir, {(assignment, student): grades})``."""
    from nbgrader.api import Gradebook
    course = tmp_path_factory.mktemp("course")
    names = make_assignments.write_course(course)
    for name in names:
        source = nbformat.read(course / "source" / name / f"{name}.ipynb", 4)
        release = nbformat.read(course / "release" / name / f"{name}.ipynb", 4)
        for student in STUDENTS:
            folder = course / "submitted" / student / name
            folder.mkdir(parents=True)
            nbformat.write(_submission(source, release, student, name), folder / f"{name}.ipynb")
        make_assignments.nbgrader(course, "autograde", name, "--force")
        make_assignments.nbgrader(course, "generate_feedback", name, "--force")
    grades = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in names:
            for student in STUDENTS:
                nb = gb.find_submission_notebook(name, name, student)
                grades[name, student] = {g.name: (g.score, g.max_score, g.cell_type) for g in nb.grades}
    return course, grades


def _auto(grades: dict) -> tuple[float, float]:
    """(score, maximum) over the autograded test cells (the capstone's written answer is graded by hand)."""
    auto = [(s, m) for s, m, kind in grades.values() if kind == "code"]
    return sum(s for s, _ in auto), sum(m for _, m in auto)


@pytest.mark.slow
def test_reference_solutions_get_full_marks(graded):
    _, grades = graded
    for name in make_assignments.assignments():
        score, maximum = _auto(grades[name, "reference"])
        assert maximum >= 5 and score == maximum, (name, grades[name, "reference"])


@pytest.mark.slow
def test_empty_submission_gets_zero(graded):
    _, grades = graded
    for name in make_assignments.assignments():
        assert _auto(grades[name, "empty"])[0] == 0, (name, grades[name, "empty"])


@pytest.mark.slow
def test_typical_mistake_gets_partial_marks_and_its_message(graded):
    course, grades = graded
    for name, (answer, _, hint) in MISTAKES.items():
        score, maximum = _auto(grades[name, "mistake"])
        assert 0 < score < maximum, (name, grades[name, "mistake"])
        assert grades[name, "mistake"][f"test_{answer}"][0] == 0, f"{name}: the mistake's test cell gave points"
        assert grades[name, "mistake"][f"test_{answer}_runs"][0] == 1, f"{name}: a wrong answer that runs gets 1"
        feedback = (course / "feedback" / "mistake" / name / f"{name}.html").read_text()
        assert hint in feedback, f"{name}: the feedback does not name the mistake ({hint!r})"


@pytest.mark.slow
def test_student_versions_hold_no_solution_code(graded):
    course, _ = graded
    for name in make_assignments.assignments():
        source = nbformat.read(course / "source" / name / f"{name}.ipynb", 4)
        release = (course / "release" / name / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in release and "Rubric" not in release
        solution_lines = [line.strip() for c in source.cells if c.metadata["nbgrader"].get("solution")
                          for line in c.source.split("### BEGIN SOLUTION")[-1].split("### END SOLUTION")[0]
                          .splitlines() if len(line.strip()) > 12]
        assert solution_lines, name
        leaked = [line for line in solution_lines if line in release]
        assert not leaked, f"{name}: solution code in the student version: {leaked}"


@pytest.mark.slow
def test_make_assignments_builds_the_release_folder(tmp_path):
    """The command line the Makefile runs (one assignment, to stay quick)."""
    out = tmp_path / "assignments"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_assignments.py"), "--out", str(out), "--only",
                    "03_embeddings"], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    release = nbformat.read(out / "release" / "03_embeddings" / "03_embeddings.ipynb", 4)
    stubs = [c for c in release.cells if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert len(stubs) == 1 and np.all([c.outputs == [] for c in release.cells if c.cell_type == "code"])
