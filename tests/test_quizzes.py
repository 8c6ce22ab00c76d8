"""The quizzes (docs/quizzes.md) and their answers (docs/answer_key.md): about five questions per lesson,
each naming the learning goal it tests, every question answered in the key with its common wrong answers,
no answer in the quiz page, and the key kept out of the course's web site."""
import re
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402  (tools/ is no package)

QUIZ = (ROOT / "docs" / "quizzes.md").read_text()
KEY = (ROOT / "docs" / "answer_key.md").read_text()
LESSONS = ("01", "02", "03", "04", "05", "06", "07")


def _questions() -> dict[str, str]:
    """``{"Q01.1": its text}``, each question up to the next one or the next heading."""
    parts = re.split(r"^(?=\*\*Q\d\d\.\d\*\*|## )", QUIZ, flags=re.M)
    return {m.group(1): p for p in parts if (m := re.match(r"\*\*(Q\d\d\.\d)\*\*", p))}


def test_about_five_questions_per_lesson_each_with_its_goal():
    questions = _questions()
    for lesson in LESSONS:
        mine = [q for q in questions if q.startswith(f"Q{lesson}.")]
        assert 4 <= len(mine) <= 6, f"notebook {lesson}: {len(mine)} questions"
    for name, text in questions.items():
        assert re.search(r"\*\(goal: [^)]+\)\*", text), f"{name} names no learning goal"
        choices = re.findall(r"^- \(([a-e])\)", text, flags=re.M)
        assert "Short answer" in text or choices == list("abc"[:len(choices)]) and len(choices) >= 3, name


def test_every_question_is_answered_with_common_wrong_answers():
    answers = dict(re.findall(r"^- \*\*(Q\d\d\.\d): (.+?)(?=^- \*\*Q|^#|\Z)", KEY, flags=re.M | re.S))
    assert set(answers) == set(_questions())
    for name, text in answers.items():
        text = " ".join(text.split())
        assert "*Common wrong answer" in text, f"{name}: no common wrong answer in the key"
        choices = re.findall(r"^- \(([a-e])\)", _questions()[name], flags=re.M)
        if choices:   # multiple choice: the key starts with one of the question's letters
            assert re.match(r"\(([a-e])\)\.", text) and text[1] in choices, f"{name}: key {text[:20]!r}"


def test_quiz_page_holds_no_answers():
    assert "answer_key" not in QUIZ and "Common wrong" not in QUIZ and not re.search(r"\*\*Q\d\d\.\d:", QUIZ)


def test_answer_key_stays_out_of_the_site():
    """build_site publishes docs/*.md except its private ones: the quizzes yes, the key never."""
    published = {p.name for p in build_site.docs()}
    assert "answer_key.md" in build_site.PRIVATE_DOCS
    assert "quizzes.md" in published and "answer_key.md" not in published
