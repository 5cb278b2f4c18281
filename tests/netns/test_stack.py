"""The stack as the container sees it: Ethernet frames in, frames and flow events out."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netns.config import GATEWAY_MAC, NetConfig
from netns.packets import (
    ACK,
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    FIN,
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    RST,
    SYN,
    UNREACH_PORT,
    ArpPacket,
    EthernetFrame,
    IcmpMessage,
    IPv4Packet,
    TcpOptions,
    TcpSegment,
    UdpDatagram,
    fragment,
    parse_ip,
)
from netns.reassembly import Reassembler
from netns.stack import (
    DnsQuery,
    OpenTcp,
    PingClose,
    PingSend,
    SendFrame,
    Stack,
    StackAction,
    TcpClose,
    TcpDeliver,
    TcpHostEOF,
    UdpClose,
    UdpSend,
)
from netns.tcp import State

CONTAINER_MAC = bytes.fromhex("0242ac110002")
CONTAINER_IP = parse_ip("10.0.2.100")
GATEWAY_IP = parse_ip("10.0.2.2")
DNS_IP = parse_ip("10.0.2.3")
REMOTE_IP = parse_ip("93.184.216.34")


def frames(actions: list[StackAction]) -> list[bytes]:
    return [a.frame for a in actions if isinstance(a, SendFrame)]


def events(actions: list[StackAction]) -> list[StackAction]:
    return [a for a in actions if not isinstance(a, SendFrame)]


def check_frame(
    frame: bytes, config: NetConfig, container_mac: bytes = CONTAINER_MAC
) -> IPv4Packet | ArpPacket:
    """Every frame the stack emits must be well formed, checksums included."""
    eth = EthernetFrame.parse(frame)
    assert eth.src == config.gateway_mac
    assert eth.dst == container_mac
    assert not eth.dst[0] & 1 and eth.dst != bytes(6)
    if eth.ethertype == ETHERTYPE_ARP:
        return ArpPacket.parse(eth.payload)
    assert eth.ethertype == ETHERTYPE_IPV4
    assert len(eth.payload) <= config.mtu
    packet = IPv4Packet.parse(eth.payload)
    assert packet.dst == config.container_ip
    if packet.is_fragment:
        return packet
    if packet.protocol == PROTO_TCP:
        TcpSegment.parse(packet.payload, packet.src, packet.dst)
    elif packet.protocol == PROTO_UDP:
        UdpDatagram.parse(packet.payload, packet.src, packet.dst)
    else:
        assert packet.protocol == PROTO_ICMP
        IcmpMessage.parse(packet.payload)
    return packet


class Container:
    """Builds the container's frames and decodes the stack's answers."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.now = 0.0

    def ip_frame(self, dst: bytes, protocol: int, payload: bytes, **fields: int) -> bytes:
        packet = IPv4Packet(CONTAINER_IP, dst, protocol, payload, **fields)  # type: ignore[arg-type]
        return EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV4, packet.build()).build()

    def send_ip(self, dst: bytes, protocol: int, payload: bytes) -> list[StackAction]:
        return self.stack.receive_frame(self.ip_frame(dst, protocol, payload), self.now)

    def tcp(self, dst: bytes, segment: TcpSegment) -> list[StackAction]:
        return self.send_ip(dst, PROTO_TCP, segment.build(CONTAINER_IP, dst))

    def udp(self, dst: bytes, sport: int, dport: int, payload: bytes) -> list[StackAction]:
        datagram = UdpDatagram(sport, dport, payload).build(CONTAINER_IP, dst)
        return self.send_ip(dst, PROTO_UDP, datagram)

    def packets(self, actions: list[StackAction]) -> list[IPv4Packet]:
        out = []
        for frame in frames(actions):
            packet = check_frame(frame, self.stack.config)
            assert isinstance(packet, IPv4Packet)
            out.append(packet)
        return out

    def tcp_replies(self, actions: list[StackAction]) -> list[TcpSegment]:
        return [
            TcpSegment.parse(p.payload, p.src, p.dst)
            for p in self.packets(actions)
            if p.protocol == PROTO_TCP
        ]


