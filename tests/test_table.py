"""python -m elm_lite table: methods x seeds trained together, finished runs never retrained."""
import json

import numpy as np
import pytest

from elm_lite import cli
from elm_lite.data import fake_cifar, load_cifar_lt
from elm_lite.table import train_table

pytestmark = pytest.mark.outcome   # trains and compares: CI runs it again under another arithmetic

TINY = dict(model="small_cnn", epochs=1, batch_size=16, device="cpu", progress=False)


@pytest.fixture(scope="module")
def data():
    return load_cifar_lt("cifar10", rho=5, arrays=fake_cifar(n_classes=10, n_per_class=12, seed=0))


def test_table_writes_every_run_and_never_retrains_a_finished_one(data, tmp_path):
    first = train_table(data, ["la", "supcon-la"], [0, 1], tmp_path, **TINY)
    assert first["trained_now"] == ["la-s0", "la-s1", "supcon-la-s0", "supcon-la-s1"]
    for name in first["trained_now"]:
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert len(results["history"]["epoch"]) == 1 and results["trained_together"]
    assert not list((tmp_path / "groups").glob("*.pt"))          # group checkpoints go once results stand
    again = train_table(data, ["la", "supcon-la", "ce"], [0, 1], tmp_path, **TINY)
    assert again["trained_now"] == ["ce-s0", "ce-s1"]
    assert [r["balanced_accuracy"] for r in again["runs"][:2]] == [r["balanced_accuracy"] for r in first["runs"][:2]]
    assert "la" in again["table"] and "±" in again["table"]
    assert json.loads((tmp_path / "table.json").read_text())["trained_now"] == ["ce-s0", "ce-s1"]


def test_table_refuses_a_finished_run_of_another_setting_unless_overwrite(data, tmp_path):
    train_table(data, ["la"], [0], tmp_path, **TINY)
    with pytest.raises(ValueError, match="differs in recipe"):
        train_table(data, ["la"], [0], tmp_path, **{**TINY, "batch_size": 8})
    redone = train_table(data, ["la"], [0], tmp_path, overwrite=True, **{**TINY, "batch_size": 8})
    assert redone["trained_now"] == ["la-s0"]


def test_grouped_table_runs_equal_separate_runs(data, tmp_path):
    together = train_table(data, ["ce", "la"], [0, 1], tmp_path / "together", **TINY)
    separate = train_table(data, ["ce", "la"], [0, 1], tmp_path / "separate", separate=True, **TINY)
    for a, b in zip(together["runs"], separate["runs"]):
        assert (a["loss"], a["seed"]) == (b["loss"], b["seed"])
        assert a["balanced_accuracy"] == pytest.approx(b["balanced_accuracy"], abs=0.02)


@pytest.mark.parametrize("argv, message", [
    (["--losses", "la,nope"], "--losses: expected comma-separated methods"),
    (["--seeds", "0,0"], "--seeds: seeds repeat"),
    (["--seeds", "a"], "--seeds: expected comma-separated seeds"),
    (["--group-size", "0"], "--group-size: must be >= 1"),
])
def test_table_cli_bad_options_end_in_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        cli.main(["table", "--out", str(tmp_path), *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_table_bad_arguments_are_named(data, tmp_path):
    with pytest.raises(ValueError, match="at least one method and one seed"):
        train_table(data, ["la"], [], tmp_path, **TINY)
    with pytest.raises(ValueError, match="group_size must be"):
        train_table(data, ["la"], [0], tmp_path, group_size=0, **TINY)
    np.testing.assert_equal(list(tmp_path.iterdir()), [])
