"""The union rules and the inode table, tested directly (no filesystem)."""

from __future__ import annotations

import pytest

from fuseoverlay.inodes import ROOT_INODE, InodeTable
from fuseoverlay.options import IdMap, OptionError, parse_args
from fuseoverlay.resolve import (
    Kind,
    Resolved,
    is_opaque,
    is_private_xattr,
    join,
    merge_listing,
    resolve_entry,
    split,
    whited_out_name,
)


def _resolve(kinds: dict[int, Kind], layers: tuple[int, ...] = (0, 1, 2, 3)) -> Resolved | None:
    asked: list[int] = []

    def observe(layer: int) -> Kind:
        asked.append(layer)
        return kinds.get(layer, Kind.ABSENT)

    result = resolve_entry(layers, observe)
    assert asked == sorted(asked), "layers are observed top down"
    return result


def test_the_topmost_file_wins() -> None:
    assert _resolve({1: Kind.OTHER, 2: Kind.OTHER}) == Resolved(1, False, (1,))


def test_a_whiteout_hides_everything_below() -> None:
    assert _resolve({1: Kind.WHITEOUT, 2: Kind.OTHER}) is None
    assert _resolve({}) is None


def test_directories_merge_down_to_an_opaque_one() -> None:
    kinds = {0: Kind.DIR, 1: Kind.DIR, 2: Kind.OPAQUE_DIR, 3: Kind.DIR}
    assert _resolve(kinds) == Resolved(0, True, (0, 1, 2))


def test_an_opaque_top_directory_merges_nothing() -> None:
    assert _resolve({0: Kind.OPAQUE_DIR, 1: Kind.DIR}) == Resolved(0, True, (0,))


def test_a_lower_file_or_whiteout_ends_a_directory_merge() -> None:
    assert _resolve({0: Kind.DIR, 1: Kind.OTHER, 2: Kind.DIR}) == Resolved(0, True, (0,))
    assert _resolve({1: Kind.DIR, 2: Kind.WHITEOUT, 3: Kind.DIR}) == Resolved(1, True, (1,))


def test_only_the_candidate_layers_count() -> None:
    # A child of a directory merged from layers 0 and 2 never looks at layer 1.
    assert _resolve({1: Kind.OTHER, 2: Kind.DIR}, (0, 2)) == Resolved(2, True, (2,))


def test_merge_listing_hides_duplicates_and_whiteouts() -> None:
    upper = [(b"new", False), (b"gone", True), (b"both", False)]
    lower = [(b"both", False), (b"gone", False), (b"old", False), (b".wh.tar", False)]
    lowest = [(b"tar", False), (b"old", False), (b".wh..wh..opq", False), (b"x", False)]
    assert merge_listing([upper, lower, lowest]) == [b"new", b"both", b"old", b"x"]


def test_a_whiteout_does_not_hide_its_own_layer() -> None:
    assert merge_listing([[(b".wh.a", False), (b"a", False)], [(b"a", False)]]) == [b"a"]


def test_whiteout_names() -> None:
    assert whited_out_name(b".wh.foo") == b"foo"
    assert whited_out_name(b".wh..wh..opq") is None
    assert whited_out_name(b"foo") is None


def test_opaque_marks() -> None:
    assert is_opaque({"user.overlay.opaque": b"y"}, False)
    assert is_opaque({"trusted.overlay.opaque": b"y"}, False)
    assert is_opaque({"user.fuseoverlayfs.opaque": b"y"}, False)
    assert is_opaque({}, True)
    assert not is_opaque({"user.overlay.opaque": b"n"}, False)


def test_private_xattrs() -> None:
    assert is_private_xattr("user.overlay.opaque")
    assert is_private_xattr("trusted.overlay.origin")
    assert not is_private_xattr("user.mime_type")


def test_paths() -> None:
    assert join(b"", b"a") == b"a"
    assert join(b"a", b"b") == b"a/b"
    assert split(b"a/b/c") == (b"a/b", b"c")
    assert split(b"a") == (b"", b"a")


