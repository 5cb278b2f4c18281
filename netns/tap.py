"""The container's TAP device: created inside its network namespace, its fd handed out.

The stack lives outside the container, in the host namespaces; the TAP device must live inside the
container's network namespace. Two ways to get its fd:

- `create_tap()` runs in a process that is already inside the target network namespace and holds
  CAP_NET_ADMIN there (root of the user namespace owning it, e.g. right after
  `unshare(CLONE_NEWUSER | CLONE_NEWNET)`); it returns the configured device's fd;
- `open_tap_in(pid)` does the whole trip for another process's namespaces: it forks a child that
  joins /proc/PID/ns/user and /proc/PID/ns/net, calls `create_tap()` there and sends the fd back
  over a Unix socket (SCM_RIGHTS). The caller's own namespaces never change.

The device is configured like slirp4netns configures it (10.0.2.100/24, MTU 65520, up, loopback up,
default route via 10.0.2.2; with `ipv6`, fd00::100/64 and a default route via fd00::2 too, left out
without an error when `ipv6_optional` and the namespace has no IPv6) over rtnetlink, with a small
hand-written encoder (no `ip` subprocesses; pyroute2 would cost ~20 MB PSS and ~0.4 s to import,
measured here). Python 3.11 has no os.setns: ctypes provides it, imported in the forked child only,
so that the long-lived caller does not carry it. The fd is blocking and close-on-exec; frames are
plain Ethernet (IFF_NO_PI) after a virtio-net header (IFF_VNET_HDR, unless TapSettings says
otherwise), without offloads, so every frame read carries complete checksums until its reader turns
them on (`enable_offloads`, which NetDriver does).

This module must never configure the caller's own network namespace: `open_tap_in` refuses a
process that shares it (as root, that would rewrite the host's addresses and default route).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Sequence

from netns import config as _defaults
from netns._record import Record

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01  # frames read may carry partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM)
TUN_F_TSO4 = 0x02  # ... and be TCP segments larger than the MTU (up to 64 KiB)
TUN_F_TSO6 = 0x04
VNET_HEADER = 10  # struct virtio_net_hdr, the size the kernel uses unless told otherwise
IFNAMSIZ = 16

# <sched.h>
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

# <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
IFF_UP = 0x1
IFLA_ADDRESS = 1
IFLA_MTU = 4
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4
IFA_F_NODAD = 0x02
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, device type, index, flags, change mask
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type, flags
_RTATTR = struct.Struct("=HH")
_NLMSGERR = struct.Struct("=i")


class TapSettings(Record):
    """How the device is named and configured (slirp4netns's defaults)."""

    __slots__ = (
        "address",
        "address6",
        "gateway",
        "gateway6",
        "ipv6",
        "ipv6_optional",
        "mac",
        "mtu",
        "name",
        "prefix_length",
        "prefix_length6",
        "vnet_header",
    )

    def __init__(
        self,
        name: str = "tap0",
        address: str = _defaults.CONTAINER_ADDRESS,
        prefix_length: int = _defaults.PREFIX_LENGTH,
        gateway: str = _defaults.GATEWAY_ADDRESS,
        mtu: int = _defaults.MTU,
        mac: bytes | None = None,
        vnet_header: bool = True,
        ipv6: bool = False,
        address6: str = _defaults.CONTAINER_ADDRESS6,
        prefix_length6: int = _defaults.PREFIX_LENGTH6,
        gateway6: str = _defaults.GATEWAY_ADDRESS6,
        ipv6_optional: bool = False,
    ) -> None:
        self.name = name
        self.address = address
        self.prefix_length = prefix_length
        self.gateway = gateway
        self.mtu = mtu
        self.mac = mac  # None: the kernel picks a random locally administered one
        # Frames both ways carry a virtio-net header (IFF_VNET_HDR; see `has_vnet_header`).
        # No offloads are enabled here (the reader may: `enable_offloads`), so frames read
        # carry complete checksums; frames
        # written may leave their TCP checksum to be completed (VIRTIO_NET_HDR_F_NEEDS_CSUM),
        # which the container's kernel then neither computes nor verifies when it is the
        # destination: the stack computes no checksum over the payloads it sends.
        self.vnet_header = vnet_header
        # IPv6 is configured statically rather than by SLAAC from router advertisements: the
        # address is usable the moment the container starts (no duplicate address detection,
        # IFA_F_NODAD: the stack is the only other node on the link), where SLAAC would
        # leave it without IPv6 for the first 1-3 s (router solicitation delay, then DAD of
        # the link-local and the global address) and make a fixed address a guess.
        self.ipv6 = ipv6
        self.address6 = address6
        self.prefix_length6 = prefix_length6
        self.gateway6 = gateway6
        # Where the kernel refuses IPv6 (NO_IPV6_ERRNOS: booted with ipv6.disable=1, or
        # disable_ipv6 set for new namespaces), the device gets IPv4 only instead of failing.
        self.ipv6_optional = ipv6_optional


# What the kernel answers an IPv6 address request with where the namespace has no IPv6:
# EACCES when disable_ipv6 is set on the device (new namespaces inherit it from the host's
# net.ipv6.conf.default with net.core.devconf_inherit_init_net=1 or 3); EOPNOTSUPP (or
# EAFNOSUPPORT) when rtnetlink has no IPv6 handler: booted with ipv6.disable=1, or no IPv6 built in.
NO_IPV6_ERRNOS = frozenset({errno.EACCES, errno.EOPNOTSUPP, errno.EAFNOSUPPORT})


# --- rtnetlink messages (pure) ------------------------------------------------------------------


def _align(length: int) -> int:
    return (length + 3) & ~3


def rtattr(kind: int, value: bytes) -> bytes:
    """One route attribute, padded to 4 bytes."""
    length = _RTATTR.size + len(value)
    return (_RTATTR.pack(length, kind) + value).ljust(_align(length), b"\0")


def nlmsg(kind: int, flags: int, sequence: int, body: bytes) -> bytes:
    """A netlink message; the kernel fills in the port id."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, sequence, 0) + body


def link_up_message(
    index: int, sequence: int, *, mtu: int | None = None, mac: bytes | None = None
) -> bytes:
    """RTM_NEWLINK on an existing device: set it up (and its MTU and MAC address)."""
    attrs = b""
    if mtu is not None:
        attrs += rtattr(IFLA_MTU, struct.pack("=I", mtu))
    if mac is not None:
        attrs += rtattr(IFLA_ADDRESS, mac)
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP) + attrs
    return nlmsg(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, sequence, body)


def add_address_message(index: int, address: str, prefix_length: int, sequence: int) -> bytes:
    """RTM_NEWADDR: an IPv4 address with its subnet's broadcast address."""
    local = socket.inet_aton(address)
    host_bits = (1 << (32 - prefix_length)) - 1
    broadcast = (int.from_bytes(local, "big") | host_bits).to_bytes(4, "big")
    body = _IFADDRMSG.pack(socket.AF_INET, prefix_length, 0, RT_SCOPE_UNIVERSE, index)
    body += rtattr(IFA_LOCAL, local) + rtattr(IFA_ADDRESS, local) + rtattr(IFA_BROADCAST, broadcast)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return nlmsg(RTM_NEWADDR, flags, sequence, body)


def add_address6_message(index: int, address: str, prefix_length: int, sequence: int) -> bytes:
    """RTM_NEWADDR: an IPv6 address, usable at once (no duplicate address detection)."""
    body = _IFADDRMSG.pack(socket.AF_INET6, prefix_length, IFA_F_NODAD, RT_SCOPE_UNIVERSE, index)
    body += rtattr(IFA_ADDRESS, socket.inet_pton(socket.AF_INET6, address))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return nlmsg(RTM_NEWADDR, flags, sequence, body)


def default_route_message(index: int, gateway: str, sequence: int) -> bytes:
    """RTM_NEWROUTE: 0.0.0.0/0 (::/0 for an IPv6 gateway) via `gateway` on the device, in the
    main table."""
    family = socket.AF_INET6 if ":" in gateway else socket.AF_INET
    body = _RTMSG.pack(
        family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    )
    body += rtattr(RTA_GATEWAY, socket.inet_pton(family, gateway)) + rtattr(
        RTA_OIF, struct.pack("=i", index)
    )
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return nlmsg(RTM_NEWROUTE, flags, sequence, body)


def ack_errors(data: bytes) -> dict[int, int]:
    """The NLMSG_ERROR messages in a netlink reply: sequence -> errno (0 is an ACK)."""
    result: dict[int, int] = {}
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, sequence, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + _NLMSGERR.size:
            (error,) = _NLMSGERR.unpack_from(data, offset + _NLMSGHDR.size)
            result[sequence] = -error
        offset += _align(length)
    return result


def configure_messages(index: int, loopback: int, settings: TapSettings) -> list[tuple[str, bytes]]:
    """The requests `configure` sends, in order, each with what it does (for errors)."""
    return ipv4_messages(index, loopback, settings) + ipv6_messages(index, settings)


def ipv4_messages(index: int, loopback: int, settings: TapSettings) -> list[tuple[str, bytes]]:
    """Loopback and device up, the IPv4 address and default route."""
    return [
        ("set lo up", link_up_message(loopback, 1)),
        (
            f"set {settings.name} mtu {settings.mtu} up",
            link_up_message(index, 2, mtu=settings.mtu, mac=settings.mac),
        ),
        (
            f"add {settings.address}/{settings.prefix_length} to {settings.name}",
            add_address_message(index, settings.address, settings.prefix_length, 3),
        ),
        (
            f"add default route via {settings.gateway}",
            default_route_message(index, settings.gateway, 4),
        ),
    ]


def ipv6_messages(index: int, settings: TapSettings) -> list[tuple[str, bytes]]:
    """The IPv6 address and default route ([] without `settings.ipv6`)."""
    if not settings.ipv6:
        return []
    return [
        (
            f"add {settings.address6}/{settings.prefix_length6} to {settings.name}",
            add_address6_message(index, settings.address6, settings.prefix_length6, 5),
        ),
        (
            f"add default route via {settings.gateway6}",
            default_route_message(index, settings.gateway6, 6),
        ),
    ]


# --- inside the namespace -----------------------------------------------------------------------


def _rtnetlink(requests: Sequence[tuple[str, bytes]]) -> None:
    """Send the requests one by one, each waiting for its ACK; raise OSError naming the failure."""
    with _route_socket() as nl:
        _send(nl, requests)


def _route_socket() -> socket.socket:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        nl.bind((0, 0))
    except BaseException:
        nl.close()
        raise
    return nl


def _send(nl: socket.socket, requests: Sequence[tuple[str, bytes]]) -> None:
    for what, message in requests:
        (sequence,) = struct.unpack_from("=I", message, 8)
        nl.send(message)
        while True:
            errors = ack_errors(nl.recv(65536))
            if sequence in errors:
                break
        if errors[sequence]:
            code = errors[sequence]
            raise OSError(code, f"rtnetlink: {what}: {os.strerror(code)}")


def configure(name: str, settings: TapSettings) -> bool:
    """Address, MTU, up, loopback up and default route, for the device `name` of this netns.
    Whether it got IPv6: not when the kernel refuses it here and `settings.ipv6_optional`."""
    index = socket.if_nametoindex(name)
    with _route_socket() as nl:
        _send(nl, ipv4_messages(index, socket.if_nametoindex("lo"), settings))
        try:
            _send(nl, ipv6_messages(index, settings))
        except OSError as exc:
            if exc.errno not in NO_IPV6_ERRNOS:
                raise
            if settings.ipv6_optional:
                return False  # the refused address left nothing behind: no route needed
            raise OSError(
                exc.errno, f"{exc.strerror} (no IPv6 in this network namespace)"
            ) from None
    return settings.ipv6


def create_tap(settings: TapSettings | None = None) -> int:
    """Create and configure the TAP device in the current network namespace; return its fd.

    Needs CAP_NET_ADMIN over this namespace and a usable /dev/net/tun (mode 0666).
    """
    settings = settings or TapSettings()
    name = settings.name.encode()
    if not name or len(name) >= IFNAMSIZ:
        raise ValueError(f"bad interface name: {settings.name!r}")
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if settings.vnet_header else 0)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name, flags))
        configure(settings.name, settings)
    except BaseException:
        os.close(fd)
        raise
    return fd


