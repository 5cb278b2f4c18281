"""rootless.cli.quickexit.leave: the exit code, buffered output and atexit handlers survive
skipping the interpreter's teardown (a fresh interpreter with stdout on a pipe, so that it is
block-buffered and lost unless flushed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys
from pathlib import Path
from rootless.cli.quickexit import leave

marker = Path(sys.argv[1])
atexit.register(marker.write_text, "atexit ran")
sys.stdout.write("image-id")  # no newline, no flush: still in the buffer
sys.stderr.write("progress")
leave(3)
print("not reached")
"""


def test_leave_keeps_exit_code_output_and_atexit(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(marker)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3
    assert done.stdout == "image-id"
    assert done.stderr == "progress"
    assert marker.read_text() == "atexit ran"
