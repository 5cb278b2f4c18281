"""Container logs in podman's k8s-file format, written by the monitor and read by `rl logs`.

One entry per line, exactly as conmon 2.1 writes it (src/ctr_logging.c):

    2026-12-02T15:30:40.145634835+00:00 stdout F a full line, its newline dropped
    2026-12-02T15:30:40.145634835+00:00 stdout P a piece without newline (a partial)

The timestamp is the local time with nanoseconds and the local UTC offset, taken once per
chunk read from the container (every entry of one chunk shares it). A chunk becomes one `F`
entry per newline-terminated line and a `P` entry for a trailing piece without a newline.

The writer lives in `rootless.monitor.logwriter` (the monitor's watcher imports only that:
no `typing`); the reader's extras are imported where they are used.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from rootless.monitor.logwriter import (
    CHUNK_SIZE,
    NS,
    LogWriter,
    encode_entry,
    format_timestamp,
    local_offset,
    split_lines,
)

__all__ = [
    "CHUNK_SIZE",
    "NS",
    "LogWriter",
    "encode_entry",
    "format_timestamp",
    "local_offset",
    "split_lines",
]
_READ_BLOCK = 65536


class LogEntry(NamedTuple):
    time_ns: int  # Unix time in nanoseconds
    offset: int  # the writer's UTC offset in seconds (for showing the time as written)
    stream: str  # "stdout" | "stderr"
    partial: bool  # a "P" entry: the text continues in a later entry
    text: bytes  # without the line's newline

    @property
    def time(self) -> float:
        return self.time_ns / NS


# --- timestamps -------------------------------------------------------------------------


def format_go_timestamp(time_ns: int, offset: int) -> str:
    """Go's time.RFC3339Nano, as `podman logs -t` shows an entry's time: trailing zeros of the
    fraction trimmed (and the dot, when nothing is left), `Z` for a zero offset."""
    seconds, nanos = divmod(time_ns, NS)
    t = time.gmtime(seconds + offset)
    fraction = f".{nanos:09d}".rstrip("0").rstrip(".")
    if offset == 0:
        zone = "Z"
    else:
        off = abs(offset)
        zone = f"{'-' if offset < 0 else '+'}{off // 3600:02d}:{off % 3600 // 60:02d}"
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        f"{t.tm_sec:02d}{fraction}{zone}"
    )


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _digits(text: str) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(text)
    return int(text)


def _parse_date(text: str) -> tuple[int, int, int]:
    """`YYYY-MM-DD`, checked like Go's time.Parse (month and day in range)."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(text)
    year, month, day = _digits(text[0:4]), _digits(text[5:7]), _digits(text[8:10])
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        raise ValueError(text)
    return year, month, day


