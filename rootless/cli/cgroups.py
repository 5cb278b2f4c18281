"""`rl stats`, `rl update`, `rl pause`, `rl unpause`: a running container's cgroup (v2).

Where the container has no cgroup of its own (cgroup v1 or hybrid hosts, controllers not
delegated) these fail with the one-line reason and the fix, as `rl run --memory` does.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container

STATS_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET IO",
    "BlockIO": "BLOCK IO",
    "PIDs": "PIDS",
    "CPU": "CPU TIME",
    "AvgCPU": "AVG CPU %",
}
DEFAULT_STATS = "table " + "\t".join("{{." + key + "}}" for key in STATS_HEADERS)


def register(commands: CommandGroup) -> None:
    container = commands.group("container", "Manage containers")
    for group, prefix in ((commands, "rl"), (container, "rl container")):
        p = group.command(
            "stats",
            "Display a live stream of container resource usage statistics",
            description="Display percentage of CPU, memory, network I/O, block I/O and PIDs "
            "for one or more containers (from their cgroup v2).",
        )
        p.usage = f"{prefix} stats [options] [CONTAINER...]"
        p.add_argument("-a", "--all", action="store_true", help="Show all containers")
        p.add_argument(
            "--format",
            metavar="FORMAT",
            help="Pretty-print container statistics to JSON or using a Go template",
        )
        p.add_argument(
            "-i",
            "--interval",
            type=int,
            default=5,
            metavar="SECONDS",
            help="Time in seconds between stats reports (default 5)",
        )
        p.add_argument(
            "--no-reset", action="store_true", help="Disable resetting the screen between intervals"
        )
        p.add_argument(
            "--no-stream",
            action="store_true",
            help="Disable streaming stats and only pull the first result",
        )
        p.add_argument("containers", nargs="*", metavar="CONTAINER")
        p.set_defaults(func=stats_command)

        u = group.command(
            "update",
            "Update an existing container",
            description="Updates the resource limits of a running container (its cgroup v2).",
        )
        u.usage = f"{prefix} update [options] CONTAINER"
        from rootless.cgroups.flags import add_resource_flags

        add_resource_flags(u, update=True)
        u.add_argument("container", metavar="CONTAINER")
        u.set_defaults(func=update_command)

        for name, verb in (("pause", "Pause"), ("unpause", "Unpause")):
            q = group.command(
                name,
                f"{verb} all the processes in one or more containers",
                description=f"{verb}s all the processes in one or more containers (cgroup.freeze).",
            )
            q.usage = f"{prefix} {name} [options] [CONTAINER...]"
            q.add_argument("-a", "--all", action="store_true", help=f"{verb} all containers")
            q.add_argument("containers", nargs="*", metavar="CONTAINER")
            q.set_defaults(func=pause_command, pause=name == "pause")


# --- pause / unpause ----------------------------------------------------------------------


def pause_command(args: argparse.Namespace) -> int:
    from rootless.cgroups import container as cg
    from rootless.cgroups import fs
    from rootless.containers.store import ContainerLock, ContainerStore
    from rootless.errors import RlError

    verb = "pause" if args.pause else "unpause"
    if args.all and args.containers:
        raise RlError(f"--all and containers cannot be used together with {verb}")
    if not args.all and not args.containers:
        raise RlError(f"you must provide at least one container name or id to {verb}")
    cg.require_v2(f"rl {verb}")
    store = ContainerStore.open()
    try:
        wanted = "running" if args.pause else "paused"
        if args.all:
            refs = [c.id for c in store.containers() if c.state == wanted]
        else:
            refs = list(args.containers)
        code = 0
        for ref in refs:
            try:
                record = store.get(ref)
                with ContainerLock(record.id):
                    record = store.get(record.id)
                    if record.state != wanted:
                        raise RlError(
                            f'"{record.id}" is not {wanted}, can\'t {verb}: container state '
                            "improper"
                        )
                    path = cg.require_cgroup(store, record, f"rl {verb}")
                    fs.freeze(path, args.pause)
                    store.set_state(record.id, "paused" if args.pause else "running")
                print(record.id if args.all else ref)
            except RlError as err:
                if len(refs) == 1:
                    raise
                print(f"Error: {err.message}", file=sys.stderr)
                code = err.exit_code
        return code
    finally:
        store.close()


# --- update -------------------------------------------------------------------------------


def update_command(args: argparse.Namespace) -> int:
    from rootless.cgroups import container as cg
    from rootless.cgroups import core, fs
    from rootless.cgroups.flags import limits_from_args
    from rootless.containers.store import ContainerLock, ContainerStore
    from rootless.errors import RlError

    update = limits_from_args(args)
    cg.require_v2("rl update")
    store = ContainerStore.open()
    try:
        record = store.get(args.container)
        with ContainerLock(record.id):
            record = store.get(record.id)
            current = cg.limits_of(record.config)
            merged = current.merged(update)
            core.check_limits(merged)
            if update.given():
                fs.require(fs.probe(), update)
                if record.state in ("running", "paused"):
                    path = cg.require_cgroup(store, record, "rl update")
                    fs.write_limits(path, merged)
                elif record.state != "created" and record.state != "exited":
                    raise RlError(f"cannot update container {record.id}: it is {record.state}")
                store.update_config(record.id, resources=merged.to_json())
        print(record.id)
        return 0
    finally:
        store.close()


# --- stats --------------------------------------------------------------------------------


# A NamedTuple: every `rl` start imports this module to register its commands, and a
# dataclass (the module and the class) costs milliseconds of it.
class Sample(NamedTuple):
    when: float
    cpu_usec: int
    mem_usage: int
    mem_limit: int
    pids: int
    block: tuple[int, int]
    net: tuple[int, int]


def _sample(path: str, pid: int | None) -> Sample:
    from rootless.cgroups import core, fs

    files = fs.read_files(
        path, ["cpu.stat", "memory.current", "memory.max", "pids.current", "io.stat"]
    )
    limit_text = (files["memory.max"] or "max").strip()
    return Sample(
        when=time.monotonic(),
        cpu_usec=core.parse_keyed(files["cpu.stat"] or "").get("usage_usec", 0),
        mem_usage=int((files["memory.current"] or "0").strip() or 0),
        mem_limit=int(limit_text) if limit_text.isdigit() else _host_memory(),
        pids=int((files["pids.current"] or "0").strip() or 0),
        block=core.parse_io_stat(files["io.stat"] or ""),
        net=_net_io(pid),
    )


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _net_io(pid: int | None) -> tuple[int, int]:
    """(received, transmitted) bytes over the container's interfaces but loopback."""
    if not pid:
        return 0, 0
    rx = tx = 0
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            for line in list(f)[2:]:
                name, _, data = line.partition(":")
                fields = data.split()
                if name.strip() != "lo" and len(fields) >= 9:
                    rx += int(fields[0])
                    tx += int(fields[8])
    except (OSError, ValueError):
        pass
    return rx, tx


