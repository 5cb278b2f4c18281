"""The spec's linux.namespaces as unshare/setns work, and what a fresh namespace still needs."""

from __future__ import annotations

import _socket  # the C module: `socket` itself imports enum for nothing here
import fcntl
import os
import struct
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from rootless import syscalls as sc

NAMESPACE_FLAGS = {
    "user": sc.CLONE_NEWUSER,
    "mount": sc.CLONE_NEWNS,
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class NamespacePlan(NamedTuple):
    unshare: int  # CLONE_NEW* to create once root of the user namespace (never NEWUSER)
    join: tuple[tuple[int, str], ...]  # (CLONE_NEW*, path) to setns into, user excluded
    user_path: str | None  # an existing user namespace to join instead of making one

    def owns(self, flag: int) -> bool:
        return bool(self.unshare & flag)


def plan_namespaces(entries: Iterable[Mapping[str, Any]]) -> NamespacePlan:
    """A mount namespace is always made: every mount rl does must stay in the container."""
    unshare = sc.CLONE_NEWNS
    join: list[tuple[int, str]] = []
    user_path = None
    for entry in entries:
        kind = entry.get("type", "")
        if kind not in NAMESPACE_FLAGS:
            raise ValueError(f"unknown namespace type {kind!r}")
        flag, path = NAMESPACE_FLAGS[kind], entry.get("path") or ""
        if kind == "user":
            user_path = path or None
        elif path:
            join.append((flag, path))
            unshare &= ~flag
        else:
            unshare |= flag
    return NamespacePlan(unshare, tuple(join), user_path)


def join_namespaces(join: Iterable[tuple[int, str]]) -> None:
    for flag, path in join:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fd, flag)
        finally:
            os.close(fd)


def loopback_up() -> None:
    """A new network namespace has `lo` down; podman's containers find it up."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
    finally:
        sock.close()


def apply_sysctls(proc_sys: str, sysctls: Mapping[str, str]) -> None:
    """Write linux.sysctl through the container's own /proc (so namespaced values land in the
    container's namespaces), before /proc/sys is made read-only."""
    for key, value in sysctls.items():
        path = os.path.join(proc_sys, key.replace(".", "/"))
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise OSError(exc.errno, f"sysctl {key}={value}: {exc.strerror}") from exc
