"""The progress bars of `rl pull` on a terminal: the line format and the in-place redraw."""

from __future__ import annotations

import re

from rootless.registry.progress import Board, progress_line
from rootless.registry.pull import Progress

LABEL = "Copying blob 3f4d90098f5b"


def test_line_shows_size_speed_and_eta() -> None:
    line = progress_line(LABEL, 1_200_000, 2_800_000, 0.4, 100)
    assert line.startswith(LABEL + " [")
    assert "1.20MB / 2.80MB" in line
    assert "3.00MB/s" in line  # 1.2 MB in 0.4 s
    assert line.endswith("ETA 00:00")  # 1.6 MB left at 3 MB/s
    bar = re.search(r"\[([ =]+)\]", line)
    assert bar is not None
    filled = bar.group(1).count("=") / len(bar.group(1))
    assert 0.35 < filled < 0.5  # 43 %
    assert len(line) <= 99


def test_line_before_any_data_and_when_done() -> None:
    start = progress_line(LABEL, 0, 50_000_000, 0.0, 100)
    assert "0.00B / 50.0MB" in start and "?B/s" in start and "ETA ?" in start
    slow = progress_line(LABEL, 10_000_000, 50_000_000, 20.0, 100)
    assert "500kB/s" in slow and "ETA 01:20" in slow
    done = progress_line(LABEL, 50_000_000, 50_000_000, 10.0, 100)
    assert "[" + "=" * 10 in done and "50.0MB / 50.0MB" in done


def test_line_fits_narrow_terminals_and_unknown_sizes() -> None:
    assert len(progress_line(LABEL, 10, 100, 1.0, 60)) <= 59
    assert len(progress_line(LABEL, 10, 100, 1.0, 10)) <= 40  # never below the minimum
    assert "?B" in progress_line(LABEL, 10, 0, 1.0, 100)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_board_redraws_in_place_and_throttles() -> None:
    out: list[str] = []
    clock = Clock()
    board = Board(out.append, lambda: 100, clock=clock, interval=0.1)
    board.add("a", "Copying blob aaaaaaaaaaaa", 1000)
    assert len(out) == 1 and out[0].startswith("Copying blob aaaaaaaaaaaa [")
    board.add("b", "Copying blob bbbbbbbbbbbb", 2000)
    # back to the start of the one line drawn, clear below, both lines
    assert out[1].startswith("\r\x1b[J") and out[1].count("\n") == 1
    board.update("a", 500)  # within the interval: not drawn
    assert len(out) == 2
    clock.now += 0.2
    board.update("a", 600)
    assert out[2].startswith("\r\x1b[1A\x1b[J") and "600B / 1.00kB" in out[2]
    board.finish("a", "Copying blob aaaaaaaaaaaa done")
    assert out[3].split("\n")[0].endswith("Copying blob aaaaaaaaaaaa done")
    board.close()
    assert out[-1] == "\n" and board.closed
    board.draw()
    assert out[-1] == "\n"


def test_progress_uses_bars_only_on_a_terminal_without_quiet() -> None:
    digest = "sha256:" + "cd" * 32
    lines: list[str] = []
    raw: list[str] = []
    bars = Progress(tty=True, write=lines.append, bars=True, raw_write=raw.append)
    report = bars.start_blob(digest, 1000)
    assert report is not None
    report(1000)
    bars.copying("blob", digest)
    bars.copying("config", digest)
    assert "Copying blob cdcdcdcdcdcd [" in raw[0]
    assert raw[-2].endswith("Copying blob cdcdcdcdcdcd done") and raw[-1] == "\n"
    assert lines == ["Copying config cdcdcdcdcd done"]
    # a pull that fails mid-download: the bars end with a newline before the error
    raw.clear()
    failing = Progress(tty=True, write=lines.append, bars=True, raw_write=raw.append)
    assert failing.start_blob(digest, 1000) is not None
    failing.close_bars()
    assert raw[-1] == "\n" and failing.board is None
    pipe = Progress(tty=False, write=lines.append, raw_write=raw.append)
    assert pipe.start_blob(digest, 1000) is None
    quiet = Progress.for_stderr(quiet=True)
    assert quiet.start_blob(digest, 1000) is None