def new_stack(**config: object) -> tuple[Stack, Container]:
    counter = itertools.count(7000, 100000)
    config.setdefault("verify_checksums", True)  # the core tests and fuzzing verify them
    stack = Stack(NetConfig(**config), iss_source=lambda: next(counter))  # type: ignore[arg-type]
    return stack, Container(stack)


def arp_request(target: bytes, sender_ip: bytes = CONTAINER_IP) -> bytes:
    arp = ArpPacket(ARP_REQUEST, CONTAINER_MAC, sender_ip, bytes(6), target)
    return EthernetFrame(BROADCAST_MAC, CONTAINER_MAC, ETHERTYPE_ARP, arp.build()).build()


# --- ARP and ICMP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [GATEWAY_IP, DNS_IP])
def test_arp_for_gateway_and_dns(target: bytes) -> None:
    stack, _ = new_stack()
    [frame] = frames(stack.receive_frame(arp_request(target), 0.0))
    reply = check_frame(frame, stack.config)
    assert reply == ArpPacket(ARP_REPLY, GATEWAY_MAC, target, CONTAINER_MAC, CONTAINER_IP)
    assert stack.container_mac == CONTAINER_MAC


def test_arp_ignored_for_other_addresses_and_probes() -> None:
    stack, _ = new_stack()
    assert stack.receive_frame(arp_request(parse_ip("10.0.2.50")), 0.0) == []
    assert stack.receive_frame(arp_request(CONTAINER_IP, bytes(4)), 0.0) == []  # DAD probe
    assert stack.receive_frame(arp_request(GATEWAY_IP, bytes(4)), 0.0) == []
    assert stack.receive_frame(arp_request(GATEWAY_IP, parse_ip("10.0.2.7")), 0.0) == []


@pytest.mark.parametrize("target", [GATEWAY_IP, DNS_IP])
def test_ping_gateway(target: bytes) -> None:
    _stack, container = new_stack()
    request = IcmpMessage(ICMP_ECHO_REQUEST, 0, b"\x00\x07\x00\x01", b"abcdefgh" * 7)
    [reply_packet] = container.packets(container.send_ip(target, PROTO_ICMP, request.build()))
    assert reply_packet.src == target
    reply = IcmpMessage.parse(reply_packet.payload)
    assert reply == IcmpMessage(ICMP_ECHO_REPLY, 0, request.rest, request.payload)


def test_ping_elsewhere_is_relayed_and_bad_checksum_dropped() -> None:
    stack, container = new_stack()
    request = IcmpMessage(ICMP_ECHO_REQUEST, 0, b"\x00\x07\x00\x01", b"x").build()
    [send] = container.send_ip(REMOTE_IP, PROTO_ICMP, request)
    assert isinstance(send, PingSend)
    assert (send.dst, send.sequence, send.payload) == ("93.184.216.34", 1, b"x")
    # The host socket's reply gets the container's identifier back.
    [reply_packet] = container.packets(stack.ping_reply(send.flow_id, 1, b"x", 0.0))
    assert reply_packet.src == REMOTE_IP
    assert IcmpMessage.parse(reply_packet.payload) == IcmpMessage(
        ICMP_ECHO_REPLY, 0, b"\x00\x07\x00\x01", b"x"
    )
    [error_packet] = container.packets(stack.ping_unreachable(send.flow_id, 0.0))
    error = IcmpMessage.parse(error_packet.payload)
    assert (error.type, error.code) == (ICMP_DEST_UNREACHABLE, 0)
    assert error.payload[16:20] == REMOTE_IP  # the quoted request's destination
    # Idle ping flows are forgotten.
    assert stack.next_timeout() == stack.config.ping_flow_timeout
    assert stack.timeout(stack.config.ping_flow_timeout) == [PingClose(send.flow_id)]
    assert stack.ping_reply(send.flow_id, 1, b"x", 31.0) == []
    corrupt = request[:-1] + b"y"
    assert container.send_ip(GATEWAY_IP, PROTO_ICMP, corrupt) == []


