"""A copy of this tree's `netns` package that the unprivileged test user can read.

Tests that run netns code as that user (in its own namespaces, from a script) use this source,
not the installed package; root's checkout may be private, so it is copied to /tmp first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readable_netns_copy(prefix: str, scripts: Sequence[Path] = ()) -> Path:
    """A new /tmp directory holding `netns/` and `scripts`, readable by everyone; the caller
    removes it."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    for script in scripts:
        shutil.copyfile(script, path / script.name)
    shutil.copytree(REPO / "netns", path / "netns", ignore=shutil.ignore_patterns("__pycache__"))
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(Path(root) / name, 0o755)
        for name in files:
            os.chmod(Path(root) / name, 0o644)
    return path
