"""Image config + `rl run` options -> an OCI runtime-spec config.json (a dict). Pure.

The shape follows what podman 4.3 writes for a rootless container (read from the config.json
of `podman create` on this machine): the same default mounts and options, masked and
read-only paths, rlimits and sysctl. Differences, and why:
- rl runs the runtime itself instead of inside a pause process's user namespace, so the spec
  has a user namespace with uidMappings/gidMappings in host ids, and a cgroup namespace.
- /dev/shm is a tmpfs in the spec (podman mounts one on the host and binds it; rl mounts
  nothing on the host, so nothing can leak).
- keep-id's extra /etc/passwd and /etc/group lines come as bind-mounted copies (podman edits
  the container's files in place).

Capabilities, seccomp and rlimits arrive already computed (rootless.runtime.caps, seccomp,
ulimits), so this module only arranges values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from rootless.errors import RlError
from rootless.runtime.env import merge_env
from rootless.runtime.options import RunOptions
from rootless.runtime.users import ResolvedUser, resolve_user
from rootless.userns import IdMapping, IdRange

OCI_VERSION = "1.0.2"
UMASK = 0o022

MASKED_PATHS = (
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
)
READONLY_PATHS = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
# With --read-only, podman keeps these writable as tmpfs (--read-only-tmpfs, default true).
READ_ONLY_TMPFS = ("/tmp", "/var/tmp", "/run")

# Files under the container's userdata/ bound into the container, in podman's mount order.
BIND_FILE_ORDER = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/run/.containerenv",
    "/etc/hostname",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
)

NO_COMMAND = "no command or entrypoint provided, and no CMD or ENTRYPOINT from image"


# A NamedTuple rather than a dataclass: this module is on the path of every `rl run`, and a
# dataclass costs ~0.5 ms to create at import (start-up is issue 3's target).
class ProcessSettings(NamedTuple):
    args: list[str]
    env: list[str]
    cwd: str
    user: ResolvedUser
    create_workdir: bool  # the workdir comes from the image: create it when missing


def image_settings(image_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The `config` section of an image config JSON (empty for images without one)."""
    section = image_config.get("config") or image_config.get("Config") or {}
    return section if isinstance(section, Mapping) else {}


def resolve_args(
    image: Mapping[str, Any], entrypoint: list[str] | None, command: Sequence[str]
) -> list[str]:
    """Entrypoint + command. --entrypoint replaces the image's and drops the image's Cmd."""
    if entrypoint is None:
        entry = list(image.get("Entrypoint") or [])
        cmd = list(command) or list(image.get("Cmd") or [])
    else:
        entry = list(entrypoint)
        cmd = list(command)
    args = entry + cmd
    if not args:
        raise RlError(NO_COMMAND)
    return args


def resolve_process(
    image_config: Mapping[str, Any],
    options: RunOptions,
    *,
    passwd_text: str | None,
    group_text: str | None,
    host_env: Mapping[str, str],
    hostname: str,
    env_files: Sequence[dict[str, str]] = (),
    default_user: str | None = None,
) -> ProcessSettings:
    """args, env, cwd and identity of the container's process.

    `default_user` is the user when neither -u nor the image names one (keep-id's uid:gid)."""
    image = image_settings(image_config)
    user_spec = (
        options.user if options.user is not None else (image.get("User") or default_user or "")
    )
    user = resolve_user(user_spec, passwd_text, group_text, options.group_add)
    env = merge_env(
        image.get("Env") or [],
        env_flags=options.env,
        env_files=env_files,
        env_host=options.env_host,
        host_env=host_env,
        home=user.home,
        hostname=hostname,
    )
    if options.workdir:
        if not options.workdir.startswith("/"):
            raise RlError(f"workdir {options.workdir!r} must be an absolute path")
        cwd, create = options.workdir, False
    else:
        image_dir = image.get("WorkingDir") or ""
        cwd, create = (image_dir, True) if image_dir else ("/", False)
    args = resolve_args(image, options.entrypoint, options.command)
    return ProcessSettings(args, env, cwd, user, create)


def shm_options(size: int) -> list[str]:
    return ["nosuid", "noexec", "nodev", "mode=1777", f"size={max(size // 1024, 1)}k"]


