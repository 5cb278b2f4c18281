"""User-mode networking under load through `rl run`, as the unprivileged user (issue 7's "Show").

What tests/e2e/test_network.py checks once, here with volume and concurrency: 1 GiB each way with
matching SHA-256 (container -> host through rl's stack, host -> container through a published
port), 200 concurrent connections each way, two published containers loaded at once (one stopped
while the other's connection carries on), and UDP echo both ways, 200 peers at once included.
The same paths are covered without rl at the library level by tests/netns (test_tap_driver.py:
64 MiB and 100 connections through `NetDriver`; test_ports_publish.py: 200 connections and UDP
through `PortPublisher`).

The host side is real sockets in this test process. Bulk data is deterministic pseudo-random
(block i is its index in hex followed by one fixed random block), so a lost, duplicated,
reordered or corrupted block changes the digest, and the host knows the digest without
receiving anything.

The busybox image has neither a UDP server nor a UDP-capable nc, and its `nc -ll` listens with a
backlog of 2 (200 connections at once would queue behind SYN retransmissions), so the UDP tests
and the 200-connection server run the host's own Python inside the container, from read-only bind
mounts of /usr (and /lib, /lib64).
"""

from __future__ import annotations

import functools
import hashlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Rl, _remove, loaded_store
from tests.harness import User

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"
LOOPBACK = "slirp4netns:allow_host_loopback=true"
BLOCK = 1 << 20
GIB_BLOCKS = 1024
CONNECTIONS = 200
TIMEOUT = 60.0

# The container's side of `_blocks(count)`, in busybox sh: the seed block comes from /in/seed.
SEND_BLOCKS = "i=0; while [ $i -lt {count} ]; do printf '%08x' $i; cat /in/seed; i=$((i+1)); done"
# An echo server for a few connections at once: nc forks `cat` for each. (Its listen backlog
# is 2, so 200 connections at once would wait for SYN retransmissions: see TCP_ECHO_SERVER.)
ECHO_SERVER = ["nc", "-ll", "-p", "8080", "-e", "cat"]


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-netload-") as rl:
        yield rl


@pytest.fixture(scope="module")
def seed_dir(user: User) -> Iterator[Path]:
    """A directory (mounted as /in) holding the seed block of `_blocks`."""
    path = user.make_dir("rl-netload-seed-")
    (path / "seed").write_bytes(_seed())
    (path / "seed").chmod(0o644)
    yield path
    _remove(path)


@functools.cache
def _seed() -> bytes:
    return random.Random(7).randbytes(BLOCK - 8)


def _blocks(count: int, tag: bytes = b"") -> Iterator[bytes]:
    """`count` distinct 1 MiB blocks: the index in hex (tag in front when given), then the seed."""
    seed = _seed()
    for index in range(count):
        head = tag + b"%08x" % index
        yield head + seed[len(head) - 8 :]


