"""A TCP connection's send buffer that hands out its bytes without copying them (sans-IO).

The bytes a host socket delivers (one `bytes` object per recv) are kept as they came, in a queue
of chunks, rather than appended to one bytearray: `peek` returns a segment's payload as a
memoryview into the chunk holding it, so the payload reaches the TAP device (os.writev) without
a copy in Python. A bytearray could not lend out views: it cannot be resized while one exists,
and frames waiting for the TAP outlive the next append. Only a segment that straddles two chunks
is copied (once, when it is joined). Acknowledged bytes are dropped by dropping whole chunks and
moving an offset into the first one, so nothing is moved either.
"""

from __future__ import annotations

import sys
from collections import deque


class SendBuffer:
    __slots__ = ("_chunks", "_head", "_length")

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._head = 0  # bytes of _chunks[0] already dropped
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes; `bytes` and read-only memoryviews are kept as they are (a view must be
        of memory nobody changes while it lives, as `RecvArena` hands out); anything else is
        copied here."""
        if not data:
            return
        if type(data) is not bytes and not (type(data) is memoryview and data.readonly):
            data = bytes(data)
        self._chunks.append(data)
        self._length += len(data)

    def peek(self, offset: int, size: int) -> bytes | memoryview:
        """Up to `size` bytes from `offset` (fewer at the end); a view when they lie in one
        chunk. Valid however the buffer changes later: chunks are never modified."""
        end = min(offset + size, self._length)
        if offset >= end:
            return b""
        position = offset + self._head
        pieces: list[bytes | memoryview] = []
        want = end - offset
        for chunk in self._chunks:
            if position >= len(chunk):
                position -= len(chunk)
                continue
            take = min(len(chunk) - position, want)
            if position == 0 and take == len(chunk):
                pieces.append(chunk)
            else:
                pieces.append(memoryview(chunk)[position : position + take])
            want -= take
            position = 0
            if not want:
                break
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def drop(self, count: int) -> None:
        """Forget the first `count` bytes (acknowledged)."""
        count = min(count, self._length)
        self._length -= count
        chunks = self._chunks
        head = self._head + count
        while chunks and head >= len(chunks[0]):
            head -= len(chunks.popleft())
        self._head = head if chunks else 0

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self._length = 0


class RecvArena:
    """Memory for host sockets to receive into (socket.recv_into), reused rather than allocated
    per read.

    A fresh 256 KiB `bytes` per recv that then lives until the container acknowledges it makes
    the allocator hand out new pages all the time: measured, nearly one page fault per 4 KiB
    received, the kernel time of which outweighed the copies the views save. The arena keeps up
    to `max_buffers` buffers of `size` bytes, fills them front to back across reads (and
    flows), and reuses a buffer once no view of it is left: the views `take` returns hold it (a
    memoryview keeps its object alive and counted), which CPython's reference count shows.
    When every buffer is still in use, `space` returns None and the caller reads as before.
    """

    __slots__ = ("_buffers", "_current", "_max_buffers", "_min_space", "_offset", "_size")

    def __init__(self, size: int = 256 << 10, max_buffers: int = 8, min_space: int = 16 << 10):
        self._size = size
        self._max_buffers = max_buffers
        self._min_space = min_space
        self._buffers: list[bytearray] = []
        self._current: bytearray | None = None
        self._offset = 0

    def space(self) -> memoryview | None:
        """A writable view to receive into (at least `min_space` bytes), or None. Pass the
        count received to `take` before calling this again."""
        current = self._current
        if current is not None and self._size - self._offset >= self._min_space:
            return memoryview(current)[self._offset :]
        self._current = current = None  # no reference of ours may make a buffer look used
        for buffer in self._buffers:
            # The list, the loop variable and the call's argument: nothing else holds it.
            if sys.getrefcount(buffer) <= 3:
                break
        else:
            if len(self._buffers) >= self._max_buffers:
                return None
            buffer = bytearray(self._size)
            self._buffers.append(buffer)
        self._current, self._offset = buffer, 0
        return memoryview(buffer)

    def trim(self) -> None:
        """Free the buffers no view holds (when no flow is reading: idle memory matters to
        the monitor hosting the driver)."""
        self._current = None
        self._buffers = [buffer for buffer in self._buffers if sys.getrefcount(buffer) > 3]

    def take(self, count: int) -> memoryview:
        """The `count` bytes just received into `space()`'s view, read-only; they stay as they
        are while this view (or any slice of it) lives."""
        current = self._current
        assert current is not None
        start, self._offset = self._offset, self._offset + count
        return memoryview(current)[start : self._offset].toreadonly()
