"""Seccomp profiles, their resolution by capability and architecture, and the BPF compiler.

The compiled programs run here in a small classic-BPF interpreter (what the kernel does with
`struct seccomp_data`), and their decisions are compared with a direct reading of the OCI
section's semantics, so every syscall number and many argument cases are checked without
installing anything. tests/e2e/test_seccomp_live.py installs the filter for real.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootless.errors import RlError
from rootless.runtime import caps, seccomp
from rootless.runtime.seccomp import (
    AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    X32_SYSCALL_BIT,
)

AUDIT_ARCH_AARCH64 = 0xC00000B7
ALLOW = SECCOMP_RET_ALLOW
EPERM = SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
EINVAL = SECCOMP_RET_ERRNO | errno.EINVAL
KILL = SECCOMP_RET_KILL_PROCESS
X86_64 = seccomp.syscall_tables()["x86_64"]
X32 = seccomp.syscall_tables()["x32"]
I386 = seccomp.syscall_tables()["x86"]
PODMAN_PROFILE = Path("/usr/share/containers/seccomp.json")


# --- a classic BPF interpreter, as the kernel runs a seccomp filter --------------------------


def seccomp_data(nr: int, arch: int = AUDIT_ARCH_X86_64, args: Sequence[int] = ()) -> bytes:
    padded = [*args, 0, 0, 0, 0, 0, 0][:6]
    return struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0x401000, *padded)


def run_bpf(program: Sequence[tuple[int, int, int, int]], data: bytes) -> int:
    acc = 0
    pc = 0
    while True:
        assert 0 <= pc < len(program), "fell off the end of the program"
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            assert k % 4 == 0 and k + 4 <= len(data)
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:  # and #k
            acc &= k
        elif code == 0x05:  # ja
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):
            taken = {
                0x15: acc == k,
                0x25: acc > k,
                0x35: acc >= k,
                0x45: bool(acc & k),
            }[code]
            pc += jt if taken else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc - 1}")


def decode(blob: bytes) -> list[tuple[int, int, int, int]]:
    assert len(blob) % 8 == 0
    return [struct.unpack_from("<HBBI", blob, i) for i in range(0, len(blob), 8)]


def decide(
    section: Mapping[str, Any], nr: int, arch: int = AUDIT_ARCH_X86_64, args: Sequence[int] = ()
) -> int:
    return run_bpf(decode(seccomp.compile_filter(section)), seccomp_data(nr, arch, args))


# --- the semantics, read directly from the OCI section ---------------------------------------


def _holds(op: str, value: int, two: int, arg: int) -> bool:
    return {
        "SCMP_CMP_EQ": arg == value,
        "SCMP_CMP_NE": arg != value,
        "SCMP_CMP_LT": arg < value,
        "SCMP_CMP_LE": arg <= value,
        "SCMP_CMP_GT": arg > value,
        "SCMP_CMP_GE": arg >= value,
        "SCMP_CMP_MASKED_EQ": arg & value == two,
    }[op]


def expected(
    section: Mapping[str, Any],
    nr: int,
    table: Mapping[str, int],
    args: Sequence[int],
    wide: bool = True,
) -> int:
    default = seccomp.action_value(section["defaultAction"], section.get("defaultErrnoRet"))
    padded = [*args, 0, 0, 0, 0, 0, 0][:6]
    if not wide:
        padded = [a & 0xFFFFFFFF for a in padded]
    unconditional = None
    for rule in section.get("syscalls") or ():
        action = seccomp.action_value(rule["action"], rule.get("errnoRet"))
        if action == default or not any(table.get(n) == nr for n in rule["names"]):
            continue
        conditions = rule.get("args") or []
        if not conditions:
            unconditional = action if unconditional is None else unconditional
            continue
        mask = 0xFFFFFFFFFFFFFFFF if wide else 0xFFFFFFFF
        if all(
            _holds(c["op"], c["value"] & mask, c.get("valueTwo", 0) & mask, padded[c["index"]])
            for c in conditions
        ):
            return action
    return unconditional if unconditional is not None else default


def default_section(cap_set: Sequence[str] = caps.DEFAULT_CAPS) -> dict[str, Any]:
    return seccomp.profile_to_oci(seccomp.default_profile(), cap_set)


# --- the default profile ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def program() -> list[tuple[int, int, int, int]]:
    return decode(seccomp.compile_filter(default_section()))


def verdict(program: Sequence[tuple[int, int, int, int]], name: str, *args: int) -> int:
    return run_bpf(program, seccomp_data(X86_64[name], AUDIT_ARCH_X86_64, args))


@pytest.mark.parametrize(
    "name",
    [
        "read",
        "write",
        "openat",
        "execve",
        "clone",
        "clone3",
        "unshare",
        "setns",
        "mount",
        "keyctl",
        "ptrace",
        "chroot",
        "arch_prctl",
        "modify_ldt",
        "pivot_root",
        "reboot",
    ],
)
def test_default_allows(program: list[tuple[int, int, int, int]], name: str) -> None:
    assert verdict(program, name) == ALLOW


@pytest.mark.parametrize(
    "name",
    [
        "kexec_load",
        "kexec_file_load",
        "userfaultfd",
        "swapon",
        "swapoff",
        "vmsplice",
        "bpf",
        "acct",
        "init_module",
        "delete_module",
        "ioperm",
        "iopl",
        "settimeofday",
        "clock_settime",
        "vhangup",
        "kcmp",
        "open_by_handle_at",
        "perf_event_open",
        "fanotify_init",
        "quotactl",
    ],
)
def test_default_denies_with_eperm(program: list[tuple[int, int, int, int]], name: str) -> None:
    assert verdict(program, name) == EPERM


@pytest.mark.parametrize("name", ["add_key", "request_key", "io_uring_setup", "io_uring_enter"])
def test_default_answers_enosys_for_unlisted(
    program: list[tuple[int, int, int, int]], name: str
) -> None:
    assert verdict(program, name) == ENOSYS


def test_default_unknown_numbers_get_enosys(program: list[tuple[int, int, int, int]]) -> None:
    for nr in (462, 500, 999, 0x3FFFFFFF, 0xFFFFFFFF):
        assert run_bpf(program, seccomp_data(nr)) == ENOSYS


def test_personality_only_known_values(program: list[tuple[int, int, int, int]]) -> None:
    for value in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict(program, "personality", value) == ALLOW
    for value in (0x40000, 1, 0x1_00000000, 0xFFFFFFFF_FFFFFFFF, 0x1_00000008):
        assert verdict(program, "personality", value) == ENOSYS


def test_audit_netlink_socket_needs_audit_write(program: list[tuple[int, int, int, int]]) -> None:
    af_netlink, af_inet, sock_raw, netlink_audit = 16, 2, 3, 9
    assert verdict(program, "socket", af_netlink, sock_raw, netlink_audit) == EINVAL
    assert verdict(program, "socket", af_netlink, sock_raw, 0) == ALLOW
    assert verdict(program, "socket", af_inet, 1, 0) == ALLOW
    assert verdict(program, "socket", af_inet, sock_raw, netlink_audit) == ALLOW
    with_audit = decode(
        seccomp.compile_filter(default_section([*caps.DEFAULT_CAPS, "CAP_AUDIT_WRITE"]))
    )
    assert verdict(with_audit, "socket", af_netlink, sock_raw, netlink_audit) == ALLOW


@pytest.mark.parametrize(
    ("cap", "names"),
    [
        ("CAP_SYS_ADMIN", ["bpf", "perf_event_open", "quotactl", "fanotify_init"]),
        ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
        ("CAP_SYS_PTRACE", ["kcmp", "process_madvise"]),
        ("CAP_SYS_RAWIO", ["ioperm", "iopl"]),
        ("CAP_SYS_TIME", ["settimeofday", "clock_settime"]),
        ("CAP_SYS_PACCT", ["acct"]),
        ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
        ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ],
)
def test_capability_opens_its_syscalls(cap: str, names: list[str]) -> None:
    granted = decode(seccomp.compile_filter(default_section([*caps.DEFAULT_CAPS, cap])))
    for name in names:
        assert verdict(granted, name) == ALLOW
    assert verdict(granted, "kexec_load") == EPERM


def test_dropping_sys_chroot_denies_chroot() -> None:
    dropped = decode(
        seccomp.compile_filter(default_section(caps.effective_caps(drop=["sys_chroot"])))
    )
    assert verdict(dropped, "chroot") == EPERM


def test_resolved_section_matches_podman_shape() -> None:
    # podman 4.3 with its default capabilities resolves its profile to 22 rules (measured), one
    # of them a verbatim repeat of another socket rule, which rl's profile does not carry.
    section = default_section()
    assert section["defaultAction"] == "SCMP_ACT_ERRNO"
    assert section["defaultErrnoRet"] == errno.ENOSYS
    assert section["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert len(section["syscalls"]) == 21
    everything = default_section(list(caps.CAPABILITIES))
    assert len(everything["syscalls"]) == 19  # also measured with podman --cap-add ALL


def test_x32_syscalls_follow_the_x32_table(program: list[tuple[int, int, int, int]]) -> None:
    assert run_bpf(program, seccomp_data(X32["getpid"])) == ALLOW
    assert X32["getpid"] & X32_SYSCALL_BIT
    assert run_bpf(program, seccomp_data(X32["kexec_load"])) == EPERM
    assert run_bpf(program, seccomp_data(X32["add_key"])) == ENOSYS


def test_i386_syscalls_follow_the_i386_table(program: list[tuple[int, int, int, int]]) -> None:
    assert run_bpf(program, seccomp_data(I386["getpid"], AUDIT_ARCH_I386)) == ALLOW
    assert run_bpf(program, seccomp_data(I386["socketcall"], AUDIT_ARCH_I386)) == ALLOW
    assert run_bpf(program, seccomp_data(I386["kexec_load"], AUDIT_ARCH_I386)) == EPERM
    assert run_bpf(program, seccomp_data(I386["personality"], AUDIT_ARCH_I386, [8])) == ALLOW
    assert run_bpf(program, seccomp_data(I386["personality"], AUDIT_ARCH_I386, [9])) == ENOSYS


def test_other_architectures_are_killed(program: list[tuple[int, int, int, int]]) -> None:
    assert run_bpf(program, seccomp_data(X86_64["getpid"], AUDIT_ARCH_AARCH64)) == KILL


def test_native_only_section_kills_x32_but_not_nr_minus_one() -> None:
    section = {**default_section(), "architectures": ["SCMP_ARCH_X86_64"]}
    native = decode(seccomp.compile_filter(section))
    assert run_bpf(native, seccomp_data(X32["getpid"])) == KILL
    assert run_bpf(native, seccomp_data(0xFFFFFFFF)) == ENOSYS
    assert run_bpf(native, seccomp_data(I386["getpid"], AUDIT_ARCH_I386)) == KILL
    assert run_bpf(native, seccomp_data(X86_64["getpid"])) == ALLOW


def test_every_syscall_number_matches_the_semantics() -> None:
    for cap_set in (caps.DEFAULT_CAPS, list(caps.CAPABILITIES), []):
        section = default_section(cap_set)
        program = decode(seccomp.compile_filter(section))
        for arch, table, base, wide in (
            (AUDIT_ARCH_X86_64, X86_64, 0, True),
            (AUDIT_ARCH_X86_64, X32, X32_SYSCALL_BIT, True),
            (AUDIT_ARCH_I386, I386, 0, False),
        ):
            for nr in range(base, base + 600):
                for args in ([], [16, 3, 9], [0xFFFFFFFF], [0x20008]):
                    got = run_bpf(program, seccomp_data(nr, arch, args))
                    assert got == expected(section, nr, table, args, wide), (arch, nr, args)


@pytest.mark.skipif(not PODMAN_PROFILE.exists(), reason="podman's profile is not installed")
def test_equivalent_to_podmans_installed_profile() -> None:
    podman = seccomp.load_profile(PODMAN_PROFILE)
    for cap_set in (caps.DEFAULT_CAPS, list(caps.CAPABILITIES), ["CAP_SYS_ADMIN"], []):
        ours = decode(seccomp.compile_filter(default_section(cap_set)))
        theirs = decode(seccomp.compile_filter(seccomp.profile_to_oci(podman, cap_set)))
        for arch, base in (
            (AUDIT_ARCH_X86_64, 0),
            (AUDIT_ARCH_X86_64, X32_SYSCALL_BIT),
            (AUDIT_ARCH_I386, 0),
        ):
            for nr in range(base, base + 600):
                for args in ([], [16, 3, 9], [8], [0xFFFFFFFF]):
                    data = seccomp_data(nr, arch, args)
                    assert run_bpf(ours, data) == run_bpf(theirs, data), (cap_set, arch, nr, args)


def test_filter_size_and_compile_time(capsys: pytest.CaptureFixture[str]) -> None:
    section = default_section()
    seccomp.compile_filter(section)  # tables loaded
    start = time.perf_counter()
    blob = seccomp.compile_filter(section)
    elapsed = time.perf_counter() - start
    native = seccomp.compile_filter({**section, "architectures": []})
    with capsys.disabled():
        print(
            f"\ndefault filter: {len(blob) // 8} instructions (x86_64 only: {len(native) // 8}), "
            f"compiled in {elapsed * 1000:.2f} ms"
        )
    assert len(blob) // 8 < 1024


# --- argument comparisons --------------------------------------------------------------------

OPS = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
    "SCMP_CMP_MASKED_EQ",
]
EDGES = [
    0,
    1,
    5,
    0xFFFFFFFF,
    0x1_00000000,
    0x1_00000005,
    0x2_00000000,
    0xFFFFFFFF_FFFFFFFF,
    0x7FFFFFFF_FFFFFFFF,
]


def one_rule(
    op: str, value: int, two: int = 0, index: int = 1, name: str = "getpriority"
) -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {
                "names": [name],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 77,
                "args": [{"index": index, "value": value, "valueTwo": two, "op": op}],
            },
        ],
    }


@pytest.mark.parametrize("op", OPS)
def test_comparisons_on_64_bit_edges(op: str) -> None:
    for value in EDGES:
        for two in (0, value & 0xFFFF0000FFFF, 5):
            section = one_rule(op, value, two)
            program = decode(seccomp.compile_filter(section))
            for arg in {
                *EDGES,
                value - 1 if value else 0,
                value + 1 if value < 2**64 - 1 else value,
            }:
                for arch, table, wide in (
                    (AUDIT_ARCH_X86_64, X86_64, True),
                    (AUDIT_ARCH_I386, I386, False),
                ):
                    nr = table["getpriority"]
                    got = run_bpf(program, seccomp_data(nr, arch, [0, arg]))
                    assert got == expected(section, nr, table, [0, arg], wide), (
                        op,
                        value,
                        two,
                        arg,
                        arch,
                    )


@st.composite
def sections(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(
            st.sampled_from(
                ["read", "write", "getpid", "socket", "personality", "kill", "mmap", "ioctl"]
            ),
            min_size=1,
            max_size=4,
        )
    )
    values = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1), st.integers(0, 20))
    rules = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "names": st.just(names)
                    | st.lists(st.sampled_from(names), min_size=1, max_size=2),
                    "action": st.sampled_from(
                        [
                            "SCMP_ACT_ALLOW",
                            "SCMP_ACT_ERRNO",
                            "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_TRAP",
                            "SCMP_ACT_LOG",
                        ]
                    ),
                    "errnoRet": st.integers(1, 200),
                    "args": st.lists(
                        st.fixed_dictionaries(
                            {
                                "index": st.integers(0, 5),
                                "value": values,
                                "valueTwo": values,
                                "op": st.sampled_from(OPS),
                            }
                        ),
                        max_size=3,
                    ),
                }
            ),
            max_size=8,
        )
    )
    return {
        "defaultAction": draw(
            st.sampled_from(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL"])
        ),
        "defaultErrnoRet": draw(st.sampled_from([1, 38])),
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": rules,
    }


@settings(max_examples=150, deadline=None)
@given(
    section=sections(),
    args=st.lists(
        st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1), st.integers(0, 20)),
        min_size=6,
        max_size=6,
    ),
)
def test_random_sections_compile_to_their_semantics(
    section: dict[str, Any], args: list[int]
) -> None:
    program = decode(seccomp.compile_filter(section))
    for name in (
        "read",
        "write",
        "getpid",
        "socket",
        "personality",
        "kill",
        "mmap",
        "ioctl",
        "close",
    ):
        nr = X86_64[name]
        assert run_bpf(program, seccomp_data(nr, AUDIT_ARCH_X86_64, args)) == expected(
            section, nr, X86_64, args
        )


def test_long_programs_use_far_jumps() -> None:
    # Many syscalls each with conditions: the search tree's branches exceed the 255
    # instructions a conditional jump can skip.
    rules = [
        {
            "names": [name],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 5,
            "args": [
                {"index": 0, "value": i, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": i, "op": "SCMP_CMP_GT"},
            ],
        }
        for i, name in enumerate(sorted(X86_64)[:150])
    ]
    section = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [], "syscalls": rules}
    program = decode(seccomp.compile_filter(section))
    assert any(code == 0x05 for code, *_ in program)
    for i, name in enumerate(sorted(X86_64)[:150]):
        nr = X86_64[name]
        assert run_bpf(program, seccomp_data(nr, args=[i, i + 1])) == SECCOMP_RET_ERRNO | 5
        assert run_bpf(program, seccomp_data(nr, args=[i, i])) == ALLOW


def test_first_unconditional_rule_wins_and_default_action_rules_are_dropped() -> None:
    section = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["setns"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getpid", "no_such_call_here"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    program = decode(seccomp.compile_filter(section))
    assert verdict(program, "setns") == ALLOW
    assert verdict(program, "getpid") == ALLOW  # ERRNO(EPERM) equals the default: dropped
    assert verdict(program, "read") == EPERM


@pytest.mark.parametrize(
    "section",
    [
        {},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]},
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0}]}],
        },
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": "x"}],
                }
            ],
        },
        {"defaultAction": "SCMP_ACT_FOO"},
    ],
)
def test_compile_rejects_broken_sections(section: dict[str, Any]) -> None:
    with pytest.raises(RlError):
        seccomp.compile_filter(section)


def test_actions() -> None:
    assert seccomp.action_value("SCMP_ACT_KILL") == 0
    assert seccomp.action_value("SCMP_ACT_KILL_THREAD") == 0
    assert seccomp.action_value("SCMP_ACT_KILL_PROCESS") == 0x80000000
    assert seccomp.action_value("SCMP_ACT_TRAP") == 0x00030000
    assert seccomp.action_value("SCMP_ACT_ERRNO") == 0x00050001
    assert seccomp.action_value("SCMP_ACT_ERRNO", 38) == 0x00050026
    assert seccomp.action_value("SCMP_ACT_TRACE", 7) == 0x7FF00007
    assert seccomp.action_value("SCMP_ACT_LOG") == 0x7FFC0000
    assert seccomp.action_value("SCMP_ACT_ALLOW") == 0x7FFF0000
    with pytest.raises(RlError, match="listener"):
        seccomp.action_value("SCMP_ACT_NOTIFY")


# --- profile resolution ----------------------------------------------------------------------


def test_includes_and_excludes() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {
                "names": ["a1"],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]},
            },
            {"names": ["a2"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["a3"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["a4"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
            {"names": ["a5"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
            {"names": ["a6"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.8"}},
            {
                "name": "a7",
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 3, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            },
        ],
    }

    def names(cap_set: list[str], kernel: tuple[int, int]) -> list[str]:
        section = seccomp.profile_to_oci(profile, cap_set, kernel=kernel)
        return [name for rule in section["syscalls"] for name in rule["names"]]

    assert names(["CAP_SYS_ADMIN", "net_admin"], (6, 1)) == ["a1", "a5", "a7"]
    assert names(["CAP_SYS_ADMIN"], (5, 4)) == ["a6", "a7"]
    assert names([], (5, 10)) == ["a2", "a5", "a7"]
    section = seccomp.profile_to_oci(profile, [], kernel=(6, 1))
    assert section["architectures"] == ["SCMP_ARCH_X86_64"]
    assert section["syscalls"][-1]["args"] == [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}]


def test_arch_map_picks_the_native_entry() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        ],
    }
    assert seccomp.profile_to_oci(profile, [])["architectures"] == [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
    ]


# --- loading profiles ------------------------------------------------------------------------


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{bad", "invalid JSON"),
        ([], "JSON object"),
        ({"defaultAction": "SCMP_ACT_FOO"}, "SCMP_ACT_FOO.* is not a valid seccomp action"),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["opne"], "action": "SCMP_ACT_ERRNO"}],
            },
            'unknown syscall "opne"',
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["open"], "action": "SCMP_ACT_BLOCK"}],
            },
            r"syscalls\[0\]",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["open"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "index must be 0..5",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["open"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}],
                    }
                ],
            },
            "not a valid operator",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["open"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "unsigned 64-bit",
        ),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}, "names"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "listener"),
    ],
)
def test_load_profile_rejects(tmp_path: Path, content: Any, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(RlError, match=message) as info:
        seccomp.load_profile(path)
    assert str(path) in str(info.value)


def test_load_profile_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RlError, match=r"opening seccomp profile failed: .*No such file"):
        seccomp.load_profile(tmp_path / "nope.json")


def test_load_profile_accepts_other_architectures_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {
                    "names": ["s390_runtime_instr", "arm_fadvise64_64", "getpid"],
                    "action": "SCMP_ACT_ERRNO",
                }
            ],
        },
    )
    section = seccomp.profile_to_oci(seccomp.load_profile(path), [])
    program = decode(seccomp.compile_filter(section))
    assert verdict(program, "getpid") == EPERM
    assert verdict(program, "read") == ALLOW


def test_default_profile_is_a_valid_profile() -> None:
    seccomp.check_profile(seccomp.default_profile())


@pytest.mark.skipif(not PODMAN_PROFILE.exists(), reason="podman's profile is not installed")
def test_podmans_profile_loads() -> None:
    seccomp.load_profile(PODMAN_PROFILE)


def test_syscall_numbers_agree_with_libseccomp() -> None:
    path = ctypes.util.find_library("seccomp")
    if not path:
        pytest.skip("libseccomp is not installed")
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    names = {name for rule in seccomp.default_profile()["syscalls"] for name in rule["names"]}
    for table, token in ((X86_64, AUDIT_ARCH_X86_64), (I386, AUDIT_ARCH_I386), (X32, 0x4000003E)):
        for name in sorted(names):
            number = lib.seccomp_syscall_resolve_name_arch(token, name.encode())
            if number >= 0:
                assert table.get(name) == number, name
            elif number == -1:  # __NR_SCMP_ERROR: unknown on this architecture
                assert name not in table, name
            # else: one of libseccomp's pseudo numbers for socketcall/ipc multiplexed calls


# --- --security-opt --------------------------------------------------------------------------


def test_security_opts() -> None:
    opts = seccomp.parse_security_opts(
        [
            "seccomp=/tmp/p.json",
            "no-new-privileges",
            "label=disable",
            "mask=/a:/b",
            "unmask=/proc/kcore",
            "apparmor=unconfined",
        ]
    )
    assert opts.seccomp_profile == "/tmp/p.json" and not opts.seccomp_unconfined
    assert opts.no_new_privileges
    assert opts.labels == ["disable"]
    assert opts.mask == ["/a", "/b"] and opts.unmask == ["/proc/kcore"]
    opts = seccomp.parse_security_opts(
        ["seccomp=unconfined", "no-new-privileges=false", "systempaths=unconfined"]
    )
    assert opts.seccomp_unconfined and opts.seccomp_profile is None
    assert not opts.no_new_privileges
    assert opts.unmask == ["ALL"]
    assert seccomp.parse_security_opts(["no-new-privileges=true"]).no_new_privileges


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("foo", 'invalid --security-opt 1: "foo"'),
        ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
        ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
        ("systempaths=x", 'invalid systempaths option "x"'),
    ],
)
def test_security_opts_rejects(option: str, message: str) -> None:
    with pytest.raises(RlError) as info:
        seccomp.parse_security_opts([option])
    assert message in str(info.value)


def test_container_seccomp() -> None:
    default = seccomp.SecurityOptions()
    assert seccomp.container_seccomp(default, caps.DEFAULT_CAPS) == default_section()
    assert seccomp.container_seccomp(default, caps.CAPABILITIES, privileged=True) is None
    unconfined = seccomp.parse_security_opts(["seccomp=unconfined"])
    assert seccomp.container_seccomp(unconfined, caps.DEFAULT_CAPS) is None


def test_privileged_with_an_explicit_profile_keeps_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}],
        },
    )
    opts = seccomp.parse_security_opts([f"seccomp={path}"])
    section = seccomp.container_seccomp(opts, caps.CAPABILITIES, privileged=True)
    assert section is not None and section["syscalls"][0]["names"] == ["getpid"]


def test_syscall_table_is_what_the_generator_makes() -> None:
    import subprocess
    import sys

    if not Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").exists():
        pytest.skip("kernel headers (linux-libc-dev) are not installed")
    root = Path(seccomp.__file__).parents[2]
    generated = subprocess.run(
        [sys.executable, str(root / "packaging" / "gen_syscall_table.py")],
        capture_output=True,
        check=True,
    ).stdout
    assert json.loads(generated) == json.loads(
        (root / "rootless" / "data" / "syscalls.json").read_text()
    )
