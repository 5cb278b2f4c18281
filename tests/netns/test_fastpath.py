"""netns.fastpath against the general parsers, and the stack with and without it."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netns.config import GATEWAY_MAC, NetConfig
from netns.fastpath import parse_tcp4, parse_tcp6
from netns.ipv6 import PROTO_DEST_OPTIONS, IPv6Packet, parse_ip6
from netns.packets import (
    ACK,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    FIN,
    PROTO_TCP,
    PSH,
    SYN,
    EthernetFrame,
    IPv4Packet,
    ParseError,
    TcpOptions,
    TcpSegment,
    parse_ip,
)
from netns.stack import OpenTcp, SendFrame, Stack, StackAction, TcpDeliver

CONTAINER_MAC = bytes.fromhex("0242ac110002")
CONTAINER_IP = parse_ip("10.0.2.100")
GATEWAY_IP = parse_ip("10.0.2.2")
REMOTE_IP = parse_ip("93.184.216.34")
CONTAINER_IP6 = parse_ip6("fd00::100")
GATEWAY_IP6 = parse_ip6("fd00::2")
REMOTE_IP6 = parse_ip6("2001:db8::77")


def tcp_frame4(
    segment: TcpSegment,
    dst: bytes = GATEWAY_IP,
    *,
    src: bytes = CONTAINER_IP,
    mac: bytes = GATEWAY_MAC,
    **ip_fields: int | bool,
) -> bytes:
    packet = IPv4Packet(src, dst, PROTO_TCP, segment.build(src, dst), **ip_fields)  # type: ignore[arg-type]
    return EthernetFrame(mac, CONTAINER_MAC, ETHERTYPE_IPV4, packet.build()).build()


tcp_frame = tcp_frame4


def general(frame: bytes) -> tuple[bytes, bytes, TcpSegment] | None:
    """What the general parsers make of a frame (None: they reject it)."""
    try:
        eth = EthernetFrame.parse(frame)
        packet = IPv4Packet.parse(eth.payload)
        segment = TcpSegment.parse(packet.payload, packet.src, packet.dst, verify=False)
    except ParseError:
        return None
    return eth.src, packet.dst, segment


segments = st.builds(
    TcpSegment,
    src_port=st.integers(1, 0xFFFF),
    dst_port=st.integers(1, 0xFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    ack=st.integers(0, 0xFFFFFFFF),
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=2000),
    options=st.sampled_from([TcpOptions(), TcpOptions(mss=1460, window_scale=7)]),
    urgent=st.integers(0, 0xFFFF),
)


@settings(max_examples=300)
@given(segments, st.sampled_from([GATEWAY_IP, REMOTE_IP]), st.booleans(), st.binary(max_size=30))
def test_agrees_with_the_general_parsers(
    segment: TcpSegment, dst: bytes, dont_fragment: bool, padding: bytes
) -> None:
    frame = tcp_frame(segment, dst, dont_fragment=dont_fragment) + padding  # Ethernet padding
    fast = parse_tcp4(memoryview(frame), GATEWAY_MAC, CONTAINER_IP)
    assert fast is not None
    src_mac, fast_dst, fast_segment = fast
    assert isinstance(fast_segment.payload, memoryview)  # no copy
    assert (src_mac, fast_dst, fast_segment) == general(frame)
    assert fast_segment == segment


def declined() -> list[tuple[str, bytes]]:
    segment = TcpSegment(40000, 80, 1, 2, ACK, 512, b"data")
    good = tcp_frame(segment)
    bad_ip_sum = bytearray(good)
    bad_ip_sum[24] ^= 0xFF
    long_total = bytearray(good)
    long_total[16:18] = (len(good) - 14 + 1).to_bytes(2, "big")
    bad_offset = bytearray(good)
    bad_offset[46] = 0x40  # data offset 4 words
    bad_option = bytearray(tcp_frame(TcpSegment(1, 2, 0, 0, SYN, 0, options=TcpOptions(mss=9))))
    bad_option[55] = 9  # the MSS option's length runs past the header
    with_ip_options = bytearray(good[:14] + b"\x46" + good[15:34] + bytes(4) + good[34:])
    return [
        ("another MAC", tcp_frame(segment, mac=bytes.fromhex("02aabbccddee"))),
        ("spoofed source", tcp_frame(segment, src=parse_ip("10.0.2.99"))),
        ("first fragment", tcp_frame(segment, more_fragments=True)),
        ("later fragment", tcp_frame(segment, fragment_offset=8)),
        ("bad IPv4 checksum", bytes(bad_ip_sum)),
        ("total length beyond the frame", bytes(long_total)),
        ("TCP data offset too small", bytes(bad_offset)),
        ("malformed TCP option", bytes(bad_option)),
        ("IPv4 options", bytes(with_ip_options)),
        ("truncated", good[:53]),
        ("UDP", good[:23] + b"\x11" + good[24:]),
        ("not IPv4", good[:12] + b"\x86\xdd" + good[14:]),
    ]


@pytest.mark.parametrize(("what", "frame"), declined(), ids=[w for w, _ in declined()])
def test_declines_what_it_does_not_take(what: str, frame: bytes) -> None:
    assert parse_tcp4(memoryview(frame), GATEWAY_MAC, CONTAINER_IP) is None


@settings(max_examples=500)
@given(st.data())
def test_random_and_mutated_frames(data: st.DataObject) -> None:
    """Never raises; whatever it takes, the general parsers read the same way."""
    if data.draw(st.booleans()):
        frame = bytearray(data.draw(st.binary(max_size=200)))
    else:
        frame = bytearray(tcp_frame(data.draw(segments)))
        for _ in range(data.draw(st.integers(1, 4))):
            index = data.draw(st.integers(0, len(frame) - 1))
            frame[index] = data.draw(st.integers(0, 255))
        frame = frame[: data.draw(st.integers(0, len(frame)))]
    fast = parse_tcp4(memoryview(bytes(frame)), GATEWAY_MAC, CONTAINER_IP)
    if fast is not None:
        assert fast == general(bytes(frame))


# --- IPv6 ---------------------------------------------------------------------------------------


def tcp_frame6(
    segment: TcpSegment,
    dst: bytes = GATEWAY_IP6,
    *,
    src: bytes = CONTAINER_IP6,
    mac: bytes = GATEWAY_MAC,
) -> bytes:
    packet = IPv6Packet(src, dst, PROTO_TCP, segment.build(src, dst))
    return EthernetFrame(mac, CONTAINER_MAC, ETHERTYPE_IPV6, packet.build()).build()


def general6(frame: bytes) -> tuple[bytes, bytes, TcpSegment] | None:
    """What the general parsers make of an IPv6 frame (None: they reject it, or it is not
    TCP from the container to the gateway's MAC)."""
    try:
        eth = EthernetFrame.parse(frame)
        if eth.ethertype != ETHERTYPE_IPV6 or eth.dst != GATEWAY_MAC or eth.src[0] & 1:
            return None
        packet = IPv6Packet.parse(eth.payload)
        if packet.protocol != PROTO_TCP or packet.src != CONTAINER_IP6:
            return None
        segment = TcpSegment.parse(packet.payload, packet.src, packet.dst, verify=False)
    except ParseError:
        return None
    return eth.src, packet.dst, segment


@settings(max_examples=300)
@given(segments, st.sampled_from([GATEWAY_IP6, REMOTE_IP6]), st.binary(max_size=30))
def test_ipv6_agrees_with_the_general_parsers(
    segment: TcpSegment, dst: bytes, padding: bytes
) -> None:
    frame = tcp_frame6(segment, dst) + padding
    fast = parse_tcp6(memoryview(frame), GATEWAY_MAC, CONTAINER_IP6)
    assert fast is not None
    assert isinstance(fast[2].payload, memoryview)  # no copy
    assert fast == general6(frame)
    assert fast[2] == segment


def declined6() -> list[tuple[str, bytes]]:
    segment = TcpSegment(40000, 80, 1, 2, ACK, 512, b"data")
    good = tcp_frame6(segment)
    long_payload = bytearray(good)
    long_payload[18:20] = (len(good) - 54 + 1).to_bytes(2, "big")
    bad_offset = bytearray(good)
    bad_offset[66] = 0x40  # data offset 4 words
    bad_option = bytearray(tcp_frame6(TcpSegment(1, 2, 0, 0, SYN, 0, options=TcpOptions(mss=9))))
    bad_option[75] = 9  # the MSS option's length runs past the header
    # A destination options header (8 bytes, no options but padding) before TCP.
    tcp = good[54:]
    extension = bytes([PROTO_TCP, 0, 1, 4, 0, 0, 0, 0])
    with_extension = bytearray(good[:54] + extension + tcp)
    with_extension[18:20] = (len(extension) + len(tcp)).to_bytes(2, "big")
    with_extension[20] = PROTO_DEST_OPTIONS
    return [
        ("another MAC", tcp_frame6(segment, mac=bytes.fromhex("02aabbccddee"))),
        ("multicast MAC", tcp_frame6(segment, mac=bytes.fromhex("333300000001"))),
        ("spoofed source", tcp_frame6(segment, src=parse_ip6("fd00::99"))),
        ("payload length beyond the frame", bytes(long_payload)),
        ("TCP data offset too small", bytes(bad_offset)),
        ("malformed TCP option", bytes(bad_option)),
        ("extension header", bytes(with_extension)),
        ("truncated", good[:73]),
        ("UDP", good[:20] + b"\x11" + good[21:]),
        ("IPv4", tcp_frame4(segment)),
        ("version 4 in an IPv6 frame", good[:14] + b"\x40" + good[15:]),
    ]


@pytest.mark.parametrize(("what", "frame"), declined6(), ids=[w for w, _ in declined6()])
def test_ipv6_declines_what_it_does_not_take(what: str, frame: bytes) -> None:
    assert parse_tcp6(memoryview(frame), GATEWAY_MAC, CONTAINER_IP6) is None


def test_ipv6_extension_headers_are_still_read_by_the_general_path() -> None:
    frame = dict(declined6())["extension header"]
    parsed = general6(frame)
    assert parsed is not None and bytes(parsed[2].payload) == b"data"


@settings(max_examples=500)
@given(st.data())
def test_ipv6_random_and_mutated_frames(data: st.DataObject) -> None:
    """Never raises; whatever it takes, the general parsers read the same way."""
    if data.draw(st.booleans()):
        frame = bytearray(data.draw(st.binary(max_size=200)))
    else:
        frame = bytearray(tcp_frame6(data.draw(segments)))
        for _ in range(data.draw(st.integers(1, 4))):
            index = data.draw(st.integers(0, len(frame) - 1))
            frame[index] = data.draw(st.integers(0, 255))
        frame = frame[: data.draw(st.integers(0, len(frame)))]
    fast = parse_tcp6(memoryview(bytes(frame)), GATEWAY_MAC, CONTAINER_IP6)
    if fast is not None:
        assert fast == general6(bytes(frame))


# --- the stack with and without the fast path ---------------------------------------------------


class GeneralOnly(Stack):
    """The stack with its fast path switched off: the reference it must agree with."""

    def _receive_tcp_fast(self, frame: memoryview, now: float) -> list[StackAction] | None:
        return None


def stacks() -> tuple[Stack, Stack]:
    # A receive buffer whose window needs no scaling: every byte of it shows in the ACKs.
    config = NetConfig(
        allow_host_loopback=True, checksum_offload=True, tcp_receive_buffer=30000, ipv6=True
    )
    fast_iss, reference_iss = itertools.count(7000, 100000), itertools.count(7000, 100000)
    fast = Stack(config, iss_source=lambda: next(fast_iss))
    return fast, GeneralOnly(config, iss_source=lambda: next(reference_iss))


def normalised(actions: list[StackAction]) -> list[StackAction]:
    """TcpDeliver data as bytes (the fast path hands out views)."""
    return [
        TcpDeliver(a.flow_id, bytes(a.data)) if isinstance(a, TcpDeliver) else a for a in actions
    ]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_stack_agrees_with_its_general_path(seed: int, family: str) -> None:
    """An upload with losses, reordering, duplicates, window updates and a close, fed to a stack
    with the fast path and one without: the same actions, frame for frame."""
    rng = random.Random(seed)
    fast, reference = stacks()
    now = 0.0
    port = 40000
    tcp_frame = tcp_frame4 if family == "ipv4" else tcp_frame6

    def both(frame: bytes) -> list[StackAction]:
        out = normalised(fast.receive_frame(frame, now))
        assert out == normalised(reference.receive_frame(frame, now))
        return out

    syn = TcpSegment(port, 80, 100, 0, SYN, 65535, options=TcpOptions(mss=1460, window_scale=2))
    [open_tcp] = both(tcp_frame(syn))
    assert isinstance(open_tcp, OpenTcp)
    flow = open_tcp.flow_id
    [syn_ack_frame] = fast.tcp_connected(flow, now)
    assert reference.tcp_connected(flow, now) == [syn_ack_frame]
    assert isinstance(syn_ack_frame, SendFrame)
    ack = 7001
    seq = 101
    both(tcp_frame(TcpSegment(port, 80, seq, ack, ACK, 1000)))
    stream = rng.randbytes(60000)
    sent = 0
    undelivered = 0
    while sent < len(stream):
        now += 0.001
        size = rng.choice([1, 100, 1460, 1460, 1460])
        offset = sent if rng.random() < 0.8 else max(0, sent - rng.randint(0, 3000))
        if rng.random() < 0.1:
            offset = min(len(stream), sent + rng.randint(1, 3000))  # ahead of a hole
        chunk = stream[offset : offset + size]
        window = 1000 if rng.random() < 0.9 else rng.randint(0, 2000)
        flags = ACK | (PSH if rng.random() < 0.5 else 0)
        actions = both(tcp_frame(TcpSegment(port, 80, seq + offset, ack, flags, window, chunk)))
        if offset <= sent < offset + len(chunk):
            sent = offset + len(chunk)
        for action in actions:
            if isinstance(action, TcpDeliver):
                undelivered += len(action.data)
        if undelivered and rng.random() < 0.5:
            count = rng.randint(1, undelivered)
            undelivered -= count
            consumed = normalised(fast.host_consumed(flow, count, now))
            assert consumed == normalised(reference.host_consumed(flow, count, now))
        if rng.random() < 0.1:
            assert fast.end_batch(now) == reference.end_batch(now)
            fast.begin_batch()
            reference.begin_batch()
    fin = TcpSegment(port, 80, seq + len(stream), ack, ACK | FIN, 1000)
    both(tcp_frame(fin))
    assert fast.tcp_state(flow) == reference.tcp_state(flow)
