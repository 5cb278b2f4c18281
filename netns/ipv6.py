"""Wire codecs for IPv6: the header and its extension headers, ICMPv6, neighbour discovery.

Like `netns.packets`, every parser takes untrusted bytes and returns a value or raises
`ParseError`; builders produce packets with correct checksums. Addresses are 16 raw bytes.

Extension headers on input: hop-by-hop options (MLD reports carry one, with the router alert),
destination options and routing headers with no segments left are skipped; a routing header
with segments left, a fragment header, ESP/AH and "no next header" make the packet a ParseError
(dropped). Fragments are dropped rather than reassembled: the container's kernel fragments only
what exceeds the link MTU (65520 by default), which its TCP never does (MSS from the MTU) and
its UDP rarely does; IPv4 keeps its reassembly for the old habits of IPv4 stacks.

TCP and UDP reuse `netns.packets`' codecs with 16-byte addresses: their pseudo-header
src + dst + (0, protocol, length16) has the same one's-complement sum as IPv6's
src + dst + length32 + (0, 0, 0, next header) whenever the length fits in 16 bits, which it
always does here (no jumbograms).
"""

from __future__ import annotations

import socket
import struct

from netns._record import Record
from netns.packets import ParseError, checksum

PROTO_HOP_BY_HOP = 0
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_ICMPV6 = 58
PROTO_NO_NEXT = 59
PROTO_DEST_OPTIONS = 60

IPV6_HEADER_LEN = 40
MIN_MTU = 1280  # every IPv6 link carries this much; ICMPv6 errors fit in it
MAX_EXTENSION_HEADERS = 8  # more is an attack, not a packet

ICMPV6_DEST_UNREACHABLE = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
NDP_ROUTER_SOLICITATION = 133
NDP_ROUTER_ADVERTISEMENT = 134
NDP_NEIGHBOR_SOLICITATION = 135
NDP_NEIGHBOR_ADVERTISEMENT = 136
UNREACH6_NO_ROUTE = 0
UNREACH6_ADMIN_PROHIBITED = 1
UNREACH6_ADDRESS = 3
UNREACH6_PORT = 4

NDP_OPT_SOURCE_LL = 1
NDP_OPT_TARGET_LL = 2
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
NDP_HOP_LIMIT = 255  # RFC 4861: anything else did not come from this link

_IPV6 = struct.Struct("!IHBB16s16s")
_EXTENSION = struct.Struct("!BB")
_ICMP6 = struct.Struct("!BBH")


