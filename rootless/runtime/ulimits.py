"""--ulimit flags and the default rlimits of a rootless container, as OCI `process.rlimits`.

Podman 4.3's behaviour, checked by running it rootless:
- `name=soft[:hard]` with decimal integers, hard defaulting to soft, -1 meaning unlimited
  (2**64-1 in the spec); lower-case names only; soft <= hard;
- without --ulimit nofile/nproc the container gets RLIMIT_NOFILE = rl's own hard limit (podman
  raises its soft limit to the hard one at start) and RLIMIT_NPROC = kernel.pid_max when that is
  within the hard limit, else the current nproc limits; `--ulimit host` sets no rlimits at all
  (the container inherits rl's);
- a hard limit above the caller's cannot be set without privilege in the initial user namespace;
  podman leaves that to the OCI runtime's failure, rl says so before starting (`check_raisable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rootless.errors import RlError

UNLIMITED = 2**64 - 1  # RLIM_INFINITY as the runtime spec writes it
_PODMAN_DEFAULT_MAX = 1048576  # podman's RLimitDefaultValue

RLIMIT_TYPES: dict[str, str] = {
    "as": "RLIMIT_AS",
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS",
    "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
}

# <asm-generic/resource.h> numbers; Python's resource module lacks RLIMIT_LOCKS, and
# resource.setrlimit takes these numbers as they are.
RLIMIT_NUMBERS: dict[str, int] = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}

Rlimit = dict[str, str | int]


def rlimit_number(rtype: str) -> int:
    """ "RLIMIT_NOFILE" -> 7, for setrlimit; RlError for a type Linux does not have."""
    number = RLIMIT_NUMBERS.get(rtype)
    if number is None:
        raise RlError(f"unknown rlimit type {rtype!r} (known: {', '.join(RLIMIT_NUMBERS)})")
    return number


def _bad(flag: str, why: str) -> RlError:
    return RlError(f'ulimit option "{flag}" requires name=SOFT:HARD, failed to be parsed: {why}')


def _limit(flag: str, text: str) -> int:
    if not text or not text.lstrip("-").isdigit() or not text.isascii():
        raise _bad(flag, f'invalid number "{text}"')
    value = int(text)
    if value == -1:
        return UNLIMITED
    if value < 0:
        raise _bad(flag, f"{value} is negative; use -1 for unlimited")
    if value > UNLIMITED:
        raise _bad(flag, f"{value} is out of range")
    return value


def parse_ulimit(flag: str) -> Rlimit:
    """ "nofile=1024:2048" -> {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}."""
    name, sep, values = flag.partition("=")
    if not sep:
        raise _bad(flag, f"invalid ulimit argument: {flag}")
    rtype = RLIMIT_TYPES.get(name)
    if rtype is None:
        raise _bad(flag, f"invalid ulimit type: {name}")
    parts = values.split(":")
    if len(parts) > 2:
        raise _bad(
            flag,
            f"too many limit value arguments - {values}, can only have up to two, `soft[:hard]`",
        )
    soft = _limit(flag, parts[0])
    hard = _limit(flag, parts[1]) if len(parts) == 2 else soft
    if soft > hard:
        raise _bad(
            flag, f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )
    return {"type": rtype, "hard": hard, "soft": soft}


def default_rlimits(
    nofile: tuple[int, int], nproc: tuple[int, int], pid_max: int | None
) -> list[Rlimit]:
    """Podman's rootless defaults from rl's own (soft, hard) limits (RLIM_INFINITY as -1 or
    UNLIMITED) and kernel.pid_max (None when unreadable)."""
    nofile_hard = min(_unsigned(nofile[1]), _PODMAN_DEFAULT_MAX)
    nproc_soft, nproc_hard = _unsigned(nproc[0]), _unsigned(nproc[1])
    if pid_max is not None and pid_max <= nproc_hard:
        nproc_soft = nproc_hard = pid_max
    return [
        {"type": "RLIMIT_NOFILE", "hard": nofile_hard, "soft": nofile_hard},
        {"type": "RLIMIT_NPROC", "hard": nproc_hard, "soft": nproc_soft},
    ]


def _unsigned(value: int) -> int:
    return UNLIMITED if value < 0 else value


def container_rlimits(flags: Sequence[str], defaults: Sequence[Rlimit]) -> list[Rlimit] | None:
    """The spec's `process.rlimits` for the --ulimit flags given (in order, a later flag for the
    same resource replacing an earlier one), followed by the defaults for resources the flags do
    not set. None for `--ulimit host`: set nothing, inherit rl's limits."""
    if "host" in flags:
        if len(flags) > 1:
            raise RlError("--ulimit host cannot be combined with other --ulimit options")
        return None
    chosen: dict[str | int, Rlimit] = {}
    for flag in flags:
        entry = parse_ulimit(flag)
        chosen[entry["type"]] = entry
    for entry in defaults:
        chosen.setdefault(entry["type"], dict(entry))
    return list(chosen.values())


def check_raisable(rlimits: Sequence[Rlimit], current_hard: Mapping[str, int]) -> None:
    """Refuse hard limits above rl's own: without privilege in the initial user namespace the
    container could not set them (setrlimit fails with EPERM at start)."""
    for entry in rlimits:
        rtype, hard = str(entry["type"]), int(entry["hard"])
        limit = current_hard.get(rtype)
        if limit is None or _unsigned(limit) >= hard:
            continue
        short = rtype.removeprefix("RLIMIT_").lower()
        shown = "unlimited" if hard == UNLIMITED else str(hard)
        raise RlError(
            f"ulimit {short}: hard limit {shown} is above your own hard limit {limit}, which an "
            f"unprivileged user cannot raise; use --ulimit {short}=SOFT:HARD with HARD <= {limit}"
        )


def host_default_rlimits() -> list[Rlimit]:
    """`default_rlimits` for this process and kernel."""
    import resource

    try:
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max: int | None = int(f.read())
    except (OSError, ValueError):
        pid_max = None
    return default_rlimits(
        resource.getrlimit(resource.RLIMIT_NOFILE),
        resource.getrlimit(resource.RLIMIT_NPROC),
        pid_max,
    )


def host_hard_limits() -> dict[str, int]:
    """rl's own hard limits by RLIMIT_ name (none for real root, who may raise them)."""
    import os
    import resource

    if os.geteuid() == 0:
        return {}
    return {
        rtype: _unsigned(resource.getrlimit(number)[1]) for rtype, number in RLIMIT_NUMBERS.items()
    }
