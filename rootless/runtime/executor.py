"""Run an OCI runtime-spec config.json as a rootless container, in the foreground.

Process tree and why:

    rl ── A (root of the new user namespace; waits for B) ── B (pid 1 of the new pid namespace)

- rl forks A; A unshares CLONE_NEWUSER and waits on a pipe while rl writes its id maps
  (newuidmap/newgidmap need a process outside the namespace); then A, now root of the
  namespace, unshares mount/pid/uts/ipc/cgroup/net, makes / private, mounts the rootfs and
  forks B, which is pid 1 of the new pid namespace. B sets up the filesystem, pivots, applies
  the process's identity and execs the command.
- A stays alive as B's waiter rather than exiting and leaving B to a subreaper rl: the kernel's
  parent-death signal is tied to the parent, so with A as parent the chain "rl dies -> A gets
  SIGKILL -> B gets SIGKILL -> the pid namespace dies with its pid 1" holds without any race
  (B re-parented to rl would have lost its parent-death signal when A exited). A costs one
  sleeping, copy-on-write process; it exits with B's code (128+N when signal N killed B), so rl
  just waits for A.
- Setup progress and failures come back over one close-on-exec pipe ("U" A made the user
  namespace, "P<pid>" B's host pid, "S<msg>" a setup step failed, "X<code> <msg>" exec
  failed); end of file means the command was exec'd.
- All mounts live in the container's mount namespace, so none remain on the host afterwards.

Start-up time matters (`rl run` is benchmarked against podman): no subprocesses but
newuidmap/newgidmap (run in parallel), no heavy imports (no trio: ~80 ms), NamedTuples rather
than dataclasses (~1 ms each to create at import), the seccomp program compiled in rl and
cached. Measured here: ~1.5 ms planning, ~3 ms id maps, ~8 ms from there to exec (two forks
of a Python process ~1.5 ms each, ~3 ms of mounts), ~2 ms to reap.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from rootless import syscalls as sc
from rootless.errors import EXIT_ERROR, RlError
from rootless.runtime import mounts, process, terminal
from rootless.runtime.init import exit_code, run_init
from rootless.runtime.namespaces import (
    NamespacePlan,
    apply_sysctls,
    join_namespaces,
    loopback_up,
    plan_namespaces,
)
from rootless.userns import IdMapping, IdRange, apply_mapping, default_mapping

if TYPE_CHECKING:
    from rootless.runtime.tee import OutputLog
    from rootless.storage import RootfsProvider

# Signals rl passes on to the container (podman's --sig-proxy); synchronous faults, job
# control, SIGCHLD, SIGPIPE, SIGURG and SIGWINCH (the terminal's business) stay rl's own.
PROXIED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTERM,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGPWR,
    signal.SIGXCPU,
)
_SECCOMP_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}


class LaunchPlan(NamedTuple):
    """The spec, checked and turned into the values the container-side steps take."""

    root: str
    readonly_root: bool
    namespaces: NamespacePlan
    rootfs_propagation: int
    hostname: str | None
    domainname: str | None
    mounts: tuple[Mapping[str, Any], ...]
    devices: tuple[Mapping[str, Any], ...]
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    sysctl: Mapping[str, str]
    process: process.ProcessPlan
    terminal: bool
    console_size: bytes | None
    cgroup_v1_binds: tuple[tuple[str, str], ...] | None = None
    oom_score_adj: int | None = None

    @property
    def own_dev(self) -> bool:
        return any(m.get("destination", "").rstrip("/") == "/dev" for m in self.mounts)


def plan_launch(spec: Mapping[str, Any], *, base_dir: Path | None = None) -> LaunchPlan:
    """Validate `spec` and translate it; RlError names the first thing wrong with it."""
    try:
        return _plan_launch(spec, base_dir)
    except (KeyError, TypeError, ValueError) as exc:
        raise RlError(f"invalid OCI runtime spec: {exc}") from exc


def _plan_launch(spec: Mapping[str, Any], base_dir: Path | None) -> LaunchPlan:
    proc = spec.get("process")
    if not proc:
        raise ValueError("no process section")
    root_path = spec["root"]["path"]
    if not os.path.isabs(root_path):
        root_path = os.path.join(base_dir or os.getcwd(), root_path)
    root_path = os.path.realpath(root_path)
    linux = spec.get("linux") or {}
    console = proc.get("consoleSize")
    spec_mounts = tuple(spec.get("mounts") or ())
    return LaunchPlan(
        root=root_path,
        readonly_root=bool(spec["root"].get("readonly")),
        namespaces=plan_namespaces(linux.get("namespaces") or ()),
        rootfs_propagation=_propagation(linux.get("rootfsPropagation") or "rprivate"),
        hostname=spec.get("hostname"),
        domainname=spec.get("domainname"),
        mounts=spec_mounts,
        devices=tuple(linux.get("devices") or ()),
        masked_paths=tuple(linux.get("maskedPaths") or ()),
        readonly_paths=tuple(linux.get("readonlyPaths") or ()),
        sysctl=dict(linux.get("sysctl") or {}),
        process=_plan_process(proc, linux),
        terminal=bool(proc.get("terminal")),
        console_size=(
            terminal.pack_window_size(int(console["height"]), int(console["width"]))
            if console
            else None
        ),
        oom_score_adj=int(proc["oomScoreAdj"]) if proc.get("oomScoreAdj") is not None else None,
        cgroup_v1_binds=_cgroup_v1_binds()
        if any(m.get("type") == "cgroup" for m in spec_mounts)
        else None,
    )


def _cgroup_v1_binds() -> tuple[tuple[str, str], ...] | None:
    """Read here, in rl: inside a new cgroup namespace /proc/self/cgroup no longer tells the
    host's paths."""
    try:
        with open("/proc/self/mountinfo") as mi, open("/proc/self/cgroup") as cg:
            binds = mounts.cgroup_v1_binds(mi.read(), cg.read())
    except OSError:
        return None
    return tuple(binds) if binds is not None else None