def test_bad_ip_checksum_dropped() -> None:
    stack, container = new_stack()
    request = IcmpMessage(ICMP_ECHO_REQUEST, 0, bytes(4), b"x").build()
    frame = bytearray(container.ip_frame(GATEWAY_IP, PROTO_ICMP, request))
    frame[14 + 10] ^= 0xFF
    assert stack.receive_frame(bytes(frame), 0.0) == []


def test_foreign_frames_dropped() -> None:
    stack, container = new_stack()
    request = IcmpMessage(ICMP_ECHO_REQUEST, 0, bytes(4), b"x").build()
    good = container.ip_frame(GATEWAY_IP, PROTO_ICMP, request)
    assert stack.receive_frame(bytes(6) + good[6:], 0.0) == []  # not our MAC
    assert stack.receive_frame(good[:12] + b"\x86\xdd" + good[14:], 0.0) == []  # IPv6
    spoofed = IPv4Packet(parse_ip("10.0.2.99"), GATEWAY_IP, PROTO_ICMP, request).build()
    frame = EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV4, spoofed).build()
    assert stack.receive_frame(frame, 0.0) == []
    ipv6 = EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV6, bytes(40)).build()
    assert stack.receive_frame(ipv6, 0.0) == []
    for dst in ("10.0.2.255", "255.255.255.255", "224.0.0.251", "127.0.0.1", "10.0.2.50"):
        assert container.udp(parse_ip(dst), 5353, 5353, b"mdns?") == []


# --- TCP ------------------------------------------------------------------------------------------

CPORT = 41000


def open_connection(
    stack: Stack, container: Container, dst: bytes = REMOTE_IP, port: int = 80
) -> tuple[int, TcpSegment]:
    syn = TcpSegment(CPORT, port, 100, 0, SYN, 65535, options=TcpOptions(mss=1460))
    [event] = events(container.tcp(dst, syn))
    assert isinstance(event, OpenTcp)
    [syn_ack] = container.tcp_replies(stack.tcp_connected(event.flow_id, 0.0))
    assert syn_ack.flags == SYN | ACK and syn_ack.ack == 101
    ack = TcpSegment(CPORT, port, 101, syn_ack.seq + 1, ACK, 65535)
    assert container.tcp(dst, ack) == []
    assert stack.tcp_state(event.flow_id) is State.ESTABLISHED
    return event.flow_id, syn_ack


def test_tcp_flow_end_to_end() -> None:
    stack, container = new_stack()
    syn = TcpSegment(CPORT, 80, 100, 0, SYN, 65535, options=TcpOptions(mss=1460))
    [event] = events(container.tcp(REMOTE_IP, syn))
    assert isinstance(event, OpenTcp) and event.dst == ("93.184.216.34", 80)
    flow_id = event.flow_id
    [syn_ack_packet] = container.packets(stack.tcp_connected(flow_id, 0.0))
    assert syn_ack_packet.src == REMOTE_IP  # the stack impersonates the destination
    syn_ack = TcpSegment.parse(syn_ack_packet.payload, REMOTE_IP, CONTAINER_IP)
    assert (syn_ack.src_port, syn_ack.dst_port) == (80, CPORT)
    our = syn_ack.seq + 1

    actions = container.tcp(REMOTE_IP, TcpSegment(CPORT, 80, 101, our, ACK | PSH, 65535, b"GET /"))
    assert events(actions) == [TcpDeliver(flow_id, b"GET /")]
    [ack] = container.tcp_replies(actions)
    assert ack.ack == 106
    assert stack.host_consumed(flow_id, 5, 0.0) == []

    assert stack.host_send_space(flow_id) == stack.config.tcp_send_buffer
    [data] = container.tcp_replies(stack.host_data(flow_id, b"200 OK", 0.0))
    assert data.payload == b"200 OK" and data.seq == our
    [fin] = container.tcp_replies(stack.host_closed(flow_id, 0.0))
    assert fin.flags & FIN and fin.seq == our + 6

    actions = container.tcp(REMOTE_IP, TcpSegment(CPORT, 80, 106, our + 7, ACK | FIN, 65535))
    assert events(actions) == [TcpHostEOF(flow_id), TcpClose(flow_id, reset=False)]
    assert stack.tcp_state(flow_id) is State.TIME_WAIT
    deadline = stack.next_timeout()
    assert deadline == pytest.approx(stack.config.tcp_time_wait)
    assert deadline is not None and stack.timeout(deadline) == []
    assert stack.tcp_state(flow_id) is None and stack.flow_count == 0


