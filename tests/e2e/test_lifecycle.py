"""Detached containers and their lifecycle end to end, as the unprivileged user: run -d,
create/start, stop/kill/restart/rm, attach, restart policies, the monitor's death.

One store with the test image per module; each test names its own containers and removes
them. Expected behaviours come from podman 4.3 (run rootless here).
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.harness import User, child_pids, cmdline, rl_binary

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"
ID = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-life-") as rl:
        yield rl


def _argv(rl: Rl, *args: str) -> list[str]:
    return rl.user.argv([rl_binary(), "--root", str(rl.root), *args], rl.user.env())


def _until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _state(rl: Rl, name: str) -> str:
    return rl.ok("inspect", "--format", "{{.State.Status}}", name).stdout.strip()


def _field(rl: Rl, name: str, template: str) -> str:
    return rl.ok("inspect", "--format", template, name).stdout.strip()


def _processes_of(user: User, pattern: str) -> list[str]:
    out = subprocess.run(
        ["pgrep", "-u", str(user.uid), "-f", pattern], capture_output=True, text=True
    ).stdout
    return out.split()


# --- run -d, the monitor ------------------------------------------------------------------


def test_run_detached_prints_the_id_and_keeps_running_after_the_cli(rlm: Rl, user: User) -> None:
    out = rlm.ok("run", "-d", "--name", "bg", IMAGE, "sh", "-c", "echo started; sleep 1000")
    cid = out.stdout.strip()
    assert ID.fullmatch(cid), out
    # The CLI has exited; the container runs on under its monitor, in a session of its own.
    assert _state(rlm, "bg") == "running"
    monitors = _processes_of(user, f"rootless.monitor {cid}")
    assert monitors, "no monitor process"
    # A session of its own: the hangup of the caller's terminal session never reaches it.
    assert os.getsid(int(monitors[0])) == int(monitors[0])
    assert _until(lambda: "started" in rlm.ok("logs", "bg").stdout)
    pid = int(_field(rlm, "bg", "{{.State.Pid}}"))
    assert pid > 0 and Path(f"/proc/{pid}").exists()
    rlm.ok("rm", "-f", "bg")
    assert _until(lambda: not _processes_of(user, f"rootless.monitor {cid}"))
    assert not Path(f"/proc/{pid}").exists()


def test_run_detached_does_not_hold_the_callers_pipes(rlm: Rl) -> None:
    # `rl run -d … | cat` must return: nothing of the CLI's stdout reaches the container.
    argv = _argv(rlm, "run", "-d", "--name", "pipe", IMAGE, "sleep", "1000")
    proc = subprocess.run(argv, capture_output=True, timeout=30, cwd="/")
    assert proc.returncode == 0, proc
    rlm.ok("rm", "-f", "pipe")


def test_run_detached_missing_command_fails_like_podman(rlm: Rl) -> None:
    result = rlm("run", "-d", "--name", "nocmd", IMAGE, "/no/such/command")
    assert result.returncode == 127, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert _state(rlm, "nocmd") == "exited"
    rlm.ok("rm", "nocmd")


def test_run_detached_rm_removes_the_container_when_it_exits(rlm: Rl) -> None:
    cid = rlm.ok("run", "-d", "--rm", IMAGE, "true").stdout.strip()
    assert _until(lambda: cid not in rlm.ok("ps", "-a", "-q", "--no-trunc").stdout)


def test_wait_on_an_rm_container_prints_the_exit_code_after_its_removal(rlm: Rl) -> None:
    # podman: a wait begun before the monitor removes the container still gets the code.
    rlm.ok("run", "-d", "--rm", "--name", "rmwait", IMAGE, "sh", "-c", "sleep 3; exit 3")
    # It looks while the container runs, and next only long after the monitor removed it.
    waiter = subprocess.Popen(
        _argv(rlm, "wait", "--interval", "6s", "rmwait"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = waiter.communicate(timeout=60)
    assert (waiter.returncode, out.strip()) == (0, "3"), err
    assert "rmwait" not in rlm.ok("ps", "-a", "--format", "{{.Names}}").stdout
    # Only a wait under way is served: afterwards the container is simply gone.
    result = rlm("wait", "rmwait")
    assert result.returncode != 0 and "no container" in result.stderr


def test_a_shell_without_xdg_runtime_dir_reaches_the_same_containers(rlm: Rl, user: User) -> None:
    # After `su USER` the variable is unset. rl then takes /run/user/UID, as podman does, so
    # the attach socket and the lock of a container started from a login session are found
    # (they were looked for under /tmp/rl-UID).
    if user.runtime_dir != Path(f"/run/user/{user.uid}"):
        pytest.skip("the test user's runtime dir is not /run/user/UID (run the suite as root)")
    su_shell = {"XDG_RUNTIME_DIR": ""}
    script = "sleep 1; echo tick; echo tock; exit 4"
    rlm.ok("run", "-d", "--name", "sessions", IMAGE, "sh", "-c", script)
    attached = rlm("attach", "--no-stdin", "sessions", env=su_shell, timeout=30)
    assert (attached.returncode, attached.stdout) == (4, "tick\ntock\n"), attached
    rlm.ok("run", "-d", "--name", "sessions2", IMAGE, "sleep", "1000")
    assert rlm("stop", "-t", "0", "sessions2", env=su_shell).returncode == 0
    assert _state(rlm, "sessions2") == "exited"
    rlm.ok("rm", "sessions", "sessions2")


def test_create_then_start_and_start_attach(rlm: Rl) -> None:
    cid = rlm.ok("create", "--name", "made", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert ID.fullmatch(cid.stdout.strip())
    assert _state(rlm, "made") == "created"
    result = rlm("start", "-a", "made")
    assert result.returncode == 3, result
    assert result.stdout == "out\n" and "err" in result.stderr
    assert _state(rlm, "made") == "exited"
    assert rlm.ok("start", "made").stdout == "made\n"
    assert _until(lambda: _state(rlm, "made") == "exited")
    assert rlm.ok("logs", "made").stdout.count("out") == 2
    rlm.ok("rm", "made")


def test_start_interactive_passes_stdin(rlm: Rl) -> None:
    rlm.ok("create", "-i", "--name", "cat", IMAGE, "cat")
    result = rlm("start", "-a", "-i", "cat", input="through the monitor\n")
    assert result.returncode == 0, result
    assert result.stdout == "through the monitor\n"
    rlm.ok("rm", "cat")


# --- stop, kill, restart, rm ----------------------------------------------------------------


def test_stop_escalates_to_sigkill_after_the_timeout(rlm: Rl) -> None:
    # sleep as pid 1 ignores SIGTERM: stop -t 2 must end it with SIGKILL after ~2 s.
    rlm.ok("run", "-d", "--name", "stubborn", IMAGE, "sleep", "1000")
    start = time.monotonic()
    result = rlm.ok("stop", "-t", "2", "stubborn")
    took = time.monotonic() - start
    assert result.stdout == "stubborn\n"
    assert 1.5 < took < 10, took  # a sanity bound on the escalation, not a speed target
    assert _field(rlm, "stubborn", "{{.State.ExitCode}}") == "137"
    rlm.ok("rm", "stubborn")


def test_stop_with_a_signal_the_process_handles(rlm: Rl) -> None:
    rlm.ok(
        "run", "-d", "--name", "polite", "--stop-signal", "USR1", IMAGE,
        "sh", "-c", "trap 'exit 7' USR1; while :; do sleep 0.1; done",
    )  # fmt: skip
    rlm.ok("stop", "-t", "20", "polite")
    assert _field(rlm, "polite", "{{.State.ExitCode}}") == "7"
    rlm.ok("rm", "polite")


def test_kill_sends_the_signal(rlm: Rl) -> None:
    rlm.ok(
        "run", "-d", "--name", "victim", IMAGE, "sh", "-c", "trap 'exit 9' HUP; sleep 1000 & wait"
    )
    rlm.ok("kill", "-s", "HUP", "victim")
    assert _until(lambda: _state(rlm, "victim") == "exited")
    assert _field(rlm, "victim", "{{.State.ExitCode}}") == "9"
    result = rlm("kill", "victim")
    assert result.returncode == 125 and "can only kill running containers" in result.stderr
    rlm.ok("rm", "victim")


def test_rm_of_a_running_container_needs_force(rlm: Rl) -> None:
    rlm.ok("run", "-d", "--name", "busy", IMAGE, "sleep", "1000")
    result = rlm("rm", "busy")
    assert result.returncode == 2 and "cannot remove container" in result.stderr
    assert _state(rlm, "busy") == "running"
    rlm.ok("rm", "-f", "busy")
    assert rlm("inspect", "busy").returncode != 0


def test_restart_runs_the_container_again(rlm: Rl) -> None:
    rlm.ok("run", "-d", "--name", "again", IMAGE, "sh", "-c", "echo boot; sleep 1000")
    first = _field(rlm, "again", "{{.State.Pid}}")
    assert rlm.ok("restart", "-t", "0", "again").stdout == "again\n"
    assert _state(rlm, "again") == "running"
    assert _field(rlm, "again", "{{.State.Pid}}") != first
    assert _until(lambda: rlm.ok("logs", "again").stdout.count("boot") == 2)
    rlm.ok("rm", "-f", "again")


def test_commands_on_missing_containers(rlm: Rl) -> None:
    for verb in ("start", "stop", "kill", "restart"):
        result = rlm(verb, "nonexistent")
        assert result.returncode == 125, (verb, result)
        assert 'no container with name or ID "nonexistent" found' in result.stderr
    assert rlm("stop", "--ignore", "nonexistent").returncode == 0


# --- restart policies -------------------------------------------------------------------------


def test_on_failure_restarts_exactly_n_times(rlm: Rl) -> None:
    rlm.ok("run", "-d", "--name", "flaky", "--restart", "on-failure:3", IMAGE,
           "sh", "-c", "echo try; exit 3")  # fmt: skip
    assert _until(
        lambda: _state(rlm, "flaky") == "exited" and not _processes_of(rlm.user, "monitor.*flaky")
        and _field(rlm, "flaky", "{{.RestartCount}}") == "3",
    )  # fmt: skip
    time.sleep(1)  # no fourth restart comes
    assert _field(rlm, "flaky", "{{.RestartCount}}") == "3"
    assert rlm.ok("logs", "flaky").stdout == "try\n" * 4
    assert _field(rlm, "flaky", "{{.State.ExitCode}}") == "3"
    rlm.ok("rm", "flaky")


def test_on_failure_does_not_restart_a_success(rlm: Rl) -> None:
    rlm.ok("run", "-d", "--name", "fine", "--restart", "on-failure", IMAGE, "true")
    assert _until(lambda: _state(rlm, "fine") == "exited")
    time.sleep(0.5)
    assert _field(rlm, "fine", "{{.RestartCount}}") == "0"
    rlm.ok("rm", "fine")


def test_always_restarts_after_a_crash_but_not_after_stop(rlm: Rl) -> None:
    rlm.ok("run", "-d", "--name", "phoenix", "--restart", "always", IMAGE,
           "sh", "-c", "sleep 0.3; exit 1")  # fmt: skip
    assert _until(lambda: int(_field(rlm, "phoenix", "{{.RestartCount}}")) >= 2)
    rlm.ok("stop", "-t", "0", "phoenix")
    assert _state(rlm, "phoenix") == "exited"
    count = _field(rlm, "phoenix", "{{.RestartCount}}")
    time.sleep(1.5)
    assert _state(rlm, "phoenix") == "exited"
    assert _field(rlm, "phoenix", "{{.RestartCount}}") == count
    rlm.ok("rm", "phoenix")


def test_a_restarting_container_is_never_running_without_a_pid(rlm: Rl) -> None:
    # The monitor records itself as the runner before the container starts again; until the
    # container has a pid the record says "restarting" (it said "running" with Pid 0).
    rlm.ok("run", "-d", "--name", "flicker", "--restart", "always", IMAGE, "true")
    seen: set[str] = set()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and len(seen) < 40:
        seen.add(_field(rlm, "flicker", "{{.State.Status}} {{.State.Pid}}"))
    rlm.ok("rm", "-f", "flicker")
    assert any(s.startswith("restarting ") for s in seen), seen  # (it was watched restarting)
    assert "running 0" not in seen, seen


def test_bad_restart_policy_is_refused_before_anything_is_created(rlm: Rl) -> None:
    result = rlm("run", "-d", "--name", "nope", "--restart", "sometimes", IMAGE, "true")
    assert result.returncode == 125 and "invalid restart policy" in result.stderr
    result = rlm("run", "-d", "--rm", "--restart", "always", IMAGE, "true")
    assert result.returncode == 125 and "conflicts with --restart" in result.stderr
    assert "nope" not in rlm.ok("ps", "-a").stdout


# --- the monitor's death, parallel use -------------------------------------------------------


def test_a_killed_monitor_is_reconciled(rlm: Rl, user: User) -> None:
    cid = rlm.ok("run", "-d", "--name", "orphan", IMAGE, "sleep", "1000").stdout.strip()
    pid = int(_field(rlm, "orphan", "{{.State.Pid}}"))
    monitor = _processes_of(user, f"rootless.monitor {cid}")[0]
    os.kill(int(monitor), signal.SIGKILL)
    # The container dies with its monitor (parent-death chain), and rl ps says so.
    assert _until(lambda: not Path(f"/proc/{pid}").exists())
    assert _state(rlm, "orphan") == "exited"
    assert "exit code unknown" in _field(rlm, "orphan", "{{.State.Error}}")
    # No manual repair: it starts again, and rm works.
    rlm.ok("start", "orphan")
    assert _state(rlm, "orphan") == "running"
    rlm.ok("rm", "-f", "orphan")


@pytest.mark.slow
def test_twenty_parallel_runs_and_removals_leave_a_consistent_store(rlm: Rl, user: User) -> None:
    names = [f"par{i}" for i in range(20)]
    runs = [
        subprocess.Popen(
            _argv(rlm, "run", "-d", "--name", n, IMAGE, "sleep", "1000"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
        )
        for n in names
    ]  # fmt: skip
    ids = []
    for proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ids.append(out.decode().strip())
    listed = rlm.ok("ps", "--format", "{{.Names}}").stdout.split()
    assert sorted(n for n in listed if n.startswith("par")) == sorted(names)
    removals = [
        subprocess.Popen(_argv(rlm, "rm", "-f", n), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd="/")
        for n in names
    ]  # fmt: skip
    for proc in removals:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert "par" not in rlm.ok("ps", "-a", "--format", "{{.Names}}").stdout
    dirs = {p.name for p in (rlm.root / "containers").iterdir()}
    left = set(rlm.ok("ps", "-a", "-q", "--no-trunc").stdout.split())
    assert dirs == left  # no directory without a record
    with open("/proc/self/mountinfo") as f:
        assert str(rlm.root) not in f.read()
    assert _until(lambda: not any(_processes_of(user, f"rootless.monitor {i}") for i in ids))


# --- attach ---------------------------------------------------------------------------------


def _read_until(fd: int, marker: bytes, timeout: float = 20) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@contextlib.contextmanager
def _attached_on_a_pty(
    rl: Rl, user: User, name: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`rl attach NAME` on a new pty, once the container's shell prompt came through it:
    (the attach process, the pty's master end). Killed and closed afterwards."""
    master, slave = pty.openpty()
    os.chown(os.ttyname(slave), user.uid, -1)
    proc = subprocess.Popen(
        _argv(rl, "attach", name), stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, cwd="/",
    )  # fmt: skip
    os.close(slave)
    try:
        # Until attach relays: an empty line makes the shell print its prompt again.
        deadline = time.monotonic() + 30
        while b"#" not in _read_until(master, b"#", timeout=0.5):
            assert time.monotonic() < deadline, "no prompt through rl attach"
            os.write(master, b"\n")
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_attach_with_a_tty_and_detach_keys(rlm: Rl, user: User) -> None:
    rlm.ok("run", "-d", "-it", "--name", "term", IMAGE, "sh")
    with _attached_on_a_pty(rlm, user, "term") as (proc, master):
        os.write(master, b"echo $((6*7)); tty\n")
        out = _read_until(master, b"/dev/pts/")
        assert b"42" in out and b"/dev/pts/" in out, out
        os.write(master, b"\x10\x11")  # ctrl-p ctrl-q: detach
        assert proc.wait(timeout=20) == 0
    assert _state(rlm, "term") == "running"  # detaching left it running
    rlm.ok("rm", "-f", "term")


