"""`rl cp`: copying between the host and a container's file system, or to/from tar streams.

Both ends are trees under a root: the host's `/`, or the container's root (/proc/PID/root of
a running container, its mounted rootfs otherwise). Paths inside a container are resolved
*in* its root (openat2 RESOLVE_IN_ROOT), so a symlink there that points at `/` or climbs
with `..` stays inside the container; entries are created relative to directory fds without
following symlinks. The copy runs as root of a user namespace with the container's id
mapping, so owners are kept through that mapping: a file of uid 1000 in the container is
subuid-start+999 on the host and back (podman's `--archive`, the default).

Placement follows docker/podman cp:
- SRC a file: onto DEST when DEST is a file or does not exist, else into the directory DEST;
- SRC a directory: DEST missing -> DEST becomes the copy; DEST a directory -> DEST/<name>,
  or with SRC ending in `/.` its content goes into DEST; DEST a file -> error;
- `-` as SRC: a tar stream on stdin is extracted into the directory DEST;
  `-` as DEST: SRC is written to stdout as a tar stream.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import IO, NamedTuple

from rootless import syscalls as sc
from rootless.errors import RlError


class Location(NamedTuple):
    """A path under a root directory: the host's `/` or a container's root."""

    root: str
    path: str  # absolute, interpreted inside `root`
    label: str  # how the user wrote it, for messages


def parse_location(arg: str) -> tuple[str | None, str]:
    """("CONTAINER", "/path") for `CONTAINER:/path`, (None, arg) for a host path or `-`.

    Like podman, a host path that contains a colon must start with `/` or `.`."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None, arg
    container, sep, path = arg.partition(":")
    if not sep:
        return None, arg
    if not container:
        raise RlError(f'invalid container path "{arg}": the container name is empty')
    return container, path or "/"


def plan_placement(
    source_is_dir: bool,
    contents_only: bool,
    dest_kind: str | None,
    dest_path: str,
    source_name: str,
) -> tuple[str, str | None]:
    """Where the copy goes: (directory, name) where name None means "into the directory
    itself" (the content of a directory). `dest_kind` is "dir", "file" or None (absent).
    Pure; RlError for the combinations docker and podman refuse."""
    trailing_slash = dest_path.endswith("/")
    clean = os.path.normpath(dest_path) if dest_path not in ("", "/") else "/"
    parent, base = os.path.split(clean)
    if dest_kind == "dir":
        if source_is_dir and contents_only:
            return clean, None
        return clean, source_name
    if dest_kind == "file":
        if source_is_dir:
            raise RlError(f'cannot copy a directory to the file "{dest_path}"')
        if trailing_slash:
            raise RlError(f'"{dest_path}" is not a directory')
        return parent or "/", base
    if trailing_slash and not source_is_dir:
        raise RlError(f'"{dest_path}" could not be found: no such directory')
    return parent or "/", base


# --- resolving inside a root ------------------------------------------------------------


def _open_in_root(root_fd: int, path: str, flags: int) -> int:
    return sc.openat2(root_fd, path.lstrip("/") or ".", flags, resolve=sc.RESOLVE_IN_ROOT)