def test_tcp_connect_failure_sends_rst() -> None:
    stack, container = new_stack()
    syn = TcpSegment(CPORT, 81, 100, 0, SYN, 65535)
    [event] = events(container.tcp(REMOTE_IP, syn))
    assert isinstance(event, OpenTcp)
    actions = stack.tcp_connect_failed(event.flow_id, 0.0)
    [rst] = container.tcp_replies(actions)
    assert rst.flags == RST | ACK and rst.ack == 101
    assert events(actions) == [TcpClose(event.flow_id, reset=True)]
    assert stack.flow_count == 0


def test_host_reset_sends_rst() -> None:
    stack, container = new_stack()
    flow_id, _ = open_connection(stack, container)
    actions = stack.host_reset(flow_id, 0.0)
    assert [s.flags for s in container.tcp_replies(actions)] == [RST]
    assert events(actions) == [TcpClose(flow_id, reset=True)]


@pytest.mark.parametrize("dst", [GATEWAY_IP, DNS_IP])
def test_tcp_to_gateway_refused_without_loopback(dst: bytes) -> None:
    _stack, container = new_stack()
    syn = TcpSegment(CPORT, 8080, 100, 0, SYN, 65535)
    actions = container.tcp(dst, syn)
    assert events(actions) == []
    [rst] = container.tcp_replies(actions)
    assert rst.flags == RST | ACK and rst.ack == 101 and rst.src_port == 8080


def test_tcp_to_gateway_reaches_host_loopback_when_allowed() -> None:
    stack, container = new_stack(allow_host_loopback=True)
    syn = TcpSegment(CPORT, 8080, 100, 0, SYN, 65535)
    [event] = events(container.tcp(GATEWAY_IP, syn))
    assert isinstance(event, OpenTcp) and event.dst == ("127.0.0.1", 8080)
    [packet] = container.packets(stack.tcp_connected(event.flow_id, 0.0))
    assert packet.src == GATEWAY_IP


def test_stray_segment_gets_rst() -> None:
    _stack, container = new_stack()
    stray = TcpSegment(CPORT, 80, 500, 777, ACK, 65535, b"zombie")
    [rst] = container.tcp_replies(container.tcp(REMOTE_IP, stray))
    assert rst.flags == RST and rst.seq == 777
    assert container.tcp(REMOTE_IP, stray.replace(flags=RST)) == []


def test_bad_tcp_checksum_dropped() -> None:
    stack, container = new_stack()
    syn = bytearray(TcpSegment(CPORT, 80, 100, 0, SYN, 65535).build(CONTAINER_IP, REMOTE_IP))
    syn[16] ^= 0x55
    assert container.send_ip(REMOTE_IP, PROTO_TCP, bytes(syn)) == []
    assert stack.flow_count == 0


def test_flow_cap() -> None:
    stack, container = new_stack(max_flows=2)
    for port in (1, 2):
        syn = TcpSegment(CPORT + port, 80, 100, 0, SYN, 65535)
        assert isinstance(events(container.tcp(REMOTE_IP, syn))[0], OpenTcp)
    syn = TcpSegment(CPORT + 3, 80, 100, 0, SYN, 65535)
    actions = container.tcp(REMOTE_IP, syn)
    assert events(actions) == []
    assert container.tcp_replies(actions)[0].flags & RST
    assert container.udp(REMOTE_IP, 5000, 53, b"q") == []
    assert stack.flow_count == 2


