"""Port publishing: `-p [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]`, host listeners, kernel splicing.

- `parse_publish(spec)` is podman's `-p` syntax as a pure function (its error messages too).
- `NamespaceDialer(pid)` connects to ports inside the container's network namespace from this
  process: a socket belongs to the namespace it was created in, so short-lived maker processes
  join the container's user and network namespaces (/proc/PID/ns/user, /proc/PID/ns/net),
  create batches of unconnected sockets there and send them back over a Unix socket
  (SCM_RIGHTS); the dialer pools them and connects them to 127.0.0.1:PORT on demand. No
  process stays in the container's namespaces.
- `PortPublisher(mappings, dialer)` binds the host ports (raising `PublishError` with a hint for
  ports below net.ipv4.ip_unprivileged_port_start and "address already in use" for busy ports),
  then, hosted in a selectors loop like `netns.driver.NetDriver`:
  * TCP: per accepted connection, asks the dialer for a connection to the container's port and
    moves bytes with os.splice through a pipe per direction (non-blocking; a half-close is passed
    on with shutdown(SHUT_WR); errors reset both ends), so bulk data never crosses Python buffers
    nor the user-space stack;
  * UDP: a relay; each host peer gets a UDP socket inside the netns (from the dialer) connected to
    the container's port; replies go back to that peer; idle peers are dropped after
    UDP_IDLE_TIMEOUT.

Hosting, as for NetDriver: `publisher.register(selector)`; every key it registers carries a
callable(mask); call `run_timers()` when `select_timeout()` has passed; `close()` releases
everything (the dialer's pool too, when the publisher created it). The container sees published
connections coming from 127.0.0.1, as with rootlesskit's builtin port driver.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

from netns._record import Record

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

PROTOCOLS = ("tcp", "udp")
LISTEN_BACKLOG = 511
ACCEPTS_PER_EVENT = 64
DATAGRAMS_PER_EVENT = 64
MAX_CONNECTIONS = 1024  # spliced TCP connections per publisher; more are refused
MAX_UDP_PEERS = 256
MAX_PENDING_DIALS = 4096
HELPER_START_TIMEOUT = 30.0
UDP_IDLE_TIMEOUT = 60.0
UDP_QUEUE = 16  # datagrams held per peer while its socket in the netns is being made
MAX_DATAGRAM = 65535
PIPE_SIZE = 1 << 20  # asked for; the kernel may give less (fs.pipe-max-size, per-user limits)
SPLICE_CHUNK = 1 << 30
_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_LINGER_ABORT = struct.pack("ii", 1, 0)
_UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

Callback = Callable[[int], None]


class PortSpecError(ValueError):
    """A `-p` value podman would reject; the message is podman's."""


class PublishError(OSError):
    """A published port could not be set up; the message says what to do."""


class PortMapping(Record):
    """`range` consecutive ports: host_port+i -> container_port+i. host_port 0: any free port;
    host_ip "": all IPv4 addresses."""

    __slots__ = ("container_port", "host_ip", "host_port", "protocol", "range")

    def __init__(
        self,
        host_ip: str,
        host_port: int,
        container_port: int,
        protocol: str = "tcp",
        range: int = 1,
    ) -> None:
        self.host_ip = host_ip
        self.host_port = host_port
        self.container_port = container_port
        self.protocol = protocol
        self.range = range

    def pairs(self) -> list[tuple[int, int]]:
        """(host port, container port) for each port of the range (host 0: any)."""
        return [
            (self.host_port + i if self.host_port else 0, self.container_port + i)
            for i in range(self.range)
        ]

    def __str__(self) -> str:
        """As `podman port` prints one port: 80/tcp -> 0.0.0.0:8080."""
        host = self.host_ip or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return "\n".join(f"{ctr}/{self.protocol} -> {host}:{hostp}" for hostp, ctr in self.pairs())


# --- parsing (pure) -----------------------------------------------------------------------------


def _parse_port(text: str) -> int:
    if text.startswith("-"):
        raise PortSpecError("port numbers cannot be negative")
    digits = text[1:] if text.startswith("+") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise PortSpecError(f'invalid port number: strconv.Atoi: parsing "{text}": invalid syntax')
    port = int(digits)
    if not 1 <= port <= 65535:
        raise PortSpecError(f"port numbers must be between 1 and 65535 (inclusive), got {port}")
    return port


def _parse_range(text: str) -> tuple[int, int]:
    """'80' -> (80, 1); '80-82' -> (80, 3)."""
    if text.startswith("-"):
        raise PortSpecError("port numbers cannot be negative")
    start_text, dash, end_text = text.partition("-")
    start = _parse_port(start_text)
    if not dash:
        return start, 1
    if not end_text:
        raise PortSpecError("must provide ending number for port range")
    end = _parse_port(end_text)
    if end <= start:
        raise PortSpecError(
            "the end port of a range must be higher than the start port - "
            f"{end} is not higher than {start}"
        )
    return start, end - start + 1


def _with_context(what: str, text: str) -> tuple[int, int]:
    try:
        return _parse_range(text)
    except PortSpecError as exc:
        raise PortSpecError(f"parsing {what} port: {exc}") from None


def _parse_host_ip(text: str) -> str:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):
            continue
    raise PortSpecError(f'cannot parse "{text}" as an IP address')


