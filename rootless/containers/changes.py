"""What a container changed in its image: `rl diff`'s list and `rl commit`'s layer tar.

The overlay and fuse drivers keep a container's changes in its upper dir (`diff/`), in kernel
overlayfs's format: a whiteout is a character device 0:0 (fuseoverlay also honours an empty
`.wh.NAME` file), an opaque directory carries `user.overlay.opaque=y` (or holds a
`.wh..wh..opq`). The vfs driver keeps a full copy (`vfs/`), which is compared with the image.

Rules, checked against podman 4.3 (`touch /new; rm /etc/motd; rm -rf /d; mkdir /d`):
- an entry of the upper dir is "A" when the image has nothing at its path, else "C" (so a
  directory that only got new entries is "C", as podman shows /etc);
- a whiteout is "D"; an opaque directory also deletes whatever the image had inside it;
- the files the runtime creates as mount points (/etc/hosts, /run/.containerenv, ...) are
  left out, as podman does.

Everything here reads files owned by subordinate ids, so callers run it as root of the user
namespace (`run_in_userns`), where the store's ids are plain ids.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from typing import IO, NamedTuple

from rootless.storage.tree import dir_stack, is_whiteout

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
PRIVATE_XATTR_PREFIXES = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")
# podman's initInodes: mount points the runtime makes, never shown as changes.
RUNTIME_PATHS = frozenset(
    {
        "/dev",
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/proc",
        "/run",
        "/run/notify",
        "/run/.containerenv",
        "/run/secrets",
        "/sys",
        "/etc/mtab",
    }
)
ADDED, CHANGED, DELETED = "A", "C", "D"


class Change(NamedTuple):
    kind: str  # A, C or D
    path: str  # absolute, inside the container
    hidden_by_opaque: bool = False  # D only: the image's entry inside an opaque directory


class Scan(NamedTuple):
    changes: list[Change]
    opaque_dirs: list[str]  # directories of the upper dir that hide the image's content


def _is_opaque_dir(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return os.path.lexists(os.path.join(path, OPAQUE_MARKER))


def _whiteout_target(name: str, st: os.stat_result) -> str | None:
    """The name a whiteout entry hides, None for an ordinary entry."""
    if is_whiteout(st):
        return name
    if name.startswith(WHITEOUT_PREFIX) and name != OPAQUE_MARKER and stat.S_ISREG(st.st_mode):
        return name[len(WHITEOUT_PREFIX) :]
    return None


def _in_stack(stack: Sequence[str], name: str) -> bool:
    """Whether the merged view of the layer dirs `stack` (top first) has `name`."""
    for layer_dir in stack:
        try:
            st = os.lstat(os.path.join(layer_dir, name))
        except OSError:
            continue
        return not is_whiteout(st)
    return False


def _merged_names(stack: Sequence[str]) -> list[str]:
    """The names the merged directory of `stack` lists."""
    seen: set[str] = set()
    visible: list[str] = []
    for layer_dir in stack:
        try:
            entries = list(os.scandir(layer_dir))
        except OSError:
            continue
        for entry in entries:
            if entry.name in seen or entry.name.startswith(WHITEOUT_PREFIX):
                continue
            seen.add(entry.name)
            if not is_whiteout(entry.stat(follow_symlinks=False)):
                visible.append(entry.name)
    return visible


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


def scan_upper(upper: str, lowers: Sequence[str]) -> Scan:
    """The changes an upper dir makes to the image layers `lowers` (top first)."""
    changes: list[Change] = []
    opaque: list[str] = []
    _scan_dir(upper, "/", list(lowers), changes, opaque)
    return Scan(changes, opaque)


def _scan_dir(
    directory: str, where: str, stack: list[str], changes: list[Change], opaque: list[str]
) -> None:
    for name in sorted(os.listdir(directory)):
        if name == OPAQUE_MARKER:
            continue
        path = os.path.join(directory, name)
        st = os.lstat(path)
        target = _whiteout_target(name, st)
        if target is not None:
            changes.append(Change(DELETED, _join(where, target)))
            continue
        inside = _join(where, name)
        in_image = _in_stack(stack, name)
        changes.append(Change(CHANGED if in_image else ADDED, inside))
        if not stat.S_ISDIR(st.st_mode):
            continue
        below = (dir_stack(stack, name) or []) if in_image else []
        if _is_opaque_dir(path):
            opaque.append(inside)
            present = set(os.listdir(path))
            for hidden in sorted(_merged_names(below)):
                if hidden not in present:
                    changes.append(Change(DELETED, _join(inside, hidden), hidden_by_opaque=True))
            below = []
        _scan_dir(path, inside, below, changes, opaque)


def scan_copy(copy: str, lowers: Sequence[str]) -> Scan:
    """The vfs driver: compare the container's full copy with the image, entry by entry
    (owner, mode, size, mtime, link target), and mark the parents of changes changed."""
    changes: list[Change] = []
    _compare_dir(copy, "/", list(lowers), changes)
    listed = {c.path for c in changes}
    parents: set[str] = set()
    for change in changes:
        parent = os.path.dirname(change.path)
        while parent != "/" and parent not in listed and parent not in parents:
            parents.add(parent)
            parent = os.path.dirname(parent)
    changes.extend(Change(CHANGED, p) for p in parents)
    changes.sort(key=lambda c: c.path.split("/"))
    return Scan(changes, [])


def _same(a: os.stat_result, b: os.stat_result, a_path: str, b_path: str) -> bool:
    if (stat.S_IFMT(a.st_mode), stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid) != (
        stat.S_IFMT(b.st_mode),
        stat.S_IMODE(b.st_mode),
        b.st_uid,
        b.st_gid,
    ):
        return False
    if stat.S_ISDIR(a.st_mode):
        return True  # content changes show as changes of the entries themselves
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(a_path) == os.readlink(b_path)
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def _image_entry(stack: Sequence[str], name: str) -> str | None:
    for layer_dir in stack:
        path = os.path.join(layer_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        return None if is_whiteout(st) else path
    return None


def _compare_dir(directory: str, where: str, stack: list[str], changes: list[Change]) -> None:
    present = set()
    for name in sorted(os.listdir(directory)):
        present.add(name)
        path = os.path.join(directory, name)
        st = os.lstat(path)
        inside = _join(where, name)
        image_path = _image_entry(stack, name)
        if image_path is None:
            changes.append(Change(ADDED, inside))
            below: list[str] = []
        else:
            image_st = os.lstat(image_path)
            if not _same(st, image_st, path, image_path):
                changes.append(Change(CHANGED, inside))
            below = dir_stack(stack, name) or [] if stat.S_ISDIR(image_st.st_mode) else []
        if stat.S_ISDIR(st.st_mode):
            _compare_dir(path, inside, below, changes)
    for name in sorted(_merged_names(stack)):
        if name not in present:
            changes.append(Change(DELETED, _join(where, name)))


def visible(changes: Sequence[Change]) -> list[Change]:
    """What `rl diff` shows: the runtime's mount points left out."""
    return [c for c in changes if c.path not in RUNTIME_PATHS]


