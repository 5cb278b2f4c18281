"""What a worker that unpacked a layer reports back (rootless.images.unpack makes it).

Its own tiny module: `rl pull` unpickles these from its workers, and pickle imports the
module that defines a class, so defining it next to the unpacking code would load tarfile and
the rest of unpack.py into the puller for nothing (issue 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


# A NamedTuple rather than a dataclass: cheaper to create at import (issue 5).
class Unpacked(NamedTuple):
    """What unpacking a layer found: regular-file content bytes, the uncompressed tar's size,
    and how the blob was compressed ("gzip", "zstd" or "none")."""

    content_bytes: int
    tar_bytes: int
    compression: str


def layer_dir(staging_dir: Path, diff_id: str) -> Path:
    """Where a layer is unpacked in a staging directory before the commit moves it into place."""
    return staging_dir / f"layer-{diff_id.removeprefix('sha256:')}"
