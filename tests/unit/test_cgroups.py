"""rootless.cgroups: the sans-IO core, and the I/O shell against a synthetic cgroupfs tree."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rootless.cgroups import core, fs
from rootless.cgroups.core import Device, HostCgroups, Layout, Limits
from rootless.cgroups.flags import add_resource_flags, limits_from_args, resources_from_args
from rootless.errors import RlError

HYBRID_MOUNTINFO = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
"""
V2_MOUNTINFO = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""
V1_MOUNTINFO = """\
26 24 0:24 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
31 26 0:29 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
"""
HYBRID_CGROUP = """\
12:memory:/user.slice/user-1001.slice/session-3.scope
1:name=systemd:/user.slice/user-1001.slice/session-3.scope
0::/user.slice/user-1001.slice/session-3.scope
"""

# --- layout and membership ----------------------------------------------------------------


def test_layout_v2() -> None:
    assert core.parse_layout(V2_MOUNTINFO) == Layout("v2", "/sys/fs/cgroup")


def test_layout_hybrid() -> None:
    assert core.parse_layout(HYBRID_MOUNTINFO) == Layout("hybrid", "/sys/fs/cgroup/unified")


def test_layout_v1_and_none() -> None:
    assert core.parse_layout(V1_MOUNTINFO).mode == "v1"
    assert core.parse_layout("").mode == "none"


def test_proc_cgroup_v2_only() -> None:
    text = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/rl-1.scope\n"
    m = core.parse_proc_cgroup(text)
    assert m.v2_path == "/user.slice/user-1000.slice/user@1000.service/app.slice/rl-1.scope"
    assert m.v1 == {}


def test_proc_cgroup_hybrid() -> None:
    m = core.parse_proc_cgroup(HYBRID_CGROUP)
    assert m.v2_path == "/user.slice/user-1001.slice/session-3.scope"
    assert m.v1["memory"] == "/user.slice/user-1001.slice/session-3.scope"
    assert "systemd" in m.v1


def test_proc_cgroup_deleted_suffix() -> None:
    assert core.parse_proc_cgroup("0::/a/b (deleted)\n").v2_path == "/a/b"


def test_controllers() -> None:
    assert core.parse_controllers("cpuset cpu io memory pids\n") == {
        "cpuset", "cpu", "io", "memory", "pids",
    }  # fmt: skip
    assert core.parse_controllers("") == frozenset()


# --- delegation and the messages ----------------------------------------------------------


def _v2(**kw: object) -> HostCgroups:
    return HostCgroups(Layout("v2", "/sys/fs/cgroup"), own_path="/x", **kw)  # type: ignore[arg-type]


def test_delegated_from_own_writable_cgroup() -> None:
    host = _v2(own_writable=True, own_controllers=frozenset({"memory", "pids"}))
    assert host.delegated == {"memory", "pids"}
    assert not host.needs_scope
    assert host.version == "v2"


def test_delegated_through_a_systemd_scope() -> None:
    host = _v2(user_controllers=frozenset({"cpu", "memory", "pids"}), systemd_user=True)
    assert host.delegated == {"cpu", "memory", "pids"}
    assert host.needs_scope
    assert host.manager == "systemd"


def test_not_delegated_without_systemd() -> None:
    host = _v2(user_controllers=frozenset({"memory"}))
    assert host.delegated == frozenset()
    assert host.manager == "cgroupfs"
    reason = core.missing_reason(host, "--memory", "memory")
    assert reason is not None and "Delegate=" in reason and "\n" not in reason


def test_hybrid_reason_names_controller_and_boot_fix() -> None:
    host = HostCgroups(Layout("hybrid", "/sys/fs/cgroup/unified"))
    reason = core.missing_reason(host, "--memory", "memory")
    assert reason is not None
    assert reason.startswith("--memory needs the cgroup v2 memory controller")
    assert "systemd.unified_cgroup_hierarchy=1" in reason
    assert host.version == "v1" and host.delegated == frozenset()


def test_v1_reason() -> None:
    reason = core.missing_reason(HostCgroups(Layout("v1")), "--pids-limit", "pids")
    assert reason is not None and "cgroup v1" in reason and "pids" in reason


def test_missing_controller_reason_lists_delegated() -> None:
    host = _v2(user_controllers=frozenset({"memory", "pids"}), systemd_user=True)
    assert core.missing_reason(host, "--memory", "memory") is None
    reason = core.missing_reason(host, "--cpus", "cpu")
    assert reason is not None
    assert "cpu controller" in reason and "delegated: memory pids" in reason
    assert "user@.service" in reason


