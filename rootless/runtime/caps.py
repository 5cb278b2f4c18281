"""Linux capabilities: names, bits, and podman's rules for --cap-add/--cap-drop/--privileged.

Pure functions over capability names ("CAP_NET_ADMIN"); the executor turns the OCI
`process.capabilities` lists into masks with `mask()` and applies them with capset/prctl.
Podman's rules (containers/common MergeCapabilities, podman 4.3 behaviour checked by running it):
- names are case-insensitive, with or without the CAP_ prefix; "ALL" means every capability;
- --cap-drop ALL keeps only what --cap-add names; --cap-add ALL starts from every capability;
- naming one capability in both lists is an error; so is adding and dropping ALL;
- --privileged grants every capability and ignores --cap-add/--cap-drop;
- a container user other than root gets the capabilities only in its bounding set, except the
  ones named in --cap-add, which go to its effective, permitted, inheritable and ambient sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rootless.errors import RlError

# Index = bit number (linux/capability.h).
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NUMBERS = {name: bit for bit, name in enumerate(CAPABILITIES)}
ALL = "ALL"

# containers.conf default_capabilities as podman 4.3 ships it: CapEff 00000000800405fb.
DEFAULT_CAPS: list[str] = [
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


def normalize(name: str) -> str:
    """ "net_admin", "CAP_NET_ADMIN", "Cap_Net_Admin" -> "CAP_NET_ADMIN"; "all" -> "ALL"."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    canonical = upper if upper.startswith("CAP_") else "CAP_" + upper
    if canonical not in _NUMBERS:
        raise RlError(f'"{canonical}": unknown capability')
    return canonical


def cap_number(name: str) -> int:
    """The bit number of a capability name (any spelling `normalize` accepts, not ALL)."""
    canonical = normalize(name)
    if canonical == ALL:
        raise RlError('"ALL" is not a single capability')
    return _NUMBERS[canonical]


def mask(names: Iterable[str]) -> int:
    """Capability names -> 64-bit mask (as /proc/PID/status CapEff shows it, in hex)."""
    result = 0
    for name in names:
        result |= 1 << cap_number(name)
    return result


def names(bits: int) -> list[str]:
    """Mask -> capability names in bit order; bits beyond the table are ignored."""
    return [name for bit, name in enumerate(CAPABILITIES) if bits >> bit & 1]


def _normalize_all(requested: Iterable[str]) -> list[str]:
    return sorted({normalize(name) for name in requested})


def effective_caps(
    add: Sequence[str] = (),
    drop: Sequence[str] = (),
    privileged: bool = False,
    *,
    default: Sequence[str] = DEFAULT_CAPS,
    bounding: Iterable[str] | None = None,
) -> list[str]:
    """The container's capability set (sorted like podman's spec) from --cap-add/--cap-drop.

    `bounding` is rl's own bounding set when known: capabilities outside it cannot be granted
    and are left out, as podman does."""
    if privileged:
        result = list(CAPABILITIES)
    else:
        result = _merge(_normalize_all(default), _normalize_all(add), _normalize_all(drop))
    if bounding is not None:
        allowed = {normalize(name) for name in bounding}
        result = [name for name in result if name in allowed]
    return sorted(result)


def _merge(base: list[str], add: list[str], drop: list[str]) -> list[str]:
    if ALL in drop:
        if ALL in add:
            raise RlError("adding all caps and removing all caps not allowed")
        return add
    if ALL in add:
        base, add = list(CAPABILITIES), []
    for name in add:
        if name in drop:
            raise RlError(f'capability "{name}" cannot be dropped and added')
    kept = [name for name in base if name not in drop]
    return kept + [name for name in add if name not in kept]


def added_caps(add: Sequence[str]) -> list[str]:
    """What --cap-add grants a non-root container user (ALL = every capability)."""
    requested = _normalize_all(add)
    return list(CAPABILITIES) if ALL in requested else requested


def process_capabilities(
    caps: Sequence[str], uid: int, cap_add: Sequence[str] = ()
) -> dict[str, list[str]]:
    """The OCI `process.capabilities` section for a container whose process runs as `uid`.

    `caps` is `effective_caps(...)`. Root gets them as bounding, effective and permitted sets;
    another user keeps them only as the bounding set and gets just the --cap-add ones (within
    the bounding set) in every set, ambient included, so that they survive its execve (also
    with --privileged, as podman 4.3 does)."""
    bounding = sorted(caps)
    if uid == 0:
        return {"bounding": bounding, "effective": bounding, "permitted": bounding}
    granted = [name for name in added_caps(cap_add) if name in bounding]
    return {
        "bounding": bounding,
        "effective": granted,
        "permitted": granted,
        "inheritable": granted,
        "ambient": granted,
    }
