"""Reading and writing docker-archive / oci-archive files (no store, no namespaces)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.images import archive
from tests import images as testimages


@pytest.fixture(scope="module")
def busybox() -> testimages.BuiltImage:
    return testimages.build_image(testimages.rich_busybox_spec())


@pytest.fixture(scope="module")
def minimal() -> testimages.BuiltImage:
    return testimages.build_image(testimages.minimal_spec(compression="gzip"))


def read(path: Path, staging_dir: Path) -> list[archive.ArchiveImage]:
    staging_dir.mkdir()
    staging = archive.Staging(staging_dir)
    with open(path, "rb") as f:
        archive.stage_archive(f, staging)
    return archive.read_archive(staging)


def check(found: archive.ArchiveImage, built: testimages.BuiltImage, names: list[str]) -> None:
    assert found.id == built.id
    assert found.names == names
    assert [layer.diff_id for layer in found.layers] == built.diff_ids
    assert [layer.blob.digest for layer in found.layers] == built.layer_digests
    assert [layer.media_type for layer in found.layers] == [b.media_type for b in built.layers]
    for layer, blob in zip(found.layers, built.layers, strict=True):
        assert layer.blob.path.read_bytes() == blob.blob


@pytest.mark.parametrize("layout", ["podman", "docker-legacy", "docker-oci"])
@pytest.mark.parametrize("gzip_archive", [False, True])
def test_docker_archive_layouts(
    tmp_path: Path,
    busybox: testimages.BuiltImage,
    layout: testimages.DockerLayout,
    gzip_archive: bool,
) -> None:
    path = testimages.write_docker_archive(
        tmp_path / "a.tar", [busybox], layout=layout, gzip_archive=gzip_archive
    )
    [found] = read(path, tmp_path / "staging")
    check(found, busybox, ["localhost/rl-test/busybox:latest"])
    manifest = json.loads(found.manifest.path.read_bytes())
    assert manifest["config"]["digest"] == busybox.config_digest
    assert [d["digest"] for d in manifest["layers"]] == busybox.layer_digests


def test_oci_archive_keeps_manifest_digest(tmp_path: Path, busybox: testimages.BuiltImage) -> None:
    [found] = read(testimages.write_oci_archive(tmp_path / "o.tar", [busybox]), tmp_path / "s")
    check(found, busybox, ["localhost/rl-test/busybox:latest"])
    assert found.manifest.digest == busybox.manifest_digest


def test_multi_image_archives(
    tmp_path: Path, busybox: testimages.BuiltImage, minimal: testimages.BuiltImage
) -> None:
    docker = read(
        testimages.write_docker_archive(tmp_path / "d.tar", [busybox, minimal]), tmp_path / "s1"
    )
    oci = read(
        testimages.write_oci_archive(tmp_path / "o.tar", [busybox, minimal]), tmp_path / "s2"
    )
    for found in (docker, oci):
        assert [image.id for image in found] == [busybox.id, minimal.id]
        check(found[1], minimal, ["localhost/rl-test/minimal:latest"])


def test_short_names_in_archives_mean_docker_hub(tmp_path: Path) -> None:
    spec = testimages.minimal_spec(name="busybox:1.36")
    built = testimages.build_image(spec)
    [found] = read(testimages.write_docker_archive(tmp_path / "d.tar", [built]), tmp_path / "s")
    assert found.names == ["docker.io/library/busybox:1.36"]


def test_untagged_image(tmp_path: Path) -> None:
    built = testimages.build_image(testimages.minimal_spec(name=""))
    [found] = read(testimages.write_oci_archive(tmp_path / "o.tar", [built]), tmp_path / "s")
    assert found.names == []


def tar_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_garbage_and_empty_input(tmp_path: Path) -> None:
    (tmp_path / "garbage").write_bytes(b"this is not a tar file at all" * 100)
    with pytest.raises(RlError, match=r"not a readable tar archive|empty"):
        read(tmp_path / "garbage", tmp_path / "s1")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(RlError):
        read(tmp_path / "empty", tmp_path / "s2")
    (tmp_path / "other.tar").write_bytes(tar_of({"hello.txt": b"hi"}))
    with pytest.raises(RlError, match=r"neither manifest\.json"):
        read(tmp_path / "other.tar", tmp_path / "s3")


def test_missing_layer_blob_is_refused(tmp_path: Path, busybox: testimages.BuiltImage) -> None:
    members = dict(testimages.oci_archive_members([busybox]))
    del members[f"blobs/sha256/{busybox.layer_digests[1].removeprefix('sha256:')}"]
    (tmp_path / "o.tar").write_bytes(tar_of(members))
    with pytest.raises(RlError, match=f"layer blob {busybox.layer_digests[1]} .* missing"):
        read(tmp_path / "o.tar", tmp_path / "s")


def test_blob_with_wrong_content_is_refused(tmp_path: Path, busybox: testimages.BuiltImage) -> None:
    members = dict(testimages.oci_archive_members([busybox]))
    name = f"blobs/sha256/{busybox.layer_digests[0].removeprefix('sha256:')}"
    members[name] = members[name][:-1] + b"x"
    (tmp_path / "o.tar").write_bytes(tar_of(members))
    with pytest.raises(RlError, match="does not match its digest"):
        read(tmp_path / "o.tar", tmp_path / "s")


def test_docker_manifest_layer_count_mismatch(
    tmp_path: Path, busybox: testimages.BuiltImage
) -> None:
    members = dict(testimages.docker_archive_members([busybox]))
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"] = manifest[0]["Layers"][:2]
    members["manifest.json"] = json.dumps(manifest).encode()
    (tmp_path / "d.tar").write_bytes(tar_of(members))
    with pytest.raises(RlError, match="lists 2 layers but its config has 3"):
        read(tmp_path / "d.tar", tmp_path / "s")


def saved(found: archive.ArchiveImage) -> archive.SavedImage:
    return archive.SavedImage(
        names=found.names,
        config_digest=found.config.digest,
        manifest_digest=found.manifest.digest,
        manifest_type=found.manifest_type,
        layers=[(layer.diff_id, layer.blob.digest, layer.media_type) for layer in found.layers],
    )


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_write_then_read_round_trip(
    tmp_path: Path, busybox: testimages.BuiltImage, minimal: testimages.BuiltImage, fmt: str
) -> None:
    first = read(
        testimages.write_oci_archive(tmp_path / "in.tar", [busybox, minimal]), tmp_path / "s1"
    )
    blobs = {b.digest: b.path for image in first for b in [image.config, image.manifest]}
    blobs |= {layer.blob.digest: layer.blob.path for image in first for layer in image.layers}
    writer = archive.write_oci_archive if fmt == "oci-archive" else archive.write_docker_archive
    with open(tmp_path / "out.tar", "wb") as out:
        writer(out, [saved(image) for image in first], blobs.__getitem__)
    second = read(tmp_path / "out.tar", tmp_path / "s2")
    assert [(i.id, i.names) for i in second] == [(i.id, i.names) for i in first]
    for before, after in zip(first, second, strict=True):
        assert [layer.blob.digest for layer in after.layers] == [
            layer.blob.digest for layer in before.layers
        ]
        if fmt == "oci-archive":
            assert after.manifest.digest == before.manifest.digest


def test_layer_media_type_from_magic() -> None:
    assert archive.layer_media_type(b"\x1f\x8b\x08\x00") == archive.OCI_LAYER_GZIP
    assert archive.layer_media_type(b"\x28\xb5\x2f\xfd") == archive.OCI_LAYER_ZSTD
    assert archive.layer_media_type(b"etc/") == archive.OCI_LAYER
