"""A container's helpers, carried across the monitor's exec to its watcher.

The fuse helper is the monitor's own child, and an exec keeps the pid, so after it it still
is: what crosses is its pid and the fd the monitor talks to it through.

- The fuse driver's helper (rootless.storage.fuse: a fuseoverlay process serving the
  container's root file system). It ends by itself once the container's mount namespace is
  gone; its parent reaps it then, or kills it when it does not end (`release_fuse`), and reads
  why it failed, if it did, from the socket (`E<why>`).
- `-p` port publishers (netns.ports.PortPublisher): the host's listening sockets, the
  container's user and network namespaces (fds) and the dialer's pool of unconnected sockets
  made in that network namespace (no process: the makers that fill the pool are short-lived,
  and none is under way before the publisher is registered). `adopt_ports` rebuilds the
  publisher from them.

Words: `fuse=PID:FD`, `ports.dialer=PID:USERFD:NETFD[/PROTO:FD,...]...`,
`ports.sockets=PROTO:FD:PORT,...`.
Imports: os, select, signal, socket only (the watcher's budget, see rootless.monitor.watch);
netns.ports only when there are ports (its own imports are as lean).
"""

from __future__ import annotations

import os
import select
import signal
import socket

# How long the watcher waits for the fuse helper to end after the container did, as
# rootless.storage.fuse.FuseRootfs.release (STOP_TIMEOUT) does.
FUSE_STOP_TIMEOUT = 10.0
FUSE_START_FAILED = 3  # rootless.storage.fuse.START_FAILED: the keeper reported why

TYPE_CHECKING = False  # not typing's: see the module docstring
if TYPE_CHECKING:
    from netns.ports import PortPublisher


def keep(fd: int) -> int:
    """`fd`, made inheritable: it crosses the next exec."""
    if fd >= 0:
        os.set_inheritable(fd, True)
    return fd


def adopt_fd(fd: int) -> int:
    """`fd`, close-on-exec again (not for the healthchecks the watcher spawns)."""
    os.set_inheritable(fd, False)
    return fd


# --- the fuse driver's helper ---------------------------------------------------------------


def fuse_word(helper: tuple[int, int]) -> str:
    pid, fd = helper
    return f"fuse={pid}:{keep(fd)}"


def parse_fuse(value: str) -> tuple[int, int]:
    pid, _, fd = value.partition(":")
    return int(pid), adopt_fd(int(fd))


def release_fuse(helper: tuple[int, int], timeout: float = FUSE_STOP_TIMEOUT) -> str | None:
    """After the container: reap the helper (pid, socket fd), killing it when it does not end
    within `timeout` (something still holds the container's mount namespace). How it died
    when that was not a normal end, else None; the socket is closed."""
    pid, fd = helper
    sock = socket.socket(fileno=fd)
    try:
        try:
            sock.shutdown(socket.SHUT_WR)  # end of file for a helper still waiting for a device
        except OSError:
            pass
        status = _wait(pid, timeout)
        if status is None:
            return None  # killed here, or not ours to reap: nothing to tell
        message = ""
        sock.setblocking(False)
        try:
            message = sock.recv(4096).decode(errors="replace")[1:]  # "E<why>" from a failure
        except OSError:
            pass
        code = os.waitstatus_to_exitcode(status)
        if code in (0, FUSE_START_FAILED) and not message:
            return None
        if message:
            return message
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"
    finally:
        sock.close()


def _wait(pid: int, timeout: float) -> int | None:
    """The wait status of child `pid` once it ended, or None after killing it (timeout) or
    when it is not our child any more."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    try:
        if pidfd >= 0:
            ready, _, _ = select.select([pidfd], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
        return os.waitpid(pid, 0)[1]
    except (ChildProcessError, ProcessLookupError):
        return None
    finally:
        if pidfd >= 0:
            os.close(pidfd)


# --- port publishers ------------------------------------------------------------------------


def port_words(publisher: PortPublisher) -> list[str]:
    """The words for a publisher not yet registered (no connections yet)."""
    dialer = publisher.dialer
    pools = "".join(
        f"/{protocol}:" + ",".join(str(keep(sock.fileno())) for sock in socks)
        for protocol, socks in dialer.pooled().items()
    )
    sockets = publisher.host_sockets()
    user, net = (keep(fd) for fd in dialer.namespaces)
    return [
        f"ports.dialer={dialer.target}:{user}:{net}{pools}",
        "ports.sockets="
        + ",".join(f"{protocol}:{keep(sock.fileno())}:{port}" for protocol, sock, port in sockets),
    ]


def port_word_fds(words: list[str]) -> list[int]:
    """The fds that `port_words` made inheritable (to pass to a child, in tests)."""
    values = dict(word.split("=", 1) for word in words)
    dialer = values["ports.dialer"].split("/")
    fds = [int(fd) for fd in dialer[0].split(":")[1:]]
    for pool in dialer[1:]:
        fds += [int(fd) for fd in pool.partition(":")[2].split(",") if fd]
    fds += [int(item.split(":")[1]) for item in values["ports.sockets"].split(",") if item]
    return fds


def adopt_ports(values: dict[str, str]) -> PortPublisher:
    """The publisher of `port_words`, in the process after the exec (not yet registered)."""
    from netns.ports import NamespaceDialer, PortPublisher

    namespaces, *pools = values["ports.dialer"].split("/")
    target, user, net = (int(part) for part in namespaces.split(":"))
    pooled: dict[str, list[socket.socket]] = {}
    for pool in pools:
        protocol, _, fds = pool.partition(":")
        pooled[protocol] = [socket.socket(fileno=adopt_fd(int(fd))) for fd in fds.split(",") if fd]
    dialer = NamespaceDialer.adopt(target, (adopt_fd(user), adopt_fd(net)), pooled)
    sockets = []
    for item in filter(None, values.get("ports.sockets", "").split(",")):
        protocol, number, port = item.split(":")
        sockets.append((protocol, socket.socket(fileno=adopt_fd(int(number))), int(port)))
    return PortPublisher.adopt(sockets, dialer)
