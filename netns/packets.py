"""Wire codecs: Ethernet II, ARP, IPv4, ICMP, UDP and TCP.

Every parser takes untrusted bytes and either returns a value or raises `ParseError`; nothing else
escapes, whatever the input. Builders produce well-formed packets with correct checksums.
Addresses are kept as raw bytes (6 for MACs, 4 for IPv4) because the hot path only compares and
copies them.
"""

from __future__ import annotations

import struct

from netns._record import Record

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

BROADCAST_MAC = b"\xff" * 6


class ParseError(ValueError):
    """The bytes are not a packet this codec accepts; the stack drops them."""


_CHECKSUM_PIECE = 4096  # bytes; even, so every piece is a run of whole 16-bit words


def checksum(*chunks: bytes | memoryview) -> int:
    """The Internet checksum (RFC 1071) over the concatenation of `chunks`.

    Each chunk but the last must have even length. Uses the identity that the one's complement sum
    of 16-bit words equals the big-endian value modulo 0xffff, which lets CPython do the work.
    Long chunks are summed as 4 KiB pieces (the same sum modulo 0xffff, as 2**32768 = 1 there):
    the remainder of a small number is ~3x cheaper than that of a 64 KiB one (measured).
    """
    total = 0
    from_bytes = int.from_bytes
    for chunk in chunks:
        size = len(chunk)
        if size > _CHECKSUM_PIECE:
            view = memoryview(chunk)
            whole = size - size % _CHECKSUM_PIECE
            total += sum(
                [
                    from_bytes(view[i : i + _CHECKSUM_PIECE], "big")
                    for i in range(0, whole, _CHECKSUM_PIECE)
                ]
            )
            chunk, size = view[whole:], size - whole
        value = from_bytes(chunk, "big")
        if size % 2:
            value <<= 8
        total += value
    folded = total % 0xFFFF
    if folded == 0 and total != 0:
        folded = 0xFFFF
    return 0xFFFF - folded


def format_ip(address: bytes) -> str:
    return ".".join(str(octet) for octet in address)


def parse_ip(text: str) -> bytes:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"not an IPv4 address: {text!r}")
    return bytes(int(p) for p in parts)


def format_mac(address: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in address)


# --- Ethernet -------------------------------------------------------------------------------------

_ETH = struct.Struct("!6s6sH")


class EthernetFrame(Record):
    __slots__ = ("dst", "ethertype", "payload", "src")

    def __init__(self, dst: bytes, src: bytes, ethertype: int, payload: bytes) -> None:
        self.dst = dst
        self.src = src
        self.ethertype = ethertype
        self.payload = payload

    @classmethod
    def parse(cls, data: bytes | memoryview) -> EthernetFrame:
        if len(data) < _ETH.size:
            raise ParseError("truncated Ethernet header")
        dst, src, ethertype = _ETH.unpack_from(data)
        if ethertype < 0x0600:  # 802.3 length field, not Ethernet II
            raise ParseError("not an Ethernet II frame")
        return cls(dst, src, ethertype, bytes(data[_ETH.size :]))

    def build(self) -> bytes:
        return _ETH.pack(self.dst, self.src, self.ethertype) + self.payload


# --- ARP ------------------------------------------------------------------------------------------

ARP_REQUEST = 1
ARP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")


class ArpPacket(Record):
    """ARP for Ethernet/IPv4 only; other hardware or protocol types are a ParseError."""

    __slots__ = ("operation", "sender_ip", "sender_mac", "target_ip", "target_mac")

    def __init__(
        self,
        operation: int,
        sender_mac: bytes,
        sender_ip: bytes,
        target_mac: bytes,
        target_ip: bytes,
    ) -> None:
        self.operation = operation
        self.sender_mac = sender_mac
        self.sender_ip = sender_ip
        self.target_mac = target_mac
        self.target_ip = target_ip

    @classmethod
    def parse(cls, data: bytes) -> ArpPacket:
        if len(data) < _ARP.size:
            raise ParseError("truncated ARP packet")
        htype, ptype, hlen, plen, op, smac, sip, tmac, tip = _ARP.unpack_from(data)
        if (htype, ptype, hlen, plen) != (1, ETHERTYPE_IPV4, 6, 4):
            raise ParseError("ARP for something other than Ethernet/IPv4")
        if op not in (ARP_REQUEST, ARP_REPLY):
            raise ParseError(f"unknown ARP operation {op}")
        return cls(op, smac, sip, tmac, tip)

    def build(self) -> bytes:
        return _ARP.pack(
            1,
            ETHERTYPE_IPV4,
            6,
            4,
            self.operation,
            self.sender_mac,
            self.sender_ip,
            self.target_mac,
            self.target_ip,
        )


