"""A learner's own data in (elm_lite.owndata): every form, labels of any type, and one clear error for
each kind of unusable data; and the validation split carved from training (elm_lite.splits)."""
import warnings

import numpy as np
import pytest

from elm_lite import owndata, splits


def _write_csv(path, rows, header=("a", "b", "label")):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def _images(folder, sizes: dict, seed=0):
    """Write PNGs: ``sizes = {class: [(w, h), ...]}``, one image per entry."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name, whs in sizes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(whs):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    return folder


def test_csv_text_labels_become_indices_with_names(tmp_path):
    rows = [(1.0, 2.0, "dog"), (0.5, 1.0, "cat"), (3, 4, "dog"), (2, 2, "cat"), (1, 1, "emu"), (0, 1, "emu")]
    d = owndata.load_dataset(_write_csv(tmp_path / "t.csv", rows), label_column="label")
    assert d.kind == "features" and d.class_names == ["cat", "dog", "emu"]
    assert d.y_train.tolist() == [1, 0, 1, 0, 2, 2] and d.x_train.shape == (6, 2) and d.x_train.dtype == np.float32
    assert d.counts.tolist() == [2, 2, 2] and d.x_test is None


def test_csv_test_file_uses_the_training_classes(tmp_path):
    rows = [(1, 2, "b"), (0, 1, "a"), (3, 4, "b"), (2, 2, "a")]
    train = _write_csv(tmp_path / "train.csv", rows)
    d = owndata.load_dataset(train, test=_write_csv(tmp_path / "test.csv", [(0, 0, "b")]))
    assert d.y_test.tolist() == [1]
    with pytest.raises(ValueError, match=r"test2.csv has labels \['zebra'\] that the training set does not have"):
        owndata.load_dataset(train, test=_write_csv(tmp_path / "test2.csv", [(0, 0, "zebra")]))


def test_npz_with_and_without_a_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 5)), np.repeat([3, 7], 10)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    d = owndata.load_dataset(tmp_path / "f.npz")
    assert d.class_names == ["3", "7"] and d.y_train.tolist() == [0] * 10 + [1] * 10 and d.x_test.shape == (4, 5)
    np.savez(tmp_path / "g.npz", x_train=x, y_train=y)
    assert owndata.load_dataset(tmp_path / "g.npz").x_test is None


def test_arrays_of_embeddings():
    z = np.random.default_rng(0).normal(size=(9, 16)).astype(np.float16)
    d = owndata.load_dataset(z, np.array(["x", "y", "z"] * 3), test=z[:3], y_test=["z", "z", "x"])
    assert d.kind == "features" and d.x_train.dtype == np.float32 and d.y_test.tolist() == [2, 2, 0]


def test_image_folder(tmp_path):
    folder = _images(tmp_path / "photos", {"cat": [(12, 10)] * 3, "dog": [(12, 10)] * 2})
    d = owndata.load_dataset(folder)
    assert d.kind == "images" and d.x_train.shape == (5, 10, 12, 3) and d.x_train.dtype == np.uint8
    assert d.class_names == ["cat", "dog"] and d.counts.tolist() == [3, 2]


@pytest.mark.parametrize("case, match", [
    ("single", r"class\(es\) \['emu'\] have a single training example.*add examples"),
    ("nan", r"column 'b' holds 'an empty cell' in line 2, not a number.*fill the gaps"),
    ("text", r"column 'a' holds text \('tall' in line 3\).*encode it as numbers"),
    ("no_label", r"has no column 'species' \(its columns: \['a', 'b', 'label'\]\); name the label column"),
    ("empty", r"holds a header but no examples"),
])
def test_unusable_csv_is_refused_naming_file_and_fix(tmp_path, case, match):
    good = [(1, 2, "dog"), (0, 1, "cat"), (3, 4, "dog"), (2, 2, "cat")]
    rows = {"single": good + [(1, 1, "emu")], "nan": [(1, "", "dog")] + good, "text": good[:1] + [("tall", 1, "dog")]
            + good[1:], "no_label": good, "empty": []}[case]
    path = _write_csv(tmp_path / f"{case}.csv", rows)
    with pytest.raises(ValueError, match=match) as e:
        owndata.load_dataset(path, label_column="species" if case == "no_label" else "label")
    assert str(path) in str(e.value)


def test_mixed_image_sizes_and_empty_class_folder_are_refused(tmp_path):
    mixed = _images(tmp_path / "mixed", {"cat": [(12, 10), (12, 10)], "dog": [(8, 8), (12, 10)]})
    with pytest.raises(ValueError, match=r"images of mixed sizes: .*dog/0.png is 8x8, .*cat/0.png is 12x10; resize"):
        owndata.load_dataset(mixed)
    empty = _images(tmp_path / "empty", {"cat": [(8, 8)] * 2})
    (empty / "dog").mkdir()
    with pytest.raises(ValueError, match=r"empty/dog holds no images.*delete the empty folder"):
        owndata.load_dataset(empty)


def test_nan_in_an_array_and_empty_test_split_are_refused():
    x = np.ones((6, 3))
    x[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"the array x: column 2 holds nan in row 4"):
        owndata.load_dataset(x, [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"holds no examples; an empty split"):
        owndata.load_dataset(np.ones((6, 3)), [0, 0, 0, 1, 1, 1], test=np.ones((0, 3)), y_test=[])


def test_digits_lt_is_long_tailed_with_a_balanced_test_set():
    d = owndata.digits_lt()
    assert d.counts.tolist() == [140, 92, 61, 40, 27, 18, 11, 7, 5, 3]
    assert np.bincount(d.y_test).tolist() == [30] * 10 and d.x_train.shape[1] == 64


def test_carved_split_is_stratified_keeps_min_train_and_names_small_classes():
    y = np.repeat(np.arange(4), [50, 10, 3, 2])
    s = splits.carve_validation(y, fraction=0.2, min_train=2, seed=0)
    assert np.bincount(y[s.validation], minlength=4).tolist() == [10, 2, 1, 0]
    assert np.bincount(y[s.train], minlength=4).tolist() == [40, 8, 2, 2]
    assert s.not_validated == (3,) and not set(s.train) & set(s.validation)
    with pytest.warns(UserWarning, match=r"classes \['d'\] have too few training examples"):
        many = splits.carve_splits(y, n_splits=5, class_names=list("abcd"))
    assert len(many) == 5 and len({tuple(m.validation) for m in many}) == 5   # five different carvings


def test_no_warning_when_every_class_validates():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits.carve_splits(np.repeat([0, 1], 10))


def test_choose_counts_splits_won_and_credits_ties():
    rows = [{"method": m, "split": s, "seed": 0, "val_balanced_accuracy": v}
            for s, (a, b) in enumerate([(0.9, 0.8), (0.7, 0.8), (0.8, 0.8)]) for m, v in (("LA", a), ("CE", b))]
    c = splits.choose(rows)
    assert c["method"] == "LA" and c["wins"] == {"LA": 2, "CE": 2} and c["n_splits"] == 3
    assert "best or tied on 2 of 3 splits" in c["text"]


def test_patch_features_are_learned_from_pixels_alone():
    from elm_lite.engine.cifar import fake_cifar
    from elm_lite.patchfeatures import fit_patch_kmeans, patch_features
    x = fake_cifar(n_classes=3, n_per_class=6, n_test_per_class=1)["x_train"]
    model = fit_patch_kmeans(x, n_centroids=8, n_patches=2000, iterations=3, seed=0)   # no labels in the call
    f = patch_features(model, x, chunk=7)
    assert f.shape == (18, 32) and f.dtype == np.float32 and (f >= 0).all() and f.std() > 0
    np.testing.assert_array_equal(f, patch_features(fit_patch_kmeans(x, 8, n_patches=2000, iterations=3), x))