def _size(value: float) -> str:
    from rootless.cli.output import human_size

    return human_size(value, precision=4, separator="")  # podman: "3.092MB / 16.7GB"


def stats_row(record: Container, before: Sample, after: Sample) -> dict[str, Any]:
    from rootless.cgroups import core

    elapsed = after.when - before.when
    cpu = core.cpu_percent(before.cpu_usec, after.cpu_usec, elapsed)
    running_for = max(time.time() - (record.started or time.time()), 1e-6)
    avg = after.cpu_usec / 1e6 / running_for * 100
    mem_perc = after.mem_usage / after.mem_limit * 100 if after.mem_limit else 0.0
    return {
        "ID": record.id[:12],
        "ContainerID": record.id,
        "Name": record.name,
        "CPUPerc": f"{cpu:.2f}%",
        "CPU": f"{after.cpu_usec / 1e6:.6g}s",
        "CPUNano": after.cpu_usec * 1000,
        "AvgCPU": f"{avg:.2f}%",
        "MemUsage": f"{_size(after.mem_usage)} / {_size(after.mem_limit)}",
        "MemUsageBytes": after.mem_usage,
        "MemLimit": after.mem_limit,
        "MemPerc": f"{mem_perc:.2f}%",
        "NetIO": f"{_size(after.net[0])} / {_size(after.net[1])}",
        "BlockIO": f"{_size(after.block[0])} / {_size(after.block[1])}",
        "PIDs": after.pids,
        "PIDS": after.pids,
    }


def stats_command(args: argparse.Namespace) -> int:
    from rootless.cgroups import container as cg
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    cg.require_v2("rl stats")
    store = ContainerStore.open()
    try:
        if args.containers:
            records = [store.get(ref) for ref in args.containers]
            for record in records:
                if record.state not in ("running", "paused"):
                    raise RlError(f"container {record.id} is not running: can't show its stats")
        else:
            records = [c for c in store.containers() if c.state in ("running", "paused")]
        paths = {r.id: cg.require_cgroup(store, r, "rl stats") for r in records}
        interval = 0.5 if args.no_stream else max(args.interval, 1)
        previous = {r.id: _sample(paths[r.id], r.container_pid) for r in records}
        while True:
            time.sleep(interval if not args.no_stream else 0.5)
            rows = []
            for record in records:
                after = _sample(paths[record.id], record.container_pid)
                rows.append(stats_row(record, previous[record.id], after))
                previous[record.id] = after
            if not args.no_stream and not args.no_reset and sys.stdout.isatty():
                sys.stdout.write("\033[2J\033[H")
            sys.stdout.write(_render(rows, args.format))
            sys.stdout.flush()
            if args.no_stream:
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()


def _render(rows: list[dict[str, Any]], fmt: str | None) -> str:
    import json

    from rootless import gotemplate

    if fmt == "json":
        return json.dumps(rows, indent=4) + "\n"
    template = fmt or DEFAULT_STATS
    if template.startswith("table"):
        return gotemplate.render_table(template, rows, STATS_HEADERS, heading=True)
    return gotemplate.render_rows(template, rows) if rows else ""
