"""The I/O driver: runs one container's `Stack` over its TAP fd and non-blocking host sockets.

Built on the standard library's `selectors` (no trio: it costs ~14 MB per process and the driver
lives in the per-container monitor), so that a host loop can run it next to its own duties:

    driver = NetDriver(tap_fd, NetConfig())   # DNS through the host's resolv.conf
    driver.register(selector)
    while running:
        for key, mask in selector.select(min_of(driver.select_timeout(), own_timeout)):
            key.data(mask)   # every key the driver registers carries a callable(mask)
        driver.run_timers()

`serve()` is that loop on a selector of its own. The driver owns the TAP fd and every socket it
opens; `close()` releases them. When the TAP device goes away (the container's namespace was
destroyed) the driver stops (`stop()`: `finished` becomes true, open flows are reset) and calls
`on_finished`; flows the container had completed may still be handing their last bytes to the
host (`draining`): keep the driver in the loop until that is false (bounded by ORPHAN_TIMEOUT),
then `close()`.

What the driver does with the stack's actions is spelt out in `netns.stack`. Its own bounds: at
most FRAMES_PER_EVENT TAP frames per readiness event (a flooding container cannot starve the
host loop), at most MAX_QUEUED_FRAMES frames waiting for the TAP (more are dropped, as a full link
would), per-flow host-bound bytes bounded by the stack's receive window, reads from host sockets
bounded by `Stack.host_send_space`, DNS queries in flight bounded by MAX_DNS_PENDING, and the
last bytes of flows the container closed before the host took them (kept up to ORPHAN_TIMEOUT)
by a quarter of the stack's `max_buffered_bytes`: beyond that such flows are reset.

DNS: the container's UDP queries to the DNS address go to the given resolvers (normally the
host's, from resolv.conf: see `netns.resolvconf`), one after the other on timeouts; matching
answers (by resolver address and query id) go back to the container, and when every resolver
failed it gets SERVFAIL. TCP connections to the DNS address, port 53, go to the first resolver.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from netns._record import Record
from netns.config import DNS_PORT, NetConfig
from netns.ping import PingRelay
from netns.resolvconf import host_resolvers, read_resolv_conf
from netns.sendbuffer import RecvArena
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
from netns.tap import VNET_HEADER, enable_offloads, has_vnet_header

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

FRAMES_PER_EVENT = 64
DATAGRAMS_PER_EVENT = 32
MAX_QUEUED_FRAMES = 1024
HOST_READ_CHUNK = 256 << 10
MAX_DATAGRAM = 65535
DNS_TIMEOUT = 1.0  # per attempt, then the next resolver
DNS_ROUNDS = 2  # times each resolver is tried before the container gets SERVFAIL
MAX_DNS_PENDING = 256
ORPHAN_TIMEOUT = 60.0  # a closed flow's last bytes may take this long to reach the host socket

Resolver = tuple[str, int]
Callback = Callable[[int], None]
_LINGER_ABORT = struct.pack("ii", 1, 0)
# virtio-net headers for frames written: nothing to do, or complete the TCP checksum of an
# Ethernet + IPv4 (20 bytes) + TCP frame (VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start 34, offset 16).
_VNET_PLAIN = bytes(VNET_HEADER)
_VNET_PARTIAL_TCP = struct.pack("<BBHHHH", 1, 0, 0, 0, 14 + 20, 16)
_VNET_PARTIAL_TCP6 = struct.pack("<BBHHHH", 1, 0, 0, 0, 14 + 40, 16)  # after an IPv6 header
_IPV6_ETHERTYPE = b"\x86\xdd"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _strip_zone(host: str) -> str:
    return host.split("%", 1)[0]


def servfail(query: bytes) -> bytes | None:
    """A SERVFAIL answer to a DNS query (echoing its question), or None if it is not a query."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    question = b""
    qdcount = b"\0\0"
    if query[4:6] == b"\0\x01":
        offset = 12
        while offset < len(query) and 0 < query[offset] < 64:
            offset += 1 + query[offset]
        end = offset + 5  # the root label, type and class
        if offset < len(query) and query[offset] == 0 and end <= len(query):
            question, qdcount = query[12:end], b"\0\x01"
    flags = bytes([0x80 | (query[2] & 0x79), 0x80 | 2])  # QR, opcode and RD kept; RA; SERVFAIL
    return query[:2] + flags + qdcount + bytes(6) + question


