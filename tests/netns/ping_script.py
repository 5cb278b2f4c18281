"""Run by test_driver_ipv6.py under `unshare -Urn`: in this fresh network namespace (loopback
up with two addresses of its own, no other route), allow our group ICMP sockets through
ping_group_range ("allowed") or leave the default that denies everyone ("denied"), run a
NetDriver over a socket pair, and play the container: echo requests to the namespace's own
addresses (beyond the gateway: relayed through ICMP sockets), to 2001:db8::1 (no route: ICMPv6
unreachable) and to the gateway. Prints what came back as one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from netns.config import GATEWAY_MAC, NetConfig
from netns.ipv6 import (
    ICMPV6_DEST_UNREACHABLE,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    PROTO_ICMPV6,
    Icmp6Message,
    IPv6Packet,
    parse_ip6,
)
from netns.packets import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    PROTO_ICMP,
    EthernetFrame,
    IcmpMessage,
    IPv4Packet,
    parse_ip,
)
from netns.ping import ping_allowed_here
from tests.netns.test_driver import CONTAINER, CONTAINER_MAC, GATEWAY, Link

CONTAINER6 = parse_ip6("fd00::100")
HOST4 = "192.0.2.9"  # the namespace's own addresses (on lo): the "host" the container pings
HOST6 = "2001:db8:1::9"


def ping4(dst: bytes, ident: int, sequence: int, data: bytes) -> bytes:
    rest = ident.to_bytes(2, "big") + sequence.to_bytes(2, "big")
    message = IcmpMessage(ICMP_ECHO_REQUEST, 0, rest, data).build()
    packet = IPv4Packet(CONTAINER, dst, PROTO_ICMP, message)
    return EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV4, packet.build()).build()


def ping6(dst: bytes, ident: int, sequence: int, data: bytes) -> bytes:
    body = ident.to_bytes(2, "big") + sequence.to_bytes(2, "big") + data
    message = Icmp6Message(ICMPV6_ECHO_REQUEST, 0, body).build(CONTAINER6, dst)
    packet = IPv6Packet(CONTAINER6, dst, PROTO_ICMPV6, message)
    return EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV6, packet.build()).build()


def collect(link: Link, seconds: float) -> list[tuple[int, object]]:
    """ICMP messages the container received: (4, IcmpMessage) or (6, Icmp6Message)."""
    out: list[tuple[int, object]] = []
    for _ in range(int(seconds / 0.01)):
        link.turn()
        while True:
            try:
                data = link.ours.recv(70000)
            except BlockingIOError:
                break
            eth = EthernetFrame.parse(data)
            if eth.ethertype == ETHERTYPE_IPV4:
                p4 = IPv4Packet.parse(eth.payload)
                if p4.protocol == PROTO_ICMP:
                    out.append((4, IcmpMessage.parse(p4.payload)))
            elif eth.ethertype == ETHERTYPE_IPV6:
                p6 = IPv6Packet.parse(eth.payload)
                if p6.protocol == PROTO_ICMPV6:
                    out.append((6, Icmp6Message.parse(p6.payload, p6.src, p6.dst)))
    return out


def main(mode: str) -> None:
    # Loopback destinations are never relayed: the host answers on addresses of its own.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{HOST4}/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "addr", "add", f"{HOST6}/128", "dev", "lo", "nodad"], check=True)
    if mode == "allowed":
        gid = os.getgid()
        with open("/proc/sys/net/ipv4/ping_group_range", "w") as file:
            file.write(f"{gid} {gid}")
    else:  # a new namespace starts with the kernel's default, "1 0": nobody
        assert not ping_allowed_here()
    link = Link(NetConfig(ipv6=True), resolvers=[])
    link.send(ping4(parse_ip(HOST4), 7, 1, b"ping-four"))
    link.send(ping6(parse_ip6(HOST6), 9, 2, b"ping-six"))
    if mode == "allowed":
        link.send(ping6(parse_ip6("2001:db8::1"), 11, 3, b"nowhere"))
    link.send(ping4(GATEWAY, 13, 4, b"gateway"))
    got = collect(link, 1.0)
    # Like ping(8), ask again (the same flows) in case the first requests were lost.
    link.send(ping4(parse_ip(HOST4), 7, 1, b"ping-four"))
    link.send(ping6(parse_ip6(HOST6), 9, 2, b"ping-six"))
    got += collect(link, 1.5)
    result: dict[str, object] = {"ipv4": None, "ipv6": None}
    for family, message in got:
        if family == 4 and isinstance(message, IcmpMessage):
            if message.type == ICMP_ECHO_REPLY and message.payload == b"gateway":
                result["gateway"] = message.rest == b"\0\x0d\0\x04"
            elif message.type == ICMP_ECHO_REPLY:
                ident, seq = message.rest[:2], message.rest[2:]
                result["ipv4"] = [int.from_bytes(ident, "big"), int.from_bytes(seq, "big"),
                                  message.payload.decode()]  # fmt: skip
        elif isinstance(message, Icmp6Message):
            if message.type == ICMPV6_ECHO_REPLY:
                body = message.body
                result["ipv6"] = [int.from_bytes(body[:2], "big"), int.from_bytes(body[2:4], "big"),
                                  body[4:].decode()]  # fmt: skip
            elif message.type == ICMPV6_DEST_UNREACHABLE:
                result["unreachable6"] = [message.type, message.code]
    link.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
