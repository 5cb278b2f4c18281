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


def test_a_client_hanging_up_with_output_pending_leaves_the_watcher_serving(
    tmp_path: Path,
) -> None:
    # `rl attach` detaching (ctrl-p ctrl-q) while output is still on its way to it: the hang-up
    # comes as EPOLLHUP, which selectors reports as readable and writable at once. The flush
    # drops the client (EPIPE), then the read must not drop it again: that raised ValueError
    # (unregistering a closed socket), killed the watcher, and with it the container, whose
    # exit went unrecorded (ExitCode -1).
    watcher = watch.Watcher("c5", _listener(tmp_path), None)
    ours, theirs = socket.socketpair()
    watcher._add_client(watch.Client(ours, greeted=True))
    # More than the socket buffer holds: the rest stays pending, the watcher waits to write.
    watcher._broadcast(frames.encode_frame(frames.STDOUT, b"x" * (1 << 20)))
    (client,) = watcher.clients.values()
    assert client.pending, "the socket buffer took it all: nothing left to flush"
    theirs.close()  # the client detaches
    child = subprocess.Popen(["sh", "-c", "exit 3"])
    watcher.pid = child.pid
    assert watcher.serve() == 3  # the container's own code: the watcher outlived the hang-up
    child.returncode = 3  # reaped by serve(): keep Popen from waiting again
    assert not watcher.clients
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
        "import rootless.monitor.helpers, netns.ports; "
        "print(' '.join(sorted(sys.modules)))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    heavy = {"typing", "dataclasses", "json", "pathlib", "sqlite3", "re", "subprocess"}
    assert heavy.isdisjoint(out), heavy & set(out)


# --- helpers that cross the exec (rootless.monitor.helpers) ----------------------------------

_ADOPT = """
import selectors, sys
from rootless.monitor import helpers
values = dict(word.split("=", 1) for word in sys.argv[1:])
publisher = helpers.adopt_ports(values)
selector = selectors.DefaultSelector()
publisher.register(selector)
selector.register(0, selectors.EVENT_READ, None)
print(" ".join(f"{m.protocol}:{m.host_port}:{m.container_port}" for m in publisher.bound))
sys.stdout.flush()
while True:
    for key, mask in selector.select():
        if key.data is None:  # stdin closed: the end
            publisher.close()
            raise SystemExit(0)
        key.data(mask)
"""


def test_port_publishers_cross_an_exec(tmp_path: Path) -> None:
    """The host listener and the dialer's pooled sockets (made in this process's own network
    namespace: the container's for the test) go to a fresh `python -S` by their words; it
    relays, and no socket maker is left behind."""
    from netns.ports import PortMapping, PortPublisher
    from rootless.monitor import helpers

    server = socket.create_server(("127.0.0.1", 0))
    inner = server.getsockname()[1]
    publisher = PortPublisher([PortMapping("127.0.0.1", 0, inner)], pid=os.getpid())
    outer = publisher.bound[0].host_port
    words = helpers.port_words(publisher)
    fds = helpers.port_word_fds(words)
    assert len(fds) > 1  # the listener and the pooled sockets made in the namespace
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-S", "-c", _ADOPT, *words],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, pass_fds=fds,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().split() == [f"tcp:{outer}:{inner}".encode()]
        with socket.create_connection(("127.0.0.1", outer), timeout=10) as client:
            conn, _ = server.accept()  # a pooled socket the child connected
            with conn:
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")
                assert client.recv(4) == b"pong"
        child.stdin.close()
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        server.close()
        publisher.close()
    assert publisher.dialer.pid == 0  # no maker under way, none resident


def _helper(tmp_path: Path, code: str) -> tuple[int, int]:
    """A stand-in for the fuse driver's helper (which needs a container): a child process
    with a socket to us, as rootless.storage.fuse starts it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    os.set_inheritable(theirs.fileno(), True)
    script = f"import socket, sys, time; sock = socket.socket(fileno={theirs.fileno()}); {code}"
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", script], os.environ)
    theirs.close()
    return pid, ours.detach()


def test_release_fuse_reaps_reports_and_kills(tmp_path: Path) -> None:
    from rootless.monitor import helpers

    assert helpers.release_fuse(_helper(tmp_path, "sys.exit(0)")) is None  # a normal end
    failed = _helper(tmp_path, "sock.send(b'Eno device'); sys.exit(1)")
    assert helpers.release_fuse(failed) == "no device"
    killed = _helper(tmp_path, "import os; os.kill(os.getpid(), 9)")
    assert helpers.release_fuse(killed) == "killed by SIGKILL"
    stuck = _helper(tmp_path, "time.sleep(60)")
    assert helpers.release_fuse(stuck, timeout=0.5) is None  # killed: the container ended
    for pid, _fd in (failed, killed, stuck):
        try:
            os.waitpid(pid, os.WNOHANG)
            raise AssertionError(f"helper {pid} was not reaped")
        except ChildProcessError:
            pass


def test_the_fuse_helper_crosses_the_handoff(tmp_path: Path) -> None:
    helper = _helper(tmp_path, "time.sleep(60)")
    first = watch.Watcher("c3", _listener(tmp_path), None)
    first.fuse = helper
    second = watch.from_handoff(first.handoff())
    assert second.fuse == helper and not os.get_inheritable(helper[1])
    os.kill(helper[0], signal.SIGKILL)
    second._release_fuse()  # what serve() does once the container ended
    assert second.fuse is None
    try:
        os.waitpid(helper[0], os.WNOHANG)
        raise AssertionError("not reaped")
    except ChildProcessError:
        pass
    first.close()
