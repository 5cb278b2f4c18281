"""The files rl generates for a container (/etc/hosts, hostname, resolv.conf, .containerenv)."""

from __future__ import annotations

from rootless.containers.files import containerenv, hostname_file, hosts_file, resolv_conf
from rootless.containers.names import new_id, random_name

HOST_HOSTS = (
    "127.0.0.1 localhost\n# comment\n127.0.0.1   vm  # trailing\n::1 ip6-localhost ip6-loopback\n"
)


def test_hosts_like_podman_with_own_netns() -> None:
    text = hosts_file(HOST_HOSTS, hostname="abc123", name="happy_turing", own_netns=True)
    assert text == (
        "127.0.0.1\tlocalhost\n127.0.0.1\tvm\n::1\tip6-localhost ip6-loopback\n"
        "192.0.2.2\thost.containers.internal\n127.0.0.1\tabc123 happy_turing\n"
    )


def test_hosts_with_host_network_has_no_own_entry() -> None:
    text = hosts_file(HOST_HOSTS, hostname="vm", name="x", own_netns=False)
    assert text.splitlines()[-1] == "192.0.2.2\thost.containers.internal"


def test_hostname_has_no_newline() -> None:
    assert hostname_file("abc") == "abc"


def test_resolv_conf_drops_loopback_with_own_netns() -> None:
    host = "search example\nnameserver 127.0.0.53\nnameserver 10.0.0.1\noptions edns0\n"
    assert (
        resolv_conf(host, own_netns=True) == "search example\nnameserver 10.0.0.1\noptions edns0\n"
    )
    assert resolv_conf(host, own_netns=False) == host
    only_loopback = "nameserver 127.0.0.1\nnameserver ::1\n"
    assert resolv_conf(only_loopback, own_netns=True) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def test_containerenv_empty_unless_privileged() -> None:
    args = {
        "engine": "rl-0.1.0",
        "name": "n",
        "container_id": "i" * 64,
        "image": "img",
        "image_id": "f" * 64,
    }
    assert containerenv(privileged=False, **args) == ""
    text = containerenv(privileged=True, **args)
    assert text.splitlines() == [
        'engine="rl-0.1.0"',
        'name="n"',
        f'id="{"i" * 64}"',
        'image="img"',
        f'imageid="{"f" * 64}"',
        "rootless=1",
    ]


def test_ids_and_names() -> None:
    ident = new_id()
    assert len(ident) == 64 and int(ident, 16) >= 0
    adjective, _, noun = random_name().partition("_")
    assert adjective and noun


def test_files_with_user_mode_networking() -> None:
    # podman 4.3 with slirp4netns, measured here: own names on 10.0.2.100, the forwarder
    # first in resolv.conf, the host's non-loopback nameservers after it.
    hosts = hosts_file("", hostname="h", name="n", own_netns=True, slirp=True)
    assert hosts == "192.0.2.2\thost.containers.internal\n10.0.2.100\th n\n"
    text = "search example.org\nnameserver 127.0.0.53\nnameserver 10.9.9.9\n"
    assert resolv_conf(text, own_netns=True, slirp=True) == (
        "nameserver 10.0.2.3\nsearch example.org\nnameserver 10.9.9.9\n"
    )
    assert resolv_conf("nameserver 127.0.0.53\n", own_netns=True, slirp=True) == (
        "nameserver 10.0.2.3\n"
    )
