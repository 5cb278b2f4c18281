"""docker-archive and oci-archive files: reading them into staged blobs, writing them back.

Reading is one streaming pass: every regular file of the (plain or gzip) tar is copied into a
staging directory under its sha256, hashed while it is copied, so a 50 MB archive is read once.
The layout (`manifest.json` of `docker save`/`podman save`, or `index.json` of an OCI layout)
is interpreted afterwards from the staged files. Layers keep the exact bytes they arrived with,
and images read from a docker-archive get an OCI manifest describing those bytes, so saving an
image reproduces its layer blobs, config and (for OCI) manifest digests.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rootless.errors import RlError
from rootless.images import reference

if TYPE_CHECKING:
    import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Blob:
    """A staged file: where it is, its digest ("sha256:<hex>") and size."""

    path: Path
    digest: str
    size: int


@dataclass(frozen=True)
class ArchiveLayer:
    blob: Blob
    diff_id: str
    media_type: str


@dataclass
class ArchiveImage:
    """One image found in an archive, its blobs staged and verified."""

    names: list[str]
    config: Blob
    config_json: dict[str, Any]
    manifest: Blob
    manifest_type: str
    layers: list[ArchiveLayer] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.config.digest.removeprefix("sha256:")


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _fail(what: str) -> RlError:
    return RlError(f"loading archive: {what}")


def layer_media_type(head: bytes) -> str:
    """The OCI media type of a layer blob, from its first bytes."""
    if head.startswith(_GZIP_MAGIC):
        return OCI_LAYER_GZIP
    if head.startswith(_ZSTD_MAGIC):
        return OCI_LAYER_ZSTD
    return OCI_LAYER


class Staging:
    """Files staged by digest in one directory (same filesystem as the store)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.by_name: dict[str, Blob] = {}
        self.by_digest: dict[str, Blob] = {}
        self._links: dict[str, str] = {}
        self._serial = 0

    def add_stream(self, name: str, source: IO[bytes]) -> Blob:
        import hashlib

        self._serial += 1
        partial = self.directory / f"partial-{self._serial}"
        digest = hashlib.sha256()
        size = 0
        with open(partial, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        blob = Blob(self.directory / digest.hexdigest(), "sha256:" + digest.hexdigest(), size)
        os.replace(partial, blob.path)
        self.by_name[name] = blob
        self.by_digest[blob.digest] = blob
        return blob

    def add_bytes(self, data: bytes) -> Blob:
        """A blob made here (a synthesized manifest)."""
        return self.add_stream(f"<generated {self._serial}>", io.BytesIO(data))

    def link(self, name: str, target: str) -> None:
        self._links[name] = target

    def lookup(self, name: str) -> Blob | None:
        name = _clean(name)
        for _ in range(16):  # follow symlinks (podman writes `<id>/layer.tar -> ../<diff>.tar`)
            if name in self.by_name:
                return self.by_name[name]
            if name not in self._links:
                return None
            name = self._links[name]
        return None

    def read_json(self, name: str, what: str) -> Any:
        blob = self.lookup(name)
        if blob is None:
            raise _fail(f"{what} {name!r} is missing from the archive")
        return _parse_json(blob, what)


def _parse_json(blob: Blob, what: str) -> Any:
    try:
        return json.loads(blob.path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"{what} is not valid JSON: {exc}") from exc


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def stage_archive(source: IO[bytes], staging: Staging) -> None:
    """Copy every regular file of the archive stream into `staging` (the one pass over it)."""
    import tarfile

    try:
        with tarfile.open(fileobj=source, mode="r|*", bufsize=CHUNK) as tar:
            for member in tar:
                name = _clean(member.name)
                if member.isreg():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    staging.add_stream(name, extracted)
                elif member.issym():
                    staging.link(
                        name, _clean(posixpath.join(posixpath.dirname(name), member.linkname))
                    )
                elif member.islnk():
                    staging.link(name, _clean(member.linkname))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise RlError(
                f"loading archive: {exc.strerror}: {exc.filename or 'staging area'}"
            ) from exc
        raise _fail(f"not a readable tar archive (docker-archive or oci-archive): {exc}") from exc
    if not staging.by_name:
        raise _fail("the archive is empty or not a tar file")


def read_archive(staging: Staging) -> list[ArchiveImage]:
    """The images of a staged archive: docker-archive when it has manifest.json, else OCI."""
    if staging.lookup("manifest.json") is not None:
        return _docker_images(staging)
    if staging.lookup("index.json") is not None:
        return _oci_images(staging)
    raise _fail("neither manifest.json (docker-archive) nor index.json (oci-archive) found")


def _docker_images(staging: Staging) -> list[ArchiveImage]:
    _verify_blob_names(staging)
    entries = staging.read_json("manifest.json", "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise _fail("manifest.json lists no images")
    images = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise _fail(f"manifest.json entry {number} has no Config")
        config = staging.lookup(entry["Config"])
        if config is None:
            raise _fail(f"config {entry['Config']!r} of image {number} is missing from the archive")
        config_json = _parse_json(config, f"config {entry['Config']!r}")
        diff_ids = _diff_ids(config_json, entry["Config"])
        paths = entry.get("Layers") or []
        if len(paths) != len(diff_ids):
            raise _fail(
                f"image {number} lists {len(paths)} layers but its config has "
                f"{len(diff_ids)} diff_ids"
            )
        layers = []
        for path, diff_id in zip(paths, diff_ids, strict=True):
            blob = staging.lookup(path)
            if blob is None:
                raise _fail(f"layer {path!r} of image {number} is missing from the archive")
            layers.append(ArchiveLayer(blob, diff_id, _media_type_of(blob)))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [
                {
                    "mediaType": layer.media_type,
                    "digest": layer.blob.digest,
                    "size": layer.blob.size,
                }
                for layer in layers
            ],
        }
        manifest_blob = staging.add_bytes(json.dumps(manifest, separators=(",", ":")).encode())
        names = _names(entry.get("RepoTags") or [])
        images.append(ArchiveImage(names, config, config_json, manifest_blob, OCI_MANIFEST, layers))
    return images


def _oci_images(staging: Staging) -> list[ArchiveImage]:
    _verify_blob_names(staging)
    index = staging.read_json("index.json", "index.json")
    descriptors = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descriptors, list) or not descriptors:
        raise _fail("index.json lists no manifests")
    by_digest: dict[str, ArchiveImage] = {}
    for descriptor in _manifest_descriptors(staging, descriptors):
        digest = descriptor["digest"]
        annotations = descriptor.get("annotations") or {}
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
        names = _names([name] if name else [])
        if digest in by_digest:
            image = by_digest[digest]
            image.names += [n for n in names if n not in image.names]
            continue
        by_digest[digest] = _oci_image(staging, descriptor, names)
    return list(by_digest.values())


