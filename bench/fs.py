"""fuseoverlay vs fuse-overlayfs vs kernel overlayfs: the rows of issue 4, in one run.

    /opt/rl/venv/bin/python bench/fs.py [--reps 3] [--only kernel,fuseoverlay,fuse-overlayfs]
                                        [--rows write,creates,...] [--fuseoverlay PROGRAM]

Run as root (or as the test user); the measurements run as the unprivileged test user, as root of
a user namespace with its own mount namespace, each filesystem mounted the same way with one
small lower layer on the same disk. Every repetition gets a fresh upper dir and two mounts:

- first mount (empty upper): `write` 1 GiB + fsync, `creates` 10k empty files;
- remount (the FUSE helper and every kernel cache of the mount are new): `cold stat` and
  `warm stat` of the 10k, `cold read` of the 1 GiB (its pages also dropped from the upper
  file's page cache with posix_fadvise, so the data comes from the disk) and `warm read` (again,
  from the page cache), `rm -rf` of the 10k, `tar x` of a Debian rootfs (mmdebstrap's, the one
  bench/load.py caches in bench/results/; files from /usr without mmdebstrap).

Needs `fuse-overlayfs` (`apt-get install fuse-overlayfs`) for that column. Other work on the
machine (a test suite) moves every number: run it on an idle machine. The helpers' CPU time per
row (user + system, from /proc) is printed too: it moves far less with the machine's load than
the wall-clock times do, and it is where the two FUSE helpers differ (the requests are the same).

The disk rows that create files (creates, tar x) also depend on where ext4 puts the new inodes:
on a file system without a journal (this machine's) every allocation first skips the group's
recently deleted inodes (a minute, five while dirty), so a row run soon after a large delete in
the same block group (the previous repetition's, or another program's) can take several times
as long. The repetitions alternate the order of the implementations; compare medians.

The rows made of small requests (cold stat, tar x) also depend on where the scheduler puts the
caller and the FUSE helper. On one CPU a request costs two plain context switches (10k cold
stats: ~0.15-0.30 s fuse-overlayfs, ~0.20-0.34 s fuseoverlay, whose Python costs a few
microseconds more per request); on two CPUs each wakes the other with an interrupt, which on this
virtual machine costs tens of microseconds (fuse-overlayfs 0.6-0.95 s; fuseoverlay 0.39-0.51 s,
as it polls for the next request, see fuseoverlay/session.py). Which one happens varies with the
machine's load (a loaded machine tends to put both on one CPU), so the cold-stat ratio can move
from 0.5 to 1.5 between runs: look at the medians of each column too. `taskset -c 0` on this
script (inherited by everything it starts) gives the one-CPU case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, RESULTS, Samples, bench_user, fresh_dir, ratio_line

FUSEOVERLAY = "/opt/rl/venv/bin/fuseoverlay"
IMPLEMENTATIONS = ("kernel", "fuseoverlay", "fuse-overlayfs")
GIB = 1 << 30
CHUNK = 1 << 20
FILES = 10_000
ROOTFS_TAR = RESULTS / "debian-rootfs.tar"


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def _layers(base: Path) -> tuple[Path, str]:
    lower, upper, work, merged = (base / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "etc").mkdir()
    (lower / "etc" / "hostname").write_text("bench\n")
    return merged, f"lowerdir={lower},upperdir={upper},workdir={work}"


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a running process (0 without one: the kernel's overlay)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@contextmanager
def _mount(
    kind: str, merged: Path, options: str, fuseoverlay: str = FUSEOVERLAY
) -> Iterator[int | None]:
    """Mounted at `merged`; yields the FUSE helper's pid (None for the kernel's overlay)."""
    from rootless import syscalls

    helper: subprocess.Popen[bytes] | None = None
    if kind == "kernel":
        syscalls.mount("overlay", merged, "overlay", 0, options + ",userxattr")
    else:
        program = fuseoverlay if kind == "fuseoverlay" else "fuse-overlayfs"
        helper = subprocess.Popen([program, "-f", "-o", options, str(merged)])
        deadline = time.monotonic() + 15
        while not _mounted(merged):
            if helper.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{program} did not mount")
            time.sleep(0.01)
    try:
        yield helper.pid if helper is not None else None
    finally:
        syscalls.umount(merged, syscalls.MNT_DETACH)
        if helper is not None:
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- the workloads: each gets the merged dir and returns seconds -----------------------------


def _write_fsync(merged: Path) -> float:
    chunk = b"\xa5" * CHUNK

    def write() -> None:
        fd = os.open(merged / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(GIB // CHUNK):
                os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)

    return _timed(write)


def _names(merged: Path) -> list[Path]:
    return [merged / "many" / f"file-{i}" for i in range(FILES)]


def _creates(merged: Path) -> float:
    (merged / "many").mkdir()
    names = _names(merged)

    def create() -> None:
        for name in names:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

    return _timed(create)


def _stats(merged: Path) -> float:
    names = _names(merged)

    def stat_all() -> None:
        for name in names:
            os.stat(name)

    return _timed(stat_all)


def _drop_pages(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read(merged: Path) -> float:
    def read() -> None:
        fd = os.open(merged / "big", os.O_RDONLY)
        try:
            total = 0
            while data := os.read(fd, CHUNK):
                total += len(data)
            assert total == GIB, total
        finally:
            os.close(fd)

    return _timed(read)


def _cold_read(merged: Path) -> float:
    _drop_pages(merged.parent / "upper" / "big")  # the disk's copy: from the disk again
    _drop_pages(merged / "big")  # and the mount's own cache, where it has one
    return _read(merged)


def _rm_rf(merged: Path) -> float:
    return _timed(lambda: subprocess.run(["rm", "-rf", str(merged / "many")], check=True))


def _tar_x(merged: Path, tarball: Path) -> float:
    target = merged / "rootfs"
    target.mkdir()
    argv = ["tar", "-x", "-f", str(tarball), "-C", str(target), "--exclude=./dev/*"]
    return _timed(lambda: subprocess.run(argv, check=True))


Stage = dict[str, Callable[[Path], float]]


def stages(tarball: Path) -> list[Stage]:
    """The rows of the first mount, then those of the remount, in the order they run."""
    first: Stage = {"write": _write_fsync, "creates": _creates}
    remount: Stage = {"cold-stat": _stats, "warm-stat": _stats, "cold-read": _cold_read}
    remount |= {"warm-read": _read, "rm": _rm_rf, "tar": partial(_tar_x, tarball=tarball)}
    return [first, remount]


ROWS = {
    "write": "1 GiB write+fsync",
    "creates": "10k creates",
    "cold-stat": "10k stats, cold",
    "warm-stat": "10k stats, warm",
    "cold-read": "1 GiB read, cold",
    "warm-read": "1 GiB read, warm",
    "rm": "rm -rf 10k files",
    "tar": "tar x Debian rootfs",
}
# What a row needs run before it (a warm pass comes after the cold one).
NEEDS = {"cold-stat": "creates", "warm-stat": "cold-stat", "rm": "creates"}
NEEDS |= {"cold-read": "write", "warm-read": "cold-read"}


Results = dict[str, dict[str, dict[str, list[float]]]]  # "wall"/"cpu" -> row -> kind -> s


def measure(
    base: str, kinds: list[str], rows: list[str], reps: int, tarball: str, fuseoverlay: str
) -> Results:
    """Runs as root of a user namespace with its own mount namespace."""
    from rootless import syscalls

    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    wanted = set(rows)
    while missing := {NEEDS[r] for r in wanted if r in NEEDS} - wanted:
        wanted |= missing
    results: Results = {m: {r: {k: [] for k in kinds} for r in rows} for m in ("wall", "cpu")}
    for rep in range(reps):
        for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
            where = Path(base) / f"{kind}-{rep}"
            where.mkdir()
            merged, options = _layers(where)
            for stage in stages(Path(tarball)):
                with _mount(kind, merged, options, fuseoverlay) as helper:
                    for row, workload in stage.items():
                        if row in wanted:
                            cpu = _cpu_seconds(helper)
                            seconds = workload(merged)
                            if row in rows:
                                results["wall"][row][kind].append(seconds)
                                results["cpu"][row][kind].append(_cpu_seconds(helper) - cpu)
                subprocess.run(["sync"], check=False)
            shutil.rmtree(where)
    return results


def worker(
    base: str, kinds: list[str], rows: list[str], reps: int, tarball: str, fuseoverlay: str
) -> None:
    from rootless import syscalls
    from rootless.userns import run_in_userns

    results = run_in_userns(
        partial(measure, base, kinds, rows, reps, tarball, fuseoverlay),
        unshare_flags=syscalls.CLONE_NEWNS,
    )
    print(json.dumps(results))


def rootfs_tarball() -> Path:
    """The Debian rootfs bench/load.py builds (and caches), else a tar of files from /usr."""
    from bench.load import debian_rootfs, synthetic_rootfs

    RESULTS.mkdir(parents=True, exist_ok=True)
    if debian_rootfs(ROOTFS_TAR) is not None:
        return ROOTFS_TAR
    synthetic = RESULTS / "usr-files.tar"
    if not synthetic.exists():
        synthetic.write_bytes(synthetic_rootfs())
    return synthetic


def report(results: Results, reps: int) -> None:
    cpu = results["cpu"]
    for row, by_kind in results["wall"].items():
        print(f"== {ROWS[row]} (n={reps})")
        samples = {kind: Samples(kind, seconds) for kind, seconds in by_kind.items()}
        for s in samples.values():
            print("  " + s.row())
        ours = samples.get("fuseoverlay")
        for other in ("fuse-overlayfs", "kernel"):
            if ours is not None and other in samples:
                print("  " + ratio_line(ours, samples[other]))
        helpers = [k for k in by_kind if k != "kernel"]
        if helpers:
            print("  helper CPU (user+sys) median: ", end="")
            print(", ".join(f"{k} {Samples(k, cpu[row][k]).median:.2f} s" for k in helpers))
    table(results["wall"], "median seconds")
    if any(k != "kernel" for k in next(iter(cpu.values()))):
        print()
        table(cpu, "helper CPU seconds")


def table(results: dict[str, dict[str, list[float]]], title: str) -> None:
    kinds = list(next(iter(results.values())))
    print()
    head = f"{title:<22}" + "".join(f"{k:>16}" for k in kinds)
    ratios = [k for k in ("fuse-overlayfs", "kernel") if k in kinds and "fuseoverlay" in kinds]
    print(head + "".join(f"{'fo / ' + k:>22}" for k in ratios))
    for row, by_kind in results.items():
        medians = {k: Samples(k, v).median for k, v in by_kind.items()}
        line = f"{ROWS[row]:<22}" + "".join(f"{medians[k]:>16.3f}" for k in kinds)
        line += "".join(f"{_ratio(medians['fuseoverlay'], medians[k]):>22}" for k in ratios)
        print(line)
    if ratios:
        print("(ratios of times: below 1 fuseoverlay is faster, above 1 slower)")


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "-"  # the kernel's overlay has no helper CPU


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--rows", default=",".join(ROWS), help="of: " + ", ".join(ROWS))
    parser.add_argument(
        "--fuseoverlay",
        default=FUSEOVERLAY,
        metavar="PROGRAM",
        help="the fuseoverlay to run (another build, to compare two); the test user runs it",
    )
    parser.add_argument("--worker", metavar="BASE", help=argparse.SUPPRESS)
    parser.add_argument("--tarball", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}: choose from {', '.join(ROWS)}")
    if args.worker:
        worker(args.worker, kinds, rows, args.reps, args.tarball, args.fuseoverlay)
        return 0
    if "fuse-overlayfs" in kinds and not shutil.which("fuse-overlayfs"):
        print(
            "fuse-overlayfs is not installed (apt-get install fuse-overlayfs): skipped",
            file=sys.stderr,
        )
        kinds.remove("fuse-overlayfs")
    tarball = rootfs_tarball() if "tar" in rows else Path("/nonexistent")
    user = bench_user()
    with fresh_dir(user, "rl-bench-fs-") as base:
        argv = ["/opt/rl/venv/bin/python", str(REPO / "bench" / "fs.py"), "--worker", str(base)]
        argv += ["--reps", str(args.reps), "--only", ",".join(kinds), "--rows", ",".join(rows)]
        argv += ["--tarball", str(tarball), "--fuseoverlay", args.fuseoverlay]
        result = user.run(argv, cwd=REPO, timeout=7200)
        if result.returncode != 0:
            print(result, file=sys.stderr)
            return 1
        results = json.loads(result.stdout)
    report(results, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
