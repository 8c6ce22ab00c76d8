"""Run folders: one process at a time (two real processes), a dead holder's lock reported as stale,
atomic writes that leave no temporary file when the disk is full, JSON that strict readers accept."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from elm_lite.cli import main
from elm_lite.engine.cifar import fake_cifar, load_cifar_lt
from elm_lite.engine.fullscale import save_run
from elm_lite.engine.runfiles import LOCK_NAME, RunFolderLocked, run_lock, save_atomic
from elm_lite.engine.table import train_table
from elm_lite.results import check_run_results

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(model="small_cnn", epochs=1, batch_size=16, device="cpu", progress=False)


def _start(args: list[str], folder: Path, cwd=ROOT) -> subprocess.Popen:
    """A second Python process; returns once it holds ``folder``'s lock."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (folder / LOCK_NAME).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the second process did not take the lock: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    return proc


def _holder(folder: Path) -> subprocess.Popen:
    """A process that holds ``folder`` until it is killed."""
    code = (f"import time; from elm_lite.engine.runfiles import run_lock\nwith run_lock({str(folder)!r}):\n"
            "    time.sleep(600)")
    return _start(["-c", code], folder)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("lock") / "ok.npz"
    np.savez(path, **fake_cifar(10, n_per_class=30, n_test_per_class=5))
    return path


@pytest.mark.slow
def test_two_train_processes_cannot_share_a_folder_and_a_killed_ones_lock_is_stale(npz, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--npz", str(npz), "--rho", "10", "--model", "small_cnn", "--batch-size", "32",
             "--checkpoint-every", "1", "--out", str(out)]
    first = _start(["-m", "elm_lite", *train, "--epochs", "100000"], out)
    try:
        with pytest.raises(SystemExit) as stop:
            main(train + ["--epochs", "1", "--overwrite"])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1, err
        assert f"error: run folder {out} is in use by process {first.pid} on " in err[0]
        assert "wait for it to finish, or use another folder" in err[0]
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9: no clean-up in the first process
        first.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
    with pytest.raises(SystemExit) as stop:
        main(train + ["--epochs", "1", "--overwrite"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"has a stale lock: process {first.pid} on " in err
    assert f"is no longer running. If no other run uses this folder, delete {out / LOCK_NAME} and run again" in err
    (out / LOCK_NAME).unlink()
    main(train + ["--epochs", "1", "--overwrite"])  # the folder is free again, and the lock goes with the run
    assert (out / "results.json").exists() and not (out / LOCK_NAME).exists()


def test_kill_without_9_gives_the_lock_back(npz, tmp_path):
    out = tmp_path / "run"
    run = _start(["-m", "elm_lite", "train", "--npz", str(npz), "--rho", "10", "--model", "small_cnn", "--epochs",
                  "100000", "--out", str(out)], out)
    run.terminate()
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (out / LOCK_NAME).exists()


def test_a_table_refuses_a_run_another_process_holds_and_writes_nothing(tmp_path):
    data = load_cifar_lt("cifar10", rho=5, arrays=fake_cifar(n_classes=10, n_per_class=12, seed=0))
    holder = _holder(tmp_path / "la-s0")
    try:
        with pytest.raises(RunFolderLocked, match=rf"run folder {tmp_path / 'la-s0'} is in use by process "
                                                  rf"{holder.pid} on "):
            train_table(data, ["ce", "la"], [0], tmp_path, **TINY)
        assert not (tmp_path / "ce-s0" / "results.json").exists() and not (tmp_path / "table.json").exists()
        assert not (tmp_path / "ce-s0" / LOCK_NAME).exists()  # the locks it took are given back
        other = train_table(data, ["ce"], [0], tmp_path, **TINY)  # other runs may share the folder
        assert other["trained_now"] == ["ce-s0"]
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_given_back_on_an_error_and_nested_use_is_allowed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with run_lock(tmp_path):
            with run_lock(tmp_path):  # a table's run folder passed on to train_cifar
                assert (tmp_path / LOCK_NAME).exists()
            assert (tmp_path / LOCK_NAME).exists()
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- a full disk leaves no temporary


def test_a_failed_json_write_removes_its_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    save_atomic({"old": 1}, target)

    def full(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:3])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"new": 2}, target)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"] and json.loads(target.read_text()) == {"old": 1}


def test_a_failed_checkpoint_write_removes_its_temporary(tmp_path, monkeypatch):
    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file: "
                           "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"cannot write .*checkpoint.pt .*disk has space"):
        save_atomic({"model": {}}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_embeddings_write_removes_its_temporary(tmp_path, monkeypatch):
    data = load_cifar_lt("cifar10", rho=5, arrays=fake_cifar(n_classes=10, n_per_class=12, seed=0))

    def full(f, **arrays):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OSError, match="No space left"):
        save_run(tmp_path, data, {}, np.zeros((len(data.y_test), 4), np.float32))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- strict JSON


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_files_hold_null_for_nan_and_read_back_as_nan(tmp_path):
    save_atomic({"shot_accuracy": {"many": 0.5, "few": float("nan")}, "steps": (1, float("inf"))},
                      tmp_path / "x.json")
    assert _strict((tmp_path / "x.json").read_text()) == {"shot_accuracy": {"many": 0.5, "few": None},
                                                          "steps": [1, None]}
    data = load_cifar_lt("cifar10", rho=5, arrays=fake_cifar(n_classes=10, n_per_class=12, seed=0))
    table = train_table(data, ["la"], [0], tmp_path / "table", **TINY)
    assert any(v != v for v in table["runs"][0]["shot_accuracy"].values())  # an empty split: nan in memory
    for path in (tmp_path / "table" / "table.json", tmp_path / "table" / "la-s0" / "results.json"):
        _strict(path.read_text())                                             # null on disk
    saved = check_run_results(json.loads((tmp_path / "table" / "la-s0" / "results.json").read_text()))
    def empty(shots):
        return [k for k, v in shots.items() if v != v]
    assert empty(saved["shot_accuracy"]) == empty(table["runs"][0]["shot_accuracy"]) != []


def test_shipped_json_reads_null_as_nan():
    """A shipped file regenerated by the strict writer (null) reads as the older ones (NaN) do."""
    from elm_lite.engine.runfiles import json_safe
    from elm_lite.results import _nan_for_null, load_results
    old = load_results("cifar10_lt_cpu.json")
    text = json.dumps(json_safe(old), allow_nan=False)
    assert "null" in text
    assert _same_with_nan(_nan_for_null(json.loads(text)), old)


def _same_with_nan(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_with_nan(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_with_nan(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)