def test_time_wait_flow_is_evicted_for_a_new_one() -> None:
    stack, container = new_stack(max_flows=1)
    flow_id, syn_ack = open_connection(stack, container)
    stack.host_closed(flow_id, 0.0)
    our = syn_ack.seq + 1
    container.tcp(REMOTE_IP, TcpSegment(CPORT, 80, 101, our + 1, ACK | FIN, 65535))
    assert stack.tcp_state(flow_id) is State.TIME_WAIT
    other = TcpSegment(CPORT + 1, 80, 100, 0, SYN, 65535)
    assert isinstance(events(container.tcp(REMOTE_IP, other))[0], OpenTcp)
    assert stack.tcp_state(flow_id) is None


def test_new_syn_reopens_time_wait_connection() -> None:
    stack, container = new_stack()
    flow_id, syn_ack = open_connection(stack, container)
    stack.host_closed(flow_id, 0.0)
    container.tcp(REMOTE_IP, TcpSegment(CPORT, 80, 101, syn_ack.seq + 2, ACK | FIN, 65535))
    assert stack.tcp_state(flow_id) is State.TIME_WAIT
    [event] = events(container.tcp(REMOTE_IP, TcpSegment(CPORT, 80, 90000, 0, SYN, 65535)))
    assert isinstance(event, OpenTcp) and event.flow_id != flow_id


def test_buffer_cap_limits_host_reads() -> None:
    stack, container = new_stack(max_buffered_bytes=10_000)
    flow_id, _ = open_connection(stack, container)
    assert stack.host_send_space(flow_id) == 10_000
    stack.host_data(flow_id, b"x" * 4000, 0.0)  # unacknowledged: still buffered
    assert stack.host_send_space(flow_id) == 6_000
    assert stack.buffered_bytes() == 4000


def test_tcp_retransmission_through_the_stack() -> None:
    stack, container = new_stack()
    flow_id, _ = open_connection(stack, container)
    [first] = container.tcp_replies(stack.host_data(flow_id, b"hello", 0.0))
    deadline = stack.next_timeout()
    assert deadline is not None
    [again] = container.tcp_replies(stack.timeout(deadline))
    assert again == first


# --- UDP and DNS ----------------------------------------------------------------------------------


def test_udp_flow() -> None:
    stack, container = new_stack(udp_flow_timeout=60.0)
    [event] = events(container.udp(REMOTE_IP, 5000, 123, b"ntp?"))
    assert isinstance(event, UdpSend)
    assert (event.dst, event.payload) == (("93.184.216.34", 123), b"ntp?")
    flow_id = event.flow_id
    [again] = events(container.udp(REMOTE_IP, 5000, 123, b"again"))
    assert again == UdpSend(flow_id, ("93.184.216.34", 123), b"again")
    [packet] = container.packets(stack.udp_from_host(flow_id, b"ntp!", 1.0))
    assert packet.src == REMOTE_IP
    assert UdpDatagram.parse(packet.payload, REMOTE_IP, CONTAINER_IP) == UdpDatagram(
        123, 5000, b"ntp!"
    )
    assert stack.next_timeout() == pytest.approx(61.0)
    assert stack.timeout(61.0) == [UdpClose(flow_id)]
    assert stack.udp_from_host(flow_id, b"late", 62.0) == []


def test_dns_query_and_answer() -> None:
    stack, container = new_stack()
    [event] = events(container.udp(DNS_IP, 33333, 53, b"query"))
    assert isinstance(event, DnsQuery) and event.payload == b"query"
    [packet] = container.packets(stack.udp_from_host(event.flow_id, b"answer", 0.0))
    assert packet.src == DNS_IP
    datagram = UdpDatagram.parse(packet.payload, DNS_IP, CONTAINER_IP)
    assert (datagram.src_port, datagram.dst_port, datagram.payload) == (53, 33333, b"answer")


