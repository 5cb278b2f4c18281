"""Foreground runs that keep a log: the container's stdout and stderr are pipes to rl, which
copies each to its own stdout and stderr and, chunk by chunk, into the log.

Plain os.read/os.write with poll (no trio, no selectors' classes): this runs on every
`rl run` that logs, whose start-up time is benchmarked.

What the container sees stays what it saw when it wrote to rl's stdio itself:
- back-pressure: rl writes to its own stdout/stderr blocking (their flags are shared with
  the shell, so they are never made non-blocking here), and reads on only after that;
- a closed reader (`rl run IMG yes | head -1`): on EPIPE rl closes its end of that pipe, so
  the container's next write gets SIGPIPE/EPIPE as before;
- once the container has ended (`exit_fd`, the keeper's pidfd, is readable) every process
  of its pid namespace is gone, so what is left in the pipes is all there will be: rl drains
  that and stops, even if a stray copy of a write end (never expected) were still open.
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence
from typing import TYPE_CHECKING

READ_SIZE = 1 << 16  # a pipe's default capacity: one read empties it

if TYPE_CHECKING:  # a class built at import would cost ~0.3 ms of every `rl run`
    from typing import Protocol

    class OutputLog(Protocol):
        def write(self, stream: str, data: bytes) -> None: ...


def copy_outputs(
    outputs: Sequence[tuple[int, int, str]], exit_fd: int, log: OutputLog | None
) -> None:
    """Copy each (source, destination, stream name) until every source ended or the container
    did. Closes the sources."""
    routes = {src: (dst, stream) for src, dst, stream in outputs}
    poller = select.poll()
    for src in routes:
        os.set_blocking(src, False)
        poller.register(src, select.POLLIN)
    poller.register(exit_fd, select.POLLIN)
    try:
        while routes:
            ended = False
            for fd, _events in poller.poll():
                if fd == exit_fd:
                    ended = True
                elif fd in routes and not _copy(fd, *routes[fd], log, drain=False):
                    poller.unregister(fd)
                    os.close(fd)
                    del routes[fd]
            if ended:
                for fd, (dst, stream) in routes.items():
                    _copy(fd, dst, stream, log, drain=True)
                return
    finally:
        for src in routes:
            os.close(src)


def _copy(src: int, dst: int, stream: str, log: OutputLog | None, *, drain: bool) -> bool:
    """One read (all that is there with `drain`); False once the source ended or nobody
    reads the destination any more."""
    while True:
        try:
            data = os.read(src, READ_SIZE)
        except BlockingIOError:
            return True
        if not data:
            return False
        if log is not None:
            log.write(stream, data)
        if not _write_all(dst, data):
            return False
        if not drain:
            return True


def _write_all(fd: int, data: bytes) -> bool:
    """False on EPIPE. Other errors (rl's stdout closed, a full disk) drop the data, as the
    container's own write would have failed, and the container goes on."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # someone else made the shared file description non-blocking
            select.select([], [fd], [])
        except BrokenPipeError:
            return False
        except OSError:
            return True
    return True
