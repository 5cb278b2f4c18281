"""The monitor's watcher: what a detached container needs while it runs, and nothing more.

The starter (rootless.monitor.main) sets the container up, then either execs a fresh
interpreter running this module (`python -S -m rootless.monitor ID --watch KEY=VALUE ...`, same pid,
so the store's runner record stays true) or, when something it must keep cannot cross an exec
(the exec failed), runs the same `Watcher` in its own process.
The watcher holds the container's stdio (log file, attach clients), forwards stop signals,
runs healthchecks (`rl healthcheck run`, a process of its own) and the network driver, and
waits for the container's pid 1, its child. When that ended it execs the starter again
(`--exited CODE`), which records the exit, applies the restart policy and cleans up.
The container's helper processes, the monitor's children, cross the exec too
(rootless.monitor.helpers): a fuse driver's helper (released here once the container ended)
and `-p` port publishers (the host's sockets and the dialer in the container's netns).

Imports: os, selectors, signal, socket, time and the monitor's lean modules only; no typing,
dataclasses, json, pathlib or sqlite3 (each ~0.5-1.6 MB per process, and this process lives
as long as the container).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time

from rootless.monitor import attach as frames
from rootless.monitor.logwriter import LogWriter

TYPE_CHECKING = False  # not typing's: see above
if TYPE_CHECKING:
    from collections.abc import Callable

# A client that does not read its output is dropped beyond this much buffered for it.
CLIENT_BUFFER_LIMIT = 4 << 20
# After the container ended, output still in the pipes is read for at most this long.
DRAIN_SECONDS = 2.0
READ_SIZE = 65536
# start -a: how long the monitor waits for the CLI to connect before starting anyway.
ATTACH_WAIT = 10.0
# While a healthcheck runs, how often the watcher looks whether it ended.
HEALTH_POLL = 0.2
# Caught while the watcher runs; blocked across each exec, so none is lost or kills us there.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class Client:
    def __init__(self, sock: socket.socket, greeted: bool = False, stdin: bool = False) -> None:
        self.sock = sock
        self.decoder = frames.FrameDecoder()
        self.greeted = greeted
        self.stdin = stdin
        self.pending = bytearray()


def exit_code(status: int) -> int:
    """podman's code for a wait status: the exit code, or 128+N after signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Watcher:
    """The selector loop of one container (see the module docstring). Before `serve`, the
    starter fills in the running container: `pid` (its child), `outputs`, `stdin_w`,
    `console`, `net`/`ports`, the healthcheck interval."""

    def __init__(
        self,
        container_id: str,
        listener: socket.socket,
        log: LogWriter | None,
        clients: list[Client] | None = None,
    ) -> None:
        self.container_id = container_id
        self.selector = selectors.DefaultSelector()
        self.listener = listener
        self.listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, "listen")
        self.log = log
        self.clients: dict[int, Client] = {}
        for client in clients or []:
            self._add_client(client)
        self.pid = 0  # the container's pid 1 (host pid), our child
        self.outputs: dict[int, int] = {}  # fd -> frame kind (STDOUT/STDERR)
        self.stdin_w = -1
        self.console = -1  # the pty master with a tty (also stdin_w and an output)
        self.stop_signal: int = signal.SIGTERM
        self.net: object = None  # netns.driver.NetDriver
        self.ports: object = None  # netns.ports.PortPublisher
        self.fuse: tuple[int, int] | None = None  # the fuse driver's helper: pid, socket fd
        self.health_interval = 0.0  # 0: no automatic healthchecks
        self.health_started = 0.0
        self.health_due: float | None = None
        self.health_pid = 0
        self.early_input: list[tuple[Client, int, bytes]] = []
        self.signals: list[int] = []
        self.stop_requested = False
        # The starter's own notes, carried across both execs untouched (e.g. its cgroup).
        self.notes: dict[str, str] = {}
        # The store (rl.db) when the exit needs nothing but a record (see record_exit).
        self.lean_exit_db = ""
        self._catch_signals()

    # --- the container's life -------------------------------------------------------------

    def serve(self) -> int:
        """Until the container (our child `pid`) ended and its output is drained; its exit
        code. The stdio fds are closed afterwards."""
        for fd in self.outputs:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, "output")
        exit_fd = os.pidfd_open(self.pid)
        self.selector.register(exit_fd, selectors.EVENT_READ, "exit")
        self.deliver_early_input()
        if self.health_interval > 0:
            self.health_due = self.health_started + self.health_interval
        ended_at: float | None = None
        code = 255
        try:
            while ended_at is None or (
                self.outputs and time.monotonic() - ended_at < DRAIN_SECONDS
            ):
                for key, events in self.selector.select(self._timeout(ended_at)):
                    if key.data == "exit":
                        self.selector.unregister(exit_fd)
                        _, status = os.waitpid(self.pid, 0)
                        code = exit_code(status)
                        self.pid = 0
                        ended_at = time.monotonic()
                    elif key.data == "output":
                        self._read_output(key.fd)
                    else:
                        self._dispatch(key, events)
                self._tick()
        finally:
            if self.pid:  # an error cut the loop short: the container must not live on
                _kill_and_reap(self.pid)
                self.pid = 0
            for fd in self.outputs:
                self.selector.unregister(fd)
            if exit_fd in self.selector.get_map():
                self.selector.unregister(exit_fd)
            os.close(exit_fd)
            for fd in {*self.outputs, self.stdin_w, self.console} - {-1}:
                os.close(fd)
            self.outputs = {}
            self.stdin_w = self.console = -1
            self.health_due = None
            self._end_health()
            self._release_fuse()
        return code

    def _release_fuse(self) -> None:
        """The container ended: so does the fuse driver's helper; reap it (see helpers)."""
        if self.fuse is None:
            return
        from rootless.monitor.helpers import release_fuse

        death, self.fuse = release_fuse(self.fuse), None
        if death is not None:
            print(
                f"rl monitor: the fuseoverlay helper of this container died ({death}): from "
                "then on its file system failed with I/O errors",
                file=sys.stderr,
            )

    def deliver_early_input(self) -> None:
        """start -a -i: what the client typed before the container ran, to it now."""
        early, self.early_input = self.early_input, []
        for client, kind, payload in early:
            self._client_frame(client, kind, payload)

    def _timeout(self, ended_at: float | None) -> float | None:
        now = time.monotonic()
        deadlines = [] if self.health_due is None else [self.health_due]
        if ended_at is not None:
            deadlines.append(ended_at + DRAIN_SECONDS)
        if self.health_pid:
            deadlines.append(now + HEALTH_POLL)
        for stack in (self.net, self.ports):
            if stack is not None and (left := stack.select_timeout()) is not None:  # type: ignore[attr-defined]
                deadlines.append(now + left)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last holder closed it
            data = b""
        if not data:
            self.selector.unregister(fd)
            del self.outputs[fd]
            return
        kind = self.outputs[fd]
        if self.log is not None:
            self.log.write("stdout" if kind == frames.STDOUT else "stderr", data)
        self._broadcast(frames.encode_frame(kind, data))

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        role = key.data
        if role == "listen":
            self._accept()
        elif role == "signal":
            self._drain_signals()
        elif isinstance(role, Client):
            # One select() hands out a batch of keys: a client may have been dropped since
            # (by output broadcast to it earlier in the batch, or by the flush just below
            # when its peer hung up: EPOLLHUP reads as both events). Its socket is closed then.
            if events & selectors.EVENT_WRITE and self._serving(role):
                self._flush(role)
            if events & selectors.EVENT_READ and self._serving(role):
                self._client_input(role)
        elif callable(role):  # the network driver's and port publishers' sockets
            role(events)

    def _tick(self) -> None:
        signals, self.signals = self.signals, []
        for _sig in signals:
            self._on_signal()
        self._health_tick()
        for stack in (self.net, self.ports):
            if stack is not None:
                stack.run_timers()  # type: ignore[attr-defined]

    def sleep(self, seconds: float) -> bool:
        """Wait out a restart back-off while serving attach clients; False when a signal
        asked the monitor to stop."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            for key, events in self.selector.select(left):
                self._dispatch(key, events)
            self._tick()
        return False

    def await_first_client(self, say: Callable[[str], None]) -> None:
        """start -a: the CLI connects before the container starts, so it sees all output."""
        say("L")
        deadline = time.monotonic() + ATTACH_WAIT
        while time.monotonic() < deadline and not any(c.greeted for c in self.clients.values()):
            for key, events in self.selector.select(max(0.0, deadline - time.monotonic())):
                self._dispatch(key, events)

    # --- attach clients -------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        self._add_client(Client(sock))

    def _add_client(self, client: Client) -> None:
        client.sock.setblocking(False)
        self.clients[client.sock.fileno()] = client
        self.selector.register(client.sock, selectors.EVENT_READ, client)

    def _client_input(self, client: Client) -> None:
        try:
            data = client.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        try:
            for kind, payload in client.decoder.feed(data):
                self._client_frame(client, kind, payload)
        except ValueError:
            self._drop(client)

    def _client_frame(self, client: Client, kind: int, payload: bytes) -> None:
        running = self.pid != 0
        if kind == frames.HELLO:
            # {"stdin": true|false} from rootless.monitor.attach.connect (no json here)
            client.greeted = True
            client.stdin = b'"stdin":true' in payload.replace(b" ", b"")
        elif kind in (frames.STDIN, frames.STDIN_EOF) and client.stdin and not running:
            self.early_input.append((client, kind, payload))  # start -a -i: not started yet
        elif kind == frames.STDIN and client.stdin and self.stdin_w >= 0:
            try:
                os.set_blocking(self.stdin_w, True)  # input is small and interactive
                frames._write_all(self.stdin_w, payload)
            except OSError:
                pass
        elif kind == frames.STDIN_EOF and client.stdin and self.stdin_w >= 0:
            if self.stdin_w != self.console:
                os.close(self.stdin_w)
                self.stdin_w = -1
            else:
                os.write(self.stdin_w, b"\x04")  # ^D on the terminal
        elif kind == frames.RESIZE and running and self.console >= 0:
            import fcntl
            import termios

            try:
                fcntl.ioctl(self.console, termios.TIOCSWINSZ, payload[:8])
            except OSError:
                pass

    def _broadcast(self, frame: bytes) -> None:
        for client in list(self.clients.values()):
            if not client.greeted:
                continue
            client.pending += frame
            if len(client.pending) > CLIENT_BUFFER_LIMIT:
                self._drop(client)
            else:
                self._flush(client)

    def _flush(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(client)
            return
        del client.pending[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.pending else 0)
        self.selector.modify(client.sock, events, client)

    def _serving(self, client: Client) -> bool:
        """Is `client` still one of ours (not dropped: a dropped one's fileno() is -1, and
        its fd number may already belong to a newer client)?"""
        return self.clients.get(client.sock.fileno()) is client

    def _drop(self, client: Client) -> None:
        if not self._serving(client):
            return  # dropped already: dropping twice must not cost the container its monitor
        self.clients.pop(client.sock.fileno(), None)
        self.selector.unregister(client.sock)
        client.sock.close()

    def flush_clients(self) -> None:
        """Hand each client what is still buffered for it (blocking, 2 s at most each)."""
        for client in list(self.clients.values()):
            if not client.pending:
                continue
            try:
                client.sock.settimeout(2)
                client.sock.sendall(client.pending)
                client.pending.clear()
                client.sock.setblocking(False)
            except OSError:
                self._drop(client)

    def tell_clients_exit(self, code: int | None) -> None:
        """The container ended: each client gets EXIT and is let go (as podman attach ends)."""
        self.flush_clients()
        frame = frames.encode_frame(frames.EXIT, b"" if code is None else str(code).encode())
        for client in list(self.clients.values()):
            try:
                client.sock.settimeout(2)
                client.sock.sendall(frame)
            except OSError:
                pass
            self._drop(client)

    def record_exit(self, code: int) -> bool:
        """The container's exit in the store, as ContainerStore.mark_exited (and, after a
        stop signal, set_stopped_by_user) write it, without importing the store: `rl stop`
        and `rl rm` wait for this. The starter asks for it (lean_exit_db) only when nothing
        else follows an exit (no restart policy, no --rm, no cgroup to read); False when it
        could not be written (the starter then records it)."""
        import sqlite3

        try:
            db = sqlite3.connect(self.lean_exit_db, timeout=10, isolation_level=None)
            try:
                db.execute(
                    "UPDATE containers SET state = 'exited', exit_code = ?, finished = ?, "
                    "error = '', stopped_by_user = stopped_by_user OR ? WHERE id = ?",
                    (code, time.time(), int(self.stop_requested), self.container_id),
                )
            finally:
                db.close()
        except sqlite3.Error as exc:
            print(f"rl monitor: cannot record the exit here: {exc}", file=sys.stderr)
            return False
        return True

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.selector.unregister(self.listener)
        self.listener.close()
        self.selector.close()
        # What _catch_signals took: the process may go on (a test), and an event loop started
        # later (trio's) expects no wakeup fd set.
        signal.set_wakeup_fd(-1)
        self._wake_r.close()
        self._wake_w.close()

    # --- signals, stop --------------------------------------------------------------------

    def _catch_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: self.signals.append(s))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "signal")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked across exec

    def _drain_signals(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def take_signals(self) -> None:
        """Act on signals caught outside the loop (before an exec)."""
        self._tick()

    def _on_signal(self) -> None:
        """Someone (systemd, a user) stops the monitor: stop the container like `rl stop`
        does, without restarting it afterwards (the starter records that)."""
        self.stop_requested = True
        if self.pid:
            try:
                os.kill(self.pid, self.stop_signal)  # our child: its pid cannot be reused
            except OSError:
                pass

    # --- healthchecks ---------------------------------------------------------------------

    def _health_tick(self) -> None:
        """Run `rl healthcheck run ID` when due (it records the result and applies
        --health-on-failure); the next one is due an interval after this one ended, as
        podman's systemd timer (OnUnitInactiveSec) does."""
        now = time.monotonic()
        if self.health_pid:
            try:
                pid, _ = os.waitpid(self.health_pid, os.WNOHANG)
            except ChildProcessError:
                pid = self.health_pid
            if not pid:
                return
            self.health_pid = 0
            if self.health_interval > 0 and self.pid:
                self.health_due = now + self.health_interval
        if self.health_due is None or now < self.health_due:
            return
        self.health_due = None
        argv = [sys.executable, "-S", "-m", "rootless", "healthcheck", "run", self.container_id]
        null = os.open(os.devnull, os.O_RDWR)
        try:
            self.health_pid = os.posix_spawn(
                sys.executable,
                argv,
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1)],
            )
        except OSError as exc:
            print(f"rl monitor: cannot run the healthcheck: {exc}", file=sys.stderr)
        finally:
            os.close(null)

    def _end_health(self) -> None:
        if self.health_pid:
            _kill_and_reap(self.health_pid)
            self.health_pid = 0

    # --- across exec ----------------------------------------------------------------------

    def handoff(self) -> list[str]:
        """KEY=VALUE words that let `from_handoff` in a fresh process (after exec) take over
        this watcher's fds; they are made inheritable here."""
        words = [
            f"id={self.container_id}",
            f"listen={_keep(self.listener.fileno())}",
            f"pid={self.pid}",
            f"stop_signal={int(self.stop_signal)}",
            f"stop={int(self.stop_requested)}",
            "clients="
            + ",".join(
                f"{_keep(c.sock.fileno())}:{int(c.greeted)}:{int(c.stdin)}:"
                + c.decoder.pending().hex()
                for c in self.clients.values()
            ),
            *(f"note.{key}={value}" for key, value in self.notes.items()),
        ]
        if self.lean_exit_db:
            words.append(f"lean_exit_db={self.lean_exit_db}")
        if self.pid:
            words += [
                "outputs=" + ",".join(f"{_keep(fd)}:{kind}" for fd, kind in self.outputs.items()),
                f"stdin={_keep(self.stdin_w)}",
                f"console={_keep(self.console)}",
                f"health={self.health_interval!r}:{self.health_started!r}",
            ]
        if self.log is not None:
            words.append(f"log={self.log.max_size or 0}:{self.log.path}")
        if self.fuse is not None:
            from rootless.monitor.helpers import fuse_word

            words.append(fuse_word(self.fuse))
        return words


