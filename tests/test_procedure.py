"""`elm-lite compare` and elm_lite.procedure at smoke sizes: a CSV, an .npz of features, an image folder and
digits-lt, each ending in table.json and report.html; the choice never reads the test set; resume and run
identity; the report opens offline in Chromium with its figures drawn."""
import json

import numpy as np
import pytest
from conftest import chromium_or_skip, open_offline

from elm_lite import capstone, owndata, procedure
from elm_lite.cli import main

SMOKE = dict(n_splits=2, epochs=2, progress=False)


def _blobs(n_per_class=(40, 12, 4), dim=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    return rng.normal(size=(len(y), dim)) + 2 * np.eye(dim)[y], y


def _csv(path, x, y):
    names = np.array(["oak", "elm", "yew"])[y]
    path.write_text("f1,f2,f3,f4,f5,f6,tree\n" + "".join(",".join(f"{v:.4f}" for v in row) + f",{n}\n"
                                                          for row, n in zip(x, names)))
    return path


def _check_outputs(out, methods, has_test=True):
    table = json.loads((out / "table.json").read_text())
    assert list(table["methods"]) == methods
    la = table["methods"]["la"]
    assert la["validation"]["n"] == 2 * len(table["seeds"]) and la["validation"]["sd"] >= 0
    assert (la["test"] is not None) == has_test
    assert {"many", "medium", "few", "per_class", "wins"} <= set(la)
    for name in methods[1:]:
        assert "minus_la" in table["methods"][name] or name == "la"
    assert table["choice"]["method"] in {m["label"] for m in table["methods"].values()}
    assert f"of {table['splits']['n_splits']} splits" in table["choice"]["text"]
    page = (out / "report.html").read_text()
    assert "* plotly.js v" in page and page.count('class="plotly-graph-div"') == 4
    return table


def test_compare_on_a_csv_with_a_test_csv(tmp_path, capsys):
    x, y = _blobs()
    xt, yt = _blobs((10, 10, 10), seed=1)
    main(["compare", "--data", str(_csv(tmp_path / "train.csv", x, y)), "--label-column", "tree",
          "--test", str(_csv(tmp_path / "test.csv", xt, yt)), "--methods", "ce,la,posthoc-la", "--seeds", "0,1",
          "--splits", "2", "--epochs", "2", "--out", str(tmp_path / "out")])
    table = _check_outputs(tmp_path / "out", ["ce", "la", "posthoc-la"])
    assert table["data"]["class_names"] == ["elm", "oak", "yew"] and table["data"]["counts"] == [12, 40, 4]
    assert "chosen" in capsys.readouterr().out


def test_compare_on_an_npz_of_features_without_a_test_set(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "emb.npz", x_train=x, y_train=y)
    main(["compare", "--data", str(tmp_path / "emb.npz"), "--methods", "la,ce", "--seeds", "0",
          "--splits", "2", "--epochs", "2", "--out", str(tmp_path / "out")])
    _check_outputs(tmp_path / "out", ["la", "ce"], has_test=False)


def test_compare_on_an_image_folder_written_with_pillow(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", {"red": 6, "blue": 3}), ("test", {"red": 2, "blue": 2})):
        for name, count in n.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                a = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                a[..., 0 if name == "red" else 2] += 150
                Image.fromarray(a).save(tmp_path / split / name / f"{i}.png")
    main(["compare", "--data", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--methods", "ce,la",
          "--seeds", "0", "--splits", "2", "--epochs", "1", "--out", str(tmp_path / "out")])
    table = _check_outputs(tmp_path / "out", ["ce", "la"])
    assert table["data"]["kind"] == "images"


def test_compare_on_digits_lt_every_capstone_method(tmp_path):
    main(["compare", "--dataset", "digits-lt", "--seeds", "0", "--splits", "2", "--epochs", "1",
          "--out", str(tmp_path / "out")])
    table = _check_outputs(tmp_path / "out", list(capstone.CAPSTONE_METHODS))
    assert table["data"]["counts"] == [140, 92, 61, 40, 27, 18, 11, 7, 5, 3]


def test_the_choice_never_reads_the_test_set():
    """Permuting the test labels changes the test column and nothing the choice reads."""
    data = owndata.digits_lt()
    shuffled = owndata.OwnData(data.name, data.kind, data.x_train, data.y_train, data.class_names, data.x_test,
                               np.random.default_rng(0).permutation(data.y_test))
    names = ["ce", "la", "reweight-inverse"]
    a, b = (procedure.compare_methods(d, names, seeds=(0,), **SMOKE) for d in (data, shuffled))
    assert a["choice"] == b["choice"]
    for name in names:
        assert a["methods"][name]["validation"] == b["methods"][name]["validation"]
    assert a["methods"]["la"]["test"] != b["methods"]["la"]["test"]


def test_resume_and_run_identity(tmp_path, monkeypatch):
    x, y = _blobs()
    data = owndata.load_dataset(x, y)
    out = tmp_path / "out"
    first = procedure.compare_methods(data, ["ce", "la"], seeds=(0,), out=out, **SMOKE)
    with pytest.raises(ValueError, match="already holds runs of this comparison; pass resume=True"):
        procedure.compare_methods(data, ["ce", "la"], seeds=(0,), out=out, **SMOKE)
    other = owndata.load_dataset(x[:-1], y[:-1])
    with pytest.raises(ValueError, match=r"holds the runs of another comparison; it differs in data.content_hash.*"
                                         r"data.counts"):
        procedure.compare_methods(other, ["ce", "la"], seeds=(0,), out=out, resume=True, **SMOKE)
    from elm_lite import methods
    changed = {**methods.METHODS, "la": methods.get("la").variant("LA", tau=2.0)}
    with monkeypatch.context() as m:
        m.setattr(methods, "METHODS", changed)
        with pytest.raises(ValueError, match=r"holds runs of method 'la' as defined before"):
            procedure.compare_methods(data, ["ce", "la"], seeds=(0,), out=out, resume=True, **SMOKE)
    monkeypatch.setattr(procedure, "_train_part", lambda *a: pytest.fail("a finished run was trained again"))
    again = procedure.compare_methods(data, ["ce", "la"], seeds=(0,), out=out, resume=True, **SMOKE)
    from elm_lite.engine.runfiles import json_safe
    assert json.dumps(json_safe(again["methods"])) == json.dumps(json_safe(first["methods"]))


def test_bad_options_end_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "missing.csv does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "digits-lt", "--methods", "ce", "--out", str(tmp_path / "o")])
    assert "methods must include 'la'" in capsys.readouterr().err


@pytest.mark.browser
def test_report_opens_offline_with_its_figures_drawn(tmp_path, browser):
    chromium_or_skip()
    x, y = _blobs()
    xt, yt = _blobs((10, 10, 10), seed=1)
    procedure.compare_methods(owndata.load_dataset(x, y, test=xt, y_test=yt), ["ce", "la"], seeds=(0, 1),
                              out=tmp_path, **SMOKE)
    page, outside, errors, _ = open_offline(browser, (tmp_path / "report.html").as_uri())   # only file:// passes
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4", timeout=30_000)
    assert page.locator(".js-plotly-plot").count() == 4
    assert page.evaluate("[...document.querySelectorAll('.js-plotly-plot')].every(g => g.data.length > 0)")
    assert not outside, f"the report asked for outside resources: {outside}"
    assert not errors, f"console errors: {errors}"
    page.close()


def test_scores_carry_ece_of_the_predicted_probabilities():
    """ECE of the softmax of the logits a method predicts with: confident and right is 0, confident and
    wrong is 1, a uniform guess over 4 classes that is right half the time is |0.5 - 0.25|."""
    y = np.array([0, 1, 2, 3])
    sure = 50 * np.eye(4)
    assert procedure._scores("test", y, sure, 4, np.ones(4))["test_ece"] == pytest.approx(0)
    assert procedure._scores("test", y, sure[[1, 2, 3, 0]], 4, np.ones(4))["test_ece"] == pytest.approx(1)
    flat = procedure._scores("val", np.array([0, 0, 1, 1]), np.zeros((4, 4)), 4, np.ones(4))
    assert flat["val_ece"] == pytest.approx(0.25)


def test_ece_column_and_weight_decay_chosen_on_validation(tmp_path):
    """focal and weight balancing train on feature vectors; ECE (validation and test, and on test after
    temperature scaling) is in every row, in table.json (mean, sd, n; paired to LA) and in the text table and
    report; weight balancing's weight decay is the grid value with the best mean validation score of its
    split; permuting the test labels changes neither that choice, nor the temperature, nor anything
    validation shows."""
    from elm_lite.recipes import WEIGHT_BALANCING
    data = owndata.digits_lt()
    shuffled = owndata.OwnData(data.name, data.kind, data.x_train, data.y_train, data.class_names, data.x_test,
                               np.random.default_rng(0).permutation(data.y_test))
    names = ["la", "focal", "weight-balancing"]
    a = procedure.compare_methods(data, names, seeds=(0, 1), out=tmp_path / "a", **SMOKE)
    b = procedure.compare_methods(shuffled, names, seeds=(0, 1), **SMOKE)
    for r in a["rows"]:
        assert 0 <= r["val_ece"] <= 1 and 0 <= r["test_ece"] <= 1 and 0 <= r["test_ece_scaled"] <= 1
    assert [r["temperature"] for r in a["rows"]] == [r["temperature"] for r in b["rows"]]
    wb = [r for r in a["rows"] if r["method"] == "weight-balancing"]
    assert len(wb) == 4
    for r in wb:
        scores = r["weight_decay_validation"]
        assert set(scores) == {str(wd) for wd in WEIGHT_BALANCING["weight_decay_grid"]}
        assert scores[str(r["weight_decay"])] == max(scores.values())
    chosen = [r["weight_decay"] for r in b["rows"] if r["method"] == "weight-balancing"]
    assert [r["weight_decay"] for r in wb] == chosen
    for name in names:
        m = a["methods"][name]
        assert m["ece"]["test"]["n"] == m["ece"]["validation"]["n"] == 4
        assert m["ece"]["validation"] == b["methods"][name]["ece"]["validation"]
        assert m["ece"]["test"]["mean"] == pytest.approx(np.mean([r["test_ece"] for r in a["rows"]
                                                                  if r["method"] == name]))
    assert a["methods"]["focal"]["ece_minus_la"]["test"]["n"] == 4
    text = procedure.text_table(a)
    assert text.splitlines()[0].rstrip().endswith("ECE  ECE·T")
    assert f"{a['methods']['focal']['ece']['test_scaled']['mean']:.3f}" in text.splitlines()[2]
    assert f"{a['methods']['focal']['ece']['test']['mean']:.3f}" in text.splitlines()[2]
    assert "ECE" in (tmp_path / "a" / "report.html").read_text()
