"""The k8s-file container log: conmon's format and rotation, podman's reading of it.

Reference bytes come from podman 4.3 + conmon 2.1.6 run rootless on this machine:
`podman run -d busybox sh -c 'echo a; echo b >&2; printf partial; sleep 1; echo c;
printf "x\\ny"'` wrote the ctr.log in SAMPLE.
"""

from __future__ import annotations

import calendar
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootless.cli.logs import merge, parse_tail, render
from rootless.errors import RlError
from rootless.monitor import logfile
from rootless.monitor.logfile import (
    LogEntry,
    LogReader,
    LogWriter,
    encode_entries,
    format_go_timestamp,
    format_timestamp,
    parse_go_duration,
    parse_line,
    parse_time_arg,
    parse_timestamp,
    read_entries,
    select_entries,
    split_lines,
    tail_entries,
)
from rootless.monitor.logwriter import encode_chunk, encode_entry

NS = 1_000_000_000
SAMPLE = (
    b"2026-12-02T15:30:40.145634835+00:00 stdout F a\n"
    b"2026-12-02T15:30:40.145634835+00:00 stdout P partial\n"
    b"2026-12-02T15:30:40.145801503+00:00 stderr F b\n"
    b"2026-12-02T15:30:41.147843823+00:00 stdout F c\n"
    b"2026-12-02T15:30:41.147900197+00:00 stdout F x\n"
    b"2026-12-02T15:30:41.147900197+00:00 stdout P y\n"
)
T0 = calendar.timegm((2026, 12, 2, 15, 30, 40)) * NS + 145634835


