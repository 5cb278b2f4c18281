"""Manifests and indexes as registries serve them: media types, validation, the compression
of each layer, platform selection from a multi-arch index, and digest checks.

Docker schema 2 and OCI are the same shape under different media types, so one parser reads
both. Schema 1 (signed, v1-compat history) is refused, as current podman does. Platform
selection follows containers/image: try the host's os/arch with its variant, then the older
variants it can run (arm v7 -> v6 -> v5), then no variant; arm64 without a variant is v8.
"""

from __future__ import annotations

import hashlib
import json
import platform as host
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from rootless.errors import RlError
from rootless.registry.reference import DIGEST_HEX_LENGTHS, check_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDISTRIBUTABLE_LAYER_GZIP = OCI_NONDISTRIBUTABLE_LAYER + "+gzip"
OCI_NONDISTRIBUTABLE_LAYER_ZSTD = OCI_NONDISTRIBUTABLE_LAYER + "+zstd"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
IMAGE_CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)

# What a pull sends as Accept: the types we can use, the precise ones first.
ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

Compression = Literal["gzip", "zstd", "none"]

_LAYER_COMPRESSION: dict[str, Compression] = {
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_NONDISTRIBUTABLE_LAYER: "none",
    OCI_NONDISTRIBUTABLE_LAYER_GZIP: "gzip",
    OCI_NONDISTRIBUTABLE_LAYER_ZSTD: "zstd",
}
_FOREIGN_LAYER_TYPES = frozenset(
    {
        DOCKER_FOREIGN_LAYER_GZIP,
        OCI_NONDISTRIBUTABLE_LAYER,
        OCI_NONDISTRIBUTABLE_LAYER_GZIP,
        OCI_NONDISTRIBUTABLE_LAYER_ZSTD,
    }
)

# platform.machine() -> (GOARCH, variant), the names images are labelled with.
_MACHINE_TO_GOARCH: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm", "v7"),  # a 32-bit userland on a 64-bit core runs v7 code
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "armv5l": ("arm", "v5"),
    "ppc64le": ("ppc64le", ""),
    "ppc64": ("ppc64", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "loongarch64": ("loong64", ""),
}

# Older variants a CPU can also run, most capable first.
_VARIANT_COMPATIBILITY = {"arm": ("v7", "v6", "v5"), "arm64": ("v8",)}


