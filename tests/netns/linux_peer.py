"""The container side of the Linux interop test; runs inside `unshare -n` as root.

Creates tap0 with slirp's addresses, passes its fd back over the Unix socket given as argv[1],
then uses the real kernel TCP/UDP/ICMP against the stack and prints one line per check.
Exit status 0 when every check passed.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
GATEWAY = "10.0.2.2"


def make_tap() -> int:
    tap = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH", b"tap0", IFF_TAP | IFF_NO_PI))
    for command in (
        "ip link set lo up",
        "ip link set tap0 mtu 65520 address 02:42:ac:11:00:02 up",
        "ip addr add 10.0.2.100/24 dev tap0",
        "ip route add default via 10.0.2.2",
    ):
        subprocess.run(command.split(), check=True)
    return tap


def echo_bulk(port: int) -> str:
    data = os.urandom(16 << 20)
    conn = socket.create_connection((GATEWAY, port), timeout=20)

    def writer() -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=writer)
    thread.start()
    received = bytearray()
    while chunk := conn.recv(1 << 20):
        received += chunk
    thread.join()
    conn.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest(), len(received)
    return f"{len(data) >> 20} MiB echoed"


def refused(_port: int) -> str:
    try:
        socket.create_connection((GATEWAY, 1), timeout=5)
    except ConnectionRefusedError:
        return "refused"
    raise AssertionError("connected to a closed port")


def host_closes_first(port: int) -> str:
    conn = socket.create_connection((GATEWAY, port), timeout=10)
    received = b""
    while chunk := conn.recv(100):
        received += chunk
    conn.sendall(b"after-eof")  # half-closed: this direction still works
    conn.close()
    assert received == b"bye", received
    return "EOF seen"


def udp_echo(port: int) -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    for payload in (b"ping-udp", os.urandom(30000)):
        sock.sendto(payload, (GATEWAY, port))
        data, peer = sock.recvfrom(70000)
        assert data == payload.upper() and peer == (GATEWAY, port), peer
    return "2 round trips"


def ping(_port: int) -> str:
    result = subprocess.run(
        ["busybox", "ping", "-c", "2", "-W", "2", GATEWAY], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def many_connections(port: int) -> str:
    conns = [socket.create_connection((GATEWAY, port), timeout=10) for _ in range(30)]
    for index, conn in enumerate(conns):
        conn.sendall(b"%d" % index)
        conn.shutdown(socket.SHUT_WR)
    for index, conn in enumerate(conns):
        received = b""
        while chunk := conn.recv(100):
            received += chunk
        assert received == b"%d" % index
        conn.close()
    return f"{len(conns)} connections"


def slow_reader(port: int) -> str:
    """A tiny receive buffer read late: the stack must probe the zero window."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.settimeout(30)
    conn.connect((GATEWAY, port))
    time.sleep(1.0)
    received = bytearray()
    while chunk := conn.recv(65536):
        received += chunk
    assert received == bytes(range(256)) * 8192, len(received)
    return f"{len(received)} bytes"


CHECKS: dict[str, Callable[[int], str]] = {
    "ping": ping,
    "refused": refused,
    "echo_bulk": echo_bulk,
    "host_closes_first": host_closes_first,
    "udp_echo": udp_echo,
    "many_connections": many_connections,
    "slow_reader": slow_reader,
}


def main() -> int:
    channel = socket.socket(fileno=int(sys.argv[1]))
    tap = make_tap()
    fds = array.array("i", [tap])
    channel.sendmsg([b"t"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    os.close(tap)
    failures = 0
    for spec in sys.argv[2:]:
        name, port = spec.split("=")
        started = time.monotonic()
        try:
            outcome = "ok " + CHECKS[name](int(port))
        except Exception as error:
            outcome = f"FAIL {type(error).__name__}: {error}"
            failures += 1
        print(f"{name}: {outcome} ({time.monotonic() - started:.2f}s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
