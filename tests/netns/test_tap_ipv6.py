"""IPv6 on the TAP device: configured when the namespace has it, left out silently when it has not
and the settings say it is optional, an error naming the cause when it is required.

The namespaced cases run for real as the unprivileged test user, each in a fresh `unshare -Urn`
namespace; "no IPv6" is made there the way a host makes it for new namespaces (disable_ipv6=1,
which net.core.devconf_inherit_init_net would copy from the host). A kernel without IPv6 at all
(ipv6.disable=1: EOPNOTSUPP instead of EACCES) cannot be made here; NO_IPV6_ERRNOS covers it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns import tap
from netns.tap import TapSettings
from tests.harness import User, installed_tool
from tests.netns.private_copy import readable_netns_copy

# In the new namespace: optionally disable IPv6, create the device, report what it got.
PROBE = """
import json, subprocess, sys
from netns.tap import TapSettings, create_tap
disable, optional = sys.argv[1] == "1", sys.argv[2] == "1"
if disable:
    with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as file:
        file.write("1")
try:
    create_tap(TapSettings(ipv6=True, ipv6_optional=optional))
except OSError as exc:
    print(json.dumps({"errno": exc.errno, "error": str(exc)}))
    sys.exit(0)
show = lambda *a: subprocess.run(["ip", *a], capture_output=True, text=True).stdout
print(json.dumps({"v4": show("-4", "addr", "show", "tap0"), "v6": show("-6", "addr", "show"),
                  "routes6": show("-6", "route")}))
"""


def test_ipv6_requests_come_after_the_ipv4_ones() -> None:
    assert tap.ipv6_messages(2, TapSettings()) == []
    settings = TapSettings(ipv6=True)
    steps = tap.configure_messages(2, 1, settings)
    assert steps == tap.ipv4_messages(2, 1, settings) + tap.ipv6_messages(2, settings)
    assert [what for what, _ in steps[4:]] == [
        "add fd00::100/64 to tap0",
        "add default route via fd00::2",
    ]


@pytest.fixture(scope="module")
def tree(user: User) -> Iterator[Path]:
    """A copy of this tree's netns package the test user can read (tests this source)."""
    path = readable_netns_copy("rl-tap6-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def probe(user: User, tree: Path, *, disable: bool, optional: bool) -> dict[str, object]:
    if not os.path.exists("/dev/net/tun") or not shutil.which("unshare"):
        pytest.skip("needs /dev/net/tun and unshare(1)")
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("the host kernel has no IPv6")
    argv = ["unshare", "-Urn", installed_tool("python"), "-c", PROBE, str(int(disable))]
    result = user.run([*argv, str(int(optional))], cwd=tree, timeout=60)
    assert result.returncode == 0, result
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_optional_ipv6_is_configured_where_the_namespace_has_it(user: User, tree: Path) -> None:
    got = probe(user, tree, disable=False, optional=True)
    assert "inet 10.0.2.100/24" in str(got["v4"])
    assert "inet6 fd00::100/64 scope global" in str(got["v6"])
    assert "default via fd00::2 dev tap0" in str(got["routes6"])


def test_optional_ipv6_is_left_out_silently_where_it_is_disabled(user: User, tree: Path) -> None:
    got = probe(user, tree, disable=True, optional=True)
    assert "error" not in got, got
    assert "inet 10.0.2.100/24" in str(got["v4"])  # IPv4 as always
    assert "fd00::" not in str(got["v6"]) and "fd00::" not in str(got["routes6"])


def test_required_ipv6_where_it_is_disabled_is_an_error_saying_so(user: User, tree: Path) -> None:
    got = probe(user, tree, disable=True, optional=False)
    assert got.get("errno") in tap.NO_IPV6_ERRNOS, got
    assert "add fd00::100/64 to tap0" in str(got["error"])
    assert "no IPv6 in this network namespace" in str(got["error"])
