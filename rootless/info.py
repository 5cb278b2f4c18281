"""`rl info`: the host, the store and rl itself, in the shape of `podman info`.

Keys follow podman's JSON (`host.kernel`, `store.graphRoot`, `host.idMappings.uidmap`), so
scripts written against `podman info --format json` or `--format '{{.Host.Kernel}}'` keep
working. Kept quick: only the standard library; the storage driver is rootless.storage's own
answer (a probe in a user namespace the first time, cached afterwards).
"""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path
from typing import Any

from rootless import __version__, hostfacts, paths, userns

GO_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
DEFAULT_NETWORK = "slirp4netns"  # rl's own user-mode stack (netns/), under podman's name
NETWORK_MODES = ["slirp4netns", "none", "host"]


def gather() -> dict[str, Any]:
    return {
        "host": host_info(),
        "store": store_info(),
        "plugins": {"defaultNetwork": DEFAULT_NETWORK, "network": NETWORK_MODES},
        "version": version_info(),
    }


def _cgroup_probe() -> Any:
    from rootless.cgroups.fs import probe

    return probe()


def host_info() -> dict[str, Any]:
    uid = os.getuid()
    release = hostfacts.os_release()
    memory = hostfacts.collect_memory()
    cgroups = hostfacts.collect_cgroups(uid)
    mapping = userns.default_mapping()
    systemd = os.path.isdir("/run/systemd/system")
    return {
        "arch": go_arch(platform.machine()),
        # What rl can use for container cgroups (rootless.cgroups): rl's own delegated cgroup's
        # controllers, or those a systemd user scope would get.
        "cgroupControllers": sorted(_cgroup_probe().delegated),
        # Like podman: a hybrid layout counts as v1, since the v2 part holds no controllers.
        "cgroupManager": "systemd"
        if cgroups.version == "v2" and systemd and _cgroup_probe().systemd_user
        else "cgroupfs",
        "cgroupVersion": "v2" if cgroups.version == "v2" else "v1",
        "cpus": len(os.sched_getaffinity(0)),
        "distribution": {
            "codename": release.get("VERSION_CODENAME", ""),
            "distribution": release.get("ID", ""),
            "version": release.get("VERSION_ID", ""),
        },
        "hostname": os.uname().nodename,
        "idMappings": {
            "gidmap": id_map_list(mapping.gids),
            "uidmap": id_map_list(mapping.uids),
        },
        "kernel": platform.release(),
        "memFree": memory.get("MemAvailable", memory.get("MemFree", 0)),
        "memTotal": memory.get("MemTotal", 0),
        "os": "linux",
        "security": {
            "apparmorEnabled": _read_flag("/sys/module/apparmor/parameters/enabled"),
            "rootless": uid != 0,
            "seccompEnabled": "Seccomp:" in _read("/proc/self/status"),
            "selinuxEnabled": os.path.exists("/sys/fs/selinux/enforce"),
        },
        "swapFree": memory.get("SwapFree", 0),
        "swapTotal": memory.get("SwapTotal", 0),
        "uptime": format_uptime(_uptime_seconds()),
    }


def store_info() -> dict[str, Any]:
    root = paths.data_dir()
    driver, status = storage_driver()
    allocated, used = disk_usage(root)
    db = root / "rl.db"
    return {
        "configFile": str(paths.config_dir() / "config.yaml"),
        "containerStore": container_counts(root),
        "graphDriverName": driver,
        "graphOptions": {},
        "graphRoot": str(root),
        "graphRootAllocated": allocated,
        "graphRootUsed": used,
        "graphStatus": status,
        "imageStore": {"number": count_rows(db, "images")},
        "runRoot": str(paths.runtime_dir()),
        "volumePath": str(root / "volumes"),
    }


def version_info() -> dict[str, Any]:
    arch = go_arch(platform.machine())
    return {
        "Os": "linux",
        "OsArch": f"linux/{arch}",
        "PythonVersion": platform.python_version(),
        "Version": __version__,
    }


def storage_driver() -> tuple[str, dict[str, str]]:
    """(driver name, graphStatus): what `rl run` would use here, and why."""
    from rootless.errors import RlError
    from rootless.storage import describe

    try:
        described = describe()
    except RlError as err:  # a bad storage_driver setting: show it rather than fail
        return "unknown", {"error": err.message}
    except OSError as err:  # e.g. a store that cannot be created
        return "unknown", {"error": f"{err.filename or 'store'}: {err.strerror or err}"}
    return described["driver"], {k: v for k, v in described.items() if k != "driver"}


# ---------------------------------------------------------------------------------------------
# Small pure helpers


def go_arch(machine: str) -> str:
    return GO_ARCH.get(machine, machine)


def id_map_list(ranges: tuple[userns.IdRange, ...]) -> list[dict[str, int]]:
    return [{"container_id": r.container, "host_id": r.host, "size": r.size} for r in ranges]


def format_uptime(seconds: float) -> str:
    """podman's shape: "0h 17m 26.00s"."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours)}h {int(minutes)}m {secs:.2f}s"


# ---------------------------------------------------------------------------------------------
# I/O


def count_rows(db: Path, table: str) -> int:
    """Rows in a table of the store's index; 0 when the store or the table does not exist yet."""
    if not os.path.exists(db):  # False too when we may not look (another user's --root)
        return 0
    try:
        # Read-write (though only read): a read-only open of a WAL database fails when its
        # -shm file is missing, which is the usual state between commands.
        conn = sqlite3.connect(db, timeout=5)
        try:
            row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0])


def container_counts(root: Path) -> dict[str, int]:
    """podman's containerStore numbers, from the container records (whose "running" ones are
    checked against their runner processes)."""
    counts = {"number": 0, "paused": 0, "running": 0, "stopped": 0}
    if not os.path.exists(root / "rl.db"):
        return counts
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    try:
        store = ContainerStore.open(root)
        try:
            records = store.containers()
        finally:
            store.close()
    except (RlError, sqlite3.Error):
        return counts
    counts["number"] = len(records)
    counts["running"] = sum(r.state == "running" for r in records)
    counts["stopped"] = counts["number"] - counts["running"]
    return counts


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated, bytes used) of the filesystem that holds (or will hold) `path`."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        total = st.f_blocks * st.f_frsize
        return total, total - st.f_bfree * st.f_frsize
    return 0, 0


def _uptime_seconds() -> float:
    try:
        return float(_read("/proc/uptime").split()[0])
    except (IndexError, ValueError):
        return 0.0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _read_flag(path: str) -> bool:
    return _read(path).strip().upper() in ("Y", "1")
