"""The -v/--mount/--tmpfs parsers against what podman 4.3 does with the same flags (the
expected OCI options and error texts were taken from podman's generated config.json/stderr)."""

from __future__ import annotations

import pytest

from rootless.errors import RlError
from rootless.mountflags import (
    MountRequest,
    check_destinations,
    is_named_volume,
    oci_options,
    parse_mount,
    parse_tmpfs,
    parse_volume,
)


def spec_options(flag: str, parse: str = "volume") -> list[str]:
    req = {"volume": parse_volume, "mount": parse_mount}[parse](flag, cwd="/work")
    return oci_options(req)


# --- -v / --volume ---------------------------------------------------------------------


def test_bind_with_defaults() -> None:
    req = parse_volume("/srv/site:/usr/share/html", cwd="/work")
    assert req == MountRequest("bind", "/usr/share/html", "/srv/site")
    assert oci_options(req) == ["rw", "rprivate", "rbind"]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("/h:/x:ro", ["ro", "rprivate", "rbind"]),
        ("/h:/x:z,rbind", ["rbind", "rw", "rprivate"]),
        ("/h:/x:bind", ["bind", "rw", "rprivate"]),
        ("/h:/x:U", ["rw", "rprivate", "rbind"]),
        ("/h:/x:noexec,nosuid,nodev", ["noexec", "nosuid", "nodev", "rw", "rprivate", "rbind"]),
        ("/h:/x:suid,exec,dev", ["suid", "exec", "dev", "rw", "rprivate", "rbind"]),
        ("/h:/x:shared", ["shared", "rw", "rbind"]),
        ("nv:/data", ["rw", "rprivate", "nosuid", "nodev", "rbind"]),
        ("nv:/data:ro,nocopy", ["ro", "rprivate", "nosuid", "nodev", "rbind"]),
        ("/anon", ["rw", "rprivate", "nosuid", "nodev", "rbind"]),
        ("nv:/data:suid,dev", ["suid", "dev", "rw", "rprivate", "rbind"]),
    ],
)
def test_volume_options_as_podman_sets_them(flag: str, expected: list[str]) -> None:
    assert spec_options(flag) == expected


def test_relative_host_paths_resolve_against_cwd() -> None:
    assert parse_volume("./site:/x", cwd="/home/u/proj").source == "/home/u/proj/site"
    assert parse_volume("../up/./b:/x", cwd="/home/u/proj").source == "/home/u/up/b"
    assert parse_volume(".:/x", cwd="/home/u").source == "/home/u"


def test_names_without_slash_or_dot_are_volumes() -> None:
    req = parse_volume("data:/var/lib/db")
    assert (req.type, req.source, req.destination) == ("volume", "data", "/var/lib/db")
    assert is_named_volume("data") and not is_named_volume("./data")
    assert not is_named_volume("/data")


def test_destination_alone_is_an_anonymous_volume() -> None:
    req = parse_volume("/cache")
    assert (req.type, req.source, req.destination) == ("volume", "", "/cache")


def test_destination_is_cleaned() -> None:
    assert parse_volume("x:/a/../b/").destination == "/b"
    assert parse_volume("/h:/").destination == "/"


