"""Go's text/tabwriter as podman configures it for `table` output (minwidth 12, padding 2).

Tab-terminated cells in consecutive lines form a column, padded to its widest cell plus the
padding (at least minwidth); the text after a line's last tab is not part of any column. A line
without a cell in a column ends that column's block, so lines with fewer cells do not widen
(or get padded by) the columns of the lines around them: Go's elastic tabstops.
"""

from __future__ import annotations


def tabwrite(text: str, *, minwidth: int = 12, padding: int = 2) -> str:
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(first: int, stop: int) -> None:
        for cells in lines[first:stop]:
            parts: list[str] = []
            for column, cell in enumerate(cells):
                parts.append(cell)
                if column < len(widths):
                    parts.append(" " * (widths[column] - len(cell)))
            out.append("".join(parts))

    def has_cell(line: int, column: int) -> bool:
        return column < len(lines[line]) - 1

    def format_block(first: int, stop: int) -> None:
        column = len(widths)
        line = first
        while line < stop:
            if not has_cell(line, column):
                line += 1
                continue
            write_lines(first, line)
            first = line
            width = minwidth
            while line < stop and has_cell(line, column):
                width = max(width, len(lines[line][column]) + padding)
                line += 1
            widths.append(width)
            format_block(first, line)
            widths.pop()
            first = line
        write_lines(first, stop)

    format_block(0, len(lines))
    return "\n".join(out)