def _keep(fd: int) -> int:
    if fd >= 0:
        os.set_inheritable(fd, True)
    return fd


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _adopt_socket(fd: int) -> socket.socket:
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def from_handoff(words: list[str]) -> Watcher:
    values = dict(word.split("=", 1) for word in words)
    log = None
    if "log" in values:
        max_size, _, path = values["log"].partition(":")
        log = LogWriter(path, int(max_size) or None)
    clients = []
    for item in filter(None, values.get("clients", "").split(",")):
        number, greeted, stdin, pending = item.split(":")
        client = Client(_adopt_socket(int(number)), greeted == "1", stdin == "1")
        client.decoder.restore(bytes.fromhex(pending))  # a frame cut by the exec
        clients.append(client)
    watcher = Watcher(values["id"], _adopt_socket(int(values["listen"])), log, clients)
    watcher.notes = {k[5:]: v for k, v in values.items() if k.startswith("note.")}
    watcher.stop_requested = values.get("stop") == "1"
    watcher.lean_exit_db = values.get("lean_exit_db", "")
    watcher.pid = int(values.get("pid", 0))
    watcher.stop_signal = int(values.get("stop_signal", signal.SIGTERM))
    for item in filter(None, values.get("outputs", "").split(",")):
        number, kind = item.split(":")
        watcher.outputs[int(number)] = int(kind)
    watcher.stdin_w = int(values.get("stdin", -1))
    watcher.console = int(values.get("console", -1))
    interval, _, started = values.get("health", "0:0").partition(":")
    watcher.health_interval, watcher.health_started = float(interval), float(started)
    for fd in (*watcher.outputs, watcher.stdin_w, watcher.console):
        if fd >= 0:
            os.set_inheritable(fd, False)
    if "tap" in values:
        options = {k[4:]: v for k, v in values.items() if k.startswith("net.")}
        watcher.net = _network(int(values["tap"]), options)
    if "fuse" in values or "ports.dialer" in values:
        from rootless.monitor import helpers

        if "fuse" in values:
            watcher.fuse = helpers.parse_fuse(values["fuse"])
        if "ports.dialer" in values:
            watcher.ports = helpers.adopt_ports(values)
    return watcher


