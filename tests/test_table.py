"""python -m elm_lite table: methods x seeds trained together, finished runs never retrained."""
import json

import numpy as np
import pytest

from elm_lite import cli
from elm_lite.engine.cifar import fake_cifar, load_cifar_lt
from elm_lite.engine.table import train_table

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
        assert (a["method"], a["seed"]) == (b["method"], b["seed"])
        assert a["balanced_accuracy"] == pytest.approx(b["balanced_accuracy"], abs=0.02)


@pytest.mark.parametrize("argv, message", [
    (["--methods", "la,nope"], "--methods: expected comma-separated methods"),
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


def test_a_second_table_on_other_data_refuses_naming_what_differs_and_overwrite_retrains(data, tmp_path):
    train_table(data, ["la"], [0], tmp_path, **TINY)
    before = json.loads((tmp_path / "la-s0" / "results.json").read_text())["identity"]
    other = load_cifar_lt("cifar10", rho=5, seed=1, arrays=fake_cifar(n_classes=10, n_per_class=12, seed=0))
    with pytest.raises(ValueError, match=r"la-s0/results.json holds a finished run of another setting; it differs "
                                         r"in data_seed \(finished run 0, this table 1\); data_sha256"):
        train_table(other, ["la"], [0], tmp_path, **TINY)
    images = load_cifar_lt("cifar10", rho=5, arrays=fake_cifar(n_classes=10, n_per_class=12, seed=1))  # another npz
    with pytest.raises(ValueError, match=r"differs in data_sha256 \(finished run '\w+', this table '\w+'\)\. "
                                         r"Use another --out, or --overwrite"):
        train_table(images, ["la"], [0], tmp_path, **TINY)
    redone = train_table(images, ["la"], [0], tmp_path, overwrite=True, **TINY)
    assert redone["trained_now"] == ["la-s0"]
    after = json.loads((tmp_path / "la-s0" / "results.json").read_text())["identity"]
    assert after["data_sha256"] != before["data_sha256"] and after["method"] == before["method"]


def test_repeated_methods_are_refused_like_repeated_seeds(data, tmp_path):
    for separate in (False, True):
        with pytest.raises(ValueError, match=r"methods repeat in \['la', 'la'\]; each run of a table is one method"):
            train_table(data, ["la", "la"], [0], tmp_path, separate=separate, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_clears_a_stale_group_checkpoint(data, tmp_path, monkeypatch):
    import elm_lite.engine.table as table_module

    def stop(*args):  # the machine goes away after the group's last checkpoint, before its results
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(table_module, "save_run", stop)
        with pytest.raises(KeyboardInterrupt):
            train_table(data, ["ce", "la"], [0], tmp_path, group_size=2, **TINY)
    assert len(list((tmp_path / "groups").glob("*.pt"))) == 1
    with pytest.raises(ValueError, match=r"groups/\w+\.pt was written by a different run; it differs in .*batch_size"):
        train_table(data, ["ce", "la"], [0], tmp_path, group_size=2, **{**TINY, "batch_size": 8})
    redone = train_table(data, ["ce", "la"], [0], tmp_path, group_size=2, overwrite=True, **{**TINY, "batch_size": 8})
    assert redone["trained_now"] == ["ce-s0", "la-s0"] and not list((tmp_path / "groups").glob("*.pt"))


def test_a_damaged_results_file_is_named_with_the_fix(data, tmp_path, capsys):
    train_table(data, ["la"], [0], tmp_path, **TINY)
    results = tmp_path / "la-s0" / "results.json"
    results.write_text(results.read_text()[:400])
    with pytest.raises(ValueError, match=rf"{results} is damaged \(Unterminated string .*\); delete it to train that "
                                         r"run again, or start the table over with overwrite=True \(--overwrite\)"):
        train_table(data, ["la"], [0], tmp_path, **TINY)
    assert train_table(data, ["la"], [0], tmp_path, overwrite=True, **TINY)["trained_now"] == ["la-s0"]
    saved = json.loads(results.read_text())
    del saved["identity"]  # a run that does not say what it trained matches nothing
    results.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"holds a finished run of another setting; it differs in .*dataset \(finished "
                                         r"run '\(absent\)', this table 'cifar10'\)"):
        train_table(data, ["la"], [0], tmp_path, **TINY)


def test_overwrite_leaves_other_files_alone(data, tmp_path):
    train_table(data, ["ce", "la"], [0], tmp_path, **TINY)
    (tmp_path / "notes.txt").write_text("mine")
    train_table(data, ["la"], [0], tmp_path, overwrite=True, **TINY)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "ce-s0" / "results.json").exists()
    table = json.loads((tmp_path / "table.json").read_text())   # ce-s0 is still on disk: still listed, as such
    assert [r["method"] for r in table["runs"]] == ["la", "ce"] and table["from_other_tables"] == ["ce-s0"]
