"""Capability names and bits, and podman 4.3's rules for --cap-add/--cap-drop/--privileged/-u.

Expected values were measured by running podman 4.3 rootless on this machine (its config.json
and /proc/self/status in the container)."""

from __future__ import annotations

import pytest

from rootless.errors import RlError
from rootless.runtime import caps

PODMAN_DEFAULT = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
]


def test_table_matches_the_kernel_numbering() -> None:
    assert len(caps.CAPABILITIES) == 41
    assert len(set(caps.CAPABILITIES)) == 41
    assert caps.cap_number("CAP_CHOWN") == 0
    assert caps.cap_number("CAP_NET_ADMIN") == 12
    assert caps.cap_number("CAP_SYS_ADMIN") == 21
    assert caps.cap_number("CAP_SETFCAP") == 31
    assert caps.cap_number("CAP_AUDIT_READ") == 37
    assert caps.cap_number("CAP_BPF") == 39
    assert caps.cap_number("CAP_CHECKPOINT_RESTORE") == 40


def test_table_agrees_with_this_kernel() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    assert last >= caps.cap_number("CAP_CHECKPOINT_RESTORE")


def test_default_set_is_podmans_capeff() -> None:
    assert caps.DEFAULT_CAPS == PODMAN_DEFAULT
    assert caps.mask(caps.DEFAULT_CAPS) == 0x00000000800405FB
    assert caps.names(0x800405FB) == sorted(PODMAN_DEFAULT, key=caps.cap_number)


def test_mask_and_names_round_trip() -> None:
    every = (1 << 41) - 1
    assert caps.mask(caps.CAPABILITIES) == every
    assert caps.names(every) == list(caps.CAPABILITIES)
    assert caps.names(0) == []
    assert caps.names(1 << 63 | 1) == ["CAP_CHOWN"]  # bits beyond the table are ignored


@pytest.mark.parametrize(
    "spelling", ["net_admin", "NET_ADMIN", "cap_net_admin", "Cap_Net_Admin", " CAP_NET_ADMIN "]
)
def test_names_accept_podmans_spellings(spelling: str) -> None:
    assert caps.normalize(spelling) == "CAP_NET_ADMIN"
    assert caps.normalize("all") == "ALL"


@pytest.mark.parametrize(
    ("name", "shown"),
    [("foo", "CAP_FOO"), ("CAP_FOO", "CAP_FOO"), ("", "CAP_"), ("net-admin", "CAP_NET-ADMIN")],
)
def test_unknown_names(name: str, shown: str) -> None:
    with pytest.raises(RlError) as info:
        caps.effective_caps(add=[name])
    assert str(info.value) == f'"{shown}": unknown capability'  # podman's message
    with pytest.raises(RlError, match="unknown capability"):
        caps.effective_caps(drop=[name])


def test_cap_number_rejects_all() -> None:
    with pytest.raises(RlError):
        caps.cap_number("ALL")


def test_defaults_unchanged_without_flags() -> None:
    assert caps.effective_caps() == PODMAN_DEFAULT


def test_add_and_drop() -> None:
    result = caps.effective_caps(add=["net_admin", "CAP_SYS_ADMIN"], drop=["chown", "cap_kill"])
    kept = set(PODMAN_DEFAULT) - {"CAP_CHOWN", "CAP_KILL"}
    assert result == sorted(kept | {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"})


def test_adding_a_default_capability_changes_nothing() -> None:
    assert caps.effective_caps(add=["chown"]) == PODMAN_DEFAULT


def test_drop_all_keeps_only_added() -> None:
    assert caps.effective_caps(add=["cap_kill"], drop=["all"]) == ["CAP_KILL"]
    assert caps.effective_caps(drop=["ALL"]) == []


def test_add_all_then_drop() -> None:
    result = caps.effective_caps(add=["ALL"], drop=["CHOWN"])
    assert caps.mask(result) == 0x1FFFFFFFFFE  # podman: CapEff 000001fffffffffe
    assert result == sorted(set(caps.CAPABILITIES) - {"CAP_CHOWN"})


def test_podman_conflicts() -> None:
    with pytest.raises(RlError, match="adding all caps and removing all caps not allowed"):
        caps.effective_caps(add=["all"], drop=["ALL"])
    with pytest.raises(RlError, match='capability "CAP_NET_ADMIN" cannot be dropped and added'):
        caps.effective_caps(add=["net_admin"], drop=["CAP_NET_ADMIN"])


def test_privileged_gets_everything_and_ignores_flags() -> None:
    result = caps.effective_caps(drop=["chown"], privileged=True)
    assert caps.mask(result) == (1 << 41) - 1
    assert result == sorted(caps.CAPABILITIES)


def test_bounding_set_limits_what_can_be_granted() -> None:
    result = caps.effective_caps(add=["NET_ADMIN"], bounding=["CAP_CHOWN", "net_admin"])
    assert result == ["CAP_CHOWN", "CAP_NET_ADMIN"]


def test_root_process_capabilities() -> None:
    section = caps.process_capabilities(caps.effective_caps(), uid=0)
    assert section == {
        "bounding": PODMAN_DEFAULT,
        "effective": PODMAN_DEFAULT,
        "permitted": PODMAN_DEFAULT,
    }


def test_non_root_user_gets_only_added_capabilities() -> None:
    # podman run -u 1000 --cap-add net_admin: CapEff/CapPrm/CapInh/CapAmb 0x1000,
    # CapBnd 0x800415fb.
    merged = caps.effective_caps(add=["net_admin"])
    section = caps.process_capabilities(merged, uid=1000, cap_add=["net_admin"])
    assert caps.mask(section["bounding"]) == 0x800415FB
    for kind in ("effective", "permitted", "inheritable", "ambient"):
        assert section[kind] == ["CAP_NET_ADMIN"]


def test_non_root_user_without_cap_add_has_empty_sets() -> None:
    section = caps.process_capabilities(caps.effective_caps(), uid=1000)
    assert caps.mask(section["bounding"]) == 0x800405FB
    assert section["effective"] == section["permitted"] == section["ambient"] == []


def test_non_root_user_cap_add_outside_bounding_is_not_granted() -> None:
    section = caps.process_capabilities(["CAP_CHOWN"], uid=1000, cap_add=["ALL"])
    assert section["effective"] == ["CAP_CHOWN"]