def _open_root(location: Location) -> int:
    try:
        return os.open(location.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RlError(f"cannot open {location.root}: {exc.strerror}") from exc


def _parent_and_name(root_fd: int, path: str, label: str) -> tuple[int, str]:
    """An O_PATH fd of the parent directory (resolved in the root) and the last name."""
    clean = os.path.normpath("/" + path.lstrip("/"))
    parent, name = os.path.split(clean)
    try:
        fd = _open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
    except OSError as exc:
        raise RlError(f'"{label}" could not be found: {(exc.strerror or "").lower()}') from exc
    return fd, name or "."


def _kind(root_fd: int, path: str) -> str | None:
    """ "dir", "file" (anything else) or None when absent; symlinks followed in the root."""
    try:
        fd = _open_in_root(root_fd, path, os.O_PATH)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None
        raise
    try:
        return "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
    finally:
        os.close(fd)


# --- reading a tree as tar members --------------------------------------------------------


class Member(NamedTuple):
    info: tarfile.TarInfo
    data: IO[bytes] | None


def read_tree(location: Location, contents_only: bool) -> Iterator[Member]:
    """The entries under `location` as tar members named from its last component (or, with
    `contents_only`, relative to it). Symlinks are copied as links, not followed."""
    root_fd = _open_root(location)
    try:
        parent_fd, name = _parent_and_name(root_fd, location.path, location.label)
        try:
            try:
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except OSError as exc:
                raise RlError(
                    f'"{location.label}" could not be found: {(exc.strerror or "").lower()}'
                ) from exc
            links: dict[tuple[int, int], str] = {}
            if name == ".":
                name = "/"
            arcname = "." if contents_only else (os.path.basename(name.rstrip("/")) or ".")
            yield from _entry(parent_fd, name if name != "/" else ".", arcname, st, links, True)
        finally:
            os.close(parent_fd)
    finally:
        os.close(root_fd)


def _entry(
    dir_fd: int,
    name: str,
    arcname: str,
    st: os.stat_result,
    links: dict[tuple[int, int], str],
    top: bool = False,
) -> Iterator[Member]:
    info = tarfile.TarInfo(arcname)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = st.st_mtime
    mode = st.st_mode
    key = (st.st_dev, st.st_ino)
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            if not (top and arcname == "."):
                yield Member(info, None)
            with os.scandir(fd) as entries:
                children = sorted((e.name, e.stat(follow_symlinks=False)) for e in entries)
            for child, child_st in children:
                child_arc = child if arcname == "." else f"{arcname}/{child}"
                yield from _entry(fd, child, child_arc, child_st, links)
        finally:
            os.close(fd)
        return
    if stat.S_ISREG(mode) and st.st_nlink > 1 and key in links:
        info.type, info.linkname = tarfile.LNKTYPE, links[key]
        yield Member(info, None)
        return
    if stat.S_ISREG(mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
        if st.st_nlink > 1:
            links[key] = arcname
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as data:
            yield Member(info, data)
        return
    if stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return  # sockets cannot be copied
    yield Member(info, None)


def read_tar(stream: IO[bytes]) -> Iterator[Member]:
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                yield Member(info, tar.extractfile(info) if info.isreg() else None)
    except tarfile.TarError as exc:
        raise RlError(f"reading the tar stream: {exc}") from exc


def write_tar(members: Iterator[Member], stream: IO[bytes]) -> None:
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member.info, member.data)


# --- writing members into a tree ----------------------------------------------------------


def _member_parts(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RlError(f'refusing the archive entry "{name}": it climbs out with ".."')
    return parts


class Writer:
    """Creates entries under `directory` (resolved in the root), each parent re-resolved in
    the root so nothing lands outside it. With `rename`, the first path component of every
    member is replaced (copying `a` onto a new name `b`)."""

    def __init__(
        self, location: Location, directory: str, rename: str | None, keep_owners: bool
    ) -> None:
        self.root_fd = _open_root(location)
        self.label = location.label
        self.directory = directory
        self.rename = rename
        self.keep_owners = keep_owners
        self.dir_times: list[tuple[str, float]] = []

    def close(self) -> None:
        for path, mtime in reversed(self.dir_times):  # after their content was written
            try:
                fd = _open_in_root(self.root_fd, path, os.O_PATH | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                os.utime(f"/proc/self/fd/{fd}", (mtime, mtime))
            except OSError:
                pass
            finally:
                os.close(fd)
        os.close(self.root_fd)

    def target(self, name: str) -> list[str] | None:
        parts = _member_parts(name)
        if self.rename is not None:
            if not parts:
                return [self.rename]
            parts[0] = self.rename
        return parts

    def add(self, member: Member) -> None:
        parts = self.target(member.info.name)
        if not parts:
            self._metadata_of_directory(member.info)
            return
        inside = "/".join([self.directory.rstrip("/"), *parts[:-1]]) or "/"
        name = parts[-1]
        try:
            parent = self._make_dirs(inside)
        except OSError as exc:
            raise RlError(f"cannot create {inside}: {exc.strerror}") from exc
        try:
            self._create(parent, name, member)
        except OSError as exc:
            where = f"{inside.rstrip('/')}/{name}"
            raise RlError(f"cannot copy to {where}: {exc.strerror or exc}") from exc
        finally:
            os.close(parent)

    def _metadata_of_directory(self, info: tarfile.TarInfo) -> None:
        fd = _open_in_root(self.root_fd, self.directory, os.O_PATH | os.O_DIRECTORY)
        try:
            self._chown_chmod(f"/proc/self/fd/{fd}", info, follow=True)
        finally:
            os.close(fd)
        self.dir_times.append((self.directory, info.mtime))

    def _make_dirs(self, path: str) -> int:
        """An fd of directory `path` in the root, created (0755) with its parents if absent."""
        try:
            return _open_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            pass
        parent, name = os.path.split(path.rstrip("/"))
        parent_fd = self._make_dirs(parent or "/")
        try:
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)

    def _create(self, parent: int, name: str, member: Member) -> None:
        info = member.info
        existing = _lstat_at(parent, name)
        if existing is not None and not (info.isdir() and stat.S_ISDIR(existing.st_mode)):
            if stat.S_ISDIR(existing.st_mode):
                raise OSError(errno.EISDIR, "a directory is in the way")
            os.unlink(name, dir_fd=parent)
        if info.isdir():
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            path = self._path(parent, name)
            self._chown_chmod(path, info)
            inside = "/".join([self.directory.rstrip("/"), *(self.target(info.name) or [])])
            self.dir_times.append((inside, info.mtime))
            return
        if info.isreg():
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent
            )
            with os.fdopen(fd, "wb") as out:
                if member.data is not None:
                    while chunk := member.data.read(1 << 20):
                        out.write(chunk)
        elif info.issym():
            os.symlink(info.linkname, name, dir_fd=parent)
        elif info.islnk():
            parts = self.target(info.linkname)
            if not parts:
                raise OSError(errno.EINVAL, f"bad hard link target {info.linkname}")
            source = "/".join([self.directory.rstrip("/"), *parts[:-1]]) or "/"
            source_fd = _open_in_root(self.root_fd, source, os.O_PATH | os.O_DIRECTORY)
            try:
                os.link(
                    parts[-1], name, src_dir_fd=source_fd, dst_dir_fd=parent, follow_symlinks=False
                )
            finally:
                os.close(source_fd)
            return
        elif info.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent)
        else:
            return  # device nodes cannot be made in a user namespace
        path = self._path(parent, name)
        if not info.issym():
            self._chown_chmod(path, info)
            os.utime(path, (info.mtime, info.mtime))
        else:
            if self.keep_owners:
                os.chown(name, info.uid, info.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(name, (info.mtime, info.mtime), dir_fd=parent, follow_symlinks=False)

    @staticmethod
    def _path(parent: int, name: str) -> str:
        return f"/proc/self/fd/{parent}/{name}"

    def _chown_chmod(self, path: str, info: tarfile.TarInfo, follow: bool = False) -> None:
        if self.keep_owners:
            os.chown(path, info.uid, info.gid, follow_symlinks=follow)
        os.chmod(path, info.mode & 0o7777)  # after chown, which clears set-id bits


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# --- the copy, as one call (run as root of the user namespace) -------------------------------


class CopyRequest(NamedTuple):
    source: Location | None  # None: a tar stream on stdin
    dest: Location | None  # None: a tar stream to stdout
    contents_only: bool  # SRC ended in "/."
    keep_owners: bool = True


def copy(request: CopyRequest) -> None:
    import sys

    source, dest = request.source, request.dest
    if source is None and dest is None:
        raise RlError("source and destination cannot both be -")
    if dest is None:
        assert source is not None
        out = sys.stdout.buffer
        write_tar(read_tree(source, request.contents_only), out)
        out.flush()
        return
    root_fd = _open_root(dest)
    try:
        dest_kind = _kind(root_fd, dest.path)
    finally:
        os.close(root_fd)
    if source is None:
        if dest_kind != "dir":
            raise RlError(f'"{dest.label}" must be an existing directory to extract a tar into')
        writer = Writer(dest, dest.path, None, request.keep_owners)
        members = read_tar(sys.stdin.buffer)
    else:
        source_is_dir = _source_is_dir(source)
        source_name = os.path.basename(os.path.normpath(source.path)) or "/"
        directory, name = plan_placement(
            source_is_dir, request.contents_only, dest_kind, dest.path, source_name
        )
        if name is None:
            writer = Writer(dest, directory, None, request.keep_owners)
        else:
            writer = Writer(dest, directory, name, request.keep_owners)
            check = _kind(writer.root_fd, directory)
            if check != "dir":
                writer.close()
                raise RlError(f'"{dest.label}" could not be found: no such file or directory')
        members = read_tree(source, request.contents_only or name is None)
    try:
        for member in members:
            writer.add(member)
    finally:
        writer.close()


def _source_is_dir(source: Location) -> bool:
    root_fd = _open_root(source)
    try:
        parent_fd, name = _parent_and_name(root_fd, source.path, source.label)
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as exc:
            raise RlError(
                f'"{source.label}" could not be found: {(exc.strerror or "").lower()}'
            ) from exc
        finally:
            os.close(parent_fd)
    finally:
        os.close(root_fd)
    return stat.S_ISDIR(st.st_mode)