@functools.cache  # the 1 GiB digest serves both directions
def _digest(count: int, tag: bytes = b"") -> str:
    hasher = hashlib.sha256()
    for block in _blocks(count, tag):
        hasher.update(block)
    return hasher.hexdigest()


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 running `handle` for each connection in a thread; its port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=CONNECTIONS * 2)
    threads: list[threading.Thread] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            thread = threading.Thread(target=_closing(handle, conn), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(timeout=5)
        for thread in threads:
            thread.join(timeout=TIMEOUT)


def _closing(handle: Callable[[socket.socket], None], conn: socket.socket) -> Callable[[], None]:
    def run() -> None:
        with conn:
            handle(conn)

    return run


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_for_listener(rl: Rl, name: str, port: int, proto: str = "t") -> None:
    """Until the container listens on `port` (asked inside, so no probe connection is used up)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        out = rl("exec", name, "netstat", f"-ln{proto}").stdout
        if any(line.split()[3].endswith(f":{port}") for line in out.splitlines()[2:]):
            return
        time.sleep(0.1)
    raise AssertionError(f"container {name} does not listen on {port}")


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def _echo_through(
    port: int, blocks: Iterator[bytes], together: threading.Barrier | None = None
) -> tuple[str, str, int]:
    """Sends `blocks` to an echo server while reading the echo; (sent digest, echoed digest,
    echoed bytes). Sending runs in a thread of its own so neither side waits for the other.
    With `together`, starts sending only once the other parties are connected too."""
    sent, echoed = hashlib.sha256(), hashlib.sha256()
    total = 0
    with _connect(port) as conn:
        if together is not None:
            together.wait(timeout=TIMEOUT)

        def send() -> None:
            for block in blocks:
                sent.update(block)
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        while chunk := conn.recv(1 << 20):
            echoed.update(chunk)
            total += len(chunk)
        sender.join(timeout=TIMEOUT)
    return sent.hexdigest(), echoed.hexdigest(), total


# --- 1 GiB each way ------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_gib_from_the_container_to_the_host(rlm: Rl, seed_dir: Path) -> None:
    arrived: dict[str, object] = {}

    def sink(conn: socket.socket) -> None:
        hasher, size = hashlib.sha256(), 0
        while chunk := conn.recv(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
        arrived.update(digest=hasher.hexdigest(), size=size)

    with _tcp_server(sink) as port:
        script = f"{SEND_BLOCKS.format(count=GIB_BLOCKS)} | nc 10.0.2.2 {port}"
        rlm.ok("run", "--rm", "--network", LOOPBACK, "-v", f"{seed_dir}:/in:ro", IMAGE,
               "sh", "-c", script, timeout=300)  # fmt: skip
    assert arrived.get("size") == GIB_BLOCKS * BLOCK
    assert arrived.get("digest") == _digest(GIB_BLOCKS)


@pytest.mark.slow
def test_one_gib_from_the_host_into_a_published_port(rlm: Rl) -> None:
    port = _free_port()
    rlm.ok("run", "-d", "--name", "gib-in", "-p", f"127.0.0.1:{port}:8080", IMAGE,
           "sh", "-c", "nc -l -p 8080 | sha256sum")  # fmt: skip
    try:
        _wait_for_listener(rlm, "gib-in", 8080)
        # nc's stdin is /dev/null, so it half-closes at once: the publisher must go on carrying
        # the other direction.
        with _connect(port) as conn:
            for block in _blocks(GIB_BLOCKS):
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)
            assert _read_all(conn) == b""
        assert rlm.ok("wait", "gib-in", timeout=TIMEOUT).stdout.strip() == "0"
        assert rlm.ok("logs", "gib-in").stdout.split()[0] == _digest(GIB_BLOCKS)
    finally:
        rlm("rm", "-f", "-t", "0", "gib-in")


# --- 200 concurrent connections ------------------------------------------------------------------


PAYLOAD_SIZE = 64 << 10  # 200 of them: 12.5 MiB in flight each way at once


def _payload(index: int) -> bytes:
    """What connection `index` sends: its number, then the start of the seed block."""
    return b"conn-%03d:" % index + _seed()[:PAYLOAD_SIZE]


def test_200_concurrent_connections_from_a_container(rlm: Rl, seed_dir: Path) -> None:
    # The server answers no connection before all 200 are open at once: a stack that cannot
    # hold them together leaves the barrier broken and every connection without its echo.
    barrier = threading.Barrier(CONNECTIONS, timeout=TIMEOUT)
    received: list[bytes] = []

    def echo_when_all_are_open(conn: socket.socket) -> None:
        data = _read_all(conn)
        received.append(data)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        conn.sendall(b"echo " + data)

    with _tcp_server(echo_when_all_are_open) as port:
        script = (
            f"head -c {PAYLOAD_SIZE} /in/seed > /tmp/seed; i=0; while [ $i -lt {CONNECTIONS} ]; "
            f"do (printf 'conn-%03d:' $i; cat /tmp/seed) | nc 10.0.2.2 {port} > /tmp/r.$i & "
            f"i=$((i+1)); done; wait; "
            f"i=0; while [ $i -lt {CONNECTIONS} ]; do sha256sum /tmp/r.$i; i=$((i+1)); done"
        )
        result = rlm.ok("run", "--rm", "--network", LOOPBACK, "-v", f"{seed_dir}:/in:ro",
                        IMAGE, "sh", "-c", script)  # fmt: skip
    assert not barrier.broken, f"only {len(received)} of {CONNECTIONS} connections at once"
    assert sorted(received) == [_payload(index) for index in range(CONNECTIONS)]
    replies = [line.split()[0] for line in result.stdout.splitlines()]
    echoes = [b"echo " + _payload(index) for index in range(CONNECTIONS)]
    assert replies == [hashlib.sha256(echo).hexdigest() for echo in echoes]


TCP_ECHO_SERVER = """
import socket, threading
server = socket.create_server(("0.0.0.0", 8080), backlog=1024)
def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""


def test_200_concurrent_connections_into_a_published_port(rlm: Rl) -> None:
    port = _free_port()
    rlm.ok("run", "-d", "--name", "many-in", "-p", f"127.0.0.1:{port}:8080",
           *_host_python_mounts(), IMAGE, "python3", "-c", TCP_ECHO_SERVER)  # fmt: skip
    conns: list[socket.socket] = []
    try:
        _wait_for_listener(rlm, "many-in", 8080)
        conns = [_connect(port) for _ in range(CONNECTIONS)]
        # All 200 reach the container's server together: count them from inside.
        deadline, inside = time.monotonic() + TIMEOUT, 0
        while time.monotonic() < deadline:
            out = rlm.ok("exec", "many-in", "netstat", "-tn").stdout
            inside = sum(
                1
                for line in out.splitlines()[2:]
                if line.split()[3].endswith(":8080") and line.split()[5] == "ESTABLISHED"
            )
            if inside == CONNECTIONS:
                break
            time.sleep(0.2)
        assert inside == CONNECTIONS
        for index, conn in enumerate(conns):
            conn.sendall(_payload(index))
            conn.shutdown(socket.SHUT_WR)
        for index, conn in enumerate(conns):
            assert _read_all(conn) == _payload(index), index
    finally:
        for conn in conns:
            conn.close()
        rlm("rm", "-f", "-t", "0", "many-in")


# --- two published containers at once ------------------------------------------------------------


def test_published_ports_of_two_containers_under_load(rlm: Rl) -> None:
    ports = {"load-a": _free_port(), "load-b": _free_port()}
    for name, port in ports.items():
        rlm.ok("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", IMAGE, *ECHO_SERVER)
    try:
        for name in ports:
            _wait_for_listener(rlm, name, 8080)
        # Both at once (both connected before either sends), each stream told apart by its tag.
        together = threading.Barrier(len(ports))
        with ThreadPoolExecutor(len(ports)) as pool:
            futures = {
                name: pool.submit(_echo_through, port, _blocks(64, name.encode()), together)
                for name, port in ports.items()
            }
            for name, future in futures.items():
                sent, echoed, size = future.result(timeout=TIMEOUT * 3)
                assert (echoed, size) == (sent, 64 * BLOCK), name

        # A connection to A that spans B's stop: half the data before, half after.
        with _connect(ports["load-a"]) as conn:
            first = b"".join(_blocks(2, b"a-before"))
            conn.sendall(first)
            assert _recv_exactly(conn, len(first)) == first
            rlm.ok("stop", "-t", "0", "load-b")
            second = b"".join(_blocks(2, b"a-after"))
            conn.sendall(second)
            conn.shutdown(socket.SHUT_WR)
            assert _read_all(conn) == second
        assert _refused(ports["load-b"]), "a stopped container's port still accepts"
        sent, echoed, size = _echo_through(ports["load-a"], _blocks(16, b"a-alone"))
        assert (echoed, size) == (sent, 16 * BLOCK)
        assert rlm.ok("ps", "--format", "{{.Names}}").stdout.split() == ["load-a"]
    finally:
        rlm("rm", "-f", "-t", "0", *ports)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = conn.recv(min(1 << 20, size - got))
        assert chunk, f"EOF after {got} of {size} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _refused(port: int) -> bool:
    """Whether connecting to `port` is refused (the listener goes with the container's monitor,
    which may take a moment after `rl stop` returns)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            with _connect(port):
                pass
        except ConnectionRefusedError:
            return True
        time.sleep(0.1)
    return False


def test_a_flooding_container_keeps_its_published_port_and_other_flows(
    rlm: Rl, seed_dir: Path
) -> None:
    """The container sends to the host without end through rl's stack; meanwhile its published
    port carries 64 MiB both ways and a second connection through the stack gets its echo."""
    flooded = [0]

    def sink(conn: socket.socket) -> None:
        try:
            while chunk := conn.recv(1 << 20):
                flooded[0] += len(chunk)
        except OSError:
            pass  # reset when the container goes

    def echo(conn: socket.socket) -> None:
        conn.sendall(b"echo " + _read_all(conn))

    port = _free_port()
    with _tcp_server(sink) as sink_port, _tcp_server(echo) as echo_port:
        script = f"nc -ll -p 8080 -e cat & while :; do cat /in/seed; done | nc 10.0.2.2 {sink_port}"
        rlm.ok("run", "-d", "--name", "flood", "--network", LOOPBACK, "-v", f"{seed_dir}:/in:ro",
               "-p", f"127.0.0.1:{port}:8080", IMAGE, "sh", "-c", script)  # fmt: skip
        try:
            _wait_for_listener(rlm, "flood", 8080)
            deadline = time.monotonic() + TIMEOUT
            while flooded[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            before = flooded[0]
            assert before > 0, "the flood never started"
            sent, echoed, size = _echo_through(port, _blocks(64, b"during-flood"))
            assert (echoed, size) == (sent, 64 * BLOCK)
            probe = f"printf during-flood | nc 10.0.2.2 {echo_port}"
            assert rlm.ok("exec", "flood", "sh", "-c", probe).stdout == "echo during-flood"
            assert flooded[0] > before, "the flood stopped"
        finally:
            rlm("rm", "-f", "-t", "0", "flood")


# --- UDP ----------------------------------------------------------------------------------------


def _host_python_mounts() -> list[str]:
    """Bind mounts that let the container run the host's /usr/bin/python3 (read-only)."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3 on the host")
    mounts = ["-v", "/usr:/usr:ro"]
    for name in ("lib", "lib32", "lib64"):
        path = Path("/") / name
        if path.exists():
            mounts += ["-v", f"{path.resolve()}:/{name}:ro"]
    return mounts


UDP_SIZES = [1, 100, 1472, 1473, 9000, 32768, 65000]
UDP_PEERS = 200  # sockets with a datagram in flight at once (the relay keeps up to 256 peers)
UDP_SERVER = """
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 5353))
while True:
    data, peer = sock.recvfrom(65535)
    sock.sendto(b"echo " + data, peer)
"""
# The container's side of test_outbound_udp_echo: _udp_message and _udp_echo again, in the
# container, then UDP_PEERS sockets (NAT flows) that all send before any reads its reply.
UDP_CLIENT = """
import socket, sys
host, sizes, peers = ("10.0.2.2", int(sys.argv[1])), sys.argv[2].split(","), int(sys.argv[3])

def echo(sock, data):
    for attempt in range(30):  # UDP may drop; a lost datagram is sent again
        sock.sendto(data, host)
        try:
            reply = sock.recv(65535)
        except TimeoutError:
            continue
        assert reply == b"host " + data, (data[:4], len(data), len(reply))
        return
    sys.exit(f"no echo for {data[:4]!r} ({len(data)} bytes)")

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1)
for index, size in enumerate(sizes):
    echo(sock, (b"%03d:" % index + bytes(range(256)) * 256)[:int(size)])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(peers)]
for index, peer in enumerate(socks):
    peer.settimeout(1)
    peer.sendto(b"peer %03d" % index, host)
for index, peer in enumerate(socks):
    try:
        assert peer.recv(65535) == b"host peer %03d" % index, index
    except TimeoutError:
        echo(peer, b"peer %03d" % index)
print("echoed", len(sizes), peers)
"""


def _udp_echo(sock: socket.socket, address: tuple[str, int], message: bytes) -> bytes:
    for _ in range(int(TIMEOUT)):  # UDP may drop; a lost datagram is sent again
        sock.sendto(message, address)
        try:
            return sock.recv(65535)
        except TimeoutError:
            continue
    raise AssertionError(f"no UDP reply from {address} to a {len(message)}-byte datagram")


def _udp_message(index: int, size: int) -> bytes:
    return (b"%03d:" % index + bytes(range(256)) * 256)[:size]


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1)
    return sock


