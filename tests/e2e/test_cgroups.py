"""Resource limits on a host where they cannot be enforced (cgroup v1 or hybrid, like the CI
machines, or cgroup v2 without the controllers delegated): every limit flag fails with exit 125
and one line naming the controller and the fix, and nothing is created; runs without limits
work. The enforcing side is tested in a real cgroup v2 guest (tests/vm/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.cgroups import fs
from tests.conftest import Rl, loaded_store
from tests.harness import User

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        fs.probe().layout.mode == "v2" and bool(fs.probe().delegated),
        reason="this host delegates cgroup v2 controllers: the tests of refusals do not apply",
    ),
]

IMAGE = "localhost/rl-test/busybox:latest"


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-cgroups-") as rl:
        yield rl


FLAGS = [
    (("--memory", "64m"), "memory"),
    (("-m", "1g"), "memory"),
    (("--memory-reservation", "32m"), "memory"),
    (("--memory", "64m", "--memory-swap", "-1"), "memory"),
    (("--cpus", "1.5"), "cpu"),
    (("--cpu-shares", "512"), "cpu"),
    (("--cpu-quota", "50000"), "cpu"),
    (("--cpu-period", "50000"), "cpu"),
    (("--cpuset-cpus", "0"), "cpuset"),
    (("--cpuset-mems", "0"), "cpuset"),
    (("--pids-limit", "100"), "pids"),
    (("--blkio-weight", "100"), "io"),
    (("--device-read-bps", "/dev/vda:1mb"), "io"),
]


@pytest.mark.parametrize(("flags", "controller"), FLAGS)
def test_limit_flag_fails_with_the_reason(rlm: Rl, flags: tuple[str, ...], controller: str) -> None:
    result = rlm("run", "--rm", *flags, IMAGE, "true")
    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result
    message = lines[0]
    assert message.startswith(f"Error: {flags[0]} needs the ") or message.startswith("Error: --")
    assert f" {controller} controller" in message
    assert "systemd.unified_cgroup_hierarchy=1" in message or "Delegate=" in message
    assert result.stdout == ""


def test_create_with_limits_creates_nothing(rlm: Rl) -> None:
    before = rlm.ok("ps", "-a", "-q").stdout
    result = rlm("create", "--name", "limited", "--pids-limit", "10", IMAGE, "true")
    assert result.returncode == 125, result
    assert "pids controller" in result.stderr
    assert rlm.ok("ps", "-a", "-q").stdout == before


def test_run_without_limits_works(rlm: Rl) -> None:
    result = rlm.ok("run", "--rm", IMAGE, "echo", "unlimited")
    assert result.stdout == "unlimited\n"


def test_cgroups_disabled_and_cgroupns_host(rlm: Rl) -> None:
    import json

    assert rlm.ok("run", "--rm", "--cgroups=disabled", IMAGE, "true").returncode == 0

    def namespaces(*flags: str) -> list[str]:
        spec = json.loads(rlm.ok("run", "--print-spec", *flags, IMAGE, "true").stdout)
        return [n["type"] for n in spec["linux"]["namespaces"]]

    assert "cgroup" in namespaces()
    assert "cgroup" in namespaces("--cgroupns=private")
    assert "cgroup" not in namespaces("--cgroupns=host")
    own = rlm.user.run(["cat", "/proc/self/cgroup"]).stdout
    host_view = rlm.ok("run", "--rm", "--cgroupns=host", IMAGE, "cat", "/proc/self/cgroup").stdout
    private = rlm.ok("run", "--rm", IMAGE, "cat", "/proc/self/cgroup").stdout
    # In a cgroup namespace of its own every path is the root; with the host's the container
    # sees the paths rl had (which here may be the root too).
    assert all(line.endswith(":/") for line in private.splitlines()), private
    assert sorted(host_view.splitlines()) == sorted(own.splitlines())


def test_bad_modes_and_values(rlm: Rl) -> None:
    for flags, text in (
        (("--cgroups", "sometimes"), "invalid cgroup mode"),
        (("--cgroupns", "shared"), "--cgroupns"),
        (("--cgroups=disabled", "--memory", "64m"), "--cgroups=disabled"),
        (("--memory", "1m"), "minimum memory limit allowed is 6MB"),
        (("--cpus", "lots"), "--cpus"),
    ):
        result = rlm("run", "--rm", *flags, IMAGE, "true")
        assert result.returncode == 125, result
        assert text in result.stderr, result


@pytest.mark.parametrize(
    "argv",
    [
        ("stats", "--no-stream"),
        ("pause", "-a"),
        ("unpause", "-a"),
        ("update", "--memory", "64m", "nosuch"),
    ],
)
def test_cgroup_commands_explain(rlm: Rl, argv: tuple[str, ...]) -> None:
    result = rlm(*argv)
    assert result.returncode == 125, result
    assert "needs cgroup v2" in result.stderr and "\n" not in result.stderr.strip(), result


def test_info_and_doctor_agree(rlm: Rl) -> None:
    info = rlm.ok("info").stdout
    assert "  cgroupVersion: v1\n" in info and "  cgroupManager: cgroupfs\n" in info
    assert "  cgroupControllers: []\n" in info
    doctor = rlm("doctor")
    assert "cgroups" in doctor.stdout and "fail (exit 125)" in doctor.stdout, doctor
