"""Leaving the process without the interpreter's teardown.

A normal exit frees every object of every loaded module. After `rl pull` (trio, httpx,
httpcore, h11, attrs, ssl, ... loaded) that takes 40-100 ms, a sixth of a small pull, and buys
nothing: the kernel reclaims the memory anyway. `leave` keeps what an exit must do — the
atexit handlers (logging's flush among them) and flushing stdout/stderr — and skips the rest.

Only for the end of a command run as the `rl` process itself, with no thread of its own still
working: os._exit does not wait for non-daemon threads.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def leave(code: int) -> NoReturn:
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # a BrokenPipeError goes to main()'s handler, as with print()
    os._exit(code)
