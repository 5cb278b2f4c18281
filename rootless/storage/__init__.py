"""Storage drivers: how a container's root filesystem is made from its image's layers.

    driver = select_driver(None)                  # --storage-driver / env / config / auto
    rootfs = driver.prepare(container_dir, lowers) # lowers: layer dirs, top first
    rootfs.mount(target)                           # inside the container's user+mount ns
    driver.remove(container_dir)                   # when the container is removed

`overlay` mounts kernel overlayfs in the user namespace; `fuse` serves the layers through a
fuseoverlay helper process per container; `vfs` copies the merged layers; `auto` picks overlay
when a probe mount works here, else fuse when a probe fuseoverlay mount works, else vfs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rootless.errors import RlError

if TYPE_CHECKING:
    from rootless.storage.probe import ProbeResult

DRIVER_NAMES = ("auto", "overlay", "fuse", "vfs")
ENV_VAR = "RL_STORAGE_DRIVER"
CONFIG_KEY = "storage_driver"
# Every name a driver may create in a container dir; removal takes them all, whichever
# driver made them (the choice may have changed since).
STORAGE_ENTRIES = ("diff", "work", "l", "empty", "vfs", "vfs.partial", "volume-overlays")


class RootfsProvider(Protocol):
    def mount(self, target: Path) -> None:
        """Mount the root filesystem on `target`; called as root inside the container's user
        and mount namespaces, before any spec mount."""

    def release(self) -> object:
        """Called once in rl after the container has ended: stop whatever serves the mount
        (the fuse driver's helper process); nothing for kernel mounts."""


class StorageDriver(Protocol):
    name: str

    def prepare(self, container_dir: Path, lower_dirs: list[Path]) -> RootfsProvider: ...

    def remove(self, container_dir: Path) -> None: ...


def config_storage_driver(text: str) -> str | None:
    """The top-level `storage_driver:` of config.yaml. One key does not justify importing
    a YAML parser on every `rl run`; this reads the plain scalar forms YAML allows there."""
    match = re.search(
        rf"^{CONFIG_KEY}[ \t]*:[ \t]*(?:\"([^\"]*)\"|'([^']*)'|([^\s#]*))[ \t]*(?:#.*)?$",
        text,
        re.MULTILINE,
    )
    if not match:
        return None
    return next((g for g in match.groups() if g is not None), None) or None


def requested_driver(
    name: str | None, env: dict[str, str] | None = None, config_text: str | None = None
) -> tuple[str, str]:
    """Which driver the user asked for, and where that came from: the argument (the
    `--storage-driver` flag reaches here through RL_STORAGE_DRIVER), the environment,
    config.yaml, or the default "auto"."""
    if name:
        return name, "requested"
    value = (env if env is not None else dict(os.environ)).get(ENV_VAR)
    if value:
        return value, f"--storage-driver or {ENV_VAR}"
    if config_text is None:
        config_text = _read_config()
    configured = config_storage_driver(config_text) if config_text else None
    if configured:
        return configured, f"{CONFIG_KEY} in config.yaml"
    return "auto", "default"


def _read_config() -> str:
    from rootless.paths import config_dir

    try:
        return (config_dir() / "config.yaml").read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def choose_driver(requested: str, probe: Callable[[str], ProbeResult]) -> tuple[str, str]:
    """The pure decision: (driver name, reason). For "auto", `probe("overlay")` and, only when
    overlay does not work, `probe("fuse")` say what works here."""
    if requested in ("overlay", "fuse", "vfs"):
        return requested, "chosen explicitly"
    if requested != "auto":
        raise RlError(
            f'unknown storage driver "{requested}": choose one of {", ".join(DRIVER_NAMES)}'
        )
    overlay = probe("overlay")
    if overlay.works:
        return "overlay", "kernel overlayfs works in a user namespace here"
    fuse = probe("fuse")
    if fuse.works:
        return "fuse", (
            f"kernel overlayfs does not work in a user namespace here ({overlay.reason}); "
            "fuseoverlay does"
        )
    return "vfs", (
        f"neither kernel overlayfs ({overlay.reason}) nor fuseoverlay ({fuse.reason}) works "
        "in a user namespace here"
    )


def _probe(kind: str) -> ProbeResult:
    from rootless.storage import probe

    return probe.overlay_support() if kind == "overlay" else probe.fuse_support()


def _decide(name: str | None) -> tuple[str, str]:
    requested, origin = requested_driver(name)
    driver, reason = choose_driver(requested, _probe)
    if requested != "auto":
        reason = f"{reason} ({origin})"
    return driver, reason


def select_driver(name: str | None = None) -> StorageDriver:
    driver, _ = _decide(name)
    return driver_by_name(driver)


def driver_by_name(name: str) -> StorageDriver:
    if name == "overlay":
        from rootless.storage.overlay import OverlayDriver

        return OverlayDriver()
    if name == "vfs":
        from rootless.storage.vfs import VfsDriver

        return VfsDriver()
    if name == "fuse":
        from rootless.storage.fuse import FuseDriver

        return FuseDriver()
    if name not in DRIVER_NAMES:
        choose_driver(name, _probe)  # raises the error that lists the names
    raise RlError(f'storage driver "{name}" cannot be used directly')


def describe() -> dict[str, str]:
    """For `rl info`: {"driver": "overlay", "reason": "..."}."""
    driver, reason = _decide(None)
    return {"driver": driver, "reason": reason}


def remove_container_storage(container_dir: Path) -> None:
    """Remove whatever a driver made in `container_dir`. Upper dirs and copies hold files of
    subordinate ids, so this runs in the user namespace (unless we are real root)."""
    present = [
        os.fspath(container_dir / e) for e in STORAGE_ENTRIES if os.path.lexists(container_dir / e)
    ]
    if not present:
        return
    from rootless.storage.tree import remove_paths

    if os.getuid() == 0:
        remove_paths(present)
        return
    from rootless.userns import run_in_userns

    run_in_userns(remove_paths, present)


def describe_rootfs(driver: str, lowers: list[Path], rootfs: str | None) -> dict[str, Any]:
    """What `reopen_rootfs` needs to serve a created container's root filesystem again (in
    the monitor, at every start): the driver and its lower dirs, or the --rootfs path."""
    if rootfs is not None:
        return {"rootfs": rootfs}
    return {"driver": driver, "lowers": [os.fspath(p) for p in lowers]}


def reopen_rootfs(container_dir: Path, description: dict[str, Any]) -> RootfsProvider:
    """The provider for an existing container (drivers' prepare() is idempotent: the upper
    dir and its changes are kept)."""
    if "rootfs" in description:
        return rootfs_provider(description["rootfs"], container_dir)
    if "driver" not in description:
        raise RlError(
            f"container {container_dir.name} was created by an older rl without its storage "
            "description: remove it and create it again"
        )
    lowers = [Path(p) for p in description["lowers"]]
    return driver_by_name(description["driver"]).prepare(container_dir, lowers)


def rootfs_provider(spec: str, container_dir: Path, *, cwd: str | None = None) -> RootfsProvider:
    """`--rootfs PATH[:O]`: an existing directory as the root filesystem, bind-mounted, or
    with `:O` the lower dir of an overlay whose changes stay in the container dir."""
    path, overlay = (spec[:-2], True) if spec.endswith(":O") else (spec, False)
    if not path:
        raise RlError("--rootfs needs a directory")
    full = Path(os.path.join(cwd or os.getcwd(), path)).resolve()
    if not full.is_dir():
        raise RlError(f"--rootfs {path}: no such directory")
    if overlay:
        from rootless.storage.overlay import OverlayDriver

        provider = OverlayDriver().prepare(container_dir, [full])
        return provider._replace(hint=f"use --rootfs {path} without :O")
    from rootless.storage.vfs import BindRootfs

    return BindRootfs(full)