def parse_publish(spec: str) -> PortMapping:
    """One `-p`/`--publish` value, podman's syntax: [[hostIP:][hostPort]:]containerPort[/proto],
    ports or ranges (8000-8010:80-90), an IPv6 host address in brackets ([::1]:8080:80).
    Raises PortSpecError with podman's message (sctp is refused: rl relays TCP and UDP only)."""
    body, slash, protocol = spec.partition("/")
    if slash:
        if "/" in protocol:
            raise PortSpecError("invalid port format - protocol can only be specified once")
        if not protocol:
            raise PortSpecError("must provide a non-empty protocol to publish")
        protocol = protocol.lower()
        if protocol == "sctp":
            raise PortSpecError("publishing sctp ports is not supported: use tcp or udp")
        if protocol not in PROTOCOLS:
            raise PortSpecError(f'unrecognized protocol "{protocol}" in port mapping')
    else:
        protocol = "tcp"
    host_ip = ""
    if body.startswith("["):
        close = body.find("]")
        if close < 0 or body[close + 1 : close + 2] != ":":
            raise PortSpecError("invalid port format - format is [[hostIP:]hostPort:]containerPort")
        host_ip, rest = body[1:close], body[close + 2 :]
        parts = rest.split(":")
        if len(parts) != 2:
            raise PortSpecError(
                "invalid port format - must provide host and destination port if specifying an IP"
            )
        host_text, ctr_text = parts
    else:
        parts = body.split(":")
        if len(parts) == 1:
            host_text, ctr_text = "", parts[0]
        elif len(parts) == 2:
            host_text, ctr_text = parts
        elif len(parts) == 3:
            host_ip, host_text, ctr_text = parts
        else:
            raise PortSpecError("invalid port format - format is [[hostIP:]hostPort:]containerPort")
    if not ctr_text:
        raise PortSpecError("must provide a non-empty container port to publish")
    container_port, count = _with_context("container", ctr_text)
    host_port = 0
    if host_text:
        host_port, host_count = _with_context("host", host_text)
        if host_count != count:
            raise PortSpecError(
                f"host and container port ranges have different lengths: {host_count} vs {count}"
            )
    if host_ip:
        host_ip = _parse_host_ip(host_ip)
    return PortMapping(host_ip, host_port, container_port, protocol, count)


# --- binding the host side ----------------------------------------------------------------------


def _unprivileged_port_start() -> int:
    try:
        with open(_UNPRIVILEGED_PORT_START) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return 1024


def _bind(protocol: str, host_ip: str, port: int) -> socket.socket:
    """A non-blocking socket bound to host_ip:port (listening, for TCP); PublishError naming what
    to do when that fails."""
    address = host_ip or "0.0.0.0"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    shown = f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"
    sock = socket.socket(family, kind)
    try:
        if protocol == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        if protocol == "tcp":
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        code = exc.errno or errno.EIO
        what = f"cannot publish {shown}/{protocol}"
        if code == errno.EACCES and 0 < port < _unprivileged_port_start():
            start = _unprivileged_port_start()
            raise PublishError(
                code,
                f"{what}: rootless users cannot bind ports below {start}; lower "
                f"net.ipv4.ip_unprivileged_port_start (e.g. sysctl -w "
                f"net.ipv4.ip_unprivileged_port_start={port}) or publish a port >= {start}",
            ) from None
        if code == errno.EADDRINUSE:
            raise PublishError(
                code, f"{what}: address already in use (port {port} is taken on the host)"
            ) from None
        if code == errno.EADDRNOTAVAIL:
            raise PublishError(code, f"{what}: {address} is not an address of this host") from None
        raise PublishError(code, f"{what}: {os.strerror(code)}") from None
    return sock


def bind_mapping(mapping: PortMapping) -> list[socket.socket]:
    """The host sockets of one mapping (a range of ports); host port 0 picks free ports
    (consecutive ones for a range, as podman does)."""
    if mapping.host_port:
        sockets: list[socket.socket] = []
        try:
            for host_port, _ctr in mapping.pairs():
                sockets.append(_bind(mapping.protocol, mapping.host_ip, host_port))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets
    first = _bind(mapping.protocol, mapping.host_ip, 0)
    if mapping.range == 1:
        return [first]
    for _attempt in range(32):
        start = first.getsockname()[1]
        if start + mapping.range - 1 <= 65535:
            try:
                rest = bind_mapping(mapping.replace(host_port=start + 1, range=mapping.range - 1))
                return [first, *rest]
            except PublishError:
                pass
        first.close()
        first = _bind(mapping.protocol, mapping.host_ip, 0)
    first.close()
    raise PublishError(errno.EADDRINUSE, f"no {mapping.range} consecutive free ports found")


# --- sockets made inside the container's namespaces ---------------------------------------------

DialCallback = Callable[[socket.socket | None, int], None]

# A socket belongs to the network namespace it was created in, whoever calls connect() on it
# later: so a short-lived maker process joins the container's namespaces, creates a batch of
# unconnected sockets there, hands them over and exits, and the dialer connects them in this
# process. Nothing stays resident in the container's namespaces for a published port (a resident
# helper interpreter cost ~2.8 MB private for the container's whole life).
FIRST_BATCH = 32  # sockets per protocol the constructor waits for
LARGEST_BATCH = 256  # the batch doubles up to this while dials find the pool empty
FDS_PER_MESSAGE = 250  # SCM_MAX_FD is 253; a batch fits in 2 messages (net.unix.max_dgram_qlen)

