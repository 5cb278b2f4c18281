"""The monitor process of one detached container (see rootless.monitor).

It is exec'd fresh (`python -S -m rootless.monitor ID READY_FD`) in a session of its own, so
it holds none of the CLI's memory and no terminal. One pid, three phases:

1. the starter (this module, heavy: store, runtime, cgroups): become the container's runner in
   the store, open the attach socket and the log, start the container with the executor (its
   pid 1 becomes our own child), tell the CLI on READY_FD: "R<pid>" running, or
   "E<code> <message>" (then exit);
2. exec the watcher (`rootless.monitor.watch`: a fresh, lean interpreter holding only fds and
   the container's helper processes, see rootless.monitor.helpers) for as long as the
   container runs; when that exec fails, the same Watcher runs here instead;
3. the watcher execs this module again (`ID --exited CODE --handoff ...`) to record the exit,
   tell attach clients, and apply the restart policy: start again (back to 2) or clean up
   (remove an --rm container) and exit with the container's code.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

from rootless.containers.lifecycle import stop_signal
from rootless.containers.store import ContainerStore, runner_alive
from rootless.errors import RlError
from rootless.monitor import attach as frames
from rootless.monitor import watch
from rootless.monitor.restart import parse_restart, restart_delay, should_restart
from rootless.network import uses_stack


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m rootless.monitor CONTAINER_ID [READY_FD]", file=sys.stderr)
        return 2
    resumed: tuple[int, list[str]] | None = None
    ready_fd = -1
    early = argv[0] == "-"
    if early:  # run -d started us before the container existed: its ID comes on --id-fd
        _preload()
        container_id = _read_id(int(argv[argv.index("--id-fd") + 1]))
        if not container_id:
            return 0  # the CLI gave up (the container could not be made): nothing to do
        argv = [container_id, *argv[1:]]
    if argv[1:2] == ["--exited"]:  # from the watcher: ID --exited CODE --handoff WORDS...
        words = argv[argv.index("--handoff") + 1 :] if "--handoff" in argv else []
        resumed = (int(argv[2]), words)
    elif len(argv) > 1:
        ready_fd = int(argv[1])
        os.set_inheritable(ready_fd, False)  # the container must not hold the CLI's pipe
    monitor = Monitor(argv[0], ready_fd, attach_first="--attach-first" in argv[2:])
    if early:
        monitor.log_stderr()
    try:
        return monitor.run(resumed)
    except RlError as err:
        monitor.report_failure(err.exit_code, err.message)
        print(f"rl monitor: {err.message}", file=sys.stderr)
        return 1


def _preload() -> None:
    """What starting a container imports, loaded while the CLI still prepares it."""
    import rootless.cgroups.container
    import rootless.runtime.executor
    import rootless.storage.overlay
    import rootless.systemd.notify
    import rootless.userns  # noqa: F401


def _read_id(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 128)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data.decode().strip() if data.endswith(b"\n") else ""


def socket_path(container_id: str) -> str:
    from rootless.paths import runtime_dir

    return os.path.join(runtime_dir(), "containers", container_id, "attach.sock")


class Monitor:
    def __init__(self, container_id: str, ready_fd: int, attach_first: bool = False) -> None:
        self.container_id = container_id
        self.ready_fd = ready_fd
        self.attach_first = attach_first
        self.store = ContainerStore.open()
        self.watcher: watch.Watcher | None = None
        self.launch: Any = None
        self.net: Any = None  # netns.driver.NetDriver with --network slirp4netns, here
        self.ports: Any = None  # netns.ports.PortPublisher with -p
        self.tap_fd = -1  # the TAP device for a watcher of its own to drive
        self.outputs: dict[int, int] = {}  # fd -> frame kind (STDOUT/STDERR)
        self.stdin_w = -1
        self.owned: set[int] = set()  # the monitor's ends of the container's stdio
        self.log: Any = None
        self.stop_requested = False

    def log_stderr(self) -> None:
        """Started early (with /dev/null for stderr): from now on into the container's
        monitor.log, as a monitor spawned for it writes."""
        path = self.store.userdata(self.container_id) / "monitor.log"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        os.dup2(fd, 2)
        os.close(fd)

    # --- the whole life -------------------------------------------------------------------

    def run(self, resumed: tuple[int, list[str]] | None = None) -> int:
        record = self.store.get(self.container_id)
        if resumed is None and runner_alive(record):
            raise RlError(f"container {record.id} is already running")
        config = record.config
        self.policy = parse_restart(config.get("restart") or "no")
        self.tty = bool(config.get("tty"))
        self.interactive = bool(config.get("interactive"))
        self.stop_signal = stop_signal(config)
        if resumed is None:
            self._open_log(record)
            self.watcher = watch.Watcher(self.container_id, self._listen(), self.log)
        else:
            self.watcher = watch.from_handoff(resumed[1])
            self.log = self.watcher.log
        self.watcher.stop_signal = self.stop_signal
        if self.attach_first:
            self.watcher.await_first_client(self._say)
        first = resumed is None
        code: int | None = None
        try:
            while True:
                if resumed is not None:
                    code = resumed[0]
                    self._record_exit(code, None)
                    resumed = None
                else:
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
        """Start the container, serve it until it ends; its exit code (None: unknown).
        Under a watcher of its own this does not return: the process execs it."""
        from rootless.runtime.executor import new_launch
        from rootless.systemd.notify import container_spec

        assert self.watcher is not None
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
            # A restart stays "restarting" until the container has a pid (_sleep's state).
            self.store.mark_running(record.id, state="running" if first else "restarting")
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
        self.store.mark_started(record.id, launch.container_pid)
        if first:
            # systemd helper's 3 lines: the pid file, and MAINPID/READY=1 per --sdnotify.
            from rootless.systemd.notify import container_started

            container_started(record.id, record.config)
            self._report(f"R{launch.container_pid}")
        watcher = self.watcher
        watcher.pid = launch.keeper_pid  # the container's pid 1: our child
        launch.keeper_pid = 0  # the watcher reaps it
        if launch.console is not None:
            watcher.outputs = {launch.console: frames.STDOUT}
            watcher.stdin_w = watcher.console = launch.console
            launch.console = None  # the watcher closes it
        else:
            watcher.outputs, watcher.stdin_w = dict(self.outputs), self.stdin_w
        self.owned.clear()
        self.outputs, self.stdin_w = {}, -1
        self._schedule_health(record)
        if cg is not None:
            watcher.notes["cgroup"] = f"{cg.oom_before}:{cg.path}"
        if self.policy.name == "no" and not record.autoremove and cg is None:
            watcher.lean_exit_db = os.fspath(self.store.root / "rl.db")
        hand_over = getattr(launch.rootfs, "hand_over", None)
        if hand_over is not None:  # the fuse driver's helper: the watcher's now
            watcher.fuse = hand_over()
            launch.rootfs = None
        self._exec_watcher()  # returns only when the exec failed
        watcher.net, watcher.ports = self.net, self.ports
        code = watcher.serve()
        launch.close()
        self.launch = None
        self._record_exit(code, cg)
        return code

    def _exec_watcher(self) -> None:
        assert self.watcher is not None
        words = self.watcher.handoff()
        options = self.store.get(self.container_id).config.get("network_options") or {}
        if self.tap_fd >= 0:
            words += watch.network_words(self.tap_fd, options)
        if self.ports is not None:
            from rootless.monitor.helpers import port_words

            words += port_words(self.ports)
        self.watcher.take_signals()
        try:
            watch.exec_python(["rootless.monitor", self.container_id, "--watch", *words])
        except OSError as exc:
            print(f"rl monitor: cannot exec the watcher, serving here: {exc}", file=sys.stderr)
        if self.tap_fd >= 0:  # what the watcher would have done with it
            self.net = watch._network(self.tap_fd, options)
            self.net.register(self.watcher.selector)
            self.tap_fd = -1
        if self.ports is not None:
            self.ports.register(self.watcher.selector)

    def _record_exit(self, code: int | None, cg: Any) -> None:
        """The container ended (our watcher reaped it): the store learns how, then attach
        clients (so that one who reads the store after EXIT sees it)."""
        assert self.watcher is not None
        self._detach_network()
        if self.watcher.stop_requested and not self.stop_requested:
            self.stop_requested = True
            self.store.set_stopped_by_user(self.container_id)
        if cg is None and "cgroup" in self.watcher.notes:
            from rootless.cgroups import fs

            before, _, path = self.watcher.notes["cgroup"].partition(":")
            oom = fs.oom_kills(path) > int(before)
        else:
            oom = cg is not None and cg.oom_killed()
        self.watcher.notes.pop("cgroup", None)
        if oom:
            self.store.set_oom_killed(self.container_id)
        self.store.mark_exited(self.container_id, code)
        self.watcher.tell_clients_exit(code)

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

    # --- the network stack -----------------------------------------------------------------

    def _attach_network(self, keeper_pid: int) -> None:
        """The executor's on_netns hook: the container's network namespace exists. The
        watcher drives the stack and the port publishers (see _exec_watcher)."""
        from netns.tap import open_tap_in
        from rootless.network import tap_settings

        config = self.store.get(self.container_id).config
        options = config.get("network_options") or {}
        self.tap_fd = open_tap_in(keeper_pid, tap_settings(options))
        if config.get("publish"):
            from rootless.network import bound_ports, publish

            self.ports = publish(keeper_pid, list(config["publish"]))
            self.store.update_config(self.container_id, ports=bound_ports(self.ports))

    def _detach_network(self) -> None:
        if self.ports is not None:
            self.ports.close()
            self.ports = None
        if self.net is not None:
            self.net.close()
            self.net = None
        if self.tap_fd >= 0:
            os.close(self.tap_fd)
            self.tap_fd = -1
        if self.watcher is not None:
            self.watcher.net = self.watcher.ports = None

    # --- attach socket, back-off, healthchecks ---------------------------------------------

    def _listen(self) -> socket.socket:
        path = socket_path(self.container_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(path)
        listener.listen(16)
        return listener

    def _sleep(self, seconds: float) -> bool:
        """Wait out a restart back-off while serving clients; False when told to stop."""
        assert self.watcher is not None
        if not self.watcher.sleep(seconds):
            self.stop_requested = True
            self.store.set_stopped_by_user(self.container_id)
            return False
        return not self.store.get(self.container_id).stopped_by_user

    def _schedule_health(self, record: Any) -> None:
        """A (re)start: State.Health back to "starting"; the watcher runs the checks, the
        first an interval on."""
        assert self.watcher is not None
        stored = record.config.get("healthcheck")
        self.watcher.health_started = time.monotonic()
        self.watcher.health_interval = 0.0
        if not stored:
            return
        from rootless.monitor.health import HealthConfig, started_state

        config = HealthConfig.from_json(stored)
        self.store.set_health(self.container_id, started_state(record.health))
        if config.interval > 0 and config.command():
            self.watcher.health_interval = config.interval

    # --- the end --------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self.launch is not None:
            self.launch.close()
        self._close_owned()
        self._detach_network()
        if self.watcher is not None:
            self.watcher.close()
        try:
            os.unlink(socket_path(self.container_id))
        except OSError:
            pass
        if self.log is not None:
            self.log.close()
        record = self.store.find(self.container_id)
        if record is not None and record.autoremove:
            from rootless.containers.lifecycle import keep_exit_code

            keep_exit_code(record.id, record.exit_code)  # for an `rl wait` under way
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
        # The same choice of log as a foreground run makes (one set of rules).
        from rootless.containers.foreground_log import open_log

        self.log = open_log(record.config, os.fspath(self.store.userdata(record.id)))


def _default_mapping() -> Any:
    from rootless.userns import default_mapping

    return default_mapping()


def _reopen_rootfs(store: ContainerStore, record: Any) -> Any:
    from rootless.storage import reopen_rootfs

    return reopen_rootfs(store.container_dir(record.id), record.config.get("storage") or {})
