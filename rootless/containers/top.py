"""`rl top`: the processes of a running container, read from /proc, shown as podman does.

A process belongs to the container when its pid namespace is that of the container's pid 1.
Ids are shown as the container sees them: pids from the last NSpid field, users through the
container's uid/gid maps and its /etc/passwd and /etc/group (huser/hgroup/hpid are the host's).
Columns are podman's (psgo) descriptors, in AIX (`%C`) or long (`pcpu`) form; durations are
printed like Go's time.Duration, as podman does ("1.5s", "2m3.000000001s").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from rootless.errors import RlError

DEFAULT_DESCRIPTORS = ("user", "pid", "ppid", "pcpu", "etime", "tty", "time", "args")
AIX = {
    "%C": "pcpu",
    "%G": "group",
    "%P": "ppid",
    "%U": "user",
    "%a": "args",
    "%c": "comm",
    "%g": "rgroup",
    "%n": "nice",
    "%p": "pid",
    "%r": "pgid",
    "%t": "etime",
    "%u": "ruser",
    "%x": "time",
    "%y": "tty",
    "%z": "vsz",
}
HEADERS = {
    "args": "COMMAND",
    "capamb": "AMBIENT CAPS",
    "capbnd": "BOUNDING CAPS",
    "capeff": "EFFECTIVE CAPS",
    "capinh": "INHERITED CAPS",
    "capprm": "PERMITTED CAPS",
    "comm": "COMMAND",
    "etime": "ELAPSED",
    "group": "GROUP",
    "hgroup": "HGROUP",
    "hpid": "HPID",
    "huser": "HUSER",
    "nice": "NI",
    "pcpu": "%CPU",
    "pgid": "PGID",
    "pid": "PID",
    "ppid": "PPID",
    "rgroup": "RGROUP",
    "rss": "RSS",
    "ruser": "RUSER",
    "seccomp": "SECCOMP",
    "state": "STATE",
    "stime": "STIME",
    "time": "TIME",
    "tty": "TTY",
    "user": "USER",
    "vsz": "VSZ",
}
_SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}


def parse_descriptors(words: Sequence[str]) -> list[str]:
    """podman top's descriptors: separate words or comma-separated, AIX or long names."""
    result = []
    for word in words:
        for item in filter(None, (w.strip() for w in word.split(","))):
            name = AIX.get(item, item)
            if name not in HEADERS:
                raise RlError(f"unknown descriptor: {item}: rl top supports {', '.join(HEADERS)}")
            result.append(name)
    return result or list(DEFAULT_DESCRIPTORS)


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() of a duration in seconds."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
        return f"{sign}{ns}ns"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


class IdMap(NamedTuple):
    ranges: tuple[tuple[int, int, int], ...]  # (inside, outside, count), /proc/PID/uid_map

    def inside(self, host_id: int) -> int | None:
        for start, outside, count in self.ranges:
            if outside <= host_id < outside + count:
                return start + host_id - outside
        return None


def parse_id_map(text: str) -> IdMap:
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3:
            ranges.append((int(fields[0]), int(fields[1]), int(fields[2])))
    return IdMap(tuple(ranges))


