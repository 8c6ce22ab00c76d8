"""Run folders on disk: atomic writes that leave nothing behind, JSON that every reader accepts,
and the lock that gives a run folder to one process at a time.

    with run_lock(folder):          # OUT/run.lock holds {"pid", "host", "since", "command"}
        ...                         # write checkpoints and results
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

LOCK_NAME = "run.lock"
_HELD: set[Path] = set()  # folders this process holds (a table's run folder passed on to train_cifar)


class RunFolderLocked(RuntimeError):
    """Another process holds the run folder, or a dead one left its lock behind."""


def atomic_write(path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it into place: an interruption
    never leaves a half-written file under ``path``, and a failed write (a full disk) removes the
    temporary file before the error goes on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(obj):
    """``obj`` with every NaN or infinity replaced by ``None`` (JSON ``null``) and tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def save_atomic(obj, path) -> None:
    """Write ``obj`` to ``path`` through :func:`atomic_write`: strict JSON for a ``.json`` file (``null`` for
    NaN or inf, :func:`json_safe`), ``torch.save`` otherwise (checkpoints). A failure names the file."""
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps(json_safe(obj), indent=1, allow_nan=False)
        write = lambda tmp: tmp.write_text(text)  # noqa: E731
    else:
        write = lambda tmp: torch.save(obj, tmp)  # noqa: E731
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as e:  # torch reports a read-only folder without the path
        raise OSError(f"cannot write {path} ({type(e).__name__}: {str(e).splitlines()[0]}); check that the folder "
                      "is writable and the disk has space.") from None


def read_json(path, fix: str):
    """The JSON object in ``path``; a damaged file is named in a ``ValueError`` with ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); {fix}") from None


def differences(saved: dict | None, now: dict, names: tuple = ("saved", "now"), prefix: str = "") -> list[str]:
    """Where two identities (nested dicts) differ: one ``"key: <saved> X, <now> Y"`` per field, nested keys
    dotted, values cut at 60 characters -- why a checkpoint or a run folder belongs to another run."""
    saved, out = saved or {}, []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k, "(absent)"), now.get(k, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, names, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {names[0]} {str(a)[:60]}, {names[1]} {str(b)[:60]}")
    return out


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _refusal(folder: Path, lock: Path) -> str:
    """Why ``folder`` cannot be taken: its holder, or a stale or damaged lock and how to clear it."""
    try:
        held = json.loads(lock.read_text())
        pid, host = int(held["pid"]), str(held["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return (f"run folder {folder} has a damaged lock file {lock}; if no run uses this folder, delete it and "
                "run again.")
    who = f"process {pid} on {host} (since {held.get('since')}: {held.get('command')})"
    if host == socket.gethostname() and pid == os.getpid():   # this process does not hold it (see run_lock)
        return (f"run folder {folder} has a stale lock: it names {who}, which is this very process's PID, yet this "
                "process never took it -- an earlier process with the same PID left it (a restarted container "
                f"reuses PIDs). If no other run uses this folder, delete {lock} and run again (--resume continues "
                "its checkpoint).")
    if host == socket.gethostname() and not _alive(pid):
        return (f"run folder {folder} has a stale lock: {who} is no longer running. If no other run uses this "
                f"folder, delete {lock} and run again (--resume continues its checkpoint).")
    return f"run folder {folder} is in use by {who}; wait for it to finish, or use another folder."


@contextmanager
def run_lock(folder):
    """Hold ``folder`` (created) for this process: ``folder/run.lock`` is created atomically with this
    process's PID, host, start time and command, and removed on exit (an exception included). A
    second process is refused with :class:`RunFolderLocked` naming the holder; a lock left by a dead
    process on this host is reported as stale with how to clear it (never taken over silently: the
    holder could be a process this host cannot see, on a shared file system). Nested use in one
    process is a no-op."""
    folder = Path(folder)
    if not str(folder).strip():
        raise ValueError("out_dir is empty; name a folder for the run, e.g. runs/la-s0.")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out_dir {folder} exists and is not a folder; name a folder for the run.")
    key = folder.resolve()
    if key in _HELD:
        yield folder
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the run folder {folder}: {e.strerror or e}") from None
    lock = folder / LOCK_NAME
    mine = folder / f"{LOCK_NAME}.{os.getpid()}.tmp"
    try:
        mine.write_text(json.dumps(_holder()))
        os.link(mine, lock)  # atomic and exclusive: fails if the lock exists
    except FileExistsError:
        raise RunFolderLocked(_refusal(folder, lock)) from None
    finally:
        mine.unlink(missing_ok=True)
    _HELD.add(key)
    try:
        yield folder
    finally:
        _HELD.discard(key)
        lock.unlink(missing_ok=True)
