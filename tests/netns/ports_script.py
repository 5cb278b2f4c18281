"""Both ends of the port publishing test; runs as the unprivileged test user.

`host JSON`: starts `unshare -Urn` running this file's container side, publishes its ports with
`netns.ports.PortPublisher` (hosted on a selectors loop in a thread, as a monitor would), runs the
checks JSON names as clients on the host's loopback and prints one `name: ok ...` or
`name: FAIL ...` line each. Exit status 0 when all passed.

`container`: inside the new user+net namespace: brings loopback up, serves TCP echo on 8000
(half-close aware), a TCP source of SOURCE_MIB MiB on 8002 and UDP upper-casing echo on 8001, and
exits when stdin closes. Imports only the standard library and netns.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

ECHO, UDP_ECHO, SOURCE, NOTHING = 8000, 8001, 8002, 8003
SOURCE_MIB = 32
TIMEOUT = 60.0


def pattern(seed: bytes, size: int) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    blocks: list[bytes] = []
    counter = 0
    while len(blocks) * 64 < size:
        blocks.append(hashlib.sha512(seed + counter.to_bytes(8, "big")).digest())
        counter += 1
    return b"".join(blocks)[:size]


# --- container side -----------------------------------------------------------------------------


def echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1 << 20):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def source(conn: socket.socket) -> None:
    with conn:
        data = pattern(b"source", SOURCE_MIB << 20)
        conn.sendall(data)


def serve_tcp(port: int, handler: Callable[[socket.socket], None]) -> None:
    server = socket.create_server(("0.0.0.0", port), backlog=512)

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def serve_udp(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(data.upper(), peer)

    threading.Thread(target=loop, daemon=True).start()


def container_main() -> None:
    from netns.tap import _rtnetlink, link_up_message

    _rtnetlink([("set lo up", link_up_message(socket.if_nametoindex("lo"), 1))])
    serve_tcp(ECHO, echo)
    serve_tcp(SOURCE, source)
    serve_udp(UDP_ECHO)
    print("ready", flush=True)
    sys.stdin.read()


# --- host side ----------------------------------------------------------------------------------


def exchange(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """Send `data` to the echo service (then half-close) while reading back until EOF."""
    conn = socket.create_connection((host, port), timeout=TIMEOUT)
    received: list[bytes] = []

    def reader() -> None:
        while chunk := conn.recv(1 << 20):
            received.append(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    thread.join(TIMEOUT)
    conn.close()
    return b"".join(received)


def check_tcp(ports: dict[str, int], _publisher: Any) -> str:
    data = pattern(b"tcp", 64 << 20)
    start = time.monotonic()
    back = exchange(ports["echo"], data)
    seconds = time.monotonic() - start
    want, got = hashlib.sha256(data).hexdigest(), hashlib.sha256(back).hexdigest()
    assert len(back) == len(data) and got == want, (len(back), got, want)
    return f"64 MiB each way, sha256 {got[:16]}, {len(data) * 16 / seconds / 1e9:.2f} Gbit/s"


def check_source(ports: dict[str, int], _publisher: Any) -> str:
    conn = socket.create_connection(("127.0.0.1", ports["source"]), timeout=TIMEOUT)
    digest, size = hashlib.sha256(), 0
    with conn:
        while chunk := conn.recv(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    want = hashlib.sha256(pattern(b"source", SOURCE_MIB << 20)).hexdigest()
    assert size == SOURCE_MIB << 20 and digest.hexdigest() == want, (size, digest.hexdigest())
    return f"{SOURCE_MIB} MiB container -> host, sha256 {want[:16]}"


def check_many(ports: dict[str, int], publisher: Any) -> str:
    count = 200
    results: dict[int, bool] = {}
    barrier = threading.Barrier(count, timeout=TIMEOUT)
    conns = []
    for _ in range(count):  # all connected at once before any data moves
        conns.append(socket.create_connection(("127.0.0.1", ports["echo"]), timeout=TIMEOUT))

    def client(i: int) -> None:
        conn = conns[i]
        data = pattern(b"many%d" % i, 64 << 10)
        barrier.wait()
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        back = bytearray()
        while chunk := conn.recv(1 << 16):
            back += chunk
        conn.close()
        results[i] = hashlib.sha256(back).digest() == hashlib.sha256(data).digest()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    peak = 0
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, publisher.connections)
        time.sleep(0.01)
    good = sum(results.values())
    assert good == count, f"{good} of {count} matched"
    for _ in range(200):
        if publisher.connections == 0:
            break
        time.sleep(0.05)
    assert publisher.connections == 0, publisher.connections
    return f"{count} concurrent connections, all sha256 match, peak {peak} spliced at once"


def check_udp(ports: dict[str, int], _publisher: Any) -> str:
    replies = 0
    for client_no in range(3):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            for i in range(5):
                message = f"hello {client_no} {i} ".encode() * 50
                for _attempt in range(5):
                    sock.sendto(message, ("127.0.0.1", ports["udp"]))
                    try:
                        data, peer = sock.recvfrom(65535)
                    except TimeoutError:
                        continue
                    assert data == message.upper(), data[:40]
                    assert peer == ("127.0.0.1", ports["udp"]), peer
                    replies += 1
                    break
    assert replies == 15, replies
    return f"{replies} datagrams echoed for 3 host peers"


def check_refused(ports: dict[str, int], _publisher: Any) -> str:
    try:  # the reset may come before the client has seen its connection established
        conn = socket.create_connection(("127.0.0.1", ports["nothing"]), timeout=TIMEOUT)
        with conn:
            data = conn.recv(1)
    except ConnectionResetError:
        return "nothing listens in the container: the client got a reset"
    assert data == b"", data
    return "nothing listens in the container: the client got EOF"


def check_loopback_only(ports: dict[str, int], _publisher: Any) -> str:
    try:
        socket.create_connection(("127.0.0.2", ports["echo"]), timeout=5).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("127.0.0.2 reached a port published on 127.0.0.1 only")
    back = exchange(ports["echo"], b"still here")
    assert back == b"still here", back
    return "published on 127.0.0.1 only: 127.0.0.2 refused, 127.0.0.1 served"


def check_low_port(_ports: dict[str, int], _publisher: Any) -> str:
    from netns.ports import PortPublisher, PublishError, parse_publish

    try:
        PortPublisher([parse_publish("127.0.0.1:80:8000")], pid=os.getpid())
    except PublishError as exc:
        message = str(exc)
        assert "net.ipv4.ip_unprivileged_port_start" in message, message
        assert exc.errno == errno.EACCES, exc.errno
        return message
    raise AssertionError("port 80 was published")


def check_busy(_ports: dict[str, int], _publisher: Any) -> str:
    from netns.ports import PortPublisher, PublishError, parse_publish

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        try:
            PortPublisher([parse_publish(f"127.0.0.1:{port}:8000")], pid=os.getpid())
        except PublishError as exc:
            message = str(exc)
            assert "address already in use" in message and str(port) in message, message
            return message
    raise AssertionError("a busy port was published")


def check_bad_pid(_ports: dict[str, int], _publisher: Any) -> str:
    from netns.ports import NamespaceDialer

    try:
        NamespaceDialer(1)  # init's namespaces: not this user's to join
    except OSError as exc:
        assert "joining process 1's network namespace" in str(exc), exc
        return str(exc)
    raise AssertionError("joined init's namespaces")


def children() -> set[int]:
    """This process's children (socket makers must not be left behind), but the container."""
    mine = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as file:
                    stat = file.read()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == os.getpid():
                mine.add(int(name))
    return mine - set(CONTAINER)


