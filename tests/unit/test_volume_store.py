"""The named-volume store on a plain directory: create, find, list, save, remove."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.volumes import Volume, VolumeStore, rfc3339_nano


def test_create_find_list(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    vol = store.create("db", {"tier": "data"})
    assert vol.mountpoint == tmp_path / "volumes" / "db" / "_data"
    assert vol.mountpoint.is_dir()
    assert store.get("db").labels == {"tier": "data"}
    random = store.create()
    assert len(random.name) == 64 and int(random.name, 16) >= 0
    assert [v.name for v in store.list()] == sorted(["db", random.name])
    assert store.find("nope") is None and store.find("../x") is None
    assert not [p for p in os.listdir(tmp_path / "volumes") if p.startswith(".")]


def test_create_refuses_duplicates_and_bad_names(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    store.create("db")
    with pytest.raises(RlError, match="volume with name db already exists"):
        store.create("db")
    assert store.create("db", ignore_existing=True).name == "db"
    for bad in ("-x", ".hidden", "a/b", "a b", "_x"):
        with pytest.raises(RlError, match="names must match"):
            store.create(bad)


def test_save_and_first_use_flags(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    vol = store.create("v")
    assert (vol.needs_copy_up, vol.needs_chown) == (True, True)
    vol.needs_copy_up = vol.needs_chown = False
    store.save(vol)
    again = store.get("v")
    assert (again.needs_copy_up, again.needs_chown) == (False, False)
    assert "NeedsCopyUp" not in again.inspect() and "NeedsChown" not in again.inspect()
    meta = json.loads((tmp_path / "volumes" / "v" / "volume.json").read_text())
    assert meta["name"] == "v"


def test_remove_and_in_use(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path, users_of=lambda name: ["web"] if name == "busy" else [])
    store.create("busy")
    store.create("idle")
    (store.get("idle").mountpoint / "f").write_text("x")
    store.remove("idle")
    assert not store.exists("idle")
    assert os.listdir(tmp_path / "volumes") == ["busy"]
    with pytest.raises(RlError) as info:
        store.remove("busy")
    assert info.value.message == (
        "volume busy is being used by the following container(s): web: volume is being used"
    )
    with pytest.raises(RlError, match='no volume with name "gone" found: no such volume'):
        store.remove("gone")


def test_name_of_maps_sources_back(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    vol = store.create("v")
    assert store.name_of(vol.mountpoint) == "v"
    assert store.name_of(tmp_path / "elsewhere" / "_data") is None
    assert store.name_of("/tmp") is None


def test_inspect_shape() -> None:
    vol = Volume("v", Path("/s/volumes/v/_data"), 0.0, {"a": "b"})
    assert list(vol.inspect()) == [
        "Name", "Driver", "Mountpoint", "CreatedAt", "Labels", "Scope", "Options",
        "MountCount", "NeedsCopyUp", "NeedsChown",
    ]  # fmt: skip


def test_rfc3339_nano(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert rfc3339_nano(1_700_000_000.5) == "2023-11-14T22:13:20.5Z"
        assert rfc3339_nano(1_700_000_000) == "2023-11-14T22:13:20Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
