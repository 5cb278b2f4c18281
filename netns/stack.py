"""The user-mode network stack for one container (sans-IO).

The stack sits at the other end of the container's TAP device. It plays the gateway (ARP, ICMP
echo) and terminates every TCP connection and UDP flow the container opens, asking the driver to
relay them through host sockets (NAT by proxy, as slirp does). It does no I/O: the driver feeds it
frames, host events and the time, and carries out the actions it returns:

- `SendFrame(head, partial_checksum, payload)`: write the Ethernet frame head + payload to the
  TAP device;
- `OpenTcp(flow_id, dst)`: connect a host TCP socket to dst (the container's destination; the
  gateway address maps to 127.0.0.1 when `allow_host_loopback`, the DNS address port 53 to
  `dns_upstream`), then call `tcp_connected` or `tcp_connect_failed`;
- `TcpDeliver(flow_id, data)`: write data to that socket, then call `host_consumed`;
- `TcpHostEOF(flow_id)`: shut the socket down for writing;
- `TcpClose(flow_id, reset)`: close the socket (abortively when reset), forget the flow;
- `UdpSend(flow_id, dst, payload)`: send from the flow's host UDP socket (connected to dst; made
  on first use); answers come back through `udp_from_host`;
- `DnsQuery(flow_id, payload)`: resolve for the container (it asked the DNS address); answer
  with `udp_from_host(flow_id, reply, now)`;
- `UdpClose(flow_id)`: the flow idled out, close its socket.
- `PingSend(flow_id, dst, sequence, payload)`: send an ICMP (ICMPv6 when dst has a colon) echo
  request through the flow's unprivileged ICMP socket (made on first use; where
  ping_group_range does not allow one, do nothing: the container gets no reply, as with
  slirp4netns); replies go to `ping_reply`, a send that fails as unreachable to
  `ping_unreachable`;
- `PingClose(flow_id)`: the ping flow idled out, close its socket.

With `NetConfig.ipv6` the stack also plays fd00::2 (gateway, also fe80::2) and fd00::3 (DNS)
over IPv6: neighbour discovery for them, ICMPv6 echo, and TCP, UDP and ICMPv6 echo from the
container's fd00::100 NATed like IPv4's (destinations are then IPv6 address strings; the
gateway maps to ::1 when `allow_host_loopback`). See `netns.ipv6` for what is parsed.

Read from a host TCP socket at most `host_send_space(flow_id)` bytes at a time (more is a
ValueError), call `host_closed` on EOF and `host_reset` on errors, and call `timeout(now)`
whenever `now >= next_timeout()`. Calls naming a flow the stack has forgotten are ignored.
The stack verifies TCP, UDP and ICMP checksums only with `NetConfig.verify_checksums`; without
it, frames may leave them partial (TAP checksum offload, which NetDriver turns on then).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from netns import tcp
from netns._record import Record
from netns.config import DNS_PORT, NetConfig
from netns.fastpath import parse_tcp4, parse_tcp6
from netns.ipv6 import (
    ICMPV6_DEST_UNREACHABLE,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    IPV6_HEADER_LEN,
    MIN_MTU,
    NA_FLAG_OVERRIDE,
    NA_FLAG_ROUTER,
    NA_FLAG_SOLICITED,
    NDP_HOP_LIMIT,
    NDP_NEIGHBOR_ADVERTISEMENT,
    NDP_NEIGHBOR_SOLICITATION,
    PROTO_ICMPV6,
    UNREACH6_NO_ROUTE,
    UNREACH6_PORT,
    Icmp6Message,
    IPv6Packet,
    NeighborMessage,
    format_ip6,
    is_link_local,
    is_routable6,
    multicast_mac,
    solicited_node,
)
from netns.packets import (
    ACK,
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    IPV4_HEADER_LEN,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    RST,
    SYN,
    UNREACH_NET,
    UNREACH_PORT,
    ArpPacket,
    EthernetFrame,
    IcmpMessage,
    IPv4Packet,
    ParseError,
    TcpSegment,
    UdpDatagram,
    format_ip,
    fragment,
)
from netns.reassembly import Reassembler

HOST_LOOPBACK = "127.0.0.1"
HOST_LOOPBACK6 = "::1"
_ZERO_MAC = bytes(6)
_ETHERTYPE_IPV6_BYTES = ETHERTYPE_IPV6.to_bytes(2, "big")

Endpoint = tuple[str, int]


class SendFrame(Record):
    """An Ethernet frame in two parts, `head` then `payload`: a TCP segment's payload stays the
    view into the connection's send buffer it was taken as (netns.sendbuffer), for the driver
    to write both with one os.writev, so that its bytes are never copied in Python.
    `partial_checksum`: an Ethernet + IPv4 (20 bytes) or IPv6 (40 bytes, no extension headers)
    + TCP frame whose TCP checksum the receiving kernel must complete (only with
    `NetConfig.checksum_offload`)."""

    __slots__ = ("head", "partial_checksum", "payload")

    def __init__(
        self, head: bytes, partial_checksum: bool = False, payload: bytes | memoryview = b""
    ) -> None:
        self.head = head
        self.partial_checksum = partial_checksum
        self.payload = payload

    @property
    def frame(self) -> bytes:
        """The whole frame, joined (a copy: for tests and diagnostics, not the data path)."""
        return self.head + self.payload if self.payload else self.head


class OpenTcp(Record):
    __slots__ = ("dst", "flow_id")

    def __init__(self, flow_id: int, dst: Endpoint) -> None:
        self.flow_id = flow_id
        self.dst = dst


class TcpDeliver(Record):
    __slots__ = ("data", "flow_id")

    def __init__(self, flow_id: int, data: bytes | memoryview) -> None:
        self.flow_id = flow_id
        self.data = data


class TcpHostEOF(Record):
    __slots__ = ("flow_id",)

    def __init__(self, flow_id: int) -> None:
        self.flow_id = flow_id


class TcpClose(Record):
    __slots__ = ("flow_id", "reset")

    def __init__(self, flow_id: int, reset: bool) -> None:
        self.flow_id = flow_id
        self.reset = reset


class UdpSend(Record):
    __slots__ = ("dst", "flow_id", "payload")

    def __init__(self, flow_id: int, dst: Endpoint, payload: bytes) -> None:
        self.flow_id = flow_id
        self.dst = dst
        self.payload = payload


class DnsQuery(Record):
    __slots__ = ("flow_id", "payload")

    def __init__(self, flow_id: int, payload: bytes) -> None:
        self.flow_id = flow_id
        self.payload = payload


class UdpClose(Record):
    __slots__ = ("flow_id",)

    def __init__(self, flow_id: int) -> None:
        self.flow_id = flow_id


class PingSend(Record):
    __slots__ = ("dst", "flow_id", "payload", "sequence")

    def __init__(self, flow_id: int, dst: str, sequence: int, payload: bytes) -> None:
        self.flow_id = flow_id
        self.dst = dst
        self.sequence = sequence
        self.payload = payload  # the echo data after identifier and sequence number


class PingClose(Record):
    __slots__ = ("flow_id",)

    def __init__(self, flow_id: int) -> None:
        self.flow_id = flow_id


StackAction = (
    SendFrame
    | OpenTcp
    | TcpDeliver
    | TcpHostEOF
    | TcpClose
    | UdpSend
    | DnsQuery
    | UdpClose
    | PingSend
    | PingClose
)
IPPacket = IPv4Packet | IPv6Packet

# (container port, destination address as the container sees it, destination port)
_FlowKey = tuple[int, bytes, int]


class _TcpFlow:
    __slots__ = ("conn", "key")

    def __init__(self, key: _FlowKey, conn: tcp.TcpConnection) -> None:
        self.key = key
        self.conn = conn


class _UdpFlow:
    __slots__ = ("deadline", "key")

    def __init__(self, key: _FlowKey, deadline: float) -> None:
        self.key = key
        self.deadline = deadline


class _PingFlow:
    """Echo requests of one container identifier to one destination (the host's ICMP socket
    picks its own identifier; replies get the container's back)."""

    __slots__ = ("deadline", "key", "quote")

    def __init__(self, key: tuple[int, bytes], deadline: float, quote: bytes) -> None:
        self.key = key  # (identifier, destination)
        self.deadline = deadline
        self.quote = quote  # the latest request's start, for an unreachable error to quote


def _random_iss() -> int:
    return int.from_bytes(os.urandom(4), "big")


class Stack:
    def __init__(
        self, config: NetConfig | None = None, *, iss_source: Callable[[], int] = _random_iss
    ) -> None:
        self.config = config or NetConfig()
        self._iss_source = iss_source
        self.container_mac: bytes | None = None  # learnt from the container's frames
        self._reassembler = Reassembler()
        self._next_flow_id = 1
        self._ip_id = 0
        self._tcp_by_key: dict[_FlowKey, int] = {}
        self._tcp: dict[int, _TcpFlow] = {}
        self._udp_by_key: dict[_FlowKey, int] = {}
        self._udp: dict[int, _UdpFlow] = {}
        self._ping_by_key: dict[tuple[int, bytes], int] = {}
        self._ping: dict[int, _PingFlow] = {}
        self._batch = False  # between begin_batch() and end_batch()
        self._acks_owed: set[int] = set()  # flows with an ACK deferred to end_batch()

    # --- frames from the container ----------------------------------------------------------------

    def begin_batch(self) -> None:
        """Frames that arrived together follow (e.g. one read burst from the TAP device): until
        `end_batch`, each TCP connection owes at most one pure ACK instead of sending one per
        data segment or window update (duplicate ACKs still go out at once)."""
        self._batch = True

    def end_batch(self, now: float) -> list[StackAction]:
        """The ACKs owed since `begin_batch`."""
        self._batch = False
        out: list[StackAction] = []
        owed, self._acks_owed = self._acks_owed, set()
        for flow_id in sorted(owed):
            conn = self._conn(flow_id)
            if conn is not None:
                out.extend(self._tcp_actions(flow_id, conn.flush_ack()))
        return out

    def receive_frame(self, frame: bytes | memoryview, now: float) -> list[StackAction]:
        """Handle one Ethernet frame from the container. Malformed frames are dropped."""
        if not self.config.verify_checksums:
            fast = self._receive_tcp_fast(memoryview(frame), now)
            if fast is not None:
                return fast
        try:
            eth = EthernetFrame.parse(frame)
            if eth.ethertype == ETHERTYPE_IPV6:
                return self._receive_ipv6(eth, now) if self.config.ipv6 else []
            if eth.dst != self.config.gateway_mac and eth.dst != BROADCAST_MAC:
                return []
            if eth.src[0] & 1 or eth.src == _ZERO_MAC:
                return []  # multicast or null source addresses are never legitimate
            if eth.ethertype == ETHERTYPE_ARP:
                return self._receive_arp(eth)
            if eth.ethertype == ETHERTYPE_IPV4 and eth.dst == self.config.gateway_mac:
                return self._receive_ipv4(eth, now)
        except ParseError:
            pass
        return []

    def _receive_tcp_fast(self, frame: memoryview, now: float) -> list[StackAction] | None:
        """A segment of an open IPv4 or IPv6 connection, parsed without copies
        (netns.fastpath); None: not such a frame, take the general path (new connections,
        TIME-WAIT, everything else). The connection's key implies the destination checks the
        general path makes (an IPv6 key's address is 16 bytes, an IPv4 one's 4: never equal)."""
        config = self.config
        if frame[12:14] == _ETHERTYPE_IPV6_BYTES:
            if not config.ipv6:
                return None
            parsed = parse_tcp6(frame, config.gateway_mac, config.container_ip6)
        else:
            parsed = parse_tcp4(frame, config.gateway_mac, config.container_ip)
        if parsed is None:
            return None
        src_mac, dst, seg = parsed
        flow_id = self._tcp_by_key.get((seg.src_port, dst, seg.dst_port))
        if flow_id is None or src_mac == _ZERO_MAC:
            return None
        conn = self._tcp[flow_id].conn
        if conn.state is tcp.State.TIME_WAIT:
            return None
        self.container_mac = src_mac
        conn.defer_acks = self._batch
        actions = self._tcp_actions(flow_id, conn.receive_segment(seg, now))
        if conn.ack_owed:
            self._acks_owed.add(flow_id)
        return actions

    def _receive_arp(self, eth: EthernetFrame) -> list[StackAction]:
        arp = ArpPacket.parse(eth.payload)
        config = self.config
        if arp.sender_ip == config.container_ip and arp.sender_mac == eth.src:
            self.container_mac = eth.src
        if arp.operation != ARP_REQUEST or arp.target_ip not in (config.gateway_ip, config.dns_ip):
            return []
        if arp.sender_ip != config.container_ip or arp.sender_mac != eth.src:
            return []  # probes (sender 0.0.0.0) and strangers get no answer
        reply = ArpPacket(ARP_REPLY, config.gateway_mac, arp.target_ip, eth.src, arp.sender_ip)
        frame = EthernetFrame(eth.src, config.gateway_mac, ETHERTYPE_ARP, reply.build())
        return [SendFrame(frame.build())]

    def _receive_ipv4(self, eth: EthernetFrame, now: float) -> list[StackAction]:
        config = self.config
        packet = IPv4Packet.parse(eth.payload)
        if packet.src != config.container_ip:
            return []  # spoofed or unconfigured source
        self.container_mac = eth.src
        whole = self._reassembler.feed(packet, now)
        if whole is None:
            return []
        dst = whole.dst
        if dst in (config.gateway_ip, config.dns_ip):
            pass  # the stack's own addresses
        elif config.in_network(dst) or not _is_routable(dst):
            return []  # nobody else lives on this link; no broadcast or multicast services
        if whole.protocol == PROTO_TCP:
            return self._receive_tcp(whole, now)
        if whole.protocol == PROTO_UDP:
            return self._receive_udp(whole, now)
        if whole.protocol == PROTO_ICMP:
            return self._receive_icmp(whole, now)
        return []

    def _receive_icmp(self, packet: IPv4Packet, now: float) -> list[StackAction]:
        message = IcmpMessage.parse(packet.payload, verify=self.config.verify_checksums)
        if message.type != ICMP_ECHO_REQUEST or message.code != 0:
            return []
        if packet.dst not in (self.config.gateway_ip, self.config.dns_ip):
            quote = packet.header() + packet.payload[:8]
            return self._ping_out(packet.dst, message.rest, message.payload, quote, now)
        reply = IcmpMessage(ICMP_ECHO_REPLY, 0, message.rest, message.payload)
        return self._ip_frames(packet.dst, PROTO_ICMP, reply.build())

    # --- IPv6 -------------------------------------------------------------------------------------

    def _receive_ipv6(self, eth: EthernetFrame, now: float) -> list[StackAction]:
        config = self.config
        if eth.src[0] & 1 or eth.src == _ZERO_MAC:
            return []
        multicast = eth.dst[:2] == b"\x33\x33"
        if eth.dst != config.gateway_mac and not multicast:
            return []
        packet = IPv6Packet.parse(eth.payload)
        ndp = (NDP_NEIGHBOR_SOLICITATION, NDP_NEIGHBOR_ADVERTISEMENT)
        if packet.protocol == PROTO_ICMPV6 and packet.payload[:1] and packet.payload[0] in ndp:
            return self._receive_ndp(eth, packet)
        if packet.src != config.container_ip6:
            return []  # link-local (MLD, router solicitations), spoofed or unconfigured
        self.container_mac = eth.src
        dst = packet.dst
        if multicast or is_link_local(dst):
            return []  # nobody else lives on this link; no multicast services
        if dst in (config.gateway_ip6, config.dns_ip6):
            pass  # the stack's own addresses
        elif config.in_network6(dst) or not is_routable6(dst):
            return []
        if packet.protocol == PROTO_TCP:
            return self._receive_tcp(packet, now)
        if packet.protocol == PROTO_UDP:
            return self._receive_udp(packet, now)
        if packet.protocol == PROTO_ICMPV6:
            return self._receive_icmp6(packet, now)
        return []

    def _own_address6(self, address: bytes) -> bool:
        config = self.config
        return address in (config.gateway_ip6, config.dns_ip6, config.gateway_link_local6)

    def _receive_ndp(self, eth: EthernetFrame, packet: IPv6Packet) -> list[StackAction]:
        """Neighbour solicitations for the stack's addresses get an advertisement; the
        container's advertisements (answers to `_solicit_container`) teach its MAC."""
        config = self.config
        if packet.hop_limit != NDP_HOP_LIMIT:
            return []  # RFC 4861 7.1.1: not from this link
        message = Icmp6Message.parse(
            packet.payload, packet.src, packet.dst, verify=config.verify_checksums
        )
        neighbor = NeighborMessage.parse(message)
        if neighbor.link_address is not None and neighbor.link_address != eth.src:
            return []  # a link-layer address other than the sender's: not believed
        if message.type == NDP_NEIGHBOR_ADVERTISEMENT:
            if neighbor.target == config.container_ip6:
                self.container_mac = eth.src
            return []
        if packet.src != config.container_ip6 and not is_link_local(packet.src):
            return []  # duplicate address detection (from ::) and strangers get no answer
        if not self._own_address6(neighbor.target):
            return []
        if packet.dst not in (neighbor.target, solicited_node(neighbor.target)):
            return []
        if packet.src == config.container_ip6:
            self.container_mac = eth.src
        flags = NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE
        if neighbor.target != config.dns_ip6:
            flags |= NA_FLAG_ROUTER
        answer = NeighborMessage(neighbor.target, config.gateway_mac, flags).advertisement()
        reply = IPv6Packet(
            neighbor.target,
            packet.src,
            PROTO_ICMPV6,
            answer.build(neighbor.target, packet.src),
            hop_limit=NDP_HOP_LIMIT,
        )
        head = eth.src + config.gateway_mac + ETHERTYPE_IPV6.to_bytes(2, "big")
        return [SendFrame(head + reply.build())]

    def _receive_icmp6(self, packet: IPv6Packet, now: float) -> list[StackAction]:
        message = Icmp6Message.parse(
            packet.payload, packet.src, packet.dst, verify=self.config.verify_checksums
        )
        if message.type != ICMPV6_ECHO_REQUEST or message.code != 0 or len(message.body) < 4:
            return []
        if packet.dst not in (self.config.gateway_ip6, self.config.dns_ip6):
            quote = packet.raw[: MIN_MTU - IPV6_HEADER_LEN - 8]
            return self._ping_out(packet.dst, message.body[:4], message.body[4:], quote, now)
        reply = Icmp6Message(ICMPV6_ECHO_REPLY, 0, message.body)
        return self._ip_frames(
            packet.dst, PROTO_ICMPV6, reply.build(packet.dst, self.config.container_ip6)
        )

    def _solicit_container(self) -> SendFrame:
        """A neighbour solicitation for the container's IPv6 address (its MAC is unknown)."""
        config = self.config
        source, target = config.gateway_link_local6, config.container_ip6
        group = solicited_node(target)
        message = NeighborMessage(target, config.gateway_mac).solicitation()
        packet = IPv6Packet(
            source, group, PROTO_ICMPV6, message.build(source, group), hop_limit=NDP_HOP_LIMIT
        )
        head = multicast_mac(group) + config.gateway_mac + ETHERTYPE_IPV6.to_bytes(2, "big")
        return SendFrame(head + packet.build())

    # --- ICMP echo beyond the gateway -------------------------------------------------------------

    def _ping_out(
        self, dst: bytes, ident_seq: bytes, payload: bytes, quote: bytes, now: float
    ) -> list[StackAction]:
        """An echo request to the outside world: relayed through a host ICMP socket."""
        ident, sequence = int.from_bytes(ident_seq[:2], "big"), int.from_bytes(ident_seq[2:], "big")
        key = (ident, dst)
        flow_id = self._ping_by_key.get(key)
        if flow_id is None:
            if not self._make_room():
                return []
            flow_id = self._new_flow_id()
            self._ping_by_key[key] = flow_id
            self._ping[flow_id] = _PingFlow(key, 0.0, quote)
        flow = self._ping[flow_id]
        flow.deadline = now + self.config.ping_flow_timeout
        flow.quote = quote
        host = format_ip6(dst) if len(dst) == 16 else format_ip(dst)
        return [PingSend(flow_id, host, sequence, payload)]

    def ping_reply(
        self, flow_id: int, sequence: int, payload: bytes, now: float
    ) -> list[StackAction]:
        """An echo reply arrived on the flow's host socket."""
        flow = self._ping.get(flow_id)
        if flow is None or len(payload) > 0xFFFF - 48:
            return []
        flow.deadline = now + self.config.ping_flow_timeout
        ident, remote = flow.key
        rest = ident.to_bytes(2, "big") + (sequence & 0xFFFF).to_bytes(2, "big")
        if len(remote) == 16:
            message = Icmp6Message(ICMPV6_ECHO_REPLY, 0, rest + payload)
            return self._ip_frames(
                remote, PROTO_ICMPV6, message.build(remote, self.config.container_ip6)
            )
        return self._ip_frames(
            remote, PROTO_ICMP, IcmpMessage(ICMP_ECHO_REPLY, 0, rest, payload).build()
        )

    def ping_unreachable(self, flow_id: int, now: float) -> list[StackAction]:
        """The host could not send the flow's request (no route): the container hears so."""
        flow = self._ping.get(flow_id)
        if flow is None:
            return []
        remote = flow.key[1]
        if len(remote) == 16:
            return self._unreachable6(remote, flow.quote, UNREACH6_NO_ROUTE)
        message = IcmpMessage(ICMP_DEST_UNREACHABLE, UNREACH_NET, bytes(4), flow.quote)
        return self._ip_frames(self.config.gateway_ip, PROTO_ICMP, message.build())

    # --- TCP --------------------------------------------------------------------------------------

    def _receive_tcp(self, packet: IPPacket, now: float) -> list[StackAction]:
        seg = TcpSegment.parse(
            packet.payload, packet.src, packet.dst, verify=self.config.verify_checksums
        )
        key = (seg.src_port, packet.dst, seg.dst_port)
        flow_id = self._tcp_by_key.get(key)
        if flow_id is not None:
            conn = self._tcp[flow_id].conn
            reopening = (
                conn.state is tcp.State.TIME_WAIT
                and seg.flags & (SYN | ACK | RST) == SYN
                and tcp.seq_diff(seg.seq, conn.rcv_nxt) > 0
            )
            if not reopening:
                conn.defer_acks = self._batch
                actions = self._tcp_actions(flow_id, conn.receive_segment(seg, now))
                if conn.ack_owed:
                    self._acks_owed.add(flow_id)
                return actions
            self._forget_tcp(flow_id)  # RFC 9293: a new SYN may reuse a TIME-WAIT connection
        if seg.flags & RST:
            return []
        if seg.flags & (SYN | ACK) != SYN:
            return self._reset_reply(packet.dst, seg)
        if (
            seg.src_port == 0
            or seg.dst_port == 0
            or not self._tcp_allowed(packet.dst, seg.dst_port)
        ):
            return self._reset_reply(packet.dst, seg)
        if not self._make_room() or self.buffered_bytes() >= self.config.max_buffered_bytes:
            return self._reset_reply(packet.dst, seg)
        config = self.config
        conn = tcp.TcpConnection(
            seg,
            now,
            iss=self._iss_source(),
            # The MSS follows from the MTU less IPv4's 20-byte header: IPv6's is 40.
            mtu=config.mtu - (20 if len(packet.dst) == 16 else 0),
            receive_buffer=config.tcp_receive_buffer,
            send_buffer=config.tcp_send_buffer,
            time_wait=config.tcp_time_wait,
        )
        flow_id = self._new_flow_id()
        self._tcp_by_key[key] = flow_id
        self._tcp[flow_id] = _TcpFlow(key, conn)
        if self._is_dns(packet.dst) and config.dns_upstream is not None:
            return [OpenTcp(flow_id, (config.dns_upstream, seg.dst_port))]
        return [OpenTcp(flow_id, (self._host_address(packet.dst), seg.dst_port))]

    def _tcp_allowed(self, dst: bytes, port: int) -> bool:
        config = self.config
        if self._is_dns(dst):
            return port == DNS_PORT and config.dns_upstream is not None
        return not self._is_gateway(dst) or config.allow_host_loopback

    def _is_dns(self, address: bytes) -> bool:
        return address == self.config.dns_ip or address == self.config.dns_ip6

    def _is_gateway(self, address: bytes) -> bool:
        return address == self.config.gateway_ip or address == self.config.gateway_ip6

    def _container_address(self, remote: bytes) -> bytes:
        """The container's address in `remote`'s family."""
        return self.config.container_ip6 if len(remote) == 16 else self.config.container_ip

    def _reset_reply(self, remote: bytes, seg: TcpSegment) -> list[StackAction]:
        """RFC 9293's reset for a segment that belongs to no connection."""
        if seg.flags & ACK:
            reply = TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            ack = (seg.seq + seg.sequence_length) & 0xFFFFFFFF
            reply = TcpSegment(seg.dst_port, seg.src_port, 0, ack, RST | ACK, 0)
        return self._ip_frames(
            remote, PROTO_TCP, reply.build(remote, self._container_address(remote))
        )

    def _tcp_actions(self, flow_id: int, actions: list[tcp.TcpAction]) -> list[StackAction]:
        flow = self._tcp[flow_id]
        remote = flow.key[1]
        out: list[StackAction] = []
        for action in actions:
            if isinstance(action, tcp.Transmit):
                segment, config = action.segment, self.config
                partial = config.checksum_offload and self.container_mac is not None
                local = config.container_ip6 if len(remote) == 16 else config.container_ip
                header = segment.header(remote, local, partial_checksum=partial)
                # IPv6 is never fragmented (the MSS fits the MTU); IPv4 only with a small MTU,
                # and then in one piece with a complete checksum.
                if len(remote) == 4 and IPV4_HEADER_LEN + len(header) + len(segment.payload) > (
                    config.mtu
                ):
                    out.extend(self._ip_frames(remote, PROTO_TCP, segment.build(remote, local)))
                    continue
                out.extend(
                    self._ip_frames(
                        remote, PROTO_TCP, header, partial_checksum=partial, tail=segment.payload
                    )
                )
            elif isinstance(action, tcp.DeliverToHost):
                out.append(TcpDeliver(flow_id, action.data))
            elif isinstance(action, tcp.HostEOF):
                out.append(TcpHostEOF(flow_id))
            else:
                out.append(TcpClose(flow_id, action.reset))
        if flow.conn.state is tcp.State.CLOSED:
            self._forget_tcp(flow_id)
        return out

    def _forget_tcp(self, flow_id: int) -> None:
        flow = self._tcp.pop(flow_id)
        del self._tcp_by_key[flow.key]

    def _conn(self, flow_id: int) -> tcp.TcpConnection | None:
        flow = self._tcp.get(flow_id)
        return flow.conn if flow is not None else None

    def tcp_connected(self, flow_id: int, now: float) -> list[StackAction]:
        conn = self._conn(flow_id)
        return self._tcp_actions(flow_id, conn.host_connected(now)) if conn else []

    def tcp_connect_failed(self, flow_id: int, now: float) -> list[StackAction]:
        conn = self._conn(flow_id)
        return self._tcp_actions(flow_id, conn.host_connect_failed(now)) if conn else []

    def host_send_space(self, flow_id: int) -> int:
        """How many bytes may be read from the flow's host socket and passed to `host_data`."""
        conn = self._conn(flow_id)
        if conn is None:
            return 0
        return max(0, min(conn.send_space, self.config.max_buffered_bytes - self.buffered_bytes()))

    def host_data(self, flow_id: int, data: bytes | memoryview, now: float) -> list[StackAction]:
        """Bytes read from the host socket; at most `host_send_space(flow_id)`."""
        conn = self._conn(flow_id)
        if conn is None:
            return []
        return self._tcp_actions(flow_id, conn.send(data, now))

    def host_consumed(self, flow_id: int, count: int, now: float) -> list[StackAction]:
        """`count` bytes of earlier `TcpDeliver` actions were written to the host socket."""
        conn = self._conn(flow_id)
        if conn is None:
            return []
        conn.defer_acks = self._batch
        actions = self._tcp_actions(flow_id, conn.host_consumed(count, now))
        if conn.ack_owed:
            self._acks_owed.add(flow_id)
        return actions

    def host_closed(self, flow_id: int, now: float) -> list[StackAction]:
        """The host socket reached EOF: the container gets a FIN after the buffered data."""
        conn = self._conn(flow_id)
        return self._tcp_actions(flow_id, conn.close(now)) if conn else []

    def host_reset(self, flow_id: int, now: float) -> list[StackAction]:
        """The host socket failed: the container gets a RST."""
        conn = self._conn(flow_id)
        return self._tcp_actions(flow_id, conn.abort(now)) if conn else []

    def tcp_state(self, flow_id: int) -> tcp.State | None:
        conn = self._conn(flow_id)
        return conn.state if conn else None

    def buffered_bytes(self) -> int:
        return sum(flow.conn.buffered for flow in self._tcp.values())

    # --- UDP --------------------------------------------------------------------------------------

    def _receive_udp(self, packet: IPPacket, now: float) -> list[StackAction]:
        config = self.config
        datagram = UdpDatagram.parse(
            packet.payload, packet.src, packet.dst, verify=self.config.verify_checksums
        )
        if datagram.src_port == 0 or datagram.dst_port == 0:
            return []
        is_dns = self._is_dns(packet.dst)
        refused = (is_dns and datagram.dst_port != DNS_PORT) or (
            self._is_gateway(packet.dst) and not config.allow_host_loopback
        )
        if refused:
            return self._unreachable(packet, UNREACH_PORT)
        key = (datagram.src_port, packet.dst, datagram.dst_port)
        flow_id = self._udp_by_key.get(key)
        if flow_id is None:
            if not self._make_room():
                return []
            flow_id = self._new_flow_id()
            self._udp_by_key[key] = flow_id
            self._udp[flow_id] = _UdpFlow(key, 0.0)
        self._udp[flow_id].deadline = now + config.udp_flow_timeout
        if is_dns:
            return [DnsQuery(flow_id, datagram.payload)]
        dst = (self._host_address(packet.dst), datagram.dst_port)
        return [UdpSend(flow_id, dst, datagram.payload)]

    def udp_from_host(self, flow_id: int, payload: bytes, now: float) -> list[StackAction]:
        """A datagram for the container on a UDP flow (or a DNS answer); it appears to come from
        the address and port the container sent to."""
        flow = self._udp.get(flow_id)
        if flow is None or len(payload) > 0xFFFF - 28:
            return []
        flow.deadline = now + self.config.udp_flow_timeout
        container_port, remote, remote_port = flow.key
        datagram = UdpDatagram(remote_port, container_port, payload)
        local = self._container_address(remote)
        return self._ip_frames(remote, PROTO_UDP, datagram.build(remote, local))

    def _unreachable(self, packet: IPPacket, code: int) -> list[StackAction]:
        """ICMP destination unreachable quoting the offending datagram's header and 8 bytes
        (as much of the packet as fits in IPv6's minimum MTU, for ICMPv6)."""
        if isinstance(packet, IPv6Packet):
            quote = packet.raw[: MIN_MTU - IPV6_HEADER_LEN - 8]
            return self._unreachable6(packet.dst, quote, UNREACH6_PORT)
        quoted = packet.header() + packet.payload[:8]
        message = IcmpMessage(ICMP_DEST_UNREACHABLE, code, bytes(4), quoted)
        return self._ip_frames(packet.dst, PROTO_ICMP, message.build())

    def _unreachable6(self, src: bytes, quote: bytes, code: int) -> list[StackAction]:
        message = Icmp6Message(ICMPV6_DEST_UNREACHABLE, code, bytes(4) + quote)
        return self._ip_frames(src, PROTO_ICMPV6, message.build(src, self.config.container_ip6))

    # --- flows and timers -------------------------------------------------------------------------

    @property
    def flow_count(self) -> int:
        return len(self._tcp) + len(self._udp) + len(self._ping)

    def _make_room(self) -> bool:
        """True if one more flow fits, evicting a TIME-WAIT connection if that is what it takes."""
        if self.flow_count < self.config.max_flows:
            return True
        for flow_id, flow in self._tcp.items():
            if flow.conn.state is tcp.State.TIME_WAIT:
                self._forget_tcp(flow_id)
                return True
        return False

    def _new_flow_id(self) -> int:
        flow_id = self._next_flow_id
        self._next_flow_id += 1
        return flow_id

    def _host_address(self, dst: bytes) -> str:
        if len(dst) == 16:
            return HOST_LOOPBACK6 if dst == self.config.gateway_ip6 else format_ip6(dst)
        return HOST_LOOPBACK if dst == self.config.gateway_ip else format_ip(dst)

    def next_timeout(self) -> float | None:
        deadlines = [flow.deadline for flow in self._udp.values()]
        deadlines.extend(flow.deadline for flow in self._ping.values())
        deadlines.extend(
            d for flow in self._tcp.values() if (d := flow.conn.next_timeout()) is not None
        )
        reassembly = self._reassembler.next_timeout()
        if reassembly is not None:
            deadlines.append(reassembly)
        return min(deadlines, default=None)

    def timeout(self, now: float) -> list[StackAction]:
        out: list[StackAction] = []
        self._reassembler.expire(now)
        for flow_id, flow in list(self._tcp.items()):
            deadline = flow.conn.next_timeout()
            if deadline is not None and deadline <= now:
                out.extend(self._tcp_actions(flow_id, flow.conn.timeout(now)))
        for flow_id, udp_flow in list(self._udp.items()):
            if udp_flow.deadline <= now:
                del self._udp[flow_id]
                del self._udp_by_key[udp_flow.key]
                out.append(UdpClose(flow_id))
        for flow_id, ping_flow in list(self._ping.items()):
            if ping_flow.deadline <= now:
                del self._ping[flow_id]
                del self._ping_by_key[ping_flow.key]
                out.append(PingClose(flow_id))
        return out

    # --- output -----------------------------------------------------------------------------------

    def _arp_for_container(self) -> SendFrame:
        config = self.config
        request = ArpPacket(
            ARP_REQUEST, config.gateway_mac, config.gateway_ip, _ZERO_MAC, config.container_ip
        )
        frame = EthernetFrame(BROADCAST_MAC, config.gateway_mac, ETHERTYPE_ARP, request.build())
        return SendFrame(frame.build())

    def _ip_frames(
        self,
        src: bytes,
        protocol: int,
        payload: bytes,
        *,
        partial_checksum: bool = False,
        tail: bytes | memoryview = b"",
    ) -> list[StackAction]:
        """Frames carrying `payload` + `tail` from `src` to the container, fragmented to the MTU
        (IPv4) or dropped when too big for it (IPv6: the stack sends no fragments). `tail` goes
        out as the frame's second part, uncopied (it must fit the MTU unfragmented)."""
        if len(src) == 16:
            return self._ip6_frames(src, protocol, payload, partial_checksum, tail)
        if self.container_mac is None:
            return [self._arp_for_container()]  # the packet is lost; TCP and UDP users retry
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        packet = IPv4Packet(
            src=src,
            dst=self.config.container_ip,
            protocol=protocol,
            payload=payload,
            identification=self._ip_id,
        )
        head = self.container_mac + self.config.gateway_mac + ETHERTYPE_IPV4.to_bytes(2, "big")
        size = len(payload) + len(tail)
        if IPV4_HEADER_LEN + size <= self.config.mtu:
            header = packet.header(size) if tail else packet.header()
            return [SendFrame(b"".join((head, header, payload)), partial_checksum, tail)]
        return [SendFrame(head + piece.build()) for piece in fragment(packet, self.config.mtu)]

    def _ip6_frames(
        self,
        src: bytes,
        protocol: int,
        payload: bytes,
        partial_checksum: bool = False,
        tail: bytes | memoryview = b"",
    ) -> list[StackAction]:
        if self.container_mac is None:
            return [self._solicit_container()]  # the packet is lost; TCP and UDP users retry
        size = len(payload) + len(tail)
        if IPV6_HEADER_LEN + size > self.config.mtu:
            return []
        config = self.config
        packet = IPv6Packet(src, config.container_ip6, protocol, payload)
        head = self.container_mac + config.gateway_mac + ETHERTYPE_IPV6.to_bytes(2, "big")
        header = packet.header(size) if tail else packet.header()
        return [SendFrame(b"".join((head, header, payload)), partial_checksum, tail)]


def _is_routable(address: bytes) -> bool:
    """False for this-network, loopback, link-local, multicast and reserved destinations."""
    first = address[0]
    if first in (0, 127) or first >= 224:
        return False
    return not (first == 169 and address[1] == 254)
