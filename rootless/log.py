"""rl's logger, "rl", set up on first use.

`import logging` (with traceback, string, weakref and threading behind it) costs ~3 ms, and
most runs of rl never log: start-up time is a benchmark target (issue 3). So the CLI only
records --log-level here, and a module that logs takes its logger from `logger()`, which
configures logging (podman's `WARN[0000] message` lines on stderr) the first time.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

_level = "warn"
_configured = False


def configure(level: str) -> None:
    """Log at `level` (debug, info, warn, error) and above. Any level but the default sets
    logging up at once, so that libraries' messages (httpx's, with debug) show too."""
    global _level, _configured
    _level = level
    if _configured or level != "warn" or "logging" in sys.modules:
        _configured = False
        logger()


def logger() -> logging.Logger:
    global _configured
    import logging

    if not _configured:
        _configured = True
        levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
        level = levels.get(_level, logging.ERROR)
        logging.basicConfig(level=level, format="%(levelname).4s[0000] %(message)s")
        logging.getLogger().setLevel(level)
    return logging.getLogger("rl")
