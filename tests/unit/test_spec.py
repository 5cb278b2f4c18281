"""OCI spec generation and the `rl run` option parsers (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from rootless.errors import RlError
from rootless.runtime.caps import effective_caps, process_capabilities
from rootless.runtime.options import (
    RunOptions,
    Userns,
    compose,
    container_mapping,
    keep_id_ranges,
    parse_entrypoint,
    parse_hostname,
    parse_idmap,
    parse_network,
    parse_pull,
    parse_size,
    parse_userns,
    timezone_file,
)
from rootless.runtime.spec import (
    MASKED_PATHS,
    NO_COMMAND,
    READONLY_PATHS,
    build_spec,
    merge_mounts,
    resolve_args,
    resolve_process,
)
from rootless.userns import IdMapping, IdRange, build_mapping

PASSWD = "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000::/home/tester:/bin/sh\n"
GROUP = "root:x:0:\ntester:x:1000:\nextra:x:2000:tester\n"
IMAGE: dict[str, Any] = {
    "config": {
        "Env": ["PATH=/img/bin", "A=1"],
        "Entrypoint": ["/entry"],
        "Cmd": ["default", "cmd"],
        "WorkingDir": "/data",
        "StopSignal": "SIGTERM",
    }
}
BASE = build_mapping(1001, 1001, [(100000, 65536)], [(100000, 65536)])


def spec_for(options: RunOptions, image: dict[str, Any] = IMAGE, **kw: Any) -> dict[str, Any]:
    process = resolve_process(
        image, options, passwd_text=PASSWD, group_text=GROUP, host_env={}, hostname="h"
    )
    caps = effective_caps(options.cap_add, options.cap_drop, options.privileged)
    args: dict[str, Any] = {
        "process": process,
        "rootfs_path": "/store/containers/x/rootfs",
        "hostname": "h",
        "mapping": BASE,
        "capabilities": process_capabilities(caps, process.user.uid, options.cap_add),
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10}],
        "bind_files": {
            "/etc/hosts": "/u/hosts",
            "/etc/hostname": "/u/hostname",
            "/run/.containerenv": "/u/.containerenv",
        },
    }
    args.update(kw)
    spec: dict[str, Any] = build_spec(image, options, **args)
    return spec


def mount_at(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, f"{dest}: {found}"
    return found[0]


# --- args, workdir -------------------------------------------------------------------------


def test_args_entrypoint_plus_cmd() -> None:
    assert resolve_args(IMAGE["config"], None, []) == ["/entry", "default", "cmd"]
    assert resolve_args(IMAGE["config"], None, ["x"]) == ["/entry", "x"]


def test_entrypoint_flag_drops_image_cmd() -> None:
    assert resolve_args(IMAGE["config"], ["echo", "a"], ["b"]) == ["echo", "a", "b"]
    assert resolve_args(IMAGE["config"], ["sh"], []) == ["sh"]
    assert resolve_args(IMAGE["config"], [], ["ls"]) == ["ls"]


def test_no_command_at_all() -> None:
    with pytest.raises(RlError, match=NO_COMMAND):
        resolve_args({}, [], [])


def test_parse_entrypoint() -> None:
    assert parse_entrypoint("") == []
    assert parse_entrypoint('["echo","a"]') == ["echo", "a"]
    assert parse_entrypoint("echo x") == ["echo x"]
    assert parse_entrypoint("[not json") == ["[not json"]


def test_workdir_from_image_is_created_from_flag_is_not() -> None:
    image = resolve_process(
        IMAGE, RunOptions("i"), passwd_text=None, group_text=None, host_env={}, hostname="h"
    )
    assert (image.cwd, image.create_workdir) == ("/data", True)
    flag = resolve_process(
        IMAGE,
        RunOptions("i", workdir="/w"),
        passwd_text=None,
        group_text=None,
        host_env={},
        hostname="h",
    )
    assert (flag.cwd, flag.create_workdir) == ("/w", False)
    none = resolve_process(
        {},
        RunOptions("i", command=["sh"]),
        passwd_text=None,
        group_text=None,
        host_env={},
        hostname="h",
    )
    assert none.cwd == "/"


def test_relative_workdir_rejected() -> None:
    with pytest.raises(RlError, match="absolute"):
        resolve_process(
            IMAGE,
            RunOptions("i", workdir="rel"),
            passwd_text=None,
            group_text=None,
            host_env={},
            hostname="h",
        )


def test_image_user_is_default_and_flag_wins() -> None:
    image = {"config": {"User": "tester", "Cmd": ["sh"]}}
    p = resolve_process(
        image, RunOptions("i"), passwd_text=PASSWD, group_text=GROUP, host_env={}, hostname="h"
    )
    assert (p.user.uid, p.user.home) == (1000, "/home/tester")
    assert "HOME=/home/tester" in p.env
    p = resolve_process(
        image,
        RunOptions("i", user="0"),
        passwd_text=PASSWD,
        group_text=GROUP,
        host_env={},
        hostname="h",
    )
    assert p.user.uid == 0


def test_keep_id_default_user_only_without_other_user() -> None:
    p = resolve_process(
        {"config": {"Cmd": ["sh"]}},
        RunOptions("i"),
        passwd_text=PASSWD,
        group_text=GROUP,
        host_env={},
        hostname="h",
        default_user="1001:1001",
    )
    assert (p.user.uid, p.user.gid, p.user.home) == (1001, 1001, "/")


# --- parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64m", 64 << 20),
        ("1g", 1 << 30),
        ("512k", 512 << 10),
        ("1048576", 1048576),
        ("1.5g", int(1.5 * (1 << 30))),
        ("10MB", 10 << 20),
        ("100b", 100),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "-1m", "1x"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(RlError, match="invalid size"):
        parse_size(text)


def test_parse_network() -> None:
    from rootless.runtime.options import parse_network_options

    assert parse_network("none") == "none"
    assert parse_network("host") == "host"
    assert parse_network("") == "slirp4netns"  # podman's rootless default
    assert parse_network("slirp4netns:allow_host_loopback=true") == "slirp4netns"
    assert parse_network_options("slirp4netns:allow_host_loopback=true,mtu=1500") == {
        "allow_host_loopback": "true",
        "mtu": "1500",
    }
    assert parse_network_options("slirp4netns:enable_ipv6=true") == {"enable_ipv6": "true"}
    assert parse_network_options("none") == {}
    with pytest.raises(RlError, match="not available in rl"):
        parse_network("pasta")
    with pytest.raises(RlError, match="unknown network mode"):
        parse_network("bogus")
    for bad in (
        "slirp4netns:cidr=10.1.0.0/24",
        "slirp4netns:mtu=9",
        "host:x=y",
        "slirp4netns:allow_host_loopback=maybe",
        "slirp4netns:enable_ipv6=yes",
    ):
        with pytest.raises(RlError):
            parse_network_options(bad)


def test_parse_userns() -> None:
    assert parse_userns("") == Userns()
    assert parse_userns("host") == Userns()
    assert parse_userns("keep-id") == Userns("keep-id")
    assert parse_userns("keep-id:uid=1000,gid=100") == Userns("keep-id", 1000, 100)
    for bad in ("auto", "keep-id:uid=x", "keep-id:foo=1"):
        with pytest.raises(RlError):
            parse_userns(bad)


def test_parse_idmap_and_hostname() -> None:
    assert parse_idmap("0:1:1000,1000:0:1", "--uidmap") == [
        IdRange(0, 1, 1000),
        IdRange(1000, 0, 1),
    ]
    with pytest.raises(RlError, match="--uidmap"):
        parse_idmap("0:1", "--uidmap")
    assert parse_hostname("my-host.example") == "my-host.example"
    with pytest.raises(RlError):
        parse_hostname("bad_host!")


def test_timezone_file(tmp_path: Any) -> None:
    (tmp_path / "Europe").mkdir()
    (tmp_path / "Europe" / "Paris").write_bytes(b"TZif")
    assert timezone_file("Europe/Paris", tmp_path) == tmp_path / "Europe" / "Paris"
    for bad in ("Nowhere/City", "../etc/passwd", "/etc/passwd"):
        with pytest.raises(RlError, match="unknown time zone"):
            timezone_file(bad, tmp_path)


# --- id mappings ---------------------------------------------------------------------------


def test_default_mapping_is_kept() -> None:
    assert container_mapping(RunOptions("i"), BASE, 1001, 1001) == BASE


def test_keep_id_maps_the_user_to_itself_like_podman() -> None:
    # podman shows (intermediate ids): 0 1 1001 / 1001 0 1 / 1002 1002 64535
    assert keep_id_ranges(1001, BASE.uids) == [
        IdRange(0, 1, 1001),
        IdRange(1001, 0, 1),
        IdRange(1002, 1002, 64535),
    ]
    mapping = container_mapping(RunOptions("i", userns=Userns("keep-id")), BASE, 1001, 1001)
    assert mapping.uids == (
        IdRange(0, 100000, 1001),
        IdRange(1001, 1001, 1),
        IdRange(1002, 101001, 64535),
    )
    assert mapping.host_uid(1001) == 1001
    assert mapping.host_uid(0) == 100000


def test_keep_id_with_uid() -> None:
    mapping = container_mapping(
        RunOptions("i", userns=Userns("keep-id", 1000, 1000)), BASE, 1001, 1001
    )
    assert mapping.host_uid(1000) == 1001
    assert mapping.host_gid(1000) == 1001
    assert mapping.host_uid(999) == 100999
    assert mapping.host_uid(1001) == 101000


def test_keep_id_needs_subids() -> None:
    single = build_mapping(1001, 1001, [], [])
    with pytest.raises(RlError, match="subordinate"):
        container_mapping(RunOptions("i", userns=Userns("keep-id")), single, 1001, 1001)


def test_uidmap_refers_to_intermediate_ids_and_sets_gids_too() -> None:
    options = RunOptions("i", uidmap=[IdRange(0, 1, 1000), IdRange(1000, 0, 1)])
    mapping = container_mapping(options, BASE, 1001, 1001)
    assert mapping.uids == (IdRange(0, 100000, 1000), IdRange(1000, 1001, 1))
    assert mapping.gids == mapping.uids
    options = RunOptions("i", uidmap=[IdRange(0, 0, 1)], gidmap=[IdRange(0, 0, 5)])
    assert container_mapping(options, BASE, 1001, 1001).gids == (
        IdRange(0, 1001, 1),
        IdRange(1, 100000, 4),
    )


def test_uidmap_without_the_user_is_refused() -> None:
    with pytest.raises(RlError, match="must map your own user"):
        container_mapping(RunOptions("i", uidmap=[IdRange(0, 1, 1000)]), BASE, 1001, 1001)


def test_compose_splits_across_base_ranges() -> None:
    assert compose([IdRange(0, 0, 3)], BASE.uids, "--uidmap") == [
        IdRange(0, 1001, 1),
        IdRange(1, 100000, 2),
    ]
    with pytest.raises(RlError, match="not mapped"):
        compose([IdRange(0, 65530, 100)], BASE.uids, "--uidmap")


# --- the spec ------------------------------------------------------------------------------


def test_spec_shape_like_podman() -> None:
    spec = spec_for(RunOptions("i", command=["true"]))
    assert spec["ociVersion"] == "1.0.2"
    proc = spec["process"]
    assert proc["args"] == ["/entry", "true"]
    assert proc["cwd"] == "/data"
    assert proc["user"] == {"uid": 0, "gid": 0, "umask": 0o022, "additionalGids": [0]}
    assert proc["terminal"] is False
    assert proc["capabilities"]["effective"] == proc["capabilities"]["bounding"]
    assert "CAP_SYS_ADMIN" not in proc["capabilities"]["bounding"]
    assert spec["root"] == {"path": "/store/containers/x/rootfs", "readonly": False}
    assert spec["hostname"] == "h"
    linux = spec["linux"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert {n["type"] for n in linux["namespaces"]} == {
        "pid",
        "network",
        "ipc",
        "uts",
        "mount",
        "cgroup",
        "user",
    }
    assert linux["uidMappings"][0] == {"containerID": 0, "hostID": 1001, "size": 1}
    assert linux["uidMappings"][1] == {"containerID": 1, "hostID": 100000, "size": 65536}
    assert linux["sysctl"] == {"net.ipv4.ping_group_range": "0 0"}
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert spec["annotations"]["org.opencontainers.image.stopSignal"] == "SIGTERM"


def test_default_mounts_in_podmans_order_and_options() -> None:
    spec = spec_for(RunOptions("i"))
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests == [
        "/proc",
        "/dev",
        "/sys",
        "/dev/pts",
        "/dev/mqueue",
        "/dev/shm",
        "/etc/hosts",
        "/run/.containerenv",
        "/etc/hostname",
        "/sys/fs/cgroup",
    ]
    assert mount_at(spec, "/proc")["options"] == ["nosuid", "noexec", "nodev"]
    assert mount_at(spec, "/sys") == {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    }
    assert "size=65536k" in mount_at(spec, "/dev/shm")["options"]
    assert mount_at(spec, "/dev/pts")["options"][-1] == "gid=5"
    assert mount_at(spec, "/etc/hosts") == {
        "destination": "/etc/hosts",
        "type": "bind",
        "source": "/u/hosts",
        "options": ["bind", "rprivate"],
    }
    assert "ro" in mount_at(spec, "/sys/fs/cgroup")["options"]


def test_shm_size() -> None:
    spec = spec_for(RunOptions("i", shm_size=1 << 30))
    assert "size=1048576k" in mount_at(spec, "/dev/shm")["options"]


def test_host_network_binds_sys_and_shares_netns() -> None:
    spec = spec_for(RunOptions("i", network="host"))
    assert "network" not in {n["type"] for n in spec["linux"]["namespaces"]}
    sys_mount = mount_at(spec, "/sys")
    assert sys_mount["type"] == "bind" and "rbind" in sys_mount["options"]
    assert spec["linux"]["sysctl"] == {}


def test_read_only_adds_tmpfs_dirs() -> None:
    spec = spec_for(RunOptions("i", read_only=True))
    assert spec["root"]["readonly"] is True
    for dest in ("/tmp", "/var/tmp", "/run"):
        assert mount_at(spec, dest)["type"] == "tmpfs"
    # /run's tmpfs comes before the .containerenv bind that lives in it
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/run") < dests.index("/run/.containerenv")
    spec = spec_for(RunOptions("i", read_only=True, read_only_tmpfs=False))
    assert "/tmp" not in [m["destination"] for m in spec["mounts"]]


def test_user_mounts_replace_defaults_at_the_same_place() -> None:
    user = [
        {"destination": "/etc/hosts/", "type": "bind", "source": "/mine", "options": ["ro"]},
        {"destination": "/data", "type": "bind", "source": "/d", "options": []},
    ]
    spec = spec_for(RunOptions("i"), user_mounts=user)
    hosts = [m for m in spec["mounts"] if m["destination"].rstrip("/") == "/etc/hosts"]
    assert hosts == [user[0]]
    assert spec["mounts"][-1]["destination"] == "/data"
    assert merge_mounts([], []) == []


def test_tty_and_terminal() -> None:
    assert spec_for(RunOptions("i", tty=True))["process"]["terminal"] is True


def test_non_root_user_gets_no_effective_caps() -> None:
    spec = spec_for(RunOptions("i", user="tester"))
    caps = spec["process"]["capabilities"]
    assert caps["effective"] == [] and caps["bounding"]
    assert spec["process"]["user"]["additionalGids"] == [1000, 2000]


def test_cap_add_and_privileged() -> None:
    spec = spec_for(RunOptions("i", cap_add=["NET_ADMIN"], cap_drop=["CHOWN"]))
    eff = spec["process"]["capabilities"]["effective"]
    assert "CAP_NET_ADMIN" in eff and "CAP_CHOWN" not in eff
    spec = spec_for(
        RunOptions("i", privileged=True), seccomp=None, masked_paths=[], readonly_paths=[]
    )
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["effective"]
    assert "seccomp" not in spec["linux"]
    assert spec["linux"]["maskedPaths"] == []


def test_rlimits_none_means_inherit() -> None:
    assert spec_for(RunOptions("i"), rlimits=None)["process"]["rlimits"] == []


def test_extra_bind_files_order() -> None:
    binds = {
        "/etc/passwd": "/u/passwd",
        "/etc/resolv.conf": "/u/resolv.conf",
        "/etc/hosts": "/u/hosts",
        "/etc/localtime": "/u/localtime",
    }
    spec = spec_for(RunOptions("i"), bind_files=binds)
    dests = [m["destination"] for m in spec["mounts"] if m["type"] == "bind"]
    assert dests == ["/etc/resolv.conf", "/etc/hosts", "/etc/localtime", "/etc/passwd"]


def test_mapping_in_spec_is_the_given_one() -> None:
    mapping = IdMapping((IdRange(0, 5, 1),), (IdRange(0, 6, 1),))
    spec = spec_for(RunOptions("i"), mapping=mapping)
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 5, "size": 1}]
    assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 6, "size": 1}]


def test_single_mapping_sets_no_groups() -> None:
    single = IdMapping((IdRange(0, 1001, 1),), (IdRange(0, 1001, 1),))
    spec = spec_for(RunOptions("i"), mapping=single)
    assert spec["process"]["user"]["additionalGids"] == []


def test_parse_pull() -> None:
    assert parse_pull("never") == "never"
    assert parse_pull("missing") == "missing"
    assert parse_pull("always") == "always"
    assert parse_pull("newer") == "newer"
    with pytest.raises(RlError, match="invalid pull policy"):
        parse_pull("sometimes")
