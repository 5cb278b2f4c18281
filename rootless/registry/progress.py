"""Progress bars for blob copies on a terminal: one line per layer with size, speed and ETA.

    Copying blob 3f4d90098f5b [=========>          ] 1.20MB / 2.80MB | 3.00MB/s | ETA 00:00
    Copying blob 9c7a54a9a4c1 done

`progress_line` is the pure core (bytes done, total, seconds elapsed -> one line); it uses
tqdm's meter formatting, imported only when a terminal shows bars (tqdm costs ~13 ms on top of
trio and httpx, rich.progress ~50 ms). `Board` keeps the lines of all layers and redraws them
in place, at most every `interval` seconds (plus at once when a layer starts or ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

BAR_FORMAT = "{desc} [{bar}] {n_fmt}B / {total_fmt}B | {rate_fmt} | ETA {remaining}"
MIN_WIDTH = 40
CLEAR_BELOW = "\x1b[J"


def progress_line(label: str, done: int, total: int, elapsed: float, width: int) -> str:
    """One bar line of at most `width - 1` characters (the last column is left free so that
    the terminal never wraps, which would break redrawing in place)."""
    from tqdm.std import tqdm  # type: ignore[import-untyped]

    columns = max(width - 1, MIN_WIDTH)
    line: str = tqdm.format_meter(
        min(done, total) if total > 0 else done,
        total if total > 0 else None,
        max(elapsed, 0.0),
        ncols=columns,
        prefix=label,
        unit="B",
        unit_scale=True,
        ascii=" =",
        bar_format=BAR_FORMAT,
    )
    return line[:columns]


@dataclass
class _Row:
    label: str
    total: int
    started: float
    done: int = 0
    final: str | None = None  # the text once the copy ended


class Board:
    """The bars of one pull on a terminal (stderr). Not thread-safe: trio runs one task at a
    time, and every update comes from the event loop's thread."""

    def __init__(
        self,
        write: Callable[[str], None],
        width: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
    ) -> None:
        self._write = write
        self._width = width
        self._clock = clock
        self._interval = interval
        self._rows: dict[str, _Row] = {}
        self._drawn = 0  # lines on the screen, the cursor at the end of the last
        self._last_draw = float("-inf")
        self._stale = False  # updates not drawn yet
        self.closed = False

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def add(self, key: str, label: str, total: int) -> None:
        self._rows[key] = _Row(label, total, self._clock())
        self.draw()

    def update(self, key: str, done: int) -> None:
        self._rows[key].done = done
        self._stale = True
        if self._clock() - self._last_draw >= self._interval:
            self.draw()

    def finish(self, key: str, text: str) -> None:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row(text, 0, self._clock())
        row.final = text
        self.draw()

    def lines(self) -> list[str]:
        width = self._width()
        now = self._clock()
        return [
            row.final[: max(width - 1, MIN_WIDTH)]
            if row.final is not None
            else progress_line(row.label, row.done, row.total, now - row.started, width)
            for row in self._rows.values()
        ]

    def draw(self) -> None:
        if self.closed:
            return
        lines = self.lines()
        if not lines:
            return
        start = ""
        if self._drawn:
            start = "\r" + (f"\x1b[{self._drawn - 1}A" if self._drawn > 1 else "") + CLEAR_BELOW
        self._write(start + "\n".join(lines))
        self._drawn = len(lines)
        self._last_draw = self._clock()
        self._stale = False

    def close(self) -> None:
        """The final picture, and the cursor on the next line for whatever comes after."""
        if self.closed:
            return
        if self._stale:
            self.draw()
        if self._drawn:
            self._write("\n")
        self.closed = True