@pytest.mark.parametrize(("dst", "port"), [(GATEWAY_IP, 9999), (DNS_IP, 54)])
def test_udp_refused_with_port_unreachable(dst: bytes, port: int) -> None:
    _stack, container = new_stack()
    actions = container.udp(dst, 5000, port, b"knock")
    assert events(actions) == []
    [packet] = container.packets(actions)
    assert packet.protocol == PROTO_ICMP and packet.src == dst
    icmp = IcmpMessage.parse(packet.payload)
    assert (icmp.type, icmp.code) == (ICMP_DEST_UNREACHABLE, UNREACH_PORT)
    quoted = icmp.payload
    assert quoted[12:20] == CONTAINER_IP + dst  # the offending header
    assert quoted[20:24] == (5000).to_bytes(2, "big") + port.to_bytes(2, "big")


def test_udp_to_gateway_with_loopback() -> None:
    _stack, container = new_stack(allow_host_loopback=True)
    [event] = events(container.udp(GATEWAY_IP, 5000, 9999, b"hi"))
    assert isinstance(event, UdpSend) and event.dst == ("127.0.0.1", 9999)


def test_bad_udp_checksum_dropped() -> None:
    _stack, container = new_stack()
    datagram = bytearray(UdpDatagram(5000, 53, b"hello").build(CONTAINER_IP, REMOTE_IP))
    datagram[-1] ^= 1
    assert container.send_ip(REMOTE_IP, PROTO_UDP, bytes(datagram)) == []


def test_fragmented_udp_is_reassembled() -> None:
    stack, _container = new_stack()
    payload = bytes(range(256)) * 16
    datagram = UdpDatagram(5000, 9000, payload).build(CONTAINER_IP, REMOTE_IP)
    packet = IPv4Packet(CONTAINER_IP, REMOTE_IP, PROTO_UDP, datagram, identification=77)
    pieces = fragment(packet, 1500)
    results = []
    for piece in reversed(pieces):
        frame = EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_IPV4, piece.build()).build()
        results.append(stack.receive_frame(frame, 0.0))
    assert results[:-1] == [[]] * (len(pieces) - 1)
    [event] = results[-1]
    assert isinstance(event, UdpSend) and event.payload == payload


def test_large_udp_reply_is_fragmented_to_the_mtu() -> None:
    stack, container = new_stack(mtu=1500)
    [event] = events(container.udp(REMOTE_IP, 5000, 9000, b"?"))
    assert isinstance(event, UdpSend)
    reply = bytes(range(256)) * 20
    packets = container.packets(stack.udp_from_host(event.flow_id, reply, 0.0))
    assert len(packets) == 4
    reassembler = Reassembler()
    results = [reassembler.feed(p, 0.0) for p in packets]
    whole = results[-1]
    assert whole is not None
    assert UdpDatagram.parse(whole.payload, REMOTE_IP, CONTAINER_IP).payload == reply


# --- fuzzing --------------------------------------------------------------------------------------


def sample_frames() -> list[bytes]:
    _stack, container = new_stack()
    syn = TcpSegment(CPORT, 80, 100, 0, SYN, 65535, options=TcpOptions(1460, 7, True, (1, 0)))
    return [
        arp_request(GATEWAY_IP),
        container.ip_frame(
            GATEWAY_IP,
            PROTO_ICMP,
            IcmpMessage(ICMP_ECHO_REQUEST, 0, bytes(4), b"ping").build(),
        ),
        container.ip_frame(REMOTE_IP, PROTO_TCP, syn.build(CONTAINER_IP, REMOTE_IP)),
        container.ip_frame(
            REMOTE_IP,
            PROTO_TCP,
            TcpSegment(CPORT, 80, 101, 7001, ACK | PSH, 65535, b"data").build(
                CONTAINER_IP, REMOTE_IP
            ),
        ),
        container.ip_frame(
            REMOTE_IP,
            PROTO_TCP,
            TcpSegment(CPORT, 80, 101, 7001, ACK | FIN, 65535).build(CONTAINER_IP, REMOTE_IP),
        ),
        container.ip_frame(
            DNS_IP, PROTO_UDP, UdpDatagram(3333, 53, b"query").build(CONTAINER_IP, DNS_IP)
        ),
        container.ip_frame(
            GATEWAY_IP, PROTO_UDP, UdpDatagram(3333, 99, b"x").build(CONTAINER_IP, GATEWAY_IP)
        ),
        container.ip_frame(REMOTE_IP, PROTO_UDP, bytes(16), more_fragments=True, identification=5),
    ]


