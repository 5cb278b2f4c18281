"""The kernel overlay driver: image layers as read-only lowers, the container's changes in `diff/`.

The mount happens inside the container's user namespace with `userxattr`, the only way an
unprivileged overlay reads the store's `user.overlay.*` opaque markers (and, per MACHINE-NOTES,
without it removing a lower directory later fails with EIO). The kernel takes the mount options
as one page, so the lower dirs are named through short symlinks `l/0`, `l/1`, … in the
container dir and the mount is made from inside that dir with relative paths: a few bytes per
layer instead of ~100.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from rootless import syscalls
from rootless.errors import RlError

UPPER = "diff"
WORK = "work"
LINKS = "l"
EMPTY_LOWER = "empty"
# The kernel copies mount data into one page; the option string must fit with its NUL.
MAX_OPTIONS = os.sysconf("SC_PAGESIZE") - 1


def overlay_options(lowers: Sequence[str], upper: str | None, work: str | None) -> str:
    """The mount data for overlayfs; without an upper dir the mount is read-only."""
    opts = f"lowerdir={':'.join(lowers)}"
    if upper is not None and work is not None:
        opts += f",upperdir={upper},workdir={work}"
    return opts + ",userxattr"


def mount_overlay(
    base: Path,
    lowers: Sequence[str],
    upper: str | None,
    work: str | None,
    target: Path,
    flags: int = 0,
    hint: str = "use --storage-driver vfs",
) -> None:
    """Mount an overlay on `target`, its dirs given relative to `base` (see module doc)."""
    data = overlay_options(lowers, upper, work)
    if len(data) > MAX_OPTIONS:
        raise RlError(
            f"overlay mount options are {len(data)} bytes, more than the kernel's "
            f"{MAX_OPTIONS}: too many layers ({len(lowers)}); {hint}"
        )
    target_abs = os.path.abspath(target)
    saved = os.open(".", os.O_PATH | os.O_DIRECTORY)
    try:
        os.chdir(base)
        syscalls.mount("overlay", target_abs, "overlay", flags, data)
    except OSError as exc:
        raise RlError(
            f"cannot mount the overlay root filesystem on {target_abs}: {exc.strerror or exc}: "
            f"the kernel may not support overlay in a user namespace here; {hint}"
        ) from exc
    finally:
        os.fchdir(saved)
        os.close(saved)


# A NamedTuple rather than a dataclass: this module is on the path of every `rl run`, and a
# dataclass costs ~0.5 ms to create at import (start-up is issue 3's target).
class OverlayRootfs(NamedTuple):
    """A RootfsProvider: mounts the prepared overlay (called inside the container's namespaces)."""

    base: Path
    lowers: tuple[str, ...]
    upper: str = UPPER
    work: str = WORK
    hint: str = "use --storage-driver vfs"  # what to do when the mount fails

    def mount(self, target: Path) -> None:
        mount_overlay(self.base, self.lowers, self.upper, self.work, target, hint=self.hint)

    def release(self) -> None:
        """The kernel serves the mount: nothing to stop."""


def link_lowers(base: Path, lower_dirs: Sequence[Path]) -> tuple[str, ...]:
    """(Re)create `base/l/<n>` -> each lower dir; returns the short names, top first.

    An image without layers gets one empty lower dir: overlay needs at least one."""
    links = base / LINKS
    links.mkdir(mode=0o700, exist_ok=True)
    for old in os.listdir(links):
        os.unlink(links / old)
    if not lower_dirs:
        (base / EMPTY_LOWER).mkdir(mode=0o755, exist_ok=True)
        return (EMPTY_LOWER,)
    names = []
    for index, lower in enumerate(lower_dirs):
        name = f"{LINKS}/{index}"
        os.symlink(os.path.abspath(lower), base / name)
        names.append(name)
    return tuple(names)


def prepare_dirs(base: Path, lower_dirs: Sequence[Path]) -> tuple[str, ...]:
    """The upper and work dirs plus the lower links; idempotent, so a restart reuses `diff/`."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    upper = base / UPPER
    if not upper.exists():
        upper.mkdir(mode=0o755)
        # The merged root takes the upper dir's mode: make it the image's.
        if lower_dirs:
            try:
                os.chmod(upper, os.stat(lower_dirs[0]).st_mode & 0o7777)
            except OSError:
                pass
    (base / WORK).mkdir(mode=0o700, exist_ok=True)
    return link_lowers(base, lower_dirs)


class OverlayDriver:
    name = "overlay"

    def prepare(self, container_dir: Path, lower_dirs: list[Path]) -> OverlayRootfs:
        return OverlayRootfs(container_dir, prepare_dirs(container_dir, lower_dirs))

    def remove(self, container_dir: Path) -> None:
        from rootless.storage import remove_container_storage

        remove_container_storage(container_dir)
