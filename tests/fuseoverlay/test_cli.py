"""The `fuseoverlay` program as the unprivileged user: background mount, unmount, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
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


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    return not os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_unmounts_idle_or_busy(user: User, dirs: Path, signum: int) -> None:
    """The helper sleeps in read(2) on the device between requests: a stop signal still ends it
    at once, and it unmounts."""
    merged = dirs / "merged"
    assert user.run([FUSEOVERLAY, "-o", _options(dirs), str(merged)], timeout=60).returncode == 0
    (pid,) = _helpers(str(merged))
    time.sleep(0.2)  # idle: asleep in read(2)
    os.kill(pid, signum)
    assert _wait_gone(pid), "the helper ends on a stop signal"
    assert not _mounted(merged)
    # and while requests keep coming
    assert user.run([FUSEOVERLAY, "-o", _options(dirs), str(merged)], timeout=60).returncode == 0
    (pid,) = _helpers(str(merged))
    # open+release requests until the file is gone with the mount (then the loop ends itself)
    script = f"while cat {merged}/greeting >/dev/null 2>&1; do :; done"
    busy = subprocess.Popen(user.argv(["sh", "-c", script], user.env()), stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        os.kill(pid, signum)
        assert _wait_gone(pid), "the helper ends on a stop signal"
        assert not _mounted(merged)
        busy.wait(timeout=30)
    finally:
        busy.kill()
        busy.wait()


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
