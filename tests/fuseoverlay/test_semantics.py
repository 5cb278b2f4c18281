"""fuseoverlay against kernel overlayfs: the same scenarios (semantics.py) run as the unprivileged
user on both, in a user namespace, and must be seen the same way; then fuseoverlay again as the
plain user, without a namespace, where only ownership differs."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _remove as remove_tree
from tests.fuseoverlay.semantics import SCENARIOS
from tests.harness import User

pytestmark = pytest.mark.e2e

# What differs by design: kernel overlayfs (no index, no xino) reports different inode numbers
# for two links of a copied-up file; fuseoverlay keeps one inode. Which removed entries a
# directory reader still sees depends on buffering (both are allowed; none may be skipped or
# repeated), and with it how many were removed.
DIFFERENT_BY_DESIGN = {
    "hardlink": {"same inode"},
    "readdir": {"removed entries seen", "final count", "expected final count"},
}


def _run(user: User, kind: str, base: Path) -> dict[str, Any]:
    where = base / kind
    where.mkdir()
    if user.as_root:
        os.chown(where, user.uid, user.gid)
    try:
        result = user.run_script(
            Path(__file__).with_name("semantics.py"), kind, str(where), timeout=240
        )
    finally:
        # Never leave a mount behind, whatever happened.
        for merged in where.glob("*/merged"):
            user.run(["fusermount3", "-u", "-z", str(merged)], timeout=30)
    assert result.returncode == 0, str(result)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def seen(user: User) -> Iterator[dict[str, dict[str, Any]]]:
    base = user.make_dir("rl-fuseoverlay-")
    try:
        yield {kind: _run(user, kind, base) for kind in ("kernel", "fuse", "fuse-plain")}
    finally:
        remove_tree(base)


def _comparable(scenario: str, observed: dict[str, Any]) -> dict[str, Any]:
    skip = DIFFERENT_BY_DESIGN.get(scenario, set())
    return {k: v for k, v in observed.items() if k not in skip}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_fuseoverlay_matches_kernel_overlayfs(
    seen: dict[str, dict[str, Any]], scenario: str
) -> None:
    kernel, fuse = seen["kernel"][scenario], seen["fuse"][scenario]
    assert "error" not in kernel, kernel
    assert _comparable(scenario, fuse) == _comparable(scenario, kernel)


def _as_container_root(value: Any, uid: int, gid: int) -> Any:
    """The plain user's files are its own: show them as 0:0, what root of the namespace sees."""
    text = json.dumps(value)
    text = re.sub(rf"\b{uid}:{gid}\b", "0:0", text)
    return json.loads(text)


# Not comparable as a plain user: ownership is the user's own (owner, chmod, deep), and without
# the namespace's CAP_DAC_OVERRIDE a directory chmod'ed 0600 is closed to its owner (random).
PLAIN_USER_DIFFERS = {"owner", "chmod", "deep", "random"}


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - PLAIN_USER_DIFFERS))
def test_fuseoverlay_as_plain_user_matches(
    seen: dict[str, dict[str, Any]], scenario: str, user: User
) -> None:
    kernel, plain = seen["kernel"][scenario], seen["fuse-plain"][scenario]
    assert _as_container_root(_comparable(scenario, plain), user.uid, user.gid) == _comparable(
        scenario, kernel
    )


def test_plain_user_cannot_give_files_away(seen: dict[str, dict[str, Any]], user: User) -> None:
    plain = seen["fuse-plain"]["chmod"]
    assert plain["chown"] == "EPERM"
    assert plain["f"] == seen["kernel"]["chmod"]["f"]
    assert plain["owned"] == ["0o100640", user.uid, user.gid]


def test_the_scenarios_see_overlay_semantics(seen: dict[str, dict[str, Any]]) -> None:
    """What both must show, so that agreeing on something wrong fails too."""
    for kind in ("kernel", "fuse"):
        s = seen[kind]
        assert s["rename"]["rename lower dir"] == "EXDEV"
        assert s["rename"]["mv lower dir"] == 0
        assert s["rename"]["tree"]["moved/sub/b"].endswith("b'b'")
        assert s["rename"]["upper"]["dir"] == "whiteout"
        assert s["hardlink"]["nlink"] == [2, 2]
        assert s["hardlink"]["f after write to g"] == "lower+through g"
        assert s["whiteout"]["after unlink"] == [] and s["whiteout"]["recreated"] == "new"
        assert s["opaque"]["listing of new d"] == [] and s["opaque"]["upper"]["d"] == "opaque dir"
        assert s["readdir"]["duplicates"] == 0 and s["readdir"]["stable entries missed"] == []
        assert s["readdir"]["final count"] == s["readdir"]["expected final count"]
        assert s["xattr"]["after rename"] == {"user.added": "added", "user.lower": "from lower"}
        assert s["chmod"]["g"] == ["0o100755", 1000, 1000, 1000000000]  # chown drops setuid
        assert s["chmod"]["lower untouched"] == "0o100644"
        assert s["truncate"]["f grown"] == [20000, True, True]
        assert s["truncate"]["h appended"] == "new+more"
        assert s["truncate"]["h rewritten"] == "x"
        assert s["truncate"]["suid after write"] == "0o100755"
        assert s["truncate"]["suid after truncate"] == "0o100755"
        assert s["sparse"]["sparse after copy-up"] is True
        assert s["sparse"]["beyond 4 GiB"] == [5 * 2**30 + 3, "far"]
        assert s["open_before"] == {"first": "old", "after copy-up": "NEW content"}
        assert s["kinds"]["mmap"] == "hello" and s["kinds"]["inode stable across copy-up"]
        assert s["owner"]["owners"]["theirs"] == [1000, 1000]
        assert s["owner"]["setgid dir"] == {
            "file": "-rw-r--r-- 1000:2000 b''",
            "sub": "drwxr-sr-x 1000:2000",
        }
        assert s["kinds"]["tree"]["dir-open-to-all"] == "drwxrwxrwx 0:0"
        assert s["deep"]["a/b"] == ["0o40750", True]  # copied-up parents keep mode and times
        assert s["deep"]["tree"]["a/b"] == "drwxr-x--- 1000:1000"
        before = s["layers"]["before"]
        assert "gone" not in before and "d/from-3" not in before and "d/from-5" in before
        assert [p for p in before if p.startswith("d/sub/")] == ["d/sub/deep-12"]
        assert s["layers"]["upper"]["d/from-5"] == "whiteout"
        exchange = s["exchange"]
        assert exchange["lower files"] == exchange["upper dir and file"] == "ok"
        assert exchange["lower dir"] == exchange["lower dir and upper dir"] == "EXDEV"
        assert exchange["inodes follow"] == [True, True] and exchange["xattr followed"] == "a"
        assert exchange["tree"]["b"].endswith("b'A'") and exchange["tree"]["other/o"].endswith(
            "b'B'"
        )
        assert exchange["upper"]["other/sub"] == "opaque dir"
    assert seen["fuse"]["hardlink"]["same inode"] is True
    outcomes = [r.rsplit(": ", 1)[1] for r in seen["kernel"]["random"]["results"]]
    assert outcomes.count("ok") > 100 and len(set(outcomes)) > 5  # the sequence does things
