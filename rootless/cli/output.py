"""Output in podman's shapes: aligned tables, human sizes and ages, JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO


def human_size(size: float, precision: int = 3, separator: str = " ") -> str:
    """go-units HumanSizeWithPrecision: decimal units with `precision` significant digits.

    podman prints image sizes with 3 ("5.83 MB") and `system df` with 4 and no space ("7.952MB").
    """
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{separator}{units[i]}"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which podman uses for CREATED columns ("2 minutes")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    days = s // 86400
    if days < 14:
        return f"{days} days"
    if days < 60:
        return f"{days // 7} weeks"
    if days < 365 * 2:
        return f"{days // 30} months"
    return f"{days // 365} years"


def ago(timestamp: float, now: float | None = None) -> str:
    return human_duration((now if now is not None else time.time()) - timestamp) + " ago"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    header: bool = True,
    out: TextIO | None = None,
) -> None:
    """Columns padded to their widest cell plus two spaces, like Go's tabwriter in podman."""
    out = out or sys.stdout
    all_rows = ([list(headers)] if header else []) + [list(r) for r in rows]
    if not all_rows:
        return
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    for r in all_rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        out.write("  ".join(cells).rstrip() + "\n")


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Indented JSON as podman prints it (4 spaces, no ASCII escaping)."""
    out = out or sys.stdout
    out.write(json.dumps(value, indent=4, ensure_ascii=False) + "\n")