SAMPLES = sample_frames()


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for position, value in flips:
        out[position % len(out)] = value
    return bytes(out[: len(out) - cut % (len(out) + 1)])


def check_actions(stack: Stack, actions: list[StackAction]) -> None:
    for action in actions:
        if isinstance(action, SendFrame):
            # The container may change its MAC address; the stack follows it.
            assert stack.container_mac is not None
            check_frame(action.frame, stack.config, stack.container_mac)


frame_strategy = st.one_of(
    st.binary(max_size=120),
    st.builds(
        mutate,
        st.sampled_from(SAMPLES),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3),
        st.integers(0, 100),
    ),
    st.sampled_from(SAMPLES),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_strategy, max_size=12), st.lists(st.sampled_from(["ok", "fail"])))
def test_receive_frame_never_raises_nor_emits_invalid_frames(
    inputs: list[bytes], host_events: list[str]
) -> None:
    stack, _ = new_stack()
    stack.receive_frame(arp_request(GATEWAY_IP), 0.0)  # learn the container's MAC
    now = 0.0
    for index, frame in enumerate(inputs):
        now += 0.05
        actions = stack.receive_frame(frame, now)
        check_actions(stack, actions)
        for action in actions:
            if isinstance(action, OpenTcp):
                event = host_events[index % len(host_events)] if host_events else "ok"
                follow = (
                    stack.tcp_connected(action.flow_id, now)
                    if event == "ok"
                    else stack.tcp_connect_failed(action.flow_id, now)
                )
                check_actions(stack, follow)
                if event == "ok":
                    space = stack.host_send_space(action.flow_id)
                    check_actions(stack, stack.host_data(action.flow_id, b"r" * space, now))
            elif isinstance(action, TcpDeliver):
                check_actions(stack, stack.host_consumed(action.flow_id, len(action.data), now))
            elif isinstance(action, (UdpSend, DnsQuery)):
                check_actions(stack, stack.udp_from_host(action.flow_id, b"reply", now))
    deadline = stack.next_timeout()
    while deadline is not None and deadline < now + 1000:
        now = deadline
        check_actions(stack, stack.timeout(now))
        deadline = stack.next_timeout()


# --- later additions ------------------------------------------------------------------------------


def test_unknown_container_mac_triggers_arp_request() -> None:
    stack2, container2 = new_stack()
    [event] = events(container2.udp(DNS_IP, 3333, 53, b"q"))
    assert isinstance(event, DnsQuery)
    stack2.container_mac = None  # as if forgotten (port publishing can send first)
    [frame] = frames(stack2.udp_from_host(event.flow_id, b"a", 0.0))
    eth = EthernetFrame.parse(frame)
    assert eth.dst == BROADCAST_MAC and eth.ethertype == ETHERTYPE_ARP
    request = ArpPacket.parse(eth.payload)
    assert (request.operation, request.target_ip) == (ARP_REQUEST, CONTAINER_IP)
    # The container's reply teaches the stack its MAC again.
    reply = ArpPacket(ARP_REPLY, CONTAINER_MAC, CONTAINER_IP, GATEWAY_MAC, GATEWAY_IP)
    answer = EthernetFrame(GATEWAY_MAC, CONTAINER_MAC, ETHERTYPE_ARP, reply.build()).build()
    assert stack2.receive_frame(answer, 0.0) == []
    assert stack2.container_mac == CONTAINER_MAC
    assert len(container2.packets(stack2.udp_from_host(event.flow_id, b"a", 0.0))) == 1


