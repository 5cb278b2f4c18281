"""The local image store: content-addressed blobs, shared unpacked layers, a SQLite index.

Layout (under `root`, see notes/STORE-API.md):
    rl.db                 names, images, their layers; WAL mode, so readers never wait
    blobs/sha256/<hex>    configs, manifests and layer blobs exactly as received
    layers/<hex>/         one unpacked layer per diff-id, shared by every image that has it
    tmp/                  staging on the same filesystem, for atomic renames

How updates stay atomic with several `rl` processes at once: the slow work (hashing, copying,
unpacking) happens in a private staging directory without any lock. Then one `BEGIN IMMEDIATE`
transaction moves the results into place and records them: a layer another process added in
the meantime is kept and our copy discarded. Rows and renames are undone together when the
transaction fails, so nobody ever sees half an image. Removal deletes rows and renames layer
directories into `tmp/trash-*` in its transaction, and deletes the trash after the commit.

Unpacked layers hold files owned by subordinate ids, so everything that moves or deletes them
runs as root of a user namespace (`run_in_userns`), where the user's ids are all mapped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from rootless.errors import RlError
from rootless.images.unpacked import layer_dir

if TYPE_CHECKING:
    from rootless.images import archive
    from rootless.images.unpacked import Unpacked

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,            -- hex sha256 of the config blob
    digest TEXT NOT NULL,           -- manifest digest, sha256:<hex>
    manifest_type TEXT NOT NULL,
    created REAL NOT NULL,          -- from the config, seconds since the epoch
    loaded REAL NOT NULL,
    size INTEGER NOT NULL,
    names_history TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,      -- 0 = bottom
    diff_id TEXT NOT NULL,
    blob TEXT NOT NULL,             -- the layer blob as received, sha256:<hex>
    media_type TEXT NOT NULL,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS image_layers_by_diff ON image_layers(diff_id);
CREATE INDEX IF NOT EXISTS image_layers_by_blob ON image_layers(blob);
CREATE TABLE IF NOT EXISTS layers (
    diff_id TEXT PRIMARY KEY,       -- layers/<hex of diff_id>/
    size INTEGER NOT NULL           -- bytes unpacked
);
CREATE TABLE IF NOT EXISTS image_names (
    name TEXT PRIMARY KEY,          -- fully qualified, e.g. docker.io/library/busybox:latest
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS image_names_by_image ON image_names(image_id);
"""

BUSY_TIMEOUT_MS = 60_000


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"  # archive.OCI_MANIFEST


class Image:
    """One image of the store. A plain class rather than a dataclass: this module is on the
    path of every `rl run`, and a dataclass costs ~0.5 ms to create at import (issue 3)."""

    def __init__(
        self,
        id: str,  # 64 hex = sha256 of the config blob
        names: list[str],  # fully qualified, e.g. "docker.io/library/busybox:latest"
        config: dict[str, Any],  # the OCI/docker image config JSON (has "config", "rootfs", ...)
        diff_ids: list[str],  # bottom layer first
        created: float,
        size: int,
        digest: str,  # manifest digest
        manifest_type: str = OCI_MANIFEST,
        layer_blobs: list[tuple[str, str]] | None = None,  # (digest, media type)
        names_history: list[str] | None = None,
    ) -> None:
        self.id = id
        self.names = names
        self.config = config
        self.diff_ids = diff_ids
        self.created = created
        self.size = size
        self.digest = digest
        self.manifest_type = manifest_type
        self.layer_blobs = layer_blobs if layer_blobs is not None else []
        self.names_history = names_history if names_history is not None else []

    def __repr__(self) -> str:
        return f"Image({self.__dict__!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    @property
    def config_digest(self) -> str:
        return "sha256:" + self.id


