"""Manifest parsing and validation, layer compression, platform choice from indexes, digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from rootless.errors import RlError
from rootless.registry import manifests as m
from rootless.registry.manifests import (
    Descriptor,
    ImageIndex,
    Manifest,
    Platform,
    digest_of,
    goarch_for_machine,
    parse_manifest,
    parse_platform,
    select_platform,
    verify_digest,
    wanted_platforms,
)


def sha(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def desc(media_type: str, n: int, size: int = 100, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(n), "size": size, **extra}


def image_manifest(
    media_type: str = m.OCI_MANIFEST,
    config_type: str = m.OCI_CONFIG,
    layer_types: tuple[str, ...] = (m.OCI_LAYER_GZIP,),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": desc(config_type, 0),
        "layers": [desc(t, i + 1) for i, t in enumerate(layer_types)],
        **extra,
    }


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def plat(os_name: str, arch: str, variant: str = "") -> dict[str, str]:
    p = {"os": os_name, "architecture": arch}
    if variant:
        p["variant"] = variant
    return p


def index(*platforms: dict[str, str], media_type: str = m.OCI_INDEX) -> ImageIndex:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [desc(m.OCI_MANIFEST, 100 + i, platform=p) for i, p in enumerate(platforms)],
    }
    parsed = parse_manifest(encode(doc))
    assert isinstance(parsed, ImageIndex)
    return parsed


# --- parsing ------------------------------------------------------------------------------


def test_oci_manifest() -> None:
    doc = image_manifest(
        layer_types=(m.OCI_LAYER_GZIP, m.OCI_LAYER_ZSTD, m.OCI_LAYER),
        annotations={"org.opencontainers.image.title": "x"},
    )
    parsed = parse_manifest(encode(doc), m.OCI_MANIFEST)
    assert isinstance(parsed, Manifest)
    assert parsed.media_type == m.OCI_MANIFEST
    assert parsed.config == Descriptor(m.OCI_CONFIG, sha(0), 100)
    assert [layer.compression for layer in parsed.layers] == ["gzip", "zstd", "none"]
    assert [layer.digest for layer in parsed.layers] == [sha(1), sha(2), sha(3)]
    assert parsed.annotations == {"org.opencontainers.image.title": "x"}
    assert parsed.is_container_image
    assert not any(layer.is_foreign for layer in parsed.layers)


def test_docker_schema2_manifest() -> None:
    doc = image_manifest(m.DOCKER_MANIFEST, m.DOCKER_CONFIG, (m.DOCKER_LAYER_GZIP,) * 2)
    parsed = parse_manifest(encode(doc), f"{m.DOCKER_MANIFEST}; charset=utf-8")
    assert isinstance(parsed, Manifest)
    assert parsed.media_type == m.DOCKER_MANIFEST
    assert [layer.compression for layer in parsed.layers] == ["gzip", "gzip"]


def test_foreign_and_nondistributable_layers_are_noted() -> None:
    doc = image_manifest(
        m.DOCKER_MANIFEST,
        m.DOCKER_CONFIG,
        (m.DOCKER_FOREIGN_LAYER_GZIP, m.DOCKER_LAYER_GZIP),
    )
    doc["layers"][0]["urls"] = ["https://mcr.microsoft.com/v2/windows/blobs/x"]
    parsed = parse_manifest(encode(doc))
    assert isinstance(parsed, Manifest)
    assert parsed.layers[0].is_foreign and not parsed.layers[1].is_foreign
    assert parsed.layers[0].urls == ("https://mcr.microsoft.com/v2/windows/blobs/x",)
    for t, compression in [
        (m.OCI_NONDISTRIBUTABLE_LAYER, "none"),
        (m.OCI_NONDISTRIBUTABLE_LAYER_GZIP, "gzip"),
        (m.OCI_NONDISTRIBUTABLE_LAYER_ZSTD, "zstd"),
    ]:
        layer = Descriptor(t, sha(1), 1)
        assert layer.is_foreign and layer.compression == compression


def test_unknown_layer_type_fails_when_asked_for_compression() -> None:
    doc = image_manifest(layer_types=("application/vnd.cncf.helm.chart.content.v1.tar+gzip",))
    doc["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    parsed = parse_manifest(encode(doc))
    assert isinstance(parsed, Manifest)
    assert not parsed.is_container_image
    with pytest.raises(RlError, match="unsupported media type"):
        _ = parsed.layers[0].compression


def test_media_type_from_document_or_shape_when_not_served() -> None:
    no_type = image_manifest()
    del no_type["mediaType"]
    assert isinstance(parse_manifest(encode(no_type), "application/json"), Manifest)
    idx = {
        "schemaVersion": 2,
        "manifests": [desc(m.OCI_MANIFEST, 1, platform=plat("linux", "amd64"))],
    }
    assert isinstance(parse_manifest(encode(idx)), ImageIndex)
    docker = image_manifest(m.DOCKER_MANIFEST, m.DOCKER_CONFIG, (m.DOCKER_LAYER_GZIP,))
    assert parse_manifest(encode(docker), "text/plain").media_type == m.DOCKER_MANIFEST


@pytest.mark.parametrize("served", [m.DOCKER_SCHEMA1, m.DOCKER_SCHEMA1_SIGNED, None])
def test_schema1_is_refused(served: str | None) -> None:
    doc = {"schemaVersion": 1, "name": "library/busybox", "tag": "old", "fsLayers": []}
    with pytest.raises(RlError) as info:
        parse_manifest(encode(doc), served, source="docker.io/library/busybox:old")
    assert info.value.message == (
        "schema 1 manifests are not supported: docker.io/library/busybox:old; "
        "the image must be re-pushed with a current client"
    )


def test_docker_manifest_list() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": m.DOCKER_MANIFEST_LIST,
        "manifests": [
            desc(m.DOCKER_MANIFEST, 1, platform=plat("linux", "amd64")),
            desc(
                m.DOCKER_MANIFEST,
                2,
                platform={**plat("windows", "amd64"), "os.version": "10.0.17763.1"},
            ),
        ],
    }
    parsed = parse_manifest(encode(doc), m.DOCKER_MANIFEST_LIST)
    assert isinstance(parsed, ImageIndex)
    assert [d.platform for d in parsed.manifests] == [
        Platform("linux", "amd64"),
        Platform("windows", "amd64"),
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("config"), "no config descriptor"),
        (lambda d: d.update(layers={}), "'layers' must be a list"),
        (lambda d: d.pop("layers"), "'layers' must be a list"),
        (lambda d: d["config"].pop("digest"), "no digest"),
        (lambda d: d["config"].update(digest="sha256:abc"), "invalid descriptor digest"),
        (lambda d: d["config"].update(digest="md5:" + "a" * 64), "unsupported digest"),
        (lambda d: d["layers"][0].update(size=-1), "size must be a non-negative integer"),
        (lambda d: d["layers"][0].update(size="12"), "size must be a non-negative integer"),
        (lambda d: d["layers"][0].update(size=True), "size must be a non-negative integer"),
        (lambda d: d["layers"][0].update(size=1.5), "size must be a non-negative integer"),
        (lambda d: d["layers"][0].pop("mediaType"), "no mediaType"),
        (lambda d: d["layers"].append("x"), "not a JSON object"),
        (lambda d: d["layers"][0].update(urls="http://x"), "urls must be a list"),
        (lambda d: d.update(annotations={"a": 1}), "annotations must map strings"),
        (lambda d: d.update(mediaType=m.DOCKER_MANIFEST), "declares media type"),
    ],
)
def test_invalid_manifests(mutate: Any, message: str) -> None:
    doc = image_manifest()
    mutate(doc)
    with pytest.raises(RlError, match=message):
        parse_manifest(encode(doc), m.OCI_MANIFEST, source="quay.io/x/y:1")


def test_invalid_documents() -> None:
    with pytest.raises(RlError, match="invalid manifest JSON"):
        parse_manifest(b"{not json")
    with pytest.raises(RlError, match="invalid manifest JSON"):
        parse_manifest(b"\xff\xfe")
    with pytest.raises(RlError, match="not a JSON object"):
        parse_manifest(b"[]")
    with pytest.raises(RlError, match="unsupported manifest media type"):
        parse_manifest(encode({"mediaType": "application/vnd.example+json"}))
    bad_platform = {
        "mediaType": m.OCI_INDEX,
        "manifests": [desc(m.OCI_MANIFEST, 1, platform={"os": "linux"})],
    }
    with pytest.raises(RlError, match="invalid platform"):
        parse_manifest(encode(bad_platform))


# --- platforms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", ("amd64", "")),
        ("aarch64", ("arm64", "v8")),
        ("arm64", ("arm64", "v8")),
        ("armv7l", ("arm", "v7")),
        ("armv6l", ("arm", "v6")),
        ("armv5tel", ("arm", "v5")),
        ("i686", ("386", "")),
        ("ppc64le", ("ppc64le", "")),
        ("s390x", ("s390x", "")),
        ("riscv64", ("riscv64", "")),
        ("loongarch64", ("loong64", "")),
        ("weird9000", ("weird9000", "")),
    ],
)
def test_goarch_for_machine(machine: str, expected: tuple[str, str]) -> None:
    assert goarch_for_machine(machine) == expected


def test_host_platform_is_linux_on_a_go_architecture() -> None:
    here = m.host_platform()
    assert here.os == "linux"
    assert here.architecture in {"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"}


def test_wanted_platforms_order() -> None:
    assert [str(p) for p in wanted_platforms(Platform("linux", "arm", "v7"))] == [
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
        "linux/arm",
    ]
    assert [str(p) for p in wanted_platforms(Platform("linux", "arm64", "v8"))] == [
        "linux/arm64/v8",
        "linux/arm64",
    ]
    assert [str(p) for p in wanted_platforms(Platform("linux", "arm64"))] == [
        "linux/arm64",
        "linux/arm64/v8",
    ]
    assert [str(p) for p in wanted_platforms(Platform("linux", "amd64"))] == ["linux/amd64"]
    assert [str(p) for p in wanted_platforms(Platform("linux", "riscv64", "rva22"))] == [
        "linux/riscv64/rva22",
        "linux/riscv64",
    ]


MULTI = (
    plat("linux", "amd64"),
    plat("linux", "arm", "v6"),
    plat("linux", "arm", "v7"),
    plat("linux", "arm64", "v8"),
    plat("linux", "386"),
    plat("windows", "amd64"),
    plat("unknown", "unknown"),
)


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        (Platform("linux", "amd64"), 0),
        (Platform("linux", "arm", "v7"), 2),
        (Platform("linux", "arm", "v6"), 1),
        (Platform("linux", "arm"), 2),  # arm without a variant means v7
        (Platform("linux", "arm64", "v8"), 3),
        (Platform("linux", "arm64"), 3),  # arm64 without a variant matches v8
        (Platform("linux", "aarch64"), 3),
        (Platform("linux", "x86_64"), 0),
        (Platform("linux", "i386"), 4),
        (Platform("windows", "amd64"), 5),
        (Platform("Linux", "AMD64"), 0),
    ],
)
def test_select_platform(wanted: Platform, chosen: int) -> None:
    idx = index(*MULTI)
    assert select_platform(idx, wanted) == idx.manifests[chosen]


def test_older_arm_variant_is_chosen_when_newer_is_missing() -> None:
    idx = index(plat("linux", "arm", "v5"), plat("linux", "arm", "v6"))
    assert select_platform(idx, Platform("linux", "arm", "v7")) == idx.manifests[1]
    # but never a newer one than the CPU runs
    with pytest.raises(RlError, match="architecture arm"):
        select_platform(index(plat("linux", "arm", "v7")), Platform("linux", "arm", "v6"))


def test_arm64_entry_without_variant_matches_v8_host() -> None:
    idx = index(plat("linux", "amd64"), plat("linux", "arm64"))
    assert select_platform(idx, Platform("linux", "arm64", "v8")) == idx.manifests[1]
    idx8 = index(plat("linux", "arm64", "8"))
    assert select_platform(idx8, Platform("linux", "arm64")) == idx8.manifests[0]


def test_amd64_microarchitecture_levels_are_not_baseline() -> None:
    idx = index(plat("linux", "amd64", "v3"), plat("linux", "amd64"))
    assert select_platform(idx, Platform("linux", "amd64")) == idx.manifests[1]


def test_no_match_lists_available_platforms() -> None:
    idx = index(*MULTI[:4], plat("windows", "amd64"), plat("unknown", "unknown"))
    with pytest.raises(RlError) as info:
        select_platform(idx, Platform("linux", "s390x"))
    assert info.value.message == (
        'no image found in manifest list for architecture s390x, variant "", OS linux; '
        "the image is available for: linux/amd64, linux/arm/v6, linux/arm/v7, "
        "linux/arm64/v8, windows/amd64"
    )


def test_entries_without_platform_are_skipped() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": m.OCI_INDEX,
        "manifests": [
            desc(m.OCI_MANIFEST, 1),
            desc(m.OCI_MANIFEST, 2, platform=plat("linux", "amd64")),
        ],
    }
    idx = parse_manifest(encode(doc))
    assert isinstance(idx, ImageIndex)
    assert select_platform(idx, Platform("linux", "amd64")).digest == sha(2)
    with pytest.raises(RlError, match="available for: linux/amd64"):
        select_platform(idx, Platform("linux", "arm64"))


def test_default_is_the_host() -> None:
    here = m.host_platform()
    idx = index(plat("linux", here.architecture, here.variant), plat("plan9", "amd64"))
    assert select_platform(idx) == idx.manifests[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_parse_platform(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm/v7/x", ""])
def test_parse_platform_rejects(text: str) -> None:
    with pytest.raises(RlError, match="invalid platform syntax"):
        parse_platform(text)


# --- digests ------------------------------------------------------------------------------


def test_verify_digest() -> None:
    data = b"hello"
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    verify_digest(data, good)
    assert digest_of(data) == good
    verify_digest(data, "sha512:" + hashlib.sha512(data).hexdigest())
    with pytest.raises(RlError) as info:
        verify_digest(b"hellO", good, what="manifest quay.io/x:1")
    assert info.value.message.startswith(
        f"digest mismatch for manifest quay.io/x:1: expected {good}"
    )
    with pytest.raises(RlError, match="invalid checksum digest length"):
        verify_digest(data, "sha256:abc")
    with pytest.raises(RlError, match="unsupported digest algorithm"):
        digest_of(data, "md5")