def _propagation(name: str) -> int:
    flags = mounts.parse_options([name]).propagation
    if not flags:
        raise ValueError(f"unknown rootfsPropagation {name!r}")
    return flags[0]


def _plan_process(proc: Mapping[str, Any], linux: Mapping[str, Any]) -> process.ProcessPlan:
    from rootless.runtime.ulimits import RLIMIT_NUMBERS

    user = proc.get("user") or {}
    rlimits = []
    for limit in proc.get("rlimits") or ():
        name = limit["type"]
        # The kernel's numbers, not Python's resource module, which lacks RLIMIT_LOCKS.
        res = RLIMIT_NUMBERS.get(name)
        if res is None:
            raise ValueError(f"unknown rlimit {name!r}")
        rlimits.append((res, int(limit["soft"]), int(limit["hard"]), name))
    caps = proc.get("capabilities") or {}
    last_cap = process.last_cap()
    seccomp = linux.get("seccomp")
    umask = user.get("umask")
    return process.ProcessPlan(
        args=tuple(proc.get("args") or ()),
        env=tuple(proc.get("env") or ()),
        cwd=proc.get("cwd") or "/",
        uid=int(user.get("uid", 0)),
        gid=int(user.get("gid", 0)),
        additional_gids=tuple(int(g) for g in user.get("additionalGids") or ()),
        umask=int(umask) if umask is not None else None,
        capabilities=process.Capabilities(
            bounding=cap_mask(caps.get("bounding") or (), last_cap),
            effective=cap_mask(caps.get("effective") or (), last_cap),
            permitted=cap_mask(caps.get("permitted") or (), last_cap),
            inheritable=cap_mask(caps.get("inheritable") or (), last_cap),
            ambient=cap_mask(caps.get("ambient") or (), last_cap),
        ),
        rlimits=tuple(rlimits),
        no_new_privileges=bool(proc.get("noNewPrivileges")),
        seccomp=_compile_seccomp(seccomp) if seccomp else None,
        cap_last=last_cap,
        seccomp_flags=sum(_SECCOMP_FLAGS.get(f, 0) for f in (seccomp or {}).get("flags") or ()),
    )


