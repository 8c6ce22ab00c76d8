import numpy as np
import pytest
import torch

from elm_lite import metrics
from elm_lite.metrics import balanced_accuracy, confusion_matrix, per_class_accuracy, shot_accuracy, shot_split

# Hand-made case: class 0 has 4 test points (3 right), class 1 has 2 (1 right), class 2 has none.
Y_TRUE = [0, 0, 0, 0, 1, 1]
Y_PRED = [0, 0, 0, 1, 1, 2]


def test_confusion_matrix_by_hand():
    expected = [[3, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == expected


def test_per_class_accuracy_with_an_untested_class():
    acc = per_class_accuracy(Y_TRUE, Y_PRED, 3)
    assert acc[:2].tolist() == [0.75, 0.5]
    assert np.isnan(acc[2])


def test_balanced_accuracy_ignores_untested_class_and_differs_from_accuracy():
    assert balanced_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx((0.75 + 0.5) / 2)
    assert np.mean(np.array(Y_TRUE) == np.array(Y_PRED)) == pytest.approx(4 / 6)


def test_accepts_torch_tensors():
    assert balanced_accuracy(torch.tensor(Y_TRUE), torch.tensor(Y_PRED), 3) == pytest.approx(0.625)


def test_shot_split_thresholds():
    assert shot_split([500, 101, 100, 20, 19, 5]).tolist() == ["many", "many", "medium", "medium", "few", "few"]
    assert shot_split([50, 10, 3], many=20, few=5).tolist() == ["many", "medium", "few"]


def test_shot_accuracy_by_hand():
    counts = [500, 50, 5, 5]
    y_true = [0, 0, 1, 1, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 0, 2, 0, 0, 0]  # many 1.0, medium 0.5, few (0.5 + 0.0) / 2
    assert shot_accuracy(y_true, y_pred, counts) == {"many": 1.0, "medium": 0.5, "few": 0.25}


def test_shot_accuracy_empty_split_is_nan():
    out = shot_accuracy([0, 1], [0, 1], [500, 300])
    assert out["many"] == 1.0 and np.isnan(out["medium"]) and np.isnan(out["few"])


@pytest.mark.parametrize("y_true,y_pred,n_classes,match", [
    ([0, 1], [0], 2, r"y_pred must be .*shape \(2,\).*got .*shape \(1,\)"),
    ([0, -1], [0, 1], 2, r"y_true must be .*values in \[0, inf\), got .*\[0, -1\]"),
    ([0, 3], [0, 1], 3, r"y_true must be .*values in \[0, 3\), got .*\[0, 3\]"),
    ([[0, 1]], [[0, 1]], 2, r"shape \(N,\).*got .*shape \(1, 2\)"),
    ([0.5, 1.0], [0, 1], 2, "integer"),
])
def test_bad_labels(y_true, y_pred, n_classes, match):
    with pytest.raises(ValueError, match=match):
        balanced_accuracy(y_true, y_pred, n_classes)


def test_shot_split_bad_thresholds():
    with pytest.raises(ValueError, match=r"few must be a finite number >= 0 and <= 5, got 10"):
        shot_split([10, 5], many=5, few=10)


def test_embedding_margin_hand_computed():
    """Three classes on the unit circle. Class 0: (1, 0) and (0.6, 0.8), mean direction
    (0.8, 0.4)/|.| = (2, 1)/sqrt 5; class 1: (0, 1); class 2: (-1, 0); class 3 absent.
    Example (1, 0): own cos 2/sqrt 5 = 0.894427, best other max(cos to (0,1) = 0, cos to (-1,0) = -1) = 0
    -> 0.894427. Example (0.6, 0.8): own (1.2 + 0.8)/sqrt 5 = 0.894427, best other 0.8 -> 0.094427.
    Class 0 margin = mean = 0.494427. Class 1 (0, 1): own 1, best other 1/sqrt 5 = 0.447214 -> 0.552786.
    Class 2 (-1, 0): own 1, best other max(-2/sqrt 5, 0) = 0 -> 1."""
    z = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0], [-3.0, 0.0]])  # norms do not matter
    y = np.array([0, 0, 1, 2])
    margin = metrics.embedding_margin(z, y, n_classes=4)
    np.testing.assert_allclose(margin[:3], [0.494427, 0.552786, 1.0], atol=1e-6)
    assert np.isnan(margin[3])


def test_embedding_margin_ignores_classes_absent_from_the_set():
    """Class 2 is absent: it has no mean and competes with nobody. Classes 0 and 1 sit opposite
    (cos -1), so each example's margin is 1 - (-1) = 2; an absent class counted as a mean at the
    origin (cos 0) would make it 1."""
    z = np.array([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    margin = metrics.embedding_margin(z, [0, 0, 1], n_classes=3)
    np.testing.assert_allclose(margin[:2], [2.0, 2.0])
    assert np.isnan(margin[2])


def test_embedding_margin_is_negative_for_swapped_clusters_and_checks_input():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0]])
    z = centres[y] + rng.normal(size=(100, 3))
    assert (metrics.embedding_margin(z, y) > 0.5).all()
    y_wrong = y.copy()
    y_wrong[:5] = 1  # five class-0 points labelled 1 sit far from class 1's mean
    assert metrics.embedding_margin(z, y_wrong)[1] < metrics.embedding_margin(z, y)[1]
    with pytest.raises(ValueError, match="NaN"):
        metrics.embedding_margin(np.full((2, 3), np.nan), [0, 1])


def test_align_to_undoes_a_rotation():
    """Embeddings rotated by a random orthogonal matrix are rotated back onto the reference (as many
    classes as dimensions, so that the class means fix the rotation)."""
    from elm_lite.plots import align_to
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 30)
    reference = rng.normal(size=(6, 6))[y] + 0.1 * rng.normal(size=(180, 6))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    np.testing.assert_allclose(align_to(reference @ rotation, y, reference, y), reference, atol=1e-8)


def test_mean_sd_is_the_sample_standard_deviation_by_hand():
    """The course's one "±": values 1, 2, 4 have mean 7/3 and sample variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2
    = 7/3; NaN values are left out; one value has no spread."""
    from elm_lite.metrics import mean_sd
    mean, sd, n = mean_sd([1.0, 2.0, float("nan"), 4.0])
    assert n == 3 and mean == pytest.approx(7 / 3) and sd == pytest.approx((7 / 3) ** 0.5)
    assert np.isnan(mean_sd([0.5])[1]) and mean_sd([0.5])[:1] == (0.5,) and mean_sd([])[2] == 0
