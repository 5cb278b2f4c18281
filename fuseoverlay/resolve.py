"""The union rules, free of I/O: which layer an entry comes from, and what a directory lists.

Layers are numbered top first: 0 is the writable upper, 1.. the read-only lowers. The on-disk
format is kernel overlayfs's (with `userxattr`): a whiteout is a character device 0:0 (or, as in
image tarballs, an empty file `.wh.NAME`); an opaque directory carries `user.overlay.opaque=y`
(`trusted.overlay.opaque` and `user.fuseoverlayfs.opaque` are honoured too, as is a
`.wh..wh..opq` entry). The I/O shell observes one layer at a time and these functions decide.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
# Extended attributes that are bookkeeping of an overlay implementation, never user data.
PRIVATE_XATTR_PREFIXES = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")

UPPER = 0


class Kind(enum.Enum):
    """What one layer holds under a name."""

    ABSENT = "absent"
    WHITEOUT = "whiteout"
    DIR = "dir"
    OPAQUE_DIR = "opaque dir"  # a directory that hides everything below it
    OTHER = "other"  # file, symlink, fifo, socket, device


@dataclass(frozen=True)
class Resolved:
    """A visible entry: the layer it is taken from, and for a directory the layers merged."""

    layer: int
    is_dir: bool
    dir_layers: tuple[int, ...]


def resolve_entry(candidates: Iterable[int], observe: Callable[[int], Kind]) -> Resolved | None:
    """Resolve one name across `candidates` (the parent's merged layers, top first).

    `observe(layer)` reports what that layer holds; it is called top down and only as far as
    needed. None means the name is not visible (absent everywhere, or whited out).
    """
    dirs: list[int] = []
    for layer in candidates:
        kind = observe(layer)
        if kind is Kind.ABSENT:
            continue
        if not dirs:
            if kind is Kind.WHITEOUT:
                return None
            if kind is Kind.OTHER:
                return Resolved(layer, False, (layer,))
            dirs.append(layer)
        elif kind in (Kind.WHITEOUT, Kind.OTHER):
            break  # a lower non-directory ends the merge
        else:
            dirs.append(layer)
        if kind is Kind.OPAQUE_DIR:
            break
    if not dirs:
        return None
    return Resolved(dirs[0], True, tuple(dirs))


def whited_out_name(name: bytes) -> bytes | None:
    """For a `.wh.NAME` entry, the NAME it hides; None for ordinary names and the opaque marker."""
    if name.startswith(WHITEOUT_PREFIX) and name != OPAQUE_MARKER:
        return name[len(WHITEOUT_PREFIX) :]
    return None


def is_overlay_name(name: bytes) -> bool:
    """Names that are overlay bookkeeping in a layer, never shown."""
    return name.startswith(WHITEOUT_PREFIX)


def merge_listing(layers: Sequence[Iterable[tuple[bytes, bool]]]) -> list[bytes]:
    """The visible names of a merged directory.

    `layers` holds, for each merged layer top first, its entries as (name, is_whiteout) pairs.
    Upper names come first, then names only lower layers have, each layer in its own order, so
    the listing is stable for a snapshot.
    """
    seen: set[bytes] = set()
    hidden: set[bytes] = set()
    visible: list[bytes] = []
    for entries in layers:
        layer_hides: list[bytes] = []
        for name, is_whiteout in entries:
            target = whited_out_name(name)
            if target is not None:
                layer_hides.append(target)
                continue
            if name == OPAQUE_MARKER or name in (b".", b".."):
                continue
            if is_whiteout:
                layer_hides.append(name)
                continue
            if name in seen or name in hidden:
                continue
            seen.add(name)
            visible.append(name)
        # A whiteout hides the name in the layers below, not a sibling in its own layer.
        hidden.update(layer_hides)
    return visible


def is_private_xattr(name: str) -> bool:
    return name.startswith(PRIVATE_XATTR_PREFIXES)


def is_opaque(xattrs: dict[str, bytes], has_marker: bool) -> bool:
    """Whether a directory with these overlay xattrs (and maybe a `.wh..wh..opq`) is opaque."""
    return has_marker or any(xattrs.get(name) == b"y" for name in OPAQUE_XATTRS)


def join(parent: bytes, name: bytes) -> bytes:
    """A merged path relative to the mount root (b"" is the root)."""
    return name if not parent else parent + b"/" + name


def split(path: bytes) -> tuple[bytes, bytes]:
    head, _, tail = path.rpartition(b"/")
    return head, tail
