"""Both ends of the TAP driver test; runs as the unprivileged test user.

`host MODE JSON`: the host side. Starts `unshare -Urn` running this file's container side, gets the
TAP fd (MODE `pid`: `netns.tap.open_tap_in(child pid)`; MODE `inside`: the child makes it with
`create_tap()` and sends it over SCM_RIGHTS), runs `NetDriver` on it until the child exits,
then prints the child's report and the driver's stats. Exit status: the child's.

`container FD JSON`: inside the new user+net namespace. Runs the checks JSON names against the
stack and prints one `name: ok ...` or `name: FAIL ...` line each.
Imports only the standard library and netns.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
TIMEOUT = 20.0


# --- container side -------------------------------------------------------------------------------


def check_config(_params: dict[str, Any]) -> str:
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = fcntl.ioctl(sock, 0x8921, struct.pack("16si", b"tap0", 0))  # SIOCGIFMTU
        mtu = struct.unpack_from("16si", ifreq)[1]
        ifreq = fcntl.ioctl(sock, 0x8915, struct.pack("16sH14s", b"tap0", 0, b""))  # SIOCGIFADDR
        address = socket.inet_ntoa(ifreq[20:24])
    assert mtu == 65520, mtu
    assert address == "10.0.2.100", address
    with open("/proc/net/route") as routes:
        rows = [line.split() for line in routes.read().splitlines()[1:]]
    default = [row for row in rows if row[1] == "00000000" and row[7] == "00000000"]
    assert default and default[0][0] == "tap0", rows
    assert socket.inet_ntoa(struct.pack("<I", int(default[0][2], 16))) == GATEWAY, default
    with socket.create_server(("127.0.0.1", 0)) as server:  # loopback is up
        socket.create_connection(server.getsockname(), timeout=5).close()
    return f"mtu {mtu}, {address}, default via {GATEWAY}, lo up"


def check_ping(_params: dict[str, Any]) -> str:
    payload = b"rl-ping" * 8
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(2)
        for seq in range(1, 6):
            body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + payload
            total = int.from_bytes(body, "big")
            csum = 0xFFFF - (total % 0xFFFF or (0xFFFF if total else 0))
            sock.sendto(body[:2] + csum.to_bytes(2, "big") + body[4:], (GATEWAY, 0))
            try:
                while True:
                    packet, _ = sock.recvfrom(2048)
                    icmp = packet[(packet[0] & 0x0F) * 4 :]
                    if icmp[0] == 0 and icmp[4:8] == struct.pack("!HH", 0x4242, seq):
                        assert icmp[8:] == payload
                        return f"echo reply from {GATEWAY} (seq {seq})"
            except TimeoutError:
                continue
    raise AssertionError("no echo reply")


def check_tcp(params: dict[str, Any]) -> str:
    with socket.create_connection((GATEWAY, params["echo"]), timeout=TIMEOUT) as conn:
        conn.sendall(b"hello through the stack")
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(1024):
            received += chunk
    assert received == b"hello through the stack", received
    return "echoed"


def check_tcp_refused(params: dict[str, Any]) -> str:
    try:
        socket.create_connection((GATEWAY, params["echo"]), timeout=TIMEOUT)
    except ConnectionRefusedError:
        return "refused"
    raise AssertionError("reached the host's loopback without allow_host_loopback")


def check_udp(params: dict[str, Any]) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((GATEWAY, params["udp"]))
        sock.settimeout(1)
        for attempt in range(10):
            sock.send(b"udp echo %d" % attempt)
            try:
                reply = sock.recv(2048)
            except TimeoutError:
                continue
            assert reply == b"UDP ECHO %d" % attempt, reply
            return f"echoed after {attempt + 1} tries"
    raise AssertionError("no UDP answer")


def check_udp_refused(params: dict[str, Any]) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((GATEWAY, params["udp"]))
        sock.settimeout(1)
        for _ in range(5):
            sock.send(b"anyone?")
            try:
                reply = sock.recv(2048)
            except ConnectionRefusedError:
                return "port unreachable"
            except TimeoutError:
                continue
            raise AssertionError(f"answered: {reply!r}")
    raise AssertionError("neither an answer nor port unreachable")


def dns_query(name: str, txid: int) -> bytes:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)


def dns_answer_address(reply: bytes) -> tuple[int, str | None]:
    """(rcode, the first A record's address) of an answer to dns_query."""
    rcode = reply[3] & 0x0F
    ancount = struct.unpack_from("!H", reply, 6)[0]
    if not ancount:
        return rcode, None
    offset = 12
    while reply[offset]:
        offset += 1 + reply[offset]
    offset += 5 + 2 + 10  # question tail, answer name pointer, type/class/ttl/rdlength
    return rcode, socket.inet_ntoa(reply[offset : offset + 4])


def check_dns(params: dict[str, Any]) -> str:
    results = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((DNS, 53))
        sock.settimeout(2)
        for txid, name, expected in (
            (0x1234, "rl-test.example", (0, "192.0.2.7")),
            (0x4321, "missing.example", (3, None)),
        ):
            for _ in range(5):
                sock.send(dns_query(name, txid))
                try:
                    reply = sock.recv(4096)
                except TimeoutError:
                    continue
                break
            else:
                raise AssertionError(f"no DNS answer for {name}")
            assert reply[:2] == txid.to_bytes(2, "big"), reply
            assert dns_answer_address(reply) == expected, (name, reply)
            results.append(f"{name} -> {expected[1] or 'NXDOMAIN'}")
    return ", ".join(results)


def check_dns_tcp(params: dict[str, Any]) -> str:
    query = dns_query("rl-test.example", 0x5555)
    with socket.create_connection((DNS, 53), timeout=TIMEOUT) as conn:
        conn.sendall(len(query).to_bytes(2, "big") + query)
        reply = b""
        while len(reply) < 2 or len(reply) < 2 + int.from_bytes(reply[:2], "big"):
            chunk = conn.recv(4096)
            assert chunk, "connection closed early"
            reply += chunk
    assert dns_answer_address(reply[2:]) == (0, "192.0.2.7"), reply
    return "rl-test.example -> 192.0.2.7 over TCP"


def check_bulk(params: dict[str, Any]) -> str:
    size = params["bulk_mib"] << 20
    block = os.urandom(1 << 20)
    sent_hash = hashlib.sha256()
    conn = socket.create_connection((GATEWAY, params["echo"]), timeout=60)

    def writer() -> None:
        for index in range(size >> 20):
            chunk = block[index:] + block[:index]  # distinct blocks, cheap to make
            sent_hash.update(chunk)
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=writer)
    start = time.monotonic()
    thread.start()
    received_hash = hashlib.sha256()
    received = 0
    while chunk := conn.recv(1 << 20):
        received_hash.update(chunk)
        received += chunk.__len__()
    thread.join()
    elapsed = time.monotonic() - start
    conn.close()
    assert received == size, received
    assert received_hash.hexdigest() == sent_hash.hexdigest()
    rate = 2 * size * 8 / elapsed / 1e9
    return (
        f"{size >> 20} MiB each way, sha256 {sent_hash.hexdigest()[:16]} matches, {rate:.2f} Gbit/s"
    )


