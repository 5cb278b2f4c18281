"""cgroup logic without I/O: what the host's cgroups are, which controllers a user may use,
and what files podman's resource flags become on cgroup v2.

Everything here takes file contents (strings) and returns values; rootless.cgroups.fs reads
and writes the real files.

Podman's arithmetic, as crun applies it on cgroup v2:
- --memory N -> memory.max N; --memory-reservation N -> memory.low N.
- --memory-swap S is memory plus swap (docker's meaning): memory.swap.max = S - memory;
  -1 -> "max"; unset with --memory M -> the container may swap as much as M (S = 2M).
- --cpus C -> cpu.max "C*100000 100000"; --cpu-quota Q / --cpu-period P -> cpu.max "Q P"
  (Q unset or -1: "max"; P unset: 100000).
- --cpu-shares S -> cpu.weight 1 + (S - 2) * 9999 // 262142 (S=1024 -> 39; crun, runc).
- --blkio-weight W (10-1000) -> io.weight "default 1 + (W - 10) * 9999 // 990".
- --device-read-bps/--device-write-bps DEV:RATE -> io.max "MAJ:MIN rbps=R wbps=W".
- --pids-limit N -> pids.max N (0 or -1: "max"); --cpuset-cpus/--cpuset-mems -> cpuset.*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from rootless.errors import RlError

V2_ROOT = "/sys/fs/cgroup"
DEFAULT_CPU_PERIOD = 100_000
MIN_MEMORY = 6 * 1024 * 1024  # podman's (and docker's) lower bound for --memory
CGROUPS_MODES = ("enabled", "disabled", "no-conmon", "split")
CGROUPNS_MODES = ("host", "private")

# The controller each flag needs, in podman's flag names.
FLAG_CONTROLLERS: Mapping[str, str] = {
    "memory": "memory",
    "memory_reservation": "memory",
    "memory_swap": "memory",
    "cpus": "cpu",
    "cpu_shares": "cpu",
    "cpu_quota": "cpu",
    "cpu_period": "cpu",
    "cpuset_cpus": "cpuset",
    "cpuset_mems": "cpuset",
    "pids_limit": "pids",
    "blkio_weight": "io",
    "device_read_bps": "io",
    "device_write_bps": "io",
}
FLAG_NAMES: Mapping[str, str] = {key: "--" + key.replace("_", "-") for key in FLAG_CONTROLLERS}


# --- the host -----------------------------------------------------------------------------


class Layout(NamedTuple):
    """How cgroups are mounted: "v2" (unified at /sys/fs/cgroup), "hybrid" (v1 controllers
    plus a cgroup2 mount, usually /sys/fs/cgroup/unified), "v1", or "none"."""

    mode: str
    v2_mount: str | None = None


def parse_layout(mountinfo: str) -> Layout:
    """/proc/self/mountinfo -> Layout."""
    v2: list[str] = []
    v1 = False
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        fstype = right.split()[0] if right.split() else ""
        if len(fields) < 5:
            continue
        mountpoint = fields[4].replace("\\040", " ")
        if fstype == "cgroup2":
            v2.append(mountpoint)
        elif fstype == "cgroup":
            v1 = True
    if v2 and not v1:
        return Layout("v2", V2_ROOT if V2_ROOT in v2 else v2[0])
    if v2:
        return Layout("hybrid", v2[0])
    return Layout("v1" if v1 else "none")


class Membership(NamedTuple):
    """/proc/PID/cgroup: the cgroup v2 path ("0::PATH"), and v1 paths by controller."""

    v2_path: str | None
    v1: Mapping[str, str]


def parse_proc_cgroup(text: str) -> Membership:
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, path = parts
        if number == "0" and controllers == "":
            v2 = path.removesuffix(" (deleted)")
        else:
            for name in controllers.split(","):
                if name:
                    v1[name.removeprefix("name=")] = path
    return Membership(v2, v1)


def parse_controllers(text: str) -> frozenset[str]:
    """cgroup.controllers or cgroup.subtree_control: space-separated names."""
    return frozenset(text.split())


def user_manager_path(uid: int) -> str:
    """The cgroup systemd gives the user's manager, user@UID.service."""
    return f"/user.slice/user-{uid}.slice/user@{uid}.service"


