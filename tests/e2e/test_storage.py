"""Storage drivers end to end, as the unprivileged user with real user and mount namespaces:
the overlay probe, an overlay root filesystem from 42 real layer dirs (whiteouts, opaque dirs,
owners, hard links, xattrs), the vfs copy giving the same view, and removal."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _remove as remove_tree
from tests.harness import User, installed_tool

pytestmark = pytest.mark.e2e


SCENARIOS = Path(__file__).with_name("storage_scenarios.py")


def _python(user: User, *args: str) -> Any:
    result = user.run_script(SCENARIOS, *args)
    assert result.returncode == 0, str(result)
    return json.loads(result.stdout)


def _subid_start(user: User, path: str) -> int:
    for line in Path(path).read_text().splitlines():
        name, start, _ = line.split(":")
        if name in (user.name, str(user.uid)):
            return int(start)
    raise AssertionError(f"{user.name} has no range in {path}")


@pytest.fixture(scope="module")
def scenario(user: User) -> Iterator[dict[str, Any]]:
    base = user.make_dir("rl-storage-")
    try:
        yield _python(user, str(base))
    finally:
        remove_tree(base)  # holds files of subordinate ids


def test_overlay_probe_works_here_and_is_cached(user: User, workdir: Path) -> None:
    code = (
        "import json\n"
        "from rootless.storage.probe import overlay_support\n"
        "from rootless.storage import describe\n"
        "fresh = overlay_support(refresh=True)\n"
        "cached = overlay_support()\n"
        "print(json.dumps([fresh.works, fresh.reason, cached.works, describe()]))\n"
    )
    cache = user.runtime_dir / "rl" / "storage-probe.json"
    cache.unlink(missing_ok=True)
    result = user.run(
        [installed_tool("python"), "-c", code], env={"RL_ROOT": str(workdir / "store")}
    )
    assert result.returncode == 0, str(result)
    works, reason, cached, described = json.loads(result.stdout)
    assert works is True, reason
    assert cached is True
    assert described == {
        "driver": "overlay",
        "reason": "kernel overlayfs works in a user namespace here",
    }
    # The answer is kept in runtime_dir (keyed by kernel and store), so rl run does not fork
    # a user namespace to probe again.
    assert json.loads(cache.read_text())["works"] is True
    assert sorted(p.name for p in (workdir / "store").iterdir()) == []  # probe cleaned up


def test_overlay_mount_needs_short_paths(scenario: dict[str, Any]) -> None:
    assert scenario["layers"] == 42
    # The absolute lower paths alone would not fit the kernel's one-page option limit.
    assert scenario["abs_options_len"] > 4096
    assert "many/f39" in scenario["overlay"]


def test_overlay_applies_whiteouts_and_opaque_dirs(scenario: dict[str, Any]) -> None:
    view = scenario["overlay"]
    assert "a/gone" not in view  # char 0:0 whiteout in a higher layer
    assert view["a/keep"] == ["-rw-r--r--", 0, 0, "keep"]
    assert "gonedir" not in view and "gonedir/f" not in view  # a whole dir whited out
    assert "opq/old" not in view  # hidden by the opaque dir above it
    assert view["opq/new"] == ["-rw-r--r--", 0, 0, "new"]
    assert view["etc/hostname"][-1] == "top"  # the upper layer's file wins
    assert "many/f0" not in view and view["many/f1"][-1] == "1"  # merged across 40 layers
    assert sorted(k for k in view if k.startswith("many/")) == sorted(
        f"many/f{i}" for i in range(1, 40)
    )


def test_overlay_keeps_owners_modes_links_xattrs(scenario: dict[str, Any]) -> None:
    view = scenario["overlay"]
    assert view["owned"] == ["-rw-r-----", 1000, 1000, "owned"]
    assert view["d0"] == ["drwx------", 33, 33]
    assert view["suid"] == ["-rwsr-xr-x", 0, 0, "suid"]
    assert view["link"] == ["lrwxrwxrwx", 7, 7, "a/keep"]
    assert view["withxattr"] == ["-rw-r--r--", 0, 0, "x", "value"]
    assert view["<h1 and h2 are one inode>"] is True
    assert view["."][:3] == ["drwxr-xr-x", 0, 0]


def test_overlay_changes_go_to_the_upper_dir(scenario: dict[str, Any]) -> None:
    upper = scenario["overlay_upper"]
    assert upper["a/keep"] == ["c---------", 0, 0]  # deleting a lower file = whiteout
    assert upper["written"][0] == "-rw-r--r--"
    assert "etc" not in upper  # untouched lower content is not copied up
    assert scenario["overlay_again"] == {"a/keep": None, "written": ["-rw-r--r--", 0, 0, "w"]}


def test_vfs_copy_gives_the_same_view(scenario: dict[str, Any]) -> None:
    overlay, vfs = scenario["overlay"], scenario["vfs"]
    assert vfs == overlay


def test_vfs_copy_keeps_ownership_on_the_host(scenario: dict[str, Any], user: User) -> None:
    start = _subid_start(user, "/etc/subuid")
    gstart = _subid_start(user, "/etc/subgid")
    # container 1000 -> the 1000th subordinate id (container 1 is the range's first id)
    assert scenario["vfs_host_owner_owned"] == [start + 999, gstart + 999]
    assert scenario["vfs_host_owner_d0"] == [start + 32, gstart + 32]


def test_image_without_layers_gets_an_empty_root(scenario: dict[str, Any]) -> None:
    assert scenario["empty"] == []


def test_rootfs_directory_with_overlay(scenario: dict[str, Any]) -> None:
    # `--rootfs DIR:O`: the directory as it is (its whiteouts are just entries), writable.
    assert scenario["rootfs_O"] == [
        "a", "d0", "etc", "gonedir", "h1", "h2", "link", "opq", "owned", "suid"
    ]  # fmt: skip


def test_remove_cleans_everything(scenario: dict[str, Any]) -> None:
    # Only the runtime's own mountpoint stays; upper, work, links and copies are gone.
    assert scenario["left_after_remove"] == {f"c{i}": ["rootfs"] for i in range(1, 5)}


@pytest.fixture(scope="module")
def real_image(user: User) -> Iterator[dict[str, Any]]:
    from tests.images import build_image, merged_tree, rich_busybox_spec

    base = user.make_dir("rl-storage-image-")
    spec = rich_busybox_spec()
    image = build_image(spec)
    for index, built in enumerate(image.layers):
        (base / f"blob{index}").write_bytes(built.blob)
        (base / f"blob{index}").chmod(0o644)
    (base / "diff_ids.json").write_text(json.dumps(image.diff_ids))
    (base / "diff_ids.json").chmod(0o644)
    tree = merged_tree(spec)
    expected = {}
    for path, entry in tree.items():
        target = tree[entry.target] if entry.kind == "hardlink" else entry
        expected[path] = [entry.kind, target.uid, target.gid, target.data.hex(), target.mode]
    try:
        yield {**_python(user, "image", str(base)), "expected": expected}
    finally:
        remove_tree(base)


def test_drivers_show_the_merged_image_the_spec_describes(real_image: dict[str, Any]) -> None:
    # Layers written by tests/images.py (whiteouts and opaque markers as .wh. tar members),
    # unpacked by the image store's unpacker, mounted by each driver.
    overlay, vfs, expected = real_image["overlay"], real_image["vfs"], real_image["expected"]
    assert set(overlay) == set(expected)
    assert "etc/to-be-deleted" not in overlay and "data/dir-to-be-deleted" not in overlay
    assert sorted(p for p in overlay if p.startswith("data/opaque/")) == ["data/opaque/new"]
    for path, (kind, uid, gid, data, mode) in expected.items():
        seen_mode, seen_uid, seen_gid, seen_data = overlay[path]
        assert (seen_uid, seen_gid) == (uid, gid), path
        if kind in ("file", "hardlink"):
            assert seen_data == data, path
            assert seen_mode == stat.filemode(stat.S_IFREG | mode), path
        elif kind == "dir":
            assert seen_mode == stat.filemode(stat.S_IFDIR | mode), path
    assert vfs == overlay
