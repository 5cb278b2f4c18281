"""Every libc/syscall binding rl needs, in one place, each errno-checked.

Python 3.11 has no os.unshare/os.setns and no mount/pivot_root at all, so they come from libc
through ctypes. Nothing else in rl calls libc directly: add a wrapper here instead. Each wrapper
raises OSError(errno, message naming the call and its arguments) on failure.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

# glibc's soname, directly: ctypes.util.find_library runs `ldconfig -p` (~8 ms of start-up).
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

# <sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# <sys/prctl.h>
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2  # prctl(PR_SET_SECCOMP, ...)
SECCOMP_SET_MODE_FILTER = 1  # seccomp(2)'s operation; 2 there is GET_ACTION_AVAIL

# openat2(2) resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# x86_64 syscall numbers for calls glibc 2.36 has no wrapper for.
_SYS_pivot_root = 155
_SYS_openat2 = 437
_SYS_capget = 125
_SYS_capset = 126
_SYS_seccomp = 317
_SYS_pidfd_open = 434
_SYS_pidfd_send_signal = 424
_SYS_clone = 56
CLONE_PARENT = 0x00008000

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.mknod.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_ulong]
_libc.mknodat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_ulong]
_libc.setgroups.argtypes = [ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint)]


def _fs(path: str | bytes | os.PathLike[Any] | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), f"setns({fd}, {nstype:#x})")


def mount(
    source: str | bytes | os.PathLike[Any] | None,
    target: str | bytes | os.PathLike[Any],
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    data_b = data.encode() if data is not None else None
    res = _libc.mount(_fs(source), _fs(target), fstype.encode() if fstype else None, flags, data_b)
    _check(res, f"mount {source!s} on {os.fsdecode(target)} (type {fstype}, {data or ''})")


def umount(target: str | bytes | os.PathLike[Any], flags: int = 0) -> None:
    _check(_libc.umount2(_fs(target), flags), f"umount {os.fsdecode(target)}")


def pivot_root(
    new_root: str | bytes | os.PathLike[Any], put_old: str | bytes | os.PathLike[Any]
) -> None:
    res = _libc.syscall(_SYS_pivot_root, _fs(new_root), _fs(put_old))
    _check(res, f"pivot_root({os.fsdecode(new_root)}, {os.fsdecode(put_old)})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name})")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, len(raw)), f"setdomainname({name})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_process_name(name: str) -> None:
    """PR_SET_NAME: the name ps and /proc/PID/comm show (at most 15 bytes)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0), f"prctl(PR_SET_NAME, {name})")


def mknod(
    path: str | bytes | os.PathLike[Any], mode: int, device: int = 0, dir_fd: int | None = None
) -> None:
    if dir_fd is None:
        res = _libc.mknod(_fs(path), mode, device)
    else:
        res = _libc.mknodat(dir_fd, _fs(path), mode, device)
    _check(res, f"mknod {os.fsdecode(path)}")


def setgroups(groups: list[int]) -> None:
    arr = (ctypes.c_uint * len(groups))(*groups)
    _check(_libc.setgroups(len(groups), arr), f"setgroups({groups})")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str | bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open `path` relative to `dir_fd` under `resolve` restrictions (e.g. never
    following symlinks, never leaving dir_fd). Returns the new fd."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    raw = os.fsencode(path)
    res = _libc.syscall(
        ctypes.c_long(_SYS_openat2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(raw),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    return _check(res, f"openat2({os.fsdecode(raw)})")


# Linux capabilities (capget/capset with _LINUX_CAPABILITY_VERSION_3: two 32-bit words).
_CAP_V3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    header = _CapHeader(_CAP_V3, pid)
    data = (_CapData * 2)()
    _check(_libc.syscall(_SYS_capget, ctypes.byref(header), data), "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_SYS_capset, ctypes.byref(header), data), "capset")


def seccomp_set_filter(prog: bytes, flags: int = 0) -> None:
    """Install a classic-BPF seccomp filter given as packed sock_filter structs."""

    class _SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    res = _libc.syscall(_SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    _check(res, "seccomp(SECCOMP_SET_MODE_FILTER)")


def pidfd_open(pid: int) -> int:
    return _check(_libc.syscall(_SYS_pidfd_open, pid, 0), f"pidfd_open({pid})")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _check(_libc.syscall(_SYS_pidfd_send_signal, pidfd, sig, None, 0), f"pidfd_send_signal({sig})")


def clone_parent() -> int:
    """fork(), except that the child's parent is the caller's parent (CLONE_PARENT): the
    executor's keeper makes the container's pid 1 a child of the monitor with it (runc's
    nsexec does the same). A raw clone: no at-fork handlers run, so the caller must be
    single-threaded, and the child must only go on to exec or _exit. Returns 0 in the child."""
    return _check(
        _libc.syscall(_SYS_clone, ctypes.c_ulong(CLONE_PARENT), None, None, None, None),
        "clone(CLONE_PARENT)",
    )
