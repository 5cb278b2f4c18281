"""Attaching to a detached container: the frame protocol of the monitor's attach socket
(pure), detach keys (pure), and the client `rl attach` / `rl start -a` run.

Frames are `kind (1 byte) + length (4 bytes, big endian) + payload`, both ways:
client -> monitor: HELLO (JSON {"stdin": bool}) first, then STDIN data, STDIN_EOF, RESIZE
(a struct winsize); monitor -> client: STDOUT, STDERR (with a tty everything is STDOUT) and,
when the container ends, EXIT (the exit code as text, empty when unknown) before closing.
"""

from __future__ import annotations

import os
import struct

from rootless.errors import RlError

# The monitor's lean watcher imports this module: `typing` (~1.6 MB per process) stays out.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

HELLO, STDIN, STDIN_EOF, RESIZE, STDOUT, STDERR, EXIT = range(1, 8)
_HEADER = struct.Struct(">BI")
MAX_FRAME = 1 << 20
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


class FrameDecoder:
    """Feed bytes as they arrive; iterate the complete frames. A frame longer than
    MAX_FRAME means the peer is not speaking this protocol: ValueError."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ValueError(f"attach frame of {length} bytes")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            yield kind, payload

    def pending(self) -> bytes:
        """The start of a frame not complete yet (the monitor carries it across an exec)."""
        return bytes(self._buffer)

    def restore(self, data: bytes) -> None:
        self._buffer[:0] = data


def parse_detach_keys(text: str) -> bytes:
    """podman's --detach-keys: comma-separated `ctrl-X` (X in a-z @ [ \\ ] ^ _) or single
    characters; "" disables detaching."""
    if text == "":
        return b""
    keys = bytearray()
    for part in text.split(","):
        if len(part) == 1:
            keys.append(ord(part))
        elif part.startswith("ctrl-") and len(part) == 6:
            char = part[5]
            if "a" <= char <= "z":
                keys.append(ord(char) - ord("a") + 1)
            elif char in "@[\\]^_":
                keys.append(ord(char) - ord("@"))
            else:
                raise RlError(f'invalid detach keys "{text}": {part} is not a control key')
        else:
            raise RlError(
                f'invalid detach keys "{text}": use a comma-separated list like ctrl-p,ctrl-q'
            )
    return bytes(keys)


class DetachDetector:
    """Watches the stdin stream for the detach sequence. Bytes that might start it are held
    back until it is clear they don't (then they pass through, as podman does)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass to the container, whether the user detached)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            self._held += bytes([byte])
            if self.keys.startswith(self._held):
                if self._held == self.keys:
                    self._held = b""
                    return bytes(out), True
                continue
            # Not the sequence after all: pass on what was held, but the last byte may
            # begin it anew.
            last = self._held[-1:]
            out += self._held[:-1]
            if self.keys.startswith(last):
                self._held = last
            else:
                out += last
                self._held = b""
        return bytes(out), False


class Detached(Exception):
    """The user typed the detach keys."""


def connect(socket_path: str, *, stdin: bool) -> socket.socket:
    """Connect to a monitor's attach socket and say hello."""
    import json
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path)
        sock.sendall(encode_frame(HELLO, json.dumps({"stdin": stdin}).encode()))
    except OSError as exc:
        sock.close()
        raise RlError(
            f"cannot attach: no monitor answers for this container ({exc.strerror}); a "
            "container run in the foreground of another rl cannot be attached to"
        ) from exc
    return sock


def attach(socket_path: str, *, stdin: bool, tty: bool, detach_keys: bytes) -> int | None:
    """Relay our stdio to the container until it exits (its exit code, None when unknown)
    or the user detaches (raises Detached)."""
    return relay(connect(socket_path, stdin=stdin), stdin=stdin, tty=tty, detach_keys=detach_keys)


def relay(sock: socket.socket, *, stdin: bool, tty: bool, detach_keys: bytes) -> int | None:
    """The attach session on a connected socket (closed at the end)."""
    import selectors
    import signal

    from rootless.runtime import terminal

    decoder = FrameDecoder()
    detector = DetachDetector(detach_keys)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    stdin_fd = 0 if stdin else -1
    if stdin_fd >= 0:
        sel.register(stdin_fd, selectors.EVENT_READ)
    use_raw = tty and stdin_fd >= 0 and os.isatty(stdin_fd)

    def resize(_sig: int = 0, _frame: object = None) -> None:
        size = terminal.window_size()
        if size is not None:
            try:
                sock.sendall(encode_frame(RESIZE, size))
            except OSError:
                pass

    old_winch = signal.signal(signal.SIGWINCH, resize) if tty else None
    if tty:
        resize()
    try:
        with terminal.raw_mode(stdin_fd) if use_raw else _nothing():
            while True:
                for key, _ in sel.select():
                    if key.fileobj is sock:
                        data = sock.recv(65536)
                        if not data:
                            return None
                        for kind, payload in decoder.feed(data):
                            if kind == STDOUT:
                                _write_all(1, payload)
                            elif kind == STDERR:
                                _write_all(2, payload)
                            elif kind == EXIT:
                                return int(payload) if payload else None
                    else:
                        data = os.read(stdin_fd, 65536)
                        if not data:
                            sel.unregister(stdin_fd)
                            sock.sendall(encode_frame(STDIN_EOF))
                            continue
                        data, detached = detector.feed(data)
                        if data:
                            sock.sendall(encode_frame(STDIN, data))
                        if detached:
                            raise Detached()
    finally:
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
        sel.close()
        sock.close()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