def parse_ip6(text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        raise ValueError(f"not an IPv6 address: {text!r}") from None


def format_ip6(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, address)


def pseudo_header6(src: bytes, dst: bytes, next_header: int, length: int) -> bytes:
    """RFC 8200 section 8.1's pseudo-header."""
    return src + dst + struct.pack("!I3xB", length, next_header)


def is_link_local(address: bytes) -> bool:
    return address[0] == 0xFE and address[1] & 0xC0 == 0x80


def is_multicast(address: bytes) -> bool:
    return address[0] == 0xFF


def is_routable6(address: bytes) -> bool:
    """False for what must never leave through a host socket: unspecified, loopback, IPv4-mapped
    and IPv4-compatible addresses (::ffff:127.0.0.1 on a host AF_INET6 socket is the host's
    IPv4 loopback), link-local, site-local and multicast."""
    if address[:10] == bytes(10) and address[10:12] in (b"\0\0", b"\xff\xff"):
        return False  # ::/96 (::, ::1, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped)
    return not (address[0] == 0xFF or (address[0] == 0xFE and address[1] & 0x80))


def solicited_node(address: bytes) -> bytes:
    """The solicited-node multicast address of `address` (ff02::1:ffXX:XXXX)."""
    return bytes.fromhex("ff0200000000000000000001ff") + address[13:]


def multicast_mac(address: bytes) -> bytes:
    """The Ethernet address an IPv6 multicast address maps to (RFC 2464)."""
    return b"\x33\x33" + address[12:]


class IPv6Packet(Record):
    """An IPv6 packet. `protocol` and `payload` are those of the upper layer, after any
    extension headers; `raw` is the whole packet as received (for ICMPv6 errors to quote)."""

    __slots__ = ("dst", "hop_limit", "payload", "protocol", "raw", "src", "traffic_class")

    def __init__(
        self,
        src: bytes,
        dst: bytes,
        protocol: int,
        payload: bytes,
        hop_limit: int = 64,
        traffic_class: int = 0,
        raw: bytes = b"",
    ) -> None:
        self.src = src
        self.dst = dst
        self.protocol = protocol
        self.payload = payload
        self.hop_limit = hop_limit
        self.traffic_class = traffic_class
        self.raw = raw

    @classmethod
    def parse(cls, data: bytes | memoryview) -> IPv6Packet:
        if len(data) < IPV6_HEADER_LEN:
            raise ParseError("truncated IPv6 header")
        first, payload_length, next_header, hop_limit, src, dst = _IPV6.unpack_from(data)
        if first >> 28 != 6:
            raise ParseError("not IPv6")
        end = IPV6_HEADER_LEN + payload_length
        # Ethernet pads short frames: the packet may be shorter than the buffer, never longer.
        if end > len(data):
            raise ParseError("IPv6 payload length exceeds the frame")
        offset = IPV6_HEADER_LEN
        for count in range(MAX_EXTENSION_HEADERS + 1):
            if next_header in (PROTO_HOP_BY_HOP, PROTO_DEST_OPTIONS, PROTO_ROUTING):
                if next_header == PROTO_HOP_BY_HOP and count:
                    raise ParseError("hop-by-hop options not first")
                if offset + 8 > end:
                    raise ParseError("truncated IPv6 extension header")
                following, units = _EXTENSION.unpack_from(data, offset)
                if next_header == PROTO_ROUTING and data[offset + 3]:
                    raise ParseError("routing header with segments left")
                offset += (units + 1) * 8
                if offset > end:
                    raise ParseError("IPv6 extension header overruns the packet")
                next_header = following
                continue
            if next_header == PROTO_FRAGMENT:
                raise ParseError("IPv6 fragment (not reassembled)")
            if next_header == PROTO_NO_NEXT:
                raise ParseError("no next header")
            break
        else:
            raise ParseError("too many IPv6 extension headers")
        raw = bytes(data[:end])
        return cls(
            src=src,
            dst=dst,
            protocol=next_header,
            payload=raw[offset:],
            hop_limit=hop_limit,
            traffic_class=(first >> 20) & 0xFF,
            raw=raw,
        )

    def header(self, payload_length: int | None = None) -> bytes:
        """The fixed header, for a packet without extension headers (`payload_length`: see
        IPv4Packet.header)."""
        return _IPV6.pack(
            (6 << 28) | (self.traffic_class << 20),
            len(self.payload) if payload_length is None else payload_length,
            self.protocol,
            self.hop_limit,
            self.src,
            self.dst,
        )

    def build(self) -> bytes:
        if len(self.payload) > 0xFFFF:
            raise ValueError("IPv6 payload too large")
        return self.header() + self.payload


class Icmp6Message(Record):
    """An ICMPv6 message: `body` is everything after type, code and checksum."""

    __slots__ = ("body", "code", "type")

    def __init__(self, type: int, code: int, body: bytes) -> None:
        self.type = type
        self.code = code
        self.body = body

    @classmethod
    def parse(cls, data: bytes, src: bytes, dst: bytes, *, verify: bool = True) -> Icmp6Message:
        if len(data) < _ICMP6.size:
            raise ParseError("truncated ICMPv6 header")
        if verify and checksum(pseudo_header6(src, dst, PROTO_ICMPV6, len(data)), data) != 0:
            raise ParseError("bad ICMPv6 checksum")
        icmp_type, code, _sum = _ICMP6.unpack_from(data)
        return cls(icmp_type, code, bytes(data[_ICMP6.size :]))

    def build(self, src: bytes, dst: bytes) -> bytes:
        length = _ICMP6.size + len(self.body)
        head = _ICMP6.pack(self.type, self.code, 0)
        value = checksum(pseudo_header6(src, dst, PROTO_ICMPV6, length), head, self.body)
        return _ICMP6.pack(self.type, self.code, value) + self.body


def ndp_options(data: bytes) -> dict[int, bytes]:
    """Neighbour discovery options, type -> value (the first of each type wins)."""
    options: dict[int, bytes] = {}
    offset = 0
    while offset + 2 <= len(data):
        kind, units = data[offset], data[offset + 1]
        if units == 0:
            raise ParseError("NDP option of length zero")
        end = offset + units * 8
        if end > len(data):
            raise ParseError("NDP option overruns the message")
        options.setdefault(kind, data[offset + 2 : end])
        offset = end
    if offset != len(data):
        raise ParseError("trailing bytes after NDP options")
    return options


class NeighborMessage(Record):
    """A neighbour solicitation or advertisement (the body of the ICMPv6 message)."""

    __slots__ = ("flags", "link_address", "target")

    def __init__(self, target: bytes, link_address: bytes | None, flags: int = 0) -> None:
        self.target = target
        self.link_address = link_address  # the source (NS) or target (NA) link-layer option
        self.flags = flags

    @classmethod
    def parse(cls, message: Icmp6Message) -> NeighborMessage:
        if message.type not in (NDP_NEIGHBOR_SOLICITATION, NDP_NEIGHBOR_ADVERTISEMENT):
            raise ParseError("not a neighbour solicitation or advertisement")
        if message.code != 0 or len(message.body) < 20:
            raise ParseError("malformed neighbour discovery message")
        (flags,) = struct.unpack_from("!I", message.body)
        target = message.body[4:20]
        if is_multicast(target):
            raise ParseError("multicast neighbour target")
        options = ndp_options(message.body[20:])
        kind = NDP_OPT_SOURCE_LL if message.type == NDP_NEIGHBOR_SOLICITATION else NDP_OPT_TARGET_LL
        link = options.get(kind)
        if link is not None and len(link) < 6:
            raise ParseError("short link-layer address option")
        return cls(target, link[:6] if link is not None else None, flags)

    def solicitation(self) -> Icmp6Message:
        body = bytes(4) + self.target
        if self.link_address is not None:
            body += bytes((NDP_OPT_SOURCE_LL, 1)) + self.link_address
        return Icmp6Message(NDP_NEIGHBOR_SOLICITATION, 0, body)

    def advertisement(self) -> Icmp6Message:
        body = struct.pack("!I", self.flags) + self.target
        if self.link_address is not None:
            body += bytes((NDP_OPT_TARGET_LL, 1)) + self.link_address
        return Icmp6Message(NDP_NEIGHBOR_ADVERTISEMENT, 0, body)
