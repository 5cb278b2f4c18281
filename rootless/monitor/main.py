"""The monitor process of one detached container (see rootless.monitor).

It is exec'd fresh (`python -S -m rootless.monitor ID READY_FD`) in a session of its own, so
it holds none of the CLI's memory and no terminal. Life of a monitor:

1. become the container's runner in the store, open the attach socket;
2. start the container with the executor, its stdio on pipes (or a pty) the monitor reads;
   tell the CLI on READY_FD: "R<pid>" running, or "E<code> <message>" (then exit);
3. loop on one selector: container output -> log + attach clients; attach clients' input ->
   the container; the keeper's pidfd -> the container ended; signals (SIGTERM/SIGINT/SIGHUP:
   stop the container, as `rl stop` would); timers (healthchecks, restart back-off);
4. when it ended: record the exit, restart it if the policy says so, else clean up (remove
   an --rm container) and exit.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

from rootless.containers.lifecycle import stop_signal
from rootless.containers.store import ContainerStore, runner_alive
from rootless.errors import RlError
from rootless.monitor import attach as frames
from rootless.monitor.restart import parse_restart, restart_delay, should_restart
from rootless.network import uses_stack

# A client that does not read its output is dropped beyond this much buffered for it.
CLIENT_BUFFER_LIMIT = 4 << 20
# After the keeper ended, output still in the pipes is read for at most this long.
DRAIN_SECONDS = 2.0
READ_SIZE = 65536
# start -a: how long the monitor waits for the CLI to connect before starting anyway.
ATTACH_WAIT = 10.0


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m rootless.monitor CONTAINER_ID [READY_FD]", file=sys.stderr)
        return 2
    ready_fd = int(argv[1]) if len(argv) > 1 else -1
    if ready_fd >= 0:
        os.set_inheritable(ready_fd, False)  # the container must not hold the CLI's pipe
    monitor = Monitor(argv[0], ready_fd, attach_first="--attach-first" in argv[2:])
    try:
        return monitor.run()
    except RlError as err:
        monitor.report_failure(err.exit_code, err.message)
        print(f"rl monitor: {err.message}", file=sys.stderr)
        return 1


def socket_path(container_id: str) -> str:
    from rootless.paths import runtime_dir

    return os.path.join(runtime_dir(), "containers", container_id, "attach.sock")


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = frames.FrameDecoder()
        self.greeted = False
        self.stdin = False
        self.pending = bytearray()


class Monitor:
    def __init__(self, container_id: str, ready_fd: int, attach_first: bool = False) -> None:
        self.container_id = container_id
        self.ready_fd = ready_fd
        self.attach_first = attach_first
        self.store = ContainerStore.open()
        self.selector = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}
        self.signals: list[int] = []
        self.launch: Any = None
        self.net: Any = None  # netns.driver.NetDriver with --network slirp4netns
        self.ports: Any = None  # netns.ports.PortPublisher with -p
        self.outputs: dict[int, int] = {}  # fd -> frame kind (STDOUT/STDERR)
        self.stdin_w = -1
        self.owned: set[int] = set()  # the monitor's ends of the container's stdio
        self.early_input: list[tuple[_Client, int, bytes]] = []
        self.log: Any = None
        self.health_due: float | None = None
        self.health_pid = 0
        self.health_config: Any = None
        self.health_started = 0.0
        self.stop_requested = False

    # --- the whole life -------------------------------------------------------------------

    def run(self) -> int:
        record = self.store.get(self.container_id)
        if runner_alive(record):
            raise RlError(f"container {record.id} is already running")
        config = record.config
        self.policy = parse_restart(config.get("restart") or "no")
        self.tty = bool(config.get("tty"))
        self.interactive = bool(config.get("interactive"))
        self.stop_signal = stop_signal(config)
        self._open_log(record)
        self._listen()
        self._catch_signals()
        if self.attach_first:
            self._await_first_client()
        first = True
        code: int | None = None
        try:
            while True:
                code = self._run_once(first)
                first = False
                if code is None and self.launch is None:
                    return 1  # did not start; already reported
                record = self.store.get(self.container_id)
                if self.stop_requested or not should_restart(
                    self.policy, code, record.restart_count, record.stopped_by_user
                ):
                    break
                self.store.set_state(self.container_id, "restarting")
                if not self._sleep(restart_delay(record.restart_count)):
                    break
                self.store.count_restart(self.container_id)
        finally:
            self._shutdown()
        # The container's last exit code, as conmon exits: under systemd (Type=notify units,
        # where the monitor is the main process) Restart=on-failure then sees a crash.
        return code if code is not None else 1

    def _run_once(self, first: bool) -> int | None:
        """Start the container, serve it until it ends; its exit code (None: unknown)."""
        from rootless.runtime.executor import new_launch
        from rootless.systemd.notify import container_spec

        record = self.store.get(self.container_id)
        spec = json.loads((self.store.userdata(record.id) / "config.json").read_text())
        spec = container_spec(spec, record.config)  # --sdnotify=container: the socket inside
        from rootless.cgroups import container as cgroup

        stdio = self._make_stdio()
        cg = None
        try:
            cg = cgroup.setup(self.store, record)  # None: no cgroup of its own
            launch = new_launch(
                spec,
                mapping=_default_mapping(),
                rootfs=_reopen_rootfs(self.store, record),
                tty=self.tty,
                interactive=self.interactive,
                init=bool(record.config.get("init")),
                stdio=stdio,
                on_netns=self._attach_network if uses_stack(record.config) else None,
                cgroup_dir=cg.path if cg is not None else None,
            )
            self.store.mark_running(record.id)
            failed = launch.start()
        except RlError as err:
            self._close_owned()
            self._detach_network()
            self.store.mark_exited(record.id, None, err.message)
            if first:
                self.report_failure(err.exit_code, err.message)
                return None
            raise
        finally:
            for fd in set(stdio):
                os.close(fd)
        if failed is not None:
            self._close_owned()
            self._detach_network()
            launch.close()
            self.store.mark_exited(record.id, failed[0], failed[1])
            if first:
                self.report_failure(*failed)
                return None
            return failed[0]
        self.launch = launch
        self.store.set_container_pid(record.id, launch.container_pid)
        if first:
            # systemd helper's 3 lines: the pid file, and MAINPID/READY=1 per --sdnotify.
            from rootless.systemd.notify import container_started

            container_started(record.id, record.config)
            self._report(f"R{launch.container_pid}")
        self._serve()
        code = launch.wait()
        launch.close()
        self.launch = None
        self._detach_network()
        if cg is not None and cg.oom_killed():
            self.store.set_oom_killed(record.id)
        self.store.mark_exited(record.id, code)
        self._tell_clients_exit(code)
        return code

    # --- stdio ----------------------------------------------------------------------------

    def _make_stdio(self) -> tuple[int, int, int]:
        """The container's fds 0-2; the monitor's ends go to `owned`. With a tty the
        executor makes the pty (its master arrives as launch.console) and stdio is null."""
        null_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if self.tty:
            null_w = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            return null_r, null_w, null_w
        stdin_r = null_r
        if self.interactive:
            os.close(null_r)
            stdin_r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
            self.owned.add(self.stdin_w)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.outputs = {out_r: frames.STDOUT, err_r: frames.STDERR}
        self.owned |= {out_r, err_r}
        return stdin_r, out_w, err_w

    def _close_owned(self) -> None:
        for fd in self.owned:
            os.close(fd)
        self.owned.clear()
        self.outputs = {}
        self.stdin_w = -1

    # --- the event loop -------------------------------------------------------------------

    def _serve(self) -> None:
        from rootless import syscalls as sc

        launch = self.launch
        if launch.console is not None:  # closed by launch.close(), not ours
            self.outputs = {launch.console: frames.STDOUT}
            self.stdin_w = launch.console
        for fd in self.outputs:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, "output")
        keeper = sc.pidfd_open(launch.keeper_pid)
        self.selector.register(keeper, selectors.EVENT_READ, "exit")
        early, self.early_input = self.early_input, []
        for client, kind, payload in early:
            self._client_frame(client, kind, payload)
        self._schedule_health()
        ended_at: float | None = None
        try:
            while ended_at is None or (
                self.outputs and time.monotonic() - ended_at < DRAIN_SECONDS
            ):
                for key, events in self.selector.select(self._timeout(ended_at)):
                    if key.data == "exit":
                        self.selector.unregister(keeper)
                        ended_at = time.monotonic()
                    elif key.data == "output":
                        self._read_output(key.fd)
                    else:
                        self._dispatch(key, events)
                self._tick()
        finally:
            for fd in self.outputs:
                self.selector.unregister(fd)
            if keeper in self.selector.get_map():
                self.selector.unregister(keeper)
            os.close(keeper)
            self._close_owned()
            self.health_due = None

    def _timeout(self, ended_at: float | None) -> float | None:
        now = time.monotonic()
        deadlines = [d for d in (self.health_due,) if d is not None]
        if ended_at is not None:
            deadlines.append(ended_at + DRAIN_SECONDS)
        if self.health_pid:
            deadlines.append(now + 0.2)  # poll the running check
        for stack in (self.net, self.ports):
            if stack is not None and (left := stack.select_timeout()) is not None:
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
            if fd == self.stdin_w:  # the pty master: input has nowhere to go either
                self.stdin_w = -1
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
        elif callable(role):  # the network driver's sockets and TAP
            role(events)
        elif isinstance(role, _Client):
            if events & selectors.EVENT_WRITE:
                self._flush(role)
            if events & selectors.EVENT_READ:
                self._client_input(role)

    def _tick(self) -> None:
        for sig in self.signals:
            self._on_signal(sig)
        self.signals.clear()
        self._health_tick()
        if self.net is not None:
            self.net.run_timers()
        if self.ports is not None:
            self.ports.run_timers()

    # --- the network stack -----------------------------------------------------------------

    def _attach_network(self, keeper_pid: int) -> None:
        """The executor's on_netns hook: the container's network namespace exists."""
        from rootless.network import attach

        config = self.store.get(self.container_id).config
        self.net = attach(keeper_pid, config.get("network_options") or {})
        self.net.register(self.selector)
        if config.get("publish"):
            from rootless.network import bound_ports, publish

            self.ports = publish(keeper_pid, list(config["publish"]))
            self.ports.register(self.selector)
            self.store.update_config(self.container_id, ports=bound_ports(self.ports))

    def _detach_network(self) -> None:
        if self.ports is not None:
            self.ports.close()
            self.ports = None
        if self.net is not None:
            self.net.close()
            self.net = None

    # --- attach clients -------------------------------------------------------------------

    def _listen(self) -> None:
        path = socket_path(self.container_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.listener.bind(path)
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "listen")

    def _await_first_client(self) -> None:
        """start -a: the CLI connects before the container starts, so it sees all output."""
        self._say("L")
        deadline = time.monotonic() + ATTACH_WAIT
        while time.monotonic() < deadline and not any(c.greeted for c in self.clients.values()):
            for key, events in self.selector.select(max(0.0, deadline - time.monotonic())):
                self._dispatch(key, events)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        client = _Client(sock)
        self.clients[sock.fileno()] = client
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _client_input(self, client: _Client) -> None:
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

    def _client_frame(self, client: _Client, kind: int, payload: bytes) -> None:
        if kind == frames.HELLO:
            client.greeted = True
            try:
                client.stdin = bool(json.loads(payload).get("stdin"))
            except ValueError:
                client.stdin = False
        elif kind in (frames.STDIN, frames.STDIN_EOF) and client.stdin and self.launch is None:
            self.early_input.append((client, kind, payload))  # start -a -i: not started yet
        elif kind == frames.STDIN and client.stdin and self.stdin_w >= 0:
            try:
                os.set_blocking(self.stdin_w, True)  # input is small and interactive
                frames._write_all(self.stdin_w, payload)
            except OSError:
                pass
        elif kind == frames.STDIN_EOF and client.stdin and self.stdin_w >= 0:
            if self.stdin_w in self.owned:
                self.owned.discard(self.stdin_w)
                os.close(self.stdin_w)
                self.stdin_w = -1
            else:
                os.write(self.stdin_w, b"\x04")  # ^D on the terminal
        elif kind == frames.RESIZE and self.launch is not None and self.launch.console:
            import fcntl
            import termios

            try:
                fcntl.ioctl(self.launch.console, termios.TIOCSWINSZ, payload[:8])
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

    def _flush(self, client: _Client) -> None:
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

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        self.selector.unregister(client.sock)
        client.sock.close()

    def _tell_clients_exit(self, code: int | None) -> None:
        """The container ended: each client gets EXIT and is let go (as podman attach ends)."""
        frame = frames.encode_frame(frames.EXIT, b"" if code is None else str(code).encode())
        for client in list(self.clients.values()):
            try:
                client.sock.setblocking(True)
                client.sock.settimeout(2)
                client.sock.sendall(bytes(client.pending) + frame)
            except OSError:
                pass
            self._drop(client)

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

    def _drain_signals(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _on_signal(self, sig: int) -> None:
        """Someone (systemd, a user) stops the monitor: stop the container like `rl stop`
        does, without restarting it afterwards."""
        self.stop_requested = True
        self.store.set_stopped_by_user(self.container_id)
        if self.launch is not None and self.launch.container_pid:
            self.launch._signal_container(self.stop_signal)

    def _sleep(self, seconds: float) -> bool:
        """Wait out a restart back-off while serving clients; False when told to stop."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return not self.store.get(self.container_id).stopped_by_user
            for key, events in self.selector.select(left):
                self._dispatch(key, events)
            self._tick()
        return False

    # --- healthchecks ---------------------------------------------------------------------

    def _schedule_health(self) -> None:
        """A (re)start: State.Health back to "starting", the first check an interval on."""
        from rootless.monitor.health import HealthConfig, schedule, started_state

        record = self.store.get(self.container_id)
        stored = record.config.get("healthcheck")
        self.health_config = HealthConfig.from_json(stored) if stored else None
        self.health_started = time.monotonic()
        self.health_due = None
        if self.health_config is None:
            return
        self.store.set_health(self.container_id, started_state(record.health))
        self.health_due = schedule(
            self.health_config, self.health_started, self.health_started, None
        )

    def _health_tick(self) -> None:
        """Run `rl healthcheck run ID` when due (it records the result and applies
        --health-on-failure); the next one is due an interval after this one ended."""
        from rootless.monitor.health import schedule

        now = time.monotonic()
        if self.health_pid:
            try:
                pid, _ = os.waitpid(self.health_pid, os.WNOHANG)
            except ChildProcessError:
                pid = self.health_pid
            if not pid:
                return
            self.health_pid = 0
            if self.health_config is not None and self.launch is not None:
                self.health_due = schedule(self.health_config, now, self.health_started, now)
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

    # --- the end --------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self.health_pid:
            try:
                os.kill(self.health_pid, signal.SIGKILL)
                os.waitpid(self.health_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if self.launch is not None:
            self.launch.close()
        self._detach_network()
        for client in list(self.clients.values()):
            self._drop(client)
        try:
            os.unlink(socket_path(self.container_id))
        except OSError:
            pass
        if self.log is not None:
            self.log.close()
        record = self.store.find(self.container_id)
        if record is not None and record.autoremove:
            self.store.remove(record, volumes=True)
        self.store.close()

    # --- start-up report ------------------------------------------------------------------

    def _say(self, line: str) -> None:
        if self.ready_fd >= 0:
            try:
                os.write(self.ready_fd, line.encode() + b"\n")
            except OSError:
                pass

    def _report(self, line: str) -> None:
        """The last word to the CLI that started us."""
        self._say(line)
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
        self.ready_fd = -1

    def report_failure(self, code: int, message: str) -> None:
        self._report(f"E{code} {message}")

    def _open_log(self, record: Any) -> None:
        driver = record.config.get("log_driver") or "k8s-file"
        if driver != "k8s-file":
            return
        from rootless.monitor.logfile import LogWriter

        opts = record.config.get("log_opts") or {}
        path = opts.get("path") or os.fspath(self.store.userdata(record.id) / "ctr.log")
        max_size = None
        if opts.get("max-size"):
            # Only here: rootless.runtime.options (RunOptions and its dataclasses) costs the
            # monitor ~0.5 MB.
            from rootless.runtime.options import parse_human_size

            max_size = parse_human_size(opts["max-size"], "--log-opt max-size")
        self.log = LogWriter(path, max_size)
        if self.log.last_error is not None:
            raise RlError(f"cannot open the container's log file {path}: {self.log.last_error}")


def _default_mapping() -> Any:
    from rootless.userns import default_mapping

    return default_mapping()


def _reopen_rootfs(store: ContainerStore, record: Any) -> Any:
    from rootless.storage import reopen_rootfs

    return reopen_rootfs(store.container_dir(record.id), record.config.get("storage") or {})