class Removal(NamedTuple):
    """What `rmi` does to one image: drop these names, and delete the image when `delete`."""

    image_id: str
    untag: tuple[str, ...]
    delete: bool


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def parse_created(value: Any) -> float:
    """RFC 3339 (`2023-11-14T22:13:20.123456789Z`) to epoch seconds; 0 when absent or bad."""
    if not isinstance(value, str) or not value:
        return 0.0
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python takes at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _connect(root: Path) -> sqlite3.Connection:
    db = sqlite3.connect(root / "rl.db", timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        if db.execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new, empty database (a new store): switching it to WAL writes page 1 through
            # a rollback journal, four fdatasyncs (7-18 ms on a loaded machine) that protect
            # nothing: after a crash the file is empty again or has that one page, whose
            # content fits in its first sector. Writes after the switch sync as usual.
            db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


@contextlib.contextmanager
def _write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _storage_error(exc: OSError, doing: str) -> RlError:
    where = f": {exc.filename}" if exc.filename else ""
    return RlError(f"{doing}: {exc.strerror or exc}{where}")


class ImageStore:
    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self.db = db

    @classmethod
    def open(cls, root: Path | None = None) -> ImageStore:
        from rootless import paths

        root = root or paths.data_dir()
        try:
            for sub in ("blobs/sha256", "layers", "tmp"):
                paths.ensure_dir(root / sub)
            db = _connect(root)
            if (
                db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name='image_names'"
                ).fetchone()[0]
                == 0
            ):
                with _write_transaction(db):
                    for statement in SCHEMA.split(";"):
                        db.execute(statement)
        except OSError as exc:
            raise _storage_error(exc, "cannot open the image store") from exc
        except sqlite3.Error as exc:
            raise RlError(f"cannot open the image store database {root / 'rl.db'}: {exc}") from exc
        return cls(root, db)

    def close(self) -> None:
        self.db.close()

    # --- paths ---------------------------------------------------------------------------------

    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / _hex(diff_id)

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    # --- queries -------------------------------------------------------------------------------

    def images(self) -> list[Image]:
        """Every image, newest first (images another rl removes meanwhile are left out)."""
        rows = self.db.execute("SELECT id FROM images ORDER BY created DESC, loaded DESC, id")
        found = []
        for (image_id,) in rows.fetchall():
            try:
                found.append(self._image(image_id))
            except _RemovedMeanwhile:
                continue
        return found

    def _image(self, image_id: str) -> Image:
        row = self.db.execute(
            "SELECT digest, manifest_type, created, size, names_history FROM images WHERE id = ?",
            (image_id,),
        ).fetchone()
        if row is None:
            raise RlError(f"{image_id}: image not known")
        digest, manifest_type, created, size, history = row
        names = [
            r[0]
            for r in self.db.execute(
                "SELECT name FROM image_names WHERE image_id = ? ORDER BY added DESC, rowid DESC",
                (image_id,),
            )
        ]
        layers = self.db.execute(
            "SELECT diff_id, blob, media_type FROM image_layers "
            "WHERE image_id = ? ORDER BY position",
            (image_id,),
        ).fetchall()
        config = self._config(image_id)
        return Image(
            id=image_id,
            names=names,
            config=config,
            diff_ids=[r[0] for r in layers],
            created=created,
            size=size,
            digest=digest,
            manifest_type=manifest_type,
            layer_blobs=[(r[1], r[2]) for r in layers],
            names_history=json.loads(history),
        )

    def _config(self, image_id: str) -> dict[str, Any]:
        """The image's config. A concurrent `rmi` moves blobs away inside its transaction (so
        that it can put them back if it fails) and commits right after: a missing blob whose
        image row then disappears means the image was removed meanwhile, not that it broke."""
        path = self.blob_path(image_id)
        for _ in range(200):
            try:
                config: dict[str, Any] = json.loads(path.read_bytes())
                return config
            except FileNotFoundError:
                row = self.db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,))
                if row.fetchone() is None:
                    raise _RemovedMeanwhile(f"{image_id}: image not known") from None
                time.sleep(0.01)
            except (OSError, ValueError) as exc:
                raise _unreadable_config(image_id, exc) from exc
        raise _unreadable_config(image_id, FileNotFoundError(path))

    def find(self, name_or_id: str) -> tuple[Image, str | None] | None:
        """The image `name_or_id` names and the stored name it matched (None for an ID)."""
        found = self._lookup(name_or_id)
        if found is None:
            return None
        image_id, name = found
        try:
            return self._image(image_id), name
        except _RemovedMeanwhile:
            return None

    def resolve(self, name_or_id: str) -> Image:
        found = self.find(name_or_id)
        if found is None:
            raise RlError(f"{name_or_id}: image not known")
        return found[0]

    def exists(self, name_or_id: str) -> bool:
        return self._lookup(name_or_id) is not None

    def _lookup(self, query: str) -> tuple[str, str | None] | None:
        names = dict(self.db.execute("SELECT name, image_id FROM image_names").fetchall())
        if query in names:
            return names[query], query
        # Imported only now: a full name (the usual `rl run` of a pulled image) needs no
        # parsing, and the reference modules cost ~3 ms of start-up.
        from rootless.images import reference

        try:
            ref = reference.parse(query)
        except RlError:
            ref = None
        if ref is not None and ref.digest is None:
            # podman's order for a short name: localhost/ first, then Docker Hub.
            for registry in (ref.registry or reference.LOCALHOST, reference.DOCKER_HUB):
                full = str(reference.qualify(ref, registry))
                if full in names:
                    return names[full], full
        if reference.looks_like_id(query):
            prefix = query.removeprefix("sha256:")
            ids = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM images WHERE id >= ? AND id < ? ORDER BY id",
                    (prefix, prefix + "g"),
                )
            ]
            if len(ids) > 1:
                raise RlError(f"{query}: ambiguous image ID prefix: use more characters")
            if ids:
                return ids[0], None
        if ref is not None and ref.digest is not None:
            rows = self.db.execute("SELECT id FROM images WHERE digest = ?", (ref.digest,))
            for (image_id,) in rows.fetchall():
                image_names = [n for n, i in names.items() if i == image_id]
                if not image_names or any(
                    reference.parse(n).name.endswith(ref.repository) for n in image_names
                ):
                    return image_id, None
            return None
        # Short names: `busybox` matches localhost/busybox, docker.io/library/busybox, ...
        candidates = sorted(n for n in names if reference.matches(query, n))
        if candidates:
            return names[candidates[0]], candidates[0]
        return None

    # --- adding images -------------------------------------------------------------------------

    def _staging_dir(self, kind: str, owner: int | None = None) -> Path:
        """`owner`: the pid of the rl process the directory is for (stale once it is gone)."""
        path = self.root / "tmp" / f"{kind}-{owner or os.getpid()}-{os.urandom(6).hex()}"
        try:
            path.mkdir(mode=0o700)
        except OSError as exc:
            raise _storage_error(
                exc, "cannot create a staging directory in the image store"
            ) from exc
        return path

    def load(self, source: IO[bytes]) -> list[str]:
        """Add the images of a docker-archive or oci-archive; the `Loaded image:` names."""
        from rootless.images import archive

        staging_dir = self._staging_dir("load")
        try:
            staging = archive.Staging(staging_dir)
            archive.stage_archive(source, staging)
            images = archive.read_archive(staging)
            _check_layer_types(images)
            return self._commit(staging_dir, images)
        finally:
            discard_staging_dir(staging_dir)

    def import_tarball(
        self,
        source: IO[bytes],
        *,
        name: str | None,
        changes: Sequence[str],
        message: str,
    ) -> str:
        """`rl import`: a root filesystem tarball becomes a one-layer image; returns its ID."""
        from rootless.images import archive, reference
        from rootless.images.changes import apply_changes

        full_name = reference.normalize_local_name(name) if name else None
        staging_dir = self._staging_dir("import")
        try:
            staging = archive.Staging(staging_dir)
            try:
                blob, diff_id = _stage_tarball(source, staging)
            except OSError as exc:
                raise _storage_error(exc, "importing tarball") from exc
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            config: dict[str, Any] = {
                "created": created,
                "architecture": archive._host_architecture(),
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [
                    {
                        "created": created,
                        "created_by": f"/bin/sh -c #(nop) ADD file:{_hex(diff_id)} in /",
                        "comment": message or "imported from tarball",
                    }
                ],
            }
            config = apply_changes(config, changes)
            if not config["config"]:
                del config["config"]
            config_blob = staging.add_bytes(json.dumps(config, separators=(",", ":")).encode())
            media_type = archive.layer_media_type(_head(blob.path))
            layer = archive.ArchiveLayer(blob, diff_id, media_type)
            manifest = {
                "schemaVersion": 2,
                "mediaType": archive.OCI_MANIFEST,
                "config": {
                    "mediaType": archive.OCI_CONFIG,
                    "digest": config_blob.digest,
                    "size": config_blob.size,
                },
                "layers": [{"mediaType": media_type, "digest": blob.digest, "size": blob.size}],
            }
            manifest_blob = staging.add_bytes(json.dumps(manifest, separators=(",", ":")).encode())
            image = archive.ArchiveImage(
                [full_name] if full_name else [],
                config_blob,
                config,
                manifest_blob,
                archive.OCI_MANIFEST,
                [layer],
            )
            self._commit(staging_dir, [image])
            return image.id
        finally:
            discard_staging_dir(staging_dir)

    def add_layer_image(
        self,
        staging_dir: Path,
        layer_tar: Path,
        *,
        base: Image | None,
        config: dict[str, Any],
        name: str | None,
    ) -> str:
        """`rl commit`: an image made of `base`'s layers plus the plain layer tar `layer_tar`
        (in `staging_dir`, from new_staging_dir), with `config` (its rootfs is filled in
        here). Returns the new image's ID; the staging directory is consumed."""
        from rootless.images import archive, reference

        full_name = reference.normalize_local_name(name) if name else None
        try:
            staging = archive.Staging(staging_dir)
            with open(layer_tar, "rb") as source:
                blob = staging.add_stream("layer", source)
            layer_tar.unlink()
        except OSError as exc:
            raise _storage_error(exc, "storing the committed layer") from exc
        layers = [
            archive.ArchiveLayer(
                archive.Blob(self.blob_path(digest), digest, _size(self.blob_path(digest))),
                diff_id,
                media_type,
            )
            for diff_id, (digest, media_type) in zip(
                base.diff_ids if base else [], base.layer_blobs if base else [], strict=True
            )
        ]
        layers.append(archive.ArchiveLayer(blob, blob.digest, archive.OCI_LAYER))
        config = dict(config, rootfs={"type": "layers", "diff_ids": [x.diff_id for x in layers]})
        config_blob = staging.add_bytes(json.dumps(config, separators=(",", ":")).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": archive.OCI_MANIFEST,
            "config": {
                "mediaType": archive.OCI_CONFIG,
                "digest": config_blob.digest,
                "size": config_blob.size,
            },
            "layers": [
                {"mediaType": x.media_type, "digest": x.blob.digest, "size": x.blob.size}
                for x in layers
            ],
        }
        manifest_blob = staging.add_bytes(json.dumps(manifest, separators=(",", ":")).encode())
        image = archive.ArchiveImage(
            [full_name] if full_name else [],
            config_blob,
            config,
            manifest_blob,
            archive.OCI_MANIFEST,
            layers,
        )
        self._commit(staging_dir, [image])
        return image.id

    # --- pulled images (rootless.registry.pull) -------------------------------------------------

    def new_staging_dir(self, kind: str) -> Path:
        """A private directory under tmp/ for blobs on their way in; discard it afterwards."""
        return self._staging_dir(kind)

    def discard_staging_dir(self, staging_dir: Path) -> None:
        discard_staging_dir(staging_dir)

    def _commit(
        self,
        staging_dir: Path,
        images: list[archive.ArchiveImage],
        ready: dict[str, int] | None = None,
    ) -> list[str]:
        from rootless.userns import run_in_userns

        return run_in_userns(
            functools.partial(_unpack_and_commit, self.root, staging_dir, images, ready)
        )

    # --- names ---------------------------------------------------------------------------------

    def tag(self, image: Image, names: Iterable[str]) -> None:
        from rootless.images import reference

        full = [reference.normalize_local_name(n) for n in names]
        with _write_transaction(self.db):
            if self.db.execute("SELECT 1 FROM images WHERE id = ?", (image.id,)).fetchone() is None:
                raise RlError(f"{image.id}: image not known")
            _add_names(self.db, image.id, full)

    def untag(self, image: Image, names: Iterable[str]) -> list[str]:
        """Remove `names` (all names when empty) from `image`; the names removed."""
        from rootless.images import reference

        wanted = list(names)
        with _write_transaction(self.db):
            current = [
                r[0]
                for r in self.db.execute(
                    "SELECT name FROM image_names WHERE image_id = ?", (image.id,)
                )
            ]
            if not wanted:
                removed = current
            else:
                removed = []
                for name in wanted:
                    matched = [n for n in current if n == name or reference.matches(name, n)]
                    if not matched:
                        try:
                            full = reference.normalize_local_name(name)
                        except RlError:
                            full = name
                        raise RlError(f"{full}: tag not known")
                    removed.append(matched[0])
            self.db.executemany("DELETE FROM image_names WHERE name = ?", [(n,) for n in removed])
        return removed

    # --- removing ------------------------------------------------------------------------------

    def remove(self, removals: Sequence[Removal]) -> list[str]:
        """Apply `removals` in one transaction; podman's `Untagged:`/`Deleted:` lines."""
        from rootless.userns import run_in_userns

        if not removals:
            return []
        if not any(r.delete for r in removals):
            lines = []
            with _write_transaction(self.db):
                for removal in removals:
                    for name in removal.untag:
                        self.db.execute("DELETE FROM image_names WHERE name = ?", (name,))
                        lines.append(f"Untagged: {name}")
            return lines
        return run_in_userns(functools.partial(_remove_images, self.root, list(removals)))

    def reset(self) -> None:
        """Delete everything under the store root (`rl system reset`)."""
        from rootless.userns import run_in_userns

        self.close()
        run_in_userns(functools.partial(_remove_tree, self.root))

    def in_use(self) -> set[str]:
        """IDs of images that containers were created from."""
        return {image.id for image in self.images() if containers_using(self.db, image.id)}

    def disk_usage(self) -> tuple[int, int]:
        """(number of images, bytes of unpacked layers)."""
        count = self.db.execute("SELECT count(*) FROM images").fetchone()[0]
        size = self.db.execute("SELECT coalesce(sum(size), 0) FROM layers").fetchone()[0]
        return int(count), int(size)