def default_mounts(
    options: RunOptions, bind_files: Mapping[str, str], own_netns: bool
) -> list[dict[str, Any]]:
    """podman's default mounts, then --read-only's tmpfs dirs, then the userdata files."""
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
    ]
    sys_mount: dict[str, Any]
    if own_netns:
        sys_mount = {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        }
    else:  # the kernel allows sysfs only in a network namespace of one's own
        sys_mount = {
            "destination": "/sys",
            "type": "bind",
            "source": "/sys",
            "options": ["rprivate", "nosuid", "noexec", "nodev", "ro", "rbind"],
        }
    mounts += [
        sys_mount,
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
            "options": shm_options(options.shm_size),
        },
    ]
    if options.read_only and options.read_only_tmpfs:
        for dest in READ_ONLY_TMPFS:
            mounts.append(
                {
                    "destination": dest,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"],
                }
            )
    for dest in BIND_FILE_ORDER:
        if dest in bind_files:
            mounts.append(
                {
                    "destination": dest,
                    "type": "bind",
                    "source": bind_files[dest],
                    "options": ["bind", "rprivate"],
                }
            )
    mounts.append(
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"],
        }
    )
    return mounts


def merge_mounts(
    defaults: list[dict[str, Any]], user_mounts: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """User mounts win over default mounts at the same destination (podman's rule); a user
    mount over /dev or /proc replaces everything below it only for that one path."""
    taken = {_norm(m["destination"]) for m in user_mounts}
    kept = [m for m in defaults if _norm(m["destination"]) not in taken]
    return kept + [dict(m) for m in user_mounts]


def _norm(path: str) -> str:
    return "/" + path.strip("/")


def id_mappings(ranges: tuple[IdRange, ...]) -> list[dict[str, int]]:
    return [{"containerID": r.container, "hostID": r.host, "size": r.size} for r in ranges]


def build_spec(
    image_config: Mapping[str, Any],
    options: RunOptions,
    *,
    process: ProcessSettings,
    rootfs_path: str,
    hostname: str,
    mapping: IdMapping,
    capabilities: Mapping[str, list[str]],
    seccomp: Mapping[str, Any] | None,
    rlimits: Sequence[Mapping[str, Any]] | None,
    bind_files: Mapping[str, str],
    user_mounts: Sequence[Mapping[str, Any]] = (),
    no_new_privileges: bool = False,
    masked_paths: Sequence[str] = MASKED_PATHS,
    readonly_paths: Sequence[str] = READONLY_PATHS,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The config.json for one container.

    `capabilities` is the OCI process.capabilities section (caps.process_capabilities),
    `seccomp` the linux.seccomp section or None for unconfined, `rlimits` the
    process.rlimits (rootless.runtime.ulimits; None for --ulimit host), `bind_files` maps container
    paths (/etc/hosts, …) to the userdata files that back them."""
    own_netns = options.network != "host"
    user = process.user
    additional_gids = list(user.additional_gids)
    if mapping.single and not options.group_add:
        # A single-id namespace denies setgroups: keep the groups rl already has (podman too).
        additional_gids = []
    process_section: dict[str, Any] = {
        "terminal": options.tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            "umask": UMASK,
            "additionalGids": additional_gids,
        },
        "args": list(process.args),
        "env": list(process.env),
        "cwd": process.cwd,
        "capabilities": {k: list(v) for k, v in capabilities.items()},
        "rlimits": [dict(r) for r in rlimits or ()],
        "noNewPrivileges": no_new_privileges,
    }
    kinds: tuple[str, ...] = ("pid", "ipc", "uts", "mount", "cgroup", "user")
    if options.cgroupns == "host":  # --cgroupns=host: the host's cgroup namespace
        kinds = tuple(k for k in kinds if k != "cgroup")
    namespaces = [{"type": t} for t in kinds]
    if own_netns:
        namespaces.insert(1, {"type": "network"})
    linux: dict[str, Any] = {
        "uidMappings": id_mappings(mapping.uids),
        "gidMappings": id_mappings(mapping.gids),
        "sysctl": {"net.ipv4.ping_group_range": "0 0"} if own_netns else {},
        "namespaces": namespaces,
        "maskedPaths": list(masked_paths),
        "readonlyPaths": list(readonly_paths),
    }
    if seccomp is not None:
        linux["seccomp"] = dict(seccomp)
    stop_signal = image_settings(image_config).get("StopSignal") or "15"
    return {
        "ociVersion": OCI_VERSION,
        "process": process_section,
        "root": {"path": rootfs_path, "readonly": options.read_only},
        "hostname": hostname,
        "mounts": merge_mounts(default_mounts(options, bind_files, own_netns), user_mounts),
        "annotations": {
            "io.container.manager": "rl",
            "org.opencontainers.image.stopSignal": str(stop_signal),
            **(annotations or {}),
        },
        "linux": linux,
    }