def check_gone(_ports: dict[str, int], _publisher: Any) -> str:
    """A dialer whose container went away (its own `unshare -Urn` process, killed; the dialer
    holds the namespaces open): dials fail, with the pooled sockets and beyond, and no maker
    process is left."""
    from netns.ports import NamespaceDialer

    holder = subprocess.Popen(["unshare", "-Urn", "sleep", "1000"])
    CONTAINER.append(holder.pid)
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not start"
            time.sleep(0.01)
        dialer = NamespaceDialer(holder.pid, ["tcp"])
    finally:
        holder.kill()
        holder.wait()
    answers: list[int] = []
    count = 100  # beyond the first batch
    with selectors.DefaultSelector() as selector:
        dialer.register(selector)
        for _ in range(count):
            dialer.dial("tcp", ECHO, lambda sock, code: answers.append(-1 if sock else code))
        deadline = time.monotonic() + TIMEOUT
        while len(answers) < count or dialer.pid:
            assert time.monotonic() < deadline, f"{len(answers)} answers"
            for key, mask in selector.select(1.0):
                key.data(mask)
    dialer.close()
    assert -1 not in answers, "a dial into the gone namespace succeeded"
    assert set(answers) <= {errno.ENETUNREACH, errno.ECONNREFUSED}, set(answers)
    assert not children(), f"left behind: {children()}"
    return f"{count} dials failed ({sorted(set(answers))}), makers: {dialer.makers}, none left"


