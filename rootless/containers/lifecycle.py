"""Starting, stopping and signalling containers from the CLI (the monitor's other side).

Every function here takes the container's lock (store.ContainerLock) for the whole
operation, so two `rl` commands on one container serialise while different containers
proceed in parallel. Nothing here waits on a dead process: a runner (monitor or foreground
rl) that is gone is reconciled by the store.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rootless.containers.store import ContainerLock, ContainerStore, runner_alive
from rootless.errors import RlError

if TYPE_CHECKING:
    from rootless.containers.store import Container

# How long `start` waits for the monitor to say the container runs (fuse mounts, pulls of
# nothing, a slow disk): generous, the monitor answers in ~50 ms normally.
START_TIMEOUT = 60.0
# After SIGKILL the runner needs a moment to record the exit and clean up.
CLEANUP_TIMEOUT = 10.0


class MonitorProcess:
    """A monitor process just spawned: its pid, the pipe it answers on (READY_FD's other
    end) and, for one started early, the pipe that hands it the container's ID."""

    def __init__(self, pid: int, ready_r: int, id_w: int = -1) -> None:
        self.pid = pid
        self.ready_r = ready_r
        self.id_w = id_w

    def cancel(self) -> None:
        """No container for it after all: it reads end of file and exits."""
        for fd in (self.id_w, self.ready_r):
            if fd >= 0:
                os.close(fd)
        self.id_w = self.ready_r = -1
        _reap_quietly(self.pid)


def early_monitor() -> MonitorProcess:
    """run -d: start the monitor before the container exists, so that its interpreter loads
    the starter's modules (~50-90 ms) while the CLI prepares the container. Hand it the
    container with spawn_monitor(..., early=) or let it go with cancel()."""
    id_r, id_w = os.pipe2(os.O_CLOEXEC)
    try:
        process = _spawn(["-", "{ready}", "--id-fd", str(id_r)], None, keep=id_r)
    finally:
        os.close(id_r)
    process.id_w = id_w
    return process


def _spawn(args: list[str], log_path: os.PathLike[str] | None, keep: int = -1) -> MonitorProcess:
    """`python -S -m rootless.monitor ARGS` ("{ready}" there: the READY_FD number) in a
    session of its own; stderr to `log_path` (None: /dev/null until it knows its log)."""
    import rootless

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(rootless.__file__)))
    env = dict(os.environ, PYTHONPATH=package_parent)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDWR)
    log = null
    try:
        if log_path is not None:
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        from rootless.cgroups.fs import scoped_command

        argv = [sys.executable, "-S", "-m", "rootless.monitor"]
        argv += [str(ready_w) if arg == "{ready}" else arg for arg in args]
        # Where the user's systemd can delegate a cgroup and rl sits in none, the monitor
        # starts in a scope of its own, as `rl run` does (rootless.cgroups.fs).
        argv = scoped_command(argv)
        passed = {ready_w, keep} - {-1}
        for fd in passed:
            os.set_inheritable(fd, True)
        # A session of its own: no terminal, no SIGHUP when the user's shell goes away.
        # Nothing else of ours may reach the monitor (and so the container): an inherited
        # pipe end would keep, e.g., `rl run -d … | cat` waiting for EOF for ever.
        strays = [
            (os.POSIX_SPAWN_CLOSE, fd)
            for fd in _open_fds()
            if fd > 2 and fd not in (*passed, null, log) and os.get_inheritable(fd)
        ]
        pid = os.posix_spawn(
            argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0]) or argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, null, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
                *strays,
            ],
            setsid=True,
        )
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
        os.close(null)
        if log != null:
            os.close(log)
    return MonitorProcess(pid, ready_r)


