"""User-mode networking through `rl run` end to end, as the unprivileged user: rl's own stack
(netns/) behind --network slirp4netns, the default.

The "host" side is real: HTTP, TCP and DNS servers on 127.0.0.1 run in this test process. The
container reaches host loopback as 10.0.2.2 only with allow_host_loopback=true; the DNS
forwarder is pointed at the test DNS server with RL_DNS_UPSTREAM (in place of the host's
resolv.conf, which a test must not change).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.harness import User

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"
LOOPBACK = "slirp4netns:allow_host_loopback=true"


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-net-") as rl:
        yield rl


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """An HTTP server on 127.0.0.1 serving 8 MiB of random data as /blob; (port, sha256)."""
    root = tmp_path_factory.mktemp("web")
    data = os.urandom(8 << 20)
    (root / "blob").write_bytes(data)
    (root / "hello").write_text("hello from the host\n")
    handler = lambda *a: _Quiet(*a, directory=str(root))  # noqa: E731
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hashlib.sha256(data).hexdigest()
    server.shutdown()
    server.server_close()


def _dns_answer(query: bytes, address: str) -> bytes:
    """A one-record A answer to `query` (the question copied back), TTL 60."""
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    question = query[12:]
    record = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return header + question + record


@contextlib.contextmanager
def _dns_server(family: socket.AddressFamily, host: str, answer: str) -> Iterator[int]:
    """A DNS-shaped UDP server on HOST answering every A query with ANSWER; its port."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            sock.sendto(_dns_answer(query, answer), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


@pytest.fixture(scope="module")
def dns() -> Iterator[int]:
    """A DNS server on 127.0.0.1 answering every A query with 192.0.2.77; its port."""
    with _dns_server(socket.AF_INET, "127.0.0.1", "192.0.2.77") as port:
        yield port


def test_the_default_network_has_the_slirp_addresses(rlm: Rl) -> None:
    out = rlm.ok(
        "run", "--rm", IMAGE, "sh", "-c",
        "ip -4 addr show tap0 | grep inet; ip route | grep default; cat /etc/resolv.conf",
    ).stdout  # fmt: skip
    assert "inet 10.0.2.100/24" in out
    assert "default via 10.0.2.2 dev tap0" in out
    assert out.splitlines()[2] == "nameserver 10.0.2.3"
    mtu = rlm.ok("run", "--rm", IMAGE, "cat", "/sys/class/net/tap0/mtu").stdout.strip()
    assert mtu == "65520"
    assert "tap0" not in rlm.ok("run", "--rm", "--network", "none", IMAGE, "ip", "link").stdout


def test_host_loopback_only_when_allowed(rlm: Rl, web: tuple[int, str]) -> None:
    port, _ = web
    url = f"http://10.0.2.2:{port}/hello"
    out = rlm.ok("run", "--rm", "--network", LOOPBACK, IMAGE, "wget", "-q", "-O", "-", url)
    assert out.stdout == "hello from the host\n"
    # By default 10.0.2.2 does not lead to the host's loopback: the connection is refused.
    probe = f"nc -w 3 10.0.2.2 {port} </dev/null && echo connected || echo refused"
    assert rlm.ok("run", "--rm", IMAGE, "sh", "-c", probe).stdout.strip() == "refused"


def test_a_download_arrives_intact(rlm: Rl, web: tuple[int, str]) -> None:
    port, digest = web
    script = f"wget -q -O - http://10.0.2.2:{port}/blob | sha256sum"
    out = rlm.ok("run", "--rm", "--network", LOOPBACK, IMAGE, "sh", "-c", script).stdout
    assert out.split()[0] == digest


def test_an_upload_arrives_intact(rlm: Rl) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(60)
    port = listener.getsockname()[1]
    received = hashlib.sha256()

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                received.update(chunk)

    thread = threading.Thread(target=accept)
    thread.start()
    script = (
        f"dd if=/dev/urandom of=/tmp/up bs=1M count=8 2>/dev/null; sha256sum /tmp/up; "
        f"nc -w 5 10.0.2.2 {port} < /tmp/up"
    )
    out = rlm.ok("run", "--rm", "--network", LOOPBACK, IMAGE, "sh", "-c", script).stdout
    thread.join(timeout=60)
    listener.close()
    assert out.split()[0] == received.hexdigest()