def test_flags_rl_acts_on_are_not_oci_options() -> None:
    req = parse_volume("/h:/x:U,z")
    assert req.chown and req.options == ()
    assert parse_volume("/h:/x:O").overlay
    assert not parse_volume("v:/x:nocopy").copy_up
    assert parse_volume("v:/x:copy").copy_up
    assert parse_volume("/h:/x:Z").options == ()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("/tmp:/x:bogus", 'invalid option type "bogus"'),
        ("/tmp:/x:size=1m", 'invalid option type "size=1m"'),
        ("/tmp:/x:", 'invalid option type ""'),
        ("/tmp:x", 'invalid container path "x", must be an absolute path'),
        ("/x:ro", 'invalid container path "ro", must be an absolute path'),
        ("relative", 'invalid container path "relative", must be an absolute path'),
        ("/tmp:", "container directory cannot be empty"),
        (":/x", "host directory cannot be empty"),
        (
            "/tmp:/x:ro,rw",
            "invalid options \"ro, rw\", can only specify 1 'rw' or 'ro' option",
        ),
        (
            "/tmp:/x:ro,ro",
            "invalid options \"ro, ro\", can only specify 1 'rw' or 'ro' option",
        ),
        (
            "/tmp:/x:nosuid,suid",
            "invalid options \"nosuid, suid\", can only specify 1 'nosuid' or 'suid' option",
        ),
        (
            "/tmp:/x:exec,noexec",
            "invalid options \"exec, noexec\", can only specify 1 'noexec' or 'exec' option",
        ),
        (
            "/tmp:/x:dev,nodev",
            "invalid options \"dev, nodev\", can only specify 1 'nodev' or 'dev' option",
        ),
        (
            "/tmp:/x:z,Z",
            "invalid options \"z, Z\", can only specify 1 'z', 'Z', or 'O' option",
        ),
        (
            "/tmp:/x:bind,rbind",
            "invalid options \"bind, rbind\", can only specify 1 '[r]bind' option",
        ),
        ("/tmp:/x:U,U", "invalid options \"U, U\", can only specify 1 'U' option"),
        ("/tmp:/x:O,ro", "can't use 'O' with other options"),
        (
            "/tmp:/x:/y:ro",
            "/tmp:/x:/y:ro: incorrect volume format, should be [host-dir:]ctr-dir[:option]",
        ),
        (
            "bad!name:/x",
            'creating named volume "bad!name": running volume create option: '
            "names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument",
        ),
        ("/tmp:/x:idmap", "the idmap volume option is not supported by rl"),
    ],
)
def test_volume_errors(flag: str, message: str) -> None:
    with pytest.raises(RlError) as info:
        parse_volume(flag, cwd="/")
    assert info.value.message == message
    assert info.value.exit_code == 125


# --- --mount ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("type=bind,src=/h,dst=/x,ro=true", ["ro", "rprivate", "rbind"]),
        ("type=bind,source=/h,target=/x,readonly", ["ro", "rprivate", "rbind"]),
        ("type=bind,src=/h,dst=/x,readonly=false", ["rw", "rprivate", "rbind"]),
        ("type=bind,src=/h,dst=/x,bind-propagation=shared", ["shared", "rw", "rbind"]),
        ("type=bind,src=/h,dst=/x,relabel=shared", ["rw", "rprivate", "rbind"]),
        ("type=bind,src=/h,dst=/x,bind-nonrecursive", ["bind", "rw", "rprivate"]),
        ("type=volume,src=nv2,dst=/y", ["rw", "rprivate", "nosuid", "nodev", "rbind"]),
        ("type=volume,dst=/y", ["rw", "rprivate", "nosuid", "nodev", "rbind"]),
        (
            "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1777",
            ["size=1m", "mode=1777", "rw", "rprivate", "nosuid", "nodev", "tmpcopyup"],
        ),
        ("type=tmpfs,dst=/t", ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]),
        ("type=devpts,destination=/dev/pts2", []),
        (
            "type=tmpfs,dst=/t,tmpfs-mode=700,ro",
            ["mode=700", "ro", "rprivate", "nosuid", "nodev", "tmpcopyup"],
        ),
        ("type=tmpfs,dst=/t,notmpcopyup", ["rw", "rprivate", "nosuid", "nodev"]),
        ("type=volume,src=nv,dst=/data,ro,U=true", ["ro", "rprivate", "nosuid", "nodev", "rbind"]),
        ("type=bind,src=/tmp,dst=/x,nosuid", ["nosuid", "rw", "rprivate", "rbind"]),
        ("type=bind,src=/h,dst=/x,readonly,nosuid", ["ro", "nosuid", "rprivate", "rbind"]),
        ("type=bind,src=/h,dst=/x,ro,rw=true", ["rw", "rprivate", "rbind"]),
    ],
)
def test_mount_options_as_podman_sets_them(flag: str, expected: list[str]) -> None:
    assert spec_options(flag, "mount") == expected


