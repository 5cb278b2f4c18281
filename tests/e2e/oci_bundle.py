"""OCI bundles for runtime tests: a busybox rootfs and config.json files written by hand.

Independent of rl's image store and spec generator on purpose, so the executor can be tested
(and compared with runc) on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness import Result, User, installed_tool

PYTHON = installed_tool("python")
BUSYBOX = "/bin/busybox"
# podman 4.3's rootless default set (CapEff 00000000800405fb).
DEFAULT_CAPS = [
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
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
]
READONLY_PATHS = [
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]
ALL_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "user", "cgroup")
ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm",
    "HOME=/root",
]


def make_rootfs(dest: Path, owner: User) -> Path:
    """/bin/busybox with its applet links, /etc/passwd and /etc/group, owned by `owner`
    (container root)."""
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "root", "home/app"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    for name in applets.stdout.split():
        link = dest / "bin" / name
        if not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\ntty:x:5:\napp:x:1000:\nnobody:x:65534:\n")
    if owner.as_root:
        chown_tree(dest, owner.uid, owner.gid)
    return dest


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        os.lchown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def subid_start(user: User, path: str) -> tuple[int, int]:
    for line in Path(path).read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[0] in (user.name, str(user.uid)):
            return int(parts[1]), int(parts[2])
    raise AssertionError(f"{user.name} has no range in {path}")


def id_mappings(user: User) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    sub_uid, uid_count = subid_start(user, "/etc/subuid")
    sub_gid, gid_count = subid_start(user, "/etc/subgid")
    uids = [
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": sub_uid, "size": uid_count},
    ]
    gids = [
        {"containerID": 0, "hostID": user.gid, "size": 1},
        {"containerID": 1, "hostID": sub_gid, "size": gid_count},
    ]
    return uids, gids


def default_mounts(*, own_netns: bool = True) -> list[dict[str, Any]]:
    """podman's default set (as its generated config.json has it), minus the userdata binds."""
    mounts: list[dict[str, Any]] = [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536000"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"],
        },
    ]
    if not own_netns:
        mounts[2]["options"] = ["rbind", "nosuid", "noexec", "nodev", "ro"]
        mounts[2]["type"] = "bind"
        mounts[2]["source"] = "/sys"
    return mounts


def make_spec(
    user: User,
    args: Sequence[str],
    *,
    root: str | Path = "rootfs",
    terminal: bool = False,
    uid: int = 0,
    gid: int = 0,
    additional_gids: Sequence[int] = (),
    env: Sequence[str] = ENV,
    cwd: str = "/",
    caps: Sequence[str] = DEFAULT_CAPS,
    ambient: Sequence[str] = (),
    extra_mounts: Sequence[dict[str, Any]] = (),
    readonly: bool = True,
    namespaces: Sequence[str] = ALL_NAMESPACES,
    hostname: str = "testhost",
    no_new_privileges: bool = True,
    seccomp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    uids, gids = id_mappings(user)
    user_section: dict[str, Any] = {"uid": uid, "gid": gid}
    if additional_gids:
        user_section["additionalGids"] = list(additional_gids)
    capabilities: dict[str, list[str]] = {
        "bounding": list(caps),
        "effective": list(caps),
        "permitted": list(caps),
    }
    if ambient:
        capabilities["inheritable"] = list(ambient)
        capabilities["ambient"] = list(ambient)
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": user_section,
            "args": list(args),
            "env": list(env),
            "cwd": cwd,
            "capabilities": capabilities,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": no_new_privileges,
        },
        "root": {"path": str(root), "readonly": readonly},
        "hostname": hostname,
        "mounts": default_mounts(own_netns="network" in namespaces) + list(extra_mounts),
        "linux": {
            "uidMappings": uids,
            "gidMappings": gids,
            "namespaces": [{"type": t} for t in namespaces],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }
    if seccomp is not None:
        spec["linux"]["seccomp"] = seccomp
    return spec


def default_seccomp(caps: Sequence[str] = DEFAULT_CAPS) -> dict[str, Any]:
    """podman's default seccomp profile as OCI linux.seccomp for a container with `caps`."""
    from rootless.runtime.seccomp import default_profile, profile_to_oci

    return profile_to_oci(default_profile(), caps)


def write_bundle(bundle: Path, spec: dict[str, Any], owner: User) -> Path:
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    if owner.as_root:
        os.chown(bundle, owner.uid, owner.gid)
        os.chown(bundle / "config.json", owner.uid, owner.gid)
    return bundle


def executor_argv(bundle: Path, *flags: str) -> list[str]:
    return [PYTHON, "-m", "rootless.runtime.executor", str(bundle), *flags]


def run_executor(
    user: User, bundle: Path, *flags: str, input: bytes | str | None = None, timeout: float = 60
) -> Result:
    return user.run(executor_argv(bundle, *flags), input=input, timeout=timeout)
