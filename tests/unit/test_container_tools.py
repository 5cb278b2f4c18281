"""The pure parts of exec, top, cp, diff and commit: planning, placement, formats, changes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from rootless.containers import archive, changes, top
from rootless.errors import RlError
from rootless.images.commit import commit_config
from rootless.runtime import join

# --- diff / commit: scanning an upper dir ------------------------------------------------


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A lower layer and an upper dir that adds, changes, deletes and makes a dir opaque."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in ("etc", "data/opaque", "home/u"):
        (lower / d).mkdir(parents=True)
    (lower / "etc/motd").write_text("hi\n")
    (lower / "etc/passwd").write_text("root\n")
    (lower / "data/opaque/old").write_text("old\n")
    (lower / "home/u/f").write_text("f\n")
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc/motd", stat.S_IFCHR | 0o000, 0)  # a whiteout
    (upper / "etc/hosts").write_text("")  # a runtime mount point
    (upper / "etc/new").write_text("new\n")
    (upper / "data/opaque").mkdir(parents=True)
    os.setxattr(upper / "data/opaque", "user.overlay.opaque", b"y")
    (upper / "data/opaque/fresh").write_text("fresh\n")
    (upper / "home/u").mkdir(parents=True)
    (upper / "home/u/f").write_text("changed\n")
    os.chown(upper / "home/u/f", 1000, 1000)
    return lower, upper


def test_scan_upper_classifies_like_podman(tmp_path: Path) -> None:
    lower, upper = _tree(tmp_path)
    scan = changes.scan_upper(str(upper), [str(lower)])
    shown = {(c.kind, c.path) for c in changes.visible(scan.changes)}
    assert shown == {
        ("C", "/etc"),
        ("D", "/etc/motd"),
        ("A", "/etc/new"),
        ("C", "/data"),
        ("C", "/data/opaque"),
        ("D", "/data/opaque/old"),
        ("A", "/data/opaque/fresh"),
        ("C", "/home"),
        ("C", "/home/u"),
        ("C", "/home/u/f"),
    }
    assert scan.opaque_dirs == ["/data/opaque"]
    assert ("A", "/etc/hosts") in {(c.kind, c.path) for c in scan.changes}  # hidden by visible()


def test_layer_tar_has_whiteouts_opaque_markers_and_owners(tmp_path: Path) -> None:
    lower, upper = _tree(tmp_path)
    scan = changes.scan_upper(str(upper), [str(lower)])
    out = tmp_path / "layer.tar"
    layer = changes.write_layer(str(upper), scan, str(out))
    import hashlib

    assert layer.diff_id == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "etc/.wh.motd" in members
    assert "data/opaque/.wh..wh..opq" in members
    assert "data/opaque/.wh.old" not in members  # the opaque marker covers it
    assert "etc/hosts" not in members  # an empty runtime mount point
    assert members["home/u/f"].uid == 1000 and members["home/u/f"].size == len("changed\n")
    assert list(members).index("data/opaque") < list(members).index("data/opaque/.wh..wh..opq")


def test_scan_copy_compares_with_the_image(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/keep").write_text("same\n")
    (lower / "etc/gone").write_text("x\n")
    (lower / "etc/edit").write_text("a\n")
    copy = tmp_path / "copy"
    (copy / "etc").mkdir(parents=True)
    for name in ("keep", "edit"):
        src, dst = lower / "etc" / name, copy / "etc" / name
        dst.write_bytes(src.read_bytes())
        st = src.stat()
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    (copy / "etc/edit").write_text("ab\n")
    (copy / "new").write_text("n\n")
    found = {(c.kind, c.path) for c in changes.scan_copy(str(copy), [str(lower)]).changes}
    assert found == {("C", "/etc/edit"), ("D", "/etc/gone"), ("A", "/new"), ("C", "/etc")}


def test_commit_config_follows_podman() -> None:
    image: dict[str, Any] = {
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"a": "1"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:x"]},
        "history": [{"created_by": "ADD"}],
        "author": "orig",
    }
    run = {"entrypoint": None, "command": ["sleep", "1"], "user": "tester", "labels": {"b": "2"}}
    process = {"env": ["PATH=/bin", "HOME=/root", "HOSTNAME=abc", "X=1"], "cwd": "/w"}
    config = commit_config(
        image,
        run,
        process,
        created="2026-01-01T00:00:00Z",
        image_name="localhost/img:latest",
        changes=["ENV Y=2"],
    )
    assert "rootfs" not in config
    settings = config["config"]
    assert settings["Env"] == ["PATH=/bin", "X=1", "Y=2"]
    assert settings["Cmd"] == ["sleep", "1"]
    assert settings["User"] == "tester" and settings["WorkingDir"] == "/w"
    assert settings["Labels"] == {"a": "1", "b": "2"}
    assert config["history"][-1] == {
        "created": "2026-01-01T00:00:00Z",
        "created_by": "/bin/sh",
        "author": "orig",
        "comment": "FROM localhost/img:latest",
    }
    assert image["config"]["Cmd"] == ["sh"]  # the input is left alone


# --- cp ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("ctr:/etc/passwd", ("ctr", "/etc/passwd")),
        ("ctr:", ("ctr", "/")),
        ("/host/a:b", (None, "/host/a:b")),
        ("./rel:x", (None, "./rel:x")),
        ("plain", (None, "plain")),
        ("-", (None, "-")),
    ],
)
def test_parse_location(arg: str, expected: tuple[str | None, str]) -> None:
    assert archive.parse_location(arg) == expected


def test_plan_placement_follows_docker_cp() -> None:
    place = archive.plan_placement
    assert place(False, False, "dir", "/tmp", "f") == ("/tmp", "f")
    assert place(False, False, "file", "/tmp/g", "f") == ("/tmp", "g")
    assert place(False, False, None, "/tmp/g", "f") == ("/tmp", "g")
    assert place(True, False, None, "/new", "d") == ("/", "new")
    assert place(True, False, "dir", "/dst", "d") == ("/dst", "d")
    assert place(True, True, "dir", "/dst", "d") == ("/dst", None)
    with pytest.raises(RlError, match="cannot copy a directory"):
        place(True, False, "file", "/f", "d")
    with pytest.raises(RlError, match="no such directory"):
        place(False, False, None, "/missing/", "f")


def test_copy_between_host_trees_keeps_metadata_and_stays_in_root(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/file").write_text("data\n")
    os.chmod(src / "sub/file", 0o640)
    os.chown(src / "sub/file", 1000, 2000)
    os.link(src / "sub/file", src / "sub/hard")
    os.symlink("/etc/passwd", src / "sub/link")
    root = tmp_path / "root"
    (root / "dst").mkdir(parents=True)
    os.symlink("/", root / "escape")  # inside the root, "/" is the root itself
    request = archive.CopyRequest(
        archive.Location("/", str(src), "src"),
        archive.Location(str(root), "/escape/dst", "dst"),
        contents_only=False,
    )
    archive.copy(request)
    copied = root / "dst" / "src" / "sub"
    st = (copied / "file").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o640)
    assert (copied / "hard").stat().st_ino == st.st_ino
    assert os.readlink(copied / "link") == "/etc/passwd"


def test_tar_stream_refuses_climbing_entries(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("../outside"), io.BytesIO(b""))
    buffer.seek(0)
    writer = archive.Writer(archive.Location(str(tmp_path), "/", "x"), "/", None, True)
    try:
        with pytest.raises(RlError, match="climbs out"):
            for member in archive.read_tar(buffer):
                writer.add(member)
    finally:
        writer.close()
    assert not (tmp_path.parent / "outside").exists()


# --- top --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0105, "10.5ms"),
        (1.039666908, "1.039666908s"),
        (61, "1m1s"),
        (3723.5, "1h2m3.5s"),
        (0.000002, "2µs"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert top.go_duration(seconds) == text


def test_descriptors_and_layout() -> None:
    assert top.parse_descriptors([]) == list(top.DEFAULT_DESCRIPTORS)
    assert top.parse_descriptors(["%p,%U", "huser"]) == ["pid", "user", "huser"]
    with pytest.raises(RlError, match="unknown descriptor"):
        top.parse_descriptors(["bogus"])
    text = top.render(["USER", "PID", "COMMAND"], [["root", "1", "sleep 1000 "]])
    assert text == "USER        PID         COMMAND\nroot        1           sleep 1000 \n"


def test_id_map_inside() -> None:
    ids = top.parse_id_map("         0       1001          1\n         1     100000      65536\n")
    assert ids.inside(1001) == 0
    assert ids.inside(100999) == 1000
    assert ids.inside(5) is None
    assert top.names_by_id("root:x:0:0::/root:/bin/sh\ntester:x:1000:1000::/:/bin/sh\n") == {
        0: "root",
        1000: "tester",
    }


# --- exec -------------------------------------------------------------------------------


def _spec() -> dict[str, Any]:
    caps = ["CAP_CHOWN", "CAP_KILL"]
    return {
        "root": {"path": "/"},
        "process": {
            "args": ["sleep", "1"],
            "env": ["PATH=/bin", "HOME=/root", "HOSTNAME=abc"],
            "cwd": "/data",
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": True,
        },
    }


def test_exec_plan_takes_the_container_settings() -> None:
    options = join.ExecOptions(args=("sh",), env={"X": "1"})
    plan = join.plan_exec_process(_spec(), options, passwd_text=None, group_text=None)
    assert plan.args == ("sh",)
    assert plan.env == ("PATH=/bin", "HOME=/root", "X=1")
    assert plan.cwd == "/data" and plan.uid == 0 and plan.no_new_privileges
    assert plan.capabilities.effective == 0b100001  # CHOWN (0) and KILL (5)


def test_exec_plan_for_another_user_and_privileged() -> None:
    passwd = "root:x:0:0::/root:/bin/sh\ntester:x:1000:1000::/home/tester:/bin/sh\n"
    options = join.ExecOptions(args=("id",), env={}, user="tester", workdir="/tmp")
    plan = join.plan_exec_process(_spec(), options, passwd_text=passwd, group_text="")
    assert (plan.uid, plan.gid, plan.cwd) == (1000, 1000, "/tmp")
    assert "HOME=/home/tester" in plan.env
    assert plan.capabilities.effective == 0 and plan.capabilities.bounding == 0b100001
    privileged = join.plan_exec_process(
        _spec(), options._replace(user=None, privileged=True), passwd_text=None, group_text=None
    )
    assert privileged.capabilities.effective == (1 << (privileged.cap_last + 1)) - 1
    with pytest.raises(RlError, match="unable to find user"):
        join.plan_exec_process(
            _spec(), options._replace(user="nobody"), passwd_text=passwd, group_text=""
        )


def test_top_reads_the_containers_own_cgroup(tmp_path: Path) -> None:
    from rootless.containers.top import cgroup_pids, own_cgroup

    text = "12:pids:/x\n0::/user.slice/user-1000.slice/rl-" + "a" * 64 + "\n"
    assert own_cgroup(text) == "/user.slice/user-1000.slice/rl-" + "a" * 64
    assert own_cgroup("0::/user.slice/rl-supervisor\n") is None
    assert own_cgroup("0::/\n") is None
    (tmp_path / "sub").mkdir()
    (tmp_path / "cgroup.procs").write_text("7\n9\n")
    (tmp_path / "sub" / "cgroup.procs").write_text("11\n")
    assert sorted(cgroup_pids(str(tmp_path))) == [7, 9, 11]
