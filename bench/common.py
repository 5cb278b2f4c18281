"""What every benchmark shares: the unprivileged user, fresh directories, timing, the report.

Benchmarks run by hand (`/opt/rl/venv/bin/python bench/NAME.py`), usually as root: like the
end-to-end tests, they run rl and its competitor as the unprivileged test user (tests/harness.py),
in the same run, and print medians and ratios. They assert nothing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"  # caches and outputs; ignored by git
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness import User, ensure_user, installed_tool, rl_binary  # noqa: E402

__all__ = [
    "REPO",
    "RESULTS",
    "Samples",
    "User",
    "bench_user",
    "fresh_dir",
    "installed_tool",
    "rl_binary",
    "timed",
]


class BenchError(Exception):
    """A measured command failed: the benchmark stops and shows why."""


def bench_user() -> User:
    return ensure_user()


def timed(user: User, argv: Sequence[str], *, timeout: float = 600) -> float:
    """Seconds `argv` takes as `user`, start to exit (process start-up included)."""
    start = time.perf_counter()
    result = user.run(argv, timeout=timeout)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed:\n{result}")
    return elapsed


@contextmanager
def fresh_dir(user: User, prefix: str) -> Iterator[Path]:
    """An empty directory the user owns, removed afterwards (with its subordinate-id files)."""
    path = user.make_dir(prefix)
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    if os.getuid() == 0:
        shutil.rmtree(path, ignore_errors=True)
        return
    # Stores hold files owned by subordinate ids: only the user's namespace can remove them.
    from rootless.userns import run_in_userns

    run_in_userns(shutil.rmtree, str(path), True)


@dataclass
class Samples:
    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def row(self) -> str:
        low, high = min(self.seconds), max(self.seconds)
        return (
            f"{self.name:<14} median {self.median:7.3f} s   "
            f"min {low:7.3f} s   max {high:7.3f} s   (n={len(self.seconds)})"
        )


def ratio_line(ours: Samples, theirs: Samples) -> str:
    ratio = ours.median / theirs.median
    verdict = f"{1 / ratio:.2f}x faster" if ratio < 1 else f"{ratio:.2f}x slower"
    return f"ratio {ours.name} / {theirs.name}: {ratio:.2f} ({ours.name} is {verdict})"
