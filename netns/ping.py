"""ICMP echo beyond the gateway: the container's pings leave through the host's unprivileged
ICMP sockets (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), and IPPROTO_ICMPV6 over AF_INET6).

The kernel allows those to users whose group is in /proc/sys/net/ipv4/ping_group_range (for
both families); elsewhere socket() fails with EACCES and the request is dropped, so the
container's ping gets no reply, as under slirp4netns. The kernel picks each socket's identifier
and computes the checksum; the stack (`Stack.ping_reply`) gives replies the container's
identifier back. One socket per ping flow (the stack's flow: identifier and destination; it
counts against `NetConfig.max_flows` and idles out after `ping_flow_timeout`).

The codecs are plain functions; `PingRelay` is the thin I/O shell the driver delegates
`PingSend` and `PingClose` to.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netns.stack import Stack, StackAction

ECHO_REQUEST = 8
ECHO_REPLY = 0
ECHO_REQUEST6 = 128
ECHO_REPLY6 = 129
REPLIES_PER_EVENT = 32
MAX_MESSAGE = 65535
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
# sendto() errors that mean the host has no way there: the container hears "unreachable".
UNREACHABLE_ERRORS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})
_ECHO = struct.Struct("!BBHHH")


def is_ipv6(host: str) -> bool:
    return ":" in host


def echo_request(ipv6: bool, sequence: int, payload: bytes) -> bytes:
    """An echo request for an ICMP socket: identifier and checksum are the kernel's to fill."""
    kind = ECHO_REQUEST6 if ipv6 else ECHO_REQUEST
    return _ECHO.pack(kind, 0, 0, 0, sequence & 0xFFFF) + payload


def parse_echo_reply(ipv6: bool, data: bytes) -> tuple[int, bytes] | None:
    """(sequence, payload) of an echo reply read from an ICMP socket; None for anything else."""
    if len(data) < _ECHO.size:
        return None
    kind, code, _sum, _ident, sequence = _ECHO.unpack_from(data)
    if kind != (ECHO_REPLY6 if ipv6 else ECHO_REPLY) or code != 0:
        return None
    return sequence, bytes(data[_ECHO.size :])


def ping_allowed(range_text: str, groups: Iterable[int]) -> bool:
    """Whether ping_group_range's "LOW HIGH" includes one of `groups` (the kernel's check)."""
    try:
        low, high = (int(part) for part in range_text.split())
    except ValueError:
        return False
    return any(low <= group <= high for group in groups)


def ping_allowed_here() -> bool:
    """Whether this process may open ICMP sockets in its network namespace."""
    try:
        with open(PING_GROUP_RANGE) as file:
            text = file.read()
    except OSError:
        return False
    return ping_allowed(text, {os.getegid(), *os.getgroups()})


class PingRelay:
    """The ping flows' host sockets, watched with the driver's selector (callbacks take the
    event mask, as every key the driver registers does). What the stack answers goes to
    `apply`."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        stack: Stack,
        apply: Callable[[list[StackAction]], None],
        clock: Callable[[], float],
    ) -> None:
        self._selector = selector
        self._stack = stack
        self._apply = apply
        self._clock = clock
        self._sockets: dict[int, socket.socket] = {}

    def send(self, flow_id: int, dst: str, sequence: int, payload: bytes) -> None:
        ipv6 = is_ipv6(dst)
        sock = self._sockets.get(flow_id)
        if sock is None:
            family = socket.AF_INET6 if ipv6 else socket.AF_INET
            protocol = socket.IPPROTO_ICMPV6 if ipv6 else socket.IPPROTO_ICMP
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM, protocol)
            except OSError:
                return  # EACCES: ping_group_range leaves us out; no reply, as under slirp4netns
            sock.setblocking(False)
            self._sockets[flow_id] = sock
            watched = sock
            self._selector.register(
                sock, selectors.EVENT_READ, lambda mask: self._on_reply(flow_id, watched)
            )
        try:
            sock.sendto(echo_request(ipv6, sequence, payload), (dst, 0))
        except OSError as exc:
            if exc.errno in UNREACHABLE_ERRORS:
                self._apply(self._stack.ping_unreachable(flow_id, self._clock()))
            # Otherwise (a full buffer, EMSGSIZE, EPERM from a firewall): the request is lost.

    def _on_reply(self, flow_id: int, sock: socket.socket) -> None:
        for _ in range(REPLIES_PER_EVENT):
            if self._sockets.get(flow_id) is not sock:
                return
            try:
                data = sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                continue  # an ICMP error about an earlier request
            reply = parse_echo_reply(sock.family == socket.AF_INET6, data)
            if reply is not None:
                self._apply(self._stack.ping_reply(flow_id, *reply, self._clock()))

    def close_flow(self, flow_id: int) -> None:
        sock = self._sockets.pop(flow_id, None)
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        for flow_id in list(self._sockets):
            self.close_flow(flow_id)