# --- IPv4 -----------------------------------------------------------------------------------------

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
IPV4_HEADER_LEN = _IPV4.size
FLAG_DF = 0x4000
FLAG_MF = 0x2000


class IPv4Packet(Record):
    """An IPv4 datagram (or fragment). Options are accepted on input and skipped."""

    __slots__ = (
        "dont_fragment",
        "dst",
        "fragment_offset",
        "identification",
        "more_fragments",
        "payload",
        "protocol",
        "src",
        "tos",
        "ttl",
    )

    def __init__(
        self,
        src: bytes,
        dst: bytes,
        protocol: int,
        payload: bytes,
        ttl: int = 64,
        identification: int = 0,
        dont_fragment: bool = False,
        more_fragments: bool = False,
        fragment_offset: int = 0,
        tos: int = 0,
    ) -> None:
        self.src = src
        self.dst = dst
        self.protocol = protocol
        self.payload = payload
        self.ttl = ttl
        self.identification = identification
        self.dont_fragment = dont_fragment
        self.more_fragments = more_fragments
        self.fragment_offset = fragment_offset  # in bytes (a multiple of 8 on the wire)
        self.tos = tos

    @property
    def is_fragment(self) -> bool:
        return self.more_fragments or self.fragment_offset != 0

    @classmethod
    def parse(cls, data: bytes) -> IPv4Packet:
        if len(data) < IPV4_HEADER_LEN:
            raise ParseError("truncated IPv4 header")
        (ver_ihl, tos, total_length, ident, flags_frag, ttl, proto, _sum, src, dst) = (
            _IPV4.unpack_from(data)
        )
        if ver_ihl >> 4 != 4:
            raise ParseError("not IPv4")
        header_length = (ver_ihl & 0x0F) * 4
        if header_length < IPV4_HEADER_LEN:
            raise ParseError("IPv4 header length too small")
        # Ethernet pads short frames, so the datagram may be shorter than the buffer, never longer.
        if total_length < header_length or total_length > len(data):
            raise ParseError("IPv4 total length inconsistent with the frame")
        if checksum(data[:header_length]) != 0:
            raise ParseError("bad IPv4 header checksum")
        if flags_frag & 0x8000:
            raise ParseError("IPv4 reserved flag set")
        return cls(
            src=src,
            dst=dst,
            protocol=proto,
            payload=bytes(data[header_length:total_length]),
            ttl=ttl,
            identification=ident,
            dont_fragment=bool(flags_frag & FLAG_DF),
            more_fragments=bool(flags_frag & FLAG_MF),
            fragment_offset=(flags_frag & 0x1FFF) * 8,
            tos=tos,
        )

    def header(self, payload_length: int | None = None) -> bytes:
        """The header; `payload_length`: of a payload longer than `payload` (the rest sent
        after it, as a separate part of the frame)."""
        if payload_length is None:
            payload_length = len(self.payload)
        flags = (FLAG_DF if self.dont_fragment else 0) | (FLAG_MF if self.more_fragments else 0)
        fields = [
            0x45,
            self.tos,
            IPV4_HEADER_LEN + payload_length,
            self.identification,
            flags | (self.fragment_offset // 8),
            self.ttl,
            self.protocol,
            0,
            self.src,
            self.dst,
        ]
        fields[7] = checksum(_IPV4.pack(*fields))
        return _IPV4.pack(*fields)

    def build(self) -> bytes:
        if IPV4_HEADER_LEN + len(self.payload) > 0xFFFF:
            raise ValueError("IPv4 datagram too large")
        return self.header() + self.payload


def fragment(packet: IPv4Packet, mtu: int) -> list[IPv4Packet]:
    """Split `packet` into fragments whose datagrams fit in `mtu` (assumed >= 68)."""
    if IPV4_HEADER_LEN + len(packet.payload) <= mtu:
        return [packet]
    chunk = (mtu - IPV4_HEADER_LEN) // 8 * 8
    pieces = []
    payload = packet.payload
    for start in range(0, len(payload), chunk):
        last = start + chunk >= len(payload)
        pieces.append(
            IPv4Packet(
                src=packet.src,
                dst=packet.dst,
                protocol=packet.protocol,
                payload=payload[start : start + chunk],
                ttl=packet.ttl,
                identification=packet.identification,
                more_fragments=not last or packet.more_fragments,
                fragment_offset=packet.fragment_offset + start,
                tos=packet.tos,
            )
        )
    return pieces


def pseudo_header(src: bytes, dst: bytes, protocol: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, protocol, length)


# --- ICMP -----------------------------------------------------------------------------------------

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACHABLE = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_ADMIN_PROHIBITED = 13
_ICMP = struct.Struct("!BBH4s")


class IcmpMessage(Record):
    __slots__ = ("code", "payload", "rest", "type")

    def __init__(self, type: int, code: int, rest: bytes, payload: bytes) -> None:
        self.type = type
        self.code = code
        self.rest = rest  # the 4 bytes after the checksum: identifier+sequence for echo
        self.payload = payload

    @classmethod
    def parse(cls, data: bytes, *, verify: bool = True) -> IcmpMessage:
        if len(data) < _ICMP.size:
            raise ParseError("truncated ICMP header")
        if verify and checksum(data) != 0:
            raise ParseError("bad ICMP checksum")
        icmp_type, code, _sum, rest = _ICMP.unpack_from(data)
        return cls(icmp_type, code, rest, bytes(data[_ICMP.size :]))

    def build(self) -> bytes:
        head = _ICMP.pack(self.type, self.code, 0, self.rest)
        return _ICMP.pack(self.type, self.code, checksum(head, self.payload), self.rest) + (
            self.payload
        )


# --- UDP ------------------------------------------------------------------------------------------

_UDP = struct.Struct("!HHHH")


class UdpDatagram(Record):
    __slots__ = ("dst_port", "payload", "src_port")

    def __init__(self, src_port: int, dst_port: int, payload: bytes) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.payload = payload

    @classmethod
    def parse(cls, data: bytes, src: bytes, dst: bytes, *, verify: bool = True) -> UdpDatagram:
        if len(data) < _UDP.size:
            raise ParseError("truncated UDP header")
        sport, dport, length, received_sum = _UDP.unpack_from(data)
        if length < _UDP.size or length > len(data):
            raise ParseError("UDP length inconsistent with the datagram")
        # A zero checksum means the sender did not compute one (allowed over IPv4).
        if (
            verify
            and received_sum != 0
            and (checksum(pseudo_header(src, dst, PROTO_UDP, length), data[:length]) != 0)
        ):
            raise ParseError("bad UDP checksum")
        return cls(sport, dport, bytes(data[_UDP.size : length]))

    def build(self, src: bytes, dst: bytes) -> bytes:
        length = _UDP.size + len(self.payload)
        head = _UDP.pack(self.src_port, self.dst_port, length, 0)
        value = checksum(pseudo_header(src, dst, PROTO_UDP, length), head, self.payload)
        return _UDP.pack(self.src_port, self.dst_port, length, value or 0xFFFF) + self.payload


# --- TCP ------------------------------------------------------------------------------------------

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

_TCP = struct.Struct("!HHIIBBHHH")
TCP_HEADER_LEN = _TCP.size
OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERMITTED, OPT_SACK, OPT_TIMESTAMPS = (
    0,
    1,
    2,
    3,
    4,
    5,
    8,
)


class TcpOptions(Record):
    __slots__ = ("mss", "sack_permitted", "timestamps", "window_scale")

    def __init__(
        self,
        mss: int | None = None,
        window_scale: int | None = None,
        sack_permitted: bool = False,
        timestamps: tuple[int, int] | None = None,
    ) -> None:
        self.mss = mss
        self.window_scale = window_scale
        self.sack_permitted = sack_permitted
        self.timestamps = timestamps  # (TSval, TSecr)

    @classmethod
    def parse(cls, data: bytes) -> TcpOptions:
        mss = window_scale = None
        sack_permitted = False
        timestamps = None
        i = 0
        while i < len(data):
            kind = data[i]
            if kind == OPT_EOL:
                break
            if kind == OPT_NOP:
                i += 1
                continue
            if i + 1 >= len(data):
                raise ParseError("truncated TCP option")
            length = data[i + 1]
            if length < 2 or i + length > len(data):
                raise ParseError("bad TCP option length")
            body = data[i + 2 : i + length]
            if kind == OPT_MSS and length == 4:
                mss = int.from_bytes(body, "big")
            elif kind == OPT_WSCALE and length == 3:
                window_scale = body[0]
            elif kind == OPT_SACK_PERMITTED and length == 2:
                sack_permitted = True
            elif kind == OPT_TIMESTAMPS and length == 10:
                timestamps = (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))
            elif kind in (OPT_MSS, OPT_WSCALE, OPT_SACK_PERMITTED, OPT_TIMESTAMPS):
                raise ParseError(f"TCP option {kind} with wrong length {length}")
            # SACK blocks and unknown options are skipped.
            i += length
        return cls(mss, window_scale, sack_permitted, timestamps)

    def build(self) -> bytes:
        out = bytearray()
        if self.mss is not None:
            out += struct.pack("!BBH", OPT_MSS, 4, self.mss)
        if self.sack_permitted:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
        if self.timestamps is not None:
            out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, *self.timestamps)
        if self.window_scale is not None:
            out += bytes((OPT_NOP, OPT_WSCALE, 3, self.window_scale))
        return bytes(out)


