"""NetDriver without namespaces: a SOCK_SEQPACKET socket pair stands in for the TAP device (it
keeps frame boundaries as a TAP fd does), and the test plays the container's side."""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from netns import driver as driver_module
from netns.config import GATEWAY_MAC, NetConfig
from netns.driver import FRAMES_PER_EVENT, NetDriver, servfail
from netns.packets import (
    ACK,
    ETHERTYPE_IPV4,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    RST,
    SYN,
    EthernetFrame,
    IPv4Packet,
    TcpOptions,
    TcpSegment,
    UdpDatagram,
    parse_ip,
)

CONTAINER_MAC = bytes.fromhex("020000000001")
CONTAINER = parse_ip("10.0.2.100")
GATEWAY = parse_ip("10.0.2.2")
DNS = parse_ip("10.0.2.3")


def frame(dst: bytes, protocol: int, payload: bytes) -> bytes:
    packet = IPv4Packet(src=CONTAINER, dst=dst, protocol=protocol, payload=payload)
    return EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV4, packet.build()).build()


def udp_frame(dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    return frame(dst, PROTO_UDP, UdpDatagram(sport, dport, payload).build(CONTAINER, dst))


def tcp_frame(dst: bytes, segment: TcpSegment) -> bytes:
    return frame(dst, PROTO_TCP, segment.build(CONTAINER, dst))


class Link:
    """The container's end of the fake TAP, and a loop running the driver."""

    def __init__(self, config: NetConfig | None = None, **kwargs: object) -> None:
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.finished = False
        self.driver = NetDriver(
            theirs.detach(),
            config,
            on_finished=self._finished,
            **kwargs,  # type: ignore[arg-type]
        )
        self.selector = selectors.DefaultSelector()
        self.driver.register(self.selector)

    def _finished(self) -> None:
        self.finished = True

    def send(self, data: bytes) -> None:
        while True:
            try:
                self.ours.send(data)
                return
            except BlockingIOError:
                self.turn()  # the driver has not read the earlier frames yet

    def turn(self, wait: float = 0.01) -> None:
        timeout = self.driver.select_timeout()
        for key, mask in self.selector.select(wait if timeout is None else min(wait, timeout)):
            key.data(mask)
        self.driver.run_timers()

    def receive(self, want: Callable[[IPv4Packet], bool], timeout: float = 5.0) -> IPv4Packet:
        """Run the driver until it sends the container an IPv4 packet `want` accepts."""
        for _ in range(int(timeout / 0.01)):
            self.turn()
            while True:
                try:
                    data = self.ours.recv(70000)
                except BlockingIOError:
                    break
                eth = EthernetFrame.parse(data)
                if eth.ethertype != ETHERTYPE_IPV4:
                    continue
                packet = IPv4Packet.parse(eth.payload)
                if want(packet):
                    return packet
        raise AssertionError("the container received no such packet")

    def udp_reply(self, dport: int, timeout: float = 5.0) -> tuple[bytes, UdpDatagram]:
        def is_reply(packet: IPv4Packet) -> bool:
            if packet.protocol != PROTO_UDP:
                return False
            return UdpDatagram.parse(packet.payload, packet.src, packet.dst).dst_port == dport

        packet = self.receive(is_reply, timeout)
        return packet.src, UdpDatagram.parse(packet.payload, packet.src, packet.dst)

    def tcp_segment(self, port: int) -> TcpSegment:
        def is_segment(packet: IPv4Packet) -> bool:
            if packet.protocol != PROTO_TCP:
                return False
            return TcpSegment.parse(packet.payload, packet.src, packet.dst).dst_port == port

        packet = self.receive(is_segment)
        return TcpSegment.parse(packet.payload, packet.src, packet.dst)

    def close(self) -> None:
        self.driver.close()
        self.selector.close()
        self.ours.close()


@pytest.fixture
def link_factory() -> Iterator[Callable[..., Link]]:
    links: list[Link] = []

    def make(config: NetConfig | None = None, **kwargs: object) -> Link:
        links.append(Link(config, **kwargs))
        return links[-1]

    yield make
    for link in links:
        link.close()


def udp_server(answer: Callable[[bytes], bytes | None]) -> tuple[socket.socket, list[bytes]]:
    """A resolver on loopback; returns its socket and the queries it saw."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen: list[bytes] = []

    def loop() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(70000)
            except OSError:
                return
            seen.append(data)
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    return sock, seen


def query(txid: int, name: bytes = b"\x07example\x03com\x00") -> bytes:
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 1) + name + b"\0\x01\0\x01" + bytes(11)


def answer_for(data: bytes) -> bytes:
    return data[:2] + b"\x81\x80" + data[4:] + b"answer"


def endpoint(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()
    return host, port


# --- DNS ------------------------------------------------------------------------------------------


def test_dns_answer_comes_from_the_dns_address(link_factory: Callable[..., Link]) -> None:
    resolver, seen = udp_server(answer_for)
    link = link_factory(resolvers=[endpoint(resolver)])
    link.send(udp_frame(DNS, 40000, 53, query(0x1111)))
    src, reply = link.udp_reply(40000)
    assert src == DNS and reply.src_port == 53
    assert reply.payload == answer_for(query(0x1111))
    assert seen == [query(0x1111)]


def test_dns_fails_over_to_the_next_resolver(
    link_factory: Callable[..., Link], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "DNS_TIMEOUT", 0.05)
    silent, silent_seen = udp_server(lambda data: None)
    resolver, seen = udp_server(answer_for)
    link = link_factory(resolvers=[endpoint(silent), endpoint(resolver)])
    link.send(udp_frame(DNS, 40001, 53, query(0x2222)))
    _, reply = link.udp_reply(40001)
    assert reply.payload == answer_for(query(0x2222))
    assert silent_seen == [query(0x2222)] and seen == [query(0x2222)]


def test_servfail_when_every_resolver_is_silent(
    link_factory: Callable[..., Link], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "DNS_TIMEOUT", 0.02)
    silent, seen = udp_server(lambda data: None)
    link = link_factory(resolvers=[endpoint(silent)])
    link.send(udp_frame(DNS, 40002, 53, query(0x3333)))
    _, reply = link.udp_reply(40002)
    assert reply.payload[:2] == b"\x33\x33" and reply.payload[3] & 0x0F == 2
    assert len(seen) == driver_module.DNS_ROUNDS
    assert link.driver.stats.dns_failures == 1


def test_servfail_without_resolvers(link_factory: Callable[..., Link]) -> None:
    link = link_factory(resolvers=[])
    link.send(udp_frame(DNS, 40003, 53, query(0x4444)))
    _, reply = link.udp_reply(40003)
    assert reply.payload == servfail(query(0x4444))


def test_forged_and_stray_answers_are_dropped(link_factory: Callable[..., Link]) -> None:
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resolver.bind(("127.0.0.1", 0))
    resolver.settimeout(5)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    link = link_factory(resolvers=[endpoint(resolver)])
    link.send(udp_frame(DNS, 40004, 53, query(0x5555)))
    for _ in range(100):
        link.turn()
    data, forwarder = resolver.recvfrom(4096)
    assert data == query(0x5555)
    stranger.sendto(answer_for(data) + b"forged", forwarder)  # right id, wrong sender
    resolver.sendto(answer_for(query(0x6666)), forwarder)  # right sender, unknown id
    resolver.sendto(answer_for(data), forwarder)
    resolver.sendto(answer_for(data) + b"again", forwarder)  # answered already
    _, reply = link.udp_reply(40004)
    assert reply.payload == answer_for(data)
    with pytest.raises(AssertionError):
        link.udp_reply(40004, timeout=0.3)
    resolver.close()
    stranger.close()


def test_resolvers_default_to_the_hosts(link_factory: Callable[..., Link]) -> None:
    from netns.resolvconf import host_resolvers, read_resolv_conf

    link = link_factory()
    assert link.driver.resolvers == host_resolvers(read_resolv_conf())
    assert link.driver.config.dns_upstream == link.driver.resolvers[0][0]
    assert link_factory(NetConfig(dns_upstream="192.0.2.53")).driver.config.dns_upstream == (
        "192.0.2.53"
    )


def test_servfail_shapes() -> None:
    reply = servfail(query(0x0102))
    assert reply is not None
    txid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    assert (txid, flags, qd, an, ns, ar) == (0x0102, 0x8182, 1, 0, 0, 0)
    assert reply[12:] == b"\x07example\x03com\x00\x00\x01\x00\x01"  # the question, no EDNS
    assert servfail(b"short") is None
    assert servfail(answer_for(query(1))) is None  # an answer, not a query
    broken = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x3fabc"  # name runs off the end
    assert servfail(broken) == struct.pack("!HHHHHH", 7, 0x8182, 0, 0, 0, 0)


# --- UDP and TCP ---------------------------------------------------------------------------------


def test_udp_round_trip_to_host_loopback(link_factory: Callable[..., Link]) -> None:
    server, _ = udp_server(lambda data: data.upper())
    link = link_factory(NetConfig(allow_host_loopback=True))
    link.send(udp_frame(GATEWAY, 40005, endpoint(server)[1], b"ping"))
    src, reply = link.udp_reply(40005)
    assert src == GATEWAY and reply.payload == b"PING"


def test_tcp_to_a_closed_port_is_reset(link_factory: Callable[..., Link]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    link = link_factory(NetConfig(allow_host_loopback=True))
    link.send(tcp_frame(GATEWAY, TcpSegment(41000, closed_port, 1000, 0, SYN, 65535)))
    reply = link.tcp_segment(41000)
    assert reply.flags & RST and reply.ack == 1001


def test_tcp_data_both_ways(link_factory: Callable[..., Link]) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]
    link = link_factory(NetConfig(allow_host_loopback=True))
    link.send(
        tcp_frame(
            GATEWAY, TcpSegment(41001, port, 5000, 0, SYN, 65535, options=TcpOptions(mss=1460))
        )
    )
    syn_ack = link.tcp_segment(41001)  # sent once the host connection is up
    conn, _ = server.accept()
    assert syn_ack.flags == SYN | ACK and syn_ack.ack == 5001
    ours = (syn_ack.seq + 1) & 0xFFFFFFFF
    link.send(tcp_frame(GATEWAY, TcpSegment(41001, port, 5001, ours, ACK | PSH, 65535, b"up")))
    ack = link.tcp_segment(41001)
    assert ack.ack == 5003
    conn.settimeout(5)
    assert conn.recv(10) == b"up"
    conn.sendall(b"down")
    data = link.tcp_segment(41001)
    assert data.payload == b"down" and data.seq == ours
    conn.close()
    server.close()


# --- the TAP side -------------------------------------------------------------------------------


def test_frames_per_event_are_bounded(link_factory: Callable[..., Link]) -> None:
    link = link_factory()
    junk = udp_frame(parse_ip("10.0.2.77"), 1, 2, b"nobody lives here")
    for _ in range(FRAMES_PER_EVENT + 50):
        link.send(junk)
    for key, mask in link.selector.select(1):
        key.data(mask)
    assert link.driver.stats.frames_in == FRAMES_PER_EVENT
    link.turn()
    assert link.driver.stats.frames_in == FRAMES_PER_EVENT + 50


def test_the_driver_finishes_when_the_device_goes(link_factory: Callable[..., Link]) -> None:
    link = link_factory()
    assert link.driver.select_timeout() is None  # nothing to time
    link.ours.close()
    link.turn()
    assert link.finished and link.driver.finished
    assert link.selector.get_map() == {}


def test_frames_wait_while_the_device_pushes_back(link_factory: Callable[..., Link]) -> None:
    link = link_factory(resolvers=[])  # every query is answered at once, with SERVFAIL
    count = 800  # more than an AF_UNIX socket queues before the writer gets EAGAIN
    for txid in range(count):
        link.send(udp_frame(DNS, 40010, 53, query(txid)))
        if txid % 50 == 49:
            link.turn()  # the test does not read: the driver's writes start to fail
    for _ in range(20):
        link.turn()
    assert link.driver.stats.frames_in == count
    assert 0 < link.driver.stats.frames_out < count  # some are queued in the driver
    answers = set()
    for _ in range(500):
        link.turn()
        while True:
            try:
                data = link.ours.recv(70000)
            except BlockingIOError:
                break
            packet = IPv4Packet.parse(EthernetFrame.parse(data).payload)
            answers.add(UdpDatagram.parse(packet.payload, packet.src, packet.dst).payload[:2])
        if len(answers) == count:
            break
    assert len(answers) == count
    assert link.driver.stats.frames_dropped == 0
