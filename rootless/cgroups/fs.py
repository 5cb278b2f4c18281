"""The thin I/O around rootless.cgroups.core: probe the host, make and fill a container's
cgroup, move processes, read counters, freeze, remove.

Layout on a delegated cgroup v2 host, S being rl's own (delegated) cgroup, normally a transient
systemd scope `rl-*.scope` that rl moved into (see `reexec_in_scope`):

    S/                   controllers enabled in S/cgroup.subtree_control, no processes
    S/rl-supervisor/     rl itself, or the per-container monitor (outside the limits)
    S/rl-<id>/           the container: its pid 1, its children and its exec sessions

cgroup v2 allows controllers in a child only when the parent has no processes of its own
("no internal processes"), so the processes found in S move to S/rl-supervisor first.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rootless.cgroups import core
from rootless.errors import RlError

ROOT = core.V2_ROOT
SUPERVISOR = "rl-supervisor"
SCOPE_ENV = "_RL_CGROUP_SCOPE"
USABLE = ("cpu", "cpuset", "io", "memory", "pids")


def _read(path: str | Path) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def probe(root: str = ROOT, proc_self: str = "/proc/self") -> core.HostCgroups:
    """What this host and this process offer (a few small reads; no subprocesses)."""
    layout = core.parse_layout(_read(f"{proc_self}/mountinfo") or "")
    systemd_user = _systemd_user()
    if layout.mode != "v2":
        return core.HostCgroups(layout, systemd_user=systemd_user)
    own = core.parse_proc_cgroup(_read(f"{proc_self}/cgroup") or "").v2_path
    own_dir = root + (own or "/")
    writable = (
        own is not None
        and own != "/"
        and os.access(f"{own_dir}/cgroup.subtree_control", os.W_OK)
        and os.access(f"{own_dir}/cgroup.procs", os.W_OK)
    )
    own_controllers = core.parse_controllers(_read(f"{own_dir}/cgroup.controllers") or "")
    if own and os.path.basename(own) == SUPERVISOR:
        # rl was moved below its scope earlier: the scope is what it works in.
        parent = root + os.path.dirname(own)
        writable = os.access(f"{parent}/cgroup.subtree_control", os.W_OK)
        own_controllers = core.parse_controllers(_read(f"{parent}/cgroup.controllers") or "")
    user_dir = root + core.user_manager_path(os.getuid())
    user_controllers = core.parse_controllers(_read(f"{user_dir}/cgroup.controllers") or "")
    return core.HostCgroups(
        layout,
        own_path=own,
        own_writable=writable,
        own_controllers=own_controllers,
        user_controllers=user_controllers,
        systemd_user=systemd_user,
    )


def _systemd_user() -> bool:
    """A systemd user manager we can reach (its private socket), and systemd-run."""
    import shutil

    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return (
        os.path.exists(f"{runtime}/systemd/private")
        and os.path.exists(f"{runtime}/bus")  # systemd-run --user talks D-Bus
        and shutil.which("systemd-run") is not None
    )


def require(host: core.HostCgroups, limits: core.Limits) -> None:
    """RlError (125) naming the first controller `limits` need that is not available."""
    for key in limits.given():
        reason = core.missing_reason(host, core.FLAG_NAMES[key], core.FLAG_CONTROLLERS[key])
        if reason is not None:
            raise RlError(reason)


def reexec_in_scope(argv: Sequence[str]) -> None:
    """Like podman: when rl's cgroup is not delegated but a systemd user manager runs, exec
    rl again inside a new transient scope with Delegate=yes (systemd-run --user --scope keeps
    the process, its terminal and stdio). Returns only when that is not needed or possible."""
    if os.environ.get(SCOPE_ENV):
        return
    host = probe()
    if not host.needs_scope:
        return
    import secrets

    import rootless

    env = dict(os.environ, **{SCOPE_ENV: "1"})
    env.setdefault("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    # `python -m rootless` must find this very rl (also when run from a checkout).
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(rootless.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p
    )
    unit = f"rl-{os.getpid()}-{secrets.token_hex(3)}.scope"
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(
            "systemd-run",
            ["systemd-run", "--user", "--scope", "--quiet", "--collect",
             "--property=Delegate=yes", f"--unit={unit}", *argv],
            env,
        )  # fmt: skip
    except OSError:
        return


def scoped_command(argv: Sequence[str], name: str = "rl") -> list[str]:
    """`argv` wrapped in `systemd-run --user --scope` (Delegate=yes) when rl's cgroup is not
    delegated and a systemd user manager runs; else `argv` unchanged. For starting a monitor
    as a process of its own (reexec_in_scope is the in-process equivalent)."""
    host = probe()
    if not host.needs_scope or os.environ.get(SCOPE_ENV):
        return list(argv)
    import secrets

    unit = f"{name}-{os.getpid()}-{secrets.token_hex(3)}.scope"
    return [
        "systemd-run", "--user", "--scope", "--quiet", "--collect",
        "--property=Delegate=yes", f"--unit={unit}", *argv,
    ]  # fmt: skip


def own_base(root: str = ROOT) -> str | None:
    """The directory rl makes container cgroups in: its own delegated cgroup (the parent of
    rl-supervisor when rl already moved there)."""
    own = core.parse_proc_cgroup(_read("/proc/self/cgroup") or "").v2_path
    if own is None or own == "/":
        return None
    if os.path.basename(own) == SUPERVISOR:
        own = os.path.dirname(own)
    return root + own


def enable_controllers(base: str, wanted: Sequence[str]) -> None:
    """Enable `wanted` in base/cgroup.subtree_control, first moving the processes in `base`
    into base/rl-supervisor (cgroup v2's no-internal-processes rule)."""
    available = core.parse_controllers(_read(f"{base}/cgroup.controllers") or "")
    enabled = core.parse_controllers(_read(f"{base}/cgroup.subtree_control") or "")
    todo = [c for c in wanted if c in available and c not in enabled]
    if not todo:
        return
    supervisor = f"{base}/{SUPERVISOR}"
    os.makedirs(supervisor, exist_ok=True)
    for _ in range(10):  # processes may fork while we move them
        pids = (_read(f"{base}/cgroup.procs") or "").split()
        if not pids:
            break
        for pid in pids:
            try:
                _write(f"{supervisor}/cgroup.procs", pid)
            except RlError:
                pass  # gone meanwhile
    _write(f"{base}/cgroup.subtree_control", core.needed_controllers(todo))


def _write(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise RlError(f"cannot write {text!r} to {path}: {exc.strerror}") from exc


def create(base: str, name: str, limits: core.Limits, extra: Sequence[str] = ()) -> str:
    """Make base/name with the controllers the limits need (and the usable ones, for stats),
    write the limits; the directory."""
    available = core.parse_controllers(_read(f"{base}/cgroup.controllers") or "")
    wanted = [c for c in USABLE if c in available and (c != "cpuset" or "cpuset" in extra)]
    wanted += [c for c in limits.controllers() if c not in wanted]
    enable_controllers(base, wanted)
    path = f"{base}/{name}"
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RlError(f"cannot create the cgroup {path}: {exc.strerror}") from exc
    write_limits(path, limits)
    return path


def device_numbers(limits: core.Limits) -> dict[str, tuple[int, int]]:
    import stat

    numbers: dict[str, tuple[int, int]] = {}
    for entry in (*limits.device_read_bps, *limits.device_write_bps):
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            raise RlError(f"cannot find the device {entry.path}: {exc.strerror}") from exc
        if not stat.S_ISBLK(st.st_mode):
            raise RlError(f"{entry.path} is not a block device")
        numbers[entry.path] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return numbers


def write_limits(path: str, limits: core.Limits) -> None:
    files = core.cgroup_files(limits, device_numbers(limits))
    # cpuset.mems before cpus is irrelevant in v2; memory.max before swap matters not either.
    for name, text in files.items():
        for line in text.split("\n") if name == "io.max" else [text]:
            _write(f"{path}/{name}", line)


def join(path: str, pid: int = 0) -> None:
    """Move `pid` (0: the calling process) into the cgroup at `path`."""
    _write(f"{path}/cgroup.procs", str(pid))


def cgroup_of(pid: int, root: str = ROOT) -> str | None:
    """The cgroup v2 directory of `pid` as this process sees it."""
    own = core.parse_proc_cgroup(_read(f"/proc/{pid}/cgroup") or "").v2_path
    return None if own is None else root + own


def oom_kills(path: str) -> int:
    return core.parse_keyed(_read(f"{path}/memory.events") or "").get("oom_kill", 0)


def populated(path: str) -> bool:
    return core.parse_keyed(_read(f"{path}/cgroup.events") or "").get("populated", 0) == 1


def remove(path: str, timeout: float = 5.0) -> None:
    """Kill what is left in the cgroup and remove it (no error when it is gone already)."""
    if not os.path.isdir(path):
        return
    for child in sorted(Path(path).iterdir(), reverse=True):
        if child.is_dir():
            remove(str(child), timeout)
    if populated(path):
        try:
            _write(f"{path}/cgroup.kill", "1")
        except RlError:
            for pid in (_read(f"{path}/cgroup.procs") or "").split():
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise RlError(f"cannot remove the cgroup {path}: {exc.strerror}") from exc
            time.sleep(0.02)


def freeze(path: str, frozen: bool, timeout: float = 10.0) -> None:
    """cgroup.freeze, waiting until cgroup.events says the cgroup is (un)frozen."""
    _write(f"{path}/cgroup.freeze", "1" if frozen else "0")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = core.parse_keyed(_read(f"{path}/cgroup.events") or "").get("frozen")
        if state == (1 if frozen else 0) or state is None:
            return
        time.sleep(0.01)
    raise RlError(f"the cgroup {path} did not {'freeze' if frozen else 'thaw'} in time")


def is_frozen(path: str) -> bool:
    return core.parse_keyed(_read(f"{path}/cgroup.events") or "").get("frozen", 0) == 1


def read_files(path: str, names: Sequence[str]) -> Mapping[str, str | None]:
    return {name: _read(f"{path}/{name}") for name in names}