class _RemovedMeanwhile(RlError):
    """The image was removed by another rl while this one was reading it."""


def _unreadable_config(image_id: str, exc: Exception) -> RlError:
    return RlError(
        f"image {image_id[:12]}: its config blob is unreadable ({exc}): "
        "remove the image with `rl rmi -f` and load it again"
    )


def plan_removal(image: Image, matched_name: str | None, *, force: bool) -> Removal:
    """podman's rules: a name untags (deleting the image with its last name); an ID or -f
    deletes the image with all its names, but an ID of an image with several names needs -f."""
    if matched_name is not None and not force and len(image.names) > 1:
        return Removal(image.id, (matched_name,), delete=False)
    if matched_name is None and not force and len(image.names) > 1:
        raise RlError(
            f'unable to delete image "{image.id}" by ID with more than one tag '
            f"([{' '.join(image.names)}]): please force removal"
        )
    return Removal(image.id, tuple(image.names), delete=True)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def _check_layer_types(images: Sequence[archive.ArchiveImage]) -> None:
    for image in images:
        for layer in image.layers:
            if "zstd" in layer.media_type or "encrypted" in layer.media_type:
                with contextlib.suppress(ImportError):
                    if "zstd" in layer.media_type:
                        import zstandard  # noqa: F401

                        continue
                raise RlError(
                    f"layer {layer.blob.digest} has media type {layer.media_type}, "
                    "which rl cannot unpack"
                )


