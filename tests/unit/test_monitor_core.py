"""The monitor's pure pieces: restart policies and the attach protocol."""

from __future__ import annotations

import pytest

from rootless.errors import RlError
from rootless.monitor.attach import (
    EXIT,
    HELLO,
    MAX_FRAME,
    STDOUT,
    DetachDetector,
    FrameDecoder,
    encode_frame,
    parse_detach_keys,
)
from rootless.monitor.restart import (
    MAX_DELAY,
    RestartPolicy,
    parse_restart,
    restart_delay,
    should_restart,
)


def test_parse_restart() -> None:
    assert parse_restart("") == RestartPolicy("no")
    assert parse_restart("always") == RestartPolicy("always")
    assert parse_restart("on-failure") == RestartPolicy("on-failure", 0)
    assert parse_restart("on-failure:3") == RestartPolicy("on-failure", 3)
    assert str(parse_restart("on-failure:3")) == "on-failure:3"
    assert str(parse_restart("unless-stopped")) == "unless-stopped"
    for bad, message in (
        ("sometimes", "invalid restart policy"),
        ("always:3", "does not take a retry count"),
        ("on-failure:x", "invalid retry count"),
    ):
        with pytest.raises(RlError, match=message):
            parse_restart(bad)


@pytest.mark.parametrize(
    ("policy", "code", "count", "stopped", "expected"),
    [
        ("no", 1, 0, False, False),
        ("always", 0, 0, False, True),
        ("always", 1, 50, False, True),
        ("always", 1, 0, True, False),  # never after rl stop
        ("unless-stopped", 0, 3, False, True),
        ("unless-stopped", 137, 0, True, False),
        ("on-failure", 0, 0, False, False),  # success ends it
        ("on-failure", 1, 99, False, True),  # no limit
        ("on-failure:3", 1, 2, False, True),
        ("on-failure:3", 1, 3, False, False),  # exactly three restarts
        ("on-failure:3", None, 0, False, True),  # unknown exit code counts as a failure
    ],
)
def test_should_restart(
    policy: str, code: int | None, count: int, stopped: bool, expected: bool
) -> None:
    assert should_restart(parse_restart(policy), code, count, stopped) is expected


def test_restart_delay_backs_off_to_a_minute() -> None:
    delays = [restart_delay(n) for n in range(12)]
    assert delays[0] == pytest.approx(0.1)
    assert delays[1] == pytest.approx(0.2)
    assert delays == sorted(delays)
    assert delays[-1] == MAX_DELAY


def test_frames_round_trip_in_any_chunking() -> None:
    stream = encode_frame(HELLO, b'{"stdin": true}') + encode_frame(STDOUT, b"x" * 70000)
    stream += encode_frame(EXIT, b"3")
    for size in (1, 7, 4096, len(stream)):
        decoder = FrameDecoder()
        frames = []
        for i in range(0, len(stream), size):
            frames += list(decoder.feed(stream[i : i + size]))
        assert frames == [(HELLO, b'{"stdin": true}'), (STDOUT, b"x" * 70000), (EXIT, b"3")]


def test_an_oversized_frame_is_refused() -> None:
    header = encode_frame(STDOUT, b"")[:1] + (MAX_FRAME + 1).to_bytes(4, "big")
    with pytest.raises(ValueError):
        list(FrameDecoder().feed(header))


def test_parse_detach_keys() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    assert parse_detach_keys("ctrl-@,ctrl-_") == b"\x00\x1f"
    assert parse_detach_keys("") == b""
    with pytest.raises(RlError, match="invalid detach keys"):
        parse_detach_keys("ctrl-1")
    with pytest.raises(RlError, match="invalid detach keys"):
        parse_detach_keys("alt-q")


def test_detach_detector() -> None:
    keys = b"\x10\x11"
    detector = DetachDetector(keys)
    assert detector.feed(b"ls\n") == (b"ls\n", False)
    assert detector.feed(b"a\x10") == (b"a", False)  # maybe the start: held back
    assert detector.feed(b"\x11") == (b"", True)
    # A false start passes through, and a repeated first key may still begin the sequence.
    detector = DetachDetector(keys)
    assert detector.feed(b"\x10b") == (b"\x10b", False)
    assert detector.feed(b"\x10\x10") == (b"\x10", False)
    assert detector.feed(b"\x11rest") == (b"", True)
    assert DetachDetector(b"").feed(b"\x10\x11") == (b"\x10\x11", False)
