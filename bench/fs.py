"""fuseoverlay vs fuse-overlayfs vs kernel overlayfs: 1 GiB write + fsync, 10k creates, 10k stats.

    /opt/rl/venv/bin/python bench/fs.py [--reps 3] [--only kernel,fuseoverlay,fuse-overlayfs]

Run as root (or as the test user); the measurements run as the unprivileged test user, as root of
a user namespace with its own mount namespace, each filesystem mounted the same way with one
small lower layer on the same disk. Every repetition gets a fresh mount and upper dir. The 10k
stats run twice on the same names; the second (warm) pass is reported, as in MACHINE-NOTES.md.
Needs `fuse-overlayfs` (`apt-get install fuse-overlayfs`) for that column.
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

from bench.common import REPO, Samples, bench_user, fresh_dir, ratio_line

FUSEOVERLAY = "/opt/rl/venv/bin/fuseoverlay"
IMPLEMENTATIONS = ("kernel", "fuseoverlay", "fuse-overlayfs")
GIB = 1 << 30
FILES = 10_000


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


@contextmanager
def _mount(kind: str, base: Path) -> Iterator[Path]:
    from rootless import syscalls

    lower, upper, work, merged = (base / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "etc").mkdir()
    (lower / "etc" / "hostname").write_text("bench\n")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    helper: subprocess.Popen[bytes] | None = None
    if kind == "kernel":
        syscalls.mount("overlay", merged, "overlay", 0, options + ",userxattr")
    else:
        program = FUSEOVERLAY if kind == "fuseoverlay" else "fuse-overlayfs"
        helper = subprocess.Popen([program, "-f", "-o", options, str(merged)])
        deadline = time.monotonic() + 15
        while not _mounted(merged):
            if helper.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{program} did not mount")
            time.sleep(0.01)
    try:
        yield merged
    finally:
        syscalls.umount(merged, syscalls.MNT_DETACH)
        if helper is not None:
            try:
                helper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        shutil.rmtree(base)


def _write_fsync(merged: Path) -> float:
    chunk = b"\xa5" * (1 << 20)
    start = time.perf_counter()
    fd = os.open(merged / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(GIB // len(chunk)):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def _creates(merged: Path) -> float:
    d = merged / "many"
    d.mkdir()
    start = time.perf_counter()
    for i in range(FILES):
        os.close(os.open(d / f"file-{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return time.perf_counter() - start


def _stats(merged: Path) -> float:
    d = merged / "many"
    names = [d / f"file-{i}" for i in range(FILES)]
    for name in names:  # cold pass
        os.stat(name)
    start = time.perf_counter()
    for name in names:
        os.stat(name)
    return time.perf_counter() - start


WORKLOADS: dict[str, Callable[[Path], float]] = {
    "1 GiB write+fsync": _write_fsync,
    "10k creates": _creates,
    "10k warm stats": _stats,
}


def measure(base: str, kinds: list[str], reps: int) -> dict[str, dict[str, list[float]]]:
    """Runs as root of a user namespace with its own mount namespace."""
    from rootless import syscalls

    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    results: dict[str, dict[str, list[float]]] = {w: {k: [] for k in kinds} for w in WORKLOADS}
    for rep in range(reps):
        for kind in kinds if rep % 2 == 0 else reversed(kinds):
            where = Path(base) / f"{kind}-{rep}"
            where.mkdir()
            with _mount(kind, where) as merged:
                for name, workload in WORKLOADS.items():
                    results[name][kind].append(workload(merged))
            subprocess.run(["sync"], check=False)
    return results


def worker(base: str, kinds: list[str], reps: int) -> None:
    from rootless import syscalls
    from rootless.userns import run_in_userns

    results = run_in_userns(partial(measure, base, kinds, reps), unshare_flags=syscalls.CLONE_NEWNS)
    print(json.dumps(results))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--worker", metavar="BASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    if args.worker:
        worker(args.worker, kinds, args.reps)
        return 0
    if "fuse-overlayfs" in kinds and not shutil.which("fuse-overlayfs"):
        print(
            "fuse-overlayfs is not installed (apt-get install fuse-overlayfs): skipped",
            file=sys.stderr,
        )
        kinds.remove("fuse-overlayfs")
    user = bench_user()
    with fresh_dir(user, "rl-bench-fs-") as base:
        argv = ["/opt/rl/venv/bin/python", str(REPO / "bench" / "fs.py"), "--worker", str(base)]
        result = user.run(
            [*argv, "--reps", str(args.reps), "--only", ",".join(kinds)], cwd=REPO, timeout=3600
        )
        if result.returncode != 0:
            print(result, file=sys.stderr)
            return 1
        results = json.loads(result.stdout)
    for workload, by_kind in results.items():
        print(f"== {workload} (n={args.reps})")
        samples = {kind: Samples(kind, seconds) for kind, seconds in by_kind.items()}
        for s in samples.values():
            print("  " + s.row())
        ours = samples.get("fuseoverlay")
        for other in ("fuse-overlayfs", "kernel"):
            if ours is not None and other in samples:
                print("  " + ratio_line(ours, samples[other]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
