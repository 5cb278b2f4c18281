"""Where rl keeps things: XDG directories, created on first use with private modes."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def data_dir() -> Path:
    """$XDG_DATA_HOME/rl: the image store, containers, volumes (RL_ROOT overrides, for tests)."""
    override = os.environ.get("RL_ROOT")
    if override:
        return Path(override)
    base = os.environ.get("XDG_DATA_HOME") or str(home() / ".local" / "share")
    return Path(base) / "rl"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(home() / ".config")
    return Path(base) / "rl"


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/rl; when the variable is unset or unusable, /run/user/UID/rl if that
    is ours (as rootless podman does), else a private directory under /tmp.

    Only a directory owned by us counts: after `su`/`sudo` the variable often still names
    another user's directory, and using it would fail later with EACCES. Every session of
    the user must land on the same directory where it can: the containers' locks, attach
    sockets and exit records are there, and a container started from an ssh login is
    stopped or attached to from a `su` shell too.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _owned_by_me(Path(xdg)):
        return Path(xdg) / "rl"
    session = session_runtime_dir()
    if session is not None:
        return session / "rl"
    return Path(f"/tmp/rl-{os.getuid()}")


def session_runtime_dir() -> Path | None:
    """/run/user/UID when it is ours: what logind makes for a user's sessions, and what
    rootless podman uses when XDG_RUNTIME_DIR is unset."""
    path = Path(f"/run/user/{os.getuid()}")
    return path if _owned_by_me(path) else None


def _owned_by_me(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and os.access(path, os.W_OK | os.X_OK)


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path


def warn(message: str) -> None:
    """A one-line warning on stderr, in podman's shape."""
    print(f"WARN[0000] {message}", file=sys.stderr)