def _stage_tarball(source: IO[bytes], staging: archive.Staging) -> tuple[archive.Blob, str]:
    """Stage a root filesystem tarball (plain or gzip) and compute its diff-id on the way."""
    import hashlib
    import io
    import zlib

    from rootless.images import archive

    head = source.read(archive.CHUNK)
    inflater = zlib.decompressobj(wbits=47) if head.startswith(b"\x1f\x8b") else None
    diff = hashlib.sha256()

    class Hashing(io.RawIOBase):
        def __init__(self) -> None:
            self.pending = head

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            chunk, self.pending = self.pending, b""
            if not chunk:
                chunk = source.read(archive.CHUNK)
            if inflater is None:
                diff.update(chunk)
            elif chunk:
                data = inflater.decompress(chunk)
                while inflater.unconsumed_tail:
                    data += inflater.decompress(inflater.unconsumed_tail)
                diff.update(data)
            return chunk

    blob = staging.add_stream("tarball", Hashing())  # type: ignore[arg-type]
    if blob.size == 0:
        raise RlError("importing tarball: the input is empty")
    return blob, "sha256:" + diff.hexdigest()


def _add_names(db: sqlite3.Connection, image_id: str, names: Iterable[str]) -> None:
    """Point `names` at `image_id` (moving them from other images, as podman does)."""
    now = time.time()
    history = json.loads(
        db.execute("SELECT names_history FROM images WHERE id = ?", (image_id,)).fetchone()[0]
    )
    for name in names:
        db.execute(
            "INSERT INTO image_names(name, image_id, added) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id, added = excluded.added",
            (name, image_id, now),
        )
        history = [name] + [h for h in history if h != name]
    db.execute("UPDATE images SET names_history = ? WHERE id = ?", (json.dumps(history), image_id))


