"""Directory trees of image layers: flattening layers into one copy, chowning, removing.

These run as root of the user namespace (callers wrap them in `run_in_userns`), where the
subordinate uids that own layer files are ordinary, mapped ids: copies keep their owners and
removal is allowed. Layers are overlay lower dirs (STORE-API.md): a whiteout is a character
device 0:0 named like the entry it hides, an opaque directory carries `user.overlay.opaque=y`.
"""

from __future__ import annotations

import importlib
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

OPAQUE_XATTR = "user.overlay.opaque"
# Overlay's own bookkeeping must not leak into a flattened copy.
_PRIVATE_XATTR_PREFIXES = ("user.overlay.", "trusted.overlay.")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def dir_stack(stack: Sequence[str], name: str) -> list[str] | None:
    """The layer directories (top first) that make up `name` inside the merged directory
    made of `stack`; None when the merged view has no directory there.

    The topmost layer that has the entry decides: a whiteout or a non-directory hides the
    lower ones; a directory merges with the directories below it down to the first opaque one.
    """
    found: list[str] = []
    for layer_dir in stack:
        path = os.path.join(layer_dir, name)
        st = _lstat(path)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            break  # a whiteout or a file ends the directory here
        found.append(path)
        if is_opaque(path):
            break
    return found or None


def merge_layers(lowers: Sequence[str | Path], dest: str | Path, subpath: str = "") -> bool:
    """Copy the merged view of `lowers` (top first) at `subpath` into `dest`.

    `dest` is created when missing (the whole root filesystem for the vfs driver) or filled
    when it exists (a new, empty volume getting the image's content). Owners, modes, times,
    xattrs and hard links are kept; whiteouts and opaque dirs are applied, not copied.
    Returns False when the merged view has no directory at `subpath` (nothing was copied).
    """
    stack: list[str] | None = [os.fspath(p) for p in lowers]
    for part in [p for p in subpath.split("/") if p and p != "."]:
        if not stack:
            break
        stack = dir_stack(stack, part)
    dest = os.fspath(dest)
    if not stack:
        if not os.path.isdir(dest):
            os.mkdir(dest, 0o755)
        return False
    if not os.path.isdir(dest):
        os.mkdir(dest, 0o700)
    links: dict[tuple[int, int], str] = {}
    _merge_dir(stack, dest, links)
    _copy_attrs(stack[0], dest, os.lstat(stack[0]))
    return True


def _merge_dir(stack: Sequence[str], dest: str, links: dict[tuple[int, int], str]) -> None:
    seen: set[str] = set()
    for level, layer_dir in enumerate(stack):
        with os.scandir(layer_dir) as entries:
            for entry in entries:
                if entry.name in seen:
                    continue
                seen.add(entry.name)
                st = entry.stat(follow_symlinks=False)
                if is_whiteout(st):
                    continue
                target = os.path.join(dest, entry.name)
                if stat.S_ISDIR(st.st_mode):
                    sub = dir_stack(stack[level:], entry.name) or [entry.path]
                    os.mkdir(target, 0o700)
                    _merge_dir(sub, target, links)
                    _copy_attrs(entry.path, target, st)
                else:
                    _copy_entry(entry.path, target, st, links)


def _copy_entry(src: str, dest: str, st: os.stat_result, links: dict[tuple[int, int], str]) -> None:
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in links:
        os.link(links[key], dest)
        return
    mode = st.st_mode
    if stat.S_ISREG(mode):
        _copy_file(src, dest)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dest)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dest, 0o600)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        try:
            os.mknod(dest, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        except PermissionError:
            return  # device nodes cannot be made in a user namespace; /dev is mounted anyway
    else:
        return  # sockets are never part of an image
    _copy_attrs(src, dest, st)
    if st.st_nlink > 1:
        links[key] = dest


def _copy_file(src: str, dest: str) -> None:
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fd_out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            size = os.fstat(fd_in).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(fd_out, fd_in, offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_attrs(src: str, dest: str, st: os.stat_result) -> None:
    """Owner, then mode (chown clears set-id bits), xattrs, then times (last, as writes
    into a directory change its mtime)."""
    os.lchown(dest, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        if name.startswith(_PRIVATE_XATTR_PREFIXES):
            continue
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dest, name, value, follow_symlinks=False)
        except OSError:
            continue  # e.g. security.* the filesystem or namespace refuses: not fatal
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def chown_tree(path: str | Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks (podman's `U` volume option)."""
    os.lchown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, gid)


def remove_tree(path: str | Path) -> None:
    """rm -rf for trees with odd modes (0000 dirs, overlay work dirs); a missing path is fine.

    Uses the image store's remove_tree when it is there, so there is one rm -rf in rl."""
    try:
        store_remove: Callable[[Path], None] = importlib.import_module(
            "rootless.images.unpack"
        ).remove_tree
    except (ImportError, AttributeError):
        store_remove = _remove_tree
    if os.path.lexists(path):
        store_remove(Path(path))


def _remove_tree(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        path.unlink()
        return

    def retry(func: Callable[..., Any], failed: str, _exc: object) -> None:
        # A directory without write or search permission: open it up and try again.
        parent = os.path.dirname(failed)
        for p in (parent, failed):
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    os.chmod(p, 0o700)
            except OSError:
                pass
        if func is os.rmdir or func is os.unlink:
            func(failed)
        else:
            shutil.rmtree(failed, onerror=retry)

    shutil.rmtree(path, onerror=retry)


def remove_paths(paths: Sequence[str | Path]) -> None:
    for path in paths:
        remove_tree(path)
