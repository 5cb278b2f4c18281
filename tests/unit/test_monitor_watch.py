"""The monitor's watcher (rootless.monitor.watch): what crosses its exec, its lean exit record,
and what it imports. Real sockets, pipes, processes and a real SQLite store; nothing mocked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from rootless.containers.store import ContainerStore
from rootless.monitor import attach as frames
from rootless.monitor import watch
from rootless.monitor.logwriter import LogWriter

REPO = Path(__file__).resolve().parents[2]


def _listener(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.bind(str(tmp_path / "attach.sock"))
    sock.listen(4)
    return sock


def test_the_handoff_carries_fds_clients_and_a_cut_frame(tmp_path: Path) -> None:
    listener = _listener(tmp_path)
    ours, theirs = socket.socketpair()
    client = watch.Client(theirs, greeted=True, stdin=True)
    half = frames.encode_frame(frames.STDIN, b"hello")[:4]
    list(client.decoder.feed(half))  # a frame the exec would cut in two
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        first = watch.Watcher("c1", listener, None, [client])
        first.pid = sleeper.pid
        first.outputs = {out_r: frames.STDOUT}
        first.health_interval, first.health_started = 5.0, 123.5
        first.notes["cgroup"] = "3:/sys/fs/cgroup/x"
        first.lean_exit_db = "/tmp/rl.db"
        words = first.handoff()
        # handoff() made each fd inheritable: what an exec would keep.
        assert os.get_inheritable(listener.fileno()) and os.get_inheritable(out_r)
        second = watch.from_handoff(words)
        assert second.container_id == "c1" and second.pid == sleeper.pid
        assert second.listener.fileno() == listener.fileno()
        assert second.outputs == {out_r: frames.STDOUT} and second.stdin_w == -1
        assert (second.health_interval, second.health_started) == (5.0, 123.5)
        assert second.notes == {"cgroup": "3:/sys/fs/cgroup/x"}
        assert second.lean_exit_db == "/tmp/rl.db"
        (adopted,) = second.clients.values()
        assert adopted.greeted and adopted.stdin
        rest = frames.encode_frame(frames.STDIN, b"hello")[4:]
        assert list(adopted.decoder.feed(rest)) == [(frames.STDIN, b"hello")]
        assert not os.get_inheritable(out_r)  # not for the healthchecks it spawns
    finally:
        sleeper.kill()
        sleeper.wait()
        os.close(out_w)
        ours.close()


def test_serve_logs_output_and_returns_the_exit_code(tmp_path: Path) -> None:
    log = LogWriter(str(tmp_path / "ctr.log"))
    watcher = watch.Watcher("c2", _listener(tmp_path), log)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    child = subprocess.Popen(["sh", "-c", "echo hi; kill -TERM $$"], stdout=out_w)
    os.close(out_w)
    watcher.pid = child.pid
    watcher.outputs = {out_r: frames.STDOUT}
    # The watcher reaps its child itself (waitpid), as the container's parent.
    assert watcher.serve() == 128 + signal.SIGTERM
    child.returncode = 0  # reaped above: keep Popen from waiting again
    log.close()
    assert (tmp_path / "ctr.log").read_bytes().endswith(b" stdout F hi\n")
    watcher.close()


def test_the_lean_exit_record_is_what_the_store_reads(tmp_path: Path) -> None:
    store = ContainerStore.open(tmp_path / "store")
    record = store.create(name="w", image_id="i", image_name="img", command=["sleep"])
    store.mark_running(record.id, 4242)
    watcher = watch.Watcher(record.id, _listener(tmp_path), None)
    watcher.lean_exit_db = os.fspath(store.root / "rl.db")
    watcher.stop_requested = True
    assert watcher.record_exit(137)
    got = store.get(record.id)
    assert (got.state, got.exit_code, got.error) == ("exited", 137, "")
    assert got.finished is not None and got.stopped_by_user
    watcher.lean_exit_db = os.fspath(tmp_path / "missing" / "rl.db")
    assert not watcher.record_exit(1)  # the starter records it then
    watcher.close()
    store.close()


def test_the_watcher_imports_nothing_heavy() -> None:
    code = (
        "import sys; import rootless.monitor.watch, rootless.network; "
        "print(' '.join(sorted(sys.modules)))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    heavy = {"typing", "dataclasses", "json", "pathlib", "sqlite3", "re", "subprocess"}
    assert heavy.isdisjoint(out), heavy & set(out)
