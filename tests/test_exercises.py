"""Every reference solution passes its check; typical wrong answers fail with the intended hint;
a broken learner function never crashes a check."""
import sys
import time

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from elm_lite import exercises as ex
from elm_lite import solutions


@pytest.mark.parametrize("check,solution", [
    (ex.check_balanced_error, solutions.balanced_error),
    (ex.check_p_no_example, solutions.p_no_example),
    (ex.check_la_loss, solutions.my_la_loss),
    (ex.check_ldam_margins, solutions.my_ldam_margins),
    (ex.check_spread, solutions.my_spread),
    (ex.check_has_positive, solutions.has_positive),
    (ex.check_elm, solutions.my_elm),
])
def test_solutions_pass(check, solution, capsys):
    assert check(solution).passed
    assert "PASSED" in capsys.readouterr().out


def log_prior(n):
    return torch.log(n / n.sum())


@pytest.mark.parametrize("check,wrong,hint", [
    (ex.check_balanced_error, lambda m: 1 - np.trace(m) / m.sum(), "standard error"),
    (ex.check_balanced_error, lambda m: 1 - solutions.balanced_error(m), "balanced accuracy"),
    (ex.check_p_no_example, lambda n, t, b: (1 - n / t) ** b, "without replacement"),
    (ex.check_la_loss, lambda lo, y, n, tau: F.cross_entropy(lo - tau * log_prior(n), y), "wrong sign"),
    (ex.check_la_loss, lambda lo, y, n, tau: F.cross_entropy(lo + log_prior(n), y), "tau is missing"),
    (ex.check_la_loss, lambda lo, y, n, tau: F.cross_entropy(lo, y), "plain cross-entropy"),
    (ex.check_ldam_margins, lambda n, m: solutions.my_ldam_margins(n, m) ** 2 / m, "n^(-1/2)"),
    (ex.check_ldam_margins, lambda n, m: np.asarray(n) ** -0.25, "not scaled"),
    (ex.check_ldam_margins, lambda n, m: np.asarray(n, float) ** 0.25 * m / np.max(np.asarray(n, float) ** 0.25),
     "rarest"),
    (ex.check_spread, lambda z, y, c: 1 - solutions.my_spread(z, y, c), "1 - mean cosine"),
    (ex.check_has_positive, lambda y: np.bincount(y)[y] > 0, "not its own positive"),
    (ex.check_elm, lambda lo, z, y, n, lam: solutions.my_elm(lo, z, y, n, 1.0), "lambda is missing"),
])
def test_typical_mistakes_get_their_hint(check, wrong, hint):
    result = check(wrong)
    assert not result.passed and hint in result.message, result.message


def test_log_counts_instead_of_log_prior_is_accepted():
    """Adding log n instead of log pi shifts every logit of a row by the same constant: same loss."""
    def with_counts(lo, y, n, tau):
        return F.cross_entropy(lo + tau * torch.log(n), y)
    assert ex.check_la_loss(with_counts).passed


@pytest.mark.parametrize("check", [ex.check_balanced_error, ex.check_la_loss, ex.check_spread, ex.check_elm,
                                   ex.check_ldam_margins, ex.check_has_positive, ex.check_p_no_example])
def test_checks_never_crash(check):
    def raises(*args):
        raise ZeroDivisionError("oops")
    result = check(raises)
    assert not result.passed and "raised ZeroDivisionError: oops" in result.message
    result = check(lambda *args: np.zeros((2, 7)))
    assert not result.passed and "shape" in result.message
    result = check(lambda *args: "a string")
    assert not result.passed


def test_unrecognised_mistake_shows_expected_and_got():
    result = ex.check_ldam_margins(lambda n, m: np.full(len(n), 0.123))
    assert not result.passed and "expected" in result.message and "0.123" in result.message


# ----------------------------------------------------------------------------- a check cannot be fooled or frozen


@pytest.mark.slow
def test_an_endless_loop_meets_the_deadline_and_the_check_returns(monkeypatch):
    monkeypatch.setattr(ex, "DEADLINE_S", 1.0)

    def stuck(m):
        i = 0
        while i < 3:  # the increment is missing
            pass
        return i

    def swallows(m):  # an `except Exception` in the learner's loop cannot hide the deadline
        while True:
            try:
                pass
            except Exception:
                pass
    for fn in (stuck, swallows):
        start = time.monotonic()
        result = ex.check_balanced_error(fn)
        assert time.monotonic() - start < 3
        assert not result.passed and "did not return within 1 s" in result.message, result.message
    assert "while i < 3:" in ex.check_balanced_error(stuck).message  # the line it was stuck in
    assert ex.check_balanced_error(solutions.balanced_error).passed  # the timer is off again


def test_a_function_that_changes_its_inputs_is_told_so_and_the_next_case_is_untouched():
    def zero_fill(m):  # right answer, but it writes into the learner's (and the checker's) matrix
        support = m.sum(1)
        m[support == 0] = 1
        return 1 - np.mean(np.diag(m)[support > 0] / support[support > 0])
    result = ex.check_balanced_error(zero_fill)
    assert not result.passed and "changed its input m in place" in result.message
    result = ex.check_la_loss(lambda lo, y, n, tau: F.cross_entropy(lo.add_(tau * log_prior(n)), y))
    assert not result.passed and "changed its input lo in place" in result.message


@pytest.mark.parametrize("returns,message", [
    (None, "returned None -- did you forget `return`?"),
    ("0.5402", "returned str '0.5402'; return a number or an array of numbers, not text"),
    (["0.5"], "returned list ['0.5']; return a number or an array of numbers, not text"),
    ({"error": 0.5}, "returned dict"),
])
def test_return_types_are_checked_and_named(returns, message):
    result = ex.check_balanced_error(lambda m: returns)
    assert not result.passed and message in result.message, result.message


def test_a_string_of_the_right_number_does_not_pass():
    assert not ex.check_balanced_error(lambda m: str(solutions.balanced_error(m))).passed
    assert not ex.check_ldam_margins(lambda n, m: [str(v) for v in solutions.my_ldam_margins(n, m)]).passed


def test_sys_exit_and_exceptions_show_the_learners_line():
    def leaves(m):
        sys.exit(3)
    result = ex.check_balanced_error(leaves)
    assert not result.passed and "called sys.exit(3)" in result.message and "sys.exit(3))" in result.message
    assert "of leaves" in result.message
    result = ex.check_balanced_error(lambda m: m.reshape(7))
    assert "raised ValueError" in result.message and "lambda m: m.reshape(7)" in result.message, result.message


@pytest.mark.notebook
def test_the_deadline_works_in_a_jupyter_kernel():
    """In a kernel the learner's cell runs in the main thread, where the timer signal reaches it."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from elm_lite import exercises as ex\n"
        "ex.DEADLINE_S = 1.0\n"
        "def my_error(m):\n"
        "    i = 0\n"
        "    while i < 3:\n"
        "        pass\n"
        "result = ex.check_balanced_error(my_error)")])
    NotebookClient(nb, kernel_name="python3", timeout=60).execute()
    text = nb.cells[0].outputs[0]["text"]
    assert text.startswith("NOT YET: your function did not return within 1 s (line 5 of my_error: while i < 3:)"), text
