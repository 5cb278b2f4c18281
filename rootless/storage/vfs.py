"""The vfs driver: a full copy of the merged layers per container, for hosts without a usable
kernel overlay. Slow to create and heavy on disk, but it needs nothing from the kernel beyond a
bind mount. The copy is made as root of the user namespace so files keep their owners."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rootless import syscalls
from rootless.errors import RlError

COPY = "vfs"


@dataclass(frozen=True)
class BindRootfs:
    """A RootfsProvider that bind-mounts an existing directory (vfs copies, `--rootfs PATH`)."""

    source: Path

    def mount(self, target: Path) -> None:
        try:
            syscalls.mount(self.source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
        except OSError as exc:
            raise RlError(
                f"cannot bind-mount the root filesystem {self.source} on {target}: "
                f"{exc.strerror or exc}"
            ) from exc

    def release(self) -> None:
        """The kernel serves the mount: nothing to stop."""


def _copy_layers(lowers: list[str], dest: str) -> None:
    from rootless.storage.tree import merge_layers, remove_tree

    remove_tree(dest)  # a copy an earlier, interrupted prepare left behind
    merge_layers(lowers, dest)


class VfsDriver:
    name = "vfs"

    def prepare(self, container_dir: Path, lower_dirs: list[Path]) -> BindRootfs:
        copy = container_dir / COPY
        if not copy.is_dir():
            from rootless.userns import run_in_userns

            container_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial = container_dir / f"{COPY}.partial"
            run_in_userns(_copy_layers, [os.fspath(p) for p in lower_dirs], os.fspath(partial))
            os.rename(partial, copy)
        return BindRootfs(copy)

    def remove(self, container_dir: Path) -> None:
        from rootless.storage import remove_container_storage

        remove_container_storage(container_dir)