# NamedTuples rather than dataclasses: `rl run` imports this module, and a dataclass costs
# ~0.5 ms to create at import (start-up is issue 3's target).
class HostCgroups(NamedTuple):
    """What rl found out about the cgroups it can use (rootless.cgroups.fs.probe fills it)."""

    layout: Layout
    own_path: str | None = None  # rl's cgroup v2 path
    own_writable: bool = False  # may rl make child cgroups of its own cgroup?
    own_controllers: frozenset[str] = frozenset()  # cgroup.controllers of rl's own cgroup
    user_controllers: frozenset[str] = frozenset()  # those delegated to user@UID.service
    systemd_user: bool = False  # a systemd user manager is reachable (systemd-run --user)

    @property
    def version(self) -> str:
        return {"v2": "v2", "hybrid": "v1", "v1": "v1"}.get(self.layout.mode, "none")

    @property
    def manager(self) -> str:
        return "systemd" if self.systemd_user else "cgroupfs"

    @property
    def delegated(self) -> frozenset[str]:
        """Controllers rl can use: its own cgroup's when rl may write there, otherwise those
        a new systemd scope would get (the user manager's)."""
        if self.layout.mode != "v2":
            return frozenset()
        if self.own_writable:
            return self.own_controllers
        return self.user_controllers if self.systemd_user else frozenset()

    @property
    def needs_scope(self) -> bool:
        """Whether rl must first move into a delegated systemd scope of its own."""
        return self.layout.mode == "v2" and not self.own_writable and self.systemd_user


DELEGATE_FIX = (
    "add a Delegate= drop-in for user@.service (/etc/systemd/system/user@.service.d/"
    "delegate.conf: [Service] Delegate=cpu cpuset io memory pids), run systemctl daemon-reload "
    "and log in again"
)
V2_FIX = (
    "boot with the kernel parameter systemd.unified_cgroup_hierarchy=1 for cgroup v2 "
    "(with systemd delegating controllers to users)"
)


def missing_reason(host: HostCgroups, flag: str, controller: str) -> str | None:
    """The one-line reason `flag` cannot be enforced here and the fix, or None when it can."""
    mode = host.layout.mode
    if mode in ("hybrid", "v1", "none"):
        kind = {
            "hybrid": "hybrid cgroups (v1 controllers; cgroup v2 without controllers)",
            "v1": "cgroup v1",
            "none": "no cgroup filesystem",
        }[mode]
        return (
            f"{flag} needs the cgroup v2 {controller} controller, but this host has {kind}, "
            f"which rootless containers cannot use: {V2_FIX}"
        )
    if controller in host.delegated:
        return None
    if not host.own_writable and not host.systemd_user:
        return (
            f"{flag} needs the {controller} controller, but rl's cgroup "
            f"{host.own_path or '?'} is not delegated to your user and no systemd user session "
            "was found: run rl from a user session (loginctl enable-linger; "
            "systemd-run --user --scope -p Delegate=yes) or " + DELEGATE_FIX
        )
    return (
        f"{flag} needs the {controller} controller, which is not delegated to your user "
        f"(delegated: {' '.join(sorted(host.delegated)) or 'none'}): {DELEGATE_FIX}"
    )


# --- the flags ----------------------------------------------------------------------------


class Device(NamedTuple):
    path: str
    rate: int


