"""Serving the mounted device: one request at a time, the process asleep in read(2) between them.

pyfuse3's loop waits for each request in trio's epoll (register, wait, reschedule) and then
reads the device: three system calls and a trip through the scheduler per request, the largest
part of a small request's cost. Every handler here is synchronous (nothing awaits), so the loop
has nothing to overlap and may just block in read(2), as fuse-overlayfs's threads do: pyfuse3
asks `_wait_fuse_readable` before each read, and here the answer is "go ahead" at once.

Between requests the loop polls the device for a few tens of microseconds before it blocks: a
caller like tar sends its next request that soon after our reply, and a process that went to
sleep has to be woken (on a virtual machine with idle CPUs, an interrupt to another CPU and a
halt to leave: the larger part of a request's round trip; `tar x` of a Debian rootfs onto
tmpfs on an idle machine took 2.5 s instead of 4.3). A caller woken on the same CPU preempts
the poll; and polling is adaptive (`SpinPolicy`): a poll that waited in vain turns it off for
the next requests, so a slow trickle of requests costs little CPU.

Why not longer: with caller and helper on two CPUs the next request often comes 30-60 us after
our reply (the caller is woken by an interrupt first), and a 100 us poll catches those (10k cold
stats outside bench/fs.py: 0.36-0.45 s instead of 0.62-0.75). In bench/fs.py's runs it gained
nothing over 20 us (0.39-0.45 s against 0.39 s while fuse-overlayfs took 0.75-0.94 s), and on a
loaded machine it cost CPU (0.40 s of helper CPU instead of 0.13-0.16 s, 10k cold stats): a poll
that finds the request after 30 us has burnt those 30 us, where sleeping costs ~10-15 us.

A stop signal (SIGTERM, SIGINT, SIGHUP) sets a flag and interrupts the read (EINTR; Python's
handlers are installed without SA_RESTART), and the loop ends at its next wait. A signal that
lands between the check and the read would leave the read blocked, so after the first one an
interval timer interrupts it again until the loop has ended. Unmounting ends the read too
(ENODEV), and with it the loop.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
RETRY_INTERVAL = 0.05  # seconds between interruptions of a read that missed the stop signal
SPIN_NS = 20_000  # how long to poll for the next request before blocking in read(2)
SPIN_PAUSE = 64  # requests served without polling after a poll that found nothing


class SpinPolicy:
    """Whether to poll for the next request before blocking (sans-IO: the caller polls).

    Polling pays while requests follow each other closely; once a poll has waited `SPIN_NS`
    in vain, the next `pause` waits block at once, then polling is tried again."""

    def __init__(self, pause: int = SPIN_PAUSE) -> None:
        self.pause = pause
        self._skip = 0

    def should_spin(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def spun(self, found: bool) -> None:
        if not found:
            self._skip = self.pause


def fuse_device_fd() -> int | None:
    """The descriptor of /dev/fuse (pyfuse3 keeps its own to itself), or None."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                return int(name)
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return None


def spin_until_readable(ready: Callable[[], bool], spin_ns: int = SPIN_NS) -> bool:
    """Poll `ready` for up to `spin_ns`; whether it became so in time.

    No sched_yield between polls: it would hand the rest of the time slice to whatever else
    runs on this CPU, and the request would wait for that. A caller woken by our reply on this
    CPU preempts the poll anyway (and sends the next request before it lets it run again)."""
    deadline = time.monotonic_ns() + spin_ns
    while time.monotonic_ns() < deadline:
        if ready():
            return True
    return False


class _Session:
    def __init__(self, device: int | None) -> None:
        self.stopped = False
        self._policy = SpinPolicy()
        self._ready: Callable[[], bool] | None = None
        if device is not None:
            poller = select.poll()
            poller.register(device, select.POLLIN)
            self._ready = lambda: bool(poller.poll(0))

    async def wait_readable(self) -> bool:
        if self.stopped:
            return False  # ends pyfuse3's loop
        ready = self._ready
        if ready is not None and self._policy.should_spin() and not ready():
            self._policy.spun(spin_until_readable(ready))
        return True

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
    session = _Session(fuse_device_fd())
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
