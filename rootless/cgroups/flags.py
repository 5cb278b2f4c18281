"""The resource flags of run/create/update (podman's names and help), parsed into Limits."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rootless.errors import RlError

if TYPE_CHECKING:
    from rootless.cgroups import core

# Registered on every rl start-up (run/create/update): nothing heavy at module level.


def add_resource_flags(p: argparse.ArgumentParser, *, update: bool = False) -> None:
    add = p.add_argument
    add(
        "--blkio-weight",
        metavar="WEIGHT",
        help="Block IO weight (relative weight) accepts a weight value between 10 and 1000.",
    )
    add(
        "--cpu-period",
        metavar="PERIOD",
        help="Limit the CPU CFS (Completely Fair Scheduler) period",
    )
    add("--cpu-quota", metavar="QUOTA", help="Limit the CPU CFS (Completely Fair Scheduler) quota")
    add("-c", "--cpu-shares", metavar="SHARES", help="CPU shares (relative weight)")
    add("--cpus", metavar="CPUS", help="Number of CPUs. The default is 0.000 which means no limit")
    add("--cpuset-cpus", metavar="CPUS", help="CPUs in which to allow execution (0-3, 0,1)")
    add(
        "--cpuset-mems",
        metavar="MEMS",
        help="Memory nodes (MEMs) in which to allow execution "
        "(0-3, 0,1). Only effective on NUMA systems.",
    )
    add(
        "--device-read-bps",
        action="append",
        default=[],
        metavar="DEVICE:RATE",
        help="Limit read rate (bytes per second) from a device (e.g. /dev/sda:1mb)",
    )
    add(
        "--device-write-bps",
        action="append",
        default=[],
        metavar="DEVICE:RATE",
        help="Limit write rate (bytes per second) to a device (e.g. /dev/sda:1mb)",
    )
    add(
        "-m",
        "--memory",
        metavar="MEMORY",
        help="Memory limit (format: <number>[<unit>], where "
        "unit = b (bytes), k (kibibytes), m (mebibytes), or g (gibibytes))",
    )
    add(
        "--memory-reservation",
        metavar="MEMORY",
        help="Memory soft limit (format: <number>[<unit>])",
    )
    add(
        "--memory-swap",
        metavar="MEMORY",
        help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap",
    )
    add("--pids-limit", metavar="LIMIT", help="Tune container pids limit (set -1 for unlimited)")
    if update:
        return
    add(
        "--cgroups",
        default="enabled",
        metavar="MODE",
        help='control container cgroup configuration ("enabled"|"disabled"|"no-conmon"|"split"; '
        "rl's monitor is always outside the container's cgroup, so the last two are enabled)",
    )
    add(
        "--cgroupns",
        default="private",
        metavar="MODE",
        help='cgroup namespace to use ("private"|"host")',
    )


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RlError(f'invalid argument "{text}" for "{flag}" flag: use an integer') from None


def limits_from_args(args: argparse.Namespace) -> core.Limits:
    """The flags as Limits, checked as podman checks them (RlError with its wording)."""
    from rootless.cgroups import core

    values: dict[str, Any] = {}
    if args.memory is not None:
        values["memory"] = core.parse_memory(args.memory, "--memory")
    if args.memory_reservation is not None:
        values["memory_reservation"] = core.parse_memory(
            args.memory_reservation, "--memory-reservation"
        )
    if args.memory_swap is not None:
        values["memory_swap"] = core.parse_memory(args.memory_swap, "--memory-swap")
    if args.cpus is not None:
        values["cpus"] = core.parse_cpus(args.cpus)
    for key in ("cpu_shares", "cpu_quota", "cpu_period", "blkio_weight", "pids_limit"):
        text = getattr(args, key)
        if text is not None:
            values[key] = _int(text, core.FLAG_NAMES[key])
    if args.cpuset_cpus is not None:
        values["cpuset_cpus"] = args.cpuset_cpus
    if args.cpuset_mems is not None:
        values["cpuset_mems"] = args.cpuset_mems
    for key in ("device_read_bps", "device_write_bps"):
        entries = getattr(args, key) or []
        if entries:
            values[key] = tuple(core.parse_device_rate(e, core.FLAG_NAMES[key]) for e in entries)
    limits = core.Limits(**values)
    core.check_limits(limits)
    return limits


def resources_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
    """(RunOptions.resources, .cgroups, .cgroupns) for run/create. Limits this host cannot
    enforce fail here (exit 125, one line: the missing controller and the fix)."""
    from rootless.cgroups import core

    limits = limits_from_args(args)
    mode = args.cgroups
    if mode not in core.CGROUPS_MODES:
        raise RlError(f'invalid cgroup mode "{mode}": use enabled, disabled, no-conmon or split')
    cgroupns = args.cgroupns
    if cgroupns not in core.CGROUPNS_MODES:
        raise RlError(f'invalid --cgroupns "{cgroupns}": use private or host')
    if limits.given():
        if mode == "disabled":
            raise RlError(
                "cannot set resource limits with --cgroups=disabled: the container would get "
                "no cgroup to enforce them in"
            )
        from rootless.cgroups import fs

        fs.require(fs.probe(), limits)
    return limits.to_json(), mode, cgroupns