class Limits(NamedTuple):
    """The resource flags of run/create/update, parsed (None/empty: not given)."""

    memory: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None  # memory + swap; -1 unlimited
    cpus: float | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    blkio_weight: int | None = None
    device_read_bps: tuple[Device, ...] = ()
    device_write_bps: tuple[Device, ...] = ()

    def given(self) -> list[str]:
        """The attribute names of the flags that were given, in FLAG_CONTROLLERS' order."""
        return [key for key in FLAG_CONTROLLERS if getattr(self, key) not in (None, ())]

    def controllers(self) -> list[str]:
        """The controllers these limits need, without repeats, in a stable order."""
        out: list[str] = []
        for key in self.given():
            if FLAG_CONTROLLERS[key] not in out:
                out.append(FLAG_CONTROLLERS[key])
        return out

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key in self.given():
            value = getattr(self, key)
            out[key] = [list(d) for d in value] if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> Limits:
        values: dict[str, object] = {}
        for key, value in (data or {}).items():
            if key not in FLAG_CONTROLLERS:
                continue
            if key.startswith("device_"):
                assert isinstance(value, list)
                values[key] = tuple(Device(str(p), int(r)) for p, r in value)
            else:
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]

    def merged(self, update: Limits) -> Limits:
        """These limits with those `update` gives replacing them (rl update)."""
        return self._replace(**{key: getattr(update, key) for key in update.given()})


def check_limits(limits: Limits) -> None:
    """podman's validation of the combination; RlError with its wording."""
    if limits.memory is not None and 0 < limits.memory < MIN_MEMORY:
        raise RlError("minimum memory limit allowed is 6MB")
    swap = limits.memory_swap
    if swap is not None and swap not in (0, -1):
        if not limits.memory:
            raise RlError("you must specify a memory limit (--memory) when setting --memory-swap")
        if swap < limits.memory:
            raise RlError("minimum memoryswap limit should be larger than memory limit, see usage")
    if limits.memory_reservation and limits.memory and limits.memory_reservation > limits.memory:
        raise RlError(
            "minimum memory limit can not be less than memory reservation limit, see usage"
        )
    if limits.cpus is not None and (limits.cpu_quota is not None or limits.cpu_period):
        raise RlError("--cpu-period and --cpu-quota cannot be set with --cpus")
    if limits.cpus is not None and limits.cpus < 0:
        raise RlError(f"invalid --cpus {limits.cpus}: use a positive number of CPUs")
    if limits.cpu_period is not None and not 1000 <= limits.cpu_period <= 1_000_000:
        raise RlError("cpu period must be between 1000 and 1000000 microseconds")
    if limits.cpu_quota is not None and 0 <= limits.cpu_quota < 1000:
        raise RlError("cpu quota must be at least 1000 microseconds (or -1 for none)")
    if limits.blkio_weight is not None and not (
        limits.blkio_weight == 0 or 10 <= limits.blkio_weight <= 1000
    ):
        raise RlError("range of blkio weight is from 10 to 1000")
    if limits.cpu_shares is not None and limits.cpu_shares < 0:
        raise RlError(f"invalid --cpu-shares {limits.cpu_shares}")


def shares_to_weight(shares: int) -> int:
    """cpu.shares (v1, 2-262144, default 1024) -> cpu.weight (v2, 1-10000), as crun/runc."""
    if shares == 0:
        return 0
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10-1000) -> io.weight (1-10000), as runc/crun."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def cgroup_files(
    limits: Limits, devices: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, str]:
    """The v2 files to write and their contents. `devices`: major/minor of the device paths
    of --device-*-bps (looked up by the caller)."""
    files: dict[str, str] = {}
    if limits.memory is not None:
        files["memory.max"] = _max(limits.memory)
    if limits.memory_reservation is not None:
        files["memory.low"] = str(limits.memory_reservation)
    swap = limits.memory_swap
    if swap is not None and limits.memory:
        files["memory.swap.max"] = "max" if swap < 0 else str(max(swap - limits.memory, 0))
    elif swap is None and limits.memory and limits.memory > 0:
        files["memory.swap.max"] = str(limits.memory)  # podman: swap = 2 x memory
    if limits.cpus is not None:
        quota = int(limits.cpus * DEFAULT_CPU_PERIOD)
        files["cpu.max"] = f"{quota or 'max'} {DEFAULT_CPU_PERIOD}"
    elif limits.cpu_quota is not None or limits.cpu_period is not None:
        given = limits.cpu_quota
        period = limits.cpu_period or DEFAULT_CPU_PERIOD
        files["cpu.max"] = f"{'max' if given is None or given < 0 else given} {period}"
    if limits.cpu_shares:
        files["cpu.weight"] = str(shares_to_weight(limits.cpu_shares))
    if limits.cpuset_cpus is not None:
        files["cpuset.cpus"] = limits.cpuset_cpus
    if limits.cpuset_mems is not None:
        files["cpuset.mems"] = limits.cpuset_mems
    if limits.pids_limit is not None:
        files["pids.max"] = _max(limits.pids_limit)
    if limits.blkio_weight:
        files["io.weight"] = f"default {blkio_to_io_weight(limits.blkio_weight)}"
    io_max = _io_max(limits, devices or {})
    if io_max:
        files["io.max"] = io_max
    return files