@pytest.fixture
def tz() -> Iterator[None]:
    """Local time 2.5 hours east of UTC (a POSIX TZ string: no tzdata needed)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "XST-02:30"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def texts(entries: list[LogEntry]) -> list[bytes]:
    return [e.text for e in entries]


# --- timestamps ---------------------------------------------------------------------------


def test_format_timestamp_like_conmon() -> None:
    assert format_timestamp(T0, 0) == "2026-12-02T15:30:40.145634835+00:00"
    assert format_timestamp(T0, 7200) == "2026-12-02T17:30:40.145634835+02:00"
    assert format_timestamp(T0, -(5 * 3600 + 1800)) == "2026-12-02T10:00:40.145634835-05:30"
    # Nine digits always, even for whole seconds and small fractions.
    assert format_timestamp(0, 0) == "1970-01-01T00:00:00.000000000+00:00"
    assert format_timestamp(5, 0) == "1970-01-01T00:00:00.000000005+00:00"
    # The local date may differ from the UTC one.
    assert format_timestamp(T0, 9 * 3600).startswith("2026-12-03T00:30:40")


def test_format_go_timestamp_trims_like_rfc3339nano() -> None:
    assert format_go_timestamp(T0, 0) == "2026-12-02T15:30:40.145634835Z"
    assert format_go_timestamp(T0 - 145634835 + 5 * 10**8, 0) == "2026-12-02T15:30:40.5Z"
    assert format_go_timestamp(T0 - 145634835, 0) == "2026-12-02T15:30:40Z"
    assert format_go_timestamp(T0 - 145634835 + 1200, 3600) == ("2026-12-02T16:30:40.0000012+01:00")
    assert format_go_timestamp(T0, -3600).endswith("-01:00")


@pytest.mark.parametrize("offset", [0, 3600, -3600, 19800, -34200, 50400])
def test_timestamp_round_trip(offset: int) -> None:
    for ns in (0, T0, 951782400 * NS + 1, 4102444799 * NS + 999999999):
        assert parse_timestamp(format_timestamp(ns, offset)) == (ns, offset)
        assert parse_timestamp(format_go_timestamp(ns, offset)) == (ns, offset)


def test_parse_timestamp_shapes() -> None:
    assert parse_timestamp("2026-12-02T15:30:40Z") == (T0 - 145634835, 0)
    assert parse_timestamp("2026-12-02T15:30:40.1Z") == (T0 - 145634835 + 10**8, 0)
    assert parse_timestamp("2026-12-02T17:30:40.145634835+02:00") == (T0, 7200)
    # More than nine fraction digits: the rest is cut off.
    assert parse_timestamp("2026-12-02T15:30:40.1456348359Z") == (T0, 0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-12-02",
        "2026-12-02 15:30:40Z",
        "2026-12-02T15:30:40",
        "2026-12-02T15:30:40+0000",
        "2026-13-02T15:30:40Z",
        "2026-02-29T15:30:40Z",  # not a leap year
        "2026-12-32T15:30:40Z",
        "2026-12-02T24:00:00Z",
        "2026-12-02T15:60:00Z",
        "2026-12-02T15:30:60Z",
        "2026-12-02T15:30:40.Z",
        "2026-12-02T15:30:40.12aZ",
        "2026-12-02T15:30:40+24:00",
        "２０２6-12-02T15:30:40Z",
    ],
)
def test_parse_timestamp_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_days_from_civil_matches_the_calendar() -> None:
    for year in (1600, 1700, 1899, 1900, 1969, 1970, 2000, 2024, 2100, 2400, 9999):
        for month in range(1, 13):
            for day in (1, 28):
                expected = calendar.timegm((year, month, day, 0, 0, 0)) // 86400
                assert logfile.days_from_civil(year, month, day) == expected
    assert (
        parse_timestamp("2024-02-29T00:00:00Z")[0] == calendar.timegm((2024, 2, 29, 0, 0, 0)) * NS
    )


# --- encoding -----------------------------------------------------------------------------


def test_split_lines_like_conmon() -> None:
    assert split_lines(b"a\nb\n") == [(b"a\n", False), (b"b\n", False)]
    assert split_lines(b"a\npartial") == [(b"a\n", False), (b"partial", True)]
    assert split_lines(b"partial") == [(b"partial", True)]
    assert split_lines(b"\n\n") == [(b"\n", False), (b"\n", False)]
    assert split_lines(b"") == []


def test_encode_entries_reproduces_conmons_bytes() -> None:
    ts = "2026-12-02T15:30:40.145634835+00:00"
    assert encode_entries("stdout", b"a\npartial", ts) == SAMPLE.split(b"\n", 2)[0] + b"\n" + (
        SAMPLE.split(b"\n")[1] + b"\n"
    )
    assert encode_entries("stderr", b"b\n", "2026-12-02T15:30:40.145801503+00:00") == (
        SAMPLE.split(b"\n")[2] + b"\n"
    )
    assert encode_entries("stdout", b"\n", ts) == f"{ts} stdout F \n".encode()
    assert encode_entries("stdout", b"", ts) == b""


def test_encoded_size_is_what_conmon_counts() -> None:
    # conmon counts line + TSBUFLEN (44) + 1 bytes per entry, +1 for a partial's newline.
    ts = format_timestamp(T0, 0)
    assert len(encode_entries("stdout", b"line1\n", ts)) == 6 + 44 + 1
    assert len(encode_entries("stderr", b"xy", ts)) == 2 + 44 + 1 + 1


@settings(max_examples=300)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"x", b"\n")))
def test_encode_chunk_is_encode_entry_over_split_lines(chunk: bytes) -> None:
    # The writer's fast path (no max-size) must produce exactly the per-entry bytes.
    prefix = b"2026-12-02T15:30:40.145634835+00:00 stdout "
    expected = b"".join(encode_entry(prefix, line, partial) for line, partial in split_lines(chunk))
    assert encode_chunk(prefix, chunk) == expected


# --- writing ------------------------------------------------------------------------------


def test_writer_appends_entries_with_one_timestamp_per_chunk(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    with LogWriter(str(path), None) as writer:
        writer.write("stdout", b"a\npartial", now=T0 / NS)
        writer.write("stderr", b"b\n", now=T0 / NS + 1)
        writer.write("stdout", b"", now=T0 / NS + 2)  # nothing to log: nothing written
    entries = parse_lines(path.read_bytes())
    assert [(e.stream, e.partial, e.text) for e in entries] == [
        ("stdout", False, b"a"),
        ("stdout", True, b"partial"),
        ("stderr", False, b"b"),
    ]
    assert entries[0].time_ns == entries[1].time_ns
    assert abs(entries[0].time_ns - T0) < 1000  # a float `now` is good to the microsecond
    assert abs(entries[2].time_ns - entries[0].time_ns - NS) < 1000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def parse_lines(data: bytes) -> list[LogEntry]:
    return logfile.parse_lines(data)


def test_writer_uses_the_local_offset(tmp_path: Path, tz: None) -> None:
    path = tmp_path / "ctr.log"
    with LogWriter(str(path)) as writer:
        writer.write("stdout", b"hi\n", now=T0 / NS)
    line = path.read_bytes()
    assert line.startswith(b"2026-12-02T18:00:40.14563") and b"+02:30 stdout F hi\n" in line
    assert parse_line(line.rstrip(b"\n")).offset == 9000  # type: ignore[union-attr]


def test_writer_current_time(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    before = time.time_ns()
    with LogWriter(str(path)) as writer:
        writer.write("stdout", b"now\n")
    entry = parse_lines(path.read_bytes())[0]
    assert before <= entry.time_ns <= time.time_ns()


def test_writer_cuts_big_chunks_like_conmons_reads(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    data = b"x" * 20000 + b"\nend\n"
    with LogWriter(str(path)) as writer:
        writer.write("stdout", data, now=1.0)
    entries = parse_lines(path.read_bytes())
    assert [(len(e.text), e.partial) for e in entries] == [
        (8192, True),
        (8192, True),
        (3616, False),
        (3, False),
    ]
    assert b"".join(e.text + (b"" if e.partial else b"\n") for e in entries) == data


def test_writer_appends_to_an_existing_log(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(SAMPLE)
    with LogWriter(str(path)) as writer:
        writer.write("stdout", b"more\n", now=2.0)
    assert path.read_bytes().startswith(SAMPLE)
    assert texts(parse_lines(path.read_bytes()))[-1] == b"more"


def test_rotation_matches_podman(tmp_path: Path) -> None:
    # podman run --log-opt max-size=200 … 'for i in 1 … 7; do echo line$i; sleep 0.1; done'
    # left ctr.log with line7 alone: 51-byte entries, 3 fit, the 4th and 7th start new files.
    path = tmp_path / "ctr.log"
    contents = []
    with LogWriter(str(path), 200) as writer:
        for i in range(1, 8):
            writer.write("stdout", f"line{i}\n".encode(), now=T0 / NS + i)
            contents.append(texts(parse_lines(path.read_bytes())))
            assert path.stat().st_size <= 200
    assert contents[2] == [b"line1", b"line2", b"line3"]
    assert contents[3] == [b"line4"]
    assert contents[5] == [b"line4", b"line5", b"line6"]
    assert contents[6] == [b"line7"]
    assert sorted(os.listdir(tmp_path)) == ["ctr.log"]  # no .tmp and no backup left


def test_rotation_within_one_chunk_and_exact_fit(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    with LogWriter(str(path), 102) as writer:  # exactly two 51-byte entries
        writer.write("stdout", b"line1\nline2\nline3\n", now=1.0)
        assert texts(parse_lines(path.read_bytes())) == [b"line3"]
        writer.write("stdout", b"line4\n", now=1.0)
        assert texts(parse_lines(path.read_bytes())) == [b"line3", b"line4"]
        assert path.stat().st_size == 102


def test_rotation_entry_bigger_than_max_is_still_written(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    with LogWriter(str(path), 60) as writer:
        writer.write("stdout", b"short\n", now=1.0)
        writer.write("stdout", b"a very long line that does not fit at all\n", now=1.0)
        assert texts(parse_lines(path.read_bytes())) == [
            b"a very long line that does not fit at all"
        ]
        writer.write("stdout", b"next\n", now=1.0)
        assert texts(parse_lines(path.read_bytes())) == [b"next"]


def test_rotation_counts_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(b"x" * 190)
    with LogWriter(str(path), 200) as writer:
        writer.write("stdout", b"line1\n", now=1.0)
    assert texts(parse_lines(path.read_bytes())) == [b"line1"]


def test_no_max_size_means_no_rotation(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    for max_size in (None, 0, -1):
        path.unlink(missing_ok=True)
        with LogWriter(str(path), max_size) as writer:
            for _ in range(50):
                writer.write("stdout", b"line\n", now=1.0)
        assert len(parse_lines(path.read_bytes())) == 50


def test_write_errors_never_raise(tmp_path: Path) -> None:
    writer = LogWriter(str(tmp_path / "missing-dir" / "ctr.log"))
    writer.write("stdout", b"lost\n", now=1.0)
    assert writer.dropped == 5 and isinstance(writer.last_error, FileNotFoundError)
    (tmp_path / "missing-dir").mkdir()
    writer.write("stdout", b"kept\n", now=1.0)  # tries again
    writer.close()
    assert texts(parse_lines((tmp_path / "missing-dir" / "ctr.log").read_bytes())) == [b"kept"]


# --- parsing ------------------------------------------------------------------------------


def test_parse_line() -> None:
    entry = parse_line(b"2026-12-02T15:30:40.145634835+00:00 stdout P partial")
    assert entry == LogEntry(T0, 0, "stdout", True, b"partial")
    assert entry.time == T0 / NS
    entry = parse_line(b"2026-12-02T16:30:40.145634835+01:00 stderr F  two  spaces ")
    assert entry == LogEntry(T0, 3600, "stderr", False, b" two  spaces ")
    entry = parse_line(b"2026-12-02T15:30:40.145634835+00:00 stdout F ")
    assert entry is not None and entry.text == b"" and not entry.partial
    entry = parse_line(b"2026-12-02T15:30:40.145634835+00:00 stdout F \xff\xfe")
    assert entry is not None and entry.text == b"\xff\xfe"


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        b"2026-12-02T15:30:40.145634835+00:00 stdout F",
        b"2026-12-02T15:30:40.145634835+00:00 stdout",
        b"yesterday stdout F text",
        b"\xff stdout F text",
    ],
)
def test_parse_line_rejects(line: bytes) -> None:
    assert parse_line(line) is None


def test_parse_lines_skips_bad_and_empty_lines() -> None:
    data = b"junk\n\n" + SAMPLE + b"\n"
    assert texts(logfile.parse_lines(data)) == [b"a", b"partial", b"b", b"c", b"x", b"y"]


# --- tail, since, until -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (-1, [b"a", b"partial", b"b", b"c", b"x", b"y"]),
        (0, []),
        (1, [b"y"]),  # a partial at the very end counts as a line
        (2, [b"x", b"y"]),
        (3, [b"c", b"x", b"y"]),
        (4, [b"partial", b"b", b"c", b"x", b"y"]),  # partials go with the next full entry
        (5, [b"a", b"partial", b"b", b"c", b"x", b"y"]),
        (100, [b"a", b"partial", b"b", b"c", b"x", b"y"]),
    ],
)
def test_tail_counts_lines_like_podman(lines: int, expected: list[bytes]) -> None:
    assert texts(tail_entries(logfile.parse_lines(SAMPLE), lines)) == expected


def test_tail_joins_runs_of_partials() -> None:
    entries = [
        LogEntry(1, 0, "stdout", True, b"p1"),
        LogEntry(2, 0, "stdout", True, b"p2"),
        LogEntry(3, 0, "stdout", False, b"end"),
        LogEntry(4, 0, "stdout", True, b"q1"),
        LogEntry(5, 0, "stdout", False, b"end2"),
    ]
    assert texts(tail_entries(entries, 1)) == [b"q1", b"end2"]
    assert texts(tail_entries(entries, 2)) == [b"p1", b"p2", b"end", b"q1", b"end2"]
    assert tail_entries([], 3) == []


def test_select_entries_is_strict_like_podman() -> None:
    entries = [LogEntry(t, 0, "stdout", False, str(t).encode()) for t in (10, 20, 30)]
    assert texts(select_entries(entries)) == [b"10", b"20", b"30"]
    assert texts(select_entries(entries, since=10)) == [b"20", b"30"]
    assert texts(select_entries(entries, until=30)) == [b"10", b"20"]
    assert texts(select_entries(entries, since=9, until=31)) == [b"10", b"20", b"30"]
    assert select_entries(entries, since=20, until=20) == []


def test_read_entries(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(SAMPLE)
    assert texts(read_entries(str(path))) == [b"a", b"partial", b"b", b"c", b"x", b"y"]
    second = calendar.timegm((2026, 12, 2, 15, 30, 41)) * NS
    assert texts(read_entries(str(path), since=second)) == [b"c", b"x", b"y"]
    assert texts(read_entries(str(path), until=second)) == [b"a", b"partial", b"b"]
    # podman's order: the tail first, then the time window.
    assert texts(read_entries(str(path), until=second, tail=2)) == []
    assert texts(read_entries(str(path), since=second, tail=4)) == [b"c", b"x", b"y"]
    assert read_entries(str(tmp_path / "missing")) == []


def test_tail_of_a_big_file_reads_backwards(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    with LogWriter(str(path)) as writer:
        for i in range(5000):
            chunk = f"line {i}\n" if i % 7 else f"piece {i} "
            writer.write("stderr" if i % 3 == 0 else "stdout", chunk.encode(), now=float(i))
    everything = logfile.parse_lines(path.read_bytes())
    assert path.stat().st_size > 3 * 65536
    for lines in (0, 1, 2, 10, 1000, 4400, 4999, 5000, 10000, -1):
        with LogReader(str(path), lines) as reader:
            assert reader.read() == tail_entries(everything, lines), lines
            assert reader.read() == []


# --- following ----------------------------------------------------------------------------


def test_reader_returns_only_what_is_new(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    with LogReader(str(path)) as reader:
        assert reader.read() == []  # no file yet
        with LogWriter(str(path)) as writer:
            writer.write("stdout", b"one\n", now=1.0)
            assert texts(reader.read()) == [b"one"]
            assert reader.read() == []
            writer.write("stdout", b"two\nthree", now=2.0)
            assert texts(reader.read()) == [b"two", b"three"]


def test_reader_waits_for_a_complete_entry(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    line = encode_entries("stdout", b"hello\n", format_timestamp(T0, 0))
    path.write_bytes(line[:20])
    with LogReader(str(path)) as reader:
        assert reader.read() == []
        with path.open("ab") as f:
            f.write(line[20:])
        assert texts(reader.read()) == [b"hello"]


def test_reader_tail_then_follow(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(SAMPLE)
    with LogReader(str(path), 2) as reader:
        assert texts(reader.read()) == [b"x", b"y"]
        with LogWriter(str(path)) as writer:
            writer.write("stdout", b"z\n", now=3.0)
        assert texts(reader.read()) == [b"z"]


def test_reader_follows_rotation_without_loss_or_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    seen: list[bytes] = []
    with LogWriter(str(path), 150) as writer, LogReader(str(path)) as reader:
        for i in range(40):
            writer.write("stdout", f"line{i:02d}\n".encode(), now=float(i))
            if i % 3 == 0:  # the reader misses some rotations entirely
                seen += texts(reader.read())
        seen += texts(reader.read())
    # Whatever was rotated away before the reader got to it is gone, as with podman; the
    # rest arrives once, in order.
    numbers = [int(t[4:]) for t in seen]
    assert numbers == sorted(set(numbers))
    assert numbers[-2:] == [38, 39]
    assert {0, 3, 6, 9} <= set(numbers)


def test_reader_reads_the_rest_of_the_old_file_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    with LogWriter(str(path), 110) as writer, LogReader(str(path)) as reader:
        writer.write("stdout", b"line1\n", now=1.0)
        assert texts(reader.read()) == [b"line1"]
        writer.write("stdout", b"line2\n", now=1.0)  # still the old file
        writer.write("stdout", b"line3\n", now=1.0)  # rotated: a new file
        assert texts(reader.read()) == [b"line2", b"line3"]


def test_reader_handles_truncation_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(SAMPLE)
    with LogReader(str(path)) as reader:
        assert len(reader.read()) == 6
        path.write_bytes(SAMPLE.split(b"\n")[0] + b"\n")  # same inode, shorter
        assert texts(reader.read()) == [b"a"]


# --- --since / --until values -------------------------------------------------------------

GO_DURATIONS = [
    ("0", 0),
    ("5s", 5 * NS),
    ("30s", 30 * NS),
    ("1478s", 1478 * NS),
    ("-5s", -5 * NS),
    ("+5s", 5 * NS),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * NS),
    ("5.6s", 5 * NS + 600_000_000),
    ("5.s", 5 * NS),
    (".5s", NS // 2),
    ("1.004s", NS + 4_000_000),
    ("1.0040s", NS + 4_000_000),
    ("100.00100s", 100 * NS + 1_000_000),
    ("10ns", 10),
    ("11us", 11_000),
    ("12µs", 12_000),
    ("12μs", 12_000),
    ("13ms", 13_000_000),
    ("14s", 14 * NS),
    ("15m", 15 * 60 * NS),
    ("16h", 16 * 3600 * NS),
    ("3h30m", (3 * 3600 + 30 * 60) * NS),
    ("10.5s4m", 4 * 60 * NS + 10 * NS + NS // 2),
    ("-2m3.4s", -(2 * 60 * NS + 3 * NS + 400_000_000)),
    ("1h2m3s4ms5us6ns", 3723 * NS + 4_000_000 + 5_000 + 6),
    ("39h9m14.425s", (39 * 3600 + 9 * 60 + 14) * NS + 425_000_000),
    ("52763797000ns", 52763797000),
    ("0.3333333333333333333h", 20 * 60 * NS),
]


@pytest.mark.parametrize(("text", "ns"), GO_DURATIONS)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "1.5", "3x"])
def test_go_duration_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


NOW = 1_800_000_000 * NS


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("2026-12-02T15:30:40.145634835Z", T0, T0),
        ("2026-12-02T16:30:40.145634835+01:00", T0, T0),
        ("2026-12-02T15:30:40Z", T0 - 145634835, T0 - 145634835),
        ("2026-12-02T15:30:40", T0 - 145634835, T0 - 145634835),  # no zone: UTC, as Go
        ("2026-12-02T15:30:40.5", T0 - 145634835 + NS // 2, T0 - 145634835 + NS // 2),
        ("2026-12-02", T0 - 145634835 - 55840 * NS, T0 - 145634835 - 55840 * NS),
        ("2026-12-02Z", T0 - 145634835 - 55840 * NS, T0 - 145634835 - 55840 * NS),
        ("2026-12-02+01:00", T0 - 145634835 - 59440 * NS, T0 - 145634835 - 59440 * NS),
        ("1700000000", 1_700_000_000 * NS, 1_700_000_000 * NS),
        ("1700000000.25", 1_700_000_000 * NS + NS // 4, 1_700_000_000 * NS + NS // 4),
        ("1e3", 1000 * NS, 1000 * NS),
        ("0", 0, 0),  # a Unix time before it is a duration, as in podman
        ("10m", NOW - 600 * NS, NOW + 600 * NS),
        ("1h30m", NOW - 5400 * NS, NOW + 5400 * NS),
        ("-5s", NOW + 5 * NS, NOW - 5 * NS),
    ],
)
def test_parse_time_arg(text: str, since: int, until: int) -> None:
    assert parse_time_arg(text, since=True, now_ns=NOW) == since
    assert parse_time_arg(text, since=False, now_ns=NOW) == until


@pytest.mark.parametrize(
    "text", ["xyz", "", "2026-12-02T15:30", "2026-13-01", "1_000", " 5", "10d", "inf", "nan"]
)
def test_parse_time_arg_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_arg(text, since=True, now_ns=NOW)


def test_parse_time_arg_defaults_to_the_current_time() -> None:
    before = time.time_ns()
    value = parse_time_arg("1m", since=True)
    assert before - 60 * NS <= value <= time.time_ns() - 60 * NS


# --- rl logs: the pure parts ----------------------------------------------------------------


def test_parse_tail() -> None:
    assert parse_tail("-1") == -1
    assert parse_tail("0") == 0
    assert parse_tail("+7") == 7
    assert parse_tail("-5") == -5
    with pytest.raises(RlError) as err:
        parse_tail("x")
    assert err.value.message == (
        'invalid argument "x" for "--tail" flag: strconv.ParseInt: parsing "x": invalid syntax'
    )
    for bad in ("", "1.5", "--1", " 1"):
        with pytest.raises(RlError):
            parse_tail(bad)


def test_render_like_podman() -> None:
    full = LogEntry(T0, 0, "stdout", False, b"c")
    partial = LogEntry(T0, 0, "stdout", True, b"partial")
    assert render(full) == b"c\n"
    assert render(partial) == b"partial"
    assert render(full, timestamps=True) == b"2026-12-02T15:30:40.145634835Z c\n"
    assert render(partial, prefix=b"42f6e5e4ea3b ", timestamps=True) == (
        b"42f6e5e4ea3b 2026-12-02T15:30:40.145634835Z partial"
    )
    assert render(LogEntry(T0, 3600, "stderr", False, b""), prefix=b"web ") == b"web \n"


def test_merge_orders_containers_by_time() -> None:
    a: list[Any] = [(LogEntry(t, 0, "stdout", False, b"a%d" % t), "A") for t in (1, 3, 3, 7)]
    b: list[Any] = [(LogEntry(t, 0, "stdout", False, b"b%d" % t), "B") for t in (2, 3, 8)]
    merged = merge([a, b])
    assert [e.text for e, _ in merged] == [b"a1", b"b2", b"a3", b"a3", b"b3", b"a7", b"b8"]
    assert merge([a]) == a


def test_log_path_and_driver(tmp_path: Path) -> None:
    from rootless.cli.logs import check_log_driver, log_path
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open(tmp_path)
    try:
        plain = store.create(name="plain", image_id="", image_name="i", command=["a"])
        assert log_path(store, plain) == str(store.userdata(plain.id) / "ctr.log")
        check_log_driver(plain)  # no driver recorded: k8s-file
        custom = store.create(
            name="custom",
            image_id="",
            image_name="i",
            command=["a"],
            config={"log_driver": "k8s-file", "log_opts": {"path": "/tmp/x.log"}},
        )
        assert log_path(store, custom) == "/tmp/x.log"
        check_log_driver(custom)
        for driver in ("none", "passthrough"):
            record = store.create(
                name=driver,
                image_id="",
                image_name="i",
                command=["a"],
                config={"log_driver": driver},
            )
            with pytest.raises(RlError) as err:
                check_log_driver(record)
            assert err.value.message == (
                f"this container is using the '{driver}' log driver, cannot read logs: "
                "this container is not logging output"
            )
    finally:
        store.close()
