"""`rl volume …` as the user, against podman 4.3's output shapes, messages and exit codes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import Rl
from tests.harness import User

pytestmark = pytest.mark.e2e


def test_create_prints_the_name_and_inspect_shows_podmans_fields(rl: Rl) -> None:
    assert rl.ok("volume", "create", "web", "--label", "a=b", "-l", "c").stdout == "web\n"
    [info] = json.loads(rl.ok("volume", "inspect", "web").stdout)
    assert list(info) == [
        "Name",
        "Driver",
        "Mountpoint",
        "CreatedAt",
        "Labels",
        "Scope",
        "Options",
        "MountCount",
        "NeedsCopyUp",
        "NeedsChown",
    ]
    assert info["Name"] == "web" and info["Driver"] == "local" and info["Scope"] == "local"
    assert info["Mountpoint"] == f"{rl.root}/volumes/web/_data"
    assert info["Labels"] == {"a": "b", "c": ""}
    assert info["Options"] == {} and info["MountCount"] == 0
    assert info["NeedsCopyUp"] is True and info["NeedsChown"] is True
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", info["CreatedAt"]
    )
    assert (rl.root / "volumes" / "web" / "_data").is_dir()


def test_create_without_a_name_makes_a_random_one(rl: Rl) -> None:
    name = rl.ok("volume", "create").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", name)
    assert rl("volume", "exists", name).returncode == 0


def test_create_errors(rl: Rl) -> None:
    rl.ok("volume", "create", "dup")
    again = rl("volume", "create", "dup")
    assert again.returncode == 125
    assert again.stderr == "Error: volume with name dup already exists: volume already exists\n"
    assert rl.ok("volume", "create", "--ignore", "dup").stdout == "dup\n"
    bad = rl("volume", "create", "bad!")
    assert bad.returncode == 125
    assert bad.stderr == (
        "Error: running volume create option: names must match "
        "[a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument\n"
    )
    assert rl("volume", "create", "--driver", "nfs", "x").returncode == 125
    opt = rl("volume", "create", "-o", "type=tmpfs", "x")
    assert opt.returncode == 125 and "not supported" in opt.stderr
    assert rl("volume", "exists", "x").returncode == 1  # nothing half-made


def test_ls_table_quiet_format_filter(rl: Rl) -> None:
    assert rl.ok("volume", "ls").stdout == ""  # podman prints nothing, not even a header
    rl.ok("volume", "create", "alpha", "--label", "tier=db")
    rl.ok("volume", "create", "beta")
    assert rl.ok("volume", "ls").stdout == (
        "DRIVER      VOLUME NAME\nlocal       alpha\nlocal       beta\n"
    )
    assert rl.ok("volume", "list", "-q").stdout == "alpha\nbeta\n"
    assert rl.ok("volume", "ls", "--noheading").stdout == "local       alpha\nlocal       beta\n"
    assert rl.ok("volume", "ls", "--format", "{{.Name}} {{.Labels}}").stdout == (
        "alpha map[tier:db]\nbeta map[]\n"  # maps as Go prints them, as podman does
    )
    listed = json.loads(rl.ok("volume", "ls", "--format", "json").stdout)
    assert [v["Name"] for v in listed] == ["alpha", "beta"]
    assert rl.ok("volume", "ls", "--filter", "label=tier=db", "-q").stdout == "alpha\n"
    assert rl.ok("volume", "ls", "--filter", "label=tier", "-q").stdout == "alpha\n"
    assert rl.ok("volume", "ls", "-f", "name=bet", "-q").stdout == "beta\n"
    assert rl.ok("volume", "ls", "-f", "name=alpha", "-f", "name=beta", "-q").stdout == (
        "alpha\nbeta\n"
    )
    assert rl.ok("volume", "ls", "-f", "dangling=true", "-q").stdout == "alpha\nbeta\n"
    bad = rl("volume", "ls", "--filter", "bogus=1")
    assert (bad.returncode, bad.stderr) == (125, 'Error: "bogus" is an invalid volume filter\n')


def test_inspect_format_all_and_missing(rl: Rl) -> None:
    rl.ok("volume", "create", "one")
    rl.ok("volume", "create", "two")
    assert rl.ok("volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "one").stdout == (
        "one local\n"
    )
    assert [v["Name"] for v in json.loads(rl.ok("volume", "inspect", "--all").stdout)] == [
        "one",
        "two",
    ]
    missing = rl("volume", "inspect", "nope")
    assert missing.returncode == 125
    assert missing.stdout == "[]\n"
    assert missing.stderr == "Error: inspecting object: no such volume nope\n"
    none = rl("volume", "inspect")
    assert (none.returncode, none.stderr) == (
        125,
        "Error: provide one or more volume names or use --all\n",
    )


def test_rm(rl: Rl) -> None:
    rl.ok("volume", "create", "a")
    rl.ok("volume", "create", "b")
    missing = rl("volume", "rm", "nope", "a")
    assert missing.returncode == 1
    assert missing.stdout == "a\n"
    assert missing.stderr == 'Error: no volume with name "nope" found: no such volume\n'
    assert rl("volume", "rm", "-f", "nope").returncode == 0
    usage = rl("volume", "rm")
    assert (usage.returncode, usage.stderr) == (
        125,
        "Error: choose either one or more volumes or all\n",
    )
    assert rl("volume", "rm", "-a", "b").returncode == 125
    assert rl.ok("volume", "rm", "--all").stdout == "b\n"
    assert rl.ok("volume", "ls", "-q").stdout == ""
    assert sorted(p.name for p in (rl.root / "volumes").iterdir()) == []


def _subid(user: User, path: str, container_id: int) -> int:
    for line in Path(path).read_text().splitlines():
        name, start, _ = line.split(":")
        if name in (user.name, str(user.uid)):
            return int(start) + container_id - 1
    raise AssertionError(f"no range for {user.name} in {path}")


def test_rm_removes_files_of_subordinate_ids(rl: Rl, user: User) -> None:
    # Files a container's uid 1000 wrote belong to a subordinate id on the host: the user
    # cannot delete them directly, only as root of its user namespace.
    if not user.as_root:
        pytest.skip("needs root to plant files owned by subordinate ids")
    rl.ok("volume", "create", "owned")
    data = rl.root / "volumes" / "owned" / "_data"
    sub = data / "deep" / "er"
    sub.mkdir(parents=True)
    (sub / "f").write_text("x")
    uid, gid = _subid(user, "/etc/subuid", 1000), _subid(user, "/etc/subgid", 1000)
    for p in (sub / "f", sub, data / "deep"):
        os.lchown(p, uid, gid)
    os.chmod(data / "deep", 0o500)
    assert rl.ok("volume", "rm", "owned").stdout == "owned\n"
    assert not (rl.root / "volumes" / "owned").exists()


def test_prune(rl: Rl) -> None:
    rl.ok("volume", "create", "p1")
    rl.ok("volume", "create", "p2", "--label", "keep=1")
    declined = rl("volume", "prune", input="n\n")
    assert declined.returncode == 0
    assert declined.stdout.startswith(
        "WARNING! This will remove all volumes not used by at least one container. "
        "The following volumes will be removed:\np1\np2\nAre you sure you want to continue? [y/N] "
    )
    assert rl.ok("volume", "ls", "-q").stdout == "p1\np2\n"
    assert rl.ok("volume", "prune", "-f", "--filter", "label=keep=1").stdout == "p2\n"
    accepted = rl("volume", "prune", input="y\n")
    assert accepted.returncode == 0 and accepted.stdout.endswith("[y/N] p1\n")
    assert rl.ok("volume", "ls", "-q").stdout == ""


def test_exists(rl: Rl) -> None:
    rl.ok("volume", "create", "here")
    assert rl("volume", "exists", "here").returncode == 0
    gone = rl("volume", "exists", "gone")
    assert (gone.returncode, gone.stdout, gone.stderr) == (1, "", "")
    assert rl("volume", "exists").returncode == 125