def spawn_monitor(
    store: ContainerStore,
    record: Container,
    before_start: Callable[[], object] | None = None,
    early: MonitorProcess | None = None,
) -> int:
    """Start the container under a new monitor (or under `early`, from early_monitor());
    return its pid 1 (host pid). RlError (with podman's exit code, e.g. 127 for a missing
    command) when it did not start.

    With `before_start` (start -a), the monitor waits after opening its attach socket until
    that callback has connected a client, so no early output is missed."""
    userdata = store.userdata(record.id)
    if early is None:
        args = [record.id, "{ready}", *(["--attach-first"] if before_start else [])]
        process = _spawn(args, userdata / "monitor.log")
    else:
        process = early
        try:
            os.write(process.id_w, record.id.encode() + b"\n")
        except OSError:
            pass  # it died: the answer below says so
        os.close(process.id_w)
        process.id_w = -1
    try:
        answer = _read_line(process.ready_r, START_TIMEOUT)
        if answer.startswith("L") and before_start is not None:
            before_start()
            answer = _read_line(process.ready_r, START_TIMEOUT)
    finally:
        os.close(process.ready_r)
        process.ready_r = -1
    # The monitor lives on; its exit status is nobody's business once we return (the
    # CLI exits right after; a zombie until then is harmless).
    if answer.startswith("R"):
        return int(answer[1:].strip())
    if answer.startswith("E"):
        code, _, message = answer[1:].strip().partition(" ")
        raise RlError(message, int(code))
    _reap_quietly(process.pid)
    detail = _last_line(userdata / "monitor.log")
    raise RlError(
        f"the container's monitor ended before the container started: {detail or 'no output'}"
        f" (see {userdata / 'monitor.log'})"
    )


def start(
    store: ContainerStore, ref: str, before_start: Callable[[], object] | None = None
) -> Container:
    """Start a created or exited container (a running one is left alone)."""
    record = store.get(ref)
    with ContainerLock(record.id):
        record = store.get(record.id)
        if record.state in ("running", "restarting") and runner_alive(record):
            return record
        store.set_stopped_by_user(record.id, False)
        spawn_monitor(store, record, before_start)
        return store.get(record.id)


def stop(store: ContainerStore, ref: str, timeout: float | None = None) -> Container:
    """podman stop: the StopSignal, SIGKILL after `timeout` s (the container's
    --stop-timeout by default), then wait for the runner to record the exit and clean up.
    No restart policy applies afterwards."""
    record = store.get(ref)
    with ContainerLock(record.id):
        record = with_pid(store, store.get(record.id))
        store.set_stopped_by_user(record.id)
        if record.state not in ("running", "restarting", "paused") or not runner_alive(record):
            return record
        if timeout is None:
            timeout = float(record.config.get("stop_timeout", 10))
        if record.state == "restarting":
            _signal_runner(record, signal.SIGTERM)  # the monitor is in its back-off: end it
        elif not _stop_process(record, stop_signal(record.config), timeout):
            print(
                f"WARN[{timeout:04.0f}] StopSignal {record.config.get('stop_signal') or 'SIGTERM'} "
                f"failed to stop container {record.name} in {timeout:g} seconds, resorting to "
                "SIGKILL",
                file=sys.stderr,
            )
        _wait_runner(record, CLEANUP_TIMEOUT)
        return store.find(record.id) or record


def kill(store: ContainerStore, ref: str, sig: int) -> Container:
    record = store.get(ref)
    with ContainerLock(record.id):
        record = with_pid(store, store.get(record.id))
        if record.state != "running" or not runner_alive(record) or not record.container_pid:
            raise RlError(
                f"can only kill running containers. {record.id} is in state "
                f"{_state_word(record)}: container state improper"
            )
        if sig in (signal.SIGKILL, signal.SIGTERM):
            pass  # podman kill does not count as a stop: the restart policy still applies
        _send(record.container_pid, sig)
        return record


def remove(store: ContainerStore, ref: str, *, force: bool, volumes: bool) -> Container:
    """podman rm: a running container needs force (then it is killed first)."""
    record = store.get(ref)
    with ContainerLock(record.id):
        record = store.get(record.id)
        if record.state in ("running", "restarting", "paused") and runner_alive(record):
            if not force:
                raise RlError(
                    f"cannot remove container {record.id} as it is running - running or "
                    "paused containers cannot be removed without force: container state "
                    "improper",
                    exit_code=2,
                )
            record = with_pid(store, record)
            store.set_stopped_by_user(record.id)
            if record.state == "restarting":
                _signal_runner(record, signal.SIGTERM)
            elif record.container_pid:
                _send(record.container_pid, signal.SIGKILL)
            _wait_runner(record, CLEANUP_TIMEOUT)
        current = store.find(record.id)  # an --rm container's monitor removed it already
        if current is not None:
            store.remove(current, volumes=volumes)
        return record


# --- exit codes of removed containers ----------------------------------------------------

# How long the exit code of a container removed by its monitor (--rm) stays readable, so that a
# `rl wait` begun before the removal still prints it (podman keeps such codes ~5 minutes too).
KEPT_EXIT_SECONDS = 300.0


