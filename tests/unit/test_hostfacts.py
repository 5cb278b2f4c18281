"""The parsers behind `rl doctor` and `rl info`, and the probes run for real on this host."""

from __future__ import annotations

import os
import struct

import pytest

from rootless import hostfacts
from rootless.hostfacts import (
    all_subid_ranges,
    cgroup_version,
    file_caps_grant,
    kernel_version,
    next_free_subid,
    own_v2_cgroup,
    parse_cgroup_mounts,
    parse_os_release,
)

# Trimmed from this project's hybrid CI hosts and from a cgroup v2 systemd host.
HYBRID_MOUNTINFO = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
31 29 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
34 29 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
"""
V2_MOUNTINFO = """\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_cgroup_layouts() -> None:
    v2, v1 = parse_cgroup_mounts(HYBRID_MOUNTINFO)
    assert v2 == "/sys/fs/cgroup/unified"
    assert v1 == ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/memory"]
    assert cgroup_version(v2, v1) == "hybrid"
    assert cgroup_version(*parse_cgroup_mounts(V2_MOUNTINFO)) == "v2"
    assert cgroup_version("", ["/sys/fs/cgroup/memory"]) == "v1"
    assert cgroup_version(*parse_cgroup_mounts("garbage\n")) == "none"


def test_own_cgroup() -> None:
    text = "9:name=systemd:/\n4:memory:/x\n0::/user.slice/user-1000.slice/session-3.scope\n"
    assert own_v2_cgroup(text) == "/user.slice/user-1000.slice/session-3.scope"
    assert own_v2_cgroup("4:memory:/x\n") == ""


def test_kernel_version() -> None:
    assert kernel_version("6.18.44-fc-v657") == (6, 18, 44)
    assert kernel_version("5.10.0-26-amd64") == (5, 10, 0)
    assert kernel_version("6.8") == (6, 8, 0)
    assert kernel_version("4.19.0+") == (4, 19, 0)


def test_os_release() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n# x\n'
    release = parse_os_release(text)
    assert release["ID"] == "debian"
    assert release["VERSION_ID"] == "12"
    assert release["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


def test_a_new_range_starts_after_every_existing_one() -> None:
    text = "alice:100000:65536\nbob:165536:65536\n# comment\nbroken line\ncarol:x:1\n"
    assert all_subid_ranges(text) == [(100000, 65536), (165536, 65536)]
    assert next_free_subid(all_subid_ranges(text)) == 231072
    assert next_free_subid([]) == 100000
    assert next_free_subid([(1000, 10)]) == 100000


def vfs_cap(permitted: int, effective: bool, version: int = 2) -> bytes:
    magic = (version << 24) | int(effective)
    if version == 1:
        return struct.pack("<III", magic, permitted & 0xFFFFFFFF, 0)
    return struct.pack("<IIIII", magic, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


def test_file_capabilities() -> None:
    setuid = 1 << hostfacts.CAP_SETUID
    assert file_caps_grant(vfs_cap(setuid, effective=True), hostfacts.CAP_SETUID)
    assert file_caps_grant(vfs_cap(setuid, effective=True, version=1), hostfacts.CAP_SETUID)
    assert not file_caps_grant(vfs_cap(setuid, effective=False), hostfacts.CAP_SETUID)
    assert not file_caps_grant(vfs_cap(setuid, effective=True), hostfacts.CAP_SETGID)
    assert not file_caps_grant(b"", hostfacts.CAP_SETUID)


def test_inspect_path(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    assert not hostfacts.inspect_path(path, os.R_OK).exists
    with open(path, "w"):
        pass
    os.chmod(path, 0o640)
    facts = hostfacts.inspect_path(path, os.R_OK)
    assert (facts.kind, facts.mode, facts.owner) == ("file", 0o640, os.getuid())
    assert hostfacts.inspect_path("/dev/null", os.R_OK | os.W_OK).kind == "chardev"
    assert hostfacts.inspect_path(str(tmp_path), os.W_OK).kind == "dir"


def test_probes_succeed_on_this_host(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real namespaces, not mocks: the development and CI hosts allow all of this. The
    # overlay probe works in the store and caches in the runtime dir: keep both private.
    monkeypatch.setenv("RL_ROOT", os.path.join(tmp_path, "store"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert hostfacts.probe_unshare().ok
    bare, idmap, mount, overlay = hostfacts.probe_user_namespaces()
    assert (bare.status, idmap.status, mount.status) == ("ok", "ok", "ok")
    assert overlay.status in ("ok", "failed")
