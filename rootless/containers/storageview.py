"""Where a container's files are when it does not run: its image's layers and its changes.

The overlay and fuse drivers keep the changes in `diff/` (an overlay upper dir); the vfs
driver in `vfs/`, a full copy. `mount_rootfs` makes the container's root filesystem appear at
its `rootfs/` mount point, in the calling process's mount namespace (call it as root of a user
namespace with its own mount namespace, e.g. from run_in_userns(..., unshare_flags=CLONE_NEWNS)).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from rootless.errors import RlError

if TYPE_CHECKING:
    from rootless.images.store import Image, ImageStore

UPPER = "diff"
COPY = "vfs"


class StorageView(NamedTuple):
    container_dir: Path
    root: Path  # the upper dir, or the vfs copy
    lowers: list[Path]  # the image's layer dirs, top first
    is_copy: bool  # vfs: `root` holds everything, not just the changes


def container_storage(container_dir: Path, images: ImageStore, image: Image) -> StorageView:
    lowers = [images.layer_path(d) for d in reversed(image.diff_ids)]
    copy = container_dir / COPY
    if copy.is_dir():
        return StorageView(container_dir, copy, lowers, True)
    upper = container_dir / UPPER
    if upper.is_dir():
        return StorageView(container_dir, upper, lowers, False)
    raise RlError(
        f"container storage of {container_dir.name} is missing: the container was never "
        "started or its storage was removed"
    )


def mount_rootfs(view: StorageView, target: Path) -> None:
    """Mount the container's root filesystem on `target` (see the module doc). The upper dir
    is mounted with kernel overlayfs, as the overlay driver does; the fuse driver's upper dir
    has the same format."""
    if view.is_copy:
        from rootless.storage.vfs import BindRootfs

        BindRootfs(view.root).mount(target)
        return
    from rootless.storage.overlay import OverlayDriver

    OverlayDriver().prepare(view.container_dir, view.lowers).mount(target)
