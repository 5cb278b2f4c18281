"""Cross-check the sans-IO stack against the real Linux kernel.

A TAP device inside a fresh network namespace is wired to `Stack` through a minimal select()
loop (a stand-in for the real driver), and the kernel's own TCP/UDP/ICMP talk to services on the
host's loopback through it (`allow_host_loopback`). Optional frame loss exercises
retransmission against Linux's TCP. Needs root, /dev/net/tun and unshare(1).
"""

from __future__ import annotations

import array
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import stack as netstack
from netns.config import NetConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("unshare"),
        reason="needs root, /dev/net/tun and unshare",
    ),
]


def serve_tcp(handler: Callable[[socket.socket], None]) -> int:
    server = socket.create_server(("127.0.0.1", 0))

    def accept_loop() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    port: int = server.getsockname()[1]
    return port


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 20):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    conn.close()


def say_bye(conn: socket.socket) -> None:
    conn.sendall(b"bye")
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(100):
        pass
    conn.close()


def blast(conn: socket.socket) -> None:
    conn.sendall(bytes(range(256)) * 8192)
    conn.close()


def serve_udp_upper() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(70000)
            sock.sendto(data.upper(), peer)

    threading.Thread(target=loop, daemon=True).start()
    port: int = sock.getsockname()[1]
    return port


class SelectDriver:
    """Carries out the stack's actions with plain non-blocking sockets."""

    def __init__(self, stack: netstack.Stack, tap: int, loss: float, seed: int) -> None:
        self.stack = stack
        self.tap = tap
        self.loss = loss
        self.rng = random.Random(seed)
        self.tcp: dict[int, socket.socket] = {}
        self.connecting: set[int] = set()
        self.to_host: dict[int, bytearray] = {}
        self.eof_pending: set[int] = set()
        self.udp: dict[int, socket.socket] = {}
        self.frames: list[bytes] = []

    def handle(self, actions: list[netstack.StackAction]) -> None:
        for action in actions:
            if isinstance(action, netstack.SendFrame):
                self.frames.append(action.frame)
            elif isinstance(action, netstack.OpenTcp):
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    sock.connect(action.dst)
                except BlockingIOError:
                    pass
                self.tcp[action.flow_id] = sock
                self.connecting.add(action.flow_id)
                self.to_host[action.flow_id] = bytearray()
            elif isinstance(action, netstack.TcpDeliver):
                self.to_host[action.flow_id] += action.data
            elif isinstance(action, netstack.TcpHostEOF):
                self.eof_pending.add(action.flow_id)
            elif isinstance(action, netstack.TcpClose):
                closing = self.tcp.pop(action.flow_id, None)
                if closing is not None:
                    closing.close()
                self.connecting.discard(action.flow_id)
                self.eof_pending.discard(action.flow_id)
                self.to_host.pop(action.flow_id, None)
            elif isinstance(action, netstack.UdpSend):
                udp = self.udp.get(action.flow_id)
                if udp is None:
                    udp = self.udp[action.flow_id] = socket.socket(
                        socket.AF_INET, socket.SOCK_DGRAM
                    )
                    udp.setblocking(False)
                    udp.connect(action.dst)
                udp.send(action.payload)
            elif isinstance(action, netstack.UdpClose):
                self.udp.pop(action.flow_id).close()

    def step(self) -> None:
        stack = self.stack
        readable: list[int | socket.socket] = [self.tap, *self.udp.values()]
        writable: list[int | socket.socket] = [self.tap] if self.frames else []
        for flow_id, sock in self.tcp.items():
            if flow_id in self.connecting or self.to_host.get(flow_id):
                writable.append(sock)
            if flow_id not in self.connecting and stack.host_send_space(flow_id) > 0:
                readable.append(sock)
        now = time.monotonic()
        deadline = stack.next_timeout()
        wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - now))
        ready_r, ready_w, _ = select.select(readable, writable, [], wait)
        now = time.monotonic()
        if self.tap in ready_r:
            for _ in range(64):
                try:
                    frame = os.read(self.tap, 70000)
                except BlockingIOError:
                    break
                if self.rng.random() >= self.loss:
                    self.handle(stack.receive_frame(frame, now))
        for flow_id, sock in list(self.tcp.items()):
            self.service_tcp(flow_id, sock, sock in ready_r, sock in ready_w, now)
        for flow_id, udp in list(self.udp.items()):
            if udp in ready_r:
                try:
                    self.handle(stack.udp_from_host(flow_id, udp.recv(70000), now))
                except OSError:
                    pass
        deadline = stack.next_timeout()
        if deadline is not None and deadline <= now:
            self.handle(stack.timeout(now))
        while self.frames:
            if self.rng.random() < self.loss:
                self.frames.pop(0)
                continue
            try:
                os.write(self.tap, self.frames[0])
            except BlockingIOError:
                break
            self.frames.pop(0)

    def service_tcp(
        self, flow_id: int, sock: socket.socket, readable: bool, writable: bool, now: float
    ) -> None:
        stack = self.stack
        if flow_id in self.connecting:
            if writable:
                self.connecting.discard(flow_id)
                failed = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                self.handle(
                    stack.tcp_connect_failed(flow_id, now)
                    if failed
                    else stack.tcp_connected(flow_id, now)
                )
            return
        pending = self.to_host.get(flow_id)
        if writable and pending:
            try:
                sent = sock.send(pending)
            except OSError:
                self.handle(stack.host_reset(flow_id, now))
                return
            del pending[:sent]
            self.handle(stack.host_consumed(flow_id, sent, now))
        if flow_id in self.eof_pending and flow_id in self.tcp and not self.to_host.get(flow_id):
            self.eof_pending.discard(flow_id)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if readable and flow_id in self.tcp:
            try:
                data = sock.recv(stack.host_send_space(flow_id))
            except BlockingIOError:
                return
            except OSError:
                self.handle(stack.host_reset(flow_id, now))
                return
            self.handle(
                stack.host_data(flow_id, data, now) if data else stack.host_closed(flow_id, now)
            )


