"""The test-image builder is itself checked: deterministic, well-formed, and accepted by skopeo."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.harness import User
from tests.images import (
    BUSYBOX_NAME,
    MINIMAL_NAME,
    OCI_REF_NAME,
    ArchiveSet,
    ImageSpec,
    build_image,
    directory,
    file,
    hardlink,
    layer,
    merged_tree,
    minimal_spec,
    opaque,
    rich_busybox_spec,
    split_tag,
    symlink,
    whiteout,
    write_docker_archive,
    write_oci_archive,
)


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {info.name: info for info in tar.getmembers()}


def _read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        contents = {}
        for info in tar.getmembers():
            extracted = tar.extractfile(info)
            if extracted is not None:
                contents[info.name] = extracted.read()
        return contents


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_building_twice_gives_identical_bytes() -> None:
    first, second = build_image(rich_busybox_spec()), build_image(rich_busybox_spec())
    assert first.config_bytes == second.config_bytes
    assert [built.blob for built in first.layers] == [built.blob for built in second.layers]
    assert first.id == second.id and first.manifest_digest == second.manifest_digest


def test_ids_and_digests_follow_the_bytes() -> None:
    plain = build_image(rich_busybox_spec())
    gzipped = build_image(rich_busybox_spec(compression="gzip"))
    assert plain.id == hashlib.sha256(plain.config_bytes).hexdigest()
    assert len(plain.layers) == 3
    assert plain.config["rootfs"]["diff_ids"] == plain.diff_ids
    # Plain layers: digest == diff_id. Compression changes digests, not diff_ids or the ID.
    assert plain.layer_digests == plain.diff_ids
    assert gzipped.diff_ids == plain.diff_ids and gzipped.id == plain.id
    assert gzipped.layer_digests != plain.layer_digests
    assert all(built.blob[:2] == b"\x1f\x8b" for built in gzipped.layers)


def test_rich_image_layers_carry_every_feature() -> None:
    image = build_image(rich_busybox_spec())
    base, features, changes = (_members(built.tar) for built in image.layers)

    assert base["bin/busybox"].mode == 0o755 and base["bin/busybox"].size > 100_000
    assert base["bin/sh"].issym() and base["bin/sh"].linkname == "/bin/busybox"
    assert base["tmp"].mode == 0o1777 and base["root"].mode == 0o700

    secret = features["home/tester/secret.txt"]
    assert (secret.uid, secret.gid, secret.mode) == (1000, 1000, 0o640)
    assert features["usr/local/bin/setuid-tool"].mode == 0o4755
    assert features["data/hardlink-b"].islnk()
    assert features["data/hardlink-b"].linkname == "data/hardlink-a"
    assert features["data/xattrs"].pax_headers["SCHILY.xattr.user.rl.test"] == "hello"
    assert features["data/link-dangling"].issym()

    assert "etc/.wh.to-be-deleted" in changes
    assert "data/.wh.dir-to-be-deleted" in changes
    assert "data/opaque/.wh..wh..opq" in changes
    assert all(info.mtime == 1_700_000_000 for info in changes.values())


def test_image_config_has_the_runtime_settings() -> None:
    config = build_image(rich_busybox_spec()).config
    section = config["config"]
    assert section["Cmd"][0] == "/bin/sh" and section["WorkingDir"] == "/data"
    assert "RL_TEST=yes" in section["Env"]
    assert section["Labels"]["org.rl.test"] == "yes"
    assert "8080/tcp" in section["ExposedPorts"]
    assert config["os"] == "linux" and len(config["history"]) == 3


def test_passwd_and_group_have_the_test_users() -> None:
    tree = merged_tree(rich_busybox_spec())
    passwd = tree["etc/passwd"].data.decode()
    group = tree["etc/group"].data.decode()
    assert "tester:x:1000:1000:Test User:/home/tester:/bin/sh" in passwd.splitlines()
    assert any(line.startswith("nobody:x:65534:65534:") for line in passwd.splitlines())
    assert "extra:x:2000:tester" in group.splitlines()


def test_merged_tree_applies_whiteouts_and_opaque_directories() -> None:
    tree = merged_tree(rich_busybox_spec())
    assert "etc/to-be-deleted" not in tree
    assert not any(name.startswith("data/dir-to-be-deleted") for name in tree)
    assert sorted(n for n in tree if n.startswith("data/opaque/")) == ["data/opaque/new"]
    assert tree["data/file-then-dir"].kind == "dir"
    assert tree["data/file-then-dir/child"].kind == "file"
    assert tree["etc/motd"].data == b"layer 3\n"
    assert not any(".wh." in name for name in tree)


def test_merged_tree_replaces_a_directory_by_a_file() -> None:
    spec = ImageSpec(
        layers=(
            layer([directory("a"), file("a/inner", "x"), symlink("b", "a")]),
            layer([file("a", "now a file"), whiteout("b"), hardlink("c", "a")]),
            layer([directory("d"), opaque("d")]),
        )
    )
    tree = merged_tree(spec)
    assert tree["a"].kind == "file" and "a/inner" not in tree and "b" not in tree
    assert tree["c"].target == "a" and tree["d"].kind == "dir"


def test_bad_layer_paths_are_refused() -> None:
    with pytest.raises(ValueError):
        file("../escape", "x")
    assert file("/etc/x").path == "etc/x"


def test_split_tag_knows_registry_ports() -> None:
    assert split_tag("localhost:5000/a/b:v1") == ("localhost:5000/a/b", "v1")
    assert split_tag("localhost:5000/a/b") == ("localhost:5000/a/b", "latest")


@pytest.mark.parametrize("layout", ["podman", "docker-legacy", "docker-oci"])
def test_docker_archive_manifest_points_at_verifiable_files(tmp_path: Path, layout: Any) -> None:
    busybox = build_image(rich_busybox_spec(compression=("none", "gzip", "none")))
    minimal = build_image(minimal_spec())
    path = write_docker_archive(tmp_path / "a.tar", [busybox, minimal], layout=layout)
    files = _read_archive(path)
    manifest = json.loads(files["manifest.json"])
    assert [entry["RepoTags"] for entry in manifest] == [[BUSYBOX_NAME], [MINIMAL_NAME]]
    for entry, image in zip(manifest, (busybox, minimal), strict=True):
        assert _digest(files[entry["Config"]]) == image.config_digest
        blobs = [files[name] for name in entry["Layers"]]
        assert [_digest(blob) for blob in blobs] == image.layer_digests
    # The base layer is shared, and stored once.
    assert manifest[0]["Layers"][0] == manifest[1]["Layers"][0]


def test_oci_archive_index_manifest_and_blobs_agree(tmp_path: Path) -> None:
    busybox = build_image(rich_busybox_spec(compression="gzip"))
    minimal = build_image(minimal_spec())
    files = _read_archive(write_oci_archive(tmp_path / "a.tar", [busybox, minimal]))
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    names = [item["annotations"][OCI_REF_NAME] for item in index["manifests"]]
    assert names == [BUSYBOX_NAME, MINIMAL_NAME]
    for descriptor, image in zip(index["manifests"], (busybox, minimal), strict=True):
        manifest_bytes = files["blobs/sha256/" + descriptor["digest"].split(":")[1]]
        assert _digest(manifest_bytes) == descriptor["digest"] == image.manifest_digest
        manifest = json.loads(manifest_bytes)
        for blob in [manifest["config"], *manifest["layers"]]:
            data = files["blobs/sha256/" + blob["digest"].split(":")[1]]
            assert _digest(data) == blob["digest"] and len(data) == blob["size"]
        gzipped = [item["mediaType"].endswith("+gzip") for item in manifest["layers"]]
        assert gzipped == [image is busybox] * len(image.layers)


def _skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_the_archives_as_we_describe_them(image_archives: ArchiveSet) -> None:
    """An independent reader (containers/image) agrees on digests and config."""
    busybox = image_archives.busybox
    raw = _skopeo("inspect", "--raw", f"oci-archive:{image_archives.oci_archive}")
    assert raw.encode() == busybox.manifest_bytes
    config = json.loads(
        _skopeo("inspect", "--config", f"docker-archive:{image_archives.docker_archive}")
    )
    assert config["rootfs"]["diff_ids"] == busybox.diff_ids
    inspected = json.loads(
        _skopeo("inspect", f"docker-archive:{image_archives.multi_docker_archive}:{MINIMAL_NAME}")
    )
    assert inspected["Layers"] == image_archives.minimal.layer_digests


def test_fixture_archives_are_readable_by_the_test_user(
    user: User, busybox_archive: Path, busybox_oci_archive: Path
) -> None:
    for path in (busybox_archive, busybox_oci_archive):
        assert user.run(["test", "-r", str(path)]).returncode == 0, path
