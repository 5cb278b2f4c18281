"""Copy-up: a lower file or directory reproduced in the upper layer before it is modified.

Built in the work dir and renamed into place, so the upper never holds a half-copied file. Mode,
ownership, times and extended attributes are kept; holes stay holes (SEEK_DATA/SEEK_HOLE with
copy_file_range).
"""

from __future__ import annotations

import errno
import os
import stat

from fuseoverlay.resolve import is_private_xattr

CHUNK = 1 << 30


def copy_xattrs(src: bytes, dst: bytes) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if is_private_xattr(name):
            continue
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError:
            # e.g. trusted.* without privilege or user.* on a symlink: what the kernel does too.
            pass


def _copy_range(src_fd: int, dst_fd: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        want = min(CHUNK, end - offset)
        try:
            done = os.copy_file_range(src_fd, dst_fd, want, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            data = os.pread(src_fd, min(want, 1 << 20), offset)
            done = os.pwrite(dst_fd, data, offset) if data else 0
        if done == 0:
            return
        offset += done


def copy_data(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy the first `size` bytes, keeping holes; the destination ends up `size` long."""
    offset = 0
    while offset < size:
        try:
            data_start = os.lseek(src_fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            data_start = offset  # no SEEK_DATA here: copy everything
            _copy_range(src_fd, dst_fd, data_start, size)
            break
        if data_start >= size:
            break
        hole = os.lseek(src_fd, data_start, os.SEEK_HOLE)
        end = min(hole, size)
        _copy_range(src_fd, dst_fd, data_start, end)
        offset = end
    os.ftruncate(dst_fd, size)


def _own_and_time(path: bytes, st: os.stat_result, keep_owner: bool) -> None:
    if keep_owner:
        try:
            os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
        except PermissionError:
            pass  # a plain user cannot give files away; the copy stays the user's
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def copy_node(
    src: bytes, tmp: bytes, st: os.stat_result, *, keep_owner: bool, size: int | None = None
) -> None:
    """Reproduce `src` (whose lstat is `st`) at `tmp`; a directory is made empty.

    `size` limits the data copied (a copy-up for truncation copies only what survives).
    """
    mode = st.st_mode
    if stat.S_ISREG(mode):
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            dst_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                copy_data(src_fd, dst_fd, st.st_size if size is None else min(size, st.st_size))
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
    elif stat.S_ISDIR(mode):
        os.mkdir(tmp, 0o700)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), tmp)
    else:
        os.mknod(tmp, mode, st.st_rdev)
    try:
        copy_xattrs(src, tmp)
        _own_and_time(tmp, st, keep_owner)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    except BaseException:
        if stat.S_ISDIR(mode):
            os.rmdir(tmp)
        else:
            os.unlink(tmp)
        raise
