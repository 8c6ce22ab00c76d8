"""CIFAR-LT construction, the image loader's sources and errors, image models and augmentation.
Real data is never downloaded here: labels are generated, images are fake_cifar's."""
import pickle

import numpy as np
import pytest
import torch

from elm_lite import fit, predict
from elm_lite.engine.augment import crop_flip
from elm_lite.engine.cifar import fake_cifar, load_cifar_lt, longtail_indices
from elm_lite.models import ResNet32, SmallCNN
from elm_lite.train import set_seed

SHARED_NPZ = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_from_jpeg.npz"


def cifar_labels(n_classes, per_class, seed=123):
    """A shuffled label array like CIFAR's training set (per_class examples of each class)."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))


@pytest.mark.parametrize("n_classes,per_class,totals", [
    (10, 5000, {100: 12406, 50: 13996, 10: 20431}),
    (100, 500, {100: 10847, 50: 12608, 10: 19573}),
])
def test_longtail_totals(n_classes, per_class, totals):
    labels = cifar_labels(n_classes, per_class)
    for rho, total in totals.items():
        idx = longtail_indices(labels, rho)
        assert len(idx) == total == len(np.unique(idx))


def test_selection_follows_the_seeded_per_class_shuffle():
    labels = cifar_labels(10, 5000)
    idx = longtail_indices(labels, 100, seed=0)
    # the reference procedure, written out: seed once, shuffle each class's indices in order
    np.random.seed(0)
    expected = []
    for c in range(10):
        cls = np.where(labels == c)[0]
        np.random.shuffle(cls)
        expected.extend(cls[:int(5000 * 0.01 ** (c / 9))])
    assert idx.tolist() == expected


def test_different_seeds_same_counts_different_subsets():
    labels = cifar_labels(10, 5000)
    a, b = longtail_indices(labels, 100, seed=0), longtail_indices(labels, 100, seed=1)
    assert np.array_equal(np.bincount(labels[a]), np.bincount(labels[b]))
    assert set(a.tolist()) != set(b.tolist())


def test_load_from_npz(tmp_path):
    arrays = fake_cifar(10, n_per_class=120, n_test_per_class=7)
    np.savez(tmp_path / "c.npz", **arrays)
    data = load_cifar_lt("cifar10", rho=10, npz=tmp_path / "c.npz")
    assert data.counts.tolist() == [int(120 * 0.1 ** (i / 9)) for i in range(10)]
    assert data.x_train.shape[1:] == (32, 32, 3) and data.x_train.dtype == np.uint8
    assert np.bincount(data.y_test).tolist() == [7] * 10


def test_load_from_extracted_archive(tmp_path):
    arrays = fake_cifar(10, n_per_class=50, n_test_per_class=3)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x = arrays["x_train"].transpose(0, 3, 1, 2).reshape(len(arrays["x_train"]), -1)
    for i, part in enumerate(np.array_split(np.arange(len(x)), 5), start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": x[part], b"labels": arrays["y_train"][part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": arrays["x_test"].transpose(0, 3, 1, 2).reshape(30, -1),
                     b"labels": arrays["y_test"].tolist()}, f)
    data = load_cifar_lt("cifar10", rho=5, root=tmp_path)
    assert data.counts[0] == 50 and data.counts[-1] == 10
    np.testing.assert_array_equal(data.x_test, arrays["x_test"])


@pytest.mark.parametrize("change,match", [
    (lambda a: a.pop("y_test"), r"lacks the arrays \['y_test'\]"),
    (lambda a: a.update(x_train=a["x_train"][:, :16]), r"x_train must have shape \(N, 32, 32, 3\)"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "y_train must have shape"),
    (lambda a: a.update(y_test=a["y_test"] + 10), "labels in"),
])
def test_bad_npz(tmp_path, change, match):
    arrays = fake_cifar(10, n_per_class=20, n_test_per_class=2)
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        load_cifar_lt("cifar10", rho=2, npz=tmp_path / "bad.npz")


def test_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz") as err:
        load_cifar_lt("cifar10", root=tmp_path / "nothing")
    assert "download=True" in str(err.value) and "npz=" in str(err.value)
    assert not (tmp_path / "nothing").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar_lt("cifar10", npz=tmp_path / "missing.npz")


@pytest.mark.parametrize("kwargs,match", [(dict(name="imagenet"), "name must be"), (dict(rho=0.5), "rho")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_cifar_lt(**kwargs)


@pytest.mark.skipif(not SHARED_NPZ.exists(), reason="the shared CIFAR-10 copy is not beside this checkout")
def test_shared_cifar10_copy_builds_cifar10_lt():
    data = load_cifar_lt("cifar10", rho=100, npz=SHARED_NPZ)
    assert len(data.y_train) == 12406 and data.counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert np.bincount(data.y_test).tolist() == [1000] * 10


def test_resnet32_parameter_count_and_outputs():
    model = ResNet32(10)
    assert sum(p.numel() for p in model.parameters()) == 464_154  # "about 0.46 M"
    logits, z = model(torch.rand(2, 32, 32, 3) * 255)
    assert logits.shape == (2, 10) and z.shape == (2, 64)
    _, z = ResNet32(100, projection_dim=32)(torch.rand(2, 3, 32, 32) * 255)
    assert z.shape == (2, 32) and torch.allclose(z.norm(dim=1), torch.ones(2))


def test_crop_flip_shifts_and_mirrors_real_content():
    set_seed(0)
    x = torch.rand(64, 8, 8, 3)
    out = crop_flip(x, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (2, 2, 2, 2)).permute(0, 2, 3, 1)
    flips = 0
    for img, src in zip(out, padded):  # every output is some crop of the padded image, maybe flipped
        crops = [(src[dy:dy + 8, dx:dx + 8], f) for dy in range(5) for dx in range(5) for f in (0, 1)]
        matches = [f for crop, f in crops if torch.equal(img, crop.flip(1) if f else crop)]
        assert matches
        flips += matches[0]
    assert 10 < flips < 54


@pytest.mark.slow
def test_small_cnn_learns_generated_images():
    arrays = fake_cifar(4, n_per_class=40, n_test_per_class=20)
    set_seed(0)
    model = SmallCNN(4)
    fit(model, arrays["x_train"], arrays["y_train"], epochs=6, batch_size=32, lr=3e-3, views=[crop_flip])
    acc = (predict(model, arrays["x_test"]) == arrays["y_test"]).mean()
    assert acc > 0.6  # chance is 0.25


def _fake_archive(tmp_path):
    import io
    import tarfile
    arrays = fake_cifar(10, n_per_class=20, n_test_per_class=2)
    path = tmp_path / "cifar-10-python.tar.gz"
    x = arrays["x_train"].transpose(0, 3, 1, 2).reshape(200, -1)
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            raw = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        for i in range(5):
            add(f"data_batch_{i + 1}", {b"data": x[i::5], b"labels": arrays["y_train"][i::5].tolist()})
        add("test_batch", {b"data": arrays["x_test"].transpose(0, 3, 1, 2).reshape(20, -1),
                           b"labels": arrays["y_test"].tolist()})
    return path


def test_download_checks_the_md5_and_extracts(tmp_path, monkeypatch):
    import hashlib

    from elm_lite.engine import cifar as D
    archive = _fake_archive(tmp_path)
    monkeypatch.setitem(D.CIFAR_URLS, "cifar10", archive.as_uri())
    monkeypatch.setitem(D.CIFAR_MD5, "cifar10", hashlib.md5(archive.read_bytes()).hexdigest())
    data = load_cifar_lt("cifar10", rho=2, root=tmp_path / "root", download=True)
    assert data.counts[0] == 20 and data.counts[-1] == 10
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["cifar-10-batches-py"]


def test_corrupt_download_is_rejected_and_removed(tmp_path, monkeypatch):
    from elm_lite.engine import cifar as D
    monkeypatch.setitem(D.CIFAR_URLS, "cifar10", _fake_archive(tmp_path).as_uri())
    with pytest.raises(ValueError, match="MD5"):
        load_cifar_lt("cifar10", root=tmp_path / "root", download=True)
    assert list((tmp_path / "root").iterdir()) == []


def test_unreachable_download_says_what_to_do_and_leaves_nothing(tmp_path, monkeypatch):
    from elm_lite.engine import cifar as D
    monkeypatch.setitem(D.CIFAR_URLS, "cifar10", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens
    with pytest.raises(FileNotFoundError, match="could not download .*by hand.*npz=PATH"):
        load_cifar_lt("cifar10", root=tmp_path / "root", download=True)
    assert list((tmp_path / "root").iterdir()) == []
