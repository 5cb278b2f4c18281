"""IPv6 in the stack (sans-IO): the codecs of netns.ipv6, neighbour discovery, ICMPv6 echo, and
TCP, UDP, DNS and echo NATed from fd00::100 — Ethernet frames in, frames and flow events out."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netns.config import GATEWAY_MAC, NetConfig
from netns.ipv6 import (
    ICMPV6_DEST_UNREACHABLE,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    IPV6_HEADER_LEN,
    NA_FLAG_OVERRIDE,
    NA_FLAG_ROUTER,
    NA_FLAG_SOLICITED,
    NDP_NEIGHBOR_ADVERTISEMENT,
    NDP_NEIGHBOR_SOLICITATION,
    PROTO_DEST_OPTIONS,
    PROTO_FRAGMENT,
    PROTO_HOP_BY_HOP,
    PROTO_ICMPV6,
    PROTO_ROUTING,
    UNREACH6_PORT,
    Icmp6Message,
    IPv6Packet,
    NeighborMessage,
    is_routable6,
    multicast_mac,
    ndp_options,
    parse_ip6,
    pseudo_header6,
    solicited_node,
)
from netns.packets import (
    ACK,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    PROTO_TCP,
    PROTO_UDP,
    RST,
    SYN,
    EthernetFrame,
    ParseError,
    TcpOptions,
    TcpSegment,
    UdpDatagram,
    checksum,
)
from netns.stack import (
    DnsQuery,
    OpenTcp,
    PingSend,
    SendFrame,
    Stack,
    StackAction,
    UdpSend,
)

CONTAINER_MAC = bytes.fromhex("0242ac110002")
CONTAINER = parse_ip6("fd00::100")
LINK_LOCAL = parse_ip6("fe80::42:acff:fe11:2")
GATEWAY = parse_ip6("fd00::2")
GATEWAY_LL = parse_ip6("fe80::2")
DNS = parse_ip6("fd00::3")
REMOTE = parse_ip6("2001:db8::77")


def frames(actions: list[StackAction]) -> list[bytes]:
    return [a.frame for a in actions if isinstance(a, SendFrame)]


def events(actions: list[StackAction]) -> list[StackAction]:
    return [a for a in actions if not isinstance(a, SendFrame)]


def check_frame6(
    frame: bytes, config: NetConfig, container_mac: bytes | None = CONTAINER_MAC
) -> IPv6Packet:
    """Every IPv6 frame the stack emits is well formed, checksums included."""
    eth = EthernetFrame.parse(frame)
    assert eth.src == config.gateway_mac and eth.ethertype == ETHERTYPE_IPV6
    packet = IPv6Packet.parse(eth.payload)
    assert len(eth.payload) == IPV6_HEADER_LEN + len(packet.payload) <= config.mtu
    if eth.dst[:2] == b"\x33\x33":  # our neighbour solicitation for the container
        assert packet.dst == solicited_node(config.container_ip6)
        assert eth.dst == multicast_mac(packet.dst)
    else:
        assert eth.dst == container_mac and packet.dst == config.container_ip6
    if packet.protocol == PROTO_TCP:
        TcpSegment.parse(packet.payload, packet.src, packet.dst)
    elif packet.protocol == PROTO_UDP:
        UdpDatagram.parse(packet.payload, packet.src, packet.dst)
    else:
        assert packet.protocol == PROTO_ICMPV6
        Icmp6Message.parse(packet.payload, packet.src, packet.dst)
    return packet


class Container6:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.now = 0.0

    def frame(
        self,
        dst: bytes,
        protocol: int,
        payload: bytes,
        *,
        src: bytes = CONTAINER,
        hop_limit: int = 64,
        eth_dst: bytes = GATEWAY_MAC,
    ) -> bytes:
        packet = IPv6Packet(src, dst, protocol, payload, hop_limit=hop_limit)
        return EthernetFrame(eth_dst, CONTAINER_MAC, ETHERTYPE_IPV6, packet.build()).build()

    def send(self, dst: bytes, protocol: int, payload: bytes, **kw: object) -> list[StackAction]:
        return self.stack.receive_frame(self.frame(dst, protocol, payload, **kw), self.now)  # type: ignore[arg-type]

    def icmp(self, dst: bytes, message: Icmp6Message, **kw: object) -> list[StackAction]:
        src = kw.get("src", CONTAINER)
        assert isinstance(src, bytes)
        return self.send(dst, PROTO_ICMPV6, message.build(src, dst), **kw)

    def tcp(self, dst: bytes, segment: TcpSegment) -> list[StackAction]:
        return self.send(dst, PROTO_TCP, segment.build(CONTAINER, dst))

    def udp(self, dst: bytes, sport: int, dport: int, payload: bytes) -> list[StackAction]:
        return self.send(dst, PROTO_UDP, UdpDatagram(sport, dport, payload).build(CONTAINER, dst))

    def packets(self, actions: list[StackAction]) -> list[IPv6Packet]:
        return [check_frame6(f, self.stack.config) for f in frames(actions)]

    def solicit(self, target: bytes, src: bytes = CONTAINER, **kw: object) -> list[StackAction]:
        group = solicited_node(target)
        message = NeighborMessage(target, CONTAINER_MAC).solicitation()
        kw.setdefault("hop_limit", 255)
        return self.icmp(group, message, src=src, eth_dst=multicast_mac(group), **kw)


def new_stack(**config: object) -> tuple[Stack, Container6]:
    counter = itertools.count(7000, 100000)
    config.setdefault("verify_checksums", True)
    config.setdefault("ipv6", True)
    stack = Stack(NetConfig(**config), iss_source=lambda: next(counter))  # type: ignore[arg-type]
    container = Container6(stack)
    # The container's address is resolved once, as its kernel would, so the MAC is known.
    container.solicit(GATEWAY)
    return stack, container


# --- codecs ---------------------------------------------------------------------------------------


def test_ipv6_round_trip_and_padding() -> None:
    packet = IPv6Packet(CONTAINER, REMOTE, PROTO_UDP, b"payload", hop_limit=9, traffic_class=3)
    data = packet.build()
    parsed = IPv6Packet.parse(data + b"\0" * 10)  # Ethernet padding is ignored
    assert (parsed.src, parsed.dst, parsed.protocol, parsed.payload) == (
        CONTAINER,
        REMOTE,
        PROTO_UDP,
        b"payload",
    )
    assert (parsed.hop_limit, parsed.traffic_class, parsed.raw) == (9, 3, data)


def _with_extension(kind: int, body: bytes, upper: int, payload: bytes) -> bytes:
    """A packet whose first header is an extension header `kind` (8 bytes: next, len, body)."""
    extension = bytes((upper, 0)) + body.ljust(6, b"\0")
    head = struct.pack(
        "!IHBB16s16s", 6 << 28, len(extension) + len(payload), kind, 64, CONTAINER, REMOTE
    )
    return head + extension + payload


def test_extension_headers_are_skipped() -> None:
    # MLD reports carry hop-by-hop options with the router alert.
    data = _with_extension(PROTO_HOP_BY_HOP, b"\x05\x02\0\0\x01\0", PROTO_ICMPV6, b"\x8f\0\0\0")
    packet = IPv6Packet.parse(data)
    assert (packet.protocol, packet.payload) == (PROTO_ICMPV6, b"\x8f\0\0\0")
    data = _with_extension(PROTO_DEST_OPTIONS, b"", PROTO_UDP, b"x")
    assert IPv6Packet.parse(data).payload == b"x"
    data = _with_extension(PROTO_ROUTING, b"\0\0", PROTO_UDP, b"x")  # no segments left
    assert IPv6Packet.parse(data).protocol == PROTO_UDP


@pytest.mark.parametrize(
    "data",
    [
        _with_extension(PROTO_FRAGMENT, b"\0\0\0\0\0\x01", PROTO_UDP, b"x"),  # fragments dropped
        _with_extension(PROTO_ROUTING, b"\0\x01", PROTO_UDP, b"x"),  # segments left
        _with_extension(PROTO_DEST_OPTIONS, b"", PROTO_HOP_BY_HOP, bytes(8)),  # HBH not first
        _with_extension(PROTO_DEST_OPTIONS, b"", 59, b""),  # no next header
        IPv6Packet(CONTAINER, REMOTE, PROTO_UDP, b"abc").build()[:-1],  # truncated
        b"\x45" + bytes(39),  # IPv4
        bytes(39),
    ],
)
def test_ipv6_rejects(data: bytes) -> None:
    with pytest.raises(ParseError):
        IPv6Packet.parse(data)


def test_extension_header_chain_is_bounded() -> None:
    chain = b"".join(bytes((PROTO_DEST_OPTIONS, 0)) + bytes(6) for _ in range(20))
    head = struct.pack(
        "!IHBB16s16s", 6 << 28, len(chain), PROTO_DEST_OPTIONS, 64, CONTAINER, REMOTE
    )
    with pytest.raises(ParseError, match="too many"):
        IPv6Packet.parse(head + chain)


def test_tcp_and_udp_checksums_follow_the_ipv6_pseudo_header() -> None:
    segment = TcpSegment(40000, 80, 1, 0, SYN, 65535, b"", TcpOptions(mss=1440)).build(
        CONTAINER, REMOTE
    )
    assert checksum(pseudo_header6(CONTAINER, REMOTE, PROTO_TCP, len(segment)), segment) == 0
    datagram = UdpDatagram(5, 53, b"q" * 999).build(CONTAINER, REMOTE)
    assert checksum(pseudo_header6(CONTAINER, REMOTE, PROTO_UDP, len(datagram)), datagram) == 0


def test_icmpv6_checksum() -> None:
    data = Icmp6Message(ICMPV6_ECHO_REQUEST, 0, b"\0\x01\0\x02hello").build(CONTAINER, GATEWAY)
    assert Icmp6Message.parse(data, CONTAINER, GATEWAY).body == b"\0\x01\0\x02hello"
    with pytest.raises(ParseError):
        Icmp6Message.parse(data, CONTAINER, DNS)  # the pseudo-header counts
    with pytest.raises(ParseError):
        Icmp6Message.parse(data[:-1] + b"?", CONTAINER, GATEWAY)


@pytest.mark.parametrize(
    ("address", "routable"),
    [
        ("::1", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),  # the host's IPv4 loopback through an AF_INET6 socket
        ("::127.0.0.1", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("ff02::1", False),
        ("ff0e::1", False),
        ("2001:db8::1", True),
        ("64:ff9b::a00:1", True),
        ("fd12::1", True),
    ],
)
def test_is_routable6(address: str, routable: bool) -> None:
    assert is_routable6(parse_ip6(address)) is routable


def test_solicited_node_and_multicast_mac() -> None:
    group = solicited_node(parse_ip6("fd00::1:2:3"))
    assert group == parse_ip6("ff02::1:ff02:3")
    assert multicast_mac(group) == bytes.fromhex("3333ff020003")


def test_ndp_options_rejects() -> None:
    assert ndp_options(b"\x01\x01" + CONTAINER_MAC) == {1: CONTAINER_MAC}
    for bad in (b"\x01\x00" + bytes(6), b"\x01\x02" + bytes(6), b"\x01\x01" + bytes(6) + b"\x01"):
        with pytest.raises(ParseError):
            ndp_options(bad)


# --- neighbour discovery ------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "router"), [(GATEWAY, True), (GATEWAY_LL, True), (DNS, False)])
@pytest.mark.parametrize("source", [CONTAINER, LINK_LOCAL])
def test_neighbour_solicitation_is_answered(target: bytes, router: bool, source: bytes) -> None:
    stack = Stack(NetConfig(ipv6=True, verify_checksums=True))
    container = Container6(stack)
    [frame] = frames(container.solicit(target, src=source))
    eth = EthernetFrame.parse(frame)
    assert (eth.dst, eth.src) == (CONTAINER_MAC, GATEWAY_MAC)
    packet = IPv6Packet.parse(eth.payload)
    assert (packet.src, packet.dst, packet.hop_limit) == (target, source, 255)
    message = Icmp6Message.parse(packet.payload, packet.src, packet.dst)
    assert message.type == NDP_NEIGHBOR_ADVERTISEMENT
    advert = NeighborMessage.parse(message)
    assert advert.target == target and advert.link_address == GATEWAY_MAC
    flags = NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    assert advert.flags == flags


def test_neighbour_solicitations_that_get_no_answer() -> None:
    stack = Stack(NetConfig(ipv6=True, verify_checksums=True))
    container = Container6(stack)
    assert container.solicit(GATEWAY, hop_limit=64) == []  # not from this link
    assert container.solicit(GATEWAY, src=bytes(16)) == []  # duplicate address detection
    assert container.solicit(CONTAINER, src=bytes(16)) == []  # the container's own DAD
    assert container.solicit(parse_ip6("fd00::5")) == []  # nobody else lives here
    assert container.solicit(GATEWAY, src=parse_ip6("fd00::9")) == []  # a stranger
    lying = NeighborMessage(GATEWAY, b"\x02" * 6).solicitation()  # not the sender's MAC
    group = solicited_node(GATEWAY)
    assert container.icmp(group, lying, hop_limit=255, eth_dst=multicast_mac(group)) == []
    # IPv6 is off unless enabled: the frames of today's containers are ignored.
    off = Container6(Stack(NetConfig(verify_checksums=True)))
    assert off.solicit(GATEWAY) == []


def test_unknown_container_mac_is_solicited_then_learnt() -> None:
    stack = Stack(NetConfig(ipv6=True, verify_checksums=True, allow_host_loopback=True))
    container = Container6(stack)
    # A DNS query over IPv6 arrives from a MAC the stack has not learnt from a valid frame yet:
    # the query's frame teaches it; before that, an answer would have to solicit.
    assert stack.container_mac is None
    assert stack.udp_from_host(12345, b"x", 0.0) == []  # no such flow: nothing
    [query] = container.udp(DNS, 5353, 53, b"q" * 12)
    assert isinstance(query, DnsQuery) and stack.container_mac == CONTAINER_MAC
    stack.container_mac = None  # e.g. the stack restarted its view of the link
    [solicitation] = frames(stack.udp_from_host(query.flow_id, b"a" * 12, 0.0))
    packet = check_frame6(solicitation, stack.config)
    message = Icmp6Message.parse(packet.payload, packet.src, packet.dst)
    assert message.type == NDP_NEIGHBOR_SOLICITATION
    assert NeighborMessage.parse(message).target == CONTAINER
    assert packet.src == GATEWAY_LL and packet.hop_limit == 255
    advert = NeighborMessage(CONTAINER, CONTAINER_MAC, NA_FLAG_SOLICITED).advertisement()
    assert container.icmp(GATEWAY_LL, advert, hop_limit=255) == []
    assert stack.container_mac == CONTAINER_MAC
    [answer] = container.packets(stack.udp_from_host(query.flow_id, b"a" * 12, 0.0))
    assert answer.src == DNS


# --- ICMPv6 echo --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [GATEWAY, DNS])
def test_ping6_gateway(target: bytes) -> None:
    _stack, container = new_stack()
    request = Icmp6Message(ICMPV6_ECHO_REQUEST, 0, b"\x00\x07\x00\x01" + b"abcdefgh" * 7)
    [reply] = container.packets(container.icmp(target, request))
    assert reply.src == target
    message = Icmp6Message.parse(reply.payload, reply.src, reply.dst)
    assert message == Icmp6Message(ICMPV6_ECHO_REPLY, 0, request.body)


def test_ping6_beyond_the_gateway_is_relayed() -> None:
    stack, container = new_stack()
    request = Icmp6Message(ICMPV6_ECHO_REQUEST, 0, b"\x12\x34\x00\x09data")
    [send] = container.icmp(REMOTE, request)
    assert isinstance(send, PingSend)
    assert send == PingSend(send.flow_id, "2001:db8::77", 9, b"data")
    [reply] = container.packets(stack.ping_reply(send.flow_id, 9, b"data", 0.0))
    assert reply.src == REMOTE
    message = Icmp6Message.parse(reply.payload, reply.src, reply.dst)
    assert message == Icmp6Message(ICMPV6_ECHO_REPLY, 0, b"\x12\x34\x00\x09data")
    [error] = container.packets(stack.ping_unreachable(send.flow_id, 0.0))
    message = Icmp6Message.parse(error.payload, error.src, error.dst)
    assert (message.type, message.code) == (ICMPV6_DEST_UNREACHABLE, 0)
    assert IPv6Packet.parse(message.body[4:]).dst == REMOTE  # the request, quoted
    # Multicast, link-local and in-prefix destinations are nobody's.
    for dst in ("ff02::1", "fe80::9", "fd00::9", "::1"):
        assert container.icmp(parse_ip6(dst), request) == []


# --- TCP and UDP --------------------------------------------------------------------------------


def test_tcp_over_ipv6_is_natted_to_an_ipv6_host_socket() -> None:
    stack, container = new_stack(mtu=1500)
    syn = TcpSegment(40000, 443, 100, 0, SYN, 64240, options=TcpOptions(mss=1440, window_scale=7))
    [open_tcp] = container.tcp(REMOTE, syn)
    assert isinstance(open_tcp, OpenTcp) and open_tcp.dst == ("2001:db8::77", 443)
    [synack_packet] = container.packets(stack.tcp_connected(open_tcp.flow_id, 0.0))
    synack = TcpSegment.parse(synack_packet.payload, synack_packet.src, synack_packet.dst)
    assert synack.flags == SYN | ACK and synack.ack == 101
    assert synack.options.mss == 1500 - 60  # IPv6's 40-byte header
    ack = TcpSegment(40000, 443, 101, synack.seq + 1, ACK, 502, b"GET / HTTP/1.0\r\n\r\n")
    actions = container.tcp(REMOTE, ack)
    assert [e.data for e in events(actions) if hasattr(e, "data")] == [b"GET / HTTP/1.0\r\n\r\n"]
    data = b"x" * 4000
    segments = [
        TcpSegment.parse(p.payload, p.src, p.dst)
        for p in container.packets(stack.host_data(open_tcp.flow_id, data, 0.0))
    ]
    assert b"".join(s.payload for s in segments) == data
    assert max(len(s.payload) for s in segments) <= 1440


def test_tcp_to_the_gateway_reaches_ipv6_loopback_only_when_allowed() -> None:
    _stack, container = new_stack()
    syn = TcpSegment(40001, 8080, 5, 0, SYN, 65535)
    [rst_packet] = container.packets(container.tcp(GATEWAY, syn))
    rst = TcpSegment.parse(rst_packet.payload, rst_packet.src, rst_packet.dst)
    assert rst.flags & RST and rst_packet.src == GATEWAY
    _stack, container = new_stack(allow_host_loopback=True)
    [open_tcp] = container.tcp(GATEWAY, syn)
    assert isinstance(open_tcp, OpenTcp) and open_tcp.dst == ("::1", 8080)


@pytest.mark.parametrize("dst", ["::ffff:127.0.0.1", "::1", "fd00::9", "fe80::1", "ff02::1"])
def test_tcp_to_unroutable_ipv6_goes_nowhere(dst: str) -> None:
    _stack, container = new_stack(allow_host_loopback=True)
    assert container.tcp(parse_ip6(dst), TcpSegment(40002, 80, 5, 0, SYN, 65535)) == []


def test_spoofed_ipv6_source_is_dropped() -> None:
    _stack, container = new_stack()
    segment = TcpSegment(40003, 80, 5, 0, SYN, 65535)
    other = parse_ip6("fd00::101")
    assert container.send(REMOTE, PROTO_TCP, segment.build(other, REMOTE), src=other) == []


def test_udp_over_ipv6() -> None:
    stack, container = new_stack()
    [send] = container.udp(REMOTE, 5000, 7, b"hello")
    assert isinstance(send, UdpSend) and send.dst == ("2001:db8::77", 7)
    [reply] = container.packets(stack.udp_from_host(send.flow_id, b"olleh", 0.0))
    datagram = UdpDatagram.parse(reply.payload, reply.src, reply.dst)
    assert (reply.src, datagram.src_port, datagram.dst_port, datagram.payload) == (
        REMOTE,
        7,
        5000,
        b"olleh",
    )
    # Too big for the link (the stack sends no IPv6 fragments): dropped, not sent broken.
    assert stack.udp_from_host(send.flow_id, b"z" * 65490, 0.0) == []


def test_udp_to_the_gateway_refused_with_icmpv6_port_unreachable() -> None:
    _stack, container = new_stack()
    [error] = container.packets(container.udp(GATEWAY, 5000, 9999, b"x"))
    message = Icmp6Message.parse(error.payload, error.src, error.dst)
    assert (message.type, message.code, error.src) == (
        ICMPV6_DEST_UNREACHABLE,
        UNREACH6_PORT,
        GATEWAY,
    )
    quoted = IPv6Packet.parse(message.body[4:])
    assert (quoted.src, quoted.dst, quoted.protocol) == (CONTAINER, GATEWAY, PROTO_UDP)
    _stack, container = new_stack(allow_host_loopback=True)
    [send] = container.udp(GATEWAY, 5000, 9999, b"x")
    assert isinstance(send, UdpSend) and send.dst == ("::1", 9999)


def test_dns_over_ipv6_at_fd00_3() -> None:
    stack, container = new_stack(dns_upstream="127.0.0.53")
    [query] = container.udp(DNS, 5353, 53, b"q" * 20)
    assert isinstance(query, DnsQuery) and query.payload == b"q" * 20
    [answer] = container.packets(stack.udp_from_host(query.flow_id, b"a" * 30, 0.0))
    assert answer.src == DNS
    [open_tcp] = container.tcp(DNS, TcpSegment(40004, 53, 5, 0, SYN, 65535))
    assert isinstance(open_tcp, OpenTcp) and open_tcp.dst == ("127.0.0.53", 53)
    [error] = container.packets(container.udp(DNS, 5353, 54, b"q"))
    assert Icmp6Message.parse(error.payload, error.src, error.dst).type == ICMPV6_DEST_UNREACHABLE


def test_ipv4_and_ipv6_flows_are_told_apart() -> None:
    stack, container = new_stack()
    [six] = container.udp(REMOTE, 5000, 7, b"six")
    ipv4 = parse_ip6("::ffff:93.184.216.34")[12:]
    from netns.packets import IPv4Packet

    packet = IPv4Packet(
        NetConfig().container_ip,
        ipv4,
        PROTO_UDP,
        UdpDatagram(5000, 7, b"four").build(NetConfig().container_ip, ipv4),
    )
    frame = EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV4, packet.build()).build()
    [four] = stack.receive_frame(frame, 0.0)
    assert isinstance(six, UdpSend) and isinstance(four, UdpSend)
    assert six.flow_id != four.flow_id and four.dst == ("93.184.216.34", 7)


# --- hostile frames -----------------------------------------------------------------------------


def _valid_frames() -> list[bytes]:
    container = Container6(Stack(NetConfig(ipv6=True)))
    group = solicited_node(GATEWAY)
    solicitation = NeighborMessage(GATEWAY, CONTAINER_MAC).solicitation()
    return [
        container.frame(
            group,
            PROTO_ICMPV6,
            solicitation.build(CONTAINER, group),
            hop_limit=255,
            eth_dst=multicast_mac(group),
        ),
        container.frame(
            GATEWAY,
            PROTO_ICMPV6,
            Icmp6Message(ICMPV6_ECHO_REQUEST, 0, b"\0\1\0\1ping").build(CONTAINER, GATEWAY),
        ),
        container.frame(
            REMOTE,
            PROTO_ICMPV6,
            Icmp6Message(ICMPV6_ECHO_REQUEST, 0, b"\0\1\0\1ping").build(CONTAINER, REMOTE),
        ),
        container.frame(
            REMOTE,
            PROTO_TCP,
            TcpSegment(1234, 80, 1, 0, SYN, 65535, options=TcpOptions(mss=1400)).build(
                CONTAINER, REMOTE
            ),
        ),
        container.frame(
            REMOTE,
            PROTO_TCP,
            TcpSegment(1234, 80, 2, 1, ACK, 65535, b"data").build(CONTAINER, REMOTE),
        ),
        container.frame(GATEWAY, PROTO_UDP, UdpDatagram(1, 2, b"x").build(CONTAINER, GATEWAY)),
        container.frame(DNS, PROTO_UDP, UdpDatagram(1, 53, b"q" * 12).build(CONTAINER, DNS)),
        _frame_of(
            _with_extension(PROTO_HOP_BY_HOP, b"\x05\x02\0\0\x01\0", PROTO_ICMPV6, b"\x8f\0\0\0")
        ),
        _frame_of(_with_extension(PROTO_FRAGMENT, b"\0\0\0\0\0\x01", PROTO_UDP, b"x")),
        container.frame(
            GATEWAY_LL,
            PROTO_ICMPV6,
            NeighborMessage(CONTAINER, CONTAINER_MAC, NA_FLAG_SOLICITED)
            .advertisement()
            .build(CONTAINER, GATEWAY_LL),
            hop_limit=255,
        ),
    ]


def _frame_of(packet: bytes) -> bytes:
    return EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV6, packet).build()


VALID = _valid_frames()


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(VALID)))
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "random"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            position = draw(st.integers(0, len(base) - 1))
            base[position] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del base[draw(st.integers(0, len(base))) :]
    elif kind == "extend":
        base += draw(st.binary(max_size=100))
    else:
        base = bytearray(base[:14] + draw(st.binary(max_size=200)))
    return bytes(base)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_frames(), max_size=12), st.sampled_from([True, False]))
def test_hostile_ipv6_frames_never_crash_nor_emit_invalid_frames(
    sequence: list[bytes], verify: bool
) -> None:
    stack = Stack(NetConfig(ipv6=True, verify_checksums=verify, allow_host_loopback=True, mtu=1500))
    now = 0.0
    for frame in [*VALID, *sequence]:
        for action in stack.receive_frame(frame, now):
            if isinstance(action, SendFrame):
                check_frame6(action.frame, stack.config, stack.container_mac)
            elif isinstance(action, OpenTcp):
                for follow in stack.tcp_connected(action.flow_id, now):
                    assert isinstance(follow, SendFrame)
                    check_frame6(follow.frame, stack.config, stack.container_mac)
            elif isinstance(action, PingSend):
                for follow in stack.ping_reply(
                    action.flow_id, action.sequence, action.payload, now
                ):
                    assert isinstance(follow, SendFrame)
                    check_frame6(follow.frame, stack.config, stack.container_mac)
        now += 0.5
    for action in stack.timeout(now + 1000):
        if isinstance(action, SendFrame):
            check_frame6(action.frame, stack.config, stack.container_mac)


@given(st.binary(max_size=300))
def test_ipv6_parsers_only_raise_parse_error(data: bytes) -> None:
    for parse in (
        lambda: IPv6Packet.parse(b"\x60" + data),
        lambda: IPv6Packet.parse(data),
        lambda: Icmp6Message.parse(data, CONTAINER, GATEWAY),
        lambda: NeighborMessage.parse(Icmp6Message(NDP_NEIGHBOR_SOLICITATION, 0, data)),
        lambda: NeighborMessage.parse(Icmp6Message(NDP_NEIGHBOR_ADVERTISEMENT, 0, data)),
        lambda: ndp_options(data),
    ):
        try:
            parse()
        except ParseError:
            pass


def test_tcp_over_ipv6_leaves_the_checksum_to_the_container_kernel_with_offload() -> None:
    stack, container = new_stack(checksum_offload=True)
    [open_tcp] = container.tcp(REMOTE, TcpSegment(40000, 443, 100, 0, SYN, 64240))
    assert isinstance(open_tcp, OpenTcp)
    [action] = stack.tcp_connected(open_tcp.flow_id, 0.0)
    assert isinstance(action, SendFrame) and action.partial_checksum
    segment = bytearray(action.frame[14 + IPV6_HEADER_LEN :])
    # What the kernel does with VIRTIO_NET_HDR_F_NEEDS_CSUM (csum_start 54, csum_offset 16):
    # the checksum over the segment, the field holding the pseudo-header's sum.
    segment[16:18] = checksum(bytes(segment)).to_bytes(2, "big")
    TcpSegment.parse(bytes(segment), REMOTE, CONTAINER)  # verifies against IPv6's pseudo-header