def run_interop(checks: dict[str, int], *, loss: float = 0.0) -> str:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    peer = Path(__file__).with_name("linux_peer.py")
    argv = ["unshare", "-n", sys.executable, str(peer), str(theirs.fileno())]
    argv += [f"{name}={port}" for name, port in checks.items()]
    child = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdout=subprocess.PIPE, text=True)
    theirs.close()
    try:
        _, ancillary, _, _ = ours.recvmsg(1, socket.CMSG_LEN(4))
        fds = array.array("i")
        fds.frombytes(ancillary[0][2][: fds.itemsize])
        tap = fds[0]
        os.set_blocking(tap, False)
        driver = SelectDriver(
            netstack.Stack(NetConfig(allow_host_loopback=True)), tap, loss, seed=7
        )
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline:
            driver.step()
        os.close(tap)
    finally:
        if child.poll() is None:
            child.kill()
        output, _ = child.communicate()
    assert child.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    echo_port = serve_tcp(echo)
    return {
        "ping": 0,
        "refused": 0,
        "echo_bulk": echo_port,
        "host_closes_first": serve_tcp(say_bye),
        "udp_echo": serve_udp_upper(),
        "many_connections": echo_port,
        "slow_reader": serve_tcp(blast),
    }


def test_linux_talks_through_the_stack(ports: dict[str, int]) -> None:
    output = run_interop(ports)
    assert output.count(": ok") == len(ports), output


def test_linux_through_a_lossy_link(ports: dict[str, int]) -> None:
    # UDP is left out: a lost datagram is a correct outcome there.
    names = ("echo_bulk", "host_closes_first", "many_connections")
    checks = {name: ports[name] for name in names}
    output = run_interop(checks, loss=0.03)
    assert output.count(": ok") == len(checks), output