def test_require_raises_125_on_first_missing() -> None:
    host = HostCgroups(Layout("hybrid", "/u"))
    with pytest.raises(RlError) as err:
        fs.require(host, Limits(pids_limit=5))
    assert err.value.exit_code == 125 and "--pids-limit" in err.value.message
    fs.require(host, Limits())  # nothing asked: nothing to refuse


# --- flags -> files -----------------------------------------------------------------------

MiB = 1 << 20


def test_memory_files_default_swap_is_podmans() -> None:
    files = core.cgroup_files(Limits(memory=64 * MiB))
    assert files == {"memory.max": str(64 * MiB), "memory.swap.max": str(64 * MiB)}


def test_memory_swap_arithmetic() -> None:
    files = core.cgroup_files(Limits(memory=64 * MiB, memory_swap=100 * MiB))
    assert files["memory.swap.max"] == str(36 * MiB)
    assert (
        core.cgroup_files(Limits(memory=64 * MiB, memory_swap=64 * MiB))["memory.swap.max"] == "0"
    )
    assert core.cgroup_files(Limits(memory=64 * MiB, memory_swap=-1))["memory.swap.max"] == "max"


def test_memory_unlimited_and_reservation() -> None:
    files = core.cgroup_files(Limits(memory=-1, memory_reservation=32 * MiB))
    assert files == {"memory.max": "max", "memory.low": str(32 * MiB)}


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [(1.5, "150000 100000"), (0.5, "50000 100000"), (2, "200000 100000"), (0, "max 100000")],
)
def test_cpus(cpus: float, expected: str) -> None:
    assert core.cgroup_files(Limits(cpus=cpus)) == {"cpu.max": expected}


def test_cpu_quota_and_period() -> None:
    assert core.cgroup_files(Limits(cpu_quota=50000))["cpu.max"] == "50000 100000"
    assert core.cgroup_files(Limits(cpu_quota=20000, cpu_period=50000))["cpu.max"] == (
        "20000 50000"
    )
    assert core.cgroup_files(Limits(cpu_period=50000))["cpu.max"] == "max 50000"
    assert core.cgroup_files(Limits(cpu_quota=-1))["cpu.max"] == "max 100000"


@pytest.mark.parametrize(
    ("shares", "weight"),
    [(2, 1), (1024, 39), (512, 20), (262144, 10000), (100, 4), (1, 1), (10**6, 10000)],
)
def test_shares_to_weight_as_crun(shares: int, weight: int) -> None:
    assert core.shares_to_weight(shares) == weight


def test_cpu_shares_file() -> None:
    assert core.cgroup_files(Limits(cpu_shares=1024)) == {"cpu.weight": "39"}


@pytest.mark.parametrize(("blkio", "io"), [(10, 1), (1000, 10000), (500, 4950), (100, 910)])
def test_blkio_weight(blkio: int, io: int) -> None:
    assert core.blkio_to_io_weight(blkio) == io
    assert core.cgroup_files(Limits(blkio_weight=blkio)) == {"io.weight": f"default {io}"}


def test_pids_and_cpuset() -> None:
    files = core.cgroup_files(Limits(pids_limit=20, cpuset_cpus="0-1", cpuset_mems="0"))
    assert files == {"pids.max": "20", "cpuset.cpus": "0-1", "cpuset.mems": "0"}
    assert core.cgroup_files(Limits(pids_limit=-1)) == {"pids.max": "max"}
    assert core.cgroup_files(Limits(pids_limit=0)) == {"pids.max": "max"}


def test_io_max_per_device() -> None:
    limits = Limits(
        device_read_bps=(Device("/dev/vda", MiB), Device("/dev/vdb", 2 * MiB)),
        device_write_bps=(Device("/dev/vda", 3 * MiB),),
    )
    files = core.cgroup_files(limits, {"/dev/vda": (254, 0), "/dev/vdb": (254, 16)})
    assert files["io.max"].split("\n") == [
        f"254:0 rbps={MiB} wbps={3 * MiB}",
        f"254:16 rbps={2 * MiB}",
    ]


def test_io_max_unknown_device() -> None:
    with pytest.raises(RlError, match="/dev/nope"):
        core.cgroup_files(Limits(device_read_bps=(Device("/dev/nope", 1),)), {})


def test_controllers_needed_in_order() -> None:
    limits = Limits(memory=64 * MiB, pids_limit=5, cpus=1.0, memory_swap=-1)
    assert limits.controllers() == ["memory", "cpu", "pids"]
    assert Limits().controllers() == []