# --- run as root of the user namespace -----------------------------------------------------------


def _remove_tree(path: Path) -> None:
    from rootless.images.unpack import remove_tree

    remove_tree(path)


def _unpack_one(blob: Path, dest: Path, diff_id: str, layer_ref: str) -> int:
    from rootless.images.unpack import unpack_file

    return _layer_size(unpack_file(blob, dest, diff_id=diff_id, layer_ref=layer_ref))


def discard_staging_dir(staging_dir: Path) -> None:
    """Remove a staging directory; unpacked layers in it need the user namespace."""
    if not staging_dir.exists():
        return
    if not any(p.name.startswith("layer-") for p in staging_dir.iterdir()):
        import shutil

        shutil.rmtree(staging_dir, ignore_errors=True)
        return
    from rootless.userns import run_in_userns

    run_in_userns(functools.partial(_remove_tree, staging_dir))


# --- the jobs of `rl pull` (rootless.registry.pull runs them in its namespace workers) -------
#
# Their arguments and results are built-in types (and Unpacked, from a module of its own):
# pickle imports the module of every class it meets, and `rl pull` itself never imports this
# one, nor sqlite3 or the archive code (issue 5: its process is the critical path; the
# workers' helper imports them on the other core while `rl pull` imports its network stack).


def prepare_pull(root: Path, owner: int) -> tuple[Path, list[str], list[str]]:
    """Open (or create) the store at `root` and a staging directory in it for a pull by the
    process `owner`; returns the directory, the image IDs and the diff-ids of the unpacked
    layers the store has."""
    store = ImageStore.open(root)
    try:
        staging_dir = store._staging_dir("pull", owner)
        image_ids = [r[0] for r in store.db.execute("SELECT id FROM images")]
        diff_ids = [r[0] for r in store.db.execute("SELECT diff_id FROM layers")]
    finally:
        store.close()
    return staging_dir, image_ids, diff_ids