class _TcpFlow:
    __slots__ = ("connecting", "eof_pending", "events", "flow_id", "host_eof", "pending", "sock")

    def __init__(self, flow_id: int, sock: socket.socket, connecting: bool) -> None:
        self.flow_id = flow_id
        self.sock = sock
        self.connecting = connecting
        self.pending = bytearray()  # delivered by the stack, not yet accepted by the socket
        self.eof_pending = False  # shut the socket for writing once `pending` is empty
        self.host_eof = False  # the host socket reached EOF (or was shut down for reading)
        self.events = 0


class _Orphan:
    """A flow the stack has finished with whose last bytes still go to the host socket."""

    __slots__ = ("deadline", "pending", "sock")

    def __init__(self, sock: socket.socket, pending: bytearray, deadline: float) -> None:
        self.sock = sock
        self.pending = pending
        self.deadline = deadline


class _DnsQuery:
    __slots__ = ("attempt", "deadline", "flow_id", "payload")

    def __init__(self, flow_id: int, payload: bytes, deadline: float) -> None:
        self.flow_id = flow_id
        self.payload = payload
        self.attempt = 0
        self.deadline = deadline


class DriverStats(Record):
    __slots__ = (
        "dns_failures",
        "dns_queries",
        "frames_dropped",
        "frames_in",
        "frames_out",
        "orphaned",
    )

    def __init__(
        self,
        frames_in: int = 0,
        frames_out: int = 0,
        frames_dropped: int = 0,
        dns_queries: int = 0,
        dns_failures: int = 0,
        orphaned: int = 0,
    ) -> None:
        self.frames_in = frames_in
        self.frames_out = frames_out
        self.frames_dropped = frames_dropped  # the TAP would not take them and the queue was full
        self.dns_queries = dns_queries
        self.dns_failures = dns_failures  # answered with SERVFAIL
        self.orphaned = (
            orphaned  # flows the stack closed while their last bytes waited for the host
        )


