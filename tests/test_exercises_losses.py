"""The two exercises where a learner writes a key loss from its formula -- SupCon (04.2) and the centroid
margin term of the course's ELM (05.2): the loop-written reference solutions pass, and each usual mistake
is diagnosed by its own hint."""
import pytest
import torch

from elm_lite import exercises as ex
from elm_lite import solutions


@pytest.mark.parametrize("check,solution", [(ex.check_supcon, solutions.my_supcon),
                                            (ex.check_centroid_margin, solutions.my_centroid_margin),
                                            (ex.check_elm, solutions.my_elm)])
def test_loop_solutions_pass(check, solution, capsys):
    assert check(solution).passed and "PASSED" in capsys.readouterr().out


def _supcon(**mistake):
    return lambda z, y, t: ex._supcon_variant(z, y, t, **mistake)


def _centroid(**mistake):
    return lambda z, y, d, t: ex._centroid_variant(z, y, d, t, **mistake)


@pytest.mark.parametrize("check,wrong,hint", [
    (ex.check_supcon, _supcon(normalise=False), "normalise the embeddings"),
    (ex.check_supcon, _supcon(self_in_denominator=True), "leave a = i out of the denominator"),
    (ex.check_supcon, _supcon(log_of_mean=True), "L_in form"),
    (ex.check_supcon, _supcon(count_all=True), "must be skipped"),
    (ex.check_supcon, lambda z, y, t: ex._supcon_variant(z, y, 1.0), "temperature is missing"),
    (ex.check_centroid_margin, _centroid(leave_out=False), "leave the anchor out"),
    (ex.check_centroid_margin, _centroid(sign=-1.0), "wrong sign"),
    (ex.check_centroid_margin, lambda z, y, d, t: ex._centroid_variant(z, y, d * 0, t), "margin is missing"),
    (ex.check_centroid_margin, _centroid(margin_over_t=False), "before dividing by T"),
    (ex.check_centroid_margin, _centroid(count_all=True), "must be skipped"),
    (ex.check_elm, lambda lo, z, y, n, lam: solutions.my_la_loss(lo, y, n, 1.0) + lam * ex.losses.EmbeddingMarginLoss(
        n, placement="positive").double()(z, y), "recommended form puts it against the class centre"),
])
def test_each_usual_mistake_gets_its_hint(check, wrong, hint):
    result = check(wrong)
    assert not result.passed and hint in result.message, result.message


def test_the_mask_written_variants_without_a_mistake_are_the_reference():
    """The checks' mistake generators, with no mistake switched on, compute the reference itself (so a
    hint is never given for a right answer)."""
    assert ex.check_supcon(ex._supcon_variant).passed
    assert ex.check_centroid_margin(ex._centroid_variant).passed


@pytest.mark.parametrize("check", [ex.check_supcon, ex.check_centroid_margin])
def test_checks_never_crash(check):
    def raises(*args):
        raise RuntimeError("boom")
    assert "raised RuntimeError" in check(raises).message
    assert "shape" in check(lambda *args: torch.zeros(3)).message
