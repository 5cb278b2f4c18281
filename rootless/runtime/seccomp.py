"""Seccomp: rl's default profile, docker/podman profile files, and a classic-BPF compiler.

Three pure steps, each testable on its own:
  profile (docker/podman JSON: includes/excludes by capability, architecture, kernel)
    -> `profile_to_oci(profile, caps)` -> OCI `linux.seccomp` (what config.json carries)
    -> `compile_filter(section)` -> packed `struct sock_filter` program for seccomp(2).

Semantics follow libseccomp as crun/runc drive it (checked against podman 4.3 on this machine):
- the program first checks `seccomp_data.arch`; an architecture the section does not list gets
  KILL_PROCESS (libseccomp's "bad arch" action kills too). On x86_64 the x32 ABI shares the
  audit arch and is told apart by syscall numbers with bit 30 set: they are judged by the x32
  table when SCMP_ARCH_X32 is listed, else treated as a bad arch (except nr -1, used by tracers);
- a syscall name unknown on an architecture is skipped there, silently;
- for one syscall, rules with argument conditions are tried in the profile's order, the first
  whose conditions all hold decides; otherwise the first unconditional rule decides; otherwise
  the default action. (libseccomp keeps the first unconditional rule too: podman's profile lists
  `setns` as allowed and again as denied without CAP_SYS_ADMIN, and setns stays allowed.)
  Rules whose action is the default action are dropped, as runc and crun do;
- argument comparisons are unsigned 64-bit (both 32-bit halves compared) on 64-bit ABIs and
  32-bit on i386; SCMP_CMP_MASKED_EQ takes the mask in `value` and the datum in `valueTwo`.
Syscall numbers come from rootless/data/syscalls.json, generated from the kernel headers by
packaging/gen_syscall_table.py (no libseccomp on rl's start-up path; see that script).

Dispatch on the syscall number is a balanced binary search over ranges of numbers that share a
decision (runs of allowed syscalls collapse into one range), so a syscall costs ~8 compares and
the whole default filter stays a few hundred instructions (see tests/unit/test_seccomp.py).
"""

from __future__ import annotations

import errno as errno_codes
import functools
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from rootless.errors import RlError

# <linux/seccomp.h> return values
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
_RET_DATA = 0x0000FFFF

# <linux/audit.h>
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARGS = 16

# classic BPF opcodes
_LD_W_ABS = 0x20
_JMP_JA = 0x05
_JMP_JEQ = 0x15
_JMP_JGT = 0x25
_JMP_JGE = 0x35
_ALU_AND = 0x54
_RET_K = 0x06

ACTIONS = (
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_LOG",
    "SCMP_ACT_ALLOW",
)
OPERATORS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)

# The docker profile names architectures as Go does; this is the one rl runs on.
NATIVE_ARCH = "amd64"
NATIVE_SCMP_ARCH = "SCMP_ARCH_X86_64"


class _Abi(NamedTuple):
    table: str  # key in syscalls.json
    audit_arch: int
    wide_args: bool  # 64-bit syscall arguments


_ABIS = {
    "SCMP_ARCH_X86_64": _Abi("x86_64", AUDIT_ARCH_X86_64, True),
    "SCMP_ARCH_X32": _Abi("x32", AUDIT_ARCH_X86_64, True),
    "SCMP_ARCH_X86": _Abi("x86", AUDIT_ARCH_I386, False),
}


# --- data files ------------------------------------------------------------------------------


def _data(name: str) -> Any:
    # rootless/data ships as package data next to this package (plain files, never zipped).
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", name)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def syscall_tables() -> dict[str, dict[str, int]]:
    """{"x86_64"|"x32"|"x86": {name: number}} plus "other_names": names known only elsewhere."""
    data = _data("syscalls.json")
    tables: dict[str, dict[str, int]] = {abi.table: data[abi.table] for abi in _ABIS.values()}
    tables["other_names"] = dict.fromkeys(data["other_names"], -1)
    return tables


def _known_syscall(name: str) -> bool:
    return any(name in table for table in syscall_tables().values())


# --- the default profile ---------------------------------------------------------------------