def _exits_dir() -> str:
    from rootless.paths import runtime_dir

    return os.path.join(runtime_dir(), "exits")


def keep_exit_code(container_id: str, code: int | None) -> None:
    """Before the monitor removes an --rm container: its exit code, for `rl wait`; codes
    older than KEPT_EXIT_SECONDS go at the same time. Best effort."""
    directory = _exits_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        now = time.time()
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            try:
                if now - os.stat(path).st_mtime > KEPT_EXIT_SECONDS:
                    os.unlink(path)
            except OSError:
                pass
        tmp = os.path.join(directory, f".{container_id}.tmp")
        with open(tmp, "w") as f:
            f.write("" if code is None else str(code))
        os.rename(tmp, os.path.join(directory, container_id))
    except OSError:
        pass


def removed_exit_code(container_id: str) -> int | None:
    """The exit code kept by keep_exit_code (None: none kept, or not known)."""
    try:
        with open(os.path.join(_exits_dir(), container_id)) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


# --- helpers ----------------------------------------------------------------------------


def _state_word(record: Container) -> str:
    return {"exited": "exited", "created": "configured"}.get(record.state, record.state)


def stop_signal(config: Mapping[str, Any]) -> int:
    """The container's StopSignal (stored as a name or a number) as a number; SIGTERM when
    unset or unknown. `rl stop` and the monitor (stopped by systemd) both send it."""
    text = str(config.get("stop_signal") or "SIGTERM").upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    return int(getattr(signal, text, signal.SIGTERM))


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise RlError(f"cannot signal the container's process {pid}: {exc.strerror}") from exc


def with_pid(store: ContainerStore, record: Container, timeout: float = START_TIMEOUT) -> Container:
    """`record` once its runner has given the container a pid. A runner records "running"
    before the container starts (so that its death at any point reads as exited), and stop,
    kill or rm -f in between would find nothing to signal: they wait here instead, while the
    runner lives (`timeout` at most). `rl start` and `run -d` hold the lock across that
    window already; a foreground `rl run` cannot (its container's processes would inherit
    the flock). ps and inspect wait too, as podman's wait for the container's lock."""
    deadline = time.monotonic() + timeout
    while record.state == "running" and not record.container_pid and runner_alive(record):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
        current = store.find(record.id)
        if current is None:  # (an --rm run that failed to start is gone)
            break
        record = current
    return record


def _signal_runner(record: Container, sig: int) -> None:
    if record.runner_pid and runner_alive(record):
        _send(record.runner_pid, sig)


def _stop_process(record: Container, sig: int, timeout: float) -> bool:
    """Send `sig` to the container's pid 1 and wait `timeout` s for it to end; SIGKILL when
    it did not. True when the signal was enough."""
    from rootless import syscalls as sc

    pid = record.container_pid
    if not pid:
        return True
    try:
        pidfd = sc.pidfd_open(pid)
    except OSError:
        return True  # already gone
    try:
        sc.pidfd_send_signal(pidfd, sig)
        if _wait_fd(pidfd, timeout):
            return True
        sc.pidfd_send_signal(pidfd, signal.SIGKILL)
        _wait_fd(pidfd, CLEANUP_TIMEOUT)
        return False
    except OSError:
        return True  # it ended between the checks
    finally:
        os.close(pidfd)


def _wait_fd(fd: int, timeout: float) -> bool:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _wait_runner(record: Container, timeout: float) -> None:
    """Until the runner (monitor or foreground rl) has finished with the container."""
    from rootless import syscalls as sc

    if not record.runner_pid or not runner_alive(record):
        return
    try:
        pidfd = sc.pidfd_open(record.runner_pid)
    except OSError:
        return
    try:
        if runner_alive(record):  # still the same process now that we hold its pidfd
            _wait_fd(pidfd, timeout)
    finally:
        os.close(pidfd)


def _read_line(fd: int, timeout: float) -> str:
    """One line of the monitor's answers (it writes each line in one write and waits for
    us before the next, so reading a byte at a time is never needed)."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not _wait_fd(fd, left):
            break
        data = os.read(fd, 4096)
        if not data:
            break
        chunks.append(data)
        if data.endswith(b"\n"):
            break
    return b"".join(chunks).decode(errors="replace")


def _open_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))  # the directory's own fd is gone by now
        except OSError:
            continue
        fds.append(int(name))
    return fds


def _reap_quietly(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _last_line(path: os.PathLike[str]) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
