"""Detached containers: `rl run -d` + `stop` + `rm` cycle time and the memory an idle detached
container costs, against podman in the same run.

    sudo /opt/rl/venv/bin/python bench/lifecycle.py [-n 20] [--containers 50] [--no-podman]
        [--network slirp4netns] [--publish 80] [--rl-storage-driver fuse]

Runs as the unprivileged test user (tests/harness.py), like bench/startup.py: the same minimal
busybox image (tests/images.py) is loaded into a fresh rl store (`--root`) and a fresh podman
store (`--root`/`--runroot`, podman's native rootless overlay by default). podman runs with
`--runtime runc` (crun refuses this host's hybrid cgroups). Both run with `--network none` by
default (no network: the fair comparison of the runners themselves); `--network slirp4netns`
gives both user-mode networking (rl: its own stack, inside the monitor; podman: a slirp4netns
process, counted with the container).

1. Cycle: `run -d IMAGE sleep 1000`, `stop -t 0 ID`, `rm ID`, N times, alternating which tool
   goes first; median and p90 of the whole cycle and of each step.
2. Memory of one idle detached container: PSS (/proc/PID/smaps_rollup, read as root) summed over
   every process that exists for it, i.e. the runner's process tree without the container's own
   processes (`sleep`, the same for both): rl's monitor (its lean watcher phase; the container's
   pid 1 is its child, there is no keeper process any more; with `-p` no resident helper
   either: short-lived socket makers only, counted if one happens to run) and with
   `--rl-storage-driver fuse` its fuseoverlay helper (the monitor's child);
   podman's conmon (and slirp4netns with a network, found by the container's netns path;
   rootlessport with `-p`, whose child is in the container's netns). podman's
   rootless pause process (which holds its user namespace) is shared by all containers of the
   user: reported apart. Then the same with --containers of them running at once (PSS splits
   pages shared between processes, so the per-container figure falls with more containers).

Targets (issue 6): cycle time at most podman's; at most 10 MB PSS per container. The machine
may be shared with other work: timings are noisy, and PSS of file pages depends on who else maps
the same files (the python binary, libc). Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, BenchError, User, bench_user, fresh_dir, rl_binary
from tests.images import build_image, minimal_spec, write_docker_archive

IMAGE = "localhost/rl-bench/busybox:latest"
COMMAND = ["sleep", "1000"]
TARGET_PSS_KIB = 10 * 1024
SETTLE_SECONDS = 1.0  # after the last `run -d`, before reading memory: let runners go idle


# --- the tools ----------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    base: list[str]  # the command and its global options
    run_flags: list[str]  # after `run -d`
    runner_mark: str  # in the cmdline of each of the tool's per-container processes

    def run(self, user: User, args: Sequence[str], *, cwd: Path, timeout: float = 120) -> str:
        result = user.run([*self.base, *args], cwd=cwd, timeout=timeout)
        if result.returncode != 0:
            raise BenchError(f"{' '.join([*self.base, *args])} failed:\n{result}")
        return result.stdout.strip()

    def start(self, user: User, cwd: Path) -> str:
        return self.run(user, ["run", "-d", *self.run_flags, IMAGE, *COMMAND], cwd=cwd)


def make_tools(
    work: Path, podman_driver: str, network: str, publish: str = "", rl_driver: str = ""
) -> dict[str, Tool]:
    flags = [] if network == "default" else ["--network", network]
    if publish:
        flags += ["-p", publish]
    rl_base = [rl_binary(), "--root", str(work / "rl")]
    if rl_driver:
        rl_base += ["--storage-driver", rl_driver]
    rl = Tool("rl", rl_base, flags, "rootless.monitor")
    podman = Tool(
        "podman",
        [
            "podman",
            "--root",
            str(work / "podman" / "root"),
            "--runroot",
            str(work / "podman" / "run"),
            "--storage-driver",
            podman_driver,
            "--runtime",
            "runc",
        ],
        flags,
        "conmon",
    )
    return {"rl": rl, "podman": podman}


# --- cycle time ---------------------------------------------------------------------------

STEPS = ("run -d", "stop -t 0", "rm", "cycle")


@dataclass
class Cycles:
    steps: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STEPS})

    def add(self, run: float, stop: float, rm: float) -> None:
        for step, seconds in zip(STEPS, (run, stop, rm, run + stop + rm), strict=True):
            self.steps[step].append(seconds)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p90 of 20 values: the 18th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 100) * len(ordered) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def one_cycle(tool: Tool, user: User, cwd: Path) -> tuple[float, float, float]:
    marks = [time.perf_counter()]
    container = tool.start(user, cwd)
    marks.append(time.perf_counter())
    tool.run(user, ["stop", "-t", "0", container], cwd=cwd)
    marks.append(time.perf_counter())
    tool.run(user, ["rm", container], cwd=cwd)
    marks.append(time.perf_counter())
    return marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2]


def measure_cycles(
    tools: dict[str, Tool], user: User, cwd: Path, reps: int, warmup: int
) -> dict[str, Cycles]:
    cycles = {name: Cycles() for name in tools}
    for round_number in range(warmup + reps):
        order = list(tools) if round_number % 2 == 0 else list(reversed(tools))
        for name in order:
            times = one_cycle(tools[name], user, cwd)
            if round_number >= warmup:
                cycles[name].add(*times)
    return cycles


def report_cycles(cycles: dict[str, Cycles], network: str) -> bool | None:
    print("\n== cycle: run -d IMAGE sleep 1000 + stop -t 0 + rm (wall clock, ms) ==")
    print(f"   both with --network {network}; median / p90 per step")
    print(f"   {'':8s}" + "".join(f"{step:>22s}" for step in STEPS))
    for name, cycle in cycles.items():
        cells = "".join(
            f"{statistics.median(v) * 1000:10.1f} /{percentile(v, 0.9) * 1000:8.1f} p90"
            for v in cycle.steps.values()
        )
        print(f"   {name:8s}{cells}")
    if "podman" not in cycles:
        return None
    ours, theirs = cycles["rl"].steps, cycles["podman"].steps
    for step in STEPS:
        ratio = statistics.median(ours[step]) / statistics.median(theirs[step])
        print(f"   ratio rl / podman, {step:10s} median {ratio:5.2f}x")
    met = statistics.median(ours["cycle"]) <= statistics.median(theirs["cycle"])
    p90 = percentile(ours["cycle"], 0.9) / percentile(theirs["cycle"], 0.9)
    print(f"   p90 ratio (cycle) {p90:.2f}x")
    print(f"   target cycle median <= podman's: {'MET' if met else 'MISSED'}")
    return met


# --- memory -------------------------------------------------------------------------------


def read_proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    return read_proc(pid, "cmdline").replace("\0", " ").strip()


def process_table() -> dict[int, int]:
    """pid -> ppid of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_proc(int(entry), "stat")
        if stat:
            table[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    return table


def subtree(root: int, table: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


@dataclass
class Pss:
    """kB from smaps_rollup."""

    pss: int = 0
    anon: int = 0
    file: int = 0
    private: int = 0
    rss: int = 0

    @classmethod
    def of(cls, pid: int) -> Pss:
        fields: dict[str, int] = {}
        for line in read_proc(pid, "smaps_rollup").splitlines():
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0])
        return cls(
            fields.get("Pss", 0),
            fields.get("Pss_Anon", 0),
            fields.get("Pss_File", 0),
            fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
            fields.get("Rss", 0),
        )

    def __add__(self, other: Pss) -> Pss:
        return Pss(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, int, int, int, int]:
        return self.pss, self.anon, self.file, self.private, self.rss


