"""The container process's identity and limits, applied just before execve.

Order matters and follows crun/runc: rlimits; bounding set; PR_SET_KEEPCAPS so the permitted
set survives the switch to a non-root user; groups, gid, uid; capset; ambient set;
no_new_privs; seccomp (last, so that nothing rl does afterwards needs a syscall the filter
forbids; without no_new_privs the kernel wants CAP_SYS_ADMIN for it, which an unprivileged
container user no longer has, so then it goes in before the user switch); execve with a PATH
lookup inside the container.

Everything runs after pivot_root: the modules used here are imported at the top, because a lazy
import would now look for Python's files inside the image.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
from collections.abc import Mapping, Sequence
from typing import NamedTuple, NoReturn

from rootless import syscalls as sc
from rootless.errors import EXIT_CANNOT_EXECUTE, EXIT_ERROR, EXIT_NOT_FOUND

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Besides SIGKILL/SIGSTOP, which cannot be changed.
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


class Capabilities(NamedTuple):
    """The five capability sets as bit masks (bit n = capability number n)."""

    bounding: int = 0
    effective: int = 0
    permitted: int = 0
    inheritable: int = 0
    ambient: int = 0


class ProcessPlan(NamedTuple):
    """What the spec's `process` section asks for, in the form the syscalls take."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    umask: int | None
    capabilities: Capabilities
    rlimits: tuple[tuple[int, int, int, str], ...]  # (resource, soft, hard, name)
    no_new_privileges: bool
    seccomp: bytes | None  # packed BPF
    cap_last: int = 40  # /proc/sys/kernel/cap_last_cap, read in rl
    seccomp_flags: int = 0


class ExecFailure(Exception):
    """execve failed: `code` is what podman exits with (126/127), str() its message."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def reset_signals() -> None:
    """Default dispositions and an empty mask, as a fresh process expects: Python ignores
    SIGPIPE and SIGXFSZ, and ignored signals survive execve."""
    for sig in signal.valid_signals():
        if sig in _UNCATCHABLE:
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # realtime signals glibc reserves for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def apply_rlimits(rlimits: Sequence[tuple[int, int, int, str]]) -> None:
    for res, soft, hard, name in rlimits:
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as exc:
            current = resource.getrlimit(res)[1]
            raise OSError(
                errno.EPERM,
                f"setrlimit {name} to {soft}:{hard}: {exc} (rl's own hard limit is {current}; "
                "a rootless container cannot raise it)",
            ) from exc


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def switch_user(plan: ProcessPlan, cap_last: int) -> None:
    """Bounding set, user and groups, then the capability sets."""
    caps = plan.capabilities
    for cap in range(cap_last + 1):
        if not caps.bounding >> cap & 1:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    if _setgroups_allowed():
        os.setgroups(list(plan.additional_gids))
    elif plan.additional_gids:
        raise OSError(
            errno.EPERM,
            "additional groups need subordinate gids (setgroups is denied in a single-id "
            "user namespace)",
        )
    os.setresgid(plan.gid, plan.gid, plan.gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    sc.capset(caps.effective, caps.permitted, caps.inheritable)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(cap_last + 1):
        if caps.ambient >> cap & 1:
            try:
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
            except OSError:
                pass  # not in permitted+inheritable: the kernel refuses, crun ignores it too
    if plan.umask is not None:
        os.umask(plan.umask)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True


def apply_process(plan: ProcessPlan) -> None:
    """Everything but the exec: identity, capabilities, no_new_privs, seccomp."""
    apply_rlimits(plan.rlimits)
    cap_last = plan.cap_last
    early_seccomp = plan.seccomp is not None and not plan.no_new_privileges
    if early_seccomp:
        assert plan.seccomp is not None
        sc.seccomp_set_filter(plan.seccomp, plan.seccomp_flags)
    switch_user(plan, cap_last)
    # The credential change cleared the parent-death signal: re-arm it (before a filter that
    # might not allow prctl).
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if plan.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    if plan.seccomp is not None and not early_seccomp:
        sc.seccomp_set_filter(plan.seccomp, plan.seccomp_flags)


def env_dict(env: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The container user's home from the image's /etc/passwd, "/" if it has none (what crun
    and runc put in HOME when the spec's environment lacks it)."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid) and fields[5]:
                    return fields[5]
    except OSError:
        pass
    return "/"


def find_executable(name: str, env: Mapping[str, str]) -> str:
    """runc/crun's lookup: a name with a slash is used as is, else the first executable
    regular file in $PATH (the container's)."""
    if "/" in name:
        return name
    for directory in (env.get("PATH") or DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    raise ExecFailure(
        f"executable file `{name}` not found in $PATH: No such file or directory: "
        "OCI runtime attempted to invoke a command that was not found",
        EXIT_NOT_FOUND,
    )


def exec_process(args: Sequence[str], env_list: Sequence[str], uid: int) -> NoReturn:
    """execve the container's command; ExecFailure with podman's message when it cannot."""
    if not args:
        raise ExecFailure("no command specified: OCI runtime error", EXIT_ERROR)
    env = env_dict(env_list)
    if "HOME" not in env:
        env["HOME"] = home_of(uid)
    path = find_executable(args[0], env)
    try:
        os.execve(path, list(args), env)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ExecFailure(
                f"executable file `{args[0]}` not found: No such file or directory: "
                "OCI runtime attempted to invoke a command that was not found",
                EXIT_NOT_FOUND,
            ) from exc
        raise ExecFailure(
            f"open executable `{args[0]}`: {exc.strerror}: OCI permission denied",
            EXIT_CANNOT_EXECUTE,
        ) from exc