def default_profile() -> dict[str, Any]:
    """rl's default profile in the docker/podman profile format (what `load_profile` returns).

    It behaves like podman 4.3's default: syscalls nobody should need fail with EPERM, unknown
    ones with ENOSYS (so that programs fall back, e.g. from clone3 to clone), the rest are
    allowed; a few are allowed only with the capability that guards them in the kernel."""
    policy = _data("seccomp-default.json")
    deny_errno = policy["denied_errno"]
    syscalls: list[dict[str, Any]] = [
        {"names": policy["deny"], "action": "SCMP_ACT_ERRNO", "errnoRet": deny_errno},
        {"names": policy["allow"], "action": "SCMP_ACT_ALLOW"},
    ]
    for value in policy["personality_allowed_values"]:
        syscalls.append(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            }
        )
    for name, arches in policy["allow_only_on"].items():
        syscalls.append(
            {"names": [name], "action": "SCMP_ACT_ALLOW", "includes": {"arches": arches}}
        )
    for cap, names in policy["allow_with_capability"].items():
        syscalls.append({"names": names, "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}})
        syscalls.append(
            {
                "names": names,
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": deny_errno,
                "excludes": {"caps": [cap]},
            }
        )
    # Without CAP_AUDIT_WRITE, audit netlink sockets fail with EINVAL (as if the kernel had no
    # audit), every other socket is allowed.
    audit = policy["audit_netlink_socket"]
    family = {"index": 0, "value": audit["family"], "valueTwo": 0}
    protocol = {"index": 2, "value": audit["protocol"], "valueTwo": 0}
    without = {"caps": [audit["capability"]]}
    syscalls += [
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": audit["errno"],
            "args": [{**family, "op": "SCMP_CMP_EQ"}, {**protocol, "op": "SCMP_CMP_EQ"}],
            "excludes": without,
        },
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{**protocol, "op": "SCMP_CMP_NE"}],
            "excludes": without,
        },
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{**family, "op": "SCMP_CMP_NE"}],
            "excludes": without,
        },
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "includes": without},
    ]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": policy["unknown_syscall_errno"],
        "archMap": [
            {
                "architecture": NATIVE_SCMP_ARCH,
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            }
        ],
        "syscalls": syscalls,
    }


# --- loading and checking profiles -----------------------------------------------------------


def load_profile(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a docker/podman seccomp profile (`--security-opt seccomp=PATH`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise RlError(f"opening seccomp profile failed: {path}: {exc.strerror}") from None
    try:
        profile = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RlError(f"loading seccomp profile ({path}) failed: invalid JSON: {exc}") from None
    try:
        check_profile(profile)
    except RlError as exc:
        raise RlError(f"loading seccomp profile ({path}) failed: {exc}") from None
    return profile  # type: ignore[no-any-return]


def check_profile(profile: Any) -> None:
    """RlError naming the first thing wrong with a profile (a pure check on the parsed JSON)."""
    if not isinstance(profile, dict):
        raise RlError("the profile must be a JSON object")
    _check_action(profile.get("defaultAction"), "defaultAction")
    _check_errno(profile.get("defaultErrnoRet"), "defaultErrnoRet")
    for key in ("architectures", "flags"):
        if not _str_list(profile.get(key, [])):
            raise RlError(f"{key} must be a list of strings")
    arch_map = profile.get("archMap") or []
    if not isinstance(arch_map, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("architecture"), str) for entry in arch_map
    ):
        raise RlError("archMap must be a list of {architecture, subArchitectures}")
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise RlError("syscalls must be a list")
    for i, rule in enumerate(syscalls):
        _check_rule(rule, f"syscalls[{i}]")


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _check_action(action: Any, where: str) -> None:
    if action == "SCMP_ACT_NOTIFY":
        raise RlError(f"{where}: SCMP_ACT_NOTIFY needs a seccomp listener, which rl does not run")
    if action not in ACTIONS:
        raise RlError(f"{where}: {action!r} is not a valid seccomp action ({', '.join(ACTIONS)})")


def _check_errno(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, int) or not 0 <= value <= _RET_DATA):
        raise RlError(f"{where}: {value!r} is not an errno number")


