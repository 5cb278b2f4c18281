"""resolve_mounts end to end, as the user: named and anonymous volumes created on first use
with the image's content copied in (owners kept, done in the user namespace), nocopy, U, O,
tmpfs, and podman 4.3's refusal of a missing host path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _remove as remove_tree
from tests.harness import User

pytestmark = pytest.mark.e2e
VOLUME_OPTIONS = ["rw", "rprivate", "nosuid", "nodev", "rbind"]


@pytest.fixture(scope="module")
def outcome(user: User) -> Iterator[tuple[Path, dict[str, Any]]]:
    base = user.make_dir("rl-volmounts-")
    try:
        result = user.run_script(
            Path(__file__).with_name("storage_scenarios.py"), "volumes", str(base)
        )
        assert result.returncode == 0, str(result)
        yield base, json.loads(result.stdout)
    finally:
        remove_tree(base)  # holds files of subordinate ids


def test_mount_dicts_in_podmans_shape(outcome: tuple[Path, dict[str, Any]]) -> None:
    base, out = outcome
    mounts = out["mounts"]
    store = base / "store" / "volumes"
    assert mounts[0] == {
        "destination": "/d0",
        "type": "bind",
        "source": str(store / "data" / "_data"),
        "options": VOLUME_OPTIONS,
    }
    anonymous = out["anonymous"]
    assert len(anonymous) == 1 and len(anonymous[0]) == 64
    assert mounts[1]["source"] == str(store / anonymous[0] / "_data")
    assert mounts[4] == {
        "destination": "/x",
        "type": "bind",
        "source": str(base / "host"),
        "options": ["rw", "rprivate", "rbind"],
    }
    assert mounts[5] == {
        "destination": "/t",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["size=1m", "rw", "rprivate", "nosuid", "nodev", "tmpcopyup"],
    }
    overlay = mounts[6]
    assert overlay["type"] == "overlay" and overlay["destination"] == "/y"
    assert overlay["options"][0] == f"lowerdir={base / 'host'}"
    assert overlay["options"][-2:] == ["private", "userxattr"]
    upper = overlay["options"][1].removeprefix("upperdir=")
    assert Path(upper).is_dir() and upper.startswith(str(base / "c"))


def test_copy_up_keeps_owner_and_mode(outcome: tuple[Path, dict[str, Any]]) -> None:
    trees = outcome[1]["trees"]
    # /d0 in the image: a 0700 dir of uid 33 holding x; the volume root takes its attributes.
    assert trees["data"] == {".": ["drwx------", 33, 33], "x": ["-rw-r--r--", 33, 33]}
    # /a with a/gone whited out in a higher layer: only keep is copied.
    assert trees["anon"] == {".": ["drwxr-xr-x", 0, 0], "keep": ["-rw-r--r--", 0, 0]}


def test_no_image_content_or_nocopy_chowns_to_the_user(
    outcome: tuple[Path, dict[str, Any]],
) -> None:
    out = outcome[1]
    assert out["trees"]["nothing"] == {".": ["drwxr-xr-x", 1000, 1000]}
    assert out["trees"]["nc"] == {".": ["drwxr-xr-x", 1000, 1000]}
    # podman keeps NeedsCopyUp while nothing was copied; NeedsChown is done on first use.
    assert out["inspect"]["nc"].get("NeedsCopyUp") is True
    assert out["inspect"]["nothing"].get("NeedsCopyUp") is True
    assert "NeedsCopyUp" not in out["inspect"]["data"]
    assert not any("NeedsChown" in v for v in out["inspect"].values())


def test_U_chowns_the_host_dir_recursively(outcome: tuple[Path, dict[str, Any]]) -> None:
    assert outcome[1]["trees"]["host"] == {
        ".": ["drwxr-xr-x", 1000, 1000],
        "sub": ["drwxr-xr-x", 1000, 1000],
        "sub/file": ["-rw-r--r--", 1000, 1000],
    }


def test_second_use_does_not_copy_again(outcome: tuple[Path, dict[str, Any]]) -> None:
    assert outcome[1]["data_again"] == [".", "added", "x"]


def test_missing_host_path_is_refused_like_podman(outcome: tuple[Path, dict[str, Any]]) -> None:
    base, out = outcome
    # podman 4.3: "Error: statfs /tmp/doesnotexist: no such file or directory", exit 125,
    # and the directory is not created.
    assert out["missing"] == [f"statfs {base}/missing: no such file or directory", 125, False]
    assert out["half_made"] is False  # the volume before the bad flag was not created


def test_sources_map_back_to_volume_names(outcome: tuple[Path, dict[str, Any]]) -> None:
    out = outcome[1]
    assert out["names_of"] == ["data", out["anonymous"][0], "nothing", "nc", None, None, None]