def role(tool: str, pid: int, table: dict[int, int], runner: int) -> str:
    if pid == runner:
        return "conmon" if tool == "podman" else "monitor"
    if tool == "rl" and table.get(pid) == runner and "rootless.monitor" in cmdline(pid):
        return "keeper"
    if tool == "rl" and "rootless.storage.fuse" in cmdline(pid):
        return "fuse helper"
    if tool == "rl" and " -I -c " in cmdline(pid):
        return "socket maker"  # netns.ports: short-lived, fills the -p dialer's pool
    return os.path.basename(cmdline(pid).split(" ")[0]) or f"pid {pid}"


def container_processes(tool: Tool, user: User, cwd: Path, container: str) -> list[tuple[str, int]]:
    """(role, pid) of the processes that exist for one container, without the container's:
    the runner's process tree, and for podman the network helpers (slirp4netns, rootlessport)
    that name the container's network namespace."""
    fields = (
        "{{.State.Pid}} {{.NetworkSettings.SandboxKey}}"
        if tool.name == "podman"
        else ("{{.State.Pid}}")
    )
    pid_text, _, sandbox = tool.run(
        user, ["inspect", "--format", fields, container], cwd=cwd
    ).partition(" ")
    inner = int(pid_text)
    table = process_table()
    mark = f"-c {container}" if tool.name == "podman" else container
    runners = [
        pid
        for pid in table
        if tool.runner_mark in cmdline(pid)
        and mark in cmdline(pid)
        and tool.runner_mark not in cmdline(table[pid])  # the topmost: not the keeper
    ]
    if tool.name == "rl" and not runners and tool.runner_mark in cmdline(table.get(inner, 0)):
        # A monitor started before its container existed (run -d) names it in its cmdline
        # only once it exec'd the watcher; the container's pid 1 is its child in any case.
        runners = [table[inner]]
    if len(runners) != 1:
        raise BenchError(f"{tool.name} {container}: expected one runner process, got {runners}")
    runner = runners[0]
    own = subtree(runner, table)
    sandbox = sandbox.strip()
    if sandbox and sandbox != "<no value>":
        for pid in table:
            if sandbox in cmdline(pid):
                own |= subtree(pid, table)
    if tool.name == "podman":
        # rootlessport (-p) names no container: it is the one whose child lives in the
        # container's network namespace.
        netns = netns_of(inner)
        for pid in table:
            if "rootlessport" in cmdline(pid) and netns in {
                netns_of(p) for p in subtree(pid, table)
            }:
                own |= subtree(pid, table)
    own -= subtree(inner, table)
    return [(role(tool.name, pid, table, runner), pid) for pid in sorted(own)]