def _manifest_descriptors(staging: Staging, descriptors: list[Any]) -> Iterable[dict[str, Any]]:
    """Image manifests of an index, descending into nested indexes (host platform only)."""
    arch = _host_architecture()
    for descriptor in descriptors:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
            raise _fail("index.json has a malformed manifest descriptor")
        if descriptor.get("mediaType") in (OCI_INDEX, DOCKER_LIST):
            nested = _blob_json(staging, descriptor["digest"], "nested index")
            chosen = [
                d
                for d in nested.get("manifests") or []
                if (d.get("platform") or {}).get("architecture", arch) == arch
            ]
            for inner in _manifest_descriptors(staging, chosen[:1]):
                yield {**inner, "annotations": descriptor.get("annotations") or {}}
        else:
            yield descriptor


def _host_architecture() -> str:
    import platform

    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def _verify_blob_names(staging: Staging) -> None:
    """A file under blobs/sha256/ must hash to its name: a wrong layer is refused here."""
    for name, blob in staging.by_name.items():
        if name.startswith("blobs/sha256/") and _hex(blob.digest) != posixpath.basename(name):
            raise _fail(f"blob {name} does not match its digest (content is {blob.digest})")


def _blob_json(staging: Staging, digest: str, what: str) -> Any:
    blob = staging.by_digest.get(digest)
    if blob is None or staging.lookup(f"blobs/sha256/{_hex(digest)}") is None:
        raise _fail(f"{what} blob {digest} is missing from the archive")
    return _parse_json(blob, f"{what} {digest}")


def _oci_image(staging: Staging, descriptor: dict[str, Any], names: list[str]) -> ArchiveImage:
    digest = descriptor["digest"]
    manifest_json = _blob_json(staging, digest, "manifest")
    if not isinstance(manifest_json, dict) or not isinstance(manifest_json.get("config"), dict):
        raise _fail(f"manifest {digest} has no config")
    config_digest = manifest_json["config"].get("digest", "")
    config_json = _blob_json(staging, config_digest, "config")
    diff_ids = _diff_ids(config_json, config_digest)
    descriptors = manifest_json.get("layers") or []
    if len(descriptors) != len(diff_ids):
        raise _fail(
            f"manifest {digest} lists {len(descriptors)} layers but its config has "
            f"{len(diff_ids)} diff_ids"
        )
    layers = []
    for layer, diff_id in zip(descriptors, diff_ids, strict=True):
        layer_digest = layer.get("digest", "") if isinstance(layer, dict) else ""
        blob = staging.by_digest.get(layer_digest)
        if blob is None:
            raise _fail(
                f"layer blob {layer_digest} of manifest {digest} is missing from the archive"
            )
        layers.append(ArchiveLayer(blob, diff_id, layer.get("mediaType") or _media_type_of(blob)))
    manifest_type = manifest_json.get("mediaType") or descriptor.get("mediaType") or OCI_MANIFEST
    return ArchiveImage(
        names,
        staging.by_digest[config_digest],
        config_json,
        staging.by_digest[digest],
        manifest_type,
        layers,
    )