def test_mount_fields() -> None:
    bind = parse_mount("type=bind,src=site,dst=/srv,U=true", cwd="/home/u")
    assert (bind.type, bind.source, bind.destination, bind.chown) == (
        "bind",
        "/home/u/site",
        "/srv",
        True,
    )
    vol = parse_mount("type=volume,source=data,target=/d,volume-nocopy")
    assert (vol.type, vol.source, vol.copy_up) == ("volume", "data", False)
    assert parse_mount("type=volume,target=/d").source == ""
    tmp = parse_mount("type=tmpfs,destination=/run/x")
    assert (tmp.type, tmp.source) == ("tmpfs", "tmpfs")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("type=bind,src=/tmp", "must set volume destination"),
        ("type=foo,src=/tmp,dst=/x", 'invalid filesystem type "foo"'),
        (
            "src=/tmp,dst=/x",
            "incorrect mount format: should be --mount type=<bind|tmpfs|volume>,"
            "[src=<host-dir|volume-name>,]target=<ctr-dir>[,options]",
        ),
        ("type=bind,src=/tmp,dst=/x,bogus=1", "bogus: invalid mount option"),
        ("type=bind,src=/tmp,dst=/x,bogus", "bogus: invalid mount option"),
        (
            "type=bind,src=/tmp,dst=/x,ro=maybe",
            "'readonly', 'ro', or 'rw' must be set to true or false, instead received "
            '"maybe": must provide an argument for option',
        ),
        ("type=bind,src=/tmp,dst=/x,tmpfs-size=1m", "tmpfs-size: invalid mount option"),
        ("type=tmpfs,src=/tmp,dst=/x", "source is not supported with tmpfs mounts"),
        (
            "type=volume,src=/tmp,dst=/x",
            'creating named volume "/tmp": running volume create option: '
            "names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument",
        ),
        ("type=bind,src=/tmp,dst=x", 'invalid container path "x", must be an absolute path'),
        ("type=bind,dst=/x", "must set the source of a bind mount (src=HOST-PATH)"),
        ("type=image,src=alpine,dst=/x", 'mount type "image" is not supported by rl yet'),
        ("type=volume,dst=/x,tmpfs-mode=1777", "tmpfs-mode: invalid mount option"),
        (
            "type=bind,src=/h,dst=/x,bind-propagation=sideways",
            'invalid value "sideways" for bind-propagation',
        ),
    ],
)
def test_mount_errors(flag: str, message: str) -> None:
    with pytest.raises(RlError) as info:
        parse_mount(flag, cwd="/")
    assert info.value.message == message


def test_mount_checks_tmpfs_values() -> None:
    with pytest.raises(RlError, match='invalid tmpfs size "bad"'):
        parse_mount("type=tmpfs,dst=/x,tmpfs-size=bad")
    with pytest.raises(RlError, match='invalid tmpfs mode "999"'):
        parse_mount("type=tmpfs,dst=/x,tmpfs-mode=999")


# --- --tmpfs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("/t", ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]),
        (
            "/t:size=1m,mode=700,noexec",
            ["size=1m", "mode=700", "noexec", "rw", "rprivate", "nosuid", "nodev", "tmpcopyup"],
        ),
        ("/t:ro", ["ro", "rprivate", "nosuid", "nodev", "tmpcopyup"]),
        ("/t:exec,suid,notmpcopyup", ["exec", "suid", "rw", "rprivate", "nodev"]),
        ("/t:rshared,size=50%", ["rshared", "size=50%", "rw", "nosuid", "nodev", "tmpcopyup"]),
    ],
)
def test_tmpfs_options_as_podman_sets_them(flag: str, expected: list[str]) -> None:
    req = parse_tmpfs(flag)
    assert (req.type, req.source, req.destination) == ("tmpfs", "tmpfs", "/t")
    assert oci_options(req) == expected


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("x", 'invalid container path "x", must be an absolute path'),
        ("", "container directory cannot be empty"),
        ("/x:bogus", 'unknown mount option "bogus": invalid mount option'),
        ("/x:ro,rw", "only one of 'rw' and 'ro' can be used: duplicate mount option passed"),
        (
            "/x:nosuid,suid",
            "only one of 'nosuid' and 'suid' can be used: duplicate mount option passed",
        ),
        ("/x:size", 'mount option "size" needs a value (size=...): invalid mount option'),
    ],
)
def test_tmpfs_errors(flag: str, message: str) -> None:
    with pytest.raises(RlError) as info:
        parse_tmpfs(flag)
    assert info.value.message == message


def test_duplicate_destinations_are_refused() -> None:
    reqs = [parse_volume("/tmp:/x"), parse_tmpfs("/x")]
    with pytest.raises(RlError, match=r"^/x: duplicate mount destination$"):
        check_destinations(reqs)
    check_destinations([parse_volume("/tmp:/x"), parse_tmpfs("/y")])