NO_OPTIONS = TcpOptions()


class TcpSegment(Record):
    __slots__ = (
        "ack",
        "dst_port",
        "flags",
        "options",
        "payload",
        "seq",
        "src_port",
        "urgent",
        "window",
    )

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: bytes | memoryview = b"",
        options: TcpOptions = NO_OPTIONS,
        urgent: int = 0,
    ) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window  # as on the wire, unscaled
        self.payload = payload
        self.options = options
        self.urgent = urgent

    @property
    def sequence_length(self) -> int:
        """How much sequence space the segment occupies (SYN and FIN count one each)."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    @classmethod
    def parse(cls, data: bytes, src: bytes, dst: bytes, *, verify: bool = True) -> TcpSegment:
        if len(data) < TCP_HEADER_LEN:
            raise ParseError("truncated TCP header")
        sport, dport, seq, ack, offset, flags, window, _sum, urgent = _TCP.unpack_from(data)
        header_length = (offset >> 4) * 4
        if header_length < TCP_HEADER_LEN or header_length > len(data):
            raise ParseError("bad TCP data offset")
        if verify and checksum(pseudo_header(src, dst, PROTO_TCP, len(data)), data) != 0:
            raise ParseError("bad TCP checksum")
        options = (
            TcpOptions.parse(bytes(data[TCP_HEADER_LEN:header_length]))
            if header_length > TCP_HEADER_LEN
            else NO_OPTIONS
        )
        return cls(
            sport, dport, seq, ack, flags, window, bytes(data[header_length:]), options, urgent
        )

    def build(self, src: bytes, dst: bytes, *, partial_checksum: bool = False) -> bytes:
        """The segment; with `partial_checksum`, its checksum field holds only the pseudo-header's
        sum, for the receiver's kernel to complete (CHECKSUM_PARTIAL, virtio-net NEEDS_CSUM)."""
        return self.header(src, dst, partial_checksum=partial_checksum) + self.payload

    def header(self, src: bytes, dst: bytes, *, partial_checksum: bool = False) -> bytes:
        """The segment's header (with options) alone, its checksum covering the payload as
        `build`'s does: for a frame written in parts, the payload not copied into it."""
        options = self.options.build() if self.options is not NO_OPTIONS else b""
        if len(options) % 4:
            options += b"\x00" * (4 - len(options) % 4)
        header_length = TCP_HEADER_LEN + len(options)
        fields = [
            self.src_port,
            self.dst_port,
            self.seq,
            self.ack,
            (header_length // 4) << 4,
            self.flags,
            self.window,
            0,
            self.urgent,
        ]
        length = header_length + len(self.payload)
        if partial_checksum:
            fields[7] = 0xFFFF - checksum(pseudo_header(src, dst, PROTO_TCP, length))
        else:
            head = _TCP.pack(*fields) + options
            fields[7] = checksum(pseudo_header(src, dst, PROTO_TCP, length), head, self.payload)
        return _TCP.pack(*fields) + options