def _max(value: int) -> str:
    return "max" if value <= 0 else str(value)


def _io_max(limits: Limits, devices: Mapping[str, tuple[int, int]]) -> str:
    per_device: dict[tuple[int, int], list[str]] = {}
    for key, entries in (("rbps", limits.device_read_bps), ("wbps", limits.device_write_bps)):
        for entry in entries:
            number = devices.get(entry.path)
            if number is None:
                raise RlError(f"cannot find the device {entry.path}: give a block device path")
            per_device.setdefault(number, []).append(f"{key}={entry.rate}")
    # One line per device; the kernel takes one line per write, so the caller writes each.
    return "\n".join(f"{ma}:{mi} {' '.join(v)}" for (ma, mi), v in per_device.items())


def parse_device_rate(text: str, flag: str) -> Device:
    """--device-read-bps /dev/sda:1mb -> Device("/dev/sda", 1048576)."""
    from rootless.runtime.options import parse_size

    path, sep, rate = text.rpartition(":")
    if not sep or not path.startswith("/"):
        raise RlError(f"invalid {flag} {text!r}: use DEVICE:RATE, e.g. /dev/sda:1mb")
    return Device(path, parse_size(rate, flag))


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RlError(f'invalid argument "{text}" for "--cpus" flag: use a number') from None
    if value < 0:
        raise RlError(f'invalid argument "{text}" for "--cpus" flag: use a positive number')
    return value


def parse_memory(text: str, flag: str) -> int:
    """--memory and friends: a size (binary units), or -1 for unlimited."""
    from rootless.runtime.options import parse_size

    if text.strip() == "-1":
        return -1
    return parse_size(text, flag)


# --- stats --------------------------------------------------------------------------------


def parse_keyed(text: str) -> dict[str, int]:
    """memory.stat, memory.events, cpu.stat, pids.events: "key value" lines."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def parse_io_stat(text: str) -> tuple[int, int]:
    """io.stat -> (bytes read, bytes written) over all devices."""
    read = written = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes" and value.isdigit():
                read += int(value)
            elif key == "wbytes" and value.isdigit():
                written += int(value)
    return read, written


def oom_killed(events_before: str | None, events_after: str) -> bool:
    """Whether memory.events counted an oom_kill since `events_before` (None: since creation)."""
    after = parse_keyed(events_after).get("oom_kill", 0)
    before = parse_keyed(events_before).get("oom_kill", 0) if events_before else 0
    return after > before


def cpu_percent(usage_before: int, usage_after: int, seconds: float, online_cpus: int = 1) -> float:
    """cpu.stat usage_usec delta -> podman's CPU % (100% = one CPU busy)."""
    del online_cpus  # podman's rootless v2 figure is per CPU, not divided by the count
    if seconds <= 0:
        return 0.0
    return max(usage_after - usage_before, 0) / (seconds * 1e6) * 100.0


def needed_controllers(names: Iterable[str]) -> str:
    """The cgroup.subtree_control write that enables `names`: "+cpu +memory"."""
    return " ".join("+" + name for name in names)
