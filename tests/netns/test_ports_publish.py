"""Port publishing for real, as the unprivileged test user.

ports_script.py runs as that user: a process in a user+net namespace (`unshare -Urn`) serves TCP
and UDP; `netns.ports.PortPublisher` publishes its ports on the host's 127.0.0.1 (short-lived
makers create sockets in the namespace, the publisher connects them, the bytes are spliced) and
clients on the host check the data (SHA-256), concurrency, UDP, the errors, and a namespace that
went away. Like test_tap_driver.py, the script runs from a private copy
together with a copy of this tree's `netns`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Result, User, installed_tool
from tests.netns.private_copy import readable_netns_copy

SCRIPT = Path(__file__).with_name("ports_script.py")

pytestmark = pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1)")


@pytest.fixture(scope="module")
def script_dir() -> Iterator[Path]:
    path = readable_netns_copy("rl-ports-", [SCRIPT])
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_checks(user: User, script_dir: Path, checks: list[str]) -> Result:
    argv = [installed_tool("python"), str(script_dir / SCRIPT.name), "host"]
    result = user.run([*argv, json.dumps({"checks": checks})], timeout=600)
    for name in checks:
        assert f"{name}: ok" in result.stdout, result
    assert result.returncode == 0, result
    return result


def test_published_tcp_and_udp(user: User, script_dir: Path) -> None:
    checks = ["tcp", "source", "udp", "refused", "loopback_only", "close"]
    print(run_checks(user, script_dir, checks).stdout)


def test_200_concurrent_connections(user: User, script_dir: Path) -> None:
    run_checks(user, script_dir, ["many", "close"])


def test_publish_errors(user: User, script_dir: Path) -> None:
    result = run_checks(user, script_dir, ["low_port", "busy", "bad_pid", "gone"])
    assert "ip_unprivileged_port_start" in result.stdout
