"""Entering a running container: `rl exec`'s process tree and the namespace dance.

    rl ── J (joins the container's namespaces; waits for E) ── E (the command, in the pid ns)

- J setns()es into the namespaces of the container's pid 1 that differ from rl's own: the user
  namespace first (from then on J holds every capability there, which the others need), then
  mount, pid, uts, ipc, net and cgroup. Joining a pid namespace only moves J's future children,
  so J forks E, which is then a process of the container as `ps` inside it shows.
- E takes the identity and limits the container's config.json gives (capabilities, seccomp,
  no_new_privs, rlimits, user; rootless.runtime.process applies them as for the container's
  own process) and execs the command; with `-t` it makes a pseudo-terminal of the container's
  devpts instance its controlling terminal and hands the master to rl, which relays it.
- J stays as E's parent, like the executor's keeper: with the parent-death signal chained
  rl -> J -> E, a killed rl takes its exec session with it. J exits with E's code (128+N when
  signal N killed E). A detached session (`-d`) has no parent-death signal and no terminal.
- Progress and failures come back on one close-on-exec pipe, with the executor's messages:
  "P<pid>" E's host pid, "S<msg>" a setup step failed, "X<code> <msg>" exec failed (126/127);
  end of file means the command runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

from rootless import syscalls as sc
from rootless.errors import EXIT_CANNOT_EXECUTE, EXIT_ERROR, EXIT_NOT_FOUND, RlError
from rootless.runtime import process, terminal
from rootless.runtime.executor import _describe, _die_with_parent, _report
from rootless.runtime.init import exit_code

# In the order they must be joined: the user namespace grants the rights the others need.
NAMESPACES = (
    ("user", sc.CLONE_NEWUSER),
    ("mnt", sc.CLONE_NEWNS),
    ("pid", sc.CLONE_NEWPID),
    ("uts", sc.CLONE_NEWUTS),
    ("ipc", sc.CLONE_NEWIPC),
    ("net", sc.CLONE_NEWNET),
    ("cgroup", sc.CLONE_NEWCGROUP),
)


class ExecPlan(NamedTuple):
    """One exec session: whose namespaces, which process, how it is attached."""

    pid: int  # the container's pid 1, in rl's pid namespace
    process: process.ProcessPlan
    tty: bool
    interactive: bool
    detach: bool = False
    # Without -t/-d: where the command's stdout and stderr go instead of rl's (a healthcheck
    # captures them in a file); J dup2()s it onto fds 1 and 2.
    output_fd: int | None = None


def open_namespaces(pid: int) -> list[tuple[int, int]]:
    """(CLONE_NEW*, fd) for each namespace of `pid` that is not also rl's, in joining order.

    Opened before joining any: /proc/PID/ns is unreachable from inside the mount namespace."""
    opened: list[tuple[int, int]] = []
    try:
        for name, flag in NAMESPACES:
            theirs = os.stat(f"/proc/{pid}/ns/{name}")
            ours = os.stat(f"/proc/self/ns/{name}")
            if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
                continue
            opened.append((flag, os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as exc:
        for _, fd in opened:
            os.close(fd)
        raise RlError(
            f"cannot open the namespaces of the container's process {pid}: {exc.strerror}: "
            "is the container still running?"
        ) from exc
    return opened


def run_exec(plan: ExecPlan, *, on_started: Callable[[int], None] | None = None) -> int:
    """Run the exec session; return the command's exit code as podman reports it (with -d: 0
    once the command runs)."""
    namespaces = open_namespaces(plan.pid)
    session = _Session(plan, namespaces)
    try:
        return session.run(on_started)
    finally:
        for _, fd in namespaces:
            os.close(fd)


class _Session:
    def __init__(self, plan: ExecPlan, namespaces: Sequence[tuple[int, int]]) -> None:
        self.plan = plan
        self.namespaces = namespaces
        self.winsize = terminal.window_size() if plan.tty else None
        self.command_pid = 0
        self.command_pidfd = -1
        self.pending_signals: list[int] = []

    # ---- rl's side ------------------------------------------------------------------------

    def run(self, on_started: Callable[[int], None] | None) -> int:
        from rootless.runtime.executor import PROXIED_SIGNALS

        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        sock_rl, sock_ct = terminal.socketpair() if self.plan.tty else (None, None)
        rl_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, PROXIED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            os.close(status_r)
            if sock_rl is not None:
                sock_rl.close()
            self._run_j(rl_pid, status_w, sock_ct)
        os.close(status_w)
        if sock_ct is not None:
            sock_ct.close()
        old_handlers = {} if self.plan.detach else self._proxy_signals(PROXIED_SIGNALS)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        finished = False
        try:
            failed = self._follow_setup(pid, status_r)
            if failed is not None:
                return _reap(pid, failed)
            if on_started is not None:
                on_started(self.command_pid)
            if self.plan.detach:
                finished = True  # J lives on as the command's parent
                return 0
            if sock_rl is not None:
                self._relay(pid, sock_rl)
            code = _reap(pid)
            finished = True
            return code
        finally:
            os.close(status_r)
            if self.command_pidfd >= 0:
                os.close(self.command_pidfd)
            if sock_rl is not None:
                sock_rl.close()
            if not finished:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)

    def _proxy_signals(self, signals: Sequence[int]) -> dict[int, Any]:
        def forward(sig: int, _frame: object) -> None:
            if self.command_pid:
                self._signal_command(sig)
            else:
                self.pending_signals.append(sig)

        return {sig: signal.signal(sig, forward) for sig in signals}

    def _signal_command(self, sig: int) -> None:
        try:
            if self.command_pidfd >= 0:
                sc.pidfd_send_signal(self.command_pidfd, sig)
            else:
                os.kill(self.command_pid, sig)
        except OSError:
            pass  # it has just ended

    def _follow_setup(self, pid: int, status_r: int) -> int | None:
        """Until exec: None when the command runs, else the exit code of an exec failure
        (podman's message printed); RlError for a failed setup step."""
        from rootless.runtime.executor import _messages

        for message in _messages(status_r):
            kind, body = message[:1], message[1:]
            if kind == "P":
                self.command_pid = int(body)
                try:
                    self.command_pidfd = sc.pidfd_open(self.command_pid)
                except OSError:
                    pass
                for sig in self.pending_signals:
                    self._signal_command(sig)
                self.pending_signals.clear()
            elif kind == "S":
                _reap(pid)
                raise RlError(f"cannot exec in the container: {body}")
            elif kind == "X":
                code, _, text = body.partition(" ")
                print(f"Error: {text}", file=sys.stderr, flush=True)
                return int(code)
        if not self.command_pid:
            status = _reap(pid)
            raise RlError(
                f"cannot enter the container's namespaces (exit status {status}): "
                "is the container still running?"
            )
        return None

    def _relay(self, pid: int, sock: Any) -> None:
        master = terminal.recv_fd(sock)
        if master is None:
            return
        exit_fd = sc.pidfd_open(pid)
        stdin_fd = 0 if self.plan.interactive else None

        def resize(_sig: int, _frame: object) -> None:
            terminal.copy_window_size(master)

        old_winch = signal.signal(signal.SIGWINCH, resize)
        try:
            if stdin_fd is not None and os.isatty(stdin_fd):
                with terminal.raw_mode(stdin_fd):
                    terminal.relay(master, exit_fd, stdin_fd)
            else:
                terminal.relay(master, exit_fd, stdin_fd)
        finally:
            signal.signal(signal.SIGWINCH, old_winch)
            os.close(exit_fd)
            os.close(master)

    # ---- J: joins the namespaces, E's parent ------------------------------------------------

    def _run_j(self, rl_pid: int, status_w: int, sock: Any) -> NoReturn:
        try:
            process.reset_signals()
            sc.set_process_name("rl-exec")
            if self.plan.detach:
                os.setsid()  # nothing of rl's terminal or session reaches it
            else:
                os.setpgid(0, 0)  # ^C on rl's terminal is rl's to forward
                _die_with_parent(rl_pid)
            null = os.open("/dev/null", os.O_RDWR)  # the host's: the container may lack one
            if self.plan.detach:
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
            elif not self.plan.interactive:
                os.dup2(null, 0)
            if self.plan.output_fd is not None and not self.plan.detach:
                os.dup2(self.plan.output_fd, 1)
                os.dup2(self.plan.output_fd, 2)
            os.close(null)
            _join_cgroup_of(self.plan.pid)
            for flag, fd in self.namespaces:
                sc.setns(fd, flag)
                os.close(fd)
                if flag == sc.CLONE_NEWUSER:
                    # Root of the container's user namespace (rl's uid is its 0).
                    os.setresgid(0, 0, 0)
                    os.setresuid(0, 0, 0)
                    if not self.plan.detach:
                        _die_with_parent(rl_pid)  # a credential change clears it
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            child = os.fork()
            if child == 0:
                self._run_e(status_w, sock)
            os.write(status_w, b"P%d\n" % child)
            os.close(status_w)
            if sock is not None:
                sock.close()
            while True:
                waited, status = os.waitpid(child, 0)
                if waited == child:
                    os._exit(exit_code(status))
        except BaseException as exc:
            _report(status_w, "S", _describe(exc))
            os._exit(EXIT_ERROR)

    # ---- E: the command -------------------------------------------------------------------

    def _run_e(self, status_w: int, sock: Any) -> NoReturn:
        plan = self.plan.process
        try:
            if not self.plan.detach:
                _die_with_parent(None)
            os.setsid()
            if sock is not None:
                attach_terminal(sock, self.winsize)
            enter_workdir(plan.cwd)
            process.reset_signals()
            process.apply_process(plan)
            process.exec_process(plan.args, plan.env, plan.uid)
        except process.ExecFailure as exc:
            _report(status_w, "X", f"{exc.code} {exc}")
            os._exit(exc.code)
        except BaseException as exc:
            _report(status_w, "S", _describe(exc))
            os._exit(EXIT_ERROR)


def attach_terminal(sock: Any, winsize: bytes | None) -> None:
    """A new pty of the container's devpts becomes E's controlling terminal and fds 0-2; the
    master goes to rl. Unlike the container's own console, /dev/console is left alone: it
    belongs to the container, not to this session."""
    import fcntl
    import struct
    import termios

    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, terminal.TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, terminal.TIOCGPTN, bytes(4)))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    if winsize:
        fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    terminal.send_fd(sock, master)
    os.close(master)
    sock.close()