def test_dns_goes_through_the_forwarder(rlm: Rl, dns: int) -> None:
    env = {"RL_DNS_UPSTREAM": f"127.0.0.1:{dns}"}
    result = rlm.user.run(
        [*_rl(rlm), "run", "--rm", IMAGE, "nslookup", "anything.example.test"], env=env
    )
    assert result.returncode == 0, result
    assert "192.0.2.77" in result.stdout


def test_dns_and_hosts_flags(rlm: Rl) -> None:
    out = rlm.ok(
        "run", "--rm", "--dns", "10.9.8.7", "--dns-search", "corp.example", "--dns-option",
        "ndots:2", "--add-host", "db.local:10.1.2.3", IMAGE, "sh", "-c",
        "cat /etc/resolv.conf; grep db.local /etc/hosts",
    ).stdout  # fmt: skip
    assert "nameserver 10.9.8.7" in out and "nameserver 10.0.2.3" not in out
    assert "search corp.example" in out and "options ndots:2" in out
    assert "10.1.2.3\tdb.local" in out
    result = rlm("run", "--rm", "--add-host", "nonsense", IMAGE, "true")
    assert result.returncode == 125 and "invalid --add-host" in result.stderr
    result = rlm("run", "--rm", "--network", "slirp4netns:cidr=10.5.0.0/24", IMAGE, "true")
    assert result.returncode == 125 and "unknown slirp4netns option" in result.stderr


def test_a_detached_container_has_the_network(rlm: Rl, web: tuple[int, str]) -> None:
    port, _ = web
    rlm.ok("run", "-d", "--name", "netd", "--network", LOOPBACK, IMAGE, "sleep", "1000")
    try:
        out = rlm.ok("exec", "netd", "wget", "-q", "-O", "-", f"http://10.0.2.2:{port}/hello")
        assert out.stdout == "hello from the host\n"
    finally:
        rlm.ok("rm", "-f", "netd")