def commit_pulled(
    root: Path,
    staging_dir: Path,
    name: str,
    manifest: bytes,
    manifest_type: str,
    config: bytes,
    layers: Sequence[tuple[str, str, str, Path | None]],
    unpacked: Mapping[str, Unpacked],
) -> str:
    """Add a pulled image; returns its ID. `layers`, bottom first, are (blob digest, diff-id,
    media type, the verified blob staged in `staging_dir`, or None when the store already has
    the blob). `unpacked`: the layers (by diff-id) already unpacked into
    `layer_dir(staging_dir, diff_id)`, verified. Runs as root of the user namespace (a
    worker's job). The staging directory is consumed."""
    image = _pulled_image(root, staging_dir, name, manifest, manifest_type, config, layers)
    ready = {diff_id: _layer_size(found) for diff_id, found in unpacked.items()}
    _unpack_and_commit(root, staging_dir, [image], ready)
    return image.id


def commit_pulled_when_told(root: Path, staging_dir: Path, fd: int) -> str | None:
    """`commit_pulled`, started before the pull has what to commit: the worker is forked and
    waiting when it has. Reads the rest of the arguments, pickled, from `fd` (a pipe; closed
    here); none means the pull failed: nothing is committed, None returned."""
    import pickle

    with open(fd, "rb") as told:
        data = told.read()
    if not data:
        return None
    return commit_pulled(root, staging_dir, *pickle.loads(data))


def _pulled_image(
    root: Path,
    staging_dir: Path,
    name: str,
    manifest: bytes,
    manifest_type: str,
    config: bytes,
    layers: Sequence[tuple[str, str, str, Path | None]],
) -> archive.ArchiveImage:
    """The pulled image, with its config and manifest staged."""
    from rootless.images import archive

    staging = archive.Staging(staging_dir)
    config_blob = staging.add_bytes(config)
    manifest_blob = staging.add_bytes(manifest)
    image_layers = []
    for digest, diff_id, media_type, staged in layers:
        path = staged or root / "blobs" / "sha256" / _hex(digest)
        size = path.stat().st_size if path.exists() else 0
        blob = archive.Blob(path, digest, size)
        image_layers.append(archive.ArchiveLayer(blob, diff_id, media_type))
    image = archive.ArchiveImage(
        [name], config_blob, json.loads(config), manifest_blob, manifest_type, image_layers
    )
    _check_layer_types([image])
    return image


def _layer_size(unpacked: Unpacked) -> int:
    """The size podman reports for a layer: its uncompressed tar (for zstd: the content)."""
    if unpacked.compression == "zstd":
        return unpacked.content_bytes
    return unpacked.tar_bytes