def test_dns_over_tcp_goes_to_the_upstream_resolver() -> None:
    stack, container = new_stack(dns_upstream="192.168.1.1")
    [event] = events(container.tcp(DNS_IP, TcpSegment(CPORT, 53, 100, 0, SYN, 65535)))
    assert isinstance(event, OpenTcp) and event.dst == ("192.168.1.1", 53)
    [packet] = container.packets(stack.tcp_connected(event.flow_id, 0.0))
    assert packet.src == DNS_IP
    # Other ports on the DNS address stay closed.
    actions = container.tcp(DNS_IP, TcpSegment(CPORT, 80, 100, 0, SYN, 65535))
    assert [s.flags for s in container.tcp_replies(actions)] == [RST | ACK]


# --- checksums and ACK coalescing -----------------------------------------------------------------


def test_bad_tcp_checksum_accepted_unless_verifying() -> None:
    # NetConfig's default: frames from a TAP device carry the container kernel's checksums.
    _stack, container = new_stack(verify_checksums=False)
    syn = bytearray(TcpSegment(CPORT, 80, 100, 0, SYN, 65535).build(CONTAINER_IP, REMOTE_IP))
    syn[16] ^= 0x55
    [event] = events(container.send_ip(REMOTE_IP, PROTO_TCP, bytes(syn)))
    assert isinstance(event, OpenTcp)
    assert NetConfig().verify_checksums is False


def test_acks_coalesced_within_a_batch() -> None:
    stack, container = new_stack()
    flow_id, syn_ack = open_connection(stack, container)
    our = syn_ack.seq + 1
    stack.begin_batch()
    delivered = []
    for i in range(5):
        segment = TcpSegment(CPORT, 80, 101 + 100 * i, our, ACK, 65535, bytes([i]) * 100)
        actions = container.tcp(REMOTE_IP, segment)
        assert container.tcp_replies(actions) == []  # owed, not sent
        delivered += events(actions)
    assert delivered == [TcpDeliver(flow_id, bytes([i]) * 100) for i in range(5)]
    [ack] = container.tcp_replies(stack.end_batch(0.0))
    assert ack.flags == ACK and ack.ack == 601
    assert stack.end_batch(0.0) == []  # nothing owed any more


def test_batch_ack_carried_by_data_and_duplicate_acks_not_deferred() -> None:
    stack, container = new_stack()
    flow_id, syn_ack = open_connection(stack, container)
    our = syn_ack.seq + 1
    stack.begin_batch()
    segment = TcpSegment(CPORT, 80, 101, our, ACK, 65535, b"x" * 10)
    assert container.tcp_replies(container.tcp(REMOTE_IP, segment)) == []
    [data] = container.tcp_replies(stack.host_data(flow_id, b"reply", 0.0))
    assert data.ack == 111 and data.payload == b"reply"  # the data carries the ACK
    ahead = TcpSegment(CPORT, 80, 211, our, ACK, 65535, b"y" * 10)  # leaves a hole
    [dup] = container.tcp_replies(container.tcp(REMOTE_IP, ahead))
    assert dup.ack == 111
    assert stack.end_batch(0.0) == []


@pytest.mark.parametrize("offload", [False, True])
def test_host_data_goes_out_uncopied_after_the_headers(offload: bool) -> None:
    """The payload of a segment is a view into the bytes the host socket gave (no copy in
    Python; the driver writes head and payload with one writev), and head + payload is the
    frame the general builder would have made."""
    stack, container = new_stack(verify_checksums=False)
    flow_id, syn_ack = open_connection(stack, container)  # its checks verify checksums
    stack.config = stack.config.replace(checksum_offload=offload)
    data = bytes(range(256)) * 16  # three segments of the MSS (1460)
    action, *_rest = stack.host_data(flow_id, data, 0.0)
    assert isinstance(action, SendFrame) and action.partial_checksum is offload
    assert isinstance(action.payload, memoryview) and action.payload.obj is data
    assert len(action.head) == 14 + 20 + 20
    packet = IPv4Packet.parse(EthernetFrame.parse(action.frame).payload)
    segment = TcpSegment.parse(packet.payload, packet.src, packet.dst, verify=not offload)
    assert segment.payload == data[:1460] and segment.seq == syn_ack.seq + 1
