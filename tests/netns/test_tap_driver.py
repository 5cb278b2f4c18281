"""The TAP device and the selectors driver, for real, as the unprivileged test user.

tap_driver_script.py runs as that user: it makes a user+net namespace with `unshare -Urn`, gets
the TAP fd out of it (through `open_tap_in(pid)`, or from `create_tap()` run inside and sent over
SCM_RIGHTS), and runs `NetDriver` on it outside; inside, the kernel's own TCP/UDP/ICMP and a
hand-made DNS client talk to services this test runs on the host's loopback.

The script runs from a private copy together with a copy of this tree's `netns` package, so it
tests this source whether or not the installed rl is up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.harness import Result, User, installed_tool
from tests.netns.private_copy import readable_netns_copy

SCRIPT = Path(__file__).with_name("tap_driver_script.py")

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/net/tun") or not shutil.which("unshare"),
    reason="needs /dev/net/tun and unshare(1)",
)


def serve_tcp(
    handler: Callable[[socket.socket], None], port: int = 0, receive_buffer: int = 0
) -> int:
    server = socket.socket()
    if receive_buffer:  # before listen(), so that accepted sockets inherit it
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    server.bind(("127.0.0.1", port))
    server.listen()

    def accept_loop() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    bound: int = server.getsockname()[1]
    return bound


def echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1 << 20):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def serve_udp(handler: Callable[[bytes], bytes | None], sock: socket.socket | None = None) -> int:
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(70000)
            reply = handler(data)
            if reply is not None:
                sock.sendto(reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    port: int = sock.getsockname()[1]
    return port


def dns_answer(query: bytes) -> bytes | None:
    """The test resolver: rl-test.example is 192.0.2.7, every other name does not exist."""
    if len(query) < 17 or query[2] & 0x80:
        return None
    offset, labels = 12, []
    while query[offset]:
        labels.append(query[offset + 1 : offset + 1 + query[offset]].decode())
        offset += 1 + query[offset]
    question = query[12 : offset + 5]
    if ".".join(labels) == "rl-test.example" and question[-4:] == b"\0\x01\0\x01":
        header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
        record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.7")
        return header + question + record
    return query[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question


def dns_over_tcp(conn: socket.socket) -> None:
    with conn:
        data = b""
        while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        reply = dns_answer(data[2:]) or b""
        conn.sendall(len(reply).to_bytes(2, "big") + reply)


def serve_dns() -> int:
    """UDP and TCP on one port, as a resolver listens."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
        try:
            serve_tcp(dns_over_tcp, port)
        except OSError:
            udp.close()
            continue
        return serve_udp(dns_answer, udp)
    raise RuntimeError("no free port for the test resolver")


late_reads: list[str] = []


def late_reader(conn: socket.socket) -> None:
    """Closes its sending side at once, reads only a second later, records what it got."""
    with conn:
        conn.shutdown(socket.SHUT_WR)
        time.sleep(1)
        digest, size = hashlib.sha256(), 0
        while data := conn.recv(1 << 20):
            digest.update(data)
            size += len(data)
        late_reads.append(f"{size} {digest.hexdigest()}")


@pytest.fixture(scope="module")
def services() -> dict[str, int]:
    return {
        "late_reader": serve_tcp(late_reader, receive_buffer=128 << 10),
        "echo": serve_tcp(echo),
        "udp": serve_udp(lambda data: data.upper()),
        "dns": serve_dns(),
    }


@pytest.fixture(scope="module")
def script_dir(user: User) -> Iterator[Path]:
    path = readable_netns_copy("rl-netns-", [SCRIPT])
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_checks(
    user: User, script_dir: Path, mode: str, params: Mapping[str, object], checks: list[str]
) -> Result:
    full = {**params, "checks": checks}
    argv = [installed_tool("python"), str(script_dir / SCRIPT.name), "host", mode]
    result = user.run([*argv, json.dumps(full)], timeout=300)
    for name in checks:
        assert f"{name}: ok" in result.stdout, result
    assert result.returncode == 0, result
    return result


def test_everything_through_the_stack(
    user: User, script_dir: Path, services: dict[str, int]
) -> None:
    checks = ["config", "ping", "tcp", "udp", "dns", "dns_tcp", "many", "late_reader"]
    # A receive window large enough for late_reader's 8 MiB and FIN to reach the stack while
    # the host is not reading yet: the driver must still deliver the tail after the flow closed.
    params = {**services, "allow_host_loopback": True, "tcp_receive_buffer": 16 << 20}
    late_reads.clear()
    result = run_checks(user, script_dir, "pid", params, checks)
    data = bytes(range(256)) * (1 << 15)
    for _ in range(100):  # the reader records once it has seen EOF
        if late_reads:
            break
        time.sleep(0.1)
    expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    assert late_reads == [expected]
    stats = json.loads(result.stdout.split("driver stats: ", 1)[1].splitlines()[0])
    assert stats["orphaned"] >= 1, stats
    assert stats["dns_queries"] == 2, stats


def test_host_loopback_is_refused_by_default(
    user: User, script_dir: Path, services: dict[str, int]
) -> None:
    checks = ["tcp_refused", "udp_refused", "ping", "dns"]
    params = {**services, "allow_host_loopback": False}
    run_checks(user, script_dir, "pid", params, checks)


def test_tap_made_inside_and_passed_out(
    user: User, script_dir: Path, services: dict[str, int]
) -> None:
    params = {**services, "allow_host_loopback": True}
    run_checks(user, script_dir, "inside", params, ["config", "tcp"])


@pytest.mark.slow
def test_bulk_transfer_both_ways(user: User, script_dir: Path, services: dict[str, int]) -> None:
    params = {**services, "allow_host_loopback": True, "bulk_mib": 64}
    result = run_checks(user, script_dir, "pid", params, ["bulk"])
    print(result.stdout)


def test_open_tap_in_refuses_our_own_namespace(user: User, script_dir: Path) -> None:
    code = (
        "import os\n"
        "from netns.tap import open_tap_in\n"
        "try:\n"
        "    open_tap_in(os.getpid())\n"
        "except OSError as exc:\n"
        "    print(exc)\n"
    )
    result = user.run([installed_tool("python"), "-c", code], cwd=script_dir)
    assert result.returncode == 0, result
    assert "is in this process's network namespace" in result.stdout, result
