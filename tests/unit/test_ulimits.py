"""--ulimit parsing and rootless default rlimits, against podman 4.3's measured behaviour."""

from __future__ import annotations

import resource

import pytest

from rootless.errors import RlError
from rootless.runtime import ulimits
from rootless.runtime.ulimits import UNLIMITED


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("nofile=1024:2048", {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}),
        ("nproc=512", {"type": "RLIMIT_NPROC", "hard": 512, "soft": 512}),
        ("core=-1", {"type": "RLIMIT_CORE", "hard": UNLIMITED, "soft": UNLIMITED}),
        ("core=0", {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}),
        ("nofile=5:-1", {"type": "RLIMIT_NOFILE", "hard": UNLIMITED, "soft": 5}),
        ("as=100000000", {"type": "RLIMIT_AS", "hard": 100000000, "soft": 100000000}),
        ("rttime=10:20", {"type": "RLIMIT_RTTIME", "hard": 20, "soft": 10}),
    ],
)
def test_parse(flag: str, expected: dict[str, object]) -> None:
    assert ulimits.parse_ulimit(flag) == expected


def test_every_name_is_a_real_resource() -> None:
    assert set(ulimits.RLIMIT_TYPES.values()) == set(ulimits.RLIMIT_NUMBERS)
    for name, rtype in ulimits.RLIMIT_TYPES.items():
        assert ulimits.parse_ulimit(f"{name}=1")["type"] == rtype
        number = ulimits.rlimit_number(rtype)
        assert getattr(resource, rtype, number) == number  # Python lacks RLIMIT_LOCKS
        resource.getrlimit(number)  # the kernel knows it
    with pytest.raises(RlError, match="unknown rlimit type"):
        ulimits.rlimit_number("RLIMIT_FOO")


@pytest.mark.parametrize(
    ("flag", "why"),
    [
        ("nofile", "invalid ulimit argument: nofile"),
        ("bogus=1", "invalid ulimit type: bogus"),
        ("RSS=5", "invalid ulimit type: RSS"),
        ("=10", "invalid ulimit type: "),
        ("nofile=abc", 'invalid number "abc"'),
        ("nofile= 10", 'invalid number " 10"'),
        ("nofile=10:", 'invalid number ""'),
        ("nofile=0x10", 'invalid number "0x10"'),
        ("nofile=10:20:30", "too many limit value arguments - 10:20:30"),
        (
            "nofile=3000:2000",
            "ulimit soft limit must be less than or equal to hard limit: 3000 > 2000",
        ),
        ("nofile=-1:5", "less than or equal"),
        ("nproc=-2", "negative"),
        ("nofile=99999999999999999999999", "out of range"),
    ],
)
def test_parse_errors(flag: str, why: str) -> None:
    with pytest.raises(RlError) as info:
        ulimits.parse_ulimit(flag)
    message = str(info.value)
    assert message.startswith(
        f'ulimit option "{flag}" requires name=SOFT:HARD, failed to be parsed: '
    )
    assert why in message


def test_defaults_like_podman_on_this_host() -> None:
    # rltest here: nofile 1024:20000, nproc 96365:96365, kernel.pid_max 32768 -> podman put
    # NOFILE 20000:20000 and NPROC 32768:32768 in the spec.
    assert ulimits.default_rlimits((1024, 20000), (96365, 96365), 32768) == [
        {"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000},
        {"type": "RLIMIT_NPROC", "hard": 32768, "soft": 32768},
    ]


def test_defaults_keep_limits_below_pid_max_and_cap_nofile() -> None:
    assert ulimits.default_rlimits((-1, -1), (100, 200), 4194304) == [
        {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576},
        {"type": "RLIMIT_NPROC", "hard": 200, "soft": 100},
    ]
    assert ulimits.default_rlimits((1024, 4096), (-1, -1), None)[1] == {
        "type": "RLIMIT_NPROC",
        "hard": UNLIMITED,
        "soft": UNLIMITED,
    }


def test_host_defaults_are_within_own_limits() -> None:
    nofile, nproc = ulimits.host_default_rlimits()
    own_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert nofile["type"] == "RLIMIT_NOFILE"
    assert own_nofile == resource.RLIM_INFINITY or int(nofile["hard"]) <= own_nofile
    assert nproc["type"] == "RLIMIT_NPROC"


def test_flags_come_first_then_defaults_for_the_rest() -> None:
    defaults = ulimits.default_rlimits((1024, 20000), (96365, 96365), 32768)
    # podman: --ulimit nofile=100:200 --ulimit core=-1 -> NOFILE 100:200, CORE inf, NPROC 32768
    assert ulimits.container_rlimits(["nofile=100:200", "core=-1"], defaults) == [
        {"type": "RLIMIT_NOFILE", "hard": 200, "soft": 100},
        {"type": "RLIMIT_CORE", "hard": UNLIMITED, "soft": UNLIMITED},
        {"type": "RLIMIT_NPROC", "hard": 32768, "soft": 32768},
    ]
    assert ulimits.container_rlimits([], defaults) == defaults
    assert ulimits.container_rlimits(["nofile=1", "nofile=2"], []) == [
        {"type": "RLIMIT_NOFILE", "hard": 2, "soft": 2}
    ]


def test_host_means_inherit() -> None:
    assert ulimits.container_rlimits(["host"], []) is None
    with pytest.raises(RlError, match="cannot be combined"):
        ulimits.container_rlimits(["host", "nofile=5"], [])


def test_rootless_cannot_raise_hard_limits() -> None:
    wanted = [ulimits.parse_ulimit("nofile=30000:30000")]
    with pytest.raises(
        RlError, match=r"ulimit nofile: hard limit 30000 is above your own hard limit 20000"
    ):
        ulimits.check_raisable(wanted, {"RLIMIT_NOFILE": 20000})
    ulimits.check_raisable(wanted, {"RLIMIT_NOFILE": 30000})
    ulimits.check_raisable(wanted, {"RLIMIT_NOFILE": -1})  # own limit unlimited
    ulimits.check_raisable(wanted, {})  # root: no limit known
    with pytest.raises(RlError, match="hard limit unlimited"):
        ulimits.check_raisable([ulimits.parse_ulimit("core=-1")], {"RLIMIT_CORE": 0})


def test_host_hard_limits_are_read_for_every_type() -> None:
    import os

    limits = ulimits.host_hard_limits()
    if os.geteuid() == 0:
        assert limits == {}
    else:
        assert set(limits) == set(ulimits.RLIMIT_TYPES.values())
