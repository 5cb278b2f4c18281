"""`rl push`: image store -> registry.

Layers go up first (at most `CONCURRENT_LAYERS` at a time): a blob the registry already has is
skipped, one it has in another repository of ours is mounted across repositories, the rest
are uploaded (one PUT, or PATCH chunks when RL_PUSH_CHUNK_SIZE is set, for registries that
limit request sizes). Then the config, then the manifest under the tag. The stored manifest
is pushed byte for byte when its format is kept, so the digest survives the round trip;
`--format` converts between OCI and Docker schema 2 (compressing plain-tar layers with gzip,
which Docker's format requires).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rootless.errors import RlError
from rootless.log import logger
from rootless.registry import manifests as mt
from rootless.registry.auth import Credentials, Scope, repository_scope
from rootless.registry.pull import Progress, first_error
from rootless.registry.reference import Reference, parse

if TYPE_CHECKING:
    from rootless.images.store import ImageStore

CONCURRENT_LAYERS = 3
log = logger()
ManifestFormat = Literal["oci", "v2s2"]

_TO_DOCKER = {
    mt.OCI_LAYER_GZIP: mt.DOCKER_LAYER_GZIP,
    mt.OCI_NONDISTRIBUTABLE_LAYER_GZIP: mt.DOCKER_FOREIGN_LAYER_GZIP,
    mt.DOCKER_LAYER_GZIP: mt.DOCKER_LAYER_GZIP,
    mt.DOCKER_FOREIGN_LAYER_GZIP: mt.DOCKER_FOREIGN_LAYER_GZIP,
}
_TO_OCI = {
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
    mt.DOCKER_FOREIGN_LAYER_GZIP: mt.OCI_NONDISTRIBUTABLE_LAYER_GZIP,
}


# containers-transports(5): podman's destinations; rl pushes to registries only.
_TRANSPORTS = frozenset(
    {"docker", "oci", "oci-archive", "docker-archive", "dir", "containers-storage", "docker-daemon"}
)


@dataclass(frozen=True)
class PushOptions:
    format: ManifestFormat | None = None  # None: keep the stored manifest's format
    verify_tls: bool | None = None
    authfile: str | None = None
    credentials: Credentials | None = None
    quiet: bool = False
    cert_dir: Path | None = None


@dataclass(frozen=True)
class PushBlob:
    digest: str
    size: int
    media_type: str
    path: Path


def destination(
    dest_arg: str | None, matched_name: str | None, stored_names: list[str]
) -> Reference:
    """Where to push: DEST (`docker://` allowed), else the stored name IMAGE matched (the
    image's first name when IMAGE was an ID); the tag defaults to `latest`."""
    if dest_arg is None:
        text = matched_name or (stored_names[0] if stored_names else "")
        if not text:
            raise RlError("the image has no name; give a destination: rl push IMAGE DEST")
    else:
        text = dest_arg
        transport, sep, rest = text.partition(":")
        if sep and transport in _TRANSPORTS:
            if transport != "docker":
                raise RlError(f"{text}: only docker:// destinations are supported by rl push")
            text = rest.removeprefix("//")
    ref = parse(text)
    if ref.is_short_name:
        ref = ref.qualified()
    if ref.digest is not None:
        raise RlError(f"{text}: push to a tag, not a digest")
    return ref.with_default_tag()


def convert_manifest(
    stored: dict[str, Any], stored_type: str, target: ManifestFormat | None
) -> tuple[str, dict[str, Any] | None]:
    """The media type to push and a new manifest document, or None to push the stored bytes.

    Layers that must be gzip-compressed for Docker's format keep their plain media type here;
    the caller compresses them and fixes their descriptors.
    """
    if target is None:
        return stored_type, None
    wanted = mt.OCI_MANIFEST if target == "oci" else mt.DOCKER_MANIFEST
    if wanted == stored_type:
        return stored_type, None
    doc = json.loads(json.dumps(stored))
    doc["mediaType"] = wanted
    doc["schemaVersion"] = 2
    docker = target == "v2s2"
    doc["config"]["mediaType"] = mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG
    table = _TO_DOCKER if docker else _TO_OCI
    for layer in doc["layers"]:
        layer["mediaType"] = table.get(layer["mediaType"], layer["mediaType"])
        if docker and "zstd" in layer["mediaType"]:
            raise RlError(
                f"layer {layer['digest']} is zstd-compressed, which Docker's v2s2 format "
                "cannot describe: push with --format oci"
            )
    if docker:
        doc.pop("annotations", None)
        doc.pop("artifactType", None)
    return wanted, doc


def push(image_arg: str, dest_arg: str | None, options: PushOptions) -> str:
    """Push and return the digest of the manifest as pushed."""
    import rootless.registry.quickimport  # noqa: F401  # isort: skip  (before trio)
    import trio

    from rootless.images.store import ImageStore
    from rootless.registry.shortnames import load_registries_config, registry_for

    store = ImageStore.open()
    try:
        found = store.find(image_arg)
        if found is None:
            raise RlError(f"{image_arg}: image not known")
        image, matched_name = found
        dest = destination(dest_arg, matched_name, image.names)
        access = registry_for(dest, load_registries_config())
        if access.blocked:
            access.pull_sources()  # raises the "blocked" error
        dest = access.reference
        insecure = access.insecure if options.verify_tls is None else not options.verify_tls
        try:
            stored_bytes = store.blob_path(image.digest).read_bytes()
        except OSError:
            raise RlError(
                f"{image_arg}: the image's manifest is missing from the store; pull or load "
                "it again"
            ) from None
        stored = json.loads(stored_bytes)
        media_type, new_doc = convert_manifest(stored, image.manifest_type, options.format)
        staging_dir = store.new_staging_dir("push")
        try:
            layers = _layers(store, stored, new_doc, staging_dir)
            body = stored_bytes if new_doc is None else json.dumps(new_doc, indent=3).encode()
            config = PushBlob(
                stored["config"]["digest"],
                int(stored["config"]["size"]),
                "",
                store.blob_path(stored["config"]["digest"]),
            )
            sources = sorted(
                {
                    parse(n).path
                    for n in image.names
                    if parse(n).domain == dest.domain and parse(n).path != dest.path
                }
            )
            trio.run(
                _push,
                dest,
                layers,
                config,
                body,
                media_type,
                sources,
                options,
                insecure,
                Progress(options.quiet),
            )
            return mt.digest_of(body)
        finally:
            store.discard_staging_dir(staging_dir)
    finally:
        store.close()


def _layers(
    store: ImageStore, stored: dict[str, Any], new_doc: dict[str, Any] | None, staging_dir: Path
) -> list[PushBlob]:
    """The layer blobs to send. Plain tars are gzip-compressed for Docker's format, and their
    descriptors in `new_doc` updated to match."""
    out: list[PushBlob] = []
    layer_docs = new_doc["layers"] if new_doc is not None else stored["layers"]
    docker = new_doc is not None and new_doc["mediaType"] == mt.DOCKER_MANIFEST
    for layer in layer_docs:
        path = store.blob_path(layer["digest"])
        if not path.is_file():
            raise RlError(
                f"layer blob {layer['digest']} is missing from the store: remove the image "
                "and pull or load it again"
            )
        if docker and layer["mediaType"] not in _TO_DOCKER.values():
            path, digest, size = _gzip(path, staging_dir)
            layer.update(mediaType=mt.DOCKER_LAYER_GZIP, digest=digest, size=size)
        out.append(PushBlob(layer["digest"], int(layer["size"]), layer["mediaType"], path))
    return out


def _gzip(path: Path, staging_dir: Path) -> tuple[Path, str, int]:
    import hashlib

    target = staging_dir / f"gzip-{path.name}"
    with (
        open(path, "rb") as source,
        open(target, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out,
    ):
        shutil.copyfileobj(source, out, 1 << 20)
    hasher = hashlib.sha256()
    with open(target, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return target, "sha256:" + hasher.hexdigest(), target.stat().st_size


async def _push(
    dest: Reference,
    layers: list[PushBlob],
    config: PushBlob,
    manifest: bytes,
    media_type: str,
    mount_sources: list[str],
    options: PushOptions,
    insecure: bool,
    progress: Progress,
) -> None:
    import trio

    from rootless.registry.authfile import lookup_credentials
    from rootless.registry.client import BlobTarget, RegistryClient

    credentials = options.credentials or lookup_credentials(dest.name, options.authfile)
    scopes: list[Scope] = [repository_scope(dest.path, "pull", "push")]
    chunk_size = int(os.environ.get("RL_PUSH_CHUNK_SIZE") or 0)
    async with RegistryClient(
        dest.domain, credentials=credentials, insecure=insecure, cert_dir=options.cert_dir
    ) as client:
        await client.ping()
        progress.line("Getting image source signatures")

        async def send(blob: PushBlob, kind: str) -> None:
            if await client.blob_exists(dest.path, blob.digest, scopes):
                log.debug("%s %s: the registry has it", kind, blob.digest)
                progress.copying(kind, blob.digest, skipped=True)
                return
            for source in mount_sources:
                mount_scopes = [*scopes, repository_scope(source, "pull")]
                if await client.mount_blob(dest.path, blob.digest, source, mount_scopes):
                    log.debug("%s %s: mounted from %s", kind, blob.digest, source)
                    progress.copying(kind, blob.digest, skipped=True)
                    return
            await client.upload_blob(
                dest.path,
                blob.path,
                BlobTarget(blob.digest, blob.size),
                scopes,
                chunk_size=chunk_size,
            )
            log.debug("%s %s: uploaded", kind, blob.digest)
            progress.copying(kind, blob.digest)

        limiter = trio.CapacityLimiter(CONCURRENT_LAYERS)

        async def send_layer(blob: PushBlob) -> None:
            async with limiter:
                await send(blob, "blob")

        async with first_error(), trio.open_nursery() as nursery:
            for blob in {b.digest: b for b in layers}.values():
                nursery.start_soon(send_layer, blob)
        await send(config, "config")
        await client.put_manifest(dest.path, dest.tag or "latest", manifest, media_type, scopes)
        progress.done()