def enable_offloads(fd: int, flags: int = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) -> None:
    """Let the container's kernel hand this TAP fd's reader frames it has not finished: TCP and
    UDP checksums left partial (the virtio-net header says NEEDS_CSUM) and, with TSO, TCP
    segments beyond the MTU (up to 64 KiB of IP datagram). Its kernel then skips computing a
    checksum over every byte sent and copying each segment into one linear buffer (the device
    takes scatter-gather), which it otherwise does for the reader. Only for a reader that
    handles such frames (needs a VNET_HEADER device). Any process holding the fd may do this;
    OSError if the kernel refuses."""
    fcntl.ioctl(fd, TUNSETOFFLOAD, flags)


def has_vnet_header(fd: int) -> bool:
    """Whether frames on this TAP fd carry a VNET_HEADER-byte virtio-net header (False for
    anything that is not a TAP device)."""
    try:
        ifreq = fcntl.ioctl(fd, TUNGETIFF, bytes(40))  # struct ifreq
    except OSError:
        return False
    (flags,) = struct.unpack_from("H", ifreq, IFNAMSIZ)
    return bool(flags & IFF_VNET_HDR)


# --- from outside: join a process's namespaces in a child ---------------------------------------


def _setns(fd: int, nstype: int) -> None:
    # Python 3.11 has no os.setns; ctypes is imported here, in the short-lived child only, so
    # the long-running caller does not pay for it.
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    if libc.setns(fd, nstype) == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"setns({nstype:#x}): {os.strerror(code)}")


