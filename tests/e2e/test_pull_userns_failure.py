"""`rl pull` when the id-map helpers fail: one line and exit 125, not a hang.

newuidmap/newgidmap are found on PATH, so stand-ins that fail the way a broken setup makes
them fail (no subordinate range, not setuid) come first on the test user's PATH. Before the
fix, rl waited for its namespace helper while the helper waited for rl's go-ahead.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness import User, rl_binary

FAILING_HELPER = """#!/bin/sh
echo "$(basename "$0"): write to uid_map failed: Operation not permitted" >&2
exit 1
"""


def test_failing_id_map_helper_is_an_error_not_a_hang(user: User, workdir: Path) -> None:
    bin_dir = workdir / "bin"
    bin_dir.mkdir(mode=0o755)
    for name in ("newuidmap", "newgidmap"):
        helper = bin_dir / name
        helper.write_text(FAILING_HELPER)
        os.chmod(helper, 0o755)
    store = workdir / "store"
    env = user.env()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    result = user.run(
        [rl_binary(), "--root", str(store), "pull", "--tls-verify=false", "127.0.0.1:9/x:latest"],
        env=env,
        timeout=60,  # a hang fails here
    )
    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: newuidmap ") or lines[-1].startswith("Error: newgidmap "), (
        result
    )
    assert "Operation not permitted" in lines[-1]