# The maker is a fresh interpreter (python -S -I) running this code, not a fork: a forked child
# of a busy monitor would copy its page tables and touch its heap; a minimal interpreter starts
# in ~20 ms. It imports only _socket and ctypes (for setns: Python 3.11 has no os.setns). Its
# channel is fd 3; fds 4 and 5 are the container's user and network namespaces (opened by the
# dialer once: the process they were opened from may be gone since); argv: the numbers of TCP
# and UDP sockets to make. Messages: b"tcp" / b"udp" with up to FDS_PER_MESSAGE non-blocking sockets
# (SCM_RIGHTS); then b"done", or b"gone ERRNO text" when the namespaces cannot be joined (the
# container is gone, or not ours), or b"error ERRNO" when no socket could be made.
MAKER_CODE = r"""
import _socket, os, sys
channel = _socket.socket(fileno=3)
tcp, udp = (int(arg) for arg in sys.argv[1:3])
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def join(fd, kind, flag):
        own, target = os.stat(f"/proc/self/ns/{kind}"), os.fstat(fd)
        if (own.st_dev, own.st_ino) != (target.st_dev, target.st_ino):  # else: already there
            if libc.setns(fd, flag) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"setns {kind}: {os.strerror(code)}")
        os.close(fd)
    join(4, "user", 0x10000000)
    join(5, "net", 0x40000000)
except OSError as exc:
    channel.send(f"gone {exc.errno or 5} {exc.strerror or exc}".encode())
    sys.exit(1)
rights = (_socket.SOL_SOCKET, _socket.SCM_RIGHTS)
made = 0
for name, kind, count in ((b"tcp", _socket.SOCK_STREAM, tcp), (b"udp", _socket.SOCK_DGRAM, udp)):
    while count > 0:
        batch = []
        try:
            while len(batch) < min(count, __CHUNK__):
                batch.append(_socket.socket(_socket.AF_INET, kind | _socket.SOCK_NONBLOCK))
        except OSError as exc:
            if not made + len(batch):
                channel.send(b"error %d" % (exc.errno or 5))
                sys.exit(1)
            count = len(batch)  # out of descriptors: hand over what was made
        fds = b"".join(sock.fileno().to_bytes(4, sys.byteorder) for sock in batch)
        channel.sendmsg([name], [(*rights, fds)])
        for sock in batch:
            sock.close()
        made += len(batch)
        count -= len(batch)
channel.send(b"done")
""".replace("__CHUNK__", str(FDS_PER_MESSAGE))