def enter_workdir(cwd: str) -> None:
    """chdir, failing like runc does under podman exec (127 for a missing directory)."""
    import errno

    try:
        os.chdir(cwd)
    except OSError as exc:
        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR)
        reason = (exc.strerror or str(exc)).lower()
        raise process.ExecFailure(
            f'chdir to cwd ("{cwd}") set in config.json failed: {reason}: '
            + (
                "OCI runtime attempted to invoke a command that was not found"
                if missing
                else "OCI permission denied"
            ),
            EXIT_NOT_FOUND if missing else EXIT_CANNOT_EXECUTE,
        ) from exc


def _reap(pid: int, code: int | None = None) -> int:
    _, status = os.waitpid(pid, 0)
    return exit_code(status) if code is None else code


def _join_cgroup_of(pid: int) -> None:
    """Join the cgroup v2 of the container's pid 1 when it has one of its own (rl-<id>, see
    rootless.cgroups), before entering its cgroup namespace: exec sessions count against the
    container's limits, as with podman."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            path = next((line[3:].strip() for line in f if line.startswith("0::")), "")
        name = os.path.basename(path)
        if name.startswith("rl-") and name != "rl-supervisor":
            with open(f"/sys/fs/cgroup{path}/cgroup.procs", "w") as procs:
                procs.write("0")
    except OSError:
        pass  # no cgroup v2 of its own, or not ours to write: stay where rl is


class ExecOptions(NamedTuple):
    """What `rl exec` was asked for, beyond the container's own settings."""

    args: tuple[str, ...]
    env: dict[str, str]  # -e / --env-file, already expanded, applied over the container's
    user: str | None = None  # -u user[:group]
    workdir: str | None = None  # -w
    privileged: bool = False


