"""How much of a cold lookup is pyfuse3's and how much is fuseoverlay's: 10k cold stats through
three FUSE servers, mounted the same way, in one run.

    /opt/rl/venv/bin/python bench/fs_floor.py [--reps 7] [--one-cpu]

- `floor`: a pyfuse3 filesystem (this file, `--serve`) that answers every lookup from a dict,
  with no system call, served by fuseoverlay's own loop (fuseoverlay.session): what pyfuse3,
  trio and the kernel's round trip cost per request, and nothing else.
- `fuseoverlay` and `fuse-overlayfs` over two layouts: the 10k files in the upper dir (what
  bench/fs.py's cold-stat row measures) and in the one lower dir (a file of the image: the
  lookup looks through the upper first).

Each repetition mounts each server afresh with fusermount3, as the test user (no user
namespace, unlike bench/fs.py), and times `os.stat` of the 10k names. `--one-cpu` pins
everything to CPU 0: the caller and the server then take turns on one CPU instead of waking
each other across two, which on this virtual machine costs tens of microseconds a request (see
bench/fs.py) and hides the servers' own costs. Prints medians; the differences between rows
are the per-lookup costs (divide by 10k).
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FILES = 10_000
SERVERS = ("floor", "fuseoverlay upper", "fuseoverlay lower", "fuse-overlayfs upper",
           "fuse-overlayfs lower")  # fmt: skip


def serve_floor(mountpoint: str) -> None:
    """Mount the floor filesystem on `mountpoint` and serve it until unmounted."""
    import pyfuse3

    from fuseoverlay import session

    class Floor(pyfuse3.Operations):
        def __init__(self) -> None:
            super().__init__()
            self.inodes = {f"f{i}".encode(): i + pyfuse3.ROOT_INODE + 1 for i in range(FILES)}
            self.now = time.time_ns()
            self.uid, self.gid = os.getuid(), os.getgid()

        def _attrs(self, ino: int) -> pyfuse3.EntryAttributes:
            attr = pyfuse3.EntryAttributes()
            attr.st_ino = ino
            attr.entry_timeout = attr.attr_timeout = 3600
            root = ino == pyfuse3.ROOT_INODE
            attr.st_mode = (stat.S_IFDIR | 0o755) if root else (stat.S_IFREG | 0o644)
            attr.st_nlink = 1
            attr.st_uid, attr.st_gid = self.uid, self.gid
            attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.now
            return attr

        async def lookup(
            self, parent: int, name: bytes, ctx: pyfuse3.RequestContext
        ) -> pyfuse3.EntryAttributes:
            ino = self.inodes.get(name)
            if parent != pyfuse3.ROOT_INODE or ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attrs(ino)

        async def getattr(self, ino: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
            return self._attrs(ino)

    pyfuse3.init(Floor(), mountpoint, {"fsname=floor", "default_permissions"})
    os.write(1, b"mounted\n")
    try:
        session.serve()
    finally:
        pyfuse3.close(unmount=False)


def _fuseoverlay() -> str:
    return str(Path(sys.executable).parent / "fuseoverlay")


def _cold_stats(server: str, base: Path, rep: int) -> float:
    """Mount `server` afresh, stat the 10k names once, unmount; seconds for the stats."""
    mountpoint = base / f"mnt-{rep}-{server.replace(' ', '-')}"
    mountpoint.mkdir()
    if server == "floor":
        argv = [sys.executable, __file__, "--serve", str(mountpoint)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()  # "mounted"
    else:
        program, layout = server.split()
        upper, work = base / f"upper-{rep}-{program}-{layout}", base / f"work-{rep}-{program}"
        upper.mkdir()
        work.mkdir(exist_ok=True)
        if layout == "upper":
            for i in range(FILES):
                (upper / f"f{i}").touch()
        lower = base / ("lower" if layout == "lower" else "lower-empty")
        binary = _fuseoverlay() if program == "fuseoverlay" else "fuse-overlayfs"
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        proc = subprocess.Popen([binary, "-f", "-o", options, str(mountpoint)])
        deadline = time.monotonic() + 10
        while not os.path.ismount(mountpoint) and time.monotonic() < deadline:
            time.sleep(0.005)
    names = [os.path.join(mountpoint, f"f{i}") for i in range(FILES)]
    try:
        start = time.perf_counter()
        for name in names:
            os.stat(name)
        return time.perf_counter() - start
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        proc.wait(timeout=30)


def measure(reps: int) -> dict[str, list[float]]:
    """The measurements (as whoever runs this: the test user)."""
    times: dict[str, list[float]] = {server: [] for server in SERVERS}
    with tempfile.TemporaryDirectory(prefix="rl-fs-floor-", dir="/tmp") as scratch:
        base = Path(scratch)
        (base / "lower").mkdir()
        (base / "lower-empty").mkdir()
        for i in range(FILES):
            (base / "lower" / f"f{i}").touch()
        for rep in range(reps):
            order = SERVERS if rep % 2 == 0 else tuple(reversed(SERVERS))
            for server in order:
                times[server].append(_cold_stats(server, base, rep))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--one-cpu", action="store_true", help="pin everything to CPU 0")
    parser.add_argument("--serve", metavar="MOUNTPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_floor(args.serve)
        return 0
    if args.measure:
        for server, seconds in measure(args.reps).items():
            print(f"{server}\t{' '.join(f'{s:.4f}' for s in seconds)}")
        return 0
    from bench.common import bench_user, installed_tool

    user = bench_user()
    python = installed_tool("python")
    argv = [python, str(Path(__file__).resolve()), "--measure", "--reps", str(args.reps)]
    if args.one_cpu:
        argv = ["taskset", "-c", "0", *argv]
    result = user.run(argv, timeout=1800)
    if result.returncode != 0:
        print(f"the measurement failed:\n{result}")
        return 1
    rows = dict(line.split("\t") for line in result.stdout.splitlines() if "\t" in line)
    medians = {k: statistics.median(float(s) for s in v.split()) for k, v in rows.items()}
    print(f"10k cold stats, median of {args.reps}{' (one CPU)' if args.one_cpu else ''}:")
    floor = medians["floor"]
    for server, median in medians.items():
        extra = (median - floor) / FILES * 1e6
        print(f"  {server:<22} {median:6.3f} s   {extra:+6.1f} us a lookup over the floor")
    load = os.getloadavg()
    print(f"load average (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