class PoolPolicy:
    """How many sockets of one protocol to ask the next maker for (sans-IO).

    A maker is asked for more when the pool is at or below the low watermark (a quarter of the
    batch) or dials wait; the batch doubles (up to `largest`) when dials wait or one found the
    pool empty since the last request, and halves (down to `first`) when none did, so that what
    stays pooled follows the demand. A request covers the dials waiting, plus the watermark.
    """

    __slots__ = ("batch", "first", "largest", "starved")

    def __init__(self, first: int = FIRST_BATCH, largest: int = LARGEST_BATCH) -> None:
        self.first = first
        self.largest = max(first, largest)
        self.batch = first
        self.starved = False

    @property
    def low_water(self) -> int:
        return max(1, self.batch // 4)

    def found_empty(self) -> None:
        """A dial had to wait: the pool was empty."""
        self.starved = True

    def request(self, pooled: int, waiting: int) -> int:
        """Sockets to ask for now (0: enough pooled). Called when no maker is under way."""
        if not waiting and pooled > self.low_water:
            return 0
        if self.starved or waiting:
            self.batch = min(self.largest, self.batch * 2)
        else:
            self.batch = max(self.first, self.batch // 2)
        self.starved = False
        return min(self.largest, max(self.batch, waiting + self.low_water))


class _Maker:
    """One maker process under way: its pid, a pidfd (readable once it exited), our channel end."""

    __slots__ = ("channel", "pid", "pidfd")

    def __init__(self, namespaces: tuple[int, int], counts: dict[str, int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = [sys.executable, "-S", "-I", "-c", MAKER_CODE]
            argv += [str(counts.get("tcp", 0)), str(counts.get("udp", 0))]
            actions = [
                (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                (os.POSIX_SPAWN_DUP2, namespaces[0], 4),
                (os.POSIX_SPAWN_DUP2, namespaces[1], 5),
            ]
            self.pid = os.posix_spawn(sys.executable, argv, {}, file_actions=actions)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        theirs.close()
        self.channel = ours
        self.pidfd = -1
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except OSError:
            self.kill()
            raise

    def wait(self, timeout: float | None) -> bool:
        """Block until the maker exited (True) or `timeout` passed (False)."""
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))

    def collect(self) -> tuple[dict[str, list[socket.socket]], str]:
        """After it exited: the sockets it made, by protocol, and its last word ("done",
        "gone ERRNO text", "error ERRNO", or "" when it died without one); reaps it."""
        made: dict[str, list[socket.socket]] = {}
        status = ""
        self.channel.setblocking(False)
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(
                    self.channel, 256, FDS_PER_MESSAGE, socket.MSG_CMSG_CLOEXEC
                )
            except OSError:
                break
            if not message:
                break
            kind = message.decode(errors="replace")
            if kind in PROTOCOLS:
                made.setdefault(kind, []).extend(socket.socket(fileno=fd) for fd in fds)
            else:
                for fd in fds:
                    os.close(fd)
                status = kind
        self.close()
        return made, status

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.close()

    def close(self) -> None:
        """Reap it (it exited or was killed) and release our ends."""
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # reaped already (SIGCHLD ignored)
        self.channel.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _open_namespaces(pid: int) -> tuple[int, int]:
    """fds of process `pid`'s user and network namespaces: what makers join, even once `pid`
    is gone (the monitor's keeper process ends when the container started)."""
    user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return user, os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(user)
        raise


def _status_error(status: str) -> tuple[int, str]:
    """(errno, text) of a maker's last word that is not "done"."""
    words = status.split(" ", 2)
    code = int(words[1]) if len(words) >= 2 and words[1].isdigit() else errno.EIO
    return code or errno.EIO, words[2] if len(words) == 3 else "the socket maker exited"


class NamespaceDialer:
    """Connects to ports inside process `pid`'s network namespace from this process.

    Sockets are made there ahead of time by short-lived maker processes (MAKER_CODE in a fresh
    `python -S -I`; the caller must be allowed to join the namespaces: same user as their owner)
    and kept in a pool per protocol. The namespaces are held open (fds) from the constructor to
    `close()`, so makers join them even once `pid` ended. The constructor waits for the first
    batch (OSError naming what failed when the namespaces cannot be joined).
    `dial(protocol, port, callback)` takes a socket from the pool, starts a non-blocking connect
    to 127.0.0.1:port and calls `callback(sock, 0)` (connected), `callback(sock, EINPROGRESS)`
    (a TCP connect under way) or `callback(None, errno)`; while the pool is empty, dials wait
    (in order, at most MAX_PENDING_DIALS) for the maker under way, which the selector watches
    (a pidfd; it is reaped here, by pid: other children are left alone). `dial_now` is the
    blocking variant.
    """

    def __init__(self, pid: int, protocols: Sequence[str] = PROTOCOLS) -> None:
        self._setup(pid, (-1, -1), {})
        try:
            self.namespaces = _open_namespaces(pid)
        except OSError as exc:
            self.close()
            raise OSError(
                exc.errno, f"joining process {pid}'s network namespace: {exc.strerror}"
            ) from None
        self._policies.update((protocol, PoolPolicy()) for protocol in protocols)
        counts = {protocol: policy.request(0, 0) for protocol, policy in self._policies.items()}
        try:
            status = self._run_maker(counts, HELPER_START_TIMEOUT)
        except OSError as exc:
            self.close()
            raise OSError(
                exc.errno, f"joining process {pid}'s network namespace: {exc.strerror}"
            ) from None
        if status != "done":  # the container is gone (or not ours), or nothing could be made
            self.close()
            code, text = _status_error(status)
            raise OSError(code, f"joining process {pid}'s network namespace: {text}")

    def _setup(
        self, pid: int, namespaces: tuple[int, int], pools: dict[str, list[socket.socket]]
    ) -> None:
        self.target = pid
        self.namespaces = namespaces  # fds: the user and network namespaces the makers join
        self._pools: dict[str, list[socket.socket]] = {p: list(pools.get(p, [])) for p in PROTOCOLS}
        self._policies: dict[str, PoolPolicy] = {}
        self._waiting: deque[tuple[str, int, DialCallback]] = deque()
        self._maker: _Maker | None = None
        # A maker that has not exited by then is killed and the dials waiting for it fail
        # (a container stopped, or the machine stalled): the monitor never waits forever.
        self._maker_deadline: float | None = None
        self.maker_timeout = HELPER_START_TIMEOUT
        self.clock: Callable[[], float] = time.monotonic  # PortPublisher gives its own
        self._selector: selectors.BaseSelector | None = None
        self.makers = 0  # makers started (the constructor's included)
        self.gone = 0  # errno once a maker could not join the namespaces: dials fail then
        self.closed = False

    @classmethod
    def adopt(
        cls, target: int, namespaces: tuple[int, int], pools: dict[str, list[socket.socket]]
    ) -> NamespaceDialer:
        """The dialer whose namespace fds (`namespaces`: user, net; of process `target`) and
        pooled sockets another incarnation of this process opened and made: the per-container
        monitor hands them over across an exec (rootless.monitor.helpers). Not registered."""
        dialer = cls.__new__(cls)
        dialer._setup(target, namespaces, pools)
        dialer._policies.update((p, PoolPolicy()) for p, socks in pools.items() if socks)
        return dialer

    def pooled(self) -> dict[str, list[socket.socket]]:
        """The pooled sockets by protocol (what `adopt` takes after an exec); only while no
        maker is under way (none is, until the dialer is registered)."""
        if self._maker is not None:
            raise RuntimeError("a socket maker is under way")
        return {protocol: list(socks) for protocol, socks in self._pools.items() if socks}

    @property
    def pid(self) -> int:
        """The maker under way, or 0."""
        return self._maker.pid if self._maker is not None else 0

    def register(self, selector: selectors.BaseSelector) -> None:
        if self._selector is not None:
            raise RuntimeError("NamespaceDialer.register called twice")
        self._selector = selector
        self._refill()

    def dial(self, protocol: str, port: int, callback: DialCallback) -> None:
        if self.closed:
            callback(None, errno.ESHUTDOWN)
            return
        if protocol not in self._pools:
            callback(None, errno.EPROTONOSUPPORT)
            return
        policy = self._policies.setdefault(protocol, PoolPolicy())
        pool = self._pools[protocol]
        if pool:
            self._connect(pool.pop(), port, callback)
        elif self.gone:
            callback(None, self.gone)
        elif len(self._waiting) >= MAX_PENDING_DIALS:
            callback(None, errno.EAGAIN)
        else:
            policy.found_empty()
            self._waiting.append((protocol, port, callback))
        self._refill()

    @staticmethod
    def _connect(sock: socket.socket, port: int, callback: DialCallback) -> None:
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        if code in (0, errno.EINPROGRESS):
            callback(sock, code)
        else:
            sock.close()
            callback(None, code)

    def _counts(self) -> dict[str, int]:
        waiting = {protocol: 0 for protocol in self._pools}
        for protocol, _port, _callback in self._waiting:
            waiting[protocol] += 1
        counts = {}
        for protocol, policy in self._policies.items():
            if count := policy.request(len(self._pools[protocol]), waiting[protocol]):
                counts[protocol] = count
        return counts

    def _refill(self) -> None:
        """Start a maker when a pool ran low (one at a time; through the selector)."""
        if self._maker is not None or self._selector is None or self.closed or self.gone:
            return
        counts = self._counts()
        if not counts:
            return
        try:
            self._maker = _Maker(self.namespaces, counts)
            self.makers += 1
        except OSError as exc:  # e.g. out of processes: the waiting dials fail, later ones retry
            self._fail_waiting(exc.errno or errno.EAGAIN)
            return
        self._selector.register(self._maker.pidfd, EVENT_READ, self._on_maker_exit)
        self._maker_deadline = self.clock() + self.maker_timeout

    def next_deadline(self) -> float | None:
        """When `expire` is due (None: no maker under way)."""
        return self._maker_deadline if self._maker is not None else None

    def expire(self, now: float) -> None:
        """Kill (and reap) a maker past its deadline; the dials waiting for it fail with
        ETIMEDOUT. The next dial starts another one."""
        if self._maker_deadline is None or now < self._maker_deadline:
            return
        if (maker := self._detach_maker()) is not None:
            self._abandon(maker)

    def _on_maker_exit(self, mask: int) -> None:
        if (maker := self._detach_maker()) is not None:
            self._take(maker)
            self._refill()

    def _detach_maker(self) -> _Maker | None:
        """The maker under way (None: there is none), no longer watched by the selector."""
        maker, self._maker = self._maker, None
        if maker is not None and self._selector is not None:
            try:
                self._selector.unregister(maker.pidfd)
            except (KeyError, ValueError):
                pass
        return maker

    def _abandon(self, maker: _Maker) -> None:
        """A maker that did not answer in time: killed (and reaped); the dials waiting for it
        fail with ETIMEDOUT."""
        maker.kill()
        self._fail_waiting(errno.ETIMEDOUT)

    def _take(self, maker: _Maker) -> str:
        """Pool what an exited maker made, then serve the waiting dials (or fail them); the
        maker's last word."""
        made, status = maker.collect()
        if self.closed:
            for socks in made.values():
                for sock in socks:
                    sock.close()
            return status
        for protocol, socks in made.items():
            self._pools[protocol].extend(socks)
        if status.startswith("gone"):
            self.gone = _status_error(status)[0]
        waiting, self._waiting = self._waiting, deque()
        failure = self.gone or (0 if status == "done" else _status_error(status)[0])
        for protocol, port, callback in waiting:
            pool = self._pools[protocol]
            if pool:
                self._connect(pool.pop(), port, callback)
            elif failure:
                callback(None, failure)
            else:
                self._waiting.append((protocol, port, callback))  # the next maker's
        return status

    def _fail_waiting(self, code: int) -> None:
        waiting, self._waiting = self._waiting, deque()
        for _protocol, _port, callback in waiting:
            callback(None, code)

    def _run_maker(self, counts: dict[str, int], timeout: float) -> str:
        """Make sockets and wait for them (the constructor, dial_now); the maker's last word."""
        maker = _Maker(self.namespaces, counts)
        self.makers += 1
        if not maker.wait(timeout):
            maker.kill()
            raise OSError(errno.ETIMEDOUT, "the socket maker did not answer")
        return self._take(maker)

    def dial_now(self, protocol: str, port: int) -> socket.socket:
        """Blocking: a socket in the container's netns connected to 127.0.0.1:port (UDP) or with
        the TCP connection established."""
        if self.closed:
            raise OSError(errno.ESHUTDOWN, "the dialer is closed")
        if not self._pools[protocol] and (maker := self._detach_maker()) is not None:
            if maker.wait(HELPER_START_TIMEOUT):  # the one under way
                self._take(maker)
            else:
                self._abandon(maker)
        if not self._pools[protocol] and not self.gone:
            self._run_maker({protocol: 1}, HELPER_START_TIMEOUT)
        answer: list[tuple[socket.socket | None, int]] = []
        self.dial(protocol, port, lambda sock, code: answer.append((sock, code)))
        sock, code = answer[0] if answer else (None, errno.EAGAIN)
        what = f"connecting to port {port}/{protocol} in the container"
        if sock is None:
            raise OSError(code, f"{what}: {os.strerror(code)}")
        if code:
            sock.setblocking(True)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not error:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                poller.poll(30_000)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                sock.close()
                raise OSError(error, f"{what}: {os.strerror(error)}")
            sock.setblocking(False)
        return sock

    def close(self) -> None:
        """Close the pooled sockets, stop (and reap) a maker under way. Waiting dials are
        dropped."""
        if self.closed:
            return
        self.closed = True
        self._waiting.clear()
        if (maker := self._detach_maker()) is not None:
            maker.kill()
        for pool in self._pools.values():
            for sock in pool:
                sock.close()
            pool.clear()
        for fd in self.namespaces:
            if fd >= 0:
                os.close(fd)
        self.namespaces = (-1, -1)


# --- TCP: splicing ------------------------------------------------------------------------------


def _pipe() -> tuple[int, int, int]:
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over the user's pipe-buffer budget: a smaller pipe still works
    return read_end, write_end, fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)


class _Direction:
    """src -> pipe -> dst. `blocked_read`: the last read from src failed with the pipe holding
    data; the pipe may be full (its capacity counts pages, not bytes), so src is not watched
    until a write to dst makes room."""

    __slots__ = ("blocked_read", "buffered", "capacity", "dst", "eof", "pipe_r", "pipe_w", "src")

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self.pipe_r, self.pipe_w, self.capacity = _pipe()
        self.buffered = 0
        self.eof = False
        self.blocked_read = False

    @property
    def done(self) -> bool:
        return self.eof and not self.buffered

    @property
    def wants_read(self) -> bool:
        return not self.eof and not self.blocked_read and self.buffered < self.capacity

    def pump(self) -> bool:
        """Move what can be moved without blocking. True when src reached EOF just now and the
        pipe is empty (the caller shuts dst down for writing). OSError: the connection failed."""
        was_done = self.done
        while True:
            progress = False
            if not self.eof and self.buffered < self.capacity:
                try:
                    count = os.splice(self.src, self.pipe_w, SPLICE_CHUNK, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    self.blocked_read = self.buffered > 0
                else:
                    if count:
                        self.buffered += count
                        progress = True
                    else:
                        self.eof = True
            if self.buffered:
                try:
                    count = os.splice(self.pipe_r, self.dst, self.buffered, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    pass
                else:
                    self.buffered -= count
                    self.blocked_read = False
                    progress = progress or count > 0
            if not progress:
                return self.done and not was_done

    def close(self) -> None:
        os.close(self.pipe_r)
        os.close(self.pipe_w)


class _Splice:
    """One published TCP connection: host socket <-> container socket, both directions."""

    __slots__ = ("connecting", "events", "inbound", "inner", "outbound", "outer", "publisher")

    def __init__(self, publisher: PortPublisher, outer: socket.socket) -> None:
        self.publisher = publisher
        self.outer = outer
        self.inner: socket.socket | None = None
        self.connecting = True
        self.inbound: _Direction | None = None  # host -> container
        self.outbound: _Direction | None = None  # container -> host
        self.events = {outer.fileno(): 0}

    def attach(self, inner: socket.socket, in_progress: bool) -> None:
        self.inner = inner
        self.connecting = in_progress
        self.events[inner.fileno()] = 0
        try:
            if not in_progress:
                self._start()
        except OSError:  # no pipes (e.g. out of file descriptors)
            self.abort()
            return
        self._update()

    def _start(self) -> None:
        assert self.inner is not None
        outer, inner = self.outer.fileno(), self.inner.fileno()
        self.connecting = False
        self.inbound = _Direction(outer, inner)
        self.outbound = _Direction(inner, outer)

    def on_event(self, mask: int) -> None:
        if self.publisher._splices.get(self.outer) is not self:
            return
        try:
            if self.connecting:
                assert self.inner is not None
                error = self.inner.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    self.abort()
                    return
                if not mask & EVENT_WRITE:
                    return
                self._start()
            assert self.inbound is not None and self.outbound is not None
            assert self.inner is not None
            if self.inbound.pump():
                self.inner.shutdown(socket.SHUT_WR)
            if self.outbound.pump():
                self.outer.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()
            return
        if self.inbound.done and self.outbound.done:
            self.close()
        else:
            self._update()

    def _update(self) -> None:
        outer, inner = self.outer.fileno(), self.inner.fileno() if self.inner else -1
        wanted = {outer: 0}
        if inner >= 0:
            wanted[inner] = 0
        if self.connecting:
            if inner >= 0:
                wanted[inner] = EVENT_WRITE
        elif self.inbound is not None and self.outbound is not None:
            for direction in (self.inbound, self.outbound):
                if direction.wants_read:
                    wanted[direction.src] |= EVENT_READ
                if direction.buffered:
                    wanted[direction.dst] |= EVENT_WRITE
        selector = self.publisher._selector
        for fd, mask in wanted.items():
            current = self.events.get(fd, 0)
            if mask == current or selector is None:
                continue
            if mask == 0:
                selector.unregister(fd)
            elif current == 0:
                selector.register(fd, mask, self.on_event)
            else:
                selector.modify(fd, mask, self.on_event)
            self.events[fd] = mask

    def _unwatch(self) -> None:
        selector = self.publisher._selector
        for fd, mask in self.events.items():
            if mask and selector is not None:
                try:
                    selector.unregister(fd)
                except (KeyError, ValueError):
                    pass  # the host loop closed its selector first (PortPublisher.close does too)
        self.events = {}

    def abort(self) -> None:
        """Reset both ends (a failure on one side is passed on to the other)."""
        for sock in (self.outer, self.inner):
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
                except OSError:
                    pass
        self.close()

    def close(self) -> None:
        self._unwatch()
        for direction in (self.inbound, self.outbound):
            if direction is not None:
                direction.close()
        self.inbound = self.outbound = None
        if self.inner is not None:
            self.inner.close()
        self.outer.close()
        self.publisher._splices.pop(self.outer, None)


# --- UDP: relaying ------------------------------------------------------------------------------


class _UdpPeer:
    __slots__ = ("address", "deadline", "inner", "queue")

    def __init__(self, address: tuple[str, int], deadline: float) -> None:
        self.address = address
        self.deadline = deadline
        self.inner: socket.socket | None = None
        self.queue: list[bytes] | None = []  # None once the socket has arrived


class _UdpRelay:
    __slots__ = ("container_port", "outer", "peers", "publisher")

    def __init__(self, publisher: PortPublisher, outer: socket.socket, container_port: int) -> None:
        self.publisher = publisher
        self.outer = outer
        self.container_port = container_port
        self.peers: dict[tuple[str, int], _UdpPeer] = {}

    def on_outer(self, mask: int) -> None:
        now = self.publisher._clock()
        for _ in range(DATAGRAMS_PER_EVENT):
            try:
                data, address = self.outer.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # an ICMP error for an earlier reply
            peer = self.peers.get(address)
            if peer is None:
                if len(self.peers) >= MAX_UDP_PEERS:
                    self._expire_oldest()
                peer = self.peers[address] = _UdpPeer(address, now + UDP_IDLE_TIMEOUT)
                self.publisher.dialer.dial("udp", self.container_port, self._attacher(peer))
            peer.deadline = now + UDP_IDLE_TIMEOUT
            if peer.queue is not None:
                if len(peer.queue) < UDP_QUEUE:
                    peer.queue.append(data)
            elif peer.inner is not None:
                try:
                    peer.inner.send(data)
                except OSError:
                    pass  # UDP may lose datagrams (e.g. nothing listens in the container)

    def _attacher(self, peer: _UdpPeer) -> DialCallback:
        def attach(sock: socket.socket | None, code: int) -> None:
            self._attach(peer, sock)

        return attach

    def _attach(self, peer: _UdpPeer, sock: socket.socket | None) -> None:
        if self.peers.get(peer.address) is not peer or self.publisher.closed:
            if sock is not None:
                sock.close()
            return
        if sock is None:
            del self.peers[peer.address]
            return
        queue, peer.queue, peer.inner = peer.queue or [], None, sock
        for data in queue:
            try:
                sock.send(data)
            except OSError:
                pass
        selector = self.publisher._selector
        if selector is not None:
            selector.register(sock, EVENT_READ, lambda mask: self._on_inner(peer))

    def _on_inner(self, peer: _UdpPeer) -> None:
        inner = peer.inner
        if inner is None or self.peers.get(peer.address) is not peer:
            return
        peer.deadline = self.publisher._clock() + UDP_IDLE_TIMEOUT
        for _ in range(DATAGRAMS_PER_EVENT):
            try:
                data = inner.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # e.g. port unreachable for an earlier datagram
            try:
                self.outer.sendto(data, peer.address)
            except OSError:
                pass

    def _expire_oldest(self) -> None:
        oldest = min(self.peers.values(), key=lambda peer: peer.deadline)
        self.drop(oldest)

    def drop(self, peer: _UdpPeer) -> None:
        self.peers.pop(peer.address, None)
        if peer.inner is not None:
            selector = self.publisher._selector
            if selector is not None:
                try:
                    selector.unregister(peer.inner)
                except (KeyError, ValueError):
                    pass
            peer.inner.close()
            peer.inner = None

    def expire(self, now: float) -> None:
        for peer in [peer for peer in self.peers.values() if peer.deadline <= now]:
            self.drop(peer)

    def next_deadline(self) -> float | None:
        return min((peer.deadline for peer in self.peers.values()), default=None)

    def close(self) -> None:
        for peer in list(self.peers.values()):
            self.drop(peer)


def raise_fd_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go programs such as rootlessport do):
    each published connection holds six descriptors (two sockets, two pipes)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


# --- the publisher ------------------------------------------------------------------------------


class PortPublisher:
    """Publishes `mappings` of the container whose namespaces `dialer` (or process `pid`) reaches.

    The constructor binds every host port first (PublishError for the first that fails; nothing
    stays bound then) and, given a pid rather than a dialer, then makes the dialer, which waits
    for its first sockets (OSError if the namespaces cannot be joined); `close()` closes that
    dialer too. `bound` lists the mappings with
    the host ports actually bound (one mapping per port), for `rl port` and inspect.
    """

    def __init__(
        self,
        mappings: Sequence[PortMapping],
        *,
        pid: int | None = None,
        dialer: NamespaceDialer | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if (pid is None) == (dialer is None):
            raise ValueError("PortPublisher needs a pid or a dialer")
        self._clock = clock
        self.max_connections = max_connections
        self.closed = False
        self._selector: selectors.BaseSelector | None = None
        self._listeners: list[tuple[socket.socket, int]] = []  # TCP, with the container port
        self._relays: list[_UdpRelay] = []
        self._splices: dict[socket.socket, _Splice] = {}
        self.bound: list[PortMapping] = []
        self.refused = 0  # TCP connections refused (limit reached, or the container refused)
        self._own_dialer = dialer is None
        raise_fd_limit()
        sockets: list[socket.socket] = []
        try:
            for mapping in mappings:
                bound = bind_mapping(mapping)
                sockets.extend(bound)
                for sock, (_host, ctr) in zip(bound, mapping.pairs(), strict=True):
                    port = sock.getsockname()[1]
                    self.bound.append(PortMapping(mapping.host_ip, port, ctr, mapping.protocol))
                    if mapping.protocol == "tcp":
                        self._listeners.append((sock, ctr))
                    else:
                        self._relays.append(_UdpRelay(self, sock, ctr))
            if dialer is None:
                protocols = sorted({mapping.protocol for mapping in mappings}) or PROTOCOLS
                dialer = NamespaceDialer(pid or 0, protocols)
            self.dialer = dialer
            dialer.clock = clock  # its maker deadline is one of our timers
        except BaseException:
            for sock in sockets:
                sock.close()
            raise

    @classmethod
    def adopt(
        cls, sockets: Sequence[tuple[str, socket.socket, int]], dialer: NamespaceDialer
    ) -> PortPublisher:
        """A publisher over host sockets bound before (`host_sockets` of a publisher in the
        process before an exec: the per-container monitor's, rootless.monitor.helpers); it
        owns `dialer` (close() stops it). Not registered."""
        publisher = cls([], dialer=dialer)
        publisher._own_dialer = True
        for protocol, sock, container_port in sockets:
            sock.setblocking(False)
            host_ip, port = sock.getsockname()[:2]
            host_ip = "" if host_ip == "0.0.0.0" else host_ip
            publisher.bound.append(PortMapping(host_ip, port, container_port, protocol))
            if protocol == "tcp":
                publisher._listeners.append((sock, container_port))
            else:
                publisher._relays.append(_UdpRelay(publisher, sock, container_port))
        return publisher

    def host_sockets(self) -> list[tuple[str, socket.socket, int]]:
        """(protocol, host socket, container port) of each published port, for `adopt`."""
        return [("tcp", sock, port) for sock, port in self._listeners] + [
            ("udp", relay.outer, relay.container_port) for relay in self._relays
        ]

    def register(self, selector: selectors.BaseSelector) -> None:
        """Start: accept and relay through `selector` (keys carry callables taking the mask)."""
        if self._selector is not None:
            raise RuntimeError("PortPublisher.register called twice")
        self._selector = selector
        if self._own_dialer:
            self.dialer.register(selector)
        for listener, ctr in self._listeners:
            selector.register(
                listener, EVENT_READ, lambda mask, s=listener, p=ctr: self._on_accept(s, p)
            )
        for relay in self._relays:
            selector.register(relay.outer, EVENT_READ, relay.on_outer)

    @property
    def connections(self) -> int:
        return len(self._splices)

    def select_timeout(self) -> float | None:
        deadline = self.next_deadline()
        return None if deadline is None else max(0.0, deadline - self._clock())

    def next_deadline(self) -> float | None:
        deadlines = [d for relay in self._relays if (d := relay.next_deadline()) is not None]
        if (maker := self.dialer.next_deadline()) is not None:
            deadlines.append(maker)
        return min(deadlines, default=None)

    def run_timers(self) -> None:
        now = self._clock()
        for relay in self._relays:
            relay.expire(now)
        self.dialer.expire(now)

    def _on_accept(self, listener: socket.socket, container_port: int) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                conn, _address = listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return  # e.g. ECONNABORTED, EMFILE: try again on the next event
            if len(self._splices) >= self.max_connections:
                self.refused += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
                conn.close()
                continue
            conn.setblocking(False)
            splice = self._splices[conn] = _Splice(self, conn)
            self.dialer.dial("tcp", container_port, self._dialer_callback(splice))

    def _dialer_callback(self, splice: _Splice) -> DialCallback:
        def dialed(sock: socket.socket | None, code: int) -> None:
            self._dialed(splice, sock, code)

        return dialed

    def _dialed(self, splice: _Splice, sock: socket.socket | None, code: int) -> None:
        if self._splices.get(splice.outer) is not splice:
            if sock is not None:
                sock.close()
            return
        if sock is None:
            self.refused += 1
            splice.abort()  # nothing listens in the container: the client sees a reset
            return
        splice.attach(sock, in_progress=code != 0)

    def close(self) -> None:
        """Stop listening, reset the connections, close the dialer if this publisher owns it."""
        if self.closed:
            return
        self.closed = True
        selector = self._selector
        for splice in list(self._splices.values()):
            splice.abort()
        for relay in self._relays:
            relay.close()
        for sock in [s for s, _ in self._listeners] + [r.outer for r in self._relays]:
            if selector is not None:
                try:
                    selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
            sock.close()
        if self._own_dialer:
            self.dialer.close()
