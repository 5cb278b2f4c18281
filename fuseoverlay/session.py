"""Serving the mounted device: one request at a time, the process asleep in read(2) between them.

pyfuse3's loop waits for each request in trio's epoll (register, wait, reschedule) and then
reads the device: three system calls and a trip through the scheduler per request, the largest
part of a small request's cost. Every handler here is synchronous (nothing awaits), so the loop
has nothing to overlap and may just block in read(2), as fuse-overlayfs's threads do: pyfuse3
asks `_wait_fuse_readable` before each read, and here the answer is "go ahead" at once.

A stop signal (SIGTERM, SIGINT, SIGHUP) sets a flag and interrupts the read (EINTR; Python's
handlers are installed without SA_RESTART), and the loop ends at its next wait. A signal that
lands between the check and the read would leave the read blocked, so after the first one an
interval timer interrupts it again until the loop has ended. Unmounting ends the read too
(ENODEV), and with it the loop.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
RETRY_INTERVAL = 0.05  # seconds between interruptions of a read that missed the stop signal


class _Session:
    def __init__(self) -> None:
        self.stopped = False

    async def wait_readable(self) -> bool:
        return not self.stopped  # False ends pyfuse3's loop

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopped:
            self.stopped = True
            signal.setitimer(signal.ITIMER_REAL, RETRY_INTERVAL, RETRY_INTERVAL)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGALRM: only there to interrupt the read (see the module doc)."""


def serve(*, stop_signals: bool = True) -> bool:
    """Run pyfuse3's loop for the initialised session until unmount (or a stop signal, with
    `stop_signals`). Whether a stop signal ended it."""
    import pyfuse3
    import trio

    if not hasattr(pyfuse3, "_wait_fuse_readable"):  # another pyfuse3: its own loop
        return _serve_with_trio(stop_signals=stop_signals)
    session = _Session()
    original = pyfuse3._wait_fuse_readable
    # Looked up by name at each call from pyfuse3's compiled loop.
    pyfuse3._wait_fuse_readable = session.wait_readable
    previous: dict[signal.Signals, Any] = {}
    if stop_signals:
        previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _ignore)
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, session.on_stop_signal)
    try:
        # One task: a second one could only wait for the device while the first is busy, and
        # the first never yields.
        trio.run(pyfuse3.main, 1, 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        pyfuse3._wait_fuse_readable = original
    return session.stopped


def _serve_with_trio(*, stop_signals: bool) -> bool:
    import pyfuse3
    import trio

    stopped = False

    async def run() -> None:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                nonlocal stopped
                with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                    async for _ in signals:
                        stopped = True
                        pyfuse3.terminate()
                        return

            if stop_signals:
                nursery.start_soon(watch_signals)
            await pyfuse3.main(min_tasks=1, max_tasks=1)
            nursery.cancel_scope.cancel()

    trio.run(run)
    return stopped