class NetDriver:
    def __init__(
        self,
        tap_fd: int,
        config: NetConfig | None = None,
        *,
        resolvers: Sequence[Resolver] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        """Drive a stack for `tap_fd` (the driver takes ownership of the fd).

        `resolvers`: (address, port) pairs the DNS forwarder uses, in order; None: the host's,
        from /etc/resolv.conf (read once, here). Unless `config` names a `dns_upstream`, TCP to
        the DNS address goes to the first of them.
        """
        config = config or NetConfig()
        if resolvers is None:
            resolvers = host_resolvers(read_resolv_conf())
        self._resolvers = [(host, port) for host, port in resolvers]
        if self._resolvers and config.dns_upstream is None:
            config = config.replace(dns_upstream=self._resolvers[0][0])
        self._vnet = has_vnet_header(tap_fd)
        if self._vnet and not config.checksum_offload:
            config = config.replace(checksum_offload=True)
        # The container's kernel may then leave checksums partial and send TCP segments up to
        # 64 KiB whatever the MTU: the stack verifies no TCP/UDP checksum (unless told to) and
        # takes a TSO frame as the one large segment its IP header says it is. It saves that
        # kernel a checksum pass and a copy over every byte it sends (bench/net.py).
        self._offloads = False
        if self._vnet and not config.verify_checksums:
            try:
                enable_offloads(tap_fd)
                self._offloads = True
            except OSError:
                pass  # an older kernel: frames stay complete
        self.config = config
        self.stack = Stack(config)
        self.stats = DriverStats()
        self.finished = False
        self._tap = tap_fd
        # An Ethernet header and a VLAN tag, after the virtio-net header if any; with TSO, the
        # largest IPv6 datagram (its 40-byte header is not part of the 64 KiB).
        largest = max(config.mtu, 1500, 40 + 0xFFFF if self._offloads else 0)
        self._frame_size = largest + 18 + (VNET_HEADER if self._vnet else 0)
        self._clock = clock
        self._on_finished = on_finished
        self._selector: selectors.BaseSelector | None = None
        self._tap_events = 0
        self._frames: deque[SendFrame] = deque()
        self._queue: deque[StackAction] = deque()
        self._applying = False
        self._now = clock()
        self._tcp: dict[int, _TcpFlow] = {}
        self._paused: set[int] = set()  # flows not read for lack of send space
        self._orphans: dict[socket.socket, _Orphan] = {}
        self._orphan_bytes = 0
        # Closed flows' bytes are outside the stack's accounting: bounded here.
        self._orphan_limit = max(config.tcp_receive_buffer, config.max_buffered_bytes // 4)
        self._udp: dict[int, socket.socket] = {}
        self._dns_sockets: dict[tuple[int, int], socket.socket] = {}
        self._dns_pending: dict[tuple[int, bytes], _DnsQuery] = {}
        self._resolver_addresses = {(_strip_zone(h), p) for h, p in self._resolvers}
        self._dns_tcp: Resolver | None = None
        if self._resolvers and config.dns_upstream == self._resolvers[0][0]:
            self._dns_tcp = self._resolvers[0]
        self._pings: PingRelay | None = None  # ICMP echo beyond the gateway (netns.ping)
        self._arena = RecvArena(HOST_READ_CHUNK)

    # --- hosting ----------------------------------------------------------------------------------

    @property
    def resolvers(self) -> list[Resolver]:
        return list(self._resolvers)

    @property
    def draining(self) -> bool:
        """Closed flows still have bytes for their host sockets (`close()` would drop them)."""
        return bool(self._orphans)

    def register(self, selector: selectors.BaseSelector) -> None:
        """Start: watch the TAP device (and later the host sockets) with `selector`."""
        if self._selector is not None:
            raise RuntimeError("NetDriver.register called twice")
        self._selector = selector
        os.set_blocking(self._tap, False)
        self._tap_events = self._watch(self._tap, 0, EVENT_READ, self._on_tap)
        self._pings = PingRelay(selector, self.stack, self._apply, self._clock)

    def select_timeout(self) -> float | None:
        """Seconds until `run_timers` is due (None: no timer is pending)."""
        deadline = self.next_deadline()
        return None if deadline is None else max(0.0, deadline - self._clock())

    def next_deadline(self) -> float | None:
        """When `run_timers` is due, on the driver's clock."""
        deadlines = [orphan.deadline for orphan in self._orphans.values()]
        if not self.finished:
            deadlines.extend(query.deadline for query in self._dns_pending.values())
            stack_deadline = self.stack.next_timeout()
            if stack_deadline is not None:
                deadlines.append(stack_deadline)
        return min(deadlines, default=None)

    def run_timers(self) -> None:
        """Retransmissions, idle flows, DNS retries. Cheap when nothing is due."""
        now = self._now = self._clock()
        for sock, orphan in list(self._orphans.items()):
            if orphan.deadline <= now:
                self._drop_orphan(sock, abort=True)
        if self.finished:
            return
        deadline = self.stack.next_timeout()
        if deadline is not None and deadline <= now:
            self._apply(self.stack.timeout(now))
        for key, query in list(self._dns_pending.items()):
            if query.deadline <= now:
                self._dns_retry(key, query)
        self._resume_paused()

    def serve(self, until: Callable[[], bool] | None = None, poll: float = 0.1) -> None:
        """Run on a selector of its own until the TAP device is gone and nothing is draining, or
        `until()` is true (checked at least every `poll` seconds); then `close()`."""
        with selectors.DefaultSelector() as selector:
            self.register(selector)
            try:
                while not (self.finished and not self.draining):
                    if until is not None and until():
                        break
                    timeout = self.select_timeout()
                    if until is not None:
                        timeout = poll if timeout is None else min(timeout, poll)
                    for key, mask in selector.select(timeout):
                        key.data(mask)
                    self.run_timers()
            finally:
                self.close()

    def stop(self) -> None:
        """Stop networking: close the TAP fd, reset the open flows' host sockets, close the UDP
        ones. Finished flows whose last bytes are still on their way to the host keep draining
        (`draining`) as long as the host loop runs, until `close()` or ORPHAN_TIMEOUT.
        Calls `on_finished` (once). The driver does this itself when the TAP device goes away."""
        if self.finished:
            return
        self.finished = True
        for flow in self._tcp.values():
            self._unwatch(flow.sock)
            flow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            flow.sock.close()
        for sock in [*self._udp.values(), *self._dns_sockets.values()]:
            self._unwatch(sock)
            sock.close()
        self._unwatch(self._tap)
        os.close(self._tap)
        self._tcp.clear()
        self._udp.clear()
        self._dns_sockets.clear()
        self._dns_pending.clear()
        if self._pings is not None:
            self._pings.close()
        self._paused.clear()
        self._frames.clear()
        self._queue.clear()
        if self._on_finished is not None:
            self._on_finished()

    def close(self) -> None:
        """`stop()`, and drop what is still draining (idempotent)."""
        self.stop()
        for sock in list(self._orphans):
            self._drop_orphan(sock, abort=True)

    def _unwatch(self, fileobj: int | socket.socket) -> None:
        if self._selector is not None:
            try:
                self._selector.unregister(fileobj)
            except (KeyError, ValueError):
                pass

    def _watch(self, fileobj: int | socket.socket, current: int, wanted: int, cb: Callback) -> int:
        """Change what `fileobj` is watched for; returns the new event mask."""
        selector = self._selector
        if current == wanted or selector is None:
            return current
        if wanted == 0:
            selector.unregister(fileobj)
        elif current == 0:
            selector.register(fileobj, wanted, cb)
        else:
            selector.modify(fileobj, wanted, cb)
        return wanted

    # --- the TAP device ---------------------------------------------------------------------------

    def _on_tap(self, mask: int) -> None:
        if self.finished:
            return
        now = self._now = self._clock()
        stack = self.stack
        if mask & EVENT_WRITE:
            self._flush_frames()
        if mask & EVENT_READ:
            stack.begin_batch()
            for _ in range(FRAMES_PER_EVENT):
                try:
                    frame = os.read(self._tap, self._frame_size)
                except BlockingIOError:
                    break
                except OSError:
                    self.stop()  # the device is gone with the container's namespace
                    return
                if not frame:
                    self.stop()
                    return
                self.stats.frames_in += 1
                if self._vnet:  # the stack needs nothing from the header (see __init__)
                    self._apply(stack.receive_frame(memoryview(frame)[VNET_HEADER:], now))
                else:
                    self._apply(stack.receive_frame(frame, now))
                if self.finished:
                    return
            self._apply(stack.end_batch(now))
            if self.finished:
                return
            self._resume_paused()
        self._update_tap()

    def _write(self, frame: SendFrame) -> None:
        # One writev of the parts: a TCP payload goes from the send buffer to the device
        # uncopied (see SendFrame); the TAP takes a frame whole or not at all.
        head, payload = frame.head, frame.payload
        if self._vnet:
            header = _VNET_PLAIN
            if frame.partial_checksum:
                ipv6 = head[12:14] == _IPV6_ETHERTYPE
                header = _VNET_PARTIAL_TCP6 if ipv6 else _VNET_PARTIAL_TCP
            os.writev(self._tap, (header, head, payload) if payload else (header, head))
        elif payload:
            os.writev(self._tap, (head, payload))
        else:
            os.write(self._tap, head)

    def _send_frame(self, frame: SendFrame) -> None:
        if not self._frames:
            try:
                self._write(frame)
                self.stats.frames_out += 1
                return
            except BlockingIOError:
                pass
            except OSError:
                self.stats.frames_dropped += 1  # e.g. the device is down
                return
        if len(self._frames) >= MAX_QUEUED_FRAMES:
            self.stats.frames_dropped += 1
            return
        self._frames.append(frame)
        self._update_tap()

    def _flush_frames(self) -> None:
        frames = self._frames
        while frames:
            try:
                self._write(frames[0])
                self.stats.frames_out += 1
            except BlockingIOError:
                return
            except OSError:
                self.stats.frames_dropped += 1
            frames.popleft()

    def _update_tap(self) -> None:
        if not self.finished:
            wanted = EVENT_READ | (EVENT_WRITE if self._frames else 0)
            self._tap_events = self._watch(self._tap, self._tap_events, wanted, self._on_tap)

    # --- actions ----------------------------------------------------------------------------------

    def _apply(self, actions: Iterable[StackAction]) -> None:
        """Carry out actions in order; those that arise meanwhile are queued behind them."""
        queue = self._queue
        queue.extend(actions)
        if self._applying:
            return
        self._applying = True
        try:
            while queue and not self.finished:
                action = queue.popleft()
                if isinstance(action, SendFrame):
                    self._send_frame(action)
                elif isinstance(action, TcpDeliver):
                    self._tcp_deliver(action.flow_id, action.data)
                elif isinstance(action, OpenTcp):
                    self._open_tcp(action.flow_id, action.dst)
                elif isinstance(action, TcpHostEOF):
                    self._tcp_host_eof(action.flow_id)
                elif isinstance(action, TcpClose):
                    self._tcp_close(action.flow_id, action.reset)
                elif isinstance(action, UdpSend):
                    self._udp_send(action.flow_id, action.dst, action.payload)
                elif isinstance(action, DnsQuery):
                    self._dns_query(action.flow_id, action.payload)
                elif isinstance(action, UdpClose):
                    self._udp_close(action.flow_id)
                elif isinstance(action, PingSend) and self._pings is not None:
                    self._pings.send(action.flow_id, action.dst, action.sequence, action.payload)
                elif isinstance(action, PingClose) and self._pings is not None:
                    self._pings.close_flow(action.flow_id)
        finally:
            self._applying = False
            if self.finished:
                queue.clear()

    # --- TCP --------------------------------------------------------------------------------------

    def _open_tcp(self, flow_id: int, dst: Resolver) -> None:
        if self._dns_tcp is not None and dst == (self._dns_tcp[0], DNS_PORT):
            dst = self._dns_tcp
        try:
            sock = socket.socket(_family(dst[0]), socket.SOCK_STREAM)
        except OSError:
            self._apply(self.stack.tcp_connect_failed(flow_id, self._now))
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            code = sock.connect_ex(dst)
        except OSError as exc:  # e.g. an address that does not parse
            code = exc.errno or errno.EINVAL
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._apply(self.stack.tcp_connect_failed(flow_id, self._now))
            return
        flow = self._tcp[flow_id] = _TcpFlow(flow_id, sock, connecting=code != 0)
        if code == 0:
            self._apply(self.stack.tcp_connected(flow_id, self._now))
        self._update_flow(flow)

    def _on_tcp(self, flow: _TcpFlow, mask: int) -> None:
        if self._tcp.get(flow.flow_id) is not flow:
            return
        now = self._now = self._clock()
        stack = self.stack
        if flow.connecting:
            if mask & EVENT_WRITE:
                flow.connecting = False
                if flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self._forget_flow(flow)
                    flow.sock.close()
                    self._apply(stack.tcp_connect_failed(flow.flow_id, now))
                    return
                self._apply(stack.tcp_connected(flow.flow_id, now))
        else:
            if mask & EVENT_WRITE and flow.pending:
                self._flush_flow(flow)
            if mask & EVENT_READ and self._tcp.get(flow.flow_id) is flow:
                self._read_flow(flow)
        if self._tcp.get(flow.flow_id) is flow:
            self._update_flow(flow)

    def _read_flow(self, flow: _TcpFlow) -> None:
        stack = self.stack
        space = stack.host_send_space(flow.flow_id)
        if space <= 0 or flow.host_eof:
            return
        data: bytes | memoryview
        try:
            # Into reused memory when there is some (netns.sendbuffer.RecvArena): the bytes
            # then go to the TAP device from where the kernel put them.
            view = self._arena.space()
            if view is None:
                data = flow.sock.recv(min(space, HOST_READ_CHUNK))
            else:
                data = self._arena.take(flow.sock.recv_into(view, min(space, len(view))))
                del view
        except BlockingIOError:
            return
        except OSError:
            flow.host_eof = True
            self._apply(stack.host_reset(flow.flow_id, self._now))
            return
        if data:
            self._apply(stack.host_data(flow.flow_id, data, self._now))
        else:
            flow.host_eof = True
            self._apply(stack.host_closed(flow.flow_id, self._now))

    def _tcp_deliver(self, flow_id: int, data: bytes | memoryview) -> None:
        flow = self._tcp.get(flow_id)
        if flow is None:
            return
        if flow.pending:
            flow.pending += data
            return
        try:
            sent = flow.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._apply(self.stack.host_reset(flow_id, self._now))
            return
        if sent < len(data):
            flow.pending += memoryview(data)[sent:]
            self._update_flow(flow)
        if sent:
            self._apply(self.stack.host_consumed(flow_id, sent, self._now))

    def _flush_flow(self, flow: _TcpFlow) -> None:
        try:
            sent = flow.sock.send(flow.pending)
        except BlockingIOError:
            return
        except OSError:
            self._apply(self.stack.host_reset(flow.flow_id, self._now))
            return
        del flow.pending[:sent]
        if not flow.pending and flow.eof_pending:
            self._shutdown_write(flow)
        self._apply(self.stack.host_consumed(flow.flow_id, sent, self._now))

    def _tcp_host_eof(self, flow_id: int) -> None:
        flow = self._tcp.get(flow_id)
        if flow is None:
            return
        flow.eof_pending = True
        if not flow.pending:
            self._shutdown_write(flow)

    def _shutdown_write(self, flow: _TcpFlow) -> None:
        flow.eof_pending = False
        try:
            flow.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _tcp_close(self, flow_id: int, reset: bool) -> None:
        flow = self._tcp.get(flow_id)
        if flow is None:
            return
        self._forget_flow(flow)
        sock = flow.sock
        over_limit = self._orphan_bytes + len(flow.pending) > self._orphan_limit
        if reset or over_limit:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
        elif flow.pending:
            orphan = _Orphan(sock, flow.pending, self._now + ORPHAN_TIMEOUT)
            self._orphan_bytes += len(flow.pending)
            self.stats.orphaned += 1
            self._orphans[sock] = orphan
            self._watch(sock, 0, EVENT_WRITE, lambda mask: self._on_orphan(orphan))
            return
        sock.close()

    def _forget_flow(self, flow: _TcpFlow) -> None:
        del self._tcp[flow.flow_id]
        if not self._tcp:
            self._arena.trim()
        self._paused.discard(flow.flow_id)
        flow.events = self._watch(flow.sock, flow.events, 0, _ignore)

    def _update_flow(self, flow: _TcpFlow) -> None:
        if flow.connecting:
            wanted = EVENT_WRITE
        else:
            wanted = EVENT_WRITE if flow.pending else 0
            if not flow.host_eof:
                if self.stack.host_send_space(flow.flow_id) > 0:
                    wanted |= EVENT_READ
                    self._paused.discard(flow.flow_id)
                else:
                    self._paused.add(flow.flow_id)
        flow.events = self._watch(
            flow.sock, flow.events, wanted, lambda mask: self._on_tcp(flow, mask)
        )

    def _resume_paused(self) -> None:
        for flow_id in list(self._paused):
            flow = self._tcp.get(flow_id)
            if flow is None:
                self._paused.discard(flow_id)
            elif self.stack.host_send_space(flow_id) > 0:
                self._update_flow(flow)

    def _on_orphan(self, orphan: _Orphan) -> None:
        if self._orphans.get(orphan.sock) is not orphan:
            return
        try:
            sent = orphan.sock.send(orphan.pending)
        except BlockingIOError:
            return
        except OSError:
            self._drop_orphan(orphan.sock, abort=True)
            return
        del orphan.pending[:sent]
        self._orphan_bytes -= sent
        if not orphan.pending:
            self._drop_orphan(orphan.sock, abort=False)

    def _drop_orphan(self, sock: socket.socket, *, abort: bool) -> None:
        self._orphan_bytes -= len(self._orphans.pop(sock).pending)
        self._unwatch(sock)
        if abort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
        sock.close()

    # --- UDP --------------------------------------------------------------------------------------

    def _udp_send(self, flow_id: int, dst: Resolver, payload: bytes) -> None:
        sock = self._udp.get(flow_id)
        if sock is None:
            try:
                sock = socket.socket(_family(dst[0]), socket.SOCK_DGRAM)
            except OSError:
                return
            sock.setblocking(False)
            try:
                sock.connect(dst)
            except OSError:
                sock.close()
                return  # unreachable destination: the datagram is lost
            self._udp[flow_id] = sock
            self._watch(sock, 0, EVENT_READ, lambda mask: self._on_udp(flow_id, mask))
        try:
            sock.send(payload)
        except OSError:
            pass  # full buffer, an earlier ICMP error, too big: UDP may lose datagrams

    def _on_udp(self, flow_id: int, mask: int) -> None:
        sock = self._udp.get(flow_id)
        if sock is None:
            return
        now = self._now = self._clock()
        for _ in range(DATAGRAMS_PER_EVENT):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # an ICMP error for an earlier datagram
            self._apply(self.stack.udp_from_host(flow_id, data, now))
            if self._udp.get(flow_id) is not sock:
                return

    def _udp_close(self, flow_id: int) -> None:
        sock = self._udp.pop(flow_id, None)
        if sock is not None:
            self._watch(sock, EVENT_READ, 0, _ignore)
            sock.close()
        for family in (socket.AF_INET, socket.AF_INET6):
            dns = self._dns_sockets.pop((flow_id, family), None)
            if dns is not None:
                self._watch(dns, EVENT_READ, 0, _ignore)
                dns.close()
        for key in [key for key in self._dns_pending if key[0] == flow_id]:
            del self._dns_pending[key]

    # --- DNS --------------------------------------------------------------------------------------

    def _dns_query(self, flow_id: int, payload: bytes) -> None:
        if len(payload) < 12 or payload[2] & 0x80:
            return  # not a query
        self.stats.dns_queries += 1
        if not self._resolvers:
            self._dns_fail(flow_id, payload)
            return
        key = (flow_id, payload[:2])
        if key not in self._dns_pending and len(self._dns_pending) >= MAX_DNS_PENDING:
            return  # the container will retry
        query = self._dns_pending[key] = _DnsQuery(flow_id, payload, self._now + DNS_TIMEOUT)
        self._dns_send(query)

    def _dns_send(self, query: _DnsQuery) -> None:
        resolvers = self._resolvers
        resolver = resolvers[query.attempt % len(resolvers)]
        family = _family(resolver[0])
        key = (query.flow_id, int(family))
        sock = self._dns_sockets.get(key)
        if sock is None:
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError:
                return  # no such family here: the timer moves on to the next resolver
            sock.setblocking(False)
            self._dns_sockets[key] = sock
            flow_id = query.flow_id
            self._watch(sock, 0, EVENT_READ, lambda mask: self._on_dns(flow_id, sock, mask))
        try:
            sock.sendto(query.payload, resolver)
        except OSError:
            pass  # the timer moves on to the next resolver

    def _on_dns(self, flow_id: int, sock: socket.socket, mask: int) -> None:
        now = self._now = self._clock()
        for _ in range(DATAGRAMS_PER_EVENT):
            if sock.fileno() < 0:
                return
            try:
                data, address = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue
            if (_strip_zone(address[0]), address[1]) not in self._resolver_addresses:
                continue  # not from a resolver we asked
            if self._dns_pending.pop((flow_id, data[:2]), None) is None:
                continue  # late, duplicate or forged
            self._apply(self.stack.udp_from_host(flow_id, data, now))

    def _dns_retry(self, key: tuple[int, bytes], query: _DnsQuery) -> None:
        query.attempt += 1
        if query.attempt >= DNS_ROUNDS * len(self._resolvers):
            del self._dns_pending[key]
            self._dns_fail(query.flow_id, query.payload)
            return
        query.deadline = self._now + DNS_TIMEOUT
        self._dns_send(query)

    def _dns_fail(self, flow_id: int, query: bytes) -> None:
        self.stats.dns_failures += 1
        answer = servfail(query)
        if answer is not None:
            self._apply(self.stack.udp_from_host(flow_id, answer, self._now))


def _ignore(mask: int) -> None:
    pass
