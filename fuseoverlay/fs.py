"""The pyfuse3 operations of the union filesystem.

Only this process changes the tree while it is mounted, so the kernel may cache entries,
attributes and pages (entry/attr timeouts > 0, keep_cache, writeback cache). Requests are
served one at a time on the trio loop; the union rules live in `resolve`, the inode table in
`inodes`, the layer directories in `layers`, copy-up in `copyup`.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3

from fuseoverlay.copyup import copy_node
from fuseoverlay.inodes import InodeTable, Node
from fuseoverlay.layers import Layers
from fuseoverlay.options import DEFAULT_TIMEOUT, Config, IdMap
from fuseoverlay.resolve import (
    UPPER,
    WHITEOUT_PREFIX,
    Kind,
    is_private_xattr,
    join,
    merge_listing,
    resolve_entry,
    split,
)

log = logging.getLogger(__name__)
_CAPS_KEY = "security.capability"
_CAPS = _CAPS_KEY.encode()
_T = TypeVar("_T")


def _fail(err: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(err)


@contextmanager
def _os_errors() -> Iterator[None]:
    """OSError from the layers becomes the same errno for the caller."""
    try:
        yield
    except OSError as exc:
        raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None


class OpenFile:
    __slots__ = ("fd", "flags", "layer", "node", "privileges_dropped", "writable")

    def __init__(self, fd: int, node: Node, layer: int, flags: int) -> None:
        self.fd = fd
        self.node = node
        self.layer = layer
        self.flags = flags
        self.writable = flags & os.O_ACCMODE != os.O_RDONLY
        self.privileges_dropped = False  # setuid/setgid cleared before the first write


@dataclass(eq=False)
class OpenDir:
    node: Node
    names: list[bytes]  # snapshot at opendir: offsets stay stable while the directory changes


class OverlayFS(pyfuse3.Operations):
    enable_writeback_cache = True
    supports_dot_lookup = True
    # No flush handler: pyfuse3 answers ENOSYS, and the kernel stops sending FLUSH on close
    # (dirty pages are still written back first).

    def __init__(
        self,
        upper: str,
        lowers: Sequence[str],
        work: str,
        *,
        uids: IdMap | None = None,
        gids: IdMap | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self.layers = Layers(upper, lowers, work)
        self.layers.clean_work()
        # Modes of new files arrive with the caller's umask applied; where this process has a
        # umask of its own (the program sets 0), the exact mode is set after creating.
        self._umask = os.umask(0)
        os.umask(self._umask)
        self.uids = uids or IdMap()
        self.gids = gids or IdMap()
        self.timeout = timeout
        # As root (of a user namespace) new files belong to the caller; as a plain user they
        # are the user's own, the only owner it can give.
        self.set_owner = os.geteuid() == 0
        self._euid, self._egid = os.geteuid(), os.getegid()
        root = resolve_entry(range(len(self.layers.roots)), self._observer(b""))
        assert root is not None and root.is_dir, "the upper dir must be a directory"
        self.table = InodeTable(root.dir_layers)
        self._nodes = self.table.by_ino  # read on every request
        self._by_path = self.table.by_path  # read on every lookup
        self._roots = self.layers.roots
        # Identity id maps (no uidmapping/gidmapping): no translation per reply.
        self._map_ids = bool(self.uids.ranges or self.gids.ranges)
        self._files: dict[int, OpenFile] = {}
        self._dirs: dict[int, OpenDir] = {}
        self._next_fh = 1

    @classmethod
    def from_config(cls, config: Config) -> OverlayFS:
        return cls(
            config.upperdir,
            config.lowerdirs,
            config.workdir,
            uids=config.uids,
            gids=config.gids,
            timeout=config.timeout,
        )

    # --- resolution ------------------------------------------------------------------------

    def _observer(
        self,
        path: bytes,
        seen: dict[int, os.stat_result] | None = None,
        bottom: int = -1,
        absent: frozenset[int] = frozenset(),
    ) -> Callable[[int], Kind]:
        """`observe` for resolve_entry; `bottom` is the last candidate layer, where a whiteout
        hides nothing below and so need not be looked for; `absent`: layers already seen to
        hold neither `path` nor a whiteout of it."""

        def observe(layer: int) -> Kind:
            if layer in absent:
                return Kind.ABSENT
            kind, st = self.layers.observe(layer, path, bottom=layer == bottom)
            if seen is not None and st is not None:
                seen[layer] = st
            return kind

        return observe

    def _node(self, ino: int) -> Node:
        node = self._nodes.get(ino)
        if node is None:
            raise _fail(errno.ENOENT)
        return node

    def _child(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result] | None:
        """The node visible as `name` in `parent` with its real lstat, or None."""
        head = parent.path
        path = head + b"/" + name if head else name  # join(), inline: once per lookup
        node = self._by_path.get(path)
        if node is not None:
            st = self.layers.lstat(node.layer, node.path)
            if st is not None:
                return node, st
            self.table.remove_name(path)  # vanished behind our back; look again
        # The cold lookup: 10k of them for `stat` of 10k names, one per file a program opens.
        # Top down, what resolve_entry decides while it has found no directory, inline (no
        # observer, no Kind; a whiteout file is looked for with access(), which answers
        # without an exception): the first layer holding the name decides, unless it holds a
        # directory, which may merge with the layers below; then resolve_entry takes over
        # from what was seen here.
        roots = self._roots
        layers = parent.dir_layers
        bottom = len(layers) - 1
        seen_absent: list[int] = []
        for index, layer in enumerate(layers):
            try:
                st = os.lstat(roots[layer] + b"/" + path)
            except (FileNotFoundError, NotADirectoryError):
                if index < bottom:
                    head, _, name = path.rpartition(b"/")
                    marker = roots[layer] + b"/" + head + b"/" if head else roots[layer] + b"/"
                    if os.access(marker + WHITEOUT_PREFIX + name, os.F_OK, follow_symlinks=False):
                        return None  # whited out by a `.wh.NAME` file
                seen_absent.append(layer)
                continue
            mode = st.st_mode
            if stat.S_ISDIR(mode) and index < bottom:
                break  # resolve_entry merges it with what lies below
            if stat.S_ISCHR(mode) and st.st_rdev == 0:  # a whiteout
                return None
            key = (st.st_dev, st.st_ino) if layer == UPPER and st.st_nlink > 1 else None
            return self.table.add(path, layer, stat.S_ISDIR(mode), (layer,), key), st
        else:
            return None  # absent everywhere
        seen: dict[int, os.stat_result] = {}
        observe = self._observer(path, seen, layers[-1], absent=frozenset(seen_absent))
        found = resolve_entry(layers, observe)
        if found is None:
            return None
        st = seen[found.layer]
        key = (st.st_dev, st.st_ino) if found.layer == UPPER and st.st_nlink > 1 else None
        return self.table.add(path, found.layer, found.is_dir, found.dir_layers, key), st

    def _lower_visible(self, parent: Node, name: bytes) -> bool:
        """Whether a lower layer shows `name` in `parent` (removing it then needs a whiteout)."""
        lowers = [layer for layer in parent.dir_layers if layer != UPPER]
        if not lowers:
            return False
        observe = self._observer(join(parent.path, name), bottom=lowers[-1])
        return resolve_entry(lowers, observe) is not None

    def _stat(self, node: Node) -> os.stat_result:
        if node.names:
            try:
                return os.lstat(self.layers.real(node.layer, node.path))
            except (FileNotFoundError, NotADirectoryError):
                raise _fail(errno.ENOENT) from None
        # Unlinked but still open: its path may now name something else.
        open_file = self._open_file_of(node)
        if open_file is None:
            raise _fail(errno.ENOENT)
        return os.fstat(open_file.fd)

    def _open_file_of(self, node: Node) -> OpenFile | None:
        best = None
        for open_file in self._files.values():
            if open_file.node is node and (best is None or open_file.writable):
                best = open_file
        return best

    def _attrs(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        # The busiest few lines of the process (every reply with attributes): each assignment
        # is a call into pyfuse3; a new EntryAttributes has generation 0 already.
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.ino
        attr.entry_timeout = attr.attr_timeout = self.timeout
        attr.st_mode = st.st_mode
        # A merged directory's link count would be a guess (lower subdirectories do not count
        # in the upper's): 1 says "unknown", as kernel overlayfs reports it.
        attr.st_nlink = 1 if node.is_dir and len(node.dir_layers) > 1 else st.st_nlink
        if self._map_ids:
            attr.st_uid = self.uids.to_inner(st.st_uid)
            attr.st_gid = self.gids.to_inner(st.st_gid)
        else:
            attr.st_uid = st.st_uid
            attr.st_gid = st.st_gid
        attr.st_rdev = st.st_rdev
        attr.st_size = st.st_size
        attr.st_blksize = st.st_blksize
        attr.st_blocks = st.st_blocks
        attr.st_atime_ns = st.st_atime_ns
        attr.st_mtime_ns = st.st_mtime_ns
        attr.st_ctime_ns = st.st_ctime_ns
        return attr

    def _entry(self, node: Node, st: os.stat_result | None = None) -> pyfuse3.EntryAttributes:
        attr = self._attrs(node, st or self._stat(node))
        self.table.looked_up(node)
        return attr

    def _real(self, node: Node) -> bytes:
        if not node.names:
            raise _fail(errno.ENOENT)
        return self.layers.real(node.layer, node.path)

    # --- copy-up ---------------------------------------------------------------------------

    def _copy_up(self, node: Node, size: int | None = None) -> None:
        if node.in_upper:
            return
        if node.path:
            head, _ = split(node.path)
            parent = self.table.at(head)
            if parent is None:  # cannot happen: the kernel looks parents up first
                raise _fail(errno.ENOENT)
            self._copy_up(parent)
        src = self._real(node)
        st = os.lstat(src)
        tmp = self.layers.temp_name()
        copy_node(src, tmp, st, keep_owner=self.set_owner, size=size)
        upper_parent = self.layers.real(UPPER, split(node.path)[0])
        parent_st = os.lstat(upper_parent)
        os.rename(tmp, self.layers.real(UPPER, node.path))
        # A copy-up is no change of the parent: keep its times, as kernel overlayfs does.
        os.utime(upper_parent, ns=(parent_st.st_atime_ns, parent_st.st_mtime_ns))
        node.copied_up()
        if not node.is_dir:
            new = os.lstat(self.layers.real(UPPER, node.path))
            self.table.set_real_key(node, (new.st_dev, new.st_ino))
            self._follow_copy_up(node)

    def _follow_copy_up(self, node: Node) -> None:
        """Descriptors opened on the lower file read the copy from now on, as with kernel
        overlayfs (switched now, while the copy still has a name to open it by)."""
        for open_file in self._files.values():
            if open_file.node is node and open_file.layer != UPPER:
                fd = self._open_real(node, os.O_RDONLY)
                os.close(open_file.fd)
                open_file.fd = fd
                open_file.layer = UPPER

    def _prepare_parent(self, parent: Node) -> None:
        if not parent.is_dir:
            raise _fail(errno.ENOTDIR)
        self._copy_up(parent)

    def _give_owner(
        self, real: bytes, parent: Node, ctx: pyfuse3.RequestContext, fd: int | None = None
    ) -> None:
        if not self.set_owner:
            return
        uid = self.uids.to_outer(ctx.uid)
        gid = self.gids.to_outer(ctx.gid)
        if uid == self._euid and gid == self._egid:
            return  # created with these ids, or the setgid parent's group: as it must be
        parent_st = os.lstat(self.layers.real(UPPER, parent.path))
        if parent_st.st_mode & stat.S_ISGID:
            gid = parent_st.st_gid
        if uid is None or gid is None:
            raise _fail(errno.EOVERFLOW)
        if fd is not None:
            os.fchown(fd, uid, gid)
        else:
            os.chown(real, uid, gid, follow_symlinks=False)

    def _exact_mode(self, real: bytes | int, mode: int) -> None:
        if mode & self._umask and not stat.S_ISLNK(mode):
            os.chmod(real, stat.S_IMODE(mode))

    def _created(
        self, parent: Node, name: bytes, is_dir: bool, st: os.stat_result | None = None
    ) -> pyfuse3.EntryAttributes:
        path = join(parent.path, name)
        st = st or os.lstat(self.layers.real(UPPER, path))
        key = (st.st_dev, st.st_ino) if not is_dir else None
        node = self.table.add(path, UPPER, is_dir, (UPPER,), key)
        node.caps_absent = True  # new: no extended attributes yet
        return self._entry(node, st)

    # --- lookups and attributes ------------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._entry(parent)
        if name == b"..":
            up = self.table.at(split(parent.path)[0]) if parent.path else parent
            return self._entry(up or parent)
        found = self._child(parent, name)
        if found is None:
            # A negative entry the kernel may cache: only this process creates names.
            attr = pyfuse3.EntryAttributes()
            attr.st_ino = 0
            attr.entry_timeout = self.timeout
            return attr
        node, st = found
        node.lookups += 1  # InodeTable.looked_up, inline
        return self._attrs(node, st)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.table.forget(ino, count)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        return self._attrs(node, self._stat(node))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        # Each `fields.update_*` read is a call into pyfuse3: read once (three of these come
        # for every file tar writes).
        size, mode = fields.update_size, fields.update_mode
        uid_given, gid_given = fields.update_uid, fields.update_gid
        atime_given, mtime_given = fields.update_atime, fields.update_mtime
        if not (size or uid_given or gid_given or mode or atime_given or mtime_given):
            # e.g. the ctime the writeback cache keeps: nothing to store
            return self._attrs(node, self._stat(node))
        open_file = self._files.get(fh) if fh is not None else None
        if not node.names:
            open_file = self._open_file_of(node)
            if open_file is None or open_file.layer != UPPER:
                # Unlinked and open only on a lower layer. The kernel's writeback cache
                # still flushes the times it kept; they have nowhere to go.
                if size or mode or uid_given or gid_given:
                    raise _fail(errno.EROFS)
                return self._attrs(node, self._stat(node))
            target: int | bytes = open_file.fd
        else:
            if node.layer != UPPER:
                self._copy_up(node, size=attr.st_size if size else None)
            if open_file is not None and open_file.layer == UPPER:
                target = open_file.fd  # f*() calls (tar's): no path to walk
            else:
                target = self._real(node)
        by_fd = isinstance(target, int)  # a descriptor is never a symlink's
        st = None
        if atime_given != mtime_given or (not by_fd and (mode or size)):
            st = os.fstat(target) if isinstance(target, int) else self._stat(node)
            if mode and stat.S_ISLNK(st.st_mode):
                raise _fail(errno.EOPNOTSUPP)
        if size:
            if open_file is not None and open_file.writable:
                os.ftruncate(open_file.fd, attr.st_size)
            else:  # a read-only descriptor cannot truncate: the name can
                os.truncate(self._real(node) if node.names else target, attr.st_size)
            if not mode and (st is None or stat.S_ISREG(st.st_mode)):
                self._drop_privileges(target)
        if uid_given or gid_given:
            uid = self.uids.to_outer(attr.st_uid) if uid_given else -1
            gid = self.gids.to_outer(attr.st_gid) if gid_given else -1
            if uid is None or gid is None:
                raise _fail(errno.EINVAL)
            os.chown(target, uid, gid, follow_symlinks=by_fd)
        if mode:
            os.chmod(target, stat.S_IMODE(attr.st_mode))
        if atime_given or mtime_given:
            atime = attr.st_atime_ns if atime_given or st is None else st.st_atime_ns
            mtime = attr.st_mtime_ns if mtime_given or st is None else st.st_mtime_ns
            os.utime(target, ns=(atime, mtime), follow_symlinks=by_fd)
        final = os.fstat(target) if isinstance(target, int) else self._stat(node)
        return self._attrs(node, final)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        with _os_errors():
            return os.readlink(self._real(node))

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        with _os_errors():
            vfs = os.statvfs(self.layers.roots[UPPER])
        data = pyfuse3.StatvfsData()
        data.f_bsize = vfs.f_bsize
        data.f_frsize = vfs.f_frsize
        data.f_blocks = vfs.f_blocks
        data.f_bfree = vfs.f_bfree
        data.f_bavail = vfs.f_bavail
        data.f_files = vfs.f_files
        data.f_ffree = vfs.f_ffree
        data.f_favail = vfs.f_favail
        data.f_namemax = vfs.f_namemax
        return data

    # --- creating names --------------------------------------------------------------------

    def _place(self, parent: Node, name: bytes) -> tuple[bytes, bool]:
        """Make the parent writable and clear a whiteout under `name`: the real upper path, and
        whether a whiteout was there."""
        self._prepare_parent(parent)
        path = join(parent.path, name)
        # Whiteouts are made only where a lower layer shows the name: a directory of the upper
        # layer alone has none to clear (see _retry_over_whiteout for one that has).
        had_whiteout = parent.has_lower and self.layers.clear_whiteout(path)
        return self.layers.real(UPPER, path), had_whiteout

    def _retry_over_whiteout(self, path: bytes, make: Callable[[], _T]) -> _T:
        """`make()`; if the name is taken by a whiteout after all, clear it and make again."""
        try:
            return make()
        except FileExistsError:
            if not self.layers.clear_whiteout(path):
                raise
            return make()

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        with _os_errors():
            real, _ = self._place(parent, name)
            self._retry_over_whiteout(join(parent.path, name), lambda: os.mknod(real, mode, rdev))
            self._exact_mode(real, mode)
            self._give_owner(real, parent, ctx)
            return self._created(parent, name, False)

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        with _os_errors():
            real, had_whiteout = self._place(parent, name)
            self._retry_over_whiteout(
                join(parent.path, name), lambda: os.mkdir(real, stat.S_IMODE(mode))
            )
            try:
                self._exact_mode(real, mode)
                self._give_owner(real, parent, ctx)
                if had_whiteout:  # rmdir then mkdir of a lower directory: old content stays gone
                    self.layers.set_opaque(join(parent.path, name))
            except BaseException:
                os.rmdir(real)
                raise
            return self._created(parent, name, True)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        with _os_errors():
            real, _ = self._place(parent, name)
            self._retry_over_whiteout(join(parent.path, name), lambda: os.symlink(target, real))
            self._give_owner(real, parent, ctx)
            return self._created(parent, name, False)

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        parent = self._node(new_parent_inode)
        if node.is_dir:
            raise _fail(errno.EPERM)
        with _os_errors():
            self._copy_up(node)
            real, _ = self._place(parent, new_name)
            source = self._real(node)
            self._retry_over_whiteout(join(parent.path, new_name), lambda: os.link(source, real))
            path = join(parent.path, new_name)
            self.table.add_name(node, path)
            st = self._stat(node)
            self.table.set_real_key(node, (st.st_dev, st.st_ino))
            return self._entry(node, st)

    # --- removing and renaming -------------------------------------------------------------

    def _existing(self, parent: Node, name: bytes) -> Node:
        found = self._child(parent, name)
        if found is None:
            raise _fail(errno.ENOENT)
        return found[0]

    def _remove(self, parent: Node, name: bytes, node: Node) -> None:
        path = join(parent.path, name)
        whiteout = self._lower_visible(parent, name)
        self._prepare_parent(parent)
        if node.is_dir:
            if node.in_upper:
                self.layers.empty_upper_dir(path)
                os.rmdir(self.layers.real(UPPER, path))
            if whiteout:
                self.layers.make_whiteout(path)
        elif whiteout:
            self.layers.make_whiteout(path)  # atomically replaces an upper file
        elif node.in_upper:
            os.unlink(self.layers.real(UPPER, path))
        self.table.remove_name(path)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._node(parent_inode)
        with _os_errors():
            node = self._existing(parent, name)
            if node.is_dir:
                raise _fail(errno.EISDIR)
            self._remove(parent, name, node)

    def _listing(self, node: Node) -> list[bytes]:
        return merge_listing([self.layers.entries(layer, node.path) for layer in node.dir_layers])

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self._node(parent_inode)
        with _os_errors():
            node = self._existing(parent, name)
            if not node.is_dir:
                raise _fail(errno.ENOTDIR)
            if self._listing(node):
                raise _fail(errno.ENOTEMPTY)
            self._remove(parent, name, node)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old_parent = self._node(parent_inode_old)
        new_parent = self._node(parent_inode_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            with _os_errors():
                self._exchange(old_parent, name_old, new_parent, name_new)
            return
        with _os_errors():
            node = self._existing(old_parent, name_old)
            if node.is_dir and node.has_lower:
                # Like kernel overlayfs without redirect_dir: `mv` falls back to copying.
                raise _fail(errno.EXDEV)
            target = self._child(new_parent, name_new)
            if target is not None:
                victim = target[0]
                if victim is node:
                    return
                if flags & pyfuse3.RENAME_NOREPLACE:
                    raise _fail(errno.EEXIST)
                if victim.is_dir and not node.is_dir:
                    raise _fail(errno.EISDIR)
                if node.is_dir and not victim.is_dir:
                    raise _fail(errno.ENOTDIR)
                if victim.is_dir and self._listing(victim):
                    raise _fail(errno.ENOTEMPTY)
            old_path = join(old_parent.path, name_old)
            new_path = join(new_parent.path, name_new)
            whiteout_old = self._lower_visible(old_parent, name_old)
            self._copy_up(node)
            self._prepare_parent(old_parent)
            self._prepare_parent(new_parent)
            new_real = self.layers.real(UPPER, new_path)
            if target is not None and target[0].is_dir:
                if target[0].in_upper:
                    self.layers.empty_upper_dir(new_path)
                else:
                    target = None
            if node.is_dir:
                self.layers.clear_whiteout(new_path)  # a directory cannot replace a device
            else:
                head, base = split(new_path)
                try:
                    os.unlink(self.layers.real(UPPER, join(head, b".wh." + base)))
                except FileNotFoundError:
                    pass
            os.rename(self.layers.real(UPPER, old_path), new_real)
            if node.is_dir and new_parent.has_lower:
                # Whatever a lower layer has (or gets) under the new name stays hidden, as
                # kernel overlayfs marks a directory moved into a merged one.
                self.layers.set_opaque(new_path)
            if whiteout_old:
                self.layers.make_whiteout(old_path)
            self.table.move(old_path, new_path)

    def _exchange(
        self, old_parent: Node, old_name: bytes, new_parent: Node, new_name: bytes
    ) -> None:
        """RENAME_EXCHANGE, as kernel overlayfs does it: both entries copied up and swapped in
        the upper layer; a directory with lower content cannot move (EXDEV, as for rename)."""
        node = self._existing(old_parent, old_name)
        other = self._existing(new_parent, new_name)
        if node is other:
            return
        if any(n.is_dir and n.has_lower for n in (node, other)):
            raise _fail(errno.EXDEV)
        old_path = join(old_parent.path, old_name)
        new_path = join(new_parent.path, new_name)
        self._copy_up(node)
        self._copy_up(other)
        self._prepare_parent(old_parent)
        self._prepare_parent(new_parent)
        self.layers.exchange(old_path, new_path)
        # A directory that lands in a merged one hides what lower layers have under its name.
        if node.is_dir and new_parent.has_lower:
            self.layers.set_opaque(new_path)
        if other.is_dir and old_parent.has_lower:
            self.layers.set_opaque(old_path)
        self.table.exchange(old_path, new_path)

    # --- files -----------------------------------------------------------------------------

    def _open_real(self, node: Node, flags: int) -> int:
        # With the writeback cache the kernel appends by itself and may read on a write-only
        # descriptor, so O_APPEND goes and write-only becomes read-write where allowed.
        # O_TRUNC stays: libfuse asks for atomic_o_trunc, so open() is where truncation happens.
        flags &= ~(os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
        flags |= os.O_NOFOLLOW
        real = self._real(node)
        if flags & os.O_ACCMODE == os.O_WRONLY:
            try:
                return os.open(real, (flags & ~os.O_ACCMODE) | os.O_RDWR)
            except PermissionError:
                pass
        return os.open(real, flags)

    def _add_file(self, fd: int, node: Node, flags: int) -> pyfuse3.FileInfo:
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = OpenFile(fd, node, node.layer, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        with _os_errors():
            if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
                self._copy_up(node, size=0 if flags & os.O_TRUNC else None)
            fd = self._open_real(node, flags)
            # Reads come one request at a time (128 KiB, the kernel's readahead): a doubled
            # readahead window on the real file keeps the disk ahead of them.
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:  # not a regular file (ESPIPE): nothing to read ahead
                pass
            return self._add_file(fd, node, flags)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        real, _ = self._place(parent, name)
        exclusive = os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW
        fd = self._retry_over_whiteout(
            join(parent.path, name), lambda: os.open(real, exclusive, stat.S_IMODE(mode))
        )
        try:
            self._exact_mode(fd, mode)
            self._give_owner(real, parent, ctx, fd)
            attr = self._created(parent, name, False, os.fstat(fd))
        except BaseException:
            os.close(fd)
            os.unlink(real)
            raise
        node = self._node(attr.st_ino)
        return self._add_file(fd, node, flags), attr

    def _file(self, fh: int) -> OpenFile:
        open_file = self._files.get(fh)
        if open_file is None:
            raise _fail(errno.EBADF)
        return open_file

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(self._file(fh).fd, size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        open_file = self._files.get(fh)
        if open_file is None or not open_file.writable:
            raise _fail(errno.EBADF)
        if not open_file.privileges_dropped:
            self._drop_privileges(open_file.fd)
            open_file.privileges_dropped = True
        return os.pwrite(open_file.fd, buf, off)

    @staticmethod
    def _drop_privileges(file: int | bytes) -> None:
        """A written file loses setuid (and group-executable setgid), as the kernel does for an
        unprivileged writer: libfuse leaves that to the filesystem (handle_killpriv)."""
        mode = os.stat(file).st_mode
        kill = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
        if mode & kill:
            os.chmod(file, stat.S_IMODE(mode) & ~kill)

    async def release(self, fh: int) -> None:
        open_file = self._files.pop(fh, None)
        if open_file is not None:
            os.close(open_file.fd)

    async def fsync(self, fh: int, datasync: bool) -> None:
        with _os_errors():
            fd = self._file(fh).fd
            if datasync:
                os.fdatasync(fd)
            else:
                os.fsync(fd)

    # --- directories -----------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        if not node.is_dir:
            raise _fail(errno.ENOTDIR)
        with _os_errors():
            names = [b".", b"..", *self._listing(node)]
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = OpenDir(node, names)
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs.get(fh)
        if handle is None:
            raise _fail(errno.EBADF)
        node = handle.node
        with _os_errors():
            for index in range(start_id, len(handle.names)):
                name = handle.names[index]
                if name in (b".", b".."):
                    target = node
                    if name == b".." and node.path:
                        target = self.table.at(split(node.path)[0]) or node
                    if not pyfuse3.readdir_reply(
                        token, name, self._attrs(target, self._stat(target)), index + 1
                    ):
                        return
                    continue
                found = self._child(node, name)
                if found is None:
                    continue  # removed since opendir
                child, st = found
                if not pyfuse3.readdir_reply(token, name, self._attrs(child, st), index + 1):
                    return
                self.table.looked_up(child)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        handle = self._dirs.get(fh)
        if handle is None or not handle.node.in_upper:
            return
        with _os_errors():
            fd = os.open(self._real(handle.node), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- extended attributes ---------------------------------------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if name == _CAPS:
            if node.caps_absent:
                raise _fail(pyfuse3.ENOATTR)
            try:
                return os.getxattr(self._real(node), _CAPS_KEY, follow_symlinks=False)
            except OSError as exc:
                if exc.errno == pyfuse3.ENOATTR:
                    node.caps_absent = True
                raise
        key = os.fsdecode(name)
        if is_private_xattr(key):
            raise _fail(pyfuse3.ENOATTR)
        return os.getxattr(self._real(node), key, follow_symlinks=False)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        node = self._node(inode)
        names = os.listxattr(self._real(node), follow_symlinks=False)
        return [os.fsencode(n) for n in names if not is_private_xattr(n)]

    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        node = self._node(inode)
        key = os.fsdecode(name)
        if is_private_xattr(key):
            raise _fail(errno.EPERM)
        with _os_errors():
            self._copy_up(node)
            node.caps_absent = False
            os.setxattr(self._real(node), key, value, follow_symlinks=False)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self._node(inode)
        key = os.fsdecode(name)
        if is_private_xattr(key):
            raise _fail(pyfuse3.ENOATTR)
        with _os_errors():
            os.getxattr(self._real(node), key, follow_symlinks=False)  # ENODATA before copy-up
            self._copy_up(node)
            node.caps_absent = False
            os.removexattr(self._real(node), key, follow_symlinks=False)


def _guarded(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An OSError answers its errno (so the busiest handlers need no `_os_errors`), and an
    unexpected exception EIO instead of ending the session (and the mount)."""

    fuse_error = pyfuse3.FUSEError  # a closure cell: no module attribute lookup per error

    @functools.wraps(method)
    async def handler(*args: Any) -> Any:
        try:
            return await method(*args)
        except fuse_error:
            raise
        except OSError as exc:
            raise fuse_error(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", name)
            raise fuse_error(errno.EIO) from None

    return handler


_HANDLERS = (
    "lookup forget getattr setattr readlink statfs mknod mkdir symlink link unlink rmdir rename "
    "open create read write release fsync opendir readdir releasedir fsyncdir getxattr "
    "listxattr setxattr removexattr"
)
for _name in _HANDLERS.split():
    setattr(OverlayFS, _name, _guarded(_name, getattr(OverlayFS, _name)))
