"""The layer directories on disk: observing entries, listing, whiteouts and opaque marks."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence
from typing import Any

from fuseoverlay.resolve import (
    OPAQUE_MARKER,
    OPAQUE_XATTR,
    OPAQUE_XATTRS,
    UPPER,
    WHITEOUT_PREFIX,
    Kind,
    is_opaque,
    join,
)

TEMP_PREFIX = b"#fo-"  # names this implementation makes in the work dir
AT_FDCWD = -100
RENAME_EXCHANGE = 2
_libc: Any = None  # ctypes' libc, loaded on the first exchange


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class Layers:
    def __init__(self, upper: str, lowers: Sequence[str], work: str) -> None:
        # realpath: a layer dir may be named through a symlink (podman's `l/<short id>`), and
        # entries are looked at with lstat, which would see the link instead of the dir.
        self.roots: list[bytes] = [os.fsencode(os.path.realpath(d)) for d in (upper, *lowers)]
        self.work = os.fsencode(os.path.realpath(work))
        self._counter = 0

    def clean_work(self) -> None:
        """Remove what an earlier mount left half-made in the work dir (a crash mid copy-up)."""
        with os.scandir(self.work) as it:
            stale = [entry.path for entry in it if entry.name.startswith(TEMP_PREFIX)]
        for path in stale:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    def real(self, layer: int, path: bytes) -> bytes:
        root = self.roots[layer]
        return root + b"/" + path if path else root

    def lstat(self, layer: int, path: bytes) -> os.stat_result | None:
        try:
            return os.lstat(self.real(layer, path))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None

    def observe(
        self, layer: int, path: bytes, *, bottom: bool = False
    ) -> tuple[Kind, os.stat_result | None]:
        """What `layer` holds at `path`. On the `bottom` layer of a lookup nothing below can be
        hidden: a `.wh.NAME` file is not looked for (absent and whited out mean the same there)
        and a directory is not asked whether it is opaque (three system calls saved)."""
        st = self.lstat(layer, path)
        if st is None:
            if bottom:
                return Kind.ABSENT, None
            head, _, name = path.rpartition(b"/")
            if self.lstat(layer, join(head, WHITEOUT_PREFIX + name)) is not None:
                return Kind.WHITEOUT, None
            return Kind.ABSENT, None
        if stat.S_ISDIR(st.st_mode):
            if bottom:
                return Kind.DIR, st
            return (Kind.OPAQUE_DIR if self.dir_is_opaque(layer, path) else Kind.DIR), st
        if is_whiteout(st):
            return Kind.WHITEOUT, st
        return Kind.OTHER, st

    def dir_is_opaque(self, layer: int, path: bytes) -> bool:
        real = self.real(layer, path)
        values: dict[str, bytes] = {}
        try:
            names = os.listxattr(real, follow_symlinks=False)
        except OSError:
            names = []
        for name in names:
            if name in OPAQUE_XATTRS:
                try:
                    values[name] = os.getxattr(real, name, follow_symlinks=False)
                except OSError:
                    pass
        marker = os.path.lexists(real + b"/" + OPAQUE_MARKER)
        return is_opaque(values, marker)

    def entries(self, layer: int, path: bytes) -> list[tuple[bytes, bool]]:
        """(name, is_whiteout) for each entry of one layer's directory."""
        result: list[tuple[bytes, bool]] = []
        try:
            with os.scandir(self.real(layer, path)) as it:
                for entry in it:
                    whiteout = False
                    if not (
                        entry.is_file(follow_symlinks=False)
                        or entry.is_dir(follow_symlinks=False)
                        or entry.is_symlink()
                    ):  # a device, fifo or socket: only a 0:0 character device is a whiteout
                        whiteout = is_whiteout(entry.stat(follow_symlinks=False))
                    result.append((entry.name, whiteout))
        except (FileNotFoundError, NotADirectoryError):
            pass
        return result

    def temp_name(self) -> bytes:
        """A fresh name in the work dir (same filesystem as the upper, for atomic renames)."""
        self._counter += 1
        return self.work + b"/" + TEMP_PREFIX + b"%d-%d" % (os.getpid(), self._counter)

    def make_whiteout(self, path: bytes) -> None:
        """Hide `path` of the lower layers: a 0:0 character device in the upper, put in place
        atomically (replacing an upper non-directory there)."""
        tmp = self.temp_name()
        try:
            os.mknod(tmp, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        except PermissionError:
            # No whiteout devices here: fall back to the `.wh.NAME` file tarballs use.
            head, _, name = path.rpartition(b"/")
            fd = os.open(
                self.real(UPPER, join(head, WHITEOUT_PREFIX + name)),
                os.O_CREAT | os.O_WRONLY,
                0o600,
            )
            os.close(fd)
            try:
                os.unlink(self.real(UPPER, path))
            except FileNotFoundError:
                pass
            return
        os.rename(tmp, self.real(UPPER, path))

    def clear_whiteout(self, path: bytes) -> bool:
        """Remove a whiteout for `path` from the upper; whether there was one."""
        found = False
        real = self.real(UPPER, path)
        st = self.lstat(UPPER, path)
        if st is not None and is_whiteout(st):
            os.unlink(real)
            found = True
        head, _, name = path.rpartition(b"/")
        try:
            os.unlink(self.real(UPPER, join(head, WHITEOUT_PREFIX + name)))
            found = True
        except (FileNotFoundError, NotADirectoryError):
            pass
        return found

    def set_opaque(self, path: bytes) -> None:
        try:
            os.setxattr(self.real(UPPER, path), OPAQUE_XATTR, b"y", follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            fd = os.open(
                self.real(UPPER, join(path, OPAQUE_MARKER)), os.O_CREAT | os.O_WRONLY, 0o600
            )
            os.close(fd)

    def exchange(self, a: bytes, b: bytes) -> None:
        """Swap two upper entries atomically (renameat2 with RENAME_EXCHANGE)."""
        global _libc
        import ctypes

        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        flags = RENAME_EXCHANGE
        if _libc.renameat2(AT_FDCWD, self.real(UPPER, a), AT_FDCWD, self.real(UPPER, b), flags):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def empty_upper_dir(self, path: bytes) -> None:
        """Remove the whiteouts left in an upper directory that is merged-empty."""
        real = self.real(UPPER, path)
        with os.scandir(real) as it:
            for entry in it:
                if entry.name.startswith(WHITEOUT_PREFIX) or is_whiteout(
                    entry.stat(follow_symlinks=False)
                ):
                    os.unlink(entry.path)
