"""The inode table: FUSE inode numbers for merged paths, stable for the life of the mount.

A node is one file as the mount shows it. It keeps its number across copy-up and rename; hard
links in the upper layer share one node (found by the real device and inode number). Nodes for
names that still exist are kept even when the kernel forgets them, so a name looked up again
gets the number it had; a node whose last name went away is dropped once the kernel forgets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fuseoverlay.resolve import UPPER, join

ROOT_INODE = 1


@dataclass(eq=False, slots=True)  # slots: one is made per name looked up, and read per request
class Node:
    ino: int
    path: bytes  # one current name, relative to the root (b"" for the root)
    layer: int  # the layer the file is read from; UPPER once copied up
    is_dir: bool
    dir_layers: tuple[int, ...]  # for a directory, the layers merged (top first)
    names: set[bytes] = field(default_factory=set)
    lookups: int = 0
    real_key: tuple[int, int] | None = None  # (st_dev, st_ino) of an upper non-directory
    # Known to have no security.capability: the kernel asks before every write(2) and
    # setattr (FUSE filesystems get no S_NOSEC), and only this process sets xattrs.
    caps_absent: bool = False

    @property
    def in_upper(self) -> bool:
        return self.layer == UPPER

    @property
    def has_lower(self) -> bool:
        """A directory merged with (or taken from) a lower layer."""
        return any(layer != UPPER for layer in self.dir_layers)

    def copied_up(self) -> None:
        self.layer = UPPER
        if self.is_dir and UPPER not in self.dir_layers:
            self.dir_layers = (UPPER, *self.dir_layers)


class InodeTable:
    def __init__(self, root_layers: tuple[int, ...]) -> None:
        self._next = ROOT_INODE + 1
        root = Node(ROOT_INODE, b"", root_layers[0], True, root_layers, {b""}, lookups=1)
        self.by_ino: dict[int, Node] = {ROOT_INODE: root}  # public: read on every request
        self.by_path: dict[bytes, Node] = {b"": root}  # public: read on every lookup
        self._by_real: dict[tuple[int, int], Node] = {}

    @property
    def root(self) -> Node:
        return self.by_ino[ROOT_INODE]

    def __len__(self) -> int:
        return len(self.by_ino)

    def get(self, ino: int) -> Node | None:
        return self.by_ino.get(ino)

    def at(self, path: bytes) -> Node | None:
        return self.by_path.get(path)

    def add(
        self,
        path: bytes,
        layer: int,
        is_dir: bool,
        dir_layers: tuple[int, ...],
        real_key: tuple[int, int] | None = None,
    ) -> Node:
        """The node for a newly seen name; an upper hard link joins the node it shares."""
        if real_key is not None and layer == UPPER and not is_dir:
            same = self._by_real.get(real_key)
            if same is not None and same.names:
                self.add_name(same, path)
                return same
        node = Node(self._next, path, layer, is_dir, dir_layers, {path})
        self._next += 1
        self.by_ino[node.ino] = node
        self.by_path[path] = node
        if real_key is not None:  # most files have one link: no key to keep
            self.set_real_key(node, real_key)
        return node

    def set_real_key(self, node: Node, real_key: tuple[int, int] | None) -> None:
        if node.real_key is not None and self._by_real.get(node.real_key) is node:
            del self._by_real[node.real_key]
        node.real_key = real_key if node.in_upper and not node.is_dir else None
        if node.real_key is not None:
            self._by_real[node.real_key] = node

    def add_name(self, node: Node, path: bytes) -> None:
        """A hard link: one more name for the node."""
        self.by_path[path] = node
        node.names.add(path)
        if not node.path or node.path not in node.names:
            node.path = path

    def remove_name(self, path: bytes) -> Node | None:
        """The name is gone (unlink, rmdir, or replaced by a rename); so is anything below it."""
        node = self.by_path.pop(path, None)
        if node is None:
            return None
        node.names.discard(path)
        if node.names and node.path == path:
            node.path = min(node.names)
        if node.is_dir:
            prefix = path + b"/"
            for child in [p for p in self.by_path if p.startswith(prefix)]:
                self.remove_name(child)
        self._drop_if_unused(node)
        return node

    def move(self, old: bytes, new: bytes) -> None:
        """Rename: `old` (and, for a directory, everything below it) is now at `new`."""
        self.remove_name(new)
        node = self.by_path.pop(old)
        node.names.discard(old)
        node.names.add(new)
        if node.path == old:
            node.path = new
        self.by_path[new] = node
        if node.is_dir:
            prefix = old + b"/"
            moved = [(p, n) for p, n in self.by_path.items() if p.startswith(prefix)]
            for p, _ in moved:
                del self.by_path[p]
            for p, n in moved:
                renamed = join(new, p[len(prefix) :])
                n.names.discard(p)
                n.names.add(renamed)
                if n.path == p:
                    n.path = renamed
                self.by_path[renamed] = n

    def exchange(self, a: bytes, b: bytes) -> None:
        """RENAME_EXCHANGE: the nodes at `a` and `b` (and what is below them) trade places."""
        parked = b"\0exchange"  # no real path holds a NUL
        self.move(a, parked)
        self.move(b, a)
        self.move(parked, b)

    def looked_up(self, node: Node) -> None:
        node.lookups += 1

    def forget(self, ino: int, count: int) -> None:
        node = self.by_ino.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - count)
        self._drop_if_unused(node)

    def _drop_if_unused(self, node: Node) -> None:
        if node.lookups or node.names or node.ino == ROOT_INODE:
            return
        del self.by_ino[node.ino]
        if node.real_key is not None and self._by_real.get(node.real_key) is node:
            del self._by_real[node.real_key]