def _same_namespace(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _child(user_ns: int, net_ns: int, channel: socket.socket, settings: TapSettings) -> None:
    """In the forked child: join, create, send the fd (or the error) and exit. Never returns."""
    status = 1
    try:
        try:
            own_user = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            if not _same_namespace(own_user, user_ns):
                _setns(user_ns, CLONE_NEWUSER)  # for CAP_NET_ADMIN over the target netns
            _setns(net_ns, CLONE_NEWNET)
            tap = create_tap(settings)
            socket.send_fds(channel, [b"ok"], [tap])
            status = 0
        except OSError as exc:
            channel.send(f"error {exc.errno or errno.EIO} {exc.strerror or exc}".encode())
        except BaseException as exc:  # reported to the parent; the child exits either way
            channel.send(f"error {errno.EIO} {exc!r}".encode())
    finally:
        os._exit(status)


def open_tap_in(pid: int, settings: TapSettings | None = None) -> int:
    """Create and configure the TAP device in the network namespace of process `pid` (joining
    its user namespace first, when it differs from ours) and return the fd, usable here.

    The caller must be allowed to join those namespaces (same user as the namespace owner).
    Raises OSError naming what failed.
    """
    settings = settings or TapSettings()
    flags = os.O_RDONLY | os.O_CLOEXEC
    user_ns = os.open(f"/proc/{pid}/ns/user", flags)
    try:
        net_ns = os.open(f"/proc/{pid}/ns/net", flags)
        try:
            return _open_tap_through(pid, user_ns, net_ns, settings)
        finally:
            os.close(net_ns)
    finally:
        os.close(user_ns)


def _open_tap_through(pid: int, user_ns: int, net_ns: int, settings: TapSettings) -> int:
    own_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _same_namespace(own_net, net_ns):  # as root, this would reconfigure the host
            raise OSError(errno.EINVAL, f"process {pid} is in this process's network namespace")
    finally:
        os.close(own_net)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        child = os.fork()
        if child == 0:
            ours.close()
            _child(user_ns, net_ns, theirs, settings)
        theirs.close()
        try:
            message, fds, _flags, _address = socket.recv_fds(ours, 1024, 1)
        finally:
            os.waitpid(child, 0)
    finally:
        ours.close()
        theirs.close()
    if fds and message == b"ok":
        return fds[0]
    for fd in fds:
        os.close(fd)
    parts = message.decode(errors="replace").split(" ", 2)
    if len(parts) == 3 and parts[0] == "error" and parts[1].isdigit():
        what = f"creating the TAP device in process {pid}'s network namespace: {parts[2]}"
        raise OSError(int(parts[1]), what)
    raise OSError(errno.EIO, f"creating the TAP device in process {pid}'s network namespace failed")