def _check_rule(rule: Any, where: str) -> None:
    if not isinstance(rule, dict):
        raise RlError(f"{where} must be an object")
    names = list(rule.get("names") or [])
    if "name" in rule:
        names.append(rule["name"])
    if not names or not all(isinstance(name, str) for name in names):
        raise RlError(f"{where} must name its syscalls in names: [...]")
    for name in names:
        if not _known_syscall(name):
            raise RlError(f'{where}: unknown syscall "{name}"')
    _check_action(rule.get("action"), where)
    _check_errno(rule.get("errnoRet"), where)
    args = rule.get("args") or []
    if not isinstance(args, list):
        raise RlError(f"{where}: args must be a list")
    for j, arg in enumerate(args):
        at = f"{where}.args[{j}]"
        if not isinstance(arg, dict):
            raise RlError(f"{at} must be an object")
        if not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
            raise RlError(f"{at}: index must be 0..5")
        for key in ("value", "valueTwo"):
            value = arg.get(key, 0)
            if not isinstance(value, int) or not 0 <= value < 2**64:
                raise RlError(f"{at}: {key} must be an unsigned 64-bit number")
        if arg.get("op") not in OPERATORS:
            raise RlError(
                f"{at}: {arg.get('op')!r} is not a valid operator ({', '.join(OPERATORS)})"
            )
    for key in ("includes", "excludes"):
        filters = rule.get(key) or {}
        if not isinstance(filters, dict):
            raise RlError(f"{where}: {key} must be an object")
        for cap in filters.get("caps") or []:
            if not isinstance(cap, str):
                raise RlError(f"{where}: {key}.caps must be capability names")
        if not _str_list(filters.get("arches") or []):
            raise RlError(f"{where}: {key}.arches must be a list of strings")


# --- profile -> OCI section ------------------------------------------------------------------


