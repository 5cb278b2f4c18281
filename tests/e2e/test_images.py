"""The image commands end to end: rl load/save/import/images/rmi/tag as the unprivileged user."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import images as testimages
from tests.conftest import Rl
from tests.images import ArchiveSet

BUSYBOX = testimages.BUSYBOX_NAME
MINIMAL = testimages.MINIMAL_NAME


def layer_dirs(rl: Rl) -> list[str]:
    return sorted(os.listdir(rl.root / "layers"))


def store_files(rl: Rl) -> dict[str, list[str]]:
    """What a failed command must leave untouched: layers, blobs and staging."""
    return {sub: sorted(os.listdir(rl.root / sub)) for sub in ("layers", "blobs/sha256", "tmp")}


def inspect(rl: Rl, name: str) -> dict[str, Any]:
    [result] = json.loads(rl.ok("image", "inspect", name).stdout)
    assert isinstance(result, dict)
    return result


def other_store(rl: Rl, name: str) -> Rl:
    return Rl(rl.user, rl.root.parent / name)


def test_load_docker_archive_and_list(rl: Rl, image_archives: ArchiveSet) -> None:
    busybox = image_archives.busybox
    result = rl.ok("load", "-i", str(image_archives.docker_archive))
    assert result.stdout == f"Loaded image: {BUSYBOX}\n"
    assert layer_dirs(rl) == sorted(d.removeprefix("sha256:") for d in busybox.diff_ids)
    assert os.listdir(rl.root / "tmp") == []

    lines = rl.ok("images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repo, tag, short_id, *_ = lines[1].split()
    assert (repo, tag, short_id) == ("localhost/rl-test/busybox", "latest", busybox.id[:12])
    assert rl.ok("images", "-q").stdout == f"{busybox.id[:12]}\n"
    assert rl.ok("image", "ls", "-q", "--no-trunc").stdout == f"sha256:{busybox.id}\n"
    assert len(rl.ok("images", "-n").stdout.splitlines()) == 1
    [entry] = json.loads(rl.ok("images", "--format", "json").stdout)
    assert entry["Id"] == busybox.id
    assert entry["Names"] == [BUSYBOX]
    digest = entry["Digest"]  # of the OCI manifest rl wrote for the docker-archive image
    assert digest.startswith("sha256:") and digest == inspect(rl, BUSYBOX)["Digest"]
    template = "{{.ID}} {{.Repository}}:{{.Tag}} {{.Digest}}"
    assert rl.ok("images", "--format", template).stdout == (
        f"{busybox.id[:12]} {BUSYBOX} {digest}\n"
    )
    table = rl.ok("images", "--format", "table {{.ID}} {{.Repository}}").stdout.splitlines()
    assert table[0].split() == ["IMAGE", "ID", "REPOSITORY"]
    assert table[1].split() == [busybox.id[:12], "localhost/rl-test/busybox"]

    info = inspect(rl, "rl-test/busybox")
    assert info["Id"] == busybox.id
    assert info["RepoTags"] == [BUSYBOX]
    assert info["RootFS"] == {"Type": "layers", "Layers": busybox.diff_ids}
    assert info["Config"] == busybox.config["config"]
    assert info["Author"] == "rl tests"
    assert info["Size"] == busybox.size + len(busybox.config_bytes)  # tar bytes, as podman
    assert info["Labels"] == {"org.rl.test": "yes", "maintainer": "rl tests"}
    assert rl.ok("image", "inspect", "--format", "{{.Id}}", busybox.id[:7]).stdout == (
        f"{busybox.id}\n"
    )
    assert rl("image", "exists", BUSYBOX).returncode == 0
    assert rl("image", "exists", "nothing-here").returncode == 1


def saved_layers(path: Path, fmt: str) -> tuple[list[str], str | None]:
    """(layer digests, OCI manifest digest) of an archive rl wrote, read with tarfile."""
    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    if fmt == "docker-archive":
        [entry] = json.loads(files["manifest.json"])
        digests = ["sha256:" + hashlib.sha256(files[name]).hexdigest() for name in entry["Layers"]]
        return digests, None
    index = json.loads(files["index.json"])
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(files["blobs/sha256/" + manifest_digest.removeprefix("sha256:")])
    return [layer["digest"] for layer in manifest["layers"]], manifest_digest


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("source", ["oci_archive", "gzip_docker_archive"])
def test_load_save_load_round_trip(
    rl: Rl, image_archives: ArchiveSet, workdir: Path, fmt: str, source: str
) -> None:
    built = (
        image_archives.busybox_gzip if source == "gzip_docker_archive" else image_archives.busybox
    )
    rl.ok("load", "-i", str(getattr(image_archives, source)))
    out = workdir / f"saved-{fmt}.tar"
    rl.ok("save", "--format", fmt, "-o", str(out), BUSYBOX)
    digests, manifest_digest = saved_layers(out, fmt)
    assert digests == built.layer_digests
    if fmt == "oci-archive":  # the manifest rl stored (the archive's, when it had one)
        assert manifest_digest == inspect(rl, BUSYBOX)["Digest"]
        if source == "oci_archive":
            assert manifest_digest == built.manifest_digest

    again = other_store(rl, "store2")
    assert again.ok("load", "-i", str(out)).stdout == f"Loaded image: {BUSYBOX}\n"
    info = inspect(again, BUSYBOX)
    assert info["Id"] == built.id
    assert info["RootFS"] == {"Type": "layers", "Layers": built.diff_ids}
    # And once more through stdout and stdin.
    streamed = again.ok("save", "--format", fmt, BUSYBOX).stdout_bytes
    third = other_store(rl, "store3")
    assert third.ok("load", input=streamed).stdout == f"Loaded image: {BUSYBOX}\n"
    assert inspect(third, BUSYBOX)["Id"] == built.id


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_gzip_compressed_archives(
    rl: Rl, image_archives: ArchiveSet, workdir: Path, fmt: str
) -> None:
    writer = testimages.write_docker_archive if fmt == "docker" else testimages.write_oci_archive
    path = writer(workdir / f"{fmt}.tar.gz", [image_archives.minimal], gzip_archive=True)
    assert rl.ok("load", "-i", str(path)).stdout == f"Loaded image: {MINIMAL}\n"
    assert rl.ok("images", "-q", "--no-trunc").stdout == f"sha256:{image_archives.minimal.id}\n"


@pytest.mark.parametrize("archive", ["multi_docker_archive", "multi_oci_archive"])
def test_multi_image_archive_shares_layers(
    rl: Rl, image_archives: ArchiveSet, archive: str
) -> None:
    result = rl.ok("load", "-i", str(getattr(image_archives, archive)))
    assert result.stdout == f"Loaded image: {BUSYBOX}\nLoaded image: {MINIMAL}\n"
    busybox, minimal = image_archives.busybox, image_archives.minimal
    assert minimal.diff_ids[0] == busybox.diff_ids[0]  # the shared base layer
    assert layer_dirs(rl) == sorted(d.removeprefix("sha256:") for d in busybox.diff_ids)

    # rmi removes only what no other image uses.
    result = rl.ok("rmi", BUSYBOX)
    assert result.stdout == f"Untagged: {BUSYBOX}\nDeleted: {busybox.id}\n"
    assert layer_dirs(rl) == [minimal.diff_ids[0].removeprefix("sha256:")]
    assert rl.ok("images", "-q").stdout == f"{minimal.id[:12]}\n"
    rl.ok("rmi", MINIMAL)
    assert store_files(rl) == {"layers": [], "blobs/sha256": [], "tmp": []}


def test_tag_untag_and_rmi_rules(rl: Rl, image_archives: ArchiveSet) -> None:
    image_id = image_archives.minimal.id
    rl.ok("load", "-i", str(image_archives.docker_archive))
    rl.ok("load", "-i", str(image_archives.multi_oci_archive))
    rl.ok("tag", MINIMAL, "extra", "quay.io/x/y:2")
    names = inspect(rl, "extra")["RepoTags"]
    assert set(names) == {MINIMAL, "localhost/extra:latest", "quay.io/x/y:2"}
    rows = rl.ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.splitlines()
    assert f"localhost/extra:latest {image_id[:12]}" in rows
    template = "{{.Repository}}:{{.Tag}}"
    assert rl.ok("images", "--format", template, "quay.io/x/y").stdout == "quay.io/x/y:2\n"
    assert rl.ok("images", "-q", "rl-test/minimal").stdout == f"{image_id[:12]}\n"
    assert rl.ok("images", "-q", "rl-test/minimal:v9").stdout == ""

    # An ID with several names needs -f; a name only untags.
    refused = rl("rmi", image_id[:12])
    assert refused.returncode == 125
    assert "more than one tag" in refused.stderr and "please force removal" in refused.stderr
    assert rl.ok("rmi", "extra").stdout == "Untagged: localhost/extra:latest\n"
    rl.ok("untag", "quay.io/x/y:2", "quay.io/x/y:2")
    assert inspect(rl, image_id)["RepoTags"] == [MINIMAL]

    missing = rl("rmi", "nope")
    assert (missing.returncode, missing.stderr) == (1, "Error: nope: image not known\n")
    assert rl("rmi", "-i", "nope").returncode == 0
    bad_tag = rl("tag", "nope", "x")
    assert (bad_tag.returncode, bad_tag.stderr) == (125, "Error: nope: image not known\n")

    rl.ok("tag", MINIMAL, "again")
    result = rl.ok("rmi", "-f", image_id)
    assert result.stdout.splitlines()[-1] == f"Deleted: {image_id}"
    assert "Untagged: localhost/again:latest" in result.stdout
    assert rl.ok("images", "-q").stdout == f"{image_archives.busybox.id[:12]}\n"


def test_import_with_changes(rl: Rl, image_archives: ArchiveSet, workdir: Path) -> None:
    rootfs = workdir / "rootfs.tar"
    rootfs.write_bytes(image_archives.minimal.layers[0].tar)
    result = rl.ok(
        "import",
        str(rootfs),
        "imported",
        "-c",
        'CMD ["/bin/sh", "-c", "echo hi"]',
        "--change",
        'ENV A=1 B="two words"',
        "-c",
        "WORKDIR=/srv",
        "-c",
        "EXPOSE 8080",
        "-c",
        "LABEL team=rl",
        "-m",
        "from a test",
    )
    image_id = result.stdout.strip().removeprefix("sha256:")
    assert result.stdout == f"sha256:{image_id}\n" and len(image_id) == 64
    info = inspect(rl, "imported")
    assert info["Id"] == image_id
    assert info["RepoTags"] == ["localhost/imported:latest"]
    assert info["Config"] == {
        "Cmd": ["/bin/sh", "-c", "echo hi"],
        "Env": ["A=1", "B=two words"],
        "WorkingDir": "/srv",
        "ExposedPorts": {"8080/tcp": {}},
        "Labels": {"team": "rl"},
    }
    assert info["Comment"] == "from a test"
    assert info["RootFS"] == {"Type": "layers", "Layers": image_archives.minimal.diff_ids}

    # From stdin, gzip-compressed, untagged; the layer is shared with the first import.
    import gzip

    streamed = rl.ok("import", "-", input=gzip.compress(rootfs.read_bytes()))
    assert streamed.stdout.startswith("sha256:")
    assert len(layer_dirs(rl)) == 1

    bad = rl("import", str(rootfs), "x", "-c", "FROB 1")
    assert bad.returncode == 125 and bad.stderr.startswith("Error: invalid change")


def corrupt_diff_id_archive(built: testimages.BuiltImage, path: Path) -> Path:
    """A docker-archive whose config claims a wrong diff_id for layer 2."""
    config = built.config
    config["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    members = dict(testimages.docker_archive_members([built]))
    del members[f"{built.id}.json"]
    members[config_name] = config_bytes
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Config"] = config_name
    members["manifest.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    path.chmod(0o644)
    return path


def test_bad_archives_leave_the_store_unchanged(
    rl: Rl, image_archives: ArchiveSet, workdir: Path
) -> None:
    rl.ok("load", "-i", str(image_archives.multi_oci_archive))
    rl.ok("rmi", BUSYBOX)
    before = store_files(rl)
    images_before = rl.ok("images").stdout

    garbage = workdir / "garbage.tar"
    garbage.write_bytes(os.urandom(4096))
    wrong = corrupt_diff_id_archive(image_archives.busybox, workdir / "wrong.tar")
    members = dict(testimages.oci_archive_members([image_archives.busybox]))
    del members["blobs/sha256/" + image_archives.busybox.layer_digests[2].removeprefix("sha256:")]
    missing = workdir / "missing.tar"
    with tarfile.open(missing, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for path, message in (
        (garbage, "not a readable tar archive"),
        (wrong, "sha256:" + "0" * 64),
        (missing, "missing from the archive"),
        (workdir / "absent.tar", "no such file"),
    ):
        result = rl("load", "-i", str(path))
        assert result.returncode == 125, result
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result
        assert message.lower() in result.stderr.lower(), result
        assert store_files(rl) == before
        assert rl.ok("images").stdout == images_before


def test_parallel_loads_leave_a_consistent_store(rl: Rl, image_archives: ArchiveSet) -> None:
    archives = [image_archives.multi_docker_archive, image_archives.multi_oci_archive]
    with ThreadPoolExecutor(10) as pool:
        results = list(
            pool.map(lambda i: rl("load", "-i", str(archives[i % 2]), timeout=300), range(10))
        )
    for result in results:
        assert result.returncode == 0, result
        assert result.stdout == f"Loaded image: {BUSYBOX}\nLoaded image: {MINIMAL}\n"
    busybox, minimal = image_archives.busybox, image_archives.minimal
    assert layer_dirs(rl) == sorted(d.removeprefix("sha256:") for d in busybox.diff_ids)
    assert os.listdir(rl.root / "tmp") == []
    assert sorted(rl.ok("images", "-q", "--no-trunc").stdout.split()) == sorted(
        [f"sha256:{busybox.id}", f"sha256:{minimal.id}"]
    )
    for image in (busybox, minimal):
        assert inspect(rl, image.id)["RootFS"] == {"Type": "layers", "Layers": image.diff_ids}


def test_prune_df_and_reset(rl: Rl, image_archives: ArchiveSet) -> None:
    rl.ok("load", "-i", str(image_archives.multi_docker_archive))
    rl.ok("untag", MINIMAL)
    df = rl.ok("system", "df").stdout.splitlines()
    assert df[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert df[1].split()[:3] == ["Images", "2", "0"]

    eof = rl("image", "prune", input="")
    assert eof.returncode == 125 and "Error: EOF" in eof.stderr
    declined = rl("image", "prune", input="n\n")
    assert declined.returncode == 0 and "dangling images" in declined.stdout
    assert rl.ok("image", "prune", "-f").stdout == f"{image_archives.minimal.id}\n"
    assert rl.ok("images", "-q").stdout == f"{image_archives.busybox.id[:12]}\n"

    refused = rl("system", "reset")
    assert refused.returncode == 125 and "-f" in refused.stderr
    rl.ok("system", "reset", "-f")
    assert not rl.root.exists()
    assert rl.ok("images", "-q").stdout == ""


def test_concurrent_loads_and_removals_stay_consistent(rl: Rl, image_archives: ArchiveSet) -> None:
    archive = str(image_archives.multi_docker_archive)
    rl.ok("load", "-i", archive)

    def work(i: int) -> None:
        if i % 2:
            result = rl("load", "-i", archive, timeout=300)
        else:
            result = rl("rmi", "-i", BUSYBOX if i % 4 else MINIMAL, timeout=300)
        assert result.returncode == 0, result

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(12)))
    listed = rl.ok("images", "-q", "--no-trunc").stdout.split()
    wanted: set[str] = set()
    for image_id in listed:
        layers = inspect(rl, image_id)["RootFS"]["Layers"]
        wanted |= {d.removeprefix("sha256:") for d in layers}
    assert layer_dirs(rl) == sorted(wanted)  # every layer in use is there, nothing else
    assert os.listdir(rl.root / "tmp") == []


def test_images_used_by_containers_are_kept(rl: Rl, image_archives: ArchiveSet) -> None:
    rl.ok("load", "-i", str(image_archives.multi_oci_archive))
    rl.ok("run", "--network=none", MINIMAL, "true")
    refused = rl("rmi", MINIMAL)
    assert refused.returncode == 125 and "in use by a container" in refused.stderr
    assert rl.ok("image", "prune", "-af").stdout == f"{image_archives.busybox.id}\n"
    assert rl.ok("images", "-q").stdout == f"{image_archives.minimal.id[:12]}\n"
    assert rl.ok("system", "df").stdout.splitlines()[1].split()[:3] == ["Images", "1", "1"]
