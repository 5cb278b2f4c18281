"""A forked child's result for its parent, through a pipe: what `fn(*args)` returned, or the
exception it raised, pickled.

rl does its user-namespace work in forked children (rootless.userns, rootless.runtime.join, the
store's unpacking, `rl pull`'s workers); each sends back its outcome this one way, so that an
RlError raised inside reaches the user unchanged. pickle is imported when used: the
per-container monitor imports this module's users but never needs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rootless.errors import RlError


def capture(fn: Callable[..., Any], *args: Any) -> bytes:
    """In the child: run `fn(*args)` and pickle (True, value) or (False, exception); an
    exception that cannot be pickled comes back as an RlError naming it."""
    import pickle

    try:
        return pickle.dumps((True, fn(*args)))
    except BaseException as exc:  # everything goes back to the parent
        try:
            return pickle.dumps((False, exc))
        except Exception:
            return pickle.dumps((False, RlError(f"{type(exc).__name__}: {exc}")))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int) -> bytes:
    """Everything until the writer closed its end (blocking)."""
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def unpack(data: bytes, died: str) -> Any:
    """In the parent: the child's return value, or its exception raised here; RlError(`died`)
    when it sent nothing (it died first)."""
    import pickle

    if not data:
        raise RlError(died)
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value