def names_by_id(text: str | None) -> dict[int, str]:
    """uid -> name from passwd text (or gid -> name from group text): the first wins."""
    result: dict[int, str] = {}
    for line in (text or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            result.setdefault(int(parts[2]), parts[0])
    return result


class Proc(NamedTuple):
    """What /proc says about one process (host view)."""

    host_pid: int
    host_ppid: int
    ns_pid: int
    uid: int  # effective, host view
    gid: int
    ruid: int
    rgid: int
    comm: str
    args: str
    state: str
    tty_nr: int
    pgid: int
    nice: int
    cpu_ticks: int
    start_ticks: int
    vsize: int
    rss_pages: int
    caps: Mapping[str, int]
    seccomp: str


class Clock(NamedTuple):
    now: float  # time.time()
    boot: float  # the epoch time of boot
    ticks: int  # SC_CLK_TCK


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat_text = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return None
    comm = stat_text[stat_text.index("(") + 1 : stat_text.rindex(")")]
    fields = stat_text[stat_text.rindex(")") + 2 :].split()
    uids = status.get("Uid", "0 0").split()
    gids = status.get("Gid", "0 0").split()
    caps = {
        key: int(status.get(field, "0").strip(), 16)
        for key, field in (
            ("capeff", "CapEff"),
            ("capprm", "CapPrm"),
            ("capbnd", "CapBnd"),
            ("capinh", "CapInh"),
            ("capamb", "CapAmb"),
        )
    }
    args = cmdline.replace(b"\0", b" ").decode(errors="replace") if cmdline else f"[{comm}]"
    return Proc(
        host_pid=pid,
        host_ppid=int(fields[1]),
        ns_pid=int(status.get("NSpid", str(pid)).split()[-1]),
        uid=int(uids[1]),
        gid=int(gids[1]),
        ruid=int(uids[0]),
        rgid=int(gids[0]),
        comm=comm,
        args=args,
        state=fields[0],
        tty_nr=int(fields[4]),
        pgid=int(fields[2]),
        nice=int(fields[16]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
        vsize=int(fields[20]),
        rss_pages=int(fields[21]),
        caps=caps,
        seccomp=_SECCOMP_MODES.get(status.get("Seccomp", "0").strip(), "?"),
    )


def own_cgroup(proc_cgroup_text: str) -> str | None:
    """The cgroup v2 path of a container that has one of its own (rl-<id>, see
    rootless.cgroups) from the text of /proc/PID/cgroup; None otherwise."""
    for line in proc_cgroup_text.splitlines():
        if line.startswith("0::"):
            path = line[3:].strip()
            name = path.rsplit("/", 1)[-1]
            if name.startswith("rl-") and name != "rl-supervisor":
                return path
    return None


def cgroup_pids(directory: str) -> list[int]:
    """Every pid in the cgroup `directory` and its descendants (cgroup.procs)."""
    pids: list[int] = []
    for parent, _dirs, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(parent, "cgroup.procs")) as f:
                    pids += [int(word) for word in f.read().split()]
            except OSError:
                continue
    return pids


def _same_pid_ns(pid: int, target: os.stat_result) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/ns/pid")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)


def container_processes(pid: int, cgroup_root: str = "/sys/fs/cgroup") -> list[Proc]:
    """The container's processes, by pid: those of its own cgroup when it has one (exec
    sessions included, as podman top reads them), else those of the pid namespace of `pid`
    (its pid 1)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            path = own_cgroup(f.read())
    except OSError:
        path = None
    if path is not None and os.path.isdir(cgroup_root + path):
        # rl's own helpers in the cgroup (an exec session's joiner) are not the container's:
        # only those that also live in its pid namespace.
        target = os.stat(f"/proc/{pid}/ns/pid")
        procs = [
            p
            for p in map(read_proc, cgroup_pids(cgroup_root + path))
            if p is not None and _same_pid_ns(p.host_pid, target)
        ]
        if procs:
            return sorted(procs, key=lambda p: p.ns_pid)
    try:
        target = os.stat(f"/proc/{pid}/ns/pid")
    except OSError as exc:
        raise RlError(f"cannot read the container's pid namespace: {exc.strerror}") from exc
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/pid")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
            continue
        proc = read_proc(int(entry))
        if proc is not None:
            found.append(proc)
    return sorted(found, key=lambda p: p.ns_pid)


def _tty(tty_nr: int) -> str:
    if tty_nr == 0:
        return "?"
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}"
    return "?"


def _caps(mask: int) -> str:
    from rootless.runtime.caps import CAPABILITIES

    names = [name.removeprefix("CAP_") for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]
    if len(names) == len(CAPABILITIES):
        return "full"
    return ",".join(names) if names else "none"


class Context(NamedTuple):
    clock: Clock
    uid_map: IdMap
    gid_map: IdMap
    users: Mapping[int, str]
    groups: Mapping[int, str]
    ns_pids: Mapping[int, int]  # host pid -> container pid, for PPID
    host_users: Callable[[int], str]
    host_groups: Callable[[int], str]


def _name(ids: IdMap, names: Mapping[int, str], host_id: int) -> str:
    inside = ids.inside(host_id)
    if inside is None:
        return str(host_id)
    return names.get(inside, str(inside))


def cell(descriptor: str, proc: Proc, ctx: Context) -> str:
    clock = ctx.clock
    started = clock.boot + proc.start_ticks / clock.ticks
    elapsed = max(clock.now - started, 0.0)
    cpu_seconds = proc.cpu_ticks / clock.ticks
    values: dict[str, Callable[[], str]] = {
        "args": lambda: proc.args,
        "comm": lambda: proc.comm,
        "etime": lambda: go_duration(elapsed),
        "group": lambda: _name(ctx.gid_map, ctx.groups, proc.gid),
        "hgroup": lambda: ctx.host_groups(proc.gid),
        "hpid": lambda: str(proc.host_pid),
        "huser": lambda: ctx.host_users(proc.uid),
        "nice": lambda: str(proc.nice),
        "pcpu": lambda: f"{(cpu_seconds / elapsed * 100) if elapsed > 0 else 0.0:.3f}",
        "pgid": lambda: str(ctx.ns_pids.get(proc.pgid, 0)),
        "pid": lambda: str(proc.ns_pid),
        "ppid": lambda: str(ctx.ns_pids.get(proc.host_ppid, 0)),
        "rgroup": lambda: _name(ctx.gid_map, ctx.groups, proc.rgid),
        "rss": lambda: str(proc.rss_pages * os.sysconf("SC_PAGESIZE") // 1024),
        "ruser": lambda: _name(ctx.uid_map, ctx.users, proc.ruid),
        "seccomp": lambda: proc.seccomp,
        "state": lambda: proc.state,
        "stime": lambda: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "time": lambda: go_duration(cpu_seconds),
        "tty": lambda: _tty(proc.tty_nr),
        "user": lambda: _name(ctx.uid_map, ctx.users, proc.uid),
        "vsz": lambda: str(proc.vsize // 1024),
    }
    if descriptor.startswith("cap"):
        return _caps(proc.caps[descriptor])
    return values[descriptor]()


def rows(procs: Sequence[Proc], descriptors: Sequence[str], ctx: Context) -> list[list[str]]:
    return [[cell(d, p, ctx) for d in descriptors] for p in procs]


def render(headers: Sequence[str], table: Sequence[Sequence[str]]) -> str:
    """psgo's tabwriter layout as podman prints it: cells padded to at least 12, two spaces
    after the widest."""
    widths = [
        max(12, max((len(r[i]) for r in [headers, *table]), default=0) + 2)
        for i in range(len(headers))
    ]
    lines = []
    for row in [headers, *table]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def host_clock() -> Clock:
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    now = time.time()
    return Clock(now, now - uptime, os.sysconf("SC_CLK_TCK"))