def _run_parallel(calls: Sequence[Callable[[], int]]) -> list[int]:
    """Run `calls` in up to one forked process per CPU; the first error is raised (after the
    running ones end; no more are started)."""
    workers = min(len(calls), os.cpu_count() or 1)
    if workers <= 1:
        return [call() for call in calls]
    import select

    from rootless.images.workers import outcome

    results: list[int] = [0] * len(calls)
    pending = list(enumerate(calls))
    running: dict[int, tuple[int, int, list[bytes]]] = {}  # read fd -> (pid, index, data)
    error: BaseException | None = None
    try:
        while pending or running:
            while pending and error is None and len(running) < workers:
                index, call = pending.pop(0)
                read_fd, write_fd = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(read_fd)
                    _run_forked(write_fd, call)
                os.close(write_fd)
                running[read_fd] = (pid, index, [])
            if error is not None:
                pending.clear()
            if not running:
                break
            readable, _, _ = select.select(list(running), [], [])
            for fd in readable:
                pid, index, data = running[fd]
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    data.append(chunk)
                    continue
                del running[fd]
                os.close(fd)
                os.waitpid(pid, 0)
                try:
                    results[index] = outcome(b"".join(data))
                except BaseException as exc:
                    error = error or exc
    finally:
        for fd, (pid, _, _) in running.items():  # interrupted: do not leave workers behind
            os.close(fd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    if error is not None:
        raise error
    return results


def _run_forked(write_fd: int, call: Callable[[], int]) -> None:
    """In a forked child: run `call`, send its outcome through `write_fd`, exit."""
    from rootless import outcome

    code = 0
    try:
        outcome.write_all(write_fd, outcome.capture(call))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _unpack_and_commit(
    root: Path,
    staging_dir: Path,
    images: list[archive.ArchiveImage],
    ready: dict[str, int] | None = None,
) -> list[str]:
    """Unpack the layers the store lacks, then record everything in one transaction.
    `ready`: layers (diff-id -> size) already unpacked into their staging directories."""
    _sweep_stale(root / "tmp")
    unpacked: dict[str, Path] = {d: layer_dir(staging_dir, d) for d in ready or {}}
    sizes: dict[str, int] = dict(ready or {})
    for _attempt in range(5):
        _unpack_missing(root, staging_dir, images, unpacked, sizes)
        moved: list[tuple[Path, Path]] = []  # (from, to), undone when the transaction fails
        trash: list[Path] = []
        db = _connect(root)
        try:
            with _write_transaction(db):
                _record(db, root, images, unpacked, sizes, moved, trash)
        except BaseException as exc:
            for source, target in reversed(moved):
                with contextlib.suppress(OSError):
                    os.rename(target, source)
            if isinstance(exc, _LayerRemoved):
                continue  # an `rmi` took a layer we meant to share: unpack it ourselves
            raise
        finally:
            db.close()
        for path in [*trash, staging_dir]:  # staging holds copies another rl beat us to
            _remove_tree(path)
        break
    else:
        raise RlError("loading images: layers kept disappearing under concurrent removals; retry")
    return [
        f"Loaded image: {name}"
        for image in images
        for name in (image.names or [f"sha256:{image.id}"])
    ]


class _LayerRemoved(Exception):
    """A layer that existed when we looked was removed before our transaction."""


def _unpack_missing(
    root: Path,
    staging_dir: Path,
    images: list[archive.ArchiveImage],
    unpacked: dict[str, Path],
    sizes: dict[str, int],
) -> None:
    """Unpack (in parallel) the layers neither the store nor `unpacked` has yet."""
    wanted = {layer.diff_id for image in images for layer in image.layers}
    if wanted <= unpacked.keys():
        return  # (a pull unpacked them all on the way in: no need to open the database)
    with contextlib.closing(_connect(root)) as db:
        have = {r[0] for r in db.execute("SELECT diff_id FROM layers")}
    jobs: dict[str, tuple[archive.ArchiveLayer, str]] = {}
    for image in images:
        label = image.names[0] if image.names else image.id[:12]
        for number, layer in enumerate(image.layers, 1):
            if layer.diff_id not in have | unpacked.keys() | jobs.keys():
                jobs[layer.diff_id] = (layer, f"{number} ({layer.blob.digest}) of {label}")
    paths = {diff_id: layer_dir(staging_dir, diff_id) for diff_id in jobs}
    layer_sizes = _run_parallel(
        [
            functools.partial(_unpack_one, layer.blob.path, paths[d], d, ref)
            for d, (layer, ref) in jobs.items()
        ]
    )
    for diff_id, size in zip(jobs, layer_sizes, strict=True):
        unpacked[diff_id] = paths[diff_id]
        sizes[diff_id] = size


def _record(
    db: sqlite3.Connection,
    root: Path,
    images: list[archive.ArchiveImage],
    unpacked: dict[str, Path],
    sizes: dict[str, int],
    moved: list[tuple[Path, Path]],
    trash: list[Path],
) -> None:
    def move(source: Path, target: Path) -> None:
        try:
            os.rename(source, target)
        except OSError as exc:
            raise _storage_error(exc, "storing image data") from exc
        moved.append((source, target))

    for diff_id, path in unpacked.items():
        if db.execute("SELECT 1 FROM layers WHERE diff_id = ?", (diff_id,)).fetchone():
            continue  # another rl added it while we unpacked: ours is discarded with staging
        target = root / "layers" / _hex(diff_id)
        if target.exists() or target.is_symlink():  # left by a crash before its commit
            orphan = root / "tmp" / f"trash-{os.getpid()}-{os.urandom(6).hex()}"
            move(target, orphan)
            trash.append(orphan)
        move(path, target)
        db.execute("INSERT INTO layers(diff_id, size) VALUES (?, ?)", (diff_id, sizes[diff_id]))
    layer_sizes = dict(db.execute("SELECT diff_id, size FROM layers").fetchall())
    for image in images:
        if db.execute("SELECT 1 FROM images WHERE id = ?", (image.id,)).fetchone() is None:
            if any(layer.diff_id not in layer_sizes for layer in image.layers):
                raise _LayerRemoved
            for blob in [image.config, image.manifest, *(layer.blob for layer in image.layers)]:
                target = root / "blobs" / "sha256" / _hex(blob.digest)
                if not target.exists() and blob.path.exists():
                    move(blob.path, target)
            size = sum(layer_sizes[layer.diff_id] for layer in image.layers) + image.config.size
            db.execute(
                "INSERT INTO images(id, digest, manifest_type, created, loaded, size) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    image.id,
                    image.manifest.digest,
                    image.manifest_type,
                    parse_created(image.config_json.get("created")),
                    time.time(),
                    size,
                ),
            )
            db.executemany(
                "INSERT INTO image_layers(image_id, position, diff_id, blob, media_type) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (image.id, position, layer.diff_id, layer.blob.digest, layer.media_type)
                    for position, layer in enumerate(image.layers)
                ],
            )
        _add_names(db, image.id, image.names)


