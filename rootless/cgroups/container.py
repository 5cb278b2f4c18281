"""One container's cgroup, for `rl run`, the monitor, exec, stats/update/pause and rm.

The caller (foreground `rl run`, or the monitor for a detached container):

    cg = setup(store, record)          # before starting: None when running without a cgroup
    launch = new_launch(..., cgroup_dir=cg.path if cg else None)
    ...                                # the container runs, then exits with `code`
    if cg is not None and cg.oom_killed():
        store.set_oom_killed(record.id)   # podman reports 137: SIGKILL
    ...
    remove(store, record)              # on rm (and --rm): kills leftovers, rmdir
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.cgroups import core, fs
from rootless.errors import RlError

if TYPE_CHECKING:
    from rootless.containers.store import Container, ContainerStore

PATH_FILE = "cgroup"  # in the container's userdata: the cgroup directory it was given


def limits_of(config: dict[str, Any] | None) -> core.Limits:
    return core.Limits.from_json((config or {}).get("resources"))


def cgroups_mode(config: dict[str, Any] | None) -> str:
    return str((config or {}).get("cgroups") or "enabled")


class ContainerCgroup:
    def __init__(self, path: str) -> None:
        self.path = path
        self.oom_before = fs.oom_kills(path)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer struck in this cgroup since setup()."""
        return fs.oom_kills(self.path) > self.oom_before


def setup(store: ContainerStore, record: Container) -> ContainerCgroup | None:
    """Make the container's cgroup with its limits, or None when it runs without one
    (--cgroups=disabled, or no delegated cgroup v2 and no limits asked for). RlError (125)
    when limits were asked for and cannot be enforced."""
    limits = limits_of(record.config)
    mode = cgroups_mode(record.config)
    if mode == "disabled":
        return None
    host = fs.probe()
    fs.require(host, limits)
    base = fs.own_base() if host.layout.mode == "v2" and host.own_writable else None
    if base is None:
        if limits.given():
            raise RlError(
                "cannot enforce resource limits: rl is not in a delegated cgroup; run it in a "
                "systemd user session (systemd-run --user --scope -p Delegate=yes rl ...)"
            )
        return None
    extra = ["cpuset"] if limits.cpuset_cpus or limits.cpuset_mems else []
    try:
        path = fs.create(base, f"rl-{record.id}", limits, extra)
    except RlError:
        if limits.given():
            raise
        return None  # best effort without limits
    try:
        (store.userdata(record.id) / PATH_FILE).write_text(path)
    except OSError:
        pass
    return ContainerCgroup(path)


def path_of(store: ContainerStore, record: Container) -> str | None:
    """The container's cgroup directory: its pid 1's, else the one recorded at setup."""
    if record.container_pid:
        current = fs.cgroup_of(record.container_pid)
        name = os.path.basename(current or "")
        if current and name.startswith("rl-") and name != fs.SUPERVISOR:
            return current
    try:
        path = (store.userdata(record.id) / PATH_FILE).read_text().strip()
    except OSError:
        return None
    return path if path and os.path.isdir(path) else None


def remove(store: ContainerStore, record: Container) -> None:
    """On container removal: kill leftovers, rmdir the cgroup (and its empty parents that rl
    made: nothing else). Errors are not fatal to rm."""
    path = path_of(store, record)
    if path is None:
        return
    try:
        fs.remove(path)
    except RlError:
        pass
    try:
        Path(store.userdata(record.id) / PATH_FILE).unlink()
    except OSError:
        pass


def require_cgroup(store: ContainerStore, record: Container, what: str) -> str:
    """The cgroup of a running container for stats/update/pause, or the one-line reason why
    there is none."""
    path = path_of(store, record)
    if path is not None:
        return path
    host = fs.probe()
    require_v2(what)
    reason = core.missing_reason(host, what, "memory")
    if reason is not None and "pause" not in what:
        raise RlError(reason)
    raise RlError(
        f"{what}: container {record.id[:12]} has no cgroup of its own (created with "
        "--cgroups=disabled, or rl was not in a delegated cgroup when it started)"
    )


def require_v2(what: str) -> None:
    """RlError naming why `what` (stats/update/pause) cannot work on this host, if so."""
    host = fs.probe()
    if host.layout.mode == "v2":
        return
    kind = {
        "hybrid": "hybrid cgroups (v1 controllers; cgroup v2 without controllers)",
        "v1": "cgroup v1",
    }.get(host.layout.mode, "no cgroup filesystem")
    raise RlError(
        f"{what} needs cgroup v2 with controllers delegated to your user, but this host has "
        f"{kind}: {core.V2_FIX}"
    )


def enter_scope_for(pid: int) -> None:
    """For `rl exec`: when the container's pid 1 has a cgroup of its own, first move rl into a
    delegated scope (re-exec under systemd-run) so the session may join that cgroup; cgroup v2
    lets a process migrate only within a subtree its user owns (a login session's scope is
    root's)."""
    import sys

    path = fs.cgroup_of(pid)
    name = os.path.basename(path or "")
    if path and name.startswith("rl-") and name != fs.SUPERVISOR:
        fs.reexec_in_scope([sys.executable, "-m", "rootless", *sys.argv[1:]])
