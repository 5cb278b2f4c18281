"""Polling for the next request before blocking: the adaptive policy and the poll itself."""

from __future__ import annotations

import os
import time

from fuseoverlay.session import SpinPolicy, fuse_device_fd, spin_until_readable


def test_a_poll_that_found_nothing_pauses_polling_then_it_is_tried_again() -> None:
    policy = SpinPolicy(pause=3)
    assert policy.should_spin()
    policy.spun(True)  # found the next request: keep polling
    assert policy.should_spin()
    policy.spun(False)
    assert [policy.should_spin() for _ in range(4)] == [False, False, False, True]


def test_the_poll_sees_a_descriptor_become_readable_and_gives_up_in_time() -> None:
    read_end, write_end = os.pipe()
    try:
        import select

        poller = select.poll()
        poller.register(read_end, select.POLLIN)

        def ready() -> bool:
            return bool(poller.poll(0))

        start = time.monotonic()
        assert not spin_until_readable(ready, spin_ns=2_000_000)
        assert time.monotonic() - start >= 0.002  # it did wait, for at least the given time
        os.write(write_end, b"x")
        assert spin_until_readable(ready, spin_ns=0) is False  # no time at all: no poll
        assert spin_until_readable(ready, spin_ns=2_000_000)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_without_a_fuse_device_there_is_nothing_to_poll() -> None:
    assert fuse_device_fd() is None  # this test process has no /dev/fuse open