# --- the layer tar ----------------------------------------------------------------------


class LayerTar(NamedTuple):
    diff_id: str  # sha256:<hex> of the tar
    size: int


def write_layer(root: str, scan: Scan, out_path: str) -> LayerTar:
    """Write the changes of `scan` (read from `root`, the upper dir or the vfs copy) as an
    OCI layer tar to `out_path`: whiteouts become `.wh.NAME`, opaque directories get a
    `.wh..wh..opq` member, hard links stay links, overlay's own xattrs stay out."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(out_path, "wb") as raw:

        class Hashing:
            def write(self, data: bytes) -> int:
                nonlocal size
                digest.update(data)
                size += len(data)
                return raw.write(data)

        _write_members(root, scan, Hashing())  # type: ignore[arg-type]
    return LayerTar("sha256:" + digest.hexdigest(), size)


def _write_members(root: str, scan: Scan, out: IO[bytes]) -> None:
    opaque = set(scan.opaque_dirs)
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for member, source in _members(root, scan, opaque, links):
            if source is None:
                tar.addfile(member)
            else:
                with open(source, "rb") as f:
                    tar.addfile(member, f)


def _members(
    root: str, scan: Scan, opaque: set[str], links: dict[tuple[int, int], str]
) -> Iterator[tuple[tarfile.TarInfo, str | None]]:
    for change in sorted(scan.changes, key=lambda c: c.path.split("/")):
        relative = change.path.lstrip("/")
        if change.kind == DELETED:
            if change.hidden_by_opaque:
                continue  # the opaque marker hides it
            parent, _, name = relative.rpartition("/")
            yield tarfile.TarInfo(_join(parent, WHITEOUT_PREFIX + name).lstrip("/")), None
            continue
        path = os.path.join(root, relative)
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size == 0 and change.path in RUNTIME_PATHS:
            continue  # a mount point the runtime made; the content lives elsewhere
        if _whiteout_target(os.path.basename(path), st) is not None:
            continue
        member = _tar_info(relative, path, st, links)
        if member is None:
            continue
        yield member, path if member.type == tarfile.REGTYPE else None
        if change.path in opaque:
            marker = tarfile.TarInfo(f"{relative}/{OPAQUE_MARKER}")
            yield marker, None


def _tar_info(
    relative: str, path: str, st: os.stat_result, links: dict[tuple[int, int], str]
) -> tarfile.TarInfo | None:
    info = tarfile.TarInfo(relative)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = st.st_mtime
    mode = st.st_mode
    key = (st.st_dev, st.st_ino)
    if stat.S_ISREG(mode) and st.st_nlink > 1 and key in links:
        info.type, info.linkname = tarfile.LNKTYPE, links[key]
    elif stat.S_ISREG(mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
        if st.st_nlink > 1:
            links[key] = relative
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return None  # sockets are not part of an image
    xattrs = _xattrs(path)
    if xattrs:
        info.pax_headers = {
            f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")
            for name, value in xattrs.items()
        }
    return info


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    result = {}
    for name in names:
        if name.startswith(PRIVATE_XATTR_PREFIXES):
            continue
        try:
            result[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return result