def unacknowledged(conn: socket.socket) -> int:
    import fcntl

    outq = fcntl.ioctl(conn, 0x5411, b"\0" * 4)  # SIOCOUTQ: bytes (and FIN) not yet acked
    count: int = struct.unpack("i", outq)[0]
    return count


def check_late_reader(params: dict[str, Any]) -> str:
    """The host closes its side at once and reads only later: the container's last bytes and
    FIN reach the stack long before the host socket takes them."""
    data = bytes(range(256)) * (1 << 15)  # 8 MiB
    with socket.create_connection((GATEWAY, params["late_reader"]), timeout=TIMEOUT) as conn:
        assert conn.recv(1) == b""  # the host's FIN
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        # Exiting tears the namespace down with whatever its kernel still holds: wait until the
        # stack has acknowledged everything, FIN included.
        deadline = time.monotonic() + TIMEOUT
        while unacknowledged(conn) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not unacknowledged(conn), unacknowledged(conn)
    return f"sent {len(data) >> 20} MiB and closed, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def check_many(params: dict[str, Any]) -> str:
    count = 100
    conns = [
        socket.create_connection((GATEWAY, params["echo"]), timeout=TIMEOUT) for _ in range(count)
    ]
    for index, conn in enumerate(conns):
        conn.sendall(b"%d " % index * 1000)
        conn.shutdown(socket.SHUT_WR)
    for index, conn in enumerate(conns):
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        assert received == b"%d " % index * 1000, (index, len(received))
        conn.close()
    return f"{count} concurrent connections echoed"


CHECKS: dict[str, Callable[[dict[str, Any]], str]] = {
    "late_reader": check_late_reader,
    "many": check_many,
    "config": check_config,
    "ping": check_ping,
    "tcp": check_tcp,
    "tcp_refused": check_tcp_refused,
    "udp": check_udp,
    "udp_refused": check_udp_refused,
    "dns": check_dns,
    "dns_tcp": check_dns_tcp,
    "bulk": check_bulk,
}


def container(channel_fd: int, params: dict[str, Any]) -> int:
    channel = socket.socket(fileno=channel_fd)
    if params["mode"] == "inside":
        from netns.tap import create_tap

        tap = create_tap()
        socket.send_fds(channel, [b"tap"], [tap])
        os.close(tap)
    else:
        channel.send(b"ready")
    assert channel.recv(16) == b"go"
    failures = 0
    for name in params["checks"]:
        try:
            print(f"{name}: ok {CHECKS[name](params)}", flush=True)
        except Exception as exc:  # every check reports, whatever fails
            failures += 1
            print(f"{name}: FAIL {exc!r}", flush=True)
    return 1 if failures else 0


# --- host side ------------------------------------------------------------------------------------


def host(mode: str, params: dict[str, Any]) -> int:
    from netns.config import NetConfig
    from netns.driver import NetDriver
    from netns.tap import open_tap_in

    params["mode"] = mode
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = ["unshare", "-Urn", sys.executable, os.path.abspath(__file__), "container"]
    argv += [str(theirs.fileno()), json.dumps(params)]
    child = subprocess.Popen(
        argv, pass_fds=[theirs.fileno()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    theirs.close()
    try:
        if mode == "inside":
            _, fds, _, _ = socket.recv_fds(ours, 16, 1)
            tap = fds[0]
        else:
            assert ours.recv(16) == b"ready"
            tap = open_tap_in(child.pid)
        config = NetConfig(
            allow_host_loopback=params["allow_host_loopback"],
            tcp_receive_buffer=params.get("tcp_receive_buffer", 1 << 20),
        )
        resolvers = [("127.0.0.1", params["dns"])]
        driver = NetDriver(tap, config, resolvers=resolvers)
        ours.send(b"go")
        driver.serve(until=lambda: child.poll() is not None and not driver.draining)
    finally:
        if child.poll() is None:
            child.kill()
        output, _ = child.communicate(timeout=60)
    sys.stdout.write(output.decode(errors="replace"))
    print(f"driver stats: {json.dumps(driver.stats.as_dict())}")
    return child.returncode


def main() -> int:
    if sys.argv[1] == "container":
        return container(int(sys.argv[2]), json.loads(sys.argv[3]))
    return host(sys.argv[2], json.loads(sys.argv[3]))


if __name__ == "__main__":
    sys.exit(main())