def plan_exec_process(
    spec: dict[str, Any],
    options: ExecOptions,
    *,
    passwd_text: str | None,
    group_text: str | None,
) -> process.ProcessPlan:
    """The exec'd process: the container's process section (limits, seccomp, no_new_privs,
    capabilities) with the command, environment, user and working directory of the exec.

    Capabilities follow podman: the container's sets when the exec runs as the container's
    user; for another user those a process of that user would get in the container (a
    non-root user keeps only the bounding set); every capability with --privileged."""
    from rootless.runtime import caps
    from rootless.runtime.executor import cap_mask, plan_launch
    from rootless.runtime.users import resolve_user

    if not options.args:
        raise RlError("must provide a non-empty command to start an exec session")
    base = plan_launch(spec).process
    spec_process = spec.get("process") or {}
    env = process.env_dict(base.env)
    env.pop("HOSTNAME", None)  # the container's process has it; podman's exec sessions do not
    uid, gid, groups = base.uid, base.gid, base.additional_gids
    if options.user is not None:
        resolved = resolve_user(options.user, passwd_text, group_text)
        uid, gid, groups = resolved.uid, resolved.gid, resolved.additional_gids
        env["HOME"] = resolved.home
    env.update(options.env)
    capabilities = base.capabilities
    if options.privileged or uid != base.uid:
        bounding = (
            list(caps.CAPABILITIES)
            if options.privileged
            else list((spec_process.get("capabilities") or {}).get("bounding") or ())
        )
        sets = caps.process_capabilities(bounding, uid)
        capabilities = process.Capabilities(
            **{
                kind: cap_mask(sets.get(kind, ()), base.cap_last)
                for kind in process.Capabilities._fields
            }
        )
    cwd = options.workdir or base.cwd
    if not cwd.startswith("/"):
        raise RlError(f"workdir {cwd!r} must be an absolute path")
    return base._replace(
        args=tuple(options.args),
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=cwd,
        uid=uid,
        gid=gid,
        additional_gids=tuple(groups),
        capabilities=capabilities,
    )


