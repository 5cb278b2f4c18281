"""Codecs: hand-computed vectors, round trips, and parsers that only ever raise ParseError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netns.packets import (
    ACK,
    ARP_REQUEST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ICMP_ECHO_REQUEST,
    PROTO_TCP,
    PROTO_UDP,
    SYN,
    ArpPacket,
    EthernetFrame,
    IcmpMessage,
    IPv4Packet,
    ParseError,
    TcpOptions,
    TcpSegment,
    UdpDatagram,
    checksum,
    format_ip,
    format_mac,
    fragment,
    parse_ip,
)

SRC = parse_ip("10.0.2.100")
DST = parse_ip("93.184.216.34")


def reference_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way, to check the fast implementation against."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# The IPv4 header from Wikipedia's "IPv4 header checksum" article.
WIKIPEDIA_HEADER = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")


def test_checksum_known_vector() -> None:
    assert checksum(WIKIPEDIA_HEADER) == 0xB861
    header = WIKIPEDIA_HEADER[:10] + b"\xb8\x61" + WIKIPEDIA_HEADER[12:]
    assert checksum(header) == 0


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_checksum_matches_reference(a: bytes, b: bytes) -> None:
    if len(a) % 2:
        a += b"\x00"
    assert checksum(a, b) == reference_checksum(a + b)


def test_checksum_edge_cases() -> None:
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\x00\x00") == 0xFFFF
    assert checksum(b"\xff\xff") == 0x0000
    assert checksum(b"\x01") == reference_checksum(b"\x01")


def test_address_formatting() -> None:
    assert format_ip(parse_ip("10.0.2.3")) == "10.0.2.3"
    assert format_mac(bytes.fromhex("52550a000202")) == "52:55:0a:00:02:02"
    for bad in ("10.0.2", "10.0.2.256", "a.b.c.d", "1.2.3.4.5"):
        with pytest.raises(ValueError):
            parse_ip(bad)


def test_ipv4_parse_wikipedia_header() -> None:
    data = WIKIPEDIA_HEADER[:10] + b"\xb8\x61" + WIKIPEDIA_HEADER[12:] + bytes(0x73 - 20)
    packet = IPv4Packet.parse(data)
    assert packet.src == parse_ip("192.168.0.1")
    assert packet.dst == parse_ip("192.168.0.199")
    assert packet.protocol == PROTO_UDP
    assert packet.dont_fragment and not packet.more_fragments
    assert packet.ttl == 64
    assert len(packet.payload) == 0x73 - 20
    # Rebuilding gives back the same bytes, checksum included.
    assert packet.build() == data


def test_ipv4_options_skipped_and_padding_trimmed() -> None:
    options = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x46, 0, 28, 7, 0, 64, 17, 0, SRC, DST))
    header += options
    header[10:12] = checksum(bytes(header)).to_bytes(2, "big")
    packet = IPv4Packet.parse(bytes(header) + b"DATA" + bytes(20))  # Ethernet padding after
    assert packet.payload == b"DATA"
    assert packet.identification == 7


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:19],  # truncated
        lambda d: b"\x65" + d[1:],  # version 6
        lambda d: b"\x44" + d[1:],  # IHL 4
        lambda d: d[:2] + b"\x00\x13" + d[4:],  # total length below header
        lambda d: d[:2] + b"\xff\xff" + d[4:],  # total length beyond the buffer
        lambda d: d[:11] + bytes([d[11] ^ 1]) + d[12:],  # bad checksum
    ],
)
def test_ipv4_rejects(mutate: object) -> None:
    data = IPv4Packet(SRC, DST, PROTO_UDP, b"payload").build()
    assert callable(mutate)
    with pytest.raises(ParseError):
        IPv4Packet.parse(mutate(data))


def test_fragment_splits_on_8_byte_boundaries() -> None:
    packet = IPv4Packet(SRC, DST, PROTO_UDP, bytes(range(256)) * 10, identification=9)
    pieces = fragment(packet, 576)
    assert [p.fragment_offset for p in pieces] == [0, 552, 1104, 1656, 2208]
    assert all(len(p.build()) <= 576 for p in pieces)
    assert [p.more_fragments for p in pieces] == [True, True, True, True, False]
    assert b"".join(p.payload for p in pieces) == packet.payload
    assert fragment(packet, 65520) == [packet]


def test_ethernet_round_trip_and_rejects() -> None:
    frame = EthernetFrame(b"\xff" * 6, b"\x02" * 6, ETHERTYPE_ARP, b"xyz")
    data = frame.build()
    assert data == b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06xyz"
    assert EthernetFrame.parse(data) == frame
    with pytest.raises(ParseError):
        EthernetFrame.parse(data[:13])
    with pytest.raises(ParseError):
        EthernetFrame.parse(data[:12] + b"\x00\x40" + data[14:])  # 802.3 length


def test_arp_vector() -> None:
    request = ArpPacket(ARP_REQUEST, b"\x02" * 6, SRC, bytes(6), parse_ip("10.0.2.2"))
    data = request.build()
    assert data.hex() == (
        "0001" "0800" "06" "04" "0001" "020202020202" "0a000264" "000000000000" "0a000202"
    )  # fmt: skip
    assert ArpPacket.parse(data) == request
    with pytest.raises(ParseError):
        ArpPacket.parse(data[:27])
    with pytest.raises(ParseError):
        ArpPacket.parse(b"\x00\x06" + data[2:])  # IEEE 802 hardware
    with pytest.raises(ParseError):
        ArpPacket.parse(data[:6] + b"\x00\x09" + data[8:])  # unknown operation


def test_icmp_echo_round_trip_and_bad_checksum() -> None:
    message = IcmpMessage(ICMP_ECHO_REQUEST, 0, b"\x12\x34\x00\x01", b"ping!")
    data = message.build()
    assert reference_checksum(data) == 0
    assert IcmpMessage.parse(data) == message
    with pytest.raises(ParseError):
        IcmpMessage.parse(data[:-1] + b"?")


def test_udp_vector_and_checksum() -> None:
    datagram = UdpDatagram(5353, 53, b"hello")
    data = datagram.build(SRC, DST)
    pseudo = SRC + DST + struct.pack("!BBH", 0, PROTO_UDP, len(data))
    assert reference_checksum(pseudo + data) == 0
    assert data[:6] == struct.pack("!HHH", 5353, 53, 13)
    assert UdpDatagram.parse(data, SRC, DST) == datagram
    # Zero checksum = not computed: accepted.
    assert UdpDatagram.parse(data[:6] + b"\x00\x00" + data[8:], SRC, DST) == datagram
    with pytest.raises(ParseError):
        UdpDatagram.parse(data[:-1] + b"!", SRC, DST)
    with pytest.raises(ParseError):
        UdpDatagram.parse(data, SRC, parse_ip("1.1.1.1"))  # pseudo-header covers addresses
    with pytest.raises(ParseError):
        UdpDatagram.parse(data[:4] + b"\x00\x07" + data[6:], SRC, DST)


def test_udp_checksum_zero_is_sent_as_ffff() -> None:
    # Find a payload whose checksum computes to zero; the wire must carry 0xffff instead.
    for n in range(70000):
        payload = n.to_bytes(4, "big")
        data = UdpDatagram(1, 2, payload).build(SRC, DST)
        if data[6:8] == b"\xff\xff":
            assert UdpDatagram.parse(data, SRC, DST).payload == payload
            return
    pytest.fail("no payload with a zero checksum found")


def test_tcp_options_vector() -> None:
    options = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(1, 2))
    data = options.build()
    assert data.hex() == "020405b4010104020101080a000000010000000201030307"
    assert TcpOptions.parse(data) == options


def test_tcp_options_linux_syn() -> None:
    # The option bytes of a SYN from Linux: MSS, SACK-permitted, timestamps, NOP, window scale.
    data = bytes.fromhex("020405b40402080a0001e2400000000001030307")
    assert TcpOptions.parse(data) == TcpOptions(1460, 7, True, (123456, 0))


@pytest.mark.parametrize(
    "data",
    [
        b"\x02",  # kind without length
        b"\x02\x01",  # length below 2
        b"\x02\x04\x05",  # length beyond the option space
        b"\x02\x03\x05",  # MSS with length 3
        b"\x03\x04\x07\x00",  # window scale with length 4
    ],
)
def test_tcp_options_rejects(data: bytes) -> None:
    with pytest.raises(ParseError):
        TcpOptions.parse(data)


def test_tcp_options_skip_unknown_and_stop_at_eol() -> None:
    assert TcpOptions.parse(b"\x1e\x04ab\x02\x04\x01\x00") == TcpOptions(mss=256)
    assert TcpOptions.parse(b"\x00\x02\x04") == TcpOptions()  # after EOL: ignored


def test_tcp_segment_vector() -> None:
    segment = TcpSegment(
        40000, 80, 0x01020304, 0, SYN, 64240, options=TcpOptions(mss=1460, window_scale=7)
    )
    data = segment.build(SRC, DST)
    assert len(data) == 28
    assert data[:12] == bytes.fromhex("9c4000500102030400000000")
    assert data[12] == 7 << 4 and data[13] == SYN
    pseudo = SRC + DST + struct.pack("!BBH", 0, PROTO_TCP, len(data))
    assert reference_checksum(pseudo + data) == 0
    assert TcpSegment.parse(data, SRC, DST) == segment
    assert segment.sequence_length == 1


def test_tcp_segment_rejects() -> None:
    data = TcpSegment(1, 2, 3, 4, ACK, 5, b"payload").build(SRC, DST)
    with pytest.raises(ParseError):
        TcpSegment.parse(data[:-1] + b"X", SRC, DST)
    with pytest.raises(ParseError):
        TcpSegment.parse(data[:19], SRC, DST)
    with pytest.raises(ParseError):
        TcpSegment.parse(data, DST, SRC[:3] + b"\x01")
    bad_offset = data[:12] + bytes([15 << 4]) + data[13:]
    with pytest.raises(ParseError):
        TcpSegment.parse(bad_offset, SRC, DST)


# --- fuzzing: any bytes give a value or ParseError, never another exception ---------------------


def _parse_everything(data: bytes) -> None:
    for parse in (EthernetFrame.parse, ArpPacket.parse, IPv4Packet.parse, IcmpMessage.parse):
        try:
            parse(data)
        except ParseError:
            pass
    for parse_l4 in (UdpDatagram.parse, TcpSegment.parse):
        try:
            parse_l4(data, SRC, DST)
        except ParseError:
            pass
    try:
        TcpOptions.parse(data[:40])
    except ParseError:
        pass


@given(st.binary(max_size=200))
def test_parsers_never_raise_on_random_bytes(data: bytes) -> None:
    _parse_everything(data)


VALID_SAMPLES = [
    IPv4Packet(SRC, DST, PROTO_UDP, UdpDatagram(1, 2, b"abc").build(SRC, DST)).build(),
    TcpSegment(1, 2, 3, 4, SYN, 5, b"x", TcpOptions(1460, 7, True, (1, 2))).build(SRC, DST),
    UdpDatagram(1, 2, b"abc").build(SRC, DST),
    ArpPacket(ARP_REQUEST, b"\x02" * 6, SRC, bytes(6), DST).build(),
    IcmpMessage(ICMP_ECHO_REQUEST, 0, bytes(4), b"ping").build(),
    EthernetFrame(b"\xff" * 6, b"\x02" * 6, ETHERTYPE_IPV4, b"").build(),
]


@given(
    st.sampled_from(VALID_SAMPLES),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    st.integers(0, 200),
)
def test_parsers_never_raise_on_mutated_packets(
    sample: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(sample)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    _parse_everything(bytes(data[: len(data) - cut % (len(data) + 1)]))


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=100),
    st.builds(
        TcpOptions,
        st.none() | st.integers(0, 0xFFFF),
        st.none() | st.integers(0, 14),
        st.booleans(),
        st.none() | st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
    ),
)
def test_tcp_round_trip(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes,
    options: TcpOptions,
) -> None:
    segment = TcpSegment(sport, dport, seq, ack, flags, window, payload, options)
    assert TcpSegment.parse(segment.build(SRC, DST), SRC, DST) == segment