def netns_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return f"gone {pid}"


def podman_pause(user: User) -> int | None:
    path = user.runtime_dir / "libpod" / "tmp" / "pause.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if read_proc(pid, "stat") else None


def kib(value: float) -> str:
    return f"{value / 1024:6.2f} MB"


def measure_memory(
    tool: Tool, user: User, cwd: Path, count: int
) -> tuple[Pss, dict[str, Pss], list[str]]:
    """Start `count` containers, wait, sum the PSS of their processes; remove them.
    Returns the total, the total per role, and the containers' ids (removed)."""
    containers: list[str] = []
    try:
        for _ in range(count):
            containers.append(tool.start(user, cwd))
        time.sleep(SETTLE_SECONDS)
        by_container = [container_processes(tool, user, cwd, c) for c in containers]
        total, roles = Pss(), dict[str, Pss]()
        for processes in by_container:  # read every process with all of them running
            for name, pid in processes:
                cost = Pss.of(pid)
                total += cost
                roles[name] = roles.get(name, Pss()) + cost
        return total, roles, containers
    finally:
        for start in range(0, len(containers), 10):
            tool.run(user, ["rm", "-f", "-t", "0", *containers[start : start + 10]], cwd=cwd)


def report_memory(name: str, count: int, total: Pss, roles: dict[str, Pss]) -> None:
    label = "one container" if count == 1 else f"{count} containers"
    print(
        f"   {name:7s} {label}: PSS {kib(total.pss)} total, {kib(total.pss / count)} per container"
    )
    for key, cost in roles.items():
        print(f"      {key:10s} PSS {kib(cost.pss / count)} per container "
              f"(anon {kib(cost.anon / count)}, file {kib(cost.file / count)}; "
              f"private {kib(cost.private / count)}, RSS {kib(cost.rss / count)})")  # fmt: skip


def memory_section(
    tools: dict[str, Tool], user: User, cwd: Path, counts: Sequence[int]
) -> dict[tuple[str, int], float]:
    print("\n== memory of idle detached containers (PSS from /proc/PID/smaps_rollup) ==")
    print("   counted: the runner's processes (rl: the monitor; podman: conmon, and")
    print("   slirp4netns/rootlessport when there is a network);")
    print("   not counted: the container's own process (`sleep`, ~the same for both),")
    print("   and podman's shared rootless pause process (reported below)")
    per_container: dict[tuple[str, int], float] = {}
    for count in counts:
        for name, tool in tools.items():
            total, roles, _ = measure_memory(tool, user, cwd, count)
            report_memory(name, count, total, roles)
            per_container[(name, count)] = total.pss / count
            if name == "podman":
                pause = podman_pause(user)
                if pause is not None:
                    cost = Pss.of(pause)
                    print(f"      shared: podman pause process (pid {pause}) PSS {kib(cost.pss)}"
                          f" (RSS {kib(cost.rss)}), once per user, not per container")  # fmt: skip
    for count in counts:
        ours = per_container[("rl", count)]
        line = f"   {count:3d} container(s): rl {kib(ours)} per container"
        if ("podman", count) in per_container:
            theirs = per_container[("podman", count)]
            line += f", podman {kib(theirs)}: ratio {ours / theirs:.2f}x"
        verdict = "MET" if ours <= TARGET_PSS_KIB else "MISSED"
        print(f"{line}; target <= 10 MB per container: {verdict}")
    return per_container