def test_limits_json_round_trip_and_merge() -> None:
    limits = Limits(memory=64 * MiB, device_read_bps=(Device("/dev/sda", 5),), cpus=0.5)
    data = limits.to_json()
    assert data == {"memory": 64 * MiB, "cpus": 0.5, "device_read_bps": [["/dev/sda", 5]]}
    assert Limits.from_json(data) == limits
    assert Limits.from_json(None) == Limits()
    merged = limits.merged(Limits(memory=128 * MiB, pids_limit=9))
    assert merged.memory == 128 * MiB and merged.pids_limit == 9 and merged.cpus == 0.5


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(memory=MiB), "minimum memory limit allowed is 6MB"),
        (Limits(memory_swap=100 * MiB), "memory limit"),
        (Limits(memory=64 * MiB, memory_swap=32 * MiB), "larger than memory limit"),
        (Limits(memory=64 * MiB, memory_reservation=128 * MiB), "reservation"),
        (Limits(cpus=1, cpu_quota=1000), "cannot be set with --cpus"),
        (Limits(cpu_period=10), "cpu period"),
        (Limits(blkio_weight=5), "blkio weight"),
    ],
)
def test_check_limits(limits: Limits, message: str) -> None:
    with pytest.raises(RlError, match=message):
        core.check_limits(limits)


def test_check_limits_accepts_sane() -> None:
    core.check_limits(Limits(memory=64 * MiB, memory_swap=-1, cpus=1.5, pids_limit=100))


# --- flags --------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_resource_flags(p)
    return p.parse_args(list(argv))


def test_flags_parse() -> None:
    limits = limits_from_args(
        _parse("-m", "256m", "--cpus", "1.5", "--pids-limit", "100", "--cpu-shares", "512",
               "--device-write-bps", "/dev/sda:1mb", "--memory-swap", "-1")
    )  # fmt: skip
    assert limits.memory == 256 * MiB and limits.cpus == 1.5 and limits.pids_limit == 100
    assert limits.cpu_shares == 512 and limits.memory_swap == -1
    assert limits.device_write_bps == (Device("/dev/sda", MiB),)


@pytest.mark.parametrize(
    "argv",
    [("--cpus", "x"), ("--pids-limit", "many"), ("-m", "lots"), ("--device-read-bps", "sda")],
)
def test_flags_bad_values(argv: tuple[str, ...]) -> None:
    with pytest.raises(RlError):
        limits_from_args(_parse(*argv))


def test_no_flags_no_probe() -> None:
    assert resources_from_args(_parse()) == ({}, "enabled", "private")


def test_bad_cgroups_modes() -> None:
    with pytest.raises(RlError, match="invalid cgroup mode"):
        resources_from_args(_parse("--cgroups", "maybe"))
    with pytest.raises(RlError, match="--cgroupns"):
        resources_from_args(_parse("--cgroupns", "shared"))
    with pytest.raises(RlError, match="--cgroups=disabled"):
        resources_from_args(_parse("--cgroups", "disabled", "--memory", "64m"))


# --- stats helpers ------------------------------------------------------------------------


def test_keyed_and_oom() -> None:
    before = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n"
    after = "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n"
    assert core.parse_keyed(after)["oom_kill"] == 1
    assert core.oom_killed(before, after)
    assert not core.oom_killed(after, after)
    assert core.oom_killed(None, after)


def test_io_stat() -> None:
    text = "254:0 rbytes=100 wbytes=20 rios=1 wios=1\n254:16 rbytes=5 wbytes=7 rios=1 wios=1\n"
    assert core.parse_io_stat(text) == (105, 27)


def test_cpu_percent() -> None:
    assert core.cpu_percent(0, 500_000, 1.0) == pytest.approx(50.0)
    assert core.cpu_percent(10, 5, 1.0) == 0.0
    assert core.cpu_percent(0, 5, 0) == 0.0


# --- the I/O shell on a synthetic tree ----------------------------------------------------


