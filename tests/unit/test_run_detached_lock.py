"""`rl run -d` holds the container's lock while its monitor starts it.

Between the monitor's "running" and the container's pid there is a window in which
`rl stop`/`rm -f`/`kill` find nothing to signal; they take the same lock, so holding it
across spawn_monitor makes them wait for the pid. That window is a few ms of a real start, too
short for an end-to-end test to hit on purpose, so the monitor is replaced here (the only
stand-in): it checks the lock from outside, as a concurrent `rl stop` would meet it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rootless.cli import run
from rootless.containers import create, lifecycle

CONTAINER_ID = "c0ffee" * 10 + "abcd"


def _locked_by_someone_else(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        assert exc.errno == errno.EWOULDBLOCK
        return True
    finally:
        os.close(fd)  # (also drops the lock when it was taken)
    return False


def test_run_detached_starts_the_container_under_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    lock_file = runtime / "rl" / "locks" / f"{CONTAINER_ID}.lock"
    record = SimpleNamespace(id=CONTAINER_ID)
    seen: list[bool] = []

    def spawn_monitor(store: Any, started: Any, early: Any = None) -> int:
        assert started is record
        seen.append(_locked_by_someone_else(lock_file))
        return 4242

    monkeypatch.setattr(lifecycle, "early_monitor", lambda: SimpleNamespace(cancel=lambda: None))
    monkeypatch.setattr(lifecycle, "spawn_monitor", spawn_monitor)
    monkeypatch.setattr(create, "prepare", lambda options, store: SimpleNamespace(record=record))
    store = SimpleNamespace(update_config=lambda *args, **kwargs: None)

    options: Any = SimpleNamespace()  # (prepare, replaced, is its only reader)
    assert run._run_detached(options, store) == 0
    assert seen == [True]  # held while the monitor started the container
    assert not _locked_by_someone_else(lock_file)  # and released afterwards
    assert capsys.readouterr().out == CONTAINER_ID + "\n"