# --- set-up -------------------------------------------------------------------------------


def load_image(tools: dict[str, Tool], user: User, work: Path) -> None:
    archive = write_docker_archive(work / "image.tar", [build_image(minimal_spec(IMAGE))])
    os.chmod(archive, 0o644)
    for tool in tools.values():
        tool.run(user, ["load", "-i", str(archive)], cwd=work, timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", type=int, default=20, help="timed cycles per tool (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed cycles first (default 2)")
    parser.add_argument("--containers", type=int, default=50, help="the many-containers count")
    parser.add_argument(
        "--podman-driver", default="overlay", help="podman's storage driver (default overlay)"
    )
    parser.add_argument(
        "--network",
        default="none",
        help="--network for both tools (default none; slirp4netns: user-mode networking; "
        "default: no flag)",
    )
    parser.add_argument(
        "--publish",
        default="",
        help="-p for both tools, e.g. 80 (a free host port each; podman: rootlessport)",
    )
    parser.add_argument(
        "--rl-storage-driver", default="", help="rl's --storage-driver (e.g. fuse; default: rl's)"
    )
    parser.add_argument("--no-podman", action="store_true", help="measure rl alone")
    parser.add_argument("--skip-cycle", action="store_true", help="memory only")
    parser.add_argument("--skip-memory", action="store_true", help="cycle time only")
    args = parser.parse_args()

    user = bench_user()
    # Bytecode caches must be current, or every rl run recompiles (the user cannot write them).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "rootless"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    with fresh_dir(user, "rl-bench-lifecycle-") as work:
        tools = make_tools(
            work, args.podman_driver, args.network, args.publish, args.rl_storage_driver
        )
        if args.no_podman or not shutil.which("podman"):
            del tools["podman"]
        load_image(tools, user, work)
        driver = tools["rl"].run(user, ["info", "--format", "{{.Store.GraphDriverName}}"], cwd=work)
        print(f"as user {user.name}; rl = {rl_binary()} (storage driver {driver}); image {IMAGE}")
        if "podman" in tools:
            version = tools["podman"].run(user, ["--version"], cwd=work)
            flags = " ".join(tools["podman"].run_flags)
            print(f"{version}: {' '.join(tools['podman'].base[1:])} run -d {flags}")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average {load} on {os.cpu_count()} CPUs (timings need an idle machine)")
        results: list[tuple[str, bool | None]] = []
        try:
            if not args.skip_cycle:
                cycles = measure_cycles(tools, user, work, args.n, args.warmup)
                met = report_cycles(cycles, args.network)
                results.append(("cycle time <= podman's", met))
            if not args.skip_memory:
                counts = [1, args.containers] if args.containers > 1 else [1]
                memory = memory_section(tools, user, work, counts)
                for count in counts:
                    met = memory[("rl", count)] <= TARGET_PSS_KIB
                    results.append((f"PSS <= 10 MB per container ({count} running)", met))
        finally:
            for tool in tools.values():
                leftover = tool.run(user, ["ps", "-a", "-q"], cwd=work).split()
                if leftover:
                    user.run([*tool.base, "rm", "-f", "-t", "0", *leftover], cwd=work)
            if "podman" in tools:  # not `system reset`: that also clears the user's shared state
                user.run([*tools["podman"].base, "rmi", "-f", IMAGE], cwd=work)
        print("\n== targets ==")
        for what, met in results:
            print(f"   {what:45s} {'n/a' if met is None else 'MET' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as err:
        print(f"benchmark failed: {err}")
        raise SystemExit(1) from None