def _rl(rl: Rl) -> list[str]:
    from tests.harness import rl_binary

    return [rl_binary(), "--root", str(rl.root)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_get(port: int, path: str = "/index.html", tries: int = 100) -> bytes:
    import time
    import urllib.request

    for _ in range(tries):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return bytes(reply.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers on published port {port}")


SERVE = (
    "echo served-from-{tag} > /tmp/index.html; "
    "dd if=/dev/urandom of=/tmp/big bs=1M count=4 2>/dev/null; exec httpd -f -p 8080 -h /tmp"
)


def test_published_tcp_port_of_a_detached_container(rlm: Rl) -> None:
    port = _free_port()
    rlm.ok("run", "-d", "--name", "pub", "-p", f"127.0.0.1:{port}:8080", IMAGE,
           "sh", "-c", SERVE.format(tag="detached"))  # fmt: skip
    try:
        assert _http_get(port) == b"served-from-detached\n"
        big = _http_get(port, "/big")
        inside = rlm.ok("exec", "pub", "sha256sum", "/tmp/big").stdout.split()[0]
        assert hashlib.sha256(big).hexdigest() == inside and len(big) == 4 << 20
        assert rlm.ok("port", "pub").stdout == f"8080/tcp -> 127.0.0.1:{port}\n"
        assert f"127.0.0.1:{port}->8080/tcp" in rlm.ok("ps", "--format", "{{.Ports}}").stdout
        # The port is taken now: a second container cannot have it, and says why.
        result = rlm("run", "--rm", "-p", f"127.0.0.1:{port}:80", IMAGE, "true")
        assert result.returncode == 125, result
        assert f"port {port} is taken" in result.stderr and "Traceback" not in result.stderr
    finally:
        rlm.ok("rm", "-f", "pub")
    with socket.socket() as sock:  # released with the container (TIME_WAIT is not a listener)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_published_port_of_a_foreground_container(rlm: Rl, user: User) -> None:
    import subprocess

    from tests.harness import rl_binary

    port = _free_port()
    argv = [rl_binary(), "--root", str(rlm.root), "run", "--rm", "--name", "fg", "-p",
            f"{port}:8080", IMAGE, "sh", "-c", SERVE.format(tag="foreground")]  # fmt: skip
    proc = subprocess.Popen(user.argv(argv, user.env()), cwd="/", stdout=subprocess.DEVNULL)
    try:
        assert _http_get(port) == b"served-from-foreground\n"
    finally:
        rlm("kill", "fg")
        proc.wait(timeout=30)


def test_publish_errors(rlm: Rl) -> None:
    result = rlm("run", "--rm", "-p", "80:80", IMAGE, "true")
    assert result.returncode == 125
    assert "net.ipv4.ip_unprivileged_port_start" in result.stderr
    result = rlm("run", "--rm", "-p", "99999:80", IMAGE, "true")
    assert result.returncode == 125 and result.stderr.startswith("Error: ")
    result = rlm("run", "--rm", "--network", "none", "-p", "8080:80", IMAGE, "true")
    assert result.returncode == 0 and "Port mappings have been discarded" in result.stderr


# --- IPv6 (on by default, as podman 4.x's enable_ipv6) and ICMP echo beyond the gateway ----------

IPV6 = "slirp4netns:enable_ipv6=true"
NO_IPV6 = "slirp4netns:enable_ipv6=false"
IPV6_LOOPBACK = "slirp4netns:enable_ipv6=true,allow_host_loopback=true"
# busybox ping uses raw sockets only, and podman's default capabilities lack NET_RAW.
RAW = ("--cap-add", "NET_RAW")


@pytest.fixture(scope="module")
def web6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """An HTTP server on the host's IPv6 loopback, ::1, serving 4 MiB as /blob; (port, sha256)."""
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("the host has no IPv6")
    root = tmp_path_factory.mktemp("web6")
    (root / "hello").write_text("hello over IPv6\n")
    data = os.urandom(4 << 20)
    (root / "blob").write_bytes(data)

    class Server6(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6

    handler = lambda *a: _Quiet(*a, directory=str(root))  # noqa: E731
    server = Server6(("::1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hashlib.sha256(data).hexdigest()
    server.shutdown()
    server.server_close()


def test_ipv6_addresses_and_ping6_of_the_gateway(rlm: Rl) -> None:
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("the host has no IPv6")
    script = (
        "ip -6 addr show tap0 | grep global; ip -6 route | grep default; "
        "ping6 -c 1 -W 5 fd00::2 >/dev/null && echo gateway-answers; "
        "ping6 -c 1 -W 5 fd00::3 >/dev/null && echo dns-answers"
    )
    # On by default, as podman 4.x's enable_ipv6 (its containers.conf: "Default is true").
    for network in ("slirp4netns", IPV6):
        out = rlm.ok("run", "--rm", "--network", network, *RAW, IMAGE, "sh", "-c", script).stdout
        assert "inet6 fd00::100/64 scope global" in out, network
        assert "default via fd00::2 dev tap0" in out, network
        assert "gateway-answers" in out and "dns-answers" in out, network
    # enable_ipv6=false: no global IPv6 address, no IPv6 route.
    script = "ip -6 addr show tap0; ip -6 route"
    out = rlm.ok("run", "--rm", "--network", NO_IPV6, IMAGE, "sh", "-c", script).stdout
    assert "fd00::" not in out


def _host_connect6_error(address: str, port: int) -> str | None:
    """How the host's own connect to [address]:port fails within 5 s (None: it does not)."""
    with socket.socket(socket.AF_INET6) as sock:
        sock.settimeout(5)
        try:
            sock.connect((address, port))
        except TimeoutError:
            return None
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def test_an_ipv6_connect_the_host_cannot_make_fails_instead_of_timing_out(rlm: Rl) -> None:
    """With IPv6 on by default, an app that tries an AAAA address first must not wait for its
    timeout where the host has no way there: the stack refuses the container's connection
    (RST) when the host's connect fails. (podman 4.3 here, slirp4netns with IPv6 on by
    default: `nc -w 5` to this address times out.)"""
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("the host has no IPv6")
    # 2001:db8::/32 is for documentation: no host reaches it. Where the host's own attempt
    # hangs (a route whose packets vanish), the stack can only pass that on.
    if _host_connect6_error("2001:db8::1", 80) is None:
        pytest.skip("the host's own IPv6 connect to 2001:db8::1 hangs rather than fails")
    # The default network; the route shows the attempt leaves through the stack (without
    # one, the container's kernel says "Network is unreachable" itself).
    script = (
        "ip -6 route | grep -q '^default via fd00::2' || echo no-route; "
        "nc -w 5 2001:db8::1 80 </dev/null; echo exit=$?"
    )
    result = rlm("run", "--rm", IMAGE, "sh", "-c", script)
    assert result.returncode == 0, result
    assert result.stdout.strip() == "exit=1", result
    assert "timed out" not in result.stderr, result
    # The stack's RST, or an ICMPv6 unreachable from it.
    assert "Connection refused" in result.stderr or "No route to host" in result.stderr, result


def test_ipv6_tcp_to_host_loopback_only_when_allowed(rlm: Rl, web6: tuple[int, str]) -> None:
    port, digest = web6
    script = (
        f"wget -q -O - http://[fd00::2]:{port}/hello; "
        f"wget -q -O - http://[fd00::2]:{port}/blob | sha256sum"
    )
    out = rlm.ok("run", "--rm", "--network", IPV6_LOOPBACK, IMAGE, "sh", "-c", script).stdout
    assert out.splitlines()[0] == "hello over IPv6"
    assert out.splitlines()[1].split()[0] == digest
    probe = f"nc -w 3 fd00::2 {port} </dev/null && echo connected || echo refused"
    out = rlm.ok("run", "--rm", "--network", IPV6, IMAGE, "sh", "-c", probe).stdout
    assert out.strip() == "refused"


def test_udp_over_ipv6_to_host_loopback(rlm: Rl) -> None:
    # busybox nc has no UDP: nslookup with -port= is the container's UDP client, a DNS-shaped
    # echo on ::1 the host's server (not the forwarder: this goes to fd00::2).
    with _dns_server(socket.AF_INET6, "::1", "192.0.2.78") as port:
        out = rlm.ok("run", "--rm", "--network", IPV6_LOOPBACK, IMAGE, "nslookup", "-type=a",
                     f"-port={port}", "udp6.example.test", "fd00::2").stdout  # fmt: skip
    assert "192.0.2.78" in out


def test_dns_forwarder_answers_at_fd00_3(rlm: Rl, dns: int) -> None:
    env = {"RL_DNS_UPSTREAM": f"127.0.0.1:{dns}"}
    argv = [*_rl(rlm), "run", "--rm", "--network", IPV6, IMAGE, "nslookup", "v6.example.test",
            "fd00::3"]  # fmt: skip
    result = rlm.user.run(argv, env=env)
    assert result.returncode == 0, result
    assert "192.0.2.77" in result.stdout


def test_inspect_shows_the_ipv6_address(rlm: Rl) -> None:
    import json

    if not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("the host has no IPv6")
    # The default network (IPv6 on), in a detached container (the monitor sets up its TAP).
    rlm.ok("run", "-d", "--name", "net6", *RAW, IMAGE, "sleep", "1000")
    rlm.ok("create", "--name", "net6off", "--network", NO_IPV6, IMAGE, "true")
    try:
        settings = json.loads(rlm.ok("inspect", "net6").stdout)[0]["NetworkSettings"]
        assert settings["GlobalIPv6Address"] == "fd00::100"
        assert settings["GlobalIPv6PrefixLen"] == 64
        assert settings["IPv6Gateway"] == "fd00::2"
        out = rlm.ok("exec", "net6", "ping6", "-c", "1", "-W", "5", "fd00::2").stdout
        assert "1 packets received" in out
        settings = json.loads(rlm.ok("inspect", "net6off").stdout)[0]["NetworkSettings"]
        assert settings["GlobalIPv6Address"] == "" and settings["IPv6Gateway"] == ""
    finally:
        rlm.ok("rm", "-f", "net6", "net6off")


def _host_address() -> str:
    """One of the host's own non-loopback IPv4 addresses (pinging it needs no outside network)."""
    import subprocess

    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    pytest.skip("the host has no global IPv4 address")


def _ping_allowed(user: User) -> bool:
    from netns.ping import ping_allowed

    with open("/proc/sys/net/ipv4/ping_group_range") as file:
        text = file.read()
    groups = [int(g) for g in user.run(["id", "-G"]).stdout.split()]
    return ping_allowed(text, groups)


def test_ping_beyond_the_gateway(rlm: Rl, user: User) -> None:
    if not _ping_allowed(user):
        pytest.skip("net.ipv4.ping_group_range excludes the test user: no ICMP sockets")
    address = _host_address()
    out = rlm.ok("run", "--rm", *RAW, IMAGE, "ping", "-c", "2", "-W", "5", address).stdout
    assert "2 packets received" in out


def test_ping_beyond_the_gateway_without_icmp_sockets_gets_no_reply(rlm: Rl, user: User) -> None:
    if _ping_allowed(user):
        pytest.skip("net.ipv4.ping_group_range includes the test user")
    address = _host_address()
    # As under slirp4netns: no reply, and the stack keeps serving (the gateway still answers).
    script = (
        f"ping -c 1 -W 2 {address} >/dev/null || echo no-reply; "
        "ping -c 1 -W 5 10.0.2.2 >/dev/null && echo gateway-answers"
    )
    out = rlm.ok("run", "--rm", *RAW, IMAGE, "sh", "-c", script).stdout
    assert out.split() == ["no-reply", "gateway-answers"]


def test_resolv_conf_with_ipv6_lists_the_ipv4_forwarder_as_podman_does(rlm: Rl) -> None:
    # podman 4.3.1 with slirp4netns:enable_ipv6=true (compared on this machine) writes
    # "nameserver 10.0.2.3" and then the host's servers, not fd00::3 (libpod's
    # addSlirp4netnsDNS adds the IPv4 forwarder only): the same file as without IPv6.
    with_ipv6 = rlm.ok("run", "--rm", IMAGE, "cat", "/etc/resolv.conf").stdout  # the default
    without = rlm.ok("run", "--rm", "--network", NO_IPV6, IMAGE, "cat", "/etc/resolv.conf").stdout
    assert with_ipv6.splitlines()[0] == "nameserver 10.0.2.3"
    assert "fd00::3" not in with_ipv6
    assert with_ipv6 == without


def test_an_ipv6_upload_arrives_intact(rlm: Rl) -> None:
    """Container -> host over IPv6: the established flow's segments take the stack's fast
    path (netns.fastpath.parse_tcp6); every byte must arrive, in order."""
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("the host has no IPv6")
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    listener.settimeout(60)
    port = listener.getsockname()[1]
    received = hashlib.sha256()

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                received.update(chunk)

    thread = threading.Thread(target=accept)
    thread.start()
    script = (
        f"dd if=/dev/urandom of=/tmp/up bs=1M count=16 2>/dev/null; sha256sum /tmp/up; "
        f"nc -w 5 fd00::2 {port} < /tmp/up"
    )
    out = rlm.ok("run", "--rm", "--network", IPV6_LOOPBACK, IMAGE, "sh", "-c", script).stdout
    thread.join(timeout=60)
    listener.close()
    assert out.split()[0] == received.hexdigest()


def test_a_large_download_through_the_stack_arrives_intact(
    rlm: Rl, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Host -> container through the stack (not a published port): 256 MiB of random data,
    whose segments go out as views into the memory the host socket received into
    (netns.sendbuffer), reused once acknowledged: a byte out of place changes the digest."""
    root = tmp_path_factory.mktemp("big")
    digest = hashlib.sha256()
    with open(root / "big", "wb") as file:
        for _ in range(64):
            block = os.urandom(4 << 20)
            digest.update(block)
            file.write(block)
    handler = lambda *a: _Quiet(*a, directory=str(root))  # noqa: E731
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        script = f"wget -q -O - http://10.0.2.2:{port}/big | sha256sum"
        out = rlm.ok("run", "--rm", "--network", LOOPBACK, IMAGE, "sh", "-c", script).stdout
    finally:
        server.shutdown()
        server.server_close()
    assert out.split()[0] == digest.hexdigest()
