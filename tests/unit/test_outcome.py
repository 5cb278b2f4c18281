"""rootless.outcome: a forked child's result, pickled through a pipe."""

from __future__ import annotations

import os
import threading

import pytest

from rootless import outcome
from rootless.errors import RlError


def test_a_value_and_an_exception_come_back() -> None:
    assert outcome.unpack(outcome.capture(lambda a, b: a + b, 2, 40), "died") == 42
    with pytest.raises(RlError, match="no such image"):
        outcome.unpack(outcome.capture(_raise, RlError("no such image")), "died")


def test_an_exception_that_cannot_be_pickled_comes_back_as_an_rl_error() -> None:
    class Local(Exception):  # a local class cannot be pickled
        pass

    with pytest.raises(RlError, match="Local: kept by name"):
        outcome.unpack(outcome.capture(_raise, Local("kept by name")), "died")


def test_nothing_sent_means_the_child_died() -> None:
    with pytest.raises(RlError, match="the helper died"):
        outcome.unpack(b"", "the helper died")


def test_through_a_pipe_larger_than_its_buffer() -> None:
    value = os.urandom(1 << 20)  # > the pipe's 64 KiB: the writer blocks until read
    r, w = os.pipe()

    def send() -> None:
        outcome.write_all(w, outcome.capture(bytes, value))
        os.close(w)

    writer = threading.Thread(target=send)
    writer.start()
    try:
        assert outcome.unpack(outcome.read_all(r), "died") == value
    finally:
        writer.join()
        os.close(r)


def _raise(exc: BaseException) -> None:
    raise exc
