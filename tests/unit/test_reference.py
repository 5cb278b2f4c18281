"""Image name parsing and podman's normalisation rules."""

from __future__ import annotations

import pytest

from rootless.errors import RlError
from rootless.images import reference


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("foo/bar:3", "docker.io/foo/bar:3"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("quay.io/x/y", "quay.io/x/y:latest"),
        ("localhost/busybox", "localhost/busybox:latest"),
        ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
        ("127.0.0.1:5000/a", "127.0.0.1:5000/a:latest"),
    ],
)
def test_archive_names_default_to_docker_hub(name: str, expected: str) -> None:
    assert reference.normalize_archive_name(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("busybox", "localhost/busybox:latest"),
        ("foo/bar:3", "localhost/foo/bar:3"),
        ("docker.io/busybox:1", "docker.io/library/busybox:1"),
        ("registry.example.com:5000/x", "registry.example.com:5000/x:latest"),
    ],
)
def test_local_names_default_to_localhost(name: str, expected: str) -> None:
    assert reference.normalize_local_name(name) == expected


def test_digest_reference_keeps_no_default_tag() -> None:
    digest = "sha256:" + "a" * 64
    assert reference.normalize_archive_name(f"busybox@{digest}") == (
        f"docker.io/library/busybox@{digest}"
    )
    with pytest.raises(RlError):
        reference.normalize_local_name(f"busybox@{digest}")


@pytest.mark.parametrize(
    "bad", ["", "Busybox", "a b", "busybox:", "busybox@sha256:abc", "foo//bar", ":tag", "x:bad tag"]
)
def test_malformed_names_are_refused(bad: str) -> None:
    # podman's words: "invalid reference format", or what exactly is wrong with the name
    with pytest.raises(RlError, match=r"invalid reference format|repository name must"):
        reference.parse(bad)


def test_port_is_not_a_tag() -> None:
    ref = reference.parse("localhost:5000/app")
    assert (ref.registry, ref.repository, ref.tag) == ("localhost:5000", "app", None)


@pytest.mark.parametrize(
    ("query", "stored", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest", True),
        ("busybox", "localhost/busybox:latest", True),
        ("busybox:1", "localhost/busybox:latest", False),
        ("library/busybox", "docker.io/library/busybox:latest", True),
        ("box", "localhost/busybox:latest", False),
        ("quay.io/busybox", "localhost/busybox:latest", False),
        ("docker.io/busybox", "docker.io/library/busybox:latest", True),
        ("foo/bar:3", "localhost/foo/bar:3", True),
    ],
)
def test_short_name_matching(query: str, stored: str, expected: bool) -> None:
    assert reference.matches(query, stored) is expected


def test_ids() -> None:
    assert reference.looks_like_id("71eac")
    assert reference.looks_like_id("sha256:" + "0" * 64)
    assert not reference.looks_like_id("busybox")
    assert not reference.looks_like_id("0" * 65)


def test_split_name_for_columns() -> None:
    assert reference.split_name("localhost:5000/a/b:v1") == ("localhost:5000/a/b", "v1")
