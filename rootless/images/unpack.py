"""Unpack one layer tar into an overlay lower directory, without letting anything escape it.

Runs as root of a user namespace with the containers' id mapping (the caller wraps it in
`rootless.userns.run_in_userns`), so owners are kept: a 1000:1000 file in the layer is
1000:1000 inside and subuid-start+999 on the host.

The layer is read as a stream: decompressed on the fly (gzip, zstd when the `zstandard` module
is installed, or plain tar) and hashed as it passes, to the true end of the stream, so the
digest is the layer's diff_id. A layer is never held in memory.

Safety comes from how paths are resolved, not from checking names: every entry is created
relative to a directory fd that `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` opened, and
the final component is never followed (O_EXCL/O_NOFOLLOW creates, *at calls without
AT_SYMLINK_FOLLOW). So an entry whose parent path is a symlink is refused, an existing symlink
at the final component is replaced rather than written through, and `..` is refused by the
name rules in whiteout.py. Absolute member names and hardlink targets are taken relative to the
layer root, like tar does (a leading `/` is stripped); symlink targets are stored verbatim (the
container resolves them inside its own root).

Whiteouts are written as the storage drivers read them: a character device 0:0 named like the
hidden entry (no CAP_MKNOD needed since Linux 5.8), and opaque directories get the xattr
`user.overlay.opaque=y` (kernel overlayfs with `userxattr`, and fuseoverlay).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib
import os
import pwd
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from rootless import syscalls
from rootless.errors import RlError
from rootless.images.unpacked import Unpacked as Unpacked
from rootless.images.whiteout import (
    LayerPath,
    Opaque,
    Plain,
    Skipped,
    UnsafePath,
    Whiteout,
    classify,
    display,
    layer_path,
    printable,
)
from rootless.log import logger

log = logger()

T = TypeVar("T")

CHUNK = 1 << 20  # read, decompress and copy in 1 MiB pieces
OPAQUE_XATTR = "user.overlay.opaque"
# Never leave the layer, never follow a symlink, never cross into another mount.
CONFINED = (
    syscalls.RESOLVE_BENEATH
    | syscalls.RESOLVE_NO_SYMLINKS
    | syscalls.RESOLVE_NO_MAGICLINKS
    | syscalls.RESOLVE_NO_XDEV
)
FS_IOC_GETFLAGS = 0x80086601  # <linux/fs.h>, as on x86-64 and arm64
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
OTHER_COMPRESSIONS = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
SUBID_FIX = (
    "add a range to /etc/subuid and /etc/subgid, e.g. "
    "`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"
)


class _Refused(Exception):
    """An entry the layer may not contain; str() says why (the caller adds layer and entry)."""


def unpack_layer(blob: Path, dest: Path, *, diff_id: str, layer_ref: str) -> int:
    """Extract layer `blob` (gzip, zstd or plain tar) into the new directory `dest`.

    `dest` must not exist; its parent must. The sha256 of the uncompressed stream must equal
    `diff_id` ("sha256:<hex>"). On any refusal or mismatch `dest` is removed and RlError names
    `layer_ref` and the entry. Returns the bytes of regular-file content unpacked.
    """
    return unpack_file(blob, dest, diff_id=diff_id, layer_ref=layer_ref).content_bytes


def unpack_file(blob: Path, dest: Path, *, diff_id: str, layer_ref: str) -> Unpacked:
    """unpack_layer, saying more about the layer."""
    try:
        raw = open(blob, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise RlError(f"layer {layer_ref}: cannot read {blob}: {exc.strerror}") from exc
    try:
        return unpack_stream(raw, dest, diff_id=diff_id, layer_ref=layer_ref)
    finally:
        raw.close()


def unpack_fd(dest: Path, diff_id: str, layer_ref: str, fd: int) -> Unpacked:
    """unpack_stream from a file descriptor (a pipe a download is written into), which is
    closed afterwards: what `rl pull` runs in a worker in the user namespace (the fd comes
    last, as NamespaceWorkers passes it)."""
    with open(fd, "rb", buffering=0) as raw:
        return unpack_stream(raw, dest, diff_id=diff_id, layer_ref=layer_ref)


def unpack_stream(raw: BinaryIO, dest: Path, *, diff_id: str, layer_ref: str) -> Unpacked:
    """unpack_layer from a stream read once, front to back (a file or a pipe)."""
    algorithm, _, expected = diff_id.partition(":")
    if algorithm != "sha256" or len(expected) != 64:
        raise RlError(f"layer {layer_ref}: unsupported diff_id {diff_id!r} (expected sha256:<hex>)")
    try:
        os.mkdir(dest, 0o755)
    except OSError as exc:
        raise RlError(f"layer {layer_ref}: cannot create {dest}: {exc.strerror}") from exc
    _mark_top_directory(dest)
    finished = False
    try:
        compression, chunks = _decompressed(raw, layer_ref)
        stream = _HashingStream(chunks)
        content_bytes = _extract(stream, dest, layer_ref)
        stream.drain()
        if stream.hexdigest() != expected:
            raise RlError(
                f"layer {layer_ref}: content has digest sha256:{stream.hexdigest()}, not the "
                f"expected {diff_id}: the blob is corrupt or does not belong to this image; "
                "remove the image and pull it again"
            )
        finished = True
        return Unpacked(content_bytes, stream.size, compression)
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise RlError(
            f"layer {layer_ref}: not a valid (compressed) tar stream: {exc}; "
            "remove the image and pull it again"
        ) from exc
    except OSError as exc:
        raise RlError(f"layer {layer_ref}: unpacking into {dest}: {exc}") from exc
    finally:
        if not finished:
            _discard(dest)


def _mark_top_directory(path: Path) -> None:
    """Tell ext4 that `path` is the top of a hierarchy (`chattr +T`), so that it spreads the
    layer's subdirectories over block groups (its Orlov allocator, as for home directories)
    instead of packing them near the store's directory. Creating files in a crowded block
    group costs ext4 up to ~0.5 ms each here, serialized across processes (measured on the
    test VMs' /tmp), ~15x the cost elsewhere; a layer creates thousands. Other filesystems
    refuse the flag, which changes nothing."""
    import array
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & FS_TOPDIR_FL:
            flags[0] |= FS_TOPDIR_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """rm -rf `path`, also through directories with modes like 0000 (made writable as needed).

    Symlinks are removed, never followed. Meant to run inside run_in_userns for trees that hold
    subordinate ids; it also works on an ordinary user's own trees.
    """
    parent = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_at(parent, path.name)
    finally:
        os.close(parent)


def _discard(dest: Path) -> None:
    try:
        remove_tree(dest)
    except OSError as exc:
        log.warning("cannot remove the partly unpacked layer %s: %s", dest, exc)


# --- the stream: decompression and hashing ------------------------------------------------


def _decompressed(raw: BinaryIO, layer_ref: str) -> tuple[str, Iterator[bytes]]:
    """How `raw` is compressed, and its tar bytes in chunks of at most CHUNK (so a zip bomb
    cannot fill memory). `raw` is read forward only: it may be a pipe."""
    head = _read_head(raw, 6)
    source = _Prefixed(head, raw)
    if head.startswith(GZIP_MAGIC):
        return "gzip", _gunzip(source)
    if head.startswith(ZSTD_MAGIC):
        return "zstd", _unzstd(source, layer_ref)
    for prefix, name in OTHER_COMPRESSIONS.items():
        if head.startswith(prefix):
            raise RlError(
                f"layer {layer_ref}: {name}-compressed layers are not supported "
                "(OCI layers are gzip, zstd or plain tar)"
            )
    return "none", iter(lambda: source.read(CHUNK), b"")


def _read_head(raw: BinaryIO, size: int) -> bytes:
    """The first `size` bytes (fewer only at the end): a pipe may return less per read."""
    head = b""
    while len(head) < size:
        more = raw.read(size - len(head))
        if not more:
            break
        head += more
    return head


class _Prefixed:
    """`raw` with `head` (already read from it) put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                out, self._head = self._head, b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._raw.read(size)

    def readable(self) -> bool:
        return True


@functools.cache
def _inflater() -> tuple[Callable[[int], Any], tuple[type[Exception], ...]]:
    """ISA-L's decompressobj and errors (the `isal` dependency), or zlib's where isal has no
    wheel: the same output 2-2.5x faster (inflating is most of a gzip layer's unpacking, and a
    pull waits for the last layer's; issue 5). Looked up once, as this module loads (`rl
    pull`'s namespace helper imports it before it forks the workers)."""
    try:
        isal_zlib = importlib.import_module("isal.isal_zlib")
    except ImportError:
        return zlib.decompressobj, (zlib.error,)
    return isal_zlib.decompressobj, (zlib.error, isal_zlib.error)


_inflater()


def _gunzip(raw: _Prefixed) -> Iterator[bytes]:
    decompressobj, errors = _inflater()
    try:
        yield from _members(raw, decompressobj)
    except errors as exc:
        if isinstance(exc, zlib.error):
            raise
        raise zlib.error(str(exc)) from exc  # (what unpack_stream reports, as from zlib)


def _members(raw: _Prefixed, decompressobj: Callable[[int], Any]) -> Iterator[bytes]:
    # gzip files may hold several members, possibly separated by zero padding (as gzip(1)
    # reads them); a member cut short is an error.
    member: Any = None  # zlib's or ISA-L's decompressor
    data = b""
    while True:
        if not data:
            data = raw.read(CHUNK)
            if not data:
                if member is not None:
                    tail = member.flush()
                    if tail:
                        yield tail
                    if not member.eof:
                        raise EOFError("the compressed stream ends in the middle of a member")
                return
        if member is None:
            data = data.lstrip(b"\0")
            if not data:
                continue
            member = decompressobj(16 + zlib.MAX_WBITS)
        out = member.decompress(data, CHUNK)
        if out:
            yield out
        if member.eof:
            data = member.unused_data
            member = None
        else:
            data = member.unconsumed_tail


def _unzstd(raw: _Prefixed, layer_ref: str) -> Iterator[bytes]:
    try:
        zstandard = importlib.import_module("zstandard")
    except ImportError:
        raise RlError(
            f"layer {layer_ref} is zstd-compressed: install the Python module `zstandard` "
            "into rl's environment (pip install zstandard)"
        ) from None
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    while chunk := reader.read(CHUNK):
        yield chunk


class _HashingStream:
    """A forward-only file over the uncompressed chunks that hashes every byte it passes.

    tarfile in plain "r" mode reads it sequentially (it only ever seeks forward, to skip
    padding and unread data), which avoids the quadratic buffering of tarfile's own "r|" mode.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._sha256 = hashlib.sha256()
        self._buffer = b""
        self._start = 0  # unread bytes are self._buffer[self._start:]
        self._position = 0
        self.size = 0  # bytes of the stream so far
        self.last_read = b""  # tarfile's last read: the header block it stopped at

    def _next_chunk(self) -> bytes:
        chunk = next(self._chunks, b"")
        self._sha256.update(chunk)
        self.size += len(chunk)
        return chunk

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = 1 << 62
        available = len(self._buffer) - self._start
        if size <= available:
            out = self._buffer[self._start : self._start + size]
            self._start += size
        else:
            parts = [self._buffer[self._start :]]
            needed = size - available
            self._buffer, self._start = b"", 0
            while needed > 0:
                chunk = self._next_chunk()
                if not chunk:
                    break
                if len(chunk) <= needed:
                    parts.append(chunk)
                    needed -= len(chunk)
                else:
                    parts.append(chunk[:needed])
                    self._buffer, self._start = chunk, needed
                    needed = 0
            out = b"".join(parts)
        self._position += len(out)
        self.last_read = out
        return out

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._position + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self._position:
            raise OSError(errno.ESPIPE, "a layer stream only seeks forward")
        while self._position < target:
            if not self.read(min(target - self._position, CHUNK)):
                break
        return self._position

    def drain(self) -> None:
        """Read to the end, so the digest covers the whole stream."""
        while self._next_chunk():
            pass
        self._buffer, self._start = b"", 0

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


# --- the archive: member by member --------------------------------------------------------


def _extract(stream: _HashingStream, dest: Path, layer_ref: str) -> int:
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        writer = _LayerWriter(root_fd)
        archive = tarfile.TarFile(
            fileobj=stream,  # type: ignore[arg-type]
            mode="r",
            encoding="utf-8",
            errors="surrogateescape",
        )
        while (info := archive.next()) is not None:
            # TarFile remembers every member, and a layer may have millions.
            archive.members.clear()  # type: ignore[attr-defined]
            try:
                _apply(writer, archive, info, layer_ref)
            except _Refused as exc:
                raise RlError(f"layer {layer_ref}: entry {printable(info.name)}: {exc}") from None
            except (OSError, ValueError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise RlError(f"layer {layer_ref}: entry {printable(info.name)}: {why}") from exc
        if any(stream.last_read):
            # tarfile ends quietly at a header it cannot parse; a real end is a zero block.
            raise RlError(
                f"layer {layer_ref}: corrupt tar stream: unreadable header at byte "
                f"{archive.offset}; remove the image and pull it again"
            )
        writer.finish()
        return writer.content_bytes
    finally:
        os.close(root_fd)


def _apply(writer: _LayerWriter, archive: tarfile.TarFile, info: tarfile.TarInfo, ref: str) -> None:
    try:
        member = classify(info.name)
    except UnsafePath as exc:
        raise _Refused(str(exc)) from None
    if isinstance(member, Skipped):
        log.debug("layer %s: skipping %s: %s", ref, info.name, member.why)
    elif isinstance(member, Whiteout):
        writer.whiteout(member.target)
    elif isinstance(member, Opaque):
        writer.opaque(member.directory)
    elif isinstance(member, Plain):
        writer.entry(member.path, info, archive, ref)


def _mtime_ns(info: tarfile.TarInfo) -> int:
    mtime = info.mtime
    return mtime * 1_000_000_000 if isinstance(mtime, int) else round(mtime * 1e9)


class _LayerWriter:
    """Creates entries under the layer root fd, only ever through confined, fd-relative calls."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.content_bytes = 0
        # Creating entries changes a directory's mtime, so directories get theirs at the end.
        self._directory_times: list[tuple[LayerPath, int]] = []

    # -- resolving ---------------------------------------------------------------------

    def _open_parent(self, path: LayerPath, *, create: bool, what: str = "parent") -> int:
        """An O_PATH fd of the directory holding `path` (the caller closes it unless it is the
        root fd). Missing directories are created (0755, 0:0) when `create`, as tar does."""
        parent = path[:-1]
        if not parent:
            return self.root_fd
        try:
            return syscalls.openat2(
                self.root_fd, "/".join(parent), os.O_PATH | os.O_DIRECTORY, resolve=CONFINED
            )
        except OSError:
            pass  # walk it component by component, to create or to say what is wrong
        fd = self.root_fd
        try:
            for depth, part in enumerate(parent, 1):
                try:
                    child = syscalls.openat2(fd, part, os.O_PATH | os.O_DIRECTORY, resolve=CONFINED)
                except FileNotFoundError:
                    if not create:
                        raise _Refused(
                            f"{what} {display(parent[:depth])} is not in the layer"
                        ) from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.chmod(part, 0o755, dir_fd=fd)  # whatever the umask
                    child = syscalls.openat2(fd, part, os.O_PATH | os.O_DIRECTORY, resolve=CONFINED)
                except OSError as exc:
                    raise _Refused(_resolve_failure(what, parent[:depth], exc)) from None
                if fd != self.root_fd:
                    os.close(fd)
                fd = child
            return fd
        except BaseException:
            if fd != self.root_fd:
                os.close(fd)
            raise

    def _close(self, fd: int) -> None:
        if fd != self.root_fd:
            os.close(fd)

    def _clear(self, parent: int, name: str) -> None:
        """Make way for a new entry `name`: a later member replaces an earlier one."""
        _remove_at(parent, name)

    def _create(self, parent: int, name: str, make: Callable[[], T]) -> T:
        try:
            return make()
        except FileExistsError:
            self._clear(parent, name)
            return make()

    # -- entries -----------------------------------------------------------------------

    def entry(
        self, path: LayerPath, info: tarfile.TarInfo, archive: tarfile.TarFile, ref: str
    ) -> None:
        if info.uid < 0 or info.gid < 0:
            raise _Refused(f"negative owner {info.uid}:{info.gid}")
        if not path:
            if not info.isdir():
                raise _Refused("only a directory may stand for the layer root")
            self._directory_metadata(self.root_fd, info)
            self._directory_times.append(((), _mtime_ns(info)))
            return
        parent = self._open_parent(path, create=True)
        try:
            name = path[-1]
            if info.isdir():
                self._directory(parent, name, info, path)
            elif info.isreg():
                self._file(parent, name, info, archive)
            elif info.issym():
                self._symlink(parent, name, info)
            elif info.islnk():
                self._hardlink(parent, path, info)
            elif info.isfifo():
                self._create(parent, name, lambda: os.mkfifo(name, 0o600, dir_fd=parent))
                self._node_metadata(parent, name, info)
            elif info.ischr() or info.isblk():
                self._device(parent, name, info, ref)
            else:
                raise _Refused(f"unsupported tar entry type {info.type!r}")
        finally:
            self._close(parent)

    def _directory(self, parent: int, name: str, info: tarfile.TarInfo, path: LayerPath) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            # A directory over a directory merges (and keeps an opaque marker); over anything
            # else it replaces.
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                self._clear(parent, name)
                os.mkdir(name, 0o700, dir_fd=parent)
        fd = syscalls.openat2(parent, name, os.O_RDONLY | os.O_DIRECTORY, resolve=CONFINED)
        try:
            self._directory_metadata(fd, info)
        finally:
            os.close(fd)
        self._directory_times.append((path, _mtime_ns(info)))

    def _directory_metadata(self, fd: int, info: tarfile.TarInfo) -> None:
        self._chown(info, lambda: os.fchown(fd, info.uid, info.gid))
        os.fchmod(fd, info.mode & 0o7777)
        _set_xattrs(fd, info)

    def _file(
        self, parent: int, name: str, info: tarfile.TarInfo, archive: tarfile.TarFile
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = self._create(parent, name, lambda: os.open(name, flags, 0o600, dir_fd=parent))
        try:
            if info.size:
                source = archive.extractfile(info)
                assert source is not None  # a regular file always has data
                while chunk := source.read(CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                self.content_bytes += info.size
            # chown clears setuid/setgid and file capabilities, so: owner, then mode, then xattrs.
            self._chown(info, lambda: os.fchown(fd, info.uid, info.gid))
            os.fchmod(fd, info.mode & 0o7777)
            _set_xattrs(fd, info)
            mtime = _mtime_ns(info)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)

    def _symlink(self, parent: int, name: str, info: tarfile.TarInfo) -> None:
        if not info.linkname:
            raise _Refused("symlink with an empty target")
        self._create(parent, name, lambda: os.symlink(info.linkname, name, dir_fd=parent))
        self._chown(
            info, lambda: os.chown(name, info.uid, info.gid, dir_fd=parent, follow_symlinks=False)
        )
        mtime = _mtime_ns(info)
        os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, path: LayerPath, info: tarfile.TarInfo) -> None:
        try:
            target = layer_path(info.linkname)
        except UnsafePath as exc:
            raise _Refused(f"hardlink target {printable(info.linkname)}: {exc}") from None
        if not target:
            raise _Refused("hardlink to the layer root")
        what = f"hardlink target {display(target)}: directory"
        target_parent = self._open_parent(target, create=False, what=what)
        try:
            try:
                found = os.stat(target[-1], dir_fd=target_parent, follow_symlinks=False)
            except FileNotFoundError:
                raise _Refused(f"hardlink target {display(target)} is not in the layer") from None
            if stat.S_ISDIR(found.st_mode):
                raise _Refused(f"hardlink target {display(target)} is a directory")
            if target == path:
                return  # a link to itself: the entry is already there
            name = path[-1]
            # Without AT_SYMLINK_FOLLOW: a link to a symlink is another symlink, never its target.
            self._create(
                parent,
                name,
                lambda: os.link(
                    target[-1],
                    name,
                    src_dir_fd=target_parent,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                ),
            )
        finally:
            self._close(target_parent)

    def _device(self, parent: int, name: str, info: tarfile.TarInfo, ref: str) -> None:
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        device = os.makedev(info.devmajor, info.devminor)
        try:
            self._create(parent, name, lambda: syscalls.mknod(name, kind | 0o600, device, parent))
        except PermissionError:
            log.debug(
                "layer %s: skipping device node %s (%d:%d): creating device nodes needs "
                "privileges a user namespace does not have",
                ref,
                info.name,
                info.devmajor,
                info.devminor,
            )
            return
        self._node_metadata(parent, name, info)

    def _node_metadata(self, parent: int, name: str, info: tarfile.TarInfo) -> None:
        """Owner, mode, mtime of a FIFO or device node we just created (not a symlink)."""
        self._chown(
            info, lambda: os.chown(name, info.uid, info.gid, dir_fd=parent, follow_symlinks=False)
        )
        os.chmod(name, info.mode & 0o7777, dir_fd=parent)
        mtime = _mtime_ns(info)
        os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    def _chown(self, info: tarfile.TarInfo, chown: Callable[[], None]) -> None:
        try:
            chown()
        except (OverflowError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno != errno.EINVAL:
                raise
            raise _Refused(_unmapped_owner_message(info.uid, info.gid)) from None

    # -- whiteouts -----------------------------------------------------------------------

    def whiteout(self, target: LayerPath) -> None:
        parent = self._open_parent(target, create=True)
        try:
            name = target[-1]
            whiteout = stat.S_IFCHR  # mode 0, device 0:0: what overlayfs itself creates
            self._create(parent, name, lambda: syscalls.mknod(name, whiteout, 0, parent))
        finally:
            self._close(parent)

    def opaque(self, directory: LayerPath) -> None:
        if not directory:
            fd = os.dup(self.root_fd)
        else:
            parent = self._open_parent(directory, create=True)
            try:
                name = directory[-1]
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                    os.chmod(name, 0o755, dir_fd=parent)
                except FileExistsError:
                    pass
                try:
                    fd = syscalls.openat2(
                        parent, name, os.O_RDONLY | os.O_DIRECTORY, resolve=CONFINED
                    )
                except OSError as exc:
                    raise _Refused(_resolve_failure("directory", directory, exc)) from None
            finally:
                self._close(parent)
        try:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)

    # -- the end -------------------------------------------------------------------------

    def finish(self) -> None:
        """Give directories their mtimes, now that nothing more is created in them."""
        for path, mtime in self._directory_times:
            if not path:
                os.utime(self.root_fd, ns=(mtime, mtime))
                continue
            try:
                parent = self._open_parent(path, create=False)
            except _Refused:
                continue  # replaced by a later entry
            try:
                found = os.stat(path[-1], dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(found.st_mode):
                    os.utime(path[-1], ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                pass
            finally:
                self._close(parent)


def _resolve_failure(what: str, path: LayerPath, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{what} {display(path)} is a symlink; refusing to write through it"
    if exc.errno == errno.ENOTDIR:
        return f"{what} {display(path)} is not a directory"
    if exc.errno == errno.EXDEV:
        return f"{what} {display(path)} leads outside the layer"
    return f"{what} {display(path)}: {exc.strerror or exc}"


# Extended attributes worth keeping: the user's own, and file capabilities. Anything under
# user.overlay.* is storage-driver metadata a layer must not smuggle in.
def _xattr_allowed(name: str) -> bool:
    if name == "security.capability":
        return True
    return name.startswith("user.") and not name.startswith("user.overlay.")


def _set_xattrs(fd: int, info: tarfile.TarInfo) -> None:
    for key, value in info.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        if not _xattr_allowed(name):
            log.debug("skipping xattr %s of %s", name, info.name)
            continue
        try:
            os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            log.debug("cannot set xattr %s of %s: %s", name, info.name, exc.strerror)


def _unmapped_owner_message(uid: int, gid: int) -> str:
    """Why a chown failed with EINVAL (an id the namespace does not map) and how to fix it."""
    mapped, host_uid = _uid_map_summary()
    try:
        user = pwd.getpwuid(host_uid).pw_name if host_uid is not None else "USER"
    except KeyError:
        user = str(host_uid)
    if mapped <= 1:
        scope = "only one id is mapped into the user namespace (no subordinate ids)"
    else:
        scope = f"the user namespace maps only ids 0-{mapped - 1}"
    return f"owned by {uid}:{gid}, but {scope}: " + SUBID_FIX.format(user=user)


def _uid_map_summary() -> tuple[int, int | None]:
    """(how many uids this namespace maps, the host uid of namespace root)."""
    try:
        lines = Path("/proc/self/uid_map").read_text().split("\n")
    except OSError:
        return 0, None
    total, root_host = 0, None
    for line in lines:
        fields = line.split()
        if len(fields) == 3:
            inside, outside, count = (int(f) for f in fields)
            total += count
            if inside == 0:
                root_host = outside
    return total, root_host


# --- removal --------------------------------------------------------------------------------


def _remove_at(parent: int, name: str) -> None:
    """rm -rf `name` in directory fd `parent`, never following symlinks."""
    try:
        found = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(found.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    top = syscalls.openat2(parent, name, os.O_PATH | os.O_DIRECTORY, resolve=CONFINED)
    try:
        _empty_directory(top, parent, name)
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=parent)


def _empty_directory(top: int, parent: int, name: str) -> None:
    # Iterative (a layer may nest thousands deep) and with one listed directory open at a time:
    # a directory is listed and its non-directories removed; it is revisited, and removed, once
    # its subdirectories are gone. Paths are relative to `top`: no longer than the layer's own.
    pending = ["."]
    while pending:
        relative = pending[-1]
        fd = _open_for_removal(top, relative, parent, name)
        try:
            subdirectories = []
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdirectories.append(entry.name)
                    else:
                        _unlink_in(fd, entry.name)
        finally:
            os.close(fd)
        if subdirectories:
            prefix = "" if relative == "." else f"{relative}/"
            pending.extend(prefix + sub for sub in subdirectories)
        else:
            pending.pop()
            if relative != ".":
                _rmdir(top, relative)


def _open_for_removal(top: int, relative: str, parent: int, name: str) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY
    try:
        return syscalls.openat2(top, relative, flags, resolve=CONFINED)
    except PermissionError:
        # Directories we just listed (not symlinks) with modes like 0000.
        if relative == ".":
            os.chmod(name, 0o700, dir_fd=parent)
        else:
            os.chmod(relative, 0o700, dir_fd=top)
        return syscalls.openat2(top, relative, flags, resolve=CONFINED)


def _unlink_in(fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except PermissionError:
        os.fchmod(fd, 0o700)
        os.unlink(name, dir_fd=fd)


def _rmdir(top: int, relative: str) -> None:
    try:
        os.rmdir(relative, dir_fd=top)
    except PermissionError:
        holder = os.path.dirname(relative) or "."
        holder_fd = syscalls.openat2(top, holder, os.O_RDONLY | os.O_DIRECTORY, resolve=CONFINED)
        try:
            os.fchmod(holder_fd, 0o700)
        finally:
            os.close(holder_fd)
        os.rmdir(relative, dir_fd=top)