def cap_mask(names: Sequence[str], last: int) -> int:
    """Capability names -> bit mask. Capabilities this kernel does not know are left out, as
    crun does (a newer spec on an older kernel)."""
    from rootless.runtime.caps import cap_number

    mask = 0
    for name in names:
        number = cap_number(name)
        if number <= last:
            mask |= 1 << number
    return mask


def _compile_seccomp(section: Mapping[str, Any]) -> bytes:
    """The BPF program for linux.seccomp, cached: compiling podman's default profile (and
    importing the compiler) costs several ms of every `rl run`, and the profile rarely changes.
    A cache entry holds the exact JSON it was compiled from and counts only on an exact match,
    in a directory only we can write."""
    import json
    import zlib

    text = json.dumps(section, sort_keys=True, separators=(",", ":")).encode()
    cache = _seccomp_cache_dir()
    entry = cache / f"{zlib.crc32(text):08x}-{len(text)}.bpf" if cache else None
    if entry is not None:
        try:
            stored, _, program = entry.read_bytes().partition(b"\0")
            if stored == text and program:
                return program
        except OSError:
            pass
    from rootless.runtime.seccomp import compile_filter

    program = compile_filter(dict(section))
    if entry is not None:
        try:
            tmp = entry.with_name(f".{entry.name}.{os.getpid()}")
            tmp.write_bytes(text + b"\0" + program)
            tmp.replace(entry)
        except OSError:
            pass  # a cache, nothing more
    return program


def _seccomp_cache_dir() -> Path | None:
    from rootless.paths import runtime_dir

    path = runtime_dir() / "seccomp"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None  # someone else could plant a filter: compile every time
    return path


def mapping_from_spec(spec: Mapping[str, Any]) -> IdMapping | None:
    """linux.uidMappings/gidMappings, which are authoritative when the spec has them."""
    linux = spec.get("linux") or {}
    uids, gids = linux.get("uidMappings"), linux.get("gidMappings")
    if not uids or not gids:
        return None

    def ranges(entries: Sequence[Mapping[str, int]]) -> tuple[IdRange, ...]:
        return tuple(
            IdRange(int(e["containerID"]), int(e["hostID"]), int(e["size"])) for e in entries
        )

    return IdMapping(ranges(uids), ranges(gids))


def run_container(
    spec: Mapping[str, Any],
    *,
    mapping: IdMapping,
    rootfs: RootfsProvider | None,
    tty: bool,
    interactive: bool,
    sig_proxy: bool = True,
    init: bool = False,
    on_started: Callable[[int], None] | None = None,
    on_netns: Callable[[int], None] | None = None,
    base_dir: Path | None = None,
    cgroup_dir: str | None = None,
    log: OutputLog | None = None,
) -> int:
    """Run the container in the foreground; return the exit code podman would give. With
    `log`, its output also goes there (see Launch)."""
    launch = new_launch(
        spec, mapping=mapping, rootfs=rootfs, tty=tty, interactive=interactive, init=init,
        on_netns=on_netns, base_dir=base_dir, cgroup_dir=cgroup_dir, log=log,
    )  # fmt: skip
    return launch.run(sig_proxy=sig_proxy, on_started=on_started)


def new_launch(
    spec: Mapping[str, Any],
    *,
    mapping: IdMapping,
    rootfs: RootfsProvider | None,
    tty: bool,
    interactive: bool,
    init: bool = False,
    stdio: tuple[int, int, int] | None = None,
    on_netns: Callable[[int], None] | None = None,
    base_dir: Path | None = None,
    cgroup_dir: str | None = None,
    log: OutputLog | None = None,
) -> Launch:
    """A checked, not yet started container launch: the monitor calls start()/wait()/close()
    itself, with `stdio` its pipes (the container's output goes to the log)."""
    plan = plan_launch(spec, base_dir=base_dir)
    if not os.path.isdir(plan.root):
        raise RlError(f"rootfs {plan.root} is not a directory: check root.path in the spec")
    return Launch(
        plan,
        mapping=mapping_from_spec(spec) or mapping,
        rootfs=rootfs,
        tty=tty,
        interactive=interactive,
        init=init,
        stdio=stdio,
        on_netns=on_netns,
        cgroup_dir=cgroup_dir,
        log=log,
    )


