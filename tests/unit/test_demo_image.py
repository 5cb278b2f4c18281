"""The demo image's content, built from the host's busybox-static."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.images.demo import (
    DEMO_CMD,
    DEMO_NAME,
    build_demo,
    docker_archive,
    is_static_executable,
)


def test_rootfs_has_busybox_its_applets_and_users() -> None:
    demo = build_demo()
    with tarfile.open(fileobj=io.BytesIO(demo.rootfs_tar)) as tar:
        members = {info.name: info for info in tar.getmembers()}
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert members["tmp"].mode == 0o1777 and members["root"].mode == 0o700
    assert passwd.startswith("root:x:0:0:")
    # Parents come before children, so any unpacker can create them in order.
    names = list(members)
    assert all(
        names.index(name.rsplit("/", 1)[0]) < names.index(name) for name in names if "/" in name
    )


def test_build_is_deterministic() -> None:
    assert docker_archive(build_demo(), DEMO_NAME) == docker_archive(build_demo(), DEMO_NAME)


def test_archive_names_the_image_and_runs_the_greeting() -> None:
    with tarfile.open(fileobj=io.BytesIO(docker_archive(build_demo(), DEMO_NAME))) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [DEMO_NAME]
    assert config["config"]["Cmd"] == DEMO_CMD
    assert len(config["rootfs"]["diff_ids"]) == 1


def test_missing_busybox_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(RlError, match="install busybox-static"):
        build_demo(tmp_path / "busybox")


def test_only_a_static_busybox_will_do() -> None:
    assert is_static_executable(Path("/bin/busybox").read_bytes())
    assert not is_static_executable(Path("/bin/ls").read_bytes())  # dynamically linked
    assert not is_static_executable(b"#!/bin/sh\necho not elf\n")


def test_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(Path("/bin/ls").read_bytes())
    with pytest.raises(RlError, match="not a statically linked executable"):
        build_demo(fake)
