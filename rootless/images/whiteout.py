"""What a layer tar member's name means: an ordinary entry, a whiteout, or an opaque marker.

Pure rules, no I/O (the unpacker in unpack.py applies them). Following the OCI image spec:

- ``DIR/.wh.NAME`` hides ``DIR/NAME`` of the layers below (a *whiteout*);
- ``DIR/.wh..wh..opq`` hides everything the layers below have in ``DIR`` (an *opaque marker*);
- any other ``.wh..wh.`` name is aufs bookkeeping, and so is anything under a directory whose
  name starts with ``.wh.``: those are skipped, as docker and containerd do.

Paths are tuples of components relative to the layer root. Like tar, a leading ``/`` is stripped
(so ``/etc/passwd`` is the layer's ``etc/passwd``) and ``.`` components are dropped; ``..`` is
refused outright rather than resolved, since nothing in a layer has a reason to climb.
"""

from __future__ import annotations

from dataclasses import dataclass

WHITEOUT_PREFIX = ".wh."
AUFS_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"

LayerPath = tuple[str, ...]
MAX_PATH_BYTES = 4095  # PATH_MAX less the terminating NUL: longer paths could not be used


class UnsafePath(ValueError):
    """A member name that would reach outside the layer or means nothing; str() says why."""


@dataclass(frozen=True)
class Plain:
    """An ordinary entry (file, directory, link, …) to create at `path`."""

    path: LayerPath


@dataclass(frozen=True)
class Whiteout:
    """Hide `target` of the layers below."""

    target: LayerPath


@dataclass(frozen=True)
class Opaque:
    """Hide everything the layers below have inside `directory` (() is the layer root)."""

    directory: LayerPath


@dataclass(frozen=True)
class Skipped:
    """A member with no meaning for the unpacked layer; `why` is for the debug log."""

    why: str


Member = Plain | Whiteout | Opaque | Skipped


def layer_path(name: str) -> LayerPath:
    """The components of member name (or hardlink target) `name`, relative to the layer root.

    () is the layer root itself (members named ``./`` or ``/``). Raises UnsafePath for ``..``
    components, NUL bytes and paths too long to use.
    """
    if "\0" in name:
        raise UnsafePath("name contains a NUL byte")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafePath("path contains '..'")
    if len("/".join(parts).encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise UnsafePath(f"path longer than {MAX_PATH_BYTES} bytes")
    return parts


def classify(name: str) -> Member:
    """What tar member `name` stands for. Raises UnsafePath for names the layer must refuse."""
    path = layer_path(name)
    if any(part.startswith(WHITEOUT_PREFIX) for part in path[:-1]):
        return Skipped("inside an aufs metadata directory")
    if not path or not path[-1].startswith(WHITEOUT_PREFIX):
        return Plain(path)
    base = path[-1]
    if base == OPAQUE_MARKER:
        return Opaque(path[:-1])
    if base.startswith(AUFS_META_PREFIX):
        return Skipped("aufs metadata")
    hidden = base[len(WHITEOUT_PREFIX) :]
    if hidden in ("", ".", ".."):
        raise UnsafePath(f"whiteout {base!r} names no entry")
    return Whiteout((*path[:-1], hidden))


def display(path: LayerPath) -> str:
    """`path` as a user would write it inside the image, quoted if it holds control characters."""
    return printable("/" + "/".join(path))


def printable(name: str) -> str:
    """`name` fit for a one-line message: as it is, or Python-quoted when it holds control
    characters (a hostile layer may put newlines in names)."""
    return name if name.isprintable() else repr(name)