def _leave_cgroup(keeper: int) -> None:
    """Move the keeper from the container's cgroup back to rl's own (it only passed through
    so that B starts inside): its pids and memory are not the container's."""
    try:
        with open("/proc/self/cgroup") as own:
            path = next((line[3:].strip() for line in own if line.startswith("0::")), None)
        if path:
            with open(f"/sys/fs/cgroup{path}/cgroup.procs", "w") as procs:
                procs.write(str(keeper))
    except OSError:
        pass  # it stays counted in the container's cgroup: harmless


def run_bundle(bundle_dir: str | Path, *, interactive: bool = True, init: bool = False) -> int:
    """crun/runc's `run --bundle DIR`: config.json there, root.path relative to it. stdin is
    passed through like those runtimes do."""
    import json

    bundle = Path(bundle_dir).resolve()
    try:
        spec = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise RlError(f"cannot read {bundle / 'config.json'}: {exc}") from exc
    tty = bool((spec.get("process") or {}).get("terminal"))
    return run_container(
        spec,
        mapping=default_mapping(),
        rootfs=None,
        tty=tty,
        interactive=interactive,
        init=init,
        base_dir=bundle,
    )


class Launch:
    """One container start: rl's side of the protocol, and the code A and B run after fork."""

    def __init__(
        self,
        plan: LaunchPlan,
        *,
        mapping: IdMapping,
        rootfs: RootfsProvider | None,
        tty: bool,
        interactive: bool,
        init: bool,
        stdio: tuple[int, int, int] | None = None,
        on_netns: Callable[[int], None] | None = None,
        cgroup_dir: str | None = None,
        log: OutputLog | None = None,
    ) -> None:
        self.plan = plan
        # The container's cgroup (rootless.cgroups): A joins it before it makes the cgroup
        # namespace, so B and its children start there; rl moves A back out once B runs.
        self.cgroup_dir = cgroup_dir
        # Called with the keeper's pid once its network namespace exists (before the
        # container starts): user-mode networking attaches there.
        self.on_netns = on_netns
        self.mapping = mapping
        self.rootfs = rootfs
        self.tty = tty
        self.interactive = interactive
        self.init = init
        self.winsize = plan.console_size or (terminal.window_size() if tty else None)
        self.stdio = stdio  # fds for the container's 0, 1, 2 (the monitor's pipes); None: ours
        # A foreground run's log: the pty's output (-t), else the container's stdout and
        # stderr become pipes to rl (`outputs`, their read ends), which copies them to its
        # own and into the log (rootless.runtime.tee).
        self.log = log
        self.captures = log is not None and not tty and stdio is None
        self.outputs: list[int] = []
        self.keeper_pid = 0  # A
        self.container_pid = 0  # B, in rl's pid namespace
        self.container_pidfd = -1  # B again, immune to pid reuse once B is gone
        self.console: int | None = None  # the terminal's master, with a tty
        self.pending_signals: list[int] = []

    # ---- rl's side ------------------------------------------------------------------------

    def run(self, *, sig_proxy: bool, on_started: Callable[[int], None] | None) -> int:
        """Foreground: start, relay the terminal, wait; the exit code podman would give."""
        old_handlers = self._proxy_signals() if sig_proxy else {}
        try:
            failed = self.start()
            if failed is not None:  # exec failed: podman's message, podman's code
                print(f"Error: {failed[1]}", file=sys.stderr, flush=True)
                return failed[0]
            if on_started is not None:
                on_started(self.container_pid)
            if self.console is not None:
                self._relay(self.keeper_pid, self.console)
            elif self.outputs:
                self._copy_outputs(self.keeper_pid)
            return self.wait()
        finally:
            self.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)

    def start(self) -> tuple[int, str] | None:
        """Fork the keeper and drive the setup until the command runs (None), or until exec
        failed: (podman's exit code, message), the keeper reaped. Raises RlError when a
        setup step fails. Afterwards: keeper_pid, container_pid(fd), and the terminal's
        master in `console` with a tty."""
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        sock_rl, sock_ct = terminal.socketpair() if self.tty or self.captures else (None, None)
        rl_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, PROXIED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            os.close(status_r)
            os.close(go_w)
            if sock_rl is not None:
                sock_rl.close()
            self._run_a(rl_pid, status_w, go_r, sock_ct)
        self.keeper_pid = pid
        os.close(status_w)
        os.close(go_r)
        if sock_ct is not None:
            sock_ct.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        running = False
        try:
            failed = self._follow_setup(pid, status_r, go_w)
            if failed is not None:
                self.wait()
                return failed
            if sock_rl is not None and self.tty:
                self.console = terminal.recv_fd(sock_rl)
            elif sock_rl is not None:  # stdout's read end, then stderr's (_send_output_pipes)
                received = (terminal.recv_fd(sock_rl), terminal.recv_fd(sock_rl))
                self.outputs = [fd for fd in received if fd is not None]
            if self.stdio is not None:  # B is our child (see _run_a); A ends once B exists
                os.waitpid(pid, 0)
                self.keeper_pid = self.container_pid
            running = True
            return None
        finally:
            for fd in (status_r, go_w):
                os.close(fd)
            if sock_rl is not None:
                sock_rl.close()
            if not running and self.keeper_pid:
                _kill_and_reap(pid)
                self.keeper_pid = 0
            if not running and self.stdio is not None and self.container_pid:
                _kill_and_reap(self.container_pid)

    def wait(self) -> int:
        """Reap the keeper; the container's exit code (128+N after signal N)."""
        _, status = os.waitpid(self.keeper_pid, 0)
        self.keeper_pid = 0
        return exit_code(status)

    def close(self) -> None:
        """Kill a keeper still running (an error or signal cut the run short), close what
        start() opened, and release the rootfs (e.g. reap the fuse driver's helper)."""
        if self.keeper_pid:
            _kill_and_reap(self.keeper_pid)
            self.keeper_pid = 0
        for fd in (self.container_pidfd, self.console if self.console is not None else -1):
            if fd >= 0:
                os.close(fd)
        for fd in self.outputs:
            os.close(fd)
        self.outputs = []
        self.container_pidfd = -1
        self.console = None
        if self.rootfs is not None:
            self.rootfs.release()
            self.rootfs = None

    def _proxy_signals(self) -> dict[int, Any]:
        def forward(sig: int, _frame: object) -> None:
            if not self.container_pid:
                self.pending_signals.append(sig)
            else:
                self._signal_container(sig)

        return {sig: signal.signal(sig, forward) for sig in PROXIED_SIGNALS}

    def _follow_setup(self, pid: int, status_r: int, go_w: int) -> tuple[int, str] | None:
        """Drive the start until exec. Returns None when the command runs, or the exit code
        and message of an exec failure; raises RlError otherwise."""
        for message in _messages(status_r):
            kind, body = message[:1], message[1:]
            if kind == "U":
                try:
                    apply_mapping(pid, self.mapping)
                except OSError as exc:
                    raise RlError(f"cannot write the id maps of the user namespace: {exc}") from exc
                os.write(go_w, b"1")
            elif kind == "N" and self.on_netns is not None:
                try:
                    self.on_netns(pid)
                except OSError as exc:
                    raise RlError(
                        f"cannot set up the container's network: {exc}: see `rl doctor`, or run "
                        "with --network none"
                    ) from exc
                os.write(go_w, b"2")
            elif kind == "P":
                self.container_pid = int(body)
                if self.cgroup_dir is not None and self.stdio is None:
                    _leave_cgroup(pid)
                try:
                    self.container_pidfd = sc.pidfd_open(self.container_pid)
                except OSError:
                    pass  # already gone: A will tell
                for sig in self.pending_signals:
                    self._signal_container(sig)
                self.pending_signals.clear()
            elif kind == "S":
                self.wait()
                raise RlError(f"container setup failed: {body}")
            elif kind == "X":
                code, _, text = body.partition(" ")
                return int(code), text
        if not self.container_pid:
            status = self.wait()
            raise RlError(
                "cannot create the container's user namespace (exit status "
                f"{status}): unprivileged user namespaces may be disabled (see `rl doctor`)"
            )
        return None

    def _signal_container(self, sig: int) -> None:
        try:
            if self.container_pidfd >= 0:
                sc.pidfd_send_signal(self.container_pidfd, sig)
            else:
                os.kill(self.container_pid, sig)
        except OSError:
            pass  # it has just ended

    def _relay(self, pid: int, master: int) -> None:
        exit_fd = sc.pidfd_open(pid)
        stdin_fd = 0 if self.interactive else None

        def resize(_sig: int, _frame: object) -> None:
            terminal.copy_window_size(master)

        log = self.log
        # podman logs a terminal's output as stdout (it has no stderr of its own).
        tee = None if log is None else (lambda data: log.write("stdout", data))

        old_winch = signal.signal(signal.SIGWINCH, resize)
        try:
            if stdin_fd is not None and os.isatty(stdin_fd):
                with terminal.raw_mode(stdin_fd):
                    terminal.relay(master, exit_fd, stdin_fd, log=tee)
            else:
                terminal.relay(master, exit_fd, stdin_fd, log=tee)
        finally:
            signal.signal(signal.SIGWINCH, old_winch)
            os.close(exit_fd)

    def _copy_outputs(self, pid: int) -> None:
        from rootless.runtime.tee import copy_outputs

        exit_fd = sc.pidfd_open(pid)
        outputs, self.outputs = self.outputs, []  # copy_outputs closes them
        try:
            streams = ((1, "stdout"), (2, "stderr"))
            copy_outputs([(src, *streams[i]) for i, src in enumerate(outputs)], exit_fd, self.log)
        finally:
            os.close(exit_fd)

    # ---- A: root of the user namespace, B's parent --------------------------------------

    def _run_a(self, rl_pid: int, status_w: int, go_r: int, sock: Any) -> NoReturn:
        try:
            process.reset_signals()
            if self.stdio is not None:
                for target, fd in enumerate(self.stdio):
                    os.dup2(fd, target)  # dup2 makes the copy inheritable
                # The monitor's other fds (its end of the stdin pipe above all: a copy here
                # would keep the container from ever seeing EOF) are not ours to hold.
                keep = {status_w, go_r} | ({sock.fileno()} if sock is not None else set())
                # ... except what the rootfs provider mounts with (the fuse helper's socket)
                keep |= set(getattr(self.rootfs, "keeper_fds", tuple)())
                _close_fds_except(keep)
            sc.set_process_name("rl-ns-keeper")  # tells it apart from rl in `ps`
            os.setpgid(0, 0)  # out of the terminal's foreground group: ^C is rl's to proxy
            _die_with_parent(rl_pid)
            if self.cgroup_dir is not None:
                with open(os.path.join(self.cgroup_dir, "cgroup.procs"), "w") as procs:
                    procs.write("0")
            ns = self.plan.namespaces
            if ns.user_path:
                join_namespaces([(sc.CLONE_NEWUSER, ns.user_path)])
            else:
                sc.unshare(sc.CLONE_NEWUSER)
                os.write(status_w, b"U\n")
                if os.read(go_r, 1) != b"1":
                    os._exit(EXIT_ERROR)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            _die_with_parent(rl_pid)  # a credential change clears the parent-death signal
            # A change of host uid (--userns=keep-id maps 0 elsewhere) also makes us
            # undumpable, and then rl could not open /proc/<us>/ns/* to attach the network;
            # rl owns our user namespace anyway.
            sc.prctl(sc.PR_SET_DUMPABLE, 1)
            sc.unshare(ns.unshare)
            join_namespaces(ns.join)
            # Nothing the container mounts may reach the host (rprivate unless the spec says).
            sc.mount(None, "/", None, self.plan.rootfs_propagation)
            if ns.owns(sc.CLONE_NEWNET):
                loopback_up()
                if self.on_netns is not None:
                    # The launcher sets up user-mode networking in our new network namespace
                    # now, so the container's first packet already has a route.
                    os.write(status_w, b"N\n")
                    if os.read(go_r, 1) != b"2":
                        os._exit(EXIT_ERROR)
            os.close(go_r)
            if self.rootfs is not None:
                self.rootfs.mount(Path(self.plan.root))
            if self.captures:
                _send_output_pipes(sock)
                sock.close()
                sock = None
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            # Under a monitor B becomes the monitor's own child (CLONE_PARENT) and A ends: no
            # keeper process per detached container (a waiting interpreter cost ~3 MB PSS).
            # B's parent-death signal then follows the monitor itself; B checks the
            # monitor's pidfd once it is armed, in case the monitor died before.
            adopt = self.stdio is not None
            monitor_fd = sc.pidfd_open(rl_pid) if adopt else -1
            child = sc.clone_parent() if adopt else os.fork()
            if child == 0:
                self._run_b(status_w, sock, monitor_fd)
            os.write(status_w, b"P%d\n" % child)
            os.close(status_w)
            if sock is not None:
                sock.close()
            if adopt:
                os._exit(0)
            while True:
                pid, status = os.waitpid(child, 0)
                if pid == child:
                    os._exit(exit_code(status))
        except BaseException as exc:
            _report(status_w, "S", _describe(exc))
            os._exit(EXIT_ERROR)

    # ---- B: the container's pid 1 -----------------------------------------------------------

    def _run_b(self, status_w: int, sock: Any, monitor_fd: int = -1) -> NoReturn:
        plan = self.plan
        try:
            # B cannot check getppid() for a dead A (pid 1 of a pid namespace sees 0); A only
            # dies by SIGKILL, and then the pid namespace goes anyway once rl reaps it. Under
            # a monitor (B its child) the monitor's pidfd tells instead.
            _die_with_parent(None, monitor_fd)
            os.setsid()
            self._setup_filesystem()
            null = -1
            if not self.tty and not self.interactive and self.stdio is None:
                null = os.open("/dev/null", os.O_RDONLY)  # the host's: /dev may be absent
            mounts.pivot_into(plan.root)
            if plan.readonly_root:
                mounts.remount_root_readonly()
            if plan.hostname and plan.namespaces.owns(sc.CLONE_NEWUTS):
                sc.sethostname(plan.hostname)
            if plan.domainname and plan.namespaces.owns(sc.CLONE_NEWUTS):
                sc.setdomainname(plan.domainname)
            if sock is not None:
                terminal.attach_console(sock, self.winsize)
            elif null >= 0:
                os.dup2(null, 0)
                os.close(null)
            _chdir(plan.process.cwd, plan.process.uid, plan.process.gid)
            # Default dispositions and no blocked signals from here on (Python ignores SIGPIPE,
            # and ignored signals survive execve). As pid 1, B still ignores stray signals.
            process.reset_signals()
            process.apply_process(plan.process)
            if self.init:
                self._fork_command_under_init(status_w)
            process.exec_process(plan.process.args, plan.process.env, plan.process.uid)
        except process.ExecFailure as exc:
            _report(status_w, "X", f"{exc.code} {exc}")
            os._exit(exc.code)
        except BaseException as exc:
            _report(status_w, "S", _describe(exc))
            os._exit(EXIT_ERROR)

    def _setup_filesystem(self) -> None:
        plan, ns = self.plan, self.plan.namespaces
        root = plan.root
        ctx = mounts.MountContext(
            own_netns=ns.owns(sc.CLONE_NEWNET),
            own_pidns=ns.owns(sc.CLONE_NEWPID),
            own_cgroupns=ns.owns(sc.CLONE_NEWCGROUP),
            cgroup_v1_binds=plan.cgroup_v1_binds,
        )
        if plan.oom_score_adj is not None:
            _set_oom_score_adj(plan.oom_score_adj)
        mounts.make_root_mount(root)
        mounts.mount_all(root, plan.mounts, ctx)
        if plan.own_dev:
            mounts.populate_dev(root, plan.devices)
        if plan.sysctl:
            apply_sysctls(mounts.resolve_in_root(root, "/proc/sys"), plan.sysctl)
        mounts.mask_paths(root, plan.masked_paths)
        mounts.readonly_paths(root, plan.readonly_paths)

    def _fork_command_under_init(self, status_w: int) -> None:
        """--init: the command runs as B's child; B stays pid 1 (see rootless.runtime.init).
        Returns in the child, which goes on to exec."""
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        child = os.fork()
        if child == 0:
            os.setpgid(0, 0)
            if self.tty:  # the terminal's ^C goes to the command's group, as with catatonit
                signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                os.tcsetpgrp(0, os.getpid())
                signal.signal(signal.SIGTTOU, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            return
        os.close(status_w)
        run_init(child)


def _send_output_pipes(sock: Any) -> None:
    """A, for a foreground run that logs: the container's stdout and stderr (our 1 and 2, which
    B inherits) become pipes, their read ends sent to rl. Made here, only after rl forked the
    network helper (the "N" step), so that the helper holds no copy of a read end: one would
    keep the container from ever seeing EPIPE once rl's reader went (`yes | head -1`)."""
    for target in (1, 2):
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.dup2(write_end, target)  # inheritable, unlike the original
        os.close(write_end)
        terminal.send_fd(sock, read_end)
        os.close(read_end)


def _messages(fd: int) -> Iterator[str]:
    """Lines from the status pipe until end of file."""
    buffer = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode(errors="replace")


def _report(fd: int, kind: str, text: str) -> None:
    try:
        os.write(fd, (kind + text.replace("\n", " ") + "\n").encode(errors="replace"))
    except OSError:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.args and len(exc.args) >= 2:
        return str(exc.strerror) if not exc.filename else f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _die_with_parent(parent: int | None, parent_pidfd: int = -1) -> None:
    """SIGKILL when the parent dies; if it already did (the race before prctl), die now.
    `parent_pidfd` (readable once that process ended) serves where getppid() cannot."""
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(EXIT_ERROR)
    if parent_pidfd >= 0:
        import select

        if select.select([parent_pidfd], [], [], 0)[0]:
            os._exit(EXIT_ERROR)


def _set_oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"set oom_score_adj to {value}: {exc.strerror} (a rootless container can only raise "
            "it above rl's own)",
        ) from exc


def _chdir(cwd: str, uid: int, gid: int) -> None:
    """Enter the working directory, creating it (owned by the process's user) when the image
    names one it does not contain, as runc and podman do. An explicit missing `-w` is refused
    earlier, at create time, with podman's message."""
    try:
        os.chdir(cwd)
        return
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OSError(exc.errno, f"chdir to `{cwd}`: {exc.strerror}") from exc
    try:
        os.makedirs(cwd, mode=0o755)
        os.chown(cwd, uid, gid)
        os.chdir(cwd)
    except OSError as exc:
        raise OSError(exc.errno, f"create working directory `{cwd}`: {exc.strerror}") from exc


def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own fd, already closed


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rootless.runtime.executor BUNDLE [--init] [--no-stdin]`: a bundle runner for
    tests and comparisons with crun."""
    args = list(sys.argv[1:] if argv is None else argv)
    init = "--init" in args
    interactive = "--no-stdin" not in args
    bundles = [a for a in args if not a.startswith("--")]
    if len(bundles) != 1:
        print(
            "usage: python -m rootless.runtime.executor BUNDLE [--init] [--no-stdin]",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        return run_bundle(bundles[0], interactive=interactive, init=init)
    except RlError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