def test_inode_numbers_survive_rename_of_a_directory() -> None:
    table = InodeTable((0, 1))
    d = table.add(b"d", 1, True, (1,))
    f = table.add(b"d/f", 1, False, (1,))
    sub = table.add(b"d/sub/g", 0, False, (0,))
    table.move(b"d", b"e")
    assert table.at(b"e") is d and table.at(b"e/f") is f and table.at(b"e/sub/g") is sub
    assert table.at(b"d/f") is None
    assert f.path == b"e/f" and f.names == {b"e/f"}


def test_upper_hard_links_share_a_node() -> None:
    table = InodeTable((0,))
    a = table.add(b"a", 0, False, (0,), real_key=(1, 42))
    b = table.add(b"b", 0, False, (0,), real_key=(1, 42))
    assert a is b and a.names == {b"a", b"b"}
    table.remove_name(b"a")
    assert table.at(b"b") is a and a.path == b"b"
    lower = table.add(b"c", 1, False, (1,), real_key=(1, 42))
    assert lower is not a  # lower files are per name: copy-up splits them, as in overlayfs


def test_rename_over_a_name_replaces_its_node() -> None:
    table = InodeTable((0,))
    a = table.add(b"a", 0, False, (0,))
    b = table.add(b"b", 0, False, (0,))
    table.looked_up(b)
    table.move(b"a", b"b")
    assert table.at(b"b") is a and not b.names
    assert table.get(b.ino) is b  # still known to the kernel
    table.forget(b.ino, 1)
    assert table.get(b.ino) is None


def test_removing_a_directory_forgets_what_was_below() -> None:
    table = InodeTable((0,))
    table.add(b"d", 0, True, (0,))
    table.add(b"d/x", 0, False, (0,))
    table.remove_name(b"d")
    assert table.at(b"d/x") is None


def test_nodes_of_existing_names_are_kept_when_forgotten() -> None:
    table = InodeTable((0,))
    a = table.add(b"a", 0, False, (0,))
    table.looked_up(a)
    table.forget(a.ino, 1)
    assert table.at(b"a") is a and table.get(a.ino) is a
    table.forget(ROOT_INODE, 10)
    assert table.get(ROOT_INODE) is table.root


def test_copy_up_makes_a_directory_merged() -> None:
    table = InodeTable((0, 1))
    d = table.add(b"d", 1, True, (1, 2))
    assert d.has_lower and not d.in_upper
    d.copied_up()
    assert d.in_upper and d.dir_layers == (0, 1, 2)


def test_command_line_like_fuse_overlayfs() -> None:
    config = parse_args(
        ["-f", "-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w,fsync=0,allow_other", "/m"]
    )
    assert config.lowerdirs == ("/a", "/b")
    assert (config.upperdir, config.workdir, config.mountpoint) == ("/u", "/w", "/m")
    assert config.foreground and not config.debug
    assert config.fuse_options == {"allow_other"}
    debug = parse_args(["-d", "-olowerdir=/a,upperdir=/u,workdir=/w", "-o", "timeout=5", "/m"])
    assert debug.debug and debug.foreground and debug.timeout == 5


@pytest.mark.parametrize(
    "argv",
    [
        ["-o", "upperdir=/u,workdir=/w", "/m"],
        ["-o", "lowerdir=/a", "/m"],
        ["-o", "lowerdir=/a,upperdir=/u,workdir=/w"],
        ["-x", "-o", "lowerdir=/a,upperdir=/u,workdir=/w", "/m"],
        ["-o", "lowerdir=/a,upperdir=/u,workdir=/w,uidmapping=0:1", "/m"],
    ],
)
def test_bad_command_lines(argv: list[str]) -> None:
    with pytest.raises(OptionError):
        parse_args(argv)


def test_id_mapping() -> None:
    ids = IdMap.parse("0:1000:1:1:100000:65536")
    assert ids.to_inner(1000) == 0 and ids.to_inner(100000) == 1 and ids.to_inner(5) == 65534
    assert ids.to_outer(0) == 1000 and ids.to_outer(2) == 100001 and ids.to_outer(70000) is None
    assert IdMap().to_inner(7) == 7 and IdMap().to_outer(7) == 7