# The default of mapping fields: one shared empty mapping, read-only so no instance can
# change another's (what field(default_factory=dict) guaranteed).
EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class Platform(NamedTuple):
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def normalized(self) -> Platform:
        """Spellings made canonical (containerd's rules): aarch64 -> arm64, arm -> arm/v7…"""
        os_name, arch, variant = self.os.lower(), self.architecture.lower(), self.variant.lower()
        if arch in ("x86_64", "x86-64", "amd64"):
            arch, variant = "amd64", "" if variant == "v1" else variant
        elif arch == "i386":
            arch, variant = "386", ""
        elif arch in ("aarch64", "arm64"):
            arch = "arm64"
            variant = {"": "v8", "8": "v8", "v8.0": "v8", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(
                variant, variant
            )
        elif arch == "armhf":
            arch, variant = "arm", "v7"
        elif arch == "armel":
            arch, variant = "arm", "v6"
        elif arch == "arm":
            variant = {"": "v7", "5": "v5", "6": "v6", "7": "v7", "8": "v8"}.get(variant, variant)
        return Platform(os_name, arch, variant)


class Descriptor(NamedTuple):
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = EMPTY_MAPPING

    @property
    def compression(self) -> Compression:
        """How a layer blob is compressed, by its media type."""
        try:
            return _LAYER_COMPRESSION[self.media_type]
        except KeyError:
            raise RlError(
                f"layer {self.digest} has unsupported media type {self.media_type!r}"
            ) from None

    @property
    def is_foreign(self) -> bool:
        """Foreign/non-distributable layers (Windows base layers) may live at `urls` instead."""
        return self.media_type in _FOREIGN_LAYER_TYPES


class Manifest(NamedTuple):
    """One image: its config blob and layers, bottom layer first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = EMPTY_MAPPING

    @property
    def is_container_image(self) -> bool:
        """False for OCI artifacts (Helm charts, signatures) that share the manifest format."""
        return self.config.media_type in IMAGE_CONFIG_TYPES


class ImageIndex(NamedTuple):
    """A multi-arch list: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = EMPTY_MAPPING


def parse_manifest(
    data: bytes, content_type: str | None = None, *, source: str = "manifest"
) -> Manifest | ImageIndex:
    """Parse and validate a manifest or index; `source` names it in errors (e.g. the ref).

    The media type comes from the Content-Type header, else the document's `mediaType`,
    else its shape (registries sometimes send `application/json`).
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RlError(f"{source}: invalid manifest JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RlError(f"{source}: invalid manifest: not a JSON object")
    media_type = _media_type_of(doc, content_type)
    if media_type in SCHEMA1_TYPES:
        raise RlError(
            f"schema 1 manifests are not supported: {source}; "
            "the image must be re-pushed with a current client"
        )
    declared = doc.get("mediaType")
    if declared is not None and declared != media_type and not _compatible(declared, media_type):
        raise RlError(
            f"{source}: manifest declares media type {declared!r} but was served as {media_type!r}"
        )
    if media_type in INDEX_TYPES:
        entries = _list(doc, "manifests", source)
        return ImageIndex(
            media_type,
            tuple(_descriptor(e, f"{source}: manifests[{i}]") for i, e in enumerate(entries)),
            _annotations(doc, source),
        )
    if media_type in MANIFEST_TYPES:
        if "config" not in doc:
            raise RlError(f"{source}: invalid manifest: no config descriptor")
        layers = _list(doc, "layers", source)
        return Manifest(
            media_type,
            _descriptor(doc["config"], f"{source}: config"),
            tuple(_descriptor(e, f"{source}: layers[{i}]") for i, e in enumerate(layers)),
            _annotations(doc, source),
        )
    raise RlError(f"{source}: unsupported manifest media type {media_type!r}")


def _media_type_of(doc: dict[str, Any], content_type: str | None) -> str:
    served = (content_type or "").split(";")[0].strip().lower()
    if served in (*MANIFEST_TYPES, *INDEX_TYPES, *SCHEMA1_TYPES):
        return served
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    return OCI_MANIFEST


def _compatible(declared: Any, served: str) -> bool:
    # A schema 1 document may be served under either schema 1 type.
    return declared in SCHEMA1_TYPES and served in SCHEMA1_TYPES


def _list(doc: dict[str, Any], key: str, source: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise RlError(f"{source}: invalid manifest: {key!r} must be a list")
    return value


def _annotations(doc: Mapping[str, Any], where: str) -> dict[str, str]:
    value = doc.get("annotations") or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RlError(f"{where}: invalid manifest: annotations must map strings to strings")
    return dict(value)


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise RlError(f"{where}: invalid descriptor: not a JSON object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise RlError(f"{where}: invalid descriptor: no mediaType")
    if not isinstance(digest, str):
        raise RlError(f"{where}: invalid descriptor: no digest")
    try:
        check_digest(digest)
    except RlError as exc:
        raise RlError(f"{where}: invalid descriptor digest {digest!r}: {exc}") from None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise RlError(f"{where}: invalid descriptor: size must be a non-negative integer")
    urls = raw.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise RlError(f"{where}: invalid descriptor: urls must be a list of strings")
    return Descriptor(
        media_type,
        digest,
        size,
        _platform(raw.get("platform"), where),
        tuple(urls),
        _annotations(raw, where),
    )


def _platform(raw: Any, where: str) -> Platform | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RlError(f"{where}: invalid platform: not a JSON object")
    os_name, arch, variant = raw.get("os"), raw.get("architecture"), raw.get("variant", "")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not isinstance(variant, str):
        raise RlError(f"{where}: invalid platform: os, architecture and variant must be strings")
    return Platform(os_name, arch, variant)


# --- platforms ----------------------------------------------------------------------------


def goarch_for_machine(machine: str) -> tuple[str, str]:
    """(GOARCH, variant) for a `uname -m` machine name; unknown names pass through."""
    return _MACHINE_TO_GOARCH.get(machine.lower(), (machine.lower(), ""))


def host_platform() -> Platform:
    arch, variant = goarch_for_machine(host.machine())
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    """`--platform os/arch[/variant]`."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise RlError(
            f"invalid platform syntax for --platform={text!r}: use OS/ARCH[/VARIANT], "
            "e.g. linux/arm64 or linux/arm/v7"
        )
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def wanted_platforms(wanted: Platform) -> list[Platform]:
    """The platforms an image may have to run here, the best match first."""
    arch, variant = wanted.architecture, wanted.variant
    compatible = _VARIANT_COMPATIBILITY.get(arch, ())
    if variant:
        variants = list(compatible[compatible.index(variant) :]) if variant in compatible else []
        variants = variants or [variant]
        variants.append("")
    else:
        variants = ["", *compatible]
    return [Platform(wanted.os, arch, v) for v in variants]


def _matches(image: Platform, wanted: Platform) -> bool:
    if wanted.variant:
        return image.normalized() == wanted.normalized()
    # The last resort: an entry that declares no variant at all (not one that normalises to
    # the default variant, or an arm/v6 host would take an arm/v7 image).
    normal_image, normal_wanted = image.normalized(), wanted.normalized()
    return not image.variant and (normal_image.os, normal_image.architecture) == (
        normal_wanted.os,
        normal_wanted.architecture,
    )


def select_platform(index: ImageIndex, wanted: Platform | None = None) -> Descriptor:
    """The index entry to pull for `wanted` (default: this host), or podman's error."""
    wanted = wanted or host_platform()
    candidates = [d for d in index.manifests if d.platform is not None]
    for choice in wanted_platforms(wanted.normalized()):
        for descriptor in candidates:
            assert descriptor.platform is not None
            if _matches(descriptor.platform, choice):
                return descriptor
    available = sorted(
        {
            str(d.platform)
            for d in candidates
            if d.platform is not None and d.platform.os != "unknown"  # build attestations
        }
    )
    raise RlError(
        f"no image found in manifest list for architecture {wanted.architecture}, "
        f'variant "{wanted.variant}", OS {wanted.os}; '
        f"the image is available for: {', '.join(available) or 'no platforms'}"
    )


# --- digests ------------------------------------------------------------------------------


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise RlError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, expected: str, *, what: str = "content") -> None:
    """Raise when `data` does not hash to `expected` (`sha256:<hex>`, also sha384/sha512)."""
    check_digest(expected)
    actual = digest_of(data, expected.partition(":")[0])
    if actual != expected:
        raise RlError(f"digest mismatch for {what}: expected {expected}, got {actual}")
