"""The layer member name rules: plain entries, whiteouts, opaque markers, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rootless.images.whiteout import (
    MAX_PATH_BYTES,
    Opaque,
    Plain,
    Skipped,
    UnsafePath,
    Whiteout,
    classify,
    display,
    layer_path,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("etc/passwd", ("etc", "passwd")),
        ("./etc/passwd", ("etc", "passwd")),
        ("/etc/passwd", ("etc", "passwd")),  # a leading / is stripped, like tar
        ("//etc//./passwd/", ("etc", "passwd")),
        ("./", ()),
        (".", ()),
        ("/", ()),
        ("", ()),
        ("...", ("...",)),
        ("..foo/bar..", ("..foo", "bar..")),
    ],
)
def test_layer_path_normalises(name: str, expected: tuple[str, ...]) -> None:
    assert layer_path(name) == expected


@pytest.mark.parametrize(
    "name", ["..", "../x", "a/../b", "a/..", "/../etc", "./../x", "a/b/../../..", "x\0y"]
)
def test_layer_path_refuses_climbing_and_nul(name: str) -> None:
    with pytest.raises(UnsafePath):
        layer_path(name)


def test_layer_path_refuses_paths_too_long_to_use() -> None:
    fits = "a/" * (MAX_PATH_BYTES // 2) + "b"
    assert len(fits) == MAX_PATH_BYTES
    assert len(layer_path(fits)) == MAX_PATH_BYTES // 2 + 1
    with pytest.raises(UnsafePath, match="longer than"):
        layer_path(fits + "c")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("etc/hosts", Plain(("etc", "hosts"))),
        ("./", Plain(())),
        ("etc/.wh.hosts", Whiteout(("etc", "hosts"))),
        (".wh.etc", Whiteout(("etc",))),
        ("/var/.wh..hidden", Whiteout(("var", ".hidden"))),
        ("a/.wh....", Whiteout(("a", "..."))),
        ("var/cache/.wh..wh..opq", Opaque(("var", "cache"))),
        (".wh..wh..opq", Opaque(())),
        ("./.wh..wh..opq", Opaque(())),
        ("etc/wh.hosts", Plain(("etc", "wh.hosts"))),
        ("etc/x.wh.hosts", Plain(("etc", "x.wh.hosts"))),
    ],
)
def test_classify(name: str, expected: object) -> None:
    assert classify(name) == expected


@pytest.mark.parametrize(
    "name", [".wh..wh.plnk", ".wh..wh.plnk/1234.5678", ".wh..wh.aufs", "a/.wh.b/c"]
)
def test_aufs_metadata_is_skipped(name: str) -> None:
    assert isinstance(classify(name), Skipped)


@pytest.mark.parametrize(
    "name",
    [
        "../.wh.x",  # a whiteout naming outside the layer
        "a/../../.wh.x",
        "../.wh..wh..opq",  # an opaque marker outside the layer
        ".wh..",  # whiteouts of . and ..
        "etc/.wh..",
        "etc/.wh...",
        "etc/.wh.",  # a whiteout of nothing
        "../etc/passwd",
    ],
)
def test_classify_refuses(name: str) -> None:
    with pytest.raises(UnsafePath):
        classify(name)


def test_display() -> None:
    assert display(("etc", "passwd")) == "/etc/passwd"
    assert display(()) == "/"
    assert display(("evil\nname",)) == repr("/evil\nname")  # messages stay on one line


PIECES = st.sampled_from(["a", ".", "/", ".wh.", ".wh..wh..opq", "..", "\0", "é"])


@given(st.lists(PIECES, max_size=20).map("".join))
def test_whatever_the_name_nothing_climbs(name: str) -> None:
    try:
        member = classify(name)
    except UnsafePath:
        return
    if isinstance(member, Plain):
        path = member.path
    elif isinstance(member, Whiteout):
        path = member.target
        assert path, "a whiteout always names an entry"
    elif isinstance(member, Opaque):
        path = member.directory
    else:
        return
    assert all(part not in ("", ".", "..") and "/" not in part for part in path)
    assert all("\0" not in part for part in path)