def _parse_zone(text: str) -> int:
    """`Z` or `±HH:MM` -> offset in seconds."""
    if text == "Z":
        return 0
    if len(text) != 6 or text[0] not in "+-" or text[3] != ":":
        raise ValueError(text)
    hours, minutes = _digits(text[1:3]), _digits(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(text)
    offset = hours * 3600 + minutes * 60
    return -offset if text[0] == "-" else offset


def _parse_clock(text: str) -> tuple[int, int]:
    """`HH:MM:SS[.fraction]` -> (seconds of the day, nanoseconds)."""
    if len(text) < 8 or text[2] != ":" or text[5] != ":":
        raise ValueError(text)
    hour, minute, second = _digits(text[0:2]), _digits(text[3:5]), _digits(text[6:8])
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(text)
    nanos = 0
    if len(text) > 8:
        if text[8] not in ".,":
            raise ValueError(text)
        fraction = text[9:]
        _digits(fraction)
        nanos = int(fraction[:9].ljust(9, "0"))
    return hour * 3600 + minute * 60 + second, nanos


def _to_ns(date: tuple[int, int, int], clock_seconds: int, nanos: int, offset: int) -> int:
    seconds = days_from_civil(*date) * 86400 + clock_seconds - offset
    return seconds * NS + nanos


def parse_timestamp(text: str) -> tuple[int, int]:
    """An RFC 3339 timestamp with seconds and a zone (what conmon writes, and Go's
    RFC3339Nano) -> (Unix time in ns, UTC offset in s). ValueError when it is not one."""
    if len(text) < 20 or text[10] != "T":
        raise ValueError(text)
    if text.endswith("Z"):
        clock, zone = text[11:-1], "Z"
    else:
        clock, zone = text[11:-6], text[-6:]
    offset = _parse_zone(zone)
    clock_seconds, nanos = _parse_clock(clock)
    return _to_ns(_parse_date(text[:10]), clock_seconds, nanos, offset), offset


# --- writing ----------------------------------------------------------------------------


def encode_entries(stream: str, data: bytes, timestamp: str) -> bytes:
    """The entries conmon writes for one chunk `data` read from `stream` at `timestamp`
    (format_timestamp's shape)."""
    prefix = f"{timestamp} {stream} ".encode()
    return b"".join(encode_entry(prefix, line, partial) for line, partial in split_lines(data))


# --- reading ----------------------------------------------------------------------------


def parse_line(line: bytes) -> LogEntry | None:
    """One line of the file (without its newline) -> its entry; None for a line that is not
    one. Like podman: the text is everything after the third space, a tag other than "P" is a
    full line."""
    parts = line.split(b" ", 3)
    if len(parts) < 4:
        return None
    try:
        time_ns, offset = parse_timestamp(parts[0].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    stream = parts[1].decode("ascii", "replace")
    return LogEntry(time_ns, offset, stream, parts[2] == b"P", parts[3])


def parse_lines(data: bytes) -> list[LogEntry]:
    """The entries of complete lines `data` (empty and malformed lines are skipped)."""
    entries = []
    for line in data.split(b"\n"):
        if line:
            entry = parse_line(line)
            if entry is not None:
                entries.append(entry)
    return entries


def tail_entries(entries: list[LogEntry], lines: int) -> list[LogEntry]:
    """The entries of the last `lines` lines (all for a negative count), counted as podman
    counts since 4.7 (containers/podman#19545): a line is a run of partial entries ended by a
    full one, and a partial entry at the very end counts as a line of its own. (podman 4.3
    glued partials onto the wrong lines here; that is not worth copying.)"""
    if lines < 0:
        return entries
    count = 0
    last = len(entries) - 1
    for i in range(last, -1, -1):
        if not entries[i].partial or i == last:
            count += 1
            if count > lines:
                return entries[i + 1 :]
    return entries


def select_entries(
    entries: list[LogEntry], since: int | None = None, until: int | None = None
) -> list[LogEntry]:
    """Entries strictly after `since` and strictly before `until` (Unix ns), as podman."""
    if since is None and until is None:
        return entries
    return [
        e
        for e in entries
        if (since is None or e.time_ns > since) and (until is None or e.time_ns < until)
    ]


class LogReader:
    """Reads the complete entries of a log file as they are written, across rotations.

    The first read() returns the whole file, or its last `tail` lines; each later one what was
    added since. An entry still being written (no newline yet) waits for the next read. When
    the writer rotates (a new file renamed over the path), the rest of the old file is read
    first, then the new one from its start; a file truncated in place is read from its start.
    A missing file reads as empty until it appears.
    """

    def __init__(self, path: str, tail: int = -1) -> None:
        self.path = path
        self.tail = tail
        self._file: int = -1
        self._inode: tuple[int, int] | None = None
        self._position = 0
        self._pending = b""  # bytes of an entry not yet complete

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        self._file, self._inode = fd, (st.st_dev, st.st_ino)
        self._position = 0
        self._pending = b""
        return True

    def read(self) -> list[LogEntry]:
        entries: list[LogEntry] = []
        if self._file < 0:
            if not self._open():
                return entries
            if self.tail >= 0:
                entries = self._read_tail(self.tail)
                self.tail = -1
        entries += self._drain()
        # Rotated? The writer finished the old file before renaming the new one over it.
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return entries
        if (st.st_dev, st.st_ino) != self._inode:
            entries += self._drain()
            os.close(self._file)
            self._file = -1
            if self._open():
                entries += self._drain()
        return entries

    def _drain(self) -> list[LogEntry]:
        if os.fstat(self._file).st_size < self._position:  # truncated in place
            self._position = 0
            self._pending = b""
        chunks = [self._pending]
        while True:
            chunk = os.pread(self._file, _READ_BLOCK, self._position)
            if not chunk:
                break
            chunks.append(chunk)
            self._position += len(chunk)
        data = b"".join(chunks)
        complete = data.rfind(b"\n") + 1
        self._pending = data[complete:]
        return parse_lines(data[:complete])

    def _read_tail(self, lines: int) -> list[LogEntry]:
        """The last `lines` lines of the open file, read backwards in blocks; afterwards the
        position is at the end of the last complete entry."""
        end = os.fstat(self._file).st_size
        block = os.pread(self._file, min(end, _READ_BLOCK), max(0, end - _READ_BLOCK))
        # Only complete entries: what follows the last newline is still being written.
        end -= len(block) - (block.rfind(b"\n") + 1)
        self._position = end
        found: list[LogEntry] = []  # newest first
        counted = 0
        carry = b""
        start = end
        while start > 0 and counted <= lines:
            size = min(_READ_BLOCK, start)
            start -= size
            data = os.pread(self._file, size, start) + carry
            pieces = data.split(b"\n")
            carry = pieces[0] if start > 0 else b""
            for line in reversed(pieces if start == 0 else pieces[1:]):
                entry = parse_line(line) if line else None
                if entry is None:
                    continue
                if not entry.partial or not found:
                    counted += 1
                found.append(entry)
        found.reverse()
        return tail_entries(found, lines)

    def close(self) -> None:
        if self._file >= 0:
            os.close(self._file)
            self._file = -1

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_entries(
    path: str, since: int | None = None, until: int | None = None, tail: int = -1
) -> list[LogEntry]:
    """The complete entries of the log at `path`: its last `tail` lines (all when negative),
    then those strictly between `since` and `until` (Unix ns), podman's order."""
    with LogReader(path, tail) as reader:
        return select_entries(reader.read(), since, until)


# --- the times `rl logs --since/--until` accept -------------------------------------------

_DURATION_UNITS = {
    "ns": 1,
    "us": 1000,
    "µs": 1000,  # U+00B5 micro sign
    "μs": 1000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": NS,
    "m": 60 * NS,
    "h": 3600 * NS,
}


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration ("1h30m", "1.5h", "300ms", "-10s", "0") -> nanoseconds."""
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while rest:
        i = 0
        while i < len(rest) and "0" <= rest[i] <= "9":
            i += 1
        whole = rest[:i]
        fraction = ""
        if i < len(rest) and rest[i] == ".":
            j = i + 1
            while j < len(rest) and "0" <= rest[j] <= "9":
                j += 1
            fraction = rest[i + 1 : j]
            i = j
        if not whole and not fraction:
            raise ValueError(f"invalid duration {text!r}")
        j = i
        while j < len(rest) and rest[j] != "." and not "0" <= rest[j] <= "9":
            j += 1
        unit = _DURATION_UNITS.get(rest[i:j])
        if unit is None:
            raise ValueError(f"invalid duration {text!r}")
        total += int(whole or "0") * unit
        if fraction:  # float math, as Go's (so "0.3333333333333333333h" is 20m there too)
            total += int(float(int(fraction)) * (unit / 10 ** len(fraction)))
        rest = rest[j:]
    return -total if negative else total


def _parse_unix(text: str) -> int:
    """A Unix time in seconds, maybe with a fraction ("1700000000", "1700000000.5")."""
    if not text or any(c not in "0123456789.eE+-" for c in text):
        raise ValueError(text)
    value = float(text)
    whole = int(value)
    return whole * NS + round((value - whole) * NS)


def parse_time_arg(text: str, *, since: bool, now_ns: int | None = None) -> int:
    """A --since/--until value -> Unix ns, as podman's util.ParseInputTime reads it: RFC 3339
    (with or without fraction), `2006-01-02T15:04:05[.999999999]` and `2006-01-02` (UTC),
    `2006-01-02Z07:00`, a Unix time in seconds, or a Go duration before now (--since) or
    after now (--until). ValueError when it is none of these."""
    try:
        return parse_timestamp(text)[0]
    except ValueError:
        pass
    try:
        if len(text) > 10 and text[10] == "T":  # 2006-01-02T15:04:05[.999999999], UTC
            clock_seconds, nanos = _parse_clock(text[11:])
            return _to_ns(_parse_date(text[:10]), clock_seconds, nanos, 0)
        if len(text) >= 10 and text[:4].isdigit():  # 2006-01-02 or 2006-01-02Z07:00
            offset = _parse_zone(text[10:]) if len(text) > 10 else 0
            return _to_ns(_parse_date(text[:10]), 0, 0, offset)
    except ValueError:
        pass
    try:
        return _parse_unix(text)
    except ValueError:
        pass
    duration = parse_go_duration(text)  # raises ValueError
    now = time.time_ns() if now_ns is None else now_ns
    return now - duration if since else now + duration