def test_udp_echo_through_a_published_port(rlm: Rl) -> None:
    port = _free_port(socket.SOCK_DGRAM)
    address = ("127.0.0.1", port)
    rlm.ok("run", "-d", "--name", "udp-in", "-p", f"127.0.0.1:{port}:5353/udp",
           *_host_python_mounts(), IMAGE, "python3", "-c", UDP_SERVER)  # fmt: skip
    clients: list[socket.socket] = []
    try:
        _wait_for_listener(rlm, "udp-in", 5353, "u")
        # Two host sockets, interleaved: each reply goes back to the socket that asked.
        clients = [_udp_socket() for _ in range(2)]
        for index, size in enumerate(UDP_SIZES * 2):
            message = _udp_message(index, size)
            assert _udp_echo(clients[index % 2], address, message) == b"echo " + message
        # Many peers at once: all send before any reads its reply.
        clients += [_udp_socket() for _ in range(UDP_PEERS)]
        for index, client in enumerate(clients[2:]):
            client.sendto(b"peer %03d" % index, address)
        for index, client in enumerate(clients[2:]):
            try:
                reply = client.recv(65535)
            except TimeoutError:
                reply = _udp_echo(client, address, b"peer %03d" % index)
            assert reply == b"echo peer %03d" % index
    finally:
        for client in clients:
            client.close()
        rlm("rm", "-f", "-t", "0", "udp-in")


def test_outbound_udp_echo(rlm: Rl) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    seen: set[bytes] = set()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(65535)
            except TimeoutError:
                continue
            seen.add(data)
            server.sendto(b"host " + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        sizes = ",".join(str(size) for size in UDP_SIZES)
        client = ["python3", "-c", UDP_CLIENT, str(port), sizes, str(UDP_PEERS)]
        mounts = _host_python_mounts()
        out = rlm.ok("run", "--rm", "--network", LOOPBACK, *mounts, IMAGE, *client).stdout
    finally:
        stop.set()
        thread.join()
        server.close()
    assert out.strip() == f"echoed {len(UDP_SIZES)} {UDP_PEERS}"
    sent = {_udp_message(index, size) for index, size in enumerate(UDP_SIZES)}
    assert seen == sent | {b"peer %03d" % index for index in range(UDP_PEERS)}
