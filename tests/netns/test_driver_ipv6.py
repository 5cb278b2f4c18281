"""NetDriver over IPv6 and the ICMP echo relay, for real: a SOCK_SEQPACKET pair stands in for
the TAP device (as in test_driver.py), the host side is real sockets on ::1 and 127.0.0.1.

The echo relay needs ICMP sockets, which net.ipv4.ping_group_range usually denies (here: "1 0"):
those tests run ping_script.py under `unshare -Urn`, in a network namespace of its own whose
ping_group_range the script opens to its group (or closes) before running the driver there."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netns.config import GATEWAY_MAC, NetConfig
from netns.ipv6 import IPv6Packet, parse_ip6
from netns.packets import (
    ACK,
    ETHERTYPE_IPV6,
    PROTO_TCP,
    PROTO_UDP,
    SYN,
    EthernetFrame,
    TcpOptions,
    TcpSegment,
    UdpDatagram,
)
from netns.ping import echo_request, parse_echo_reply, ping_allowed
from tests.netns.test_driver import CONTAINER_MAC, Link

CONTAINER = parse_ip6("fd00::100")
GATEWAY = parse_ip6("fd00::2")
SCRIPT = Path(__file__).with_name("ping_script.py")

needs_ipv6_loopback = pytest.mark.skipif(
    not os.path.exists("/proc/net/if_inet6"), reason="the host has no IPv6"
)


def frame6(dst: bytes, protocol: int, payload: bytes) -> bytes:
    packet = IPv6Packet(CONTAINER, dst, protocol, payload)
    return EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV6, packet.build()).build()


def receive6(link: Link, want: Callable[[IPv6Packet], bool], timeout: float = 5.0) -> IPv6Packet:
    for _ in range(int(timeout / 0.01)):
        link.turn()
        while True:
            try:
                data = link.ours.recv(70000)
            except BlockingIOError:
                break
            eth = EthernetFrame.parse(data)
            if eth.ethertype == ETHERTYPE_IPV6:
                packet = IPv6Packet.parse(eth.payload)
                if want(packet):
                    return packet
    raise AssertionError("the container received no such IPv6 packet")


@pytest.fixture
def link6() -> Iterator[Link]:
    link = Link(NetConfig(ipv6=True, allow_host_loopback=True), resolvers=[])
    yield link
    link.close()


@needs_ipv6_loopback
def test_udp_over_ipv6_to_host_loopback(link6: Link) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as server:
        server.bind(("::1", 0))
        server.settimeout(5)
        port = server.getsockname()[1]
        link6.send(
            frame6(GATEWAY, PROTO_UDP, UdpDatagram(40005, port, b"six").build(CONTAINER, GATEWAY))
        )
        for _ in range(500):
            link6.turn()
            try:
                data, peer = server.recvfrom(100)
                break
            except TimeoutError:
                continue
        assert data == b"six" and peer[0] == "::1"
        server.sendto(b"SIX", peer)
        reply = receive6(link6, lambda p: p.protocol == PROTO_UDP)
    datagram = UdpDatagram.parse(reply.payload, reply.src, reply.dst)
    assert (reply.src, datagram.dst_port, datagram.payload) == (GATEWAY, 40005, b"SIX")


@needs_ipv6_loopback
def test_tcp_over_ipv6_to_host_loopback(link6: Link) -> None:
    server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    server.settimeout(5)
    port = server.getsockname()[1]
    syn = TcpSegment(41001, port, 5000, 0, SYN, 65535, options=TcpOptions(mss=1440))
    link6.send(frame6(GATEWAY, PROTO_TCP, syn.build(CONTAINER, GATEWAY)))

    def tcp_for_us(packet: IPv6Packet) -> bool:
        return packet.protocol == PROTO_TCP

    reply = receive6(link6, tcp_for_us)
    syn_ack = TcpSegment.parse(reply.payload, reply.src, reply.dst)
    conn, peer = server.accept()
    assert syn_ack.flags == SYN | ACK and peer[0] == "::1"
    data = TcpSegment(41001, port, 5001, syn_ack.seq + 1, ACK, 65535, b"over six")
    link6.send(frame6(GATEWAY, PROTO_TCP, data.build(CONTAINER, GATEWAY)))
    conn.settimeout(0.01)
    received = b""
    for _ in range(500):
        link6.turn()
        try:
            received += conn.recv(100)
        except TimeoutError:
            continue
        if received == b"over six":
            break
    assert received == b"over six"
    conn.close()
    server.close()


def test_echo_codecs() -> None:
    assert echo_request(False, 7, b"hi") == b"\x08\0\0\0\0\0\0\x07hi"
    assert echo_request(True, 0x10007, b"") == b"\x80\0\0\0\0\0\0\x07"
    assert parse_echo_reply(False, b"\0\0\xaa\xaa\x12\x34\0\x07hi") == (7, b"hi")
    assert parse_echo_reply(True, b"\x81\0\xaa\xaa\x12\x34\0\x07hi") == (7, b"hi")
    assert parse_echo_reply(True, b"\0\0\xaa\xaa\x12\x34\0\x07hi") is None  # v4 reply on v6
    assert parse_echo_reply(False, b"\x03\x01" + bytes(6)) is None
    assert parse_echo_reply(False, b"\0\0") is None


def test_ping_allowed() -> None:
    assert ping_allowed("0\t2147483647\n", [1001])
    assert ping_allowed("100 200", [5, 150])
    assert not ping_allowed("1\t0\n", [0, 1, 1001])  # the kernel's default: nobody
    assert not ping_allowed("garbage", [0])


def _run_script(mode: str) -> dict[str, object]:
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1)")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["unshare", "-Urn", sys.executable, str(SCRIPT), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if result.returncode == 1 and "cannot unshare" in result.stderr.lower():
        pytest.skip(f"no user namespaces: {result.stderr.strip()}")
    assert result.returncode == 0, result
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_pings_beyond_the_gateway_through_icmp_sockets() -> None:
    result = _run_script("allowed")
    assert result == {
        "ipv4": [7, 1, "ping-four"],
        "ipv6": [9, 2, "ping-six"],
        "unreachable6": [1, 0],
        "gateway": True,
    }


def test_pings_without_icmp_sockets_get_no_reply() -> None:
    result = _run_script("denied")
    assert result == {"ipv4": None, "ipv6": None, "gateway": True}