def read_container_file(pid: int, path: str) -> str | None:
    """A text file of the running container `pid` (its /etc/passwd), resolved inside the
    container's root so that no symlink there can point rl at a host file. None if absent."""
    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = sc.openat2(root, path.lstrip("/"), os.O_RDONLY, resolve=sc.RESOLVE_IN_ROOT)
    except OSError:
        return None
    finally:
        os.close(root)
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        return f.read()


def run_in_container_userns(pid: int, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a forked child that joined the user namespace of the container process
    `pid` as its root (and nothing else: the host's files stay where they are); its return
    value or exception comes back pickled, as with userns.run_in_userns."""
    from rootless import outcome

    user_fd = open_user_namespace(pid)
    result_r, result_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        code = 0
        try:
            os.close(result_r)

            def as_root_there() -> Any:
                sc.setns(user_fd, sc.CLONE_NEWUSER)
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                return fn(*args)

            outcome.write_all(result_w, outcome.capture(as_root_there))
        except BaseException:
            code = 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(user_fd)
    os.close(result_w)
    try:
        data = outcome.read_all(result_r)
    finally:
        os.close(result_r)
        _, status = os.waitpid(child, 0)
    died = f"helper in the container's user namespace failed (wait status {status})"
    return outcome.unpack(data, died)


def open_user_namespace(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RlError(
            f"cannot open the user namespace of the container's process {pid}: {exc.strerror}: "
            "is the container still running?"
        ) from exc


def run_unshared(argv: Sequence[str], env: dict[str, str]) -> int:
    """`rl unshare`: exec `argv` as root of a new user namespace with the user's mapping and
    a mount namespace of its own; returns its exit code (127 when it cannot be found)."""
    from rootless.userns import apply_mapping, default_mapping

    mapping = default_mapping()
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        try:
            sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
            os.write(ready_w, b"1")
            if os.read(go_r, 1) != b"1":
                os._exit(EXIT_ERROR)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            process.reset_signals()
            os.execvpe(argv[0], list(argv), env)
        except FileNotFoundError:
            _report(
                error_w,
                "X",
                f'{EXIT_NOT_FOUND} exec: "{argv[0]}": executable file not found in $PATH',
            )
        except PermissionError:
            _report(error_w, "X", f'{EXIT_CANNOT_EXECUTE} exec: "{argv[0]}": permission denied')
        except BaseException as exc:
            _report(error_w, "S", _describe(exc))
        os._exit(EXIT_ERROR)
    for fd in (ready_w, go_r, error_w):
        os.close(fd)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        if os.read(ready_r, 1) != b"1":
            raise RlError("cannot create a user namespace: see `rl doctor`")
        try:
            apply_mapping(child, mapping)
        except OSError as exc:
            raise RlError(f"cannot write the id maps of the user namespace: {exc}") from exc
        os.write(go_w, b"1")
        message = os.read(error_r, 4096).decode(errors="replace").strip()
        code = _reap(child)
    except BaseException:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(child)
        raise
    finally:
        for fd in (ready_r, go_w, error_r):
            os.close(fd)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if message.startswith("X"):
        exit_text, _, text = message[1:].partition(" ")
        raise RlError(text, exit_code=int(exit_text))
    if message.startswith("S"):
        raise RlError(f"rl unshare: {message[1:]}")
    return code