STOP = threading.Event()
LOOP: list[threading.Thread] = []
CONTAINER: list[int] = []


def check_close(ports: dict[str, int], publisher: Any) -> str:
    STOP.set()  # the loop thread owns the selector: stop it before closing
    LOOP[0].join(10)
    publisher.close()
    for port in (ports["echo"], ports["source"]):
        socket.create_server(("127.0.0.1", port)).close()  # free again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", ports["udp"]))
    assert not children(), f"socket makers left behind: {children()}"
    return f"ports released, no maker left ({publisher.dialer.makers} ran)"


CHECKS: dict[str, Callable[[dict[str, int], Any], str]] = {
    "tcp": check_tcp,
    "source": check_source,
    "many": check_many,
    "udp": check_udp,
    "refused": check_refused,
    "loopback_only": check_loopback_only,
    "low_port": check_low_port,
    "busy": check_busy,
    "bad_pid": check_bad_pid,
    "gone": check_gone,
    "close": check_close,  # last: it stops the publisher
}


def host_main(params: dict[str, Any]) -> int:
    from netns.ports import PortPublisher, parse_publish

    child = subprocess.Popen(
        ["unshare", "-Urn", sys.executable, os.path.abspath(__file__), "container"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    failures = 0
    try:
        assert child.stdout.readline().strip() == "ready"
        specs = [
            f"127.0.0.1::{ECHO}",
            f"127.0.0.1::{SOURCE}/tcp",
            f"127.0.0.1::{UDP_ECHO}/udp",
            f"127.0.0.1::{NOTHING}",
        ]
        publisher = PortPublisher([parse_publish(spec) for spec in specs], pid=child.pid)
        names = ["echo", "source", "udp", "nothing"]
        ports = {name: m.host_port for name, m in zip(names, publisher.bound, strict=True)}
        print(f"published: {[str(m) for m in publisher.bound]}", flush=True)
        CONTAINER.append(child.pid)
        pooled = {k: len(v) for k, v in publisher.dialer.pooled().items()}
        print(f"pooled sockets: {pooled}", flush=True)

        def loop() -> None:
            with selectors.DefaultSelector() as selector:
                publisher.register(selector)
                while not STOP.is_set():
                    timeout = publisher.select_timeout()
                    timeout = 0.1 if timeout is None else min(timeout, 0.1)
                    for key, mask in selector.select(timeout):
                        key.data(mask)
                    publisher.run_timers()

        thread = threading.Thread(target=loop, daemon=True)
        LOOP.append(thread)
        thread.start()
        for name in params["checks"]:
            try:
                print(f"{name}: ok {CHECKS[name](ports, publisher)}", flush=True)
            except Exception as exc:  # reported, and the next check still runs
                failures += 1
                print(f"{name}: FAIL {exc!r}", flush=True)
        STOP.set()
        thread.join(10)
        publisher.close()
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1] == "container":
        container_main()
    else:
        sys.exit(host_main(json.loads(sys.argv[2])))