def _fake_cgroup(path: Path, controllers: str, procs: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.subtree_control").write_text("")
    (path / "cgroup.procs").write_text(procs)
    return path


def test_create_writes_limits_and_enables_controllers(tmp_path: Path) -> None:
    base = _fake_cgroup(tmp_path / "scope", "cpu io memory pids")
    # The kernel makes the interface files with the directory; here they exist beforehand.
    _fake_cgroup(base / "rl-abc", "")
    for name in ("memory.max", "memory.swap.max", "cpu.max", "pids.max"):
        (base / "rl-abc" / name).write_text("max\n")
    (base / "rl-supervisor").mkdir()
    _fake_cgroup(base / "rl-supervisor", "")
    path = fs.create(str(base), "rl-abc", Limits(memory=64 * MiB, cpus=0.5, pids_limit=20))
    assert path == str(base / "rl-abc")
    assert (base / "rl-supervisor").is_dir()  # where rl's own processes go
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +io +memory +pids"
    assert (base / "rl-abc" / "memory.max").read_text().startswith(str(64 * MiB))
    assert (base / "rl-abc" / "cpu.max").read_text() == "50000 100000"
    assert (base / "rl-abc" / "pids.max").read_text().startswith("20")


def test_create_moves_processes_out_of_the_parent(tmp_path: Path) -> None:
    base = _fake_cgroup(tmp_path / "scope", "memory", procs="123\n")
    _fake_cgroup(base / "rl-supervisor", "")
    fs.enable_controllers(str(base), ["memory"])
    assert (base / "rl-supervisor" / "cgroup.procs").read_text() == "123"


def test_create_skips_enabled_controllers(tmp_path: Path) -> None:
    base = _fake_cgroup(tmp_path / "scope", "memory pids")
    (base / "cgroup.subtree_control").write_text("memory pids\n")
    _fake_cgroup(base / "rl-x", "")
    (base / "rl-x" / "pids.max").write_text("max")
    fs.create(str(base), "rl-x", Limits(pids_limit=3))
    assert not (base / "rl-supervisor").exists()
    assert (base / "cgroup.subtree_control").read_text() == "memory pids\n"


def test_oom_kills_and_frozen(tmp_path: Path) -> None:
    cg = _fake_cgroup(tmp_path / "c", "")
    (cg / "memory.events").write_text("oom 1\noom_kill 2\n")
    (cg / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert fs.oom_kills(str(cg)) == 2
    assert fs.is_frozen(str(cg)) and fs.populated(str(cg))
    assert fs.oom_kills(str(tmp_path / "missing")) == 0


def test_remove_missing_is_quiet(tmp_path: Path) -> None:
    fs.remove(str(tmp_path / "gone"))


def test_probe_on_this_host_is_consistent() -> None:
    host = fs.probe()
    assert host.layout.mode in ("v2", "hybrid", "v1", "none")
    if host.layout.mode != "v2":
        assert host.delegated == frozenset() and not host.needs_scope


# --- one container's cgroup (rootless.cgroups.container) ------------------------------------


class _Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def userdata(self, container_id: str) -> Path:
        path = self.root / container_id
        path.mkdir(parents=True, exist_ok=True)
        return path


class _Record:
    def __init__(self, config: dict[str, object], container_pid: int | None = None) -> None:
        self.id = "c" * 64
        self.config = config
        self.container_pid = container_pid


def test_container_setup_disabled_and_unlimited_hybrid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rootless.cgroups import container

    monkeypatch.setattr(fs, "probe", lambda: HostCgroups(Layout("hybrid", "/u")))
    store = _Store(tmp_path)
    assert container.setup(store, _Record({"cgroups": "disabled"})) is None  # type: ignore[arg-type]
    assert container.setup(store, _Record({})) is None  # type: ignore[arg-type]
    with pytest.raises(RlError, match="memory controller"):
        container.setup(store, _Record({"resources": {"memory": 64 * MiB}}))  # type: ignore[arg-type]


def test_container_setup_on_delegated_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rootless.cgroups import container

    base = _fake_cgroup(tmp_path / "scope", "memory pids")
    (base / "cgroup.subtree_control").write_text("memory pids")
    name = "rl-" + "c" * 64
    _fake_cgroup(base / name, "")
    (base / name / "pids.max").write_text("max")
    (base / name / "memory.events").write_text("oom_kill 0\n")
    host = HostCgroups(
        Layout("v2", "/sys/fs/cgroup"), "/scope", True, frozenset({"memory", "pids"})
    )
    monkeypatch.setattr(fs, "probe", lambda: host)
    monkeypatch.setattr(fs, "own_base", lambda: str(base))
    store = _Store(tmp_path / "store")
    record = _Record({"resources": {"pids_limit": 7}})
    cg = container.setup(store, record)  # type: ignore[arg-type]
    assert cg is not None and cg.path == str(base / name)
    assert (base / name / "pids.max").read_text().startswith("7")
    assert not cg.oom_killed()
    (base / name / "memory.events").write_text("oom_kill 1\n")
    assert cg.oom_killed()
    assert container.path_of(store, record) == cg.path  # type: ignore[arg-type]
    (base / name / "cgroup.events").write_text("populated 0\n")
    for child in (base / name).iterdir():
        child.unlink()  # the kernel's interface files vanish with the directory
    container.remove(store, record)  # type: ignore[arg-type]
    assert not (base / name).exists()
    assert container.path_of(store, record) is None  # type: ignore[arg-type]


def test_cpuset_limits_need_cpuset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = HostCgroups(
        Layout("v2", "/sys/fs/cgroup"), "/s", True, frozenset({"memory", "pids", "cpu"})
    )
    with pytest.raises(RlError, match="cpuset controller"):
        fs.require(host, Limits(cpuset_cpus="0"))
