"""Does kernel overlayfs (else FUSE) work in a user namespace here? Asked once per boot and store.

The probe mounts a tiny overlay with `userxattr` in a fresh user+mount namespace, on the same
filesystem as the store (overlay's support depends on the upper filesystem), and exercises
what containers need: reading a lower file, deleting it (a whiteout in the upper dir) and
creating a directory. The answer is cached in runtime_dir, keyed by kernel release and the
store's device, so `rl run` pays for it only the first time.

The FUSE probe (asked only when overlay does not work) does the same through the fuse driver
itself: a fuseoverlay helper serving a mount made in a fresh user+mount namespace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from rootless import paths

if TYPE_CHECKING:
    from rootless.storage.fuse import FuseRootfs

CACHE_NAME = "storage-probe.json"
FUSE_CACHE_NAME = "storage-probe-fuse.json"


# A NamedTuple rather than a dataclass: this module is on the path of every `rl run`, and a
# dataclass costs ~0.5 ms to create at import (start-up is issue 3's target).
class ProbeResult(NamedTuple):
    works: bool
    reason: str  # why not, when it does not work


def _probe_key(store: Path) -> str:
    return f"{os.uname().release} dev={os.stat(store).st_dev}"


class _NoScratch(Exception):
    """The probe could not make its directory in the store: an answer about this store's
    directory (its owner, say), not about the kernel and filesystem the cache is keyed by."""

    def __init__(self, result: ProbeResult) -> None:
        super().__init__(result.reason)
        self.result = result


def _scratch(store: Path, prefix: str) -> str:
    import tempfile  # here: probes are cached, and tempfile costs ~1 ms of every `rl run`

    try:
        return tempfile.mkdtemp(prefix=prefix, dir=store)
    except OSError as exc:
        raise _NoScratch(
            ProbeResult(False, f"cannot make a probe directory in {store}: {exc.strerror}")
        ) from None


def _try_overlay(scratch: str) -> ProbeResult:
    """Runs inside the new user and mount namespaces."""
    from rootless import syscalls
    from rootless.storage.overlay import mount_overlay
    from rootless.storage.tree import remove_tree

    base = Path(scratch)
    for name in ("lower", "upper", "work", "merged"):
        (base / name).mkdir()
    (base / "lower" / "file").write_text("probe")
    merged = base / "merged"
    try:
        mount_overlay(base, ["lower"], "upper", "work", merged)
        try:
            if (merged / "file").read_text() != "probe":
                return ProbeResult(False, "overlay shows the wrong content")
            (merged / "file").unlink()
            (merged / "dir").mkdir()
            whiteout = os.lstat(base / "upper" / "file")
            if whiteout.st_rdev != 0:
                return ProbeResult(False, "overlay did not create a whiteout")
        finally:
            syscalls.umount(merged, syscalls.MNT_DETACH)
        return ProbeResult(True, "")
    except Exception as exc:  # any failure means "use something else"
        return ProbeResult(False, str(exc))
    finally:
        remove_tree(base)


def run_probe(store: Path) -> ProbeResult:
    from rootless import syscalls
    from rootless.errors import RlError
    from rootless.userns import run_in_userns

    scratch = _scratch(store, ".overlay-probe-")
    try:
        return run_in_userns(_try_overlay, scratch, unshare_flags=syscalls.CLONE_NEWNS)
    except RlError as exc:
        return ProbeResult(False, exc.message)
    finally:
        try:
            os.rmdir(scratch)  # normally _try_overlay has removed it already
        except OSError:
            pass


def _try_fuse(provider: FuseRootfs, scratch: str) -> ProbeResult:
    """Runs inside the new user and mount namespaces."""
    from rootless import syscalls

    base = Path(scratch)
    merged = base / "merged"
    merged.mkdir()
    try:
        provider.mount(merged)
        try:
            if (merged / "file").read_text() != "probe":
                return ProbeResult(False, "fuseoverlay shows the wrong content")
            (merged / "file").unlink()
            (merged / "dir").mkdir()
        finally:
            syscalls.umount(merged, syscalls.MNT_DETACH)
        if os.lstat(base / "c" / "diff" / "file").st_rdev != 0:
            return ProbeResult(False, "fuseoverlay did not create a whiteout")
        return ProbeResult(True, "")
    except Exception as exc:
        return ProbeResult(False, str(exc))


def run_fuse_probe(store: Path) -> ProbeResult:
    from rootless import syscalls
    from rootless.errors import RlError
    from rootless.storage.fuse import FuseDriver
    from rootless.storage.tree import remove_tree
    from rootless.userns import run_in_userns

    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return ProbeResult(False, "/dev/fuse is missing or not readable and writable for you")
    scratch = _scratch(store, ".fuse-probe-")
    try:
        lower = Path(scratch) / "lower"
        lower.mkdir()
        (lower / "file").write_text("probe")
        provider = FuseDriver().prepare(Path(scratch) / "c", [lower])
        try:
            result = run_in_userns(_try_fuse, provider, scratch, unshare_flags=syscalls.CLONE_NEWNS)
        finally:
            death = provider.release(report=False)
        if result.works and death:
            return ProbeResult(False, f"the fuseoverlay helper failed: {death}")
        return result
    except RlError as exc:
        return ProbeResult(False, exc.message)
    finally:
        try:
            run_in_userns(remove_tree, scratch)
        except RlError:
            pass


def overlay_support(*, refresh: bool = False) -> ProbeResult:
    """The cached answer for this kernel and store, probing when there is none."""
    return _cached(CACHE_NAME, run_probe, refresh)


def fuse_support(*, refresh: bool = False) -> ProbeResult:
    """Like overlay_support, for the fuse driver."""
    return _cached(FUSE_CACHE_NAME, run_fuse_probe, refresh)


def _cached(name: str, probe: Callable[[Path], ProbeResult], refresh: bool) -> ProbeResult:
    try:
        store = paths.ensure_dir(paths.data_dir())
        key = _probe_key(store)
    except OSError as exc:
        return ProbeResult(False, f"cannot use the store {paths.data_dir()}: {exc.strerror}")
    cache = paths.runtime_dir() / name
    if not refresh:
        try:
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                return ProbeResult(bool(cached["works"]), str(cached.get("reason", "")))
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    try:
        result = probe(store)
    except _NoScratch as exc:
        return exc.result  # not cached: it says nothing about other stores on this filesystem
    try:
        paths.ensure_dir(cache.parent)
        tmp = cache.with_name(f".{name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "works": result.works, "reason": result.reason}))
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache we cannot write only costs a probe next time
    return result