def test_detaching_with_output_pending_leaves_the_container_running(rlm: Rl, user: User) -> None:
    # ctrl-p ctrl-q while the monitor still holds output for `rl attach`: it sees the hang-up
    # with output pending (regression: its watcher then dropped the client twice, died, and
    # took the container with it; the store said ExitCode -1, "exit code unknown").
    rlm.ok("run", "-d", "-it", "--name", "burst", IMAGE, "sh")
    with _attached_on_a_pty(rlm, user, "burst") as (proc, master):
        # 1.5 MB (with the pty's \r): more than the attach socket holds, less than the monitor
        # keeps for a client. With this pty unread, attach stalls writing to it, so once the
        # log has it all, the monitor holds the rest for attach.
        os.write(master, b"yes Z | head -c 1000000; echo EN''D\n")
        assert _until(lambda: "END" in rlm("logs", "burst").stdout, 60), "the burst did not end"
        os.write(master, b"\x10\x11")  # ctrl-p ctrl-q
        while proc.poll() is None:  # drain the pty: attach writes what it has, then reads stdin
            _read_until(master, b"\0never", timeout=0.2)
        assert proc.wait() == 0
    # The monitor saw that hang-up before it serves another client: this one's end of input
    # (^D on the terminal) ends the shell, and its exit code comes back through the monitor.
    result = rlm("attach", "burst", input="")
    assert result.returncode == 0, result
    assert _field(rlm, "burst", "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
    rlm.ok("rm", "burst")


def test_attach_ends_with_the_containers_exit_code(rlm: Rl) -> None:
    rlm.ok("run", "-d", "-i", "--name", "reader", IMAGE, "sh", "-c", "read line; exit $line")
    result = rlm("attach", "reader", input="5\n")
    assert result.returncode == 5, result
    result = rlm("attach", "reader")
    assert result.returncode == 125 and "only attach to running containers" in result.stderr
    rlm.ok("rm", "reader")


# --- helpers that cross the monitor's exec (rootless.monitor.helpers) ----------------------

# Each run counts itself in /tmp/n (the container's files outlive a restart), serves
# "served-N" on 8080, and exits 1 once /tmp/crash appears (it removes it first).
_COUNTING = (
    "n=$(($(cat /tmp/n 2>/dev/null || echo 0) + 1)); echo $n > /tmp/n; "
    "echo served-$n > /tmp/index.html; httpd -p 8080 -h /tmp; "
    "while [ ! -e /tmp/crash ]; do sleep 0.1; done; rm /tmp/crash; exit 1"
)


def _monitor(rl: Rl, name: str) -> int:
    """The pid of the container's monitor: the parent of its pid 1 (0 while it has none)."""
    pid = _field(rl, name, "{{.State.Pid}}")
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except OSError:
        return 0


def _children(pid: int, mark: str) -> list[int]:
    """`pid`'s children with `mark` in their command line."""
    return [child for child in child_pids(pid) if mark in cmdline(child)]


def _watching(rl: Rl, name: str) -> int:
    """The monitor's pid once it is the lean watcher (it exec'd it: `--watch` in its argv)."""
    assert _until(lambda: " --watch " in cmdline(_monitor(rl, name))), cmdline(_monitor(rl, name))
    return _monitor(rl, name)


def _get(port: int) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as reply:
        return bytes(reply.read())


def _serves(port: int, body: bytes) -> bool:
    try:
        return _get(port) == body
    except OSError:
        return False


def test_published_port_works_in_the_watcher_and_after_a_restart(rlm: Rl) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    rlm.ok("run", "-d", "--name", "pubw", "--restart", "on-failure:1",
           "-p", f"127.0.0.1:{port}:8080", IMAGE, "sh", "-c", _COUNTING)  # fmt: skip
    try:
        monitor = _watching(rlm, "pubw")  # the listener and the dialer's pool crossed the exec
        assert _until(lambda: _serves(port, b"served-1\n"))
        # No resident helper in the netns: netns.ports' socket makers are short-lived.
        assert _until(lambda: not _children(monitor, " -I -c "))
        rlm.ok("exec", "pubw", "touch", "/tmp/crash")  # exit 1: restarted by the policy
        assert _until(lambda: _field(rlm, "pubw", "{{.RestartCount}}") == "1")
        assert _until(lambda: _serves(port, b"served-2\n"))  # sockets made in the new netns
        assert _watching(rlm, "pubw") == monitor  # the same monitor, lean again
        assert _until(lambda: not _children(monitor, " -I -c "))
        assert rlm.ok("port", "pubw").stdout == f"8080/tcp -> 127.0.0.1:{port}\n"
    finally:
        rlm.ok("rm", "-f", "-t", "0", "pubw")
    assert _until(lambda: not cmdline(monitor))
    with socket.socket() as sock:  # the port was released with the container
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_fuse_container_restarts_under_the_watcher_and_leaves_nothing(rlm: Rl) -> None:
    fuse = ("--storage-driver", "fuse")
    rlm.ok(*fuse, "run", "-d", "--name", "fusew", "--restart", "on-failure:1",
           "--network", "none", IMAGE, "sh", "-c", _COUNTING)  # fmt: skip
    try:
        monitor = _watching(rlm, "fusew")  # the fuse helper crossed the exec
        (helper,) = _children(monitor, "rootless.storage.fuse")
        assert rlm.ok(*fuse, "exec", "fusew", "cat", "/tmp/n").stdout == "1\n"
        rlm.ok(*fuse, "exec", "fusew", "touch", "/tmp/crash")
        assert _until(lambda: _field(rlm, "fusew", "{{.RestartCount}}") == "1")
        assert _until(lambda: _state(rlm, "fusew") == "running")
        assert _watching(rlm, "fusew") == monitor
        assert not cmdline(helper)  # the first helper ended and was reaped (no zombie)
        (helper,) = _children(monitor, "rootless.storage.fuse")
        assert rlm.ok(*fuse, "exec", "fusew", "cat", "/tmp/n").stdout == "2\n"
    finally:
        rlm.ok(*fuse, "rm", "-f", "-t", "0", "fusew")
    assert _until(lambda: not cmdline(helper) and not cmdline(monitor))
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    assert str(rlm.root) not in mounts  # the mount only ever lived in the container's namespace