def _remove_images(root: Path, removals: list[Removal]) -> list[str]:
    db = _connect(root)
    lines: list[str] = []
    moved: list[tuple[Path, Path]] = []
    trash: list[Path] = []
    try:
        with _write_transaction(db):
            deleted_blobs: set[str] = set()
            for removal in removals:
                for name in removal.untag:
                    db.execute(
                        "DELETE FROM image_names WHERE name = ? AND image_id = ?",
                        (name, removal.image_id),
                    )
                    lines.append(f"Untagged: {name}")
                if not removal.delete:
                    continue
                row = db.execute(
                    "SELECT digest FROM images WHERE id = ?", (removal.image_id,)
                ).fetchone()
                if row is None:
                    continue  # removed by another rl meanwhile
                _refuse_if_in_use(db, removal.image_id)
                deleted_blobs |= {"sha256:" + removal.image_id, row[0]}
                deleted_blobs |= {
                    r[0]
                    for r in db.execute(
                        "SELECT blob FROM image_layers WHERE image_id = ?", (removal.image_id,)
                    )
                }
                db.execute("DELETE FROM image_names WHERE image_id = ?", (removal.image_id,))
                db.execute("DELETE FROM image_layers WHERE image_id = ?", (removal.image_id,))
                db.execute("DELETE FROM images WHERE id = ?", (removal.image_id,))
                lines.append(f"Deleted: {removal.image_id}")
            unused = [
                r[0]
                for r in db.execute(
                    "SELECT diff_id FROM layers "
                    "WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)"
                )
            ]
            for diff_id in unused:
                db.execute("DELETE FROM layers WHERE diff_id = ?", (diff_id,))
                source = root / "layers" / _hex(diff_id)
                if source.exists():
                    target = root / "tmp" / f"trash-{os.getpid()}-{os.urandom(6).hex()}"
                    os.rename(source, target)
                    moved.append((source, target))
                    trash.append(target)
            still_used = {"sha256:" + r[0] for r in db.execute("SELECT id FROM images")}
            still_used |= {r[0] for r in db.execute("SELECT digest FROM images")}
            still_used |= {r[0] for r in db.execute("SELECT DISTINCT blob FROM image_layers")}
            for digest in deleted_blobs - still_used:
                source = root / "blobs" / "sha256" / _hex(digest)
                if source.exists():
                    target = root / "tmp" / f"trash-{os.getpid()}-{os.urandom(6).hex()}"
                    os.rename(source, target)
                    moved.append((source, target))
                    trash.append(target)
    except BaseException:
        for source, target in reversed(moved):
            with contextlib.suppress(OSError):
                os.rename(target, source)
        raise
    finally:
        db.close()
    for path in trash:
        _remove_tree(path)
    return lines


def containers_using(db: sqlite3.Connection, image_id: str) -> list[str]:
    """IDs of the containers created from `image_id` (the runtime's table in the same db)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'containers'").fetchone() is None:
        return []
    rows = db.execute("SELECT id FROM containers WHERE image_id = ?", (image_id,))
    return [r[0] for r in rows]


def _refuse_if_in_use(db: sqlite3.Connection, image_id: str) -> None:
    users = containers_using(db, image_id)
    if users:
        raise RlError(
            f"image used by {users[0]}: image is in use by a container: "
            f"remove the container first (rl rm -f {users[0][:12]})"
        )


def _sweep_stale(tmp: Path) -> None:
    """Remove staging left by rl processes that died (their pid is gone, or it is old)."""
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return
    for entry in entries:
        parts = entry.name.split("-")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid in (os.getpid(), os.getppid()) or Path(f"/proc/{pid}").exists():
            continue  # its owner is still at work
        with contextlib.suppress(OSError, RlError):
            _remove_tree(entry)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