def _diff_ids(config: Any, where: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and d.startswith("sha256:") and len(d) == 71 for d in diff_ids
    ):
        raise _fail(f"config {where} has no valid rootfs.diff_ids")
    return diff_ids


def _names(raw: Iterable[Any]) -> list[str]:
    names = []
    for name in raw:
        if not isinstance(name, str):
            continue
        try:
            normalized = reference.normalize_archive_name(name)
        except RlError:
            continue  # e.g. a bare tag in ref.name that is not a valid name: load untagged
        if normalized not in names:
            names.append(normalized)
    return names


def _media_type_of(blob: Blob) -> str:
    with open(blob.path, "rb") as f:
        return layer_media_type(f.read(4))


# --- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedImage:
    """What `rl save` writes for one image: blobs are read through `blob_path`."""

    names: list[str]
    config_digest: str
    manifest_digest: str
    manifest_type: str
    layers: list[tuple[str, str, str]]  # (diff_id, blob digest, media type), bottom first


def _tar_info(name: str, size: int, mode: int = 0o444) -> tarfile.TarInfo:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, mode, 0, tarfile.REGTYPE
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    with open(path, "rb") as f:
        tar.addfile(_tar_info(name, os.fstat(f.fileno()).st_size), f)


def write_docker_archive(
    out: IO[bytes], images: Sequence[SavedImage], blob_path: Callable[[str], Path]
) -> None:
    """podman's docker-archive layout: `<id>.json`, `<layer hex>.tar`, manifest.json."""
    import tarfile

    entries = []
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        for image in images:
            layer_names = []
            for _, digest, _ in image.layers:
                # Named by the blob digest: for plain tars that is the diff-id (podman's
                # naming); a compressed blob keeps its bytes, and so its digest, when reloaded.
                name = f"{_hex(digest)}.tar"
                if name not in written:
                    _add_file(tar, name, blob_path(digest))
                    written.add(name)
                layer_names.append(name)
            config_name = f"{_hex(image.config_digest)}.json"
            if config_name not in written:
                _add_file(tar, config_name, blob_path(image.config_digest))
                written.add(config_name)
            entries.append({"Config": config_name, "RepoTags": image.names, "Layers": layer_names})
        _add_bytes(tar, "manifest.json", json.dumps(entries, separators=(",", ":")).encode())


def write_oci_archive(
    out: IO[bytes], images: Sequence[SavedImage], blob_path: Callable[[str], Path]
) -> None:
    """An OCI image layout in a tar: oci-layout, index.json, blobs/sha256/<hex>."""
    import tarfile

    manifests: list[dict[str, Any]] = []
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')

        def add_blob(digest: str, data: bytes | None = None) -> None:
            if digest in written:
                return
            written.add(digest)
            name = f"blobs/sha256/{_hex(digest)}"
            if data is None:
                _add_file(tar, name, blob_path(digest))
            else:
                _add_bytes(tar, name, data)

        for image in images:
            for _, digest, _ in image.layers:
                add_blob(digest)
            add_blob(image.config_digest)
            manifest_bytes, manifest_digest = _oci_manifest(image, blob_path)
            add_blob(manifest_digest, manifest_bytes)
            descriptor = {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
            }
            if not image.names:
                manifests.append(descriptor)
            for name in image.names:
                manifests.append({**descriptor, "annotations": {REF_NAME: name}})
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        _add_bytes(tar, "index.json", json.dumps(index, separators=(",", ":")).encode())


def _oci_manifest(image: SavedImage, blob_path: Callable[[str], Path]) -> tuple[bytes, str]:
    """The stored manifest when it is already OCI (its digest survives), else a new one."""
    import hashlib

    if image.manifest_type == OCI_MANIFEST:
        return blob_path(image.manifest_digest).read_bytes(), image.manifest_digest
    docker_to_oci = {
        "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": image.config_digest,
            "size": blob_path(image.config_digest).stat().st_size,
        },
        "layers": [
            {
                "mediaType": docker_to_oci.get(media_type, media_type),
                "digest": digest,
                "size": blob_path(digest).stat().st_size,
            }
            for _, digest, media_type in image.layers
        ],
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()