def profile_to_oci(
    profile: Mapping[str, Any],
    caps: Iterable[str],
    *,
    arch: str = NATIVE_ARCH,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Resolve a profile for a container with capability set `caps` (its bounding set) on `arch`
    and kernel `kernel` (major, minor; this machine's when None) into OCI `linux.seccomp`."""
    have = {_cap_name(cap) for cap in caps}
    running = kernel if kernel is not None else _kernel_version()
    section: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        section["defaultErrnoRet"] = profile["defaultErrnoRet"]
    section["architectures"] = _architectures(profile)
    if profile.get("flags"):
        section["flags"] = list(profile["flags"])
    rules = []
    for rule in profile.get("syscalls") or ():
        if not _applies(rule, have, arch, running):
            continue
        names = list(rule.get("names") or []) + ([rule["name"]] if rule.get("name") else [])
        entry: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            entry["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            entry["args"] = [_oci_arg(arg) for arg in rule["args"]]
        rules.append(entry)
    section["syscalls"] = rules
    return section


def _cap_name(cap: str) -> str:
    upper = cap.upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _kernel_version() -> tuple[int, int]:
    release = os.uname().release
    parts = [*release.split("-")[0].split("."), "0"][:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


def _version(text: str) -> tuple[int, int]:
    parts = [*text.split("."), "0"][:2]
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def _architectures(profile: Mapping[str, Any]) -> list[str]:
    for entry in profile.get("archMap") or ():
        if entry.get("architecture") == NATIVE_SCMP_ARCH:
            return [NATIVE_SCMP_ARCH, *entry.get("subArchitectures", [])]
    return list(profile.get("architectures") or [])


def _applies(rule: Mapping[str, Any], caps: set[str], arch: str, kernel: tuple[int, int]) -> bool:
    """Docker's rule: includes must all hold (every cap present, arch listed, kernel new enough),
    excludes must all fail (no listed cap present, arch not listed, kernel older)."""
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if excludes.get("arches") and arch in excludes["arches"]:
        return False
    if any(_cap_name(cap) not in caps for cap in includes.get("caps") or ()):
        return False
    if any(_cap_name(cap) in caps for cap in excludes.get("caps") or ()):
        return False
    if includes.get("minKernel") and kernel < _version(includes["minKernel"]):
        return False
    return not (excludes.get("minKernel") and kernel >= _version(excludes["minKernel"]))


def _oci_arg(arg: Mapping[str, Any]) -> dict[str, Any]:
    entry = {"index": arg["index"], "value": arg.get("value", 0), "op": arg["op"]}
    if arg.get("valueTwo"):
        entry["valueTwo"] = arg["valueTwo"]
    return entry


# --- OCI section -> BPF ----------------------------------------------------------------------

Insn = tuple[int, int, int, int]  # code, jt, jf, k


class _Condition(NamedTuple):
    arg: int  # which syscall argument, 0..5
    op: str
    value: int
    value_two: int


class _Chain(NamedTuple):
    """How one syscall with argument conditions is decided: the first rule whose conditions
    all hold gives its action, else `otherwise`."""

    rules: tuple[tuple[tuple[_Condition, ...], int], ...]
    otherwise: int


_Decision = int | _Chain  # a SECCOMP_RET_* value, or a chain to evaluate


def action_value(action: str, errno_ret: int | None = None) -> int:
    """An OCI action name -> SECCOMP_RET_* value (ERRNO and TRACE default to EPERM)."""
    _check_action(action, "action")
    data = (errno_codes.EPERM if errno_ret is None else errno_ret) & _RET_DATA
    return {
        "SCMP_ACT_KILL": SECCOMP_RET_KILL_THREAD,
        "SCMP_ACT_KILL_THREAD": SECCOMP_RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": SECCOMP_RET_KILL_PROCESS,
        "SCMP_ACT_TRAP": SECCOMP_RET_TRAP,
        "SCMP_ACT_ERRNO": SECCOMP_RET_ERRNO | data,
        "SCMP_ACT_TRACE": SECCOMP_RET_TRACE | data,
        "SCMP_ACT_LOG": SECCOMP_RET_LOG,
        "SCMP_ACT_ALLOW": SECCOMP_RET_ALLOW,
    }[action]


def compile_filter(section: Mapping[str, Any]) -> bytes:
    """OCI `linux.seccomp` -> packed BPF program (8 bytes per instruction) for seccomp(2)."""
    return b"".join(struct.pack("<HBBI", *insn) for insn in compile_program(section))


def compile_program(section: Mapping[str, Any]) -> list[Insn]:
    """The filter as (code, jt, jf, k) instructions."""
    try:
        return _compile(section)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RlError(f"invalid linux.seccomp section in the container's spec: {exc!r}") from None


def _compile(section: Mapping[str, Any]) -> list[Insn]:
    default = action_value(section["defaultAction"], section.get("defaultErrnoRet"))
    listed = [_ABIS[name] for name in section.get("architectures") or () if name in _ABIS]
    abis = {"x86_64": _ABIS[NATIVE_SCMP_ARCH]} | {abi.table: abi for abi in listed}
    rules = section.get("syscalls") or ()

    x32 = (
        _dispatch(_decisions(rules, abis["x32"], default), default, True)
        if "x32" in abis
        else [
            _jump(_JMP_JEQ, 0xFFFFFFFF, 0, 1),  # nr -1: a tracer skipped the syscall
            _ret(default),
            _ret(SECCOMP_RET_KILL_PROCESS),
        ]
    )
    native = [
        _load(_OFF_NR),
        *_branch(
            _JMP_JGE,
            X32_SYSCALL_BIT,
            x32,
            _dispatch(_decisions(rules, abis["x86_64"], default), default, True),
        ),
    ]
    bad_arch = [_ret(SECCOMP_RET_KILL_PROCESS)]
    other = bad_arch
    if "x86" in abis:
        i386 = [_load(_OFF_NR), *_dispatch(_decisions(rules, abis["x86"], default), default, False)]
        other = _branch(_JMP_JEQ, AUDIT_ARCH_I386, i386, bad_arch)
    program = [_load(_OFF_ARCH), *_branch(_JMP_JEQ, AUDIT_ARCH_X86_64, native, other)]
    if len(program) > 4096:
        raise RlError(
            f"the seccomp profile compiles to {len(program)} BPF instructions, more than the "
            "kernel's limit of 4096; simplify the profile"
        )
    return program


def _decisions(rules: Sequence[Mapping[str, Any]], abi: _Abi, default: int) -> dict[int, _Decision]:
    table = syscall_tables()[abi.table]
    conditional: dict[int, list[tuple[tuple[_Condition, ...], int]]] = {}
    unconditional: dict[int, int] = {}
    for rule in rules:
        action = action_value(rule["action"], rule.get("errnoRet"))
        if action == default:
            continue
        conditions = tuple(
            _Condition(arg["index"], arg["op"], arg.get("value", 0), arg.get("valueTwo", 0))
            for arg in rule.get("args") or ()
        )
        for name in rule.get("names") or ():
            number = table.get(name)
            if number is None:
                continue
            if conditions:
                conditional.setdefault(number, []).append((conditions, action))
            else:
                unconditional.setdefault(number, action)
    decisions: dict[int, _Decision] = dict(unconditional)
    for number, chain in conditional.items():
        decisions[number] = _Chain(tuple(chain), unconditional.get(number, default))
    return decisions


def _dispatch(decisions: Mapping[int, _Decision], default: int, wide: bool) -> list[Insn]:
    """Code deciding on A = syscall number: a binary search over ranges of numbers that share
    one decision (runs of allowed syscalls become one range)."""
    segments: list[tuple[int, _Decision]] = []  # (first number, decision), ascending

    def add(start: int, decision: _Decision) -> None:
        if segments and segments[-1][0] == start:
            segments.pop()
        if not segments or segments[-1][1] != decision:
            segments.append((start, decision))

    add(0, default)
    for number in sorted(decisions):
        add(number, decisions[number])
        if number < 0xFFFFFFFF:
            add(number + 1, default)
    return _search(segments, wide)


def _search(segments: Sequence[tuple[int, _Decision]], wide: bool) -> list[Insn]:
    if len(segments) == 1:
        decision = segments[0][1]
        return _decide(decision, wide) if isinstance(decision, _Chain) else [_ret(decision)]
    middle = len(segments) // 2
    return _branch(
        _JMP_JGE,
        segments[middle][0],
        _search(segments[middle:], wide),
        _search(segments[:middle], wide),
    )


def _decide(chain: _Chain, wide: bool) -> list[Insn]:
    """One rule after the other: each falls through to the next when a condition fails."""
    code = [_ret(chain.otherwise)]
    for conditions, action in reversed(chain.rules):
        block = [_ret(action)]
        for condition in reversed(conditions):
            block = _condition(condition, len(block), wide) + block
        code = block + code
    return code


def _condition(cond: _Condition, fail: int, wide: bool) -> list[Insn]:
    """Falls through when `cond` holds, else jumps `fail` instructions past its own end."""
    lo_off = _OFF_ARGS + 8 * cond.arg
    hi_off = lo_off + 4
    if cond.op == "SCMP_CMP_MASKED_EQ":
        mask, datum = cond.value, cond.value_two
        masked_low = [
            _load(lo_off),
            (_ALU_AND, 0, 0, mask & 0xFFFFFFFF),
            _jump(_JMP_JEQ, datum & 0xFFFFFFFF, 0, fail),
        ]
        if not wide:
            return masked_low
        return [
            _load(hi_off),
            (_ALU_AND, 0, 0, mask >> 32),
            _jump(_JMP_JEQ, datum >> 32, 0, fail + 3),
            *masked_low,
        ]
    value = cond.value
    hi, lo = value >> 32, value & 0xFFFFFFFF
    # (jump for the low word, whether its "true" branch means the condition holds)
    last: dict[str, tuple[int, bool]] = {
        "SCMP_CMP_EQ": (_JMP_JEQ, True),
        "SCMP_CMP_NE": (_JMP_JEQ, False),
        "SCMP_CMP_GT": (_JMP_JGT, True),
        "SCMP_CMP_GE": (_JMP_JGE, True),
        "SCMP_CMP_LT": (_JMP_JGE, False),
        "SCMP_CMP_LE": (_JMP_JGT, False),
    }
    jump, holds_if_true = last[cond.op]
    low = [_load(lo_off), _jump(jump, lo, 0, fail) if holds_if_true else _jump(jump, lo, fail, 0)]
    if not wide:
        return low
    if cond.op == "SCMP_CMP_EQ":
        high = [_load(hi_off), _jump(_JMP_JEQ, hi, 0, fail + 2)]
    elif cond.op == "SCMP_CMP_NE":
        high = [_load(hi_off), _jump(_JMP_JEQ, hi, 0, 2)]  # high words differ: holds
    elif cond.op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        # high above: holds; high below: fails; equal: the low word decides
        high = [_load(hi_off), _jump(_JMP_JGT, hi, 3, 0), _jump(_JMP_JEQ, hi, 0, fail + 2)]
    else:  # LT, LE
        high = [_load(hi_off), _jump(_JMP_JGT, hi, fail + 3, 0), _jump(_JMP_JEQ, hi, 0, 2)]
    return high + low


def _branch(op: int, k: int, then: list[Insn], otherwise: list[Insn]) -> list[Insn]:
    """`if A <op> k: then else: otherwise`; both blocks end in returns. Conditional jumps reach
    only 255 instructions, so a long `otherwise` is stepped over with an unconditional jump."""
    if len(otherwise) <= 255:
        return [_jump(op, k, len(otherwise), 0), *otherwise, *then]
    return [_jump(op, k, 0, 1), (_JMP_JA, 0, 0, len(otherwise)), *otherwise, *then]


def _jump(op: int, k: int, jt: int, jf: int) -> Insn:
    if not (0 <= jt <= 255 and 0 <= jf <= 255):
        raise RlError("a seccomp rule has too many argument conditions to compile")
    return (op, jt, jf, k & 0xFFFFFFFF)


def _load(offset: int) -> Insn:
    return (_LD_W_ABS, 0, 0, offset)


def _ret(value: int) -> Insn:
    return (_RET_K, 0, 0, value)


# --- --security-opt --------------------------------------------------------------------------


class SecurityOptions:
    """podman's --security-opt values. (A plain class: this module is imported by every
    `rl run`, and a dataclass costs ~0.5 ms to create at import.)"""

    def __init__(self) -> None:
        self.seccomp_profile: str | None = None  # a profile path; None = the default profile
        self.seccomp_unconfined = False
        self.no_new_privileges = False
        self.apparmor: str | None = None  # accepted; rl applies no AppArmor profile
        self.labels: list[str] = []  # accepted; no SELinux labelling in rl
        self.mask: list[str] = []
        self.unmask: list[str] = []
        self.proc_opts: list[str] = []

    def __repr__(self) -> str:
        return f"SecurityOptions({self.__dict__!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecurityOptions) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was


def parse_security_opts(options: Sequence[str]) -> SecurityOptions:
    """Parse --security-opt values with podman 4.3's rules and messages."""
    result = SecurityOptions()
    for option in options:
        if option == "no-new-privileges":
            result.no_new_privileges = True
            continue
        key, sep, value = option.partition("=")
        if not sep:
            raise RlError(f'invalid --security-opt 1: "{option}"')
        if key == "seccomp":
            result.seccomp_unconfined = value == "unconfined"
            result.seccomp_profile = None if value == "unconfined" else value
        elif key == "no-new-privileges":
            if value not in ("true", "false"):
                raise RlError(f'invalid --security-opt 2: "{option}"')
            result.no_new_privileges = value == "true"
        elif key == "label":
            result.labels.append(value)
        elif key == "apparmor":
            result.apparmor = value
        elif key == "mask":
            result.mask += [path for path in value.split(":") if path]
        elif key == "unmask":
            result.unmask += [path for path in value.split(":") if path]
        elif key == "systempaths":
            if value != "unconfined":
                raise RlError(
                    f'invalid systempaths option "{value}", only `unconfined` is supported'
                )
            result.unmask.append("ALL")
        elif key == "proc-opts":
            result.proc_opts = value.split(",")
        else:
            raise RlError(f'invalid --security-opt 2: "{option}"')
    return result


def container_seccomp(
    options: SecurityOptions, caps: Iterable[str], privileged: bool = False
) -> dict[str, Any] | None:
    """The container's `linux.seccomp` section, or None for none (podman: `seccomp=unconfined`,
    or --privileged without an explicit profile)."""
    if options.seccomp_unconfined or (privileged and options.seccomp_profile is None):
        return None
    profile = (
        load_profile(options.seccomp_profile) if options.seccomp_profile else default_profile()
    )
    return profile_to_oci(profile, caps)
