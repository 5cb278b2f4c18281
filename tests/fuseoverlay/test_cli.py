"""The `fuseoverlay` program as the unprivileged user: background mount, unmount, bad input."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _remove as remove_tree
from tests.harness import User, installed_tool

FUSEOVERLAY = installed_tool("fuseoverlay")
pytestmark = pytest.mark.e2e


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def _helpers(mountpoint: str) -> list[int]:
    """Processes running fuseoverlay for this mount point."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"/fuseoverlay") for a in argv) and mountpoint.encode() in argv:
            found.append(int(entry))
    return found


@pytest.fixture
def dirs(user: User) -> Iterator[Path]:
    base = user.make_dir("rl-fuseoverlay-cli-")
    for name in ("lower", "upper", "work", "merged"):
        user.run(["mkdir", str(base / name)])
    user.run(["sh", "-c", f"echo hello > {base}/lower/greeting"])
    try:
        yield base
    finally:
        if _mounted(base / "merged"):
            user.run(["fusermount3", "-u", "-z", str(base / "merged")], timeout=30)
        remove_tree(base)


def _options(base: Path) -> str:
    return f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work,unknown=1,noacl"


def test_mounts_in_the_background_and_unmounts(user: User, dirs: Path) -> None:
    merged = dirs / "merged"
    result = user.run([FUSEOVERLAY, "-o", _options(dirs), str(merged)], timeout=60)
    assert result.returncode == 0, str(result)
    assert _mounted(merged)  # ready when the command returns
    seen = user.run(["sh", "-c", f"cat {merged}/greeting && echo more >> {merged}/greeting"])
    assert seen.stdout == "hello\n", str(seen)
    assert (dirs / "upper" / "greeting").read_text() == "hello\nmore\n"
    assert (dirs / "lower" / "greeting").read_text() == "hello\n"
    (pid,) = _helpers(str(merged))
    assert user.run(["fusermount3", "-u", str(merged)]).returncode == 0
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the helper exits once unmounted"


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "upperdir=/u,workdir=/w", "/m"], "lowerdir= is required"),
        (
            ["-o", "lowerdir=/nonexistent,upperdir=/tmp,workdir=/tmp", "/tmp"],
            "lowerdir /nonexistent",
        ),
        (["-o", "lowerdir=/tmp,upperdir=/tmp,workdir=/tmp"], "MOUNTPOINT"),
    ],
)
def test_bad_input_is_one_clear_line(user: User, args: list[str], message: str) -> None:
    result = user.run([FUSEOVERLAY, *args], timeout=60)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
