"""A command that acts on a container its runner has marked "running" but not yet started
waits for the container's pid instead of finding nothing to signal, and ps and inspect show
it once it has one.

This test process plays the runner (mark_running records the caller), a `sleep` plays the
container's pid 1, and a thread records that pid a moment later, as the runner's on_started
does once the container runs.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.containers import lifecycle
from rootless.containers.store import ContainerStore, process_start_time
from rootless.errors import RlError


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerStore]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # (the containers' lock files)
    opened = ContainerStore.open(tmp_path / "store")
    yield opened
    opened.close()


def _started_later(root: Path, container_id: str, pid: int, delay: float) -> threading.Thread:
    def record() -> None:
        time.sleep(delay)
        other = ContainerStore.open(root)  # (its own connection: another thread)
        try:
            other.mark_started(container_id, pid)
        finally:
            other.close()

    thread = threading.Thread(target=record)
    thread.start()
    return thread


def test_kill_in_the_start_window_waits_for_the_pid(store: ContainerStore) -> None:
    record = store.create(name="early", image_id="", image_name="i", command=["sleep"])
    store.mark_running(record.id)  # this process runs it; no pid yet
    container = subprocess.Popen(["sleep", "100"])
    try:
        recorder = _started_later(store.root, record.id, container.pid, delay=0.3)
        began = time.monotonic()
        lifecycle.kill(store, "early", signal.SIGTERM)  # (it raised "can only kill running")
        waited = time.monotonic() - began
        recorder.join()
        assert container.wait(timeout=10) == -signal.SIGTERM
        assert waited >= 0.25
    finally:
        container.kill()
        container.wait()


def test_the_wait_ends_when_the_runner_is_gone(store: ContainerStore) -> None:
    record = store.create(name="orphan", image_id="", image_name="i", command=["sleep"])
    runner = subprocess.Popen(["sleep", "100"])
    try:
        store.mark_running(record.id)
        # The record names a runner that dies before starting anything: a killed monitor.
        store.db.execute(
            "UPDATE containers SET runner_pid = ?, runner_start = ? WHERE id = ?",
            (runner.pid, process_start_time(runner.pid), record.id),
        )

        def runner_dies() -> None:
            runner.kill()
            runner.wait()  # (reaped: a zombie would still count as the runner)

        threading.Timer(0.2, runner_dies).start()
        began = time.monotonic()
        with pytest.raises(RlError, match="can only kill running containers"):
            lifecycle.kill(store, "orphan", signal.SIGTERM)
        assert time.monotonic() - began < lifecycle.START_TIMEOUT / 2
    finally:
        runner.kill()
        runner.wait()


def test_ps_and_inspect_read_a_starting_container_once_it_has_its_pid(
    store: ContainerStore,
) -> None:
    from rootless.cli.containers import settled

    record = store.create(name="shown", image_id="", image_name="i", command=["sleep"])
    store.mark_running(record.id)
    recorder = _started_later(store.root, record.id, 4242, delay=0.2)
    shown = settled(store, store.get("shown"))
    recorder.join()
    assert (shown.state, shown.container_pid) == ("running", 4242)  # (it was "running", None)
    # A record outside the window is returned as it is, at once.
    store.mark_exited(record.id, 0)
    exited = store.get("shown")
    assert settled(store, exited) is exited
