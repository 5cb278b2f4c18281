"""Which storage driver rl uses: argument > RL_STORAGE_DRIVER (set by --storage-driver) >
config.yaml > auto, and what auto makes of the overlay probe."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rootless import storage
from rootless.errors import RlError
from rootless.storage.fuse import (
    FuseDriver,
    describe_death,
    mapping_option,
    mount_data,
    parse_id_map,
    shift_ranges,
)
from rootless.storage.overlay import (
    MAX_OPTIONS,
    OverlayDriver,
    link_lowers,
    mount_overlay,
    overlay_options,
)
from rootless.storage.probe import ProbeResult
from rootless.storage.vfs import BindRootfs, VfsDriver


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("storage_driver: overlay\n", "overlay"),
        ("storage_driver:vfs", "vfs"),
        ('storage_driver: "vfs"  # comment\n', "vfs"),
        ("storage_driver: 'fuse'\n", "fuse"),
        ("other: 1\nstorage_driver: overlay # why\nmore: 2\n", "overlay"),
        ("  storage_driver: overlay\n", None),  # nested under another key: not ours
        ("storage_driver:\n", None),
        ("# storage_driver: vfs\n", None),
        ("", None),
    ],
)
def test_config_key(text: str, expected: str | None) -> None:
    assert storage.config_storage_driver(text) == expected


def test_precedence() -> None:
    config = "storage_driver: vfs\n"
    env = {"RL_STORAGE_DRIVER": "overlay"}
    assert storage.requested_driver("fuse", env, config)[0] == "fuse"
    assert storage.requested_driver(None, env, config)[0] == "overlay"
    assert storage.requested_driver(None, {}, config) == ("vfs", "storage_driver in config.yaml")
    assert storage.requested_driver(None, {}, "") == ("auto", "default")
    assert storage.requested_driver("", {"RL_STORAGE_DRIVER": ""}, "")[0] == "auto"


def _probes(**answers: tuple[bool, str]) -> Callable[[str], ProbeResult]:
    asked: list[str] = []

    def probe(kind: str) -> ProbeResult:
        asked.append(kind)
        return ProbeResult(*answers[kind])

    probe.asked = asked  # type: ignore[attr-defined]
    return probe


def test_auto_follows_the_probes() -> None:
    overlay_ok = _probes(overlay=(True, ""))
    assert storage.choose_driver("auto", overlay_ok)[0] == "overlay"
    assert overlay_ok.asked == ["overlay"]  # type: ignore[attr-defined]  # fuse not probed
    name, reason = storage.choose_driver(
        "auto", _probes(overlay=(False, "mount: EPERM"), fuse=(True, ""))
    )
    assert name == "fuse" and "mount: EPERM" in reason and "fuseoverlay does" in reason
    name, reason = storage.choose_driver(
        "auto", _probes(overlay=(False, "mount: EPERM"), fuse=(False, "/dev/fuse is missing"))
    )
    assert name == "vfs" and "mount: EPERM" in reason and "/dev/fuse is missing" in reason
    never = _probes()
    assert storage.choose_driver("overlay", never)[0] == "overlay"  # explicit wins
    assert storage.choose_driver("vfs", never)[0] == "vfs"
    assert storage.choose_driver("fuse", never) == ("fuse", "chosen explicitly")
    assert never.asked == []  # type: ignore[attr-defined]


def test_unknown_names_are_errors() -> None:
    with pytest.raises(RlError) as info:
        storage.choose_driver("btrfs", _probes())
    assert info.value.message == (
        'unknown storage driver "btrfs": choose one of auto, overlay, fuse, vfs'
    )
    with pytest.raises(RlError, match="unknown storage driver"):
        storage.driver_by_name("zfs")


def test_select_driver_explicit_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("RL_STORAGE_DRIVER", raising=False)
    assert isinstance(storage.select_driver("vfs"), VfsDriver)
    assert isinstance(storage.select_driver("overlay"), OverlayDriver)
    assert isinstance(storage.select_driver("fuse"), FuseDriver)
    monkeypatch.setenv("RL_STORAGE_DRIVER", "vfs")
    assert isinstance(storage.select_driver(None), VfsDriver)
    monkeypatch.delenv("RL_STORAGE_DRIVER")
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "config.yaml").write_text("storage_driver: overlay\n")
    assert isinstance(storage.select_driver(None), OverlayDriver)
    assert storage.describe() == {
        "driver": "overlay",
        "reason": "chosen explicitly (storage_driver in config.yaml)",
    }
    (tmp_path / "rl" / "config.yaml").write_text("storage_driver: nope\n")
    with pytest.raises(RlError, match='unknown storage driver "nope"'):
        storage.select_driver(None)


def test_overlay_options() -> None:
    assert overlay_options(["l/0", "l/1"], "diff", "work") == (
        "lowerdir=l/0:l/1,upperdir=diff,workdir=work,userxattr"
    )
    assert overlay_options(["a", "b"], None, None) == "lowerdir=a:b,userxattr"


def test_lower_links_are_short_and_replaced(tmp_path: Path) -> None:
    layers = [tmp_path / "layers" / (f"{i:064x}") for i in range(200)]
    names = link_lowers(tmp_path, layers)
    assert names[0] == "l/0" and len(names) == 200
    assert os.readlink(tmp_path / "l" / "199") == str(layers[199])
    # 200 layers with short names stay far below one page; absolute paths would not.
    assert len(overlay_options(names, "diff", "work")) < MAX_OPTIONS
    assert len(overlay_options([str(p) for p in layers], "diff", "work")) > MAX_OPTIONS
    assert link_lowers(tmp_path, layers[:2]) == ("l/0", "l/1")
    assert sorted(os.listdir(tmp_path / "l")) == ["0", "1"]


def test_zero_layers_get_an_empty_lower(tmp_path: Path) -> None:
    assert link_lowers(tmp_path, []) == ("empty",)
    assert (tmp_path / "empty").is_dir() and not os.listdir(tmp_path / "empty")


def test_too_many_layers_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RlError, match="too many layers"):
        mount_overlay(tmp_path, ["x" * 100] * 100, "diff", "work", tmp_path)


def test_rootfs_provider_checks_the_path(tmp_path: Path) -> None:
    with pytest.raises(RlError, match="no such directory"):
        storage.rootfs_provider(str(tmp_path / "missing"), tmp_path / "c")
    (tmp_path / "sub").mkdir()
    provider = storage.rootfs_provider("sub", tmp_path / "c", cwd=str(tmp_path))
    assert isinstance(provider, BindRootfs) and provider.source == tmp_path / "sub"


# --- the fuse driver's pure parts ---------------------------------------------------------

STORE = [(0, 1001, 1), (1, 100000, 65536)]  # the default mapping of the test user


def test_same_mapping_needs_no_shift() -> None:
    assert shift_ranges(STORE, list(reversed(STORE))) == []


def test_keep_id_shift_shows_the_image_owners() -> None:
    # --userns=keep-id for uid 1001: 0..1000 -> subids, 1001 -> the user, 1002.. -> the rest.
    keep_id = parse_id_map("0 100000 1001\n1001 1001 1\n1002 101001 64535\n")
    ranges = shift_ranges(keep_id, STORE)
    # the image's root (store 0 = the user) is what the container calls 1001 ...
    assert (0, 1001, 1) in ranges
    # ... and the image's 1000 (host 100999) is the container's 999
    from fuseoverlay.options import IdMap

    ids = IdMap.parse(mapping_option(ranges))
    assert ids.to_outer(0) == 1001 and ids.to_outer(1000) == 999 and ids.to_outer(1) == 0
    assert ids.to_inner(1001) == 0 and ids.to_inner(999) == 1000
    assert sum(count for _, _, count in ranges) == 65537  # every store id stays reachable


def test_partial_overlap_is_cut_to_the_shared_ids() -> None:
    # a container mapping only part of the store's ids (e.g. --uidmap 0:0:1 --uidmap 1:1:10)
    assert shift_ranges([(0, 1001, 1), (1, 100000, 10)], STORE) == [(0, 0, 1), (1, 1, 10)]
    ranges = shift_ranges([(5, 1001, 1), (0, 100000, 5)], STORE)
    assert ranges == [(0, 5, 1), (1, 0, 5)]


def test_mount_data_and_deaths() -> None:
    data = mount_data(7, 0o40755)
    assert data.startswith("fd=7,rootmode=40755,user_id=0,group_id=0,")
    assert "default_permissions" in data.split(",") and "allow_other" in data.split(",")
    assert describe_death(-9, "") == "killed by SIGKILL"
    assert describe_death(1, "") == "exit status 1"
    assert describe_death(1, "boom") == "boom"