def _network(fd: int, options: dict[str, str]) -> object:
    """The network driver over the TAP fd the starter opened (the `tap=FD` and `net.KEY=VALUE`
    words)."""
    from rootless.network import driver_for

    os.set_inheritable(fd, False)
    return driver_for(fd, options)


def network_words(tap_fd: int, options: dict[str, str]) -> list[str]:
    """The handoff words for the network (see _network); makes `tap_fd` inheritable."""
    return [f"tap={_keep(tap_fd)}", *(f"net.{key}={value}" for key, value in options.items())]


def exec_python(argv: list[str]) -> None:
    """Replace this process by `python -S -m ARGV...` (the same interpreter, environment
    and pid). Raises OSError when the exec failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        os.execv(sys.executable, [sys.executable, "-S", "-m", *argv])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def main(words: list[str]) -> int:
    watcher = from_handoff(words)
    for stack in (watcher.net, watcher.ports):
        if stack is not None:
            stack.register(watcher.selector)  # type: ignore[attr-defined]
    code = watcher.serve()
    # The starter sets both up again for a restart (a new container, a new netns).
    for stack in (watcher.ports, watcher.net):
        if stack is not None:
            stack.close()  # type: ignore[attr-defined]
    watcher.net = watcher.ports = None
    if watcher.lean_exit_db and watcher.record_exit(code):
        watcher.tell_clients_exit(code)
        path = watcher.listener.getsockname()
        watcher.close()
        if watcher.log is not None:
            watcher.log.close()
        try:
            os.unlink(path)
        except OSError:
            pass
        return code  # as the starter would exit (see rootless.monitor.main)
    watcher.flush_clients()
    argv = ["rootless.monitor", watcher.container_id, "--exited", str(code)]
    # The starter takes the attach socket and the clients over (they get EXIT once the exit is
    # recorded); everything else here is close-on-exec.
    argv += ["--handoff", *watcher.handoff()]
    try:
        exec_python(argv)
    except OSError as exc:
        print(f"rl monitor: cannot record the container's exit: {exc}", file=sys.stderr)
    return code
