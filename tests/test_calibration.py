"""Expected calibration error (metrics), temperature scaling (calibration) and the reliability diagram,
against hand-computed cases and known identities."""
import numpy as np
import pytest

from elm_lite import calibration, metrics, plots

# Five examples, two classes.
PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
Y = np.array([0, 0, 0, 1, 1])
# predictions 0, 1, 0, 1, 1 -> correct 1, 0, 1, 1, 1; confidences 0.9, 0.8, 0.6, 0.7, 0.55


def test_calibration_bins_and_ece_by_hand():
    """Two bins: (0, 0.5] is empty, (0.5, 1] holds all five: accuracy 4/5, confidence 3.55/5 = 0.71."""
    bins = metrics.calibration_bins(Y, PROBS, n_bins=2)
    assert bins["count"].tolist() == [0, 5]
    assert bins["accuracy"][1] == pytest.approx(0.8) and bins["confidence"][1] == pytest.approx(0.71)
    assert metrics.expected_calibration_error(Y, PROBS, n_bins=2) == pytest.approx(0.09)
    # five bins of width 0.2: (0.4, 0.6] holds 0.6, 0.55 (both right: |1 - 0.575|); (0.6, 0.8] holds 0.8
    # (wrong), 0.7 (right): |0.5 - 0.75|; (0.8, 1] holds 0.9 (right): |1 - 0.9|
    expected = (2 * 0.425 + 2 * 0.25 + 1 * 0.1) / 5
    assert metrics.expected_calibration_error(Y, PROBS, n_bins=5) == pytest.approx(expected)


def test_ece_of_a_perfectly_calibrated_and_of_a_sure_but_wrong_model():
    sure_right = np.eye(3)[[0, 1, 2, 2]]
    assert metrics.expected_calibration_error([0, 1, 2, 2], sure_right) == 0.0
    assert metrics.expected_calibration_error([1, 2, 0, 0], sure_right) == pytest.approx(1.0)
    # confidence exactly at a bin edge goes to the lower bin: 0.6 with 5 bins is in (0.4, 0.6]
    assert metrics.calibration_bins([0], [[0.6, 0.4]], n_bins=5)["count"].tolist() == [0, 0, 1, 0, 0]


def test_shot_calibration_error_splits_by_the_true_class():
    counts = [500, 50, 5]                                            # many, medium, few
    probs = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]])
    y = [0, 1, 2, 2]                                                 # the few class: argmax 1 (tie -> first)
    out = metrics.shot_calibration_error(y, probs, counts)
    assert out["many"] == 0.0 and out["medium"] == 0.0
    assert out["few"] == pytest.approx(0.5)                         # confidence 0.5, accuracy 0
    assert out["overall"] == pytest.approx(0.25)
    assert np.isnan(metrics.shot_calibration_error([0, 1], probs[:2], counts)["few"])


@pytest.mark.parametrize("bad, match", [(np.full((5, 2), 0.7), "summing to 1 along the last axis"),
                                        (PROBS[:3], r"shape \(5, classes\)"), (-PROBS, ">= 0")])
def test_bad_probabilities_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        metrics.expected_calibration_error(Y, bad)


def test_temperature_scaling_recovers_the_temperature_that_made_the_labels():
    """Labels drawn from softmax(z / 2): the fitted temperature of the logits z is close to 2, and it
    lowers the NLL and the ECE of the over-confident softmax(z) without changing any prediction."""
    rng = np.random.default_rng(0)
    z = rng.normal(scale=4.0, size=(20000, 4))
    p = calibration.probabilities(z, 2.0)
    y = (rng.random(len(z))[:, None] > p.cumsum(1)).sum(1)
    t = calibration.fit_temperature(z[:10000], y[:10000])
    assert t == pytest.approx(2.0, rel=0.05)
    test_z, test_y = z[10000:], y[10000:]
    assert calibration.nll(test_z, test_y, t) < calibration.nll(test_z, test_y)
    scaled, raw = calibration.probabilities(test_z, t), calibration.probabilities(test_z)
    assert metrics.expected_calibration_error(test_y, scaled) < 0.02 < metrics.expected_calibration_error(test_y, raw)
    assert np.array_equal(scaled.argmax(1), raw.argmax(1))


def test_reliability_figure_has_the_diagonal_and_one_line_per_model():
    fig = plots.reliability_figure(Y, {"a": PROBS, "b": np.eye(2)[[0, 0, 0, 1, 1]]}, n_bins=5)
    assert [t.name.split(" (")[0] for t in fig.data] == ["perfectly calibrated", "a", "b"]
    assert "ECE 0.290" in fig.data[1].name and "ECE 0.000" in fig.data[2].name
