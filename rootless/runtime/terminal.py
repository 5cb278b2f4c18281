"""`-t`: the container's pseudo-terminal and the relay between it and rl's own terminal.

Container side (`attach_console`, after pivot_root): open the container's own devpts
instance's ptmx, make the slave the controlling terminal of the session and fds 0/1/2, bind it
over /dev/console, and hand the master to rl over a Unix socket (SCM_RIGHTS).
rl side (`relay`): copy bytes both ways with `selectors`, not trio: `import trio` costs ~80 ms
and `rl run` start-up time is a benchmark target (podman takes ~105 ms for a whole run).
"""

from __future__ import annotations

import _socket  # the C module: `socket` itself drags in enum (a few ms) for nothing here
import errno
import fcntl
import os
import select
import selectors
import struct
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rootless import syscalls as sc

# <asm-generic/ioctls.h> (x86_64); the termios module lacks them.
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
_SCM_RIGHTS = 1
_SOL_SOCKET = 1
VEOF_BYTE = b"\x04"  # ^D: what a terminal user types to end the input
_CHUNK = 1 << 16


def socketpair() -> tuple[_socket.socket, _socket.socket]:
    """(rl's end, the container's end), both close-on-exec."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    return a, b


def send_fd(sock: _socket.socket, fd: int) -> None:
    sock.sendmsg([b"T"], [(_SOL_SOCKET, _SCM_RIGHTS, struct.pack("i", fd))])


def recv_fd(sock: _socket.socket) -> int | None:
    _, ancdata, _, _ = sock.recvmsg(1, _socket.CMSG_SPACE(4))
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS and len(data) >= 4:
            fd: int = struct.unpack("i", data[:4])[0]
            os.set_inheritable(fd, False)
            return fd
    return None


def window_size(fds: tuple[int, ...] = (0, 1, 2)) -> bytes | None:
    """The packed winsize of the first terminal among `fds`, as TIOCSWINSZ takes it."""
    for fd in fds:
        try:
            return fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))
        except OSError:
            continue
    return None


def copy_window_size(master: int) -> None:
    """rl's terminal size onto the container's (at start and on SIGWINCH)."""
    size = window_size()
    if size:
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        except OSError:
            pass


def pack_window_size(rows: int, columns: int) -> bytes:
    return struct.pack("HHHH", rows, columns, 0, 0)


def attach_console(sock: _socket.socket, winsize: bytes | None) -> None:
    """In the container, after pivot_root, as session leader: the pty becomes fds 0-2."""
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]
    slave_path = f"/dev/pts/{number}"
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    if winsize:
        fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    _bind_console(slave_path)
    send_fd(sock, master)
    os.close(master)
    sock.close()


def _bind_console(slave_path: str) -> None:
    try:
        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        sc.mount(slave_path, "/dev/console", None, sc.MS_BIND)
    except OSError:
        pass  # no /dev of our own (or read-only): /dev/console is a nicety, as in crun


@contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """rl's terminal in raw mode (keys go to the container as typed), restored on every exit."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])
        except BrokenPipeError:
            return  # nobody reads rl's output any more; the container keeps its terminal


def relay(
    master: int,
    exit_fd: int,
    stdin_fd: int | None,
    stdout_fd: int = 1,
    log: Callable[[bytes], None] | None = None,
) -> None:
    """Copy master -> stdout and stdin -> master until `exit_fd` (a pidfd) says the container
    ended, then drain what it wrote last. stdin EOF becomes ^D on the container's terminal.
    `log` gets the container's output too (a foreground run's log)."""
    os.set_blocking(master, False)
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ)
    sel.register(exit_fd, selectors.EVENT_READ)
    if stdin_fd is not None:
        sel.register(stdin_fd, selectors.EVENT_READ)
    pending = b""  # typed input the container's terminal has not taken yet
    master_open = True
    try:
        while True:
            for key, mask in sel.select():
                fd = key.fd
                if fd == exit_fd:
                    _drain(master, stdout_fd, log)
                    return
                if fd == master:
                    if mask & selectors.EVENT_READ and not _copy_output(master, stdout_fd, log):
                        sel.unregister(master)
                        master_open = False
                        continue
                    if mask & selectors.EVENT_WRITE and pending:
                        pending = pending[_write_some(master, pending) :]
                elif fd == stdin_fd:
                    data = os.read(stdin_fd, _CHUNK)
                    if not data:
                        data = VEOF_BYTE
                        sel.unregister(stdin_fd)
                        stdin_fd = None
                    pending += data
                if master_open:
                    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
                    sel.modify(master, want)
                if stdin_fd is not None:
                    # Back-pressure: read more input only once the terminal took the last.
                    registered = stdin_fd in sel.get_map()
                    if pending and registered:
                        sel.unregister(stdin_fd)
                    elif not pending and not registered:
                        sel.register(stdin_fd, selectors.EVENT_READ)
    finally:
        sel.close()


def _write_some(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno == errno.EIO:
            return len(data)  # nobody left to read it
        raise


def _copy_output(master: int, stdout_fd: int, log: Callable[[bytes], None] | None) -> bool:
    """False once the terminal has no slave left (EIO)."""
    try:
        data = os.read(master, _CHUNK)
    except BlockingIOError:
        return True
    except OSError as exc:
        if exc.errno == errno.EIO:
            return False
        raise
    if not data:
        return False
    if log is not None:
        log(data)
    _write_all(stdout_fd, data)
    return True


def _drain(master: int, stdout_fd: int, log: Callable[[bytes], None] | None) -> None:
    while True:
        try:
            data = os.read(master, _CHUNK)
        except OSError:  # EAGAIN: nothing more; EIO: no slave left
            return
        if not data:
            return
        if log is not None:
            log(data)
        _write_all(stdout_fd, data)
