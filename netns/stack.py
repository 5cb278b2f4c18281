"""The user-mode network stack for one container (sans-IO).

The stack sits at the other end of the container's TAP device. It plays the gateway (ARP, ICMP
echo) and terminates every TCP connection and UDP flow the container opens, asking the driver to
relay them through host sockets (NAT by proxy, as slirp does). It does no I/O: the driver feeds it
frames, host events and the time, and carries out the actions it returns:

- `SendFrame(frame)`: write an Ethernet frame to the TAP device;
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

Read from a host TCP socket at most `host_send_space(flow_id)` bytes at a time (more is a
ValueError), call `host_closed` on EOF and `host_reset` on errors, and call `timeout(now)`
whenever `now >= next_timeout()`. Calls naming a flow the stack has forgotten are ignored.
Frames must carry complete checksums (do not enable checksum offload on the TAP device); the
stack verifies those of TCP, UDP and ICMP only with `NetConfig.verify_checksums`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from netns import tcp
from netns._record import Record
from netns.config import DNS_PORT, NetConfig
from netns.packets import (
    ACK,
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ICMP_DEST_UNREACHABLE,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    IPV4_HEADER_LEN,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    RST,
    SYN,
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
_ZERO_MAC = bytes(6)

Endpoint = tuple[str, int]


class SendFrame(Record):
    """`partial_checksum`: an Ethernet + IPv4 (20 bytes) + TCP frame whose TCP checksum the
    receiving kernel must complete (only with `NetConfig.checksum_offload`)."""

    __slots__ = ("frame", "partial_checksum")

    def __init__(self, frame: bytes, partial_checksum: bool = False) -> None:
        self.frame = frame
        self.partial_checksum = partial_checksum


class OpenTcp(Record):
    __slots__ = ("dst", "flow_id")

    def __init__(self, flow_id: int, dst: Endpoint) -> None:
        self.flow_id = flow_id
        self.dst = dst


class TcpDeliver(Record):
    __slots__ = ("data", "flow_id")

    def __init__(self, flow_id: int, data: bytes) -> None:
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


StackAction = (
    SendFrame | OpenTcp | TcpDeliver | TcpHostEOF | TcpClose | UdpSend | DnsQuery | UdpClose
)

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
        try:
            eth = EthernetFrame.parse(frame)
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
            return self._receive_icmp(whole)
        return []

    def _receive_icmp(self, packet: IPv4Packet) -> list[StackAction]:
        message = IcmpMessage.parse(packet.payload, verify=self.config.verify_checksums)
        if message.type != ICMP_ECHO_REQUEST or message.code != 0:
            return []
        if packet.dst not in (self.config.gateway_ip, self.config.dns_ip):
            return []  # pinging the outside world is not supported
        reply = IcmpMessage(ICMP_ECHO_REPLY, 0, message.rest, message.payload)
        return self._ip_frames(packet.dst, PROTO_ICMP, reply.build())

    # --- TCP --------------------------------------------------------------------------------------

    def _receive_tcp(self, packet: IPv4Packet, now: float) -> list[StackAction]:
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
            mtu=config.mtu,
            receive_buffer=config.tcp_receive_buffer,
            send_buffer=config.tcp_send_buffer,
            time_wait=config.tcp_time_wait,
        )
        flow_id = self._new_flow_id()
        self._tcp_by_key[key] = flow_id
        self._tcp[flow_id] = _TcpFlow(key, conn)
        if packet.dst == config.dns_ip and config.dns_upstream is not None:
            return [OpenTcp(flow_id, (config.dns_upstream, seg.dst_port))]
        return [OpenTcp(flow_id, (self._host_address(packet.dst), seg.dst_port))]

    def _tcp_allowed(self, dst: bytes, port: int) -> bool:
        config = self.config
        if dst == config.dns_ip:
            return port == DNS_PORT and config.dns_upstream is not None
        return dst != config.gateway_ip or config.allow_host_loopback

    def _reset_reply(self, remote: bytes, seg: TcpSegment) -> list[StackAction]:
        """RFC 9293's reset for a segment that belongs to no connection."""
        if seg.flags & ACK:
            reply = TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            ack = (seg.seq + seg.sequence_length) & 0xFFFFFFFF
            reply = TcpSegment(seg.dst_port, seg.src_port, 0, ack, RST | ACK, 0)
        return self._ip_frames(remote, PROTO_TCP, reply.build(remote, self.config.container_ip))

    def _tcp_actions(self, flow_id: int, actions: list[tcp.TcpAction]) -> list[StackAction]:
        flow = self._tcp[flow_id]
        remote = flow.key[1]
        out: list[StackAction] = []
        for action in actions:
            if isinstance(action, tcp.Transmit):
                segment, config = action.segment, self.config
                partial = config.checksum_offload and self.container_mac is not None
                payload = segment.build(remote, config.container_ip, partial_checksum=partial)
                if partial and IPV4_HEADER_LEN + len(payload) > config.mtu:  # to be fragmented
                    partial = False
                    payload = segment.build(remote, config.container_ip)
                out.extend(self._ip_frames(remote, PROTO_TCP, payload, partial_checksum=partial))
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

    def host_data(self, flow_id: int, data: bytes, now: float) -> list[StackAction]:
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

    def _receive_udp(self, packet: IPv4Packet, now: float) -> list[StackAction]:
        config = self.config
        datagram = UdpDatagram.parse(
            packet.payload, packet.src, packet.dst, verify=self.config.verify_checksums
        )
        if datagram.src_port == 0 or datagram.dst_port == 0:
            return []
        is_dns = packet.dst == config.dns_ip
        refused = (is_dns and datagram.dst_port != DNS_PORT) or (
            packet.dst == config.gateway_ip and not config.allow_host_loopback
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
        return self._ip_frames(remote, PROTO_UDP, datagram.build(remote, self.config.container_ip))

    def _unreachable(self, packet: IPv4Packet, code: int) -> list[StackAction]:
        """ICMP destination unreachable quoting the offending datagram's header and 8 bytes."""
        quoted = packet.header() + packet.payload[:8]
        message = IcmpMessage(ICMP_DEST_UNREACHABLE, code, bytes(4), quoted)
        return self._ip_frames(packet.dst, PROTO_ICMP, message.build())

    # --- flows and timers -------------------------------------------------------------------------

    @property
    def flow_count(self) -> int:
        return len(self._tcp) + len(self._udp)

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
        return HOST_LOOPBACK if dst == self.config.gateway_ip else format_ip(dst)

    def next_timeout(self) -> float | None:
        deadlines = [flow.deadline for flow in self._udp.values()]
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
        self, src: bytes, protocol: int, payload: bytes, *, partial_checksum: bool = False
    ) -> list[StackAction]:
        """Frames carrying `payload` from `src` to the container, fragmented to the MTU."""
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
        if IPV4_HEADER_LEN + len(payload) <= self.config.mtu:
            return [SendFrame(b"".join((head, packet.header(), payload)), partial_checksum)]
        return [SendFrame(head + piece.build()) for piece in fragment(packet, self.config.mtu)]


def _is_routable(address: bytes) -> bool:
    """False for this-network, loopback, link-local, multicast and reserved destinations."""
    first = address[0]
    if first in (0, 127) or first >= 224:
        return False
    return not (first == 169 and address[1] == 254)
