"""resolv.conf parsing (glibc's rules) and the container's resolv.conf."""

from __future__ import annotations

from pathlib import Path

from netns.resolvconf import (
    ResolvConf,
    container_resolv_conf,
    host_resolvers,
    parse_resolv_conf,
    read_resolv_conf,
)


def test_systemd_resolved_stub() -> None:
    text = (
        "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n"
        "nameserver 127.0.0.53\n"
        "options edns0 trust-ad\n"
        "search corp.example\n"
    )
    conf = parse_resolv_conf(text)
    assert conf == ResolvConf(("127.0.0.53",), ("corp.example",), ("edns0", "trust-ad"))
    assert host_resolvers(conf) == [("127.0.0.53", 53)]


def test_at_most_three_valid_nameservers_in_order() -> None:
    text = "\n".join(
        [
            "nameserver 192.0.2.1",
            "nameserver not-an-address",
            "nameserver",
            "nameserver 2001:db8::53",
            "nameserver fe80::1%eth0",
            "nameserver 192.0.2.9",
        ]
    )
    assert parse_resolv_conf(text).nameservers == ("192.0.2.1", "2001:db8::53", "fe80::1%eth0")


def test_comments_whitespace_and_unknown_keywords() -> None:
    text = (
        "; a comment\n"
        "#nameserver 192.0.2.66\n"
        "   nameserver   192.0.2.1   # trailing words are ignored\n"
        "\tnameserver\t192.0.2.2\n"
        "sortlist 130.155.160.0/255.255.240.0\n"
        "lookup file bind\n"
        "\n"
    )
    conf = parse_resolv_conf(text)
    assert conf.nameservers == ("192.0.2.1", "192.0.2.2")
    assert conf.search == ()


def test_a_zone_only_on_ipv6() -> None:
    assert parse_resolv_conf("nameserver 192.0.2.1%eth0\n").nameservers == ()


def test_last_search_or_domain_wins_options_accumulate() -> None:
    text = "search a.example b.example\ndomain c.example\noptions ndots:2\noptions rotate\n"
    conf = parse_resolv_conf(text)
    assert conf.search == ("c.example",)
    assert conf.options == ("ndots:2", "rotate")
    conf = parse_resolv_conf("domain c.example\nsearch a.example b.example\n")
    assert conf.search == ("a.example", "b.example")


def test_no_nameserver_means_localhost() -> None:
    assert host_resolvers(parse_resolv_conf("search example.com\n")) == [("127.0.0.1", 53)]
    assert host_resolvers(ResolvConf(("192.0.2.1",)), port=5353) == [("192.0.2.1", 5353)]


def test_container_resolv_conf_points_at_the_stack() -> None:
    conf = ResolvConf(("127.0.0.53",), ("corp.example", "example.com"), ("edns0",))
    assert container_resolv_conf(conf, "10.0.2.3") == (
        "search corp.example example.com\nnameserver 10.0.2.3\noptions edns0\n"
    )
    assert container_resolv_conf(ResolvConf(), "10.0.2.3") == "nameserver 10.0.2.3\n"


def test_read_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_resolv_conf(str(tmp_path / "missing")) == ResolvConf()
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    assert read_resolv_conf(str(path)).nameservers == ("192.0.2.1",)
