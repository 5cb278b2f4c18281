"""The pure parts of the executor: mount options, in-root path resolution, cgroup v1 binds,
namespace plans, spec validation, exit codes, PATH lookup."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from rootless import syscalls as sc
from rootless.errors import RlError
from rootless.runtime import mounts, process
from rootless.runtime.executor import mapping_from_spec, plan_launch
from rootless.runtime.init import exit_code
from rootless.runtime.namespaces import plan_namespaces
from rootless.userns import IdRange


def test_parse_options_splits_flags_propagation_and_data() -> None:
    opts = mounts.parse_options(
        ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k", "rprivate", "z"]
    )
    assert opts.flags == sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_STRICTATIME
    assert opts.propagation == (sc.MS_PRIVATE | sc.MS_REC,)
    assert opts.data == "mode=755,size=65536k"
    assert not opts.bind


def test_parse_options_bind_and_clearing_flags() -> None:
    opts = mounts.parse_options(["rbind", "ro", "rw", "nodev"])
    assert opts.bind
    assert opts.flags == sc.MS_BIND | sc.MS_REC | sc.MS_NODEV
    assert opts.remount_flags == sc.MS_NODEV
    assert mounts.parse_options(["bind", "ro"]).remount_flags == sc.MS_RDONLY
    assert mounts.parse_options(["tmpcopyup"]).tmpcopyup


def test_resolve_in_root_keeps_symlinks_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real" / "dir").mkdir(parents=True)
    (root / "abs").symlink_to("/real")
    (root / "escape").symlink_to("../../../../etc")
    (root / "real" / "up").symlink_to("../real/dir")
    r = str(root)
    assert mounts.resolve_in_root(r, "/abs/dir") == f"{r}/real/dir"
    assert mounts.resolve_in_root(r, "/escape/passwd") == f"{r}/etc/passwd"
    assert mounts.resolve_in_root(r, "/real/up/x/y") == f"{r}/real/dir/x/y"
    assert mounts.resolve_in_root(r, "/../../etc") == f"{r}/etc"
    assert mounts.resolve_in_root(r, "/") == f"{r}/"


def test_resolve_in_root_detects_loops(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError):
        mounts.resolve_in_root(str(tmp_path), "/a/x")


HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PROC_CGROUP = """\
9:name=systemd:/user.slice/u
4:memory:/process_api/abc
1:cpu,cpuacct:/
0::/user.slice/u
"""


def test_cgroup_v1_binds_use_our_own_cgroup() -> None:
    binds = mounts.cgroup_v1_binds(HYBRID_MOUNTINFO, PROC_CGROUP)
    assert binds == [
        ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
        ("memory", "/sys/fs/cgroup/memory/process_api/abc"),
        ("systemd", "/sys/fs/cgroup/systemd/user.slice/u"),  # xattr: an option, not a controller
    ]


def test_cgroup_v2_host_has_no_v1_binds() -> None:
    v2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert mounts.cgroup_v1_binds(v2, "0::/user.slice\n") is None


def test_plan_namespaces() -> None:
    plan = plan_namespaces(
        [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}, {"type": "user"}]
    )
    assert plan.unshare == sc.CLONE_NEWNS | sc.CLONE_NEWPID
    assert plan.join == ((sc.CLONE_NEWNET, "/run/netns/x"),)
    assert plan.user_path is None
    assert not plan.owns(sc.CLONE_NEWNET)
    with pytest.raises(ValueError):
        plan_namespaces([{"type": "bogus"}])


def _spec(**process: Any) -> dict[str, Any]:
    return {
        "process": {"args": ["true"], "cwd": "/", **process},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}]},
    }


def test_plan_launch_translates_the_spec(tmp_path: Path) -> None:
    plan = plan_launch(
        _spec(
            capabilities={"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]},
            rlimits=[{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}],
            user={"uid": 5, "gid": 6, "additionalGids": [7], "umask": 18},
            consoleSize={"height": 24, "width": 80},
        ),
        base_dir=tmp_path,
    )
    assert plan.root == os.path.realpath(tmp_path / "rootfs")
    caps = plan.process.capabilities
    assert caps.bounding == (1 << 5) | 1
    assert caps.effective == 1 << 5
    assert plan.process.rlimits[0][1:] == (10, 20, "RLIMIT_NOFILE")
    assert (plan.process.uid, plan.process.gid, plan.process.additional_gids) == (5, 6, (7,))
    assert plan.process.umask == 18
    assert plan.console_size is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]},
        {"capabilities": {"bounding": ["CAP_NOT_A_CAP"]}},
    ],
)
def test_plan_launch_rejects_bad_specs(bad: dict[str, Any]) -> None:
    with pytest.raises(RlError):
        plan_launch(_spec(**bad))


def test_plan_launch_needs_a_process() -> None:
    with pytest.raises(RlError, match="invalid OCI runtime spec"):
        plan_launch({"root": {"path": "/"}})


def test_mapping_from_spec() -> None:
    spec = {
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        }
    }
    mapping = mapping_from_spec(spec)
    assert mapping is not None and mapping.uids == (IdRange(0, 1000, 1),)
    assert mapping_from_spec({"linux": {}}) is None


def test_exit_code() -> None:
    assert exit_code(42 << 8) == 42
    assert exit_code(signal.SIGKILL) == 137
    assert exit_code(signal.SIGTERM) == 143


def test_find_executable(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "data").write_text("")
    env = {"PATH": f"/nonexistent:{tmp_path}"}
    assert process.find_executable("tool", env) == str(tool)
    assert process.find_executable("/abs/path", env) == "/abs/path"
    with pytest.raises(process.ExecFailure) as failure:
        process.find_executable("data", env)
    assert failure.value.code == 127
    assert "executable file `data` not found in $PATH" in str(failure.value)


def test_home_of(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    assert process.home_of(1000, str(passwd)) == "/home/app"
    assert process.home_of(7, str(passwd)) == "/"
    assert process.home_of(0, str(tmp_path / "missing")) == "/"


def test_seccomp_program_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rootless.runtime import executor
    from rootless.runtime.seccomp import compile_filter

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    section = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
    first = executor._compile_seccomp(section)
    assert first == compile_filter(section)
    (entry,) = (tmp_path / "rl" / "seccomp").iterdir()
    assert executor._compile_seccomp(section) == first  # served from the cache
    # An entry whose JSON is not exactly the section's is never trusted.
    stored = entry.read_bytes()
    entry.write_bytes(stored.replace(b"ALLOW", b"ALLOX", 1)[: stored.index(b"\0")] + b"\0bogus")
    assert executor._compile_seccomp(section) == first
