"""IPv6 in rl's user-mode network is on by default (podman 4.x's enable_ipv6 default, true);
only an explicit enable_ipv6=true makes a host without IPv6 an error."""

from __future__ import annotations

import os

import pytest

from rootless import network
from rootless.runtime.options import parse_network_options


@pytest.mark.parametrize(
    ("text", "enabled", "required"),
    [
        ("slirp4netns", True, False),
        ("slirp4netns:mtu=1500", True, False),
        ("slirp4netns:enable_ipv6=true", True, True),
        ("slirp4netns:enable_ipv6=false", False, False),
    ],
)
def test_enable_ipv6_defaults_to_true(text: str, enabled: bool, required: bool) -> None:
    options = parse_network_options(text)
    assert network.ipv6_enabled(options) is enabled
    assert network.ipv6_required(options) is required
    settings = network.tap_settings(options)
    assert settings.ipv6 is enabled
    assert settings.ipv6_optional is not required  # by default: IPv4 only where IPv6 is refused
    assert network._config(options).ipv6 is enabled


@pytest.mark.parametrize(
    ("has_if_inet6", "inherit", "default_disabled", "available"),
    [
        (True, "0\n", "0\n", True),
        (True, "0\n", "1\n", True),  # new namespaces get the kernel's defaults, not the host's
        (True, "2\n", "1\n", True),
        (True, "1\n", "1\n", False),  # ... unless they inherit the host's
        (True, "3\n", "1\n", False),
        (True, "1\n", "0\n", True),
        (True, None, None, True),  # older kernels: no devconf_inherit_init_net
        (False, "0\n", None, False),  # ipv6.disable=1, or no IPv6 in the kernel
    ],
)
def test_host_ipv6_available(
    has_if_inet6: bool, inherit: str | None, default_disabled: str | None, available: bool
) -> None:
    assert network.host_ipv6_available(has_if_inet6, inherit, default_disabled) is available


def test_inspect_settings_follow_the_default() -> None:
    fields = {"GlobalIPv6Address": "fd00::100", "GlobalIPv6PrefixLen": 64, "IPv6Gateway": "fd00::2"}
    explicit = {"network": "slirp4netns", "network_options": {"enable_ipv6": "true"}}
    assert network.ipv6_settings(explicit) == fields
    off = {"network": "slirp4netns", "network_options": {"enable_ipv6": "false"}}
    assert network.ipv6_settings(off) == {}
    assert network.ipv6_settings({"network": "none"}) == {}
    # The default: what this host gives a new namespace (on hosts with IPv6, the fields).
    default = {"network": "slirp4netns", "network_options": {}}
    expected = fields if network._host_ipv6_available() else {}
    assert network.ipv6_settings(default) == expected
    if os.path.exists("/proc/net/if_inet6") and network._read(
        "/proc/sys/net/core/devconf_inherit_init_net"
    ) in (None, "0\n", "2\n"):
        assert network.ipv6_settings(default) == fields
