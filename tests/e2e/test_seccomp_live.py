"""rl's compiled seccomp filters installed for real, by the unprivileged user, and observed.

Each test runs a small Python program as the test user: it installs a filter compiled by
rootless.runtime.seccomp (no_new_privs first, as an unprivileged process must), makes raw
syscalls through libc's syscall(2) and reports return values and errno as JSON. The kernel, not
a model of it, decides here; tests/unit/test_seccomp.py checks the same programs exhaustively in
a BPF interpreter.
"""

from __future__ import annotations

import errno
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from rootless.runtime import caps, seccomp
from tests.harness import Result, User, rl_binary

pytestmark = pytest.mark.e2e

NR = seccomp.syscall_tables()["x86_64"]
CLONE_NEWUSER = 0x10000000

PROGRAM = textwrap.dedent(
    """
    import ctypes, json, sys
    from rootless import syscalls
    from rootless.runtime import seccomp

    section, calls = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    program = seccomp.compile_filter(section)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    syscalls.seccomp_set_filter(program)
    print("installed", flush=True)
    results = {}
    for label, nr, args in calls:
        ctypes.set_errno(0)
        ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
        results[label] = [ret, ctypes.get_errno() if ret == -1 else 0]
    with open("/proc/self/status") as f:
        status = dict(line.split(":\\t", 1) for line in f.read().splitlines() if ":\\t" in line)
    print(json.dumps({"results": results, "status": {k: v.strip() for k, v in status.items()}}))
    """
)


def run_filtered(
    user: User, section: dict[str, Any], calls: list[tuple[str, int, list[int]]]
) -> Result:
    python = str(Path(rl_binary()).parent / "python")
    return user.run([python, "-c", PROGRAM, json.dumps(section), json.dumps(calls)], timeout=60)


def outcome(result: Result) -> dict[str, Any]:
    assert result.returncode == 0, str(result)
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_default_filter_decides_like_podman(user: User) -> None:
    section = seccomp.profile_to_oci(seccomp.default_profile(), caps.DEFAULT_CAPS)
    calls = [
        ("getpid", NR["getpid"], []),
        ("add_key", NR["add_key"], [0, 0, 0, 0, 0]),
        ("kexec_load", NR["kexec_load"], [0, 0, 0, 0]),
        ("bpf", NR["bpf"], [0, 0, 0]),
        ("keyctl", NR["keyctl"], [0]),
        ("audit_socket", NR["socket"], [16, 3, 9]),
        ("udp_socket", NR["socket"], [2, 2, 0]),
        ("personality_query", NR["personality"], [0xFFFFFFFF]),
        ("personality_no_randomize", NR["personality"], [0x40000]),
        ("setns_bad_fd", NR["setns"], [2**64 - 1, 0]),
        ("unknown_number", 999, []),
        ("unshare_user", NR["unshare"], [CLONE_NEWUSER]),
    ]
    got = outcome(run_filtered(user, section, calls))
    results, status = got["results"], got["status"]
    assert status["Seccomp"] == "2"
    assert status["NoNewPrivs"] == "1"
    assert results["getpid"][0] > 0
    assert results["add_key"] == [-1, errno.ENOSYS]
    assert results["kexec_load"] == [-1, errno.EPERM]
    assert results["bpf"] == [-1, errno.EPERM]
    # keyctl reaches the kernel (which rejects the empty request on its own terms)
    assert results["keyctl"][1] not in (errno.EPERM, errno.ENOSYS)
    assert results["audit_socket"] == [-1, errno.EINVAL]
    assert results["udp_socket"][0] >= 0
    assert results["personality_query"][0] >= 0
    assert results["personality_no_randomize"] == [-1, errno.ENOSYS]
    assert results["setns_bad_fd"] == [-1, errno.EBADF]  # allowed, as in podman 4.3
    assert results["unknown_number"] == [-1, errno.ENOSYS]
    # podman 4.3's profile lets unshare through; the kernel lets an unprivileged user do this
    assert results["unshare_user"] == [0, 0]


def test_dropping_a_capability_closes_its_syscalls(user: User) -> None:
    section = seccomp.profile_to_oci(
        seccomp.default_profile(), caps.effective_caps(drop=["SYS_CHROOT"])
    )
    got = outcome(run_filtered(user, section, [("chroot", NR["chroot"], [0])]))
    assert got["results"]["chroot"] == [-1, errno.EPERM]


def test_64_bit_argument_comparisons_in_the_kernel(user: User) -> None:
    section = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {
                "names": ["getpriority"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 70,
                "args": [{"index": 1, "value": 0xFFFFFFFF, "op": "SCMP_CMP_GT"}],
            },
            {
                "names": ["getpriority"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 71,
                "args": [{"index": 1, "value": 5, "op": "SCMP_CMP_EQ"}],
            },
            {
                "names": ["getpriority"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 72,
                "args": [
                    {
                        "index": 0,
                        "value": 0xF_00000000,
                        "valueTwo": 0x3_00000000,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            },
        ],
    }
    calls = [
        ("high_word", NR["getpriority"], [0, 0x1_00000000]),
        ("low_five", NR["getpriority"], [0, 5]),
        ("high_five", NR["getpriority"], [0, 0x1_00000005]),
        ("masked", NR["getpriority"], [0x3_00000000, 0]),
        ("plain", NR["getpriority"], [0, 0]),
    ]
    results = outcome(run_filtered(user, section, calls))["results"]
    assert results["high_word"] == [-1, 70]
    assert results["low_five"] == [-1, 71]
    assert results["high_five"] == [-1, 70]
    assert results["masked"] == [-1, 72]
    assert results["plain"][0] >= 0


def test_x32_numbers_kill_when_x32_is_not_listed(user: User) -> None:
    section = {
        **seccomp.profile_to_oci(seccomp.default_profile(), caps.DEFAULT_CAPS),
        "architectures": ["SCMP_ARCH_X86_64"],
    }
    x32_getpid = seccomp.syscall_tables()["x32"]["getpid"]
    result = run_filtered(user, section, [("x32_getpid", x32_getpid, [])])
    assert "installed" in result.stdout
    assert "results" not in result.stdout
    assert result.returncode in (-31, 128 + 31), str(result)  # SIGSYS
