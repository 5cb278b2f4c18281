"""What this host offers a rootless container tool, gathered in one place.

`collect_facts()` and the helpers below it are the I/O: they read files under /proc, /sys and
/etc, stat devices and helpers, and try what matters for real (a user namespace, the id maps, a
mount and an overlay mount inside it). The parsers take text and return values, and the result
is a plain HostFacts, so `rl doctor` (rootless.doctor) can be tested on made-up hosts.

Test hooks (environment variables, for simulating broken hosts in end-to-end tests):
  RL_SUBUID_FILE, RL_SUBGID_FILE  read instead of /etc/subuid, /etc/subgid (rootless.userns)
  RL_DEV_FUSE, RL_DEV_NET_TUN     inspected instead of /dev/fuse, /dev/net/tun
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rootless.userns import IdMapping

CAP_SETGID = 6
CAP_SETUID = 7
# Subordinate ids below this are usually real users' ids; `useradd` starts its ranges here.
FIRST_SUBID = 100000

SYSCTLS = (
    "kernel.unprivileged_userns_clone",  # Debian/Ubuntu patch: 0 forbids unprivileged userns
    "user.max_user_namespaces",  # 0 forbids user namespaces for everyone
    "kernel.apparmor_restrict_unprivileged_userns",  # Ubuntu 23.10+: 1 strips their privileges
)


@dataclass(frozen=True)
class PathFacts:
    """A file the user needs: what it is, who owns it, and whether the user can use it."""

    path: str
    kind: Literal["missing", "dir", "chardev", "file", "other"] = "missing"
    owner: int = -1
    mode: int = 0  # permission bits only
    usable: bool = False  # devices: readable and writable; directories: writable and searchable

    @property
    def exists(self) -> bool:
        return self.kind != "missing"


@dataclass(frozen=True)
class MapHelper:
    """newuidmap or newgidmap: where it is and whether it can act for an ordinary user."""

    path: str
    setuid_root: bool
    file_capability: bool  # carries cap_setuid/cap_setgid in security.capability instead

    @property
    def privileged(self) -> bool:
        return self.setuid_root or self.file_capability


@dataclass(frozen=True)
class Probe:
    """The outcome of trying something for real."""

    status: Literal["ok", "failed", "not-tried"]
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class CgroupFacts:
    version: Literal["v2", "v1", "hybrid", "none"]
    v2_mount: str = ""  # where the unified hierarchy is mounted ("" when it is not)
    own_path: str = ""  # our cgroup in the unified hierarchy, from /proc/self/cgroup
    own_writable: bool = False  # we may create child cgroups under our own cgroup
    delegated: tuple[str, ...] = ()  # controllers we could use (in a cgroup we may write)


@dataclass(frozen=True)
class HostFacts:
    uid: int
    gid: int
    user: str
    kernel: str = ""
    distro_id: str = ""
    distro_like: tuple[str, ...] = ()
    subuid_file: str = "/etc/subuid"
    subgid_file: str = "/etc/subgid"
    subuids: tuple[tuple[int, int], ...] = ()
    subgids: tuple[tuple[int, int], ...] = ()
    next_free_subid: int = FIRST_SUBID  # first id after every range in both files
    newuidmap: MapHelper | None = None
    newgidmap: MapHelper | None = None
    sysctls: dict[str, str | None] = field(default_factory=dict)  # None: the knob does not exist
    userns: Probe = Probe("not-tried")  # unshare(CLONE_NEWUSER)
    idmap: Probe = Probe("not-tried")  # the full id mapping applied to a new namespace
    uid_map: str = ""  # that mapping, "0 1000 1\n1 100000 65536\n"
    mount_in_userns: Probe = Probe("not-tried")  # mounting a tmpfs as root of the namespace
    overlay_in_userns: Probe = Probe("not-tried")  # kernel overlayfs (userxattr) in it
    xdg_runtime_dir: str | None = None  # the variable as set (None: unset)
    xdg_runtime: PathFacts | None = None  # what it names
    login_runtime: PathFacts = PathFacts("")  # /run/user/<uid>, what a login session provides
    store: PathFacts = PathFacts("")  # the image and container store (--root)
    store_ancestor: PathFacts | None = None  # its nearest existing ancestor, when it is missing
    dev_fuse: PathFacts = PathFacts("/dev/fuse")
    dev_tun: PathFacts = PathFacts("/dev/net/tun")
    cgroups: CgroupFacts = CgroupFacts("none")
    systemd: bool = False  # systemd is the init system (so linger and delegation apply)
    linger: bool = False


# ---------------------------------------------------------------------------------------------
# Pure parsers


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of /etc/os-release, quotes removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            out[key] = value.strip().strip("\"'")
    return out


def kernel_version(release: str) -> tuple[int, ...]:
    """(6, 18, 44) from "6.18.44-fc-v657"; missing parts are 0."""
    numbers: list[int] = []
    for part in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers + [0] * (3 - len(numbers)))


def all_subid_ranges(text: str) -> list[tuple[int, int]]:
    """Every (start, count) in an /etc/subuid-style file, whoever owns it."""
    ranges = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and not parts[0].startswith("#"):
            try:
                ranges.append((int(parts[1]), int(parts[2])))
            except ValueError:
                continue
    return ranges


def next_free_subid(ranges: list[tuple[int, int]]) -> int:
    """Where a new 65536-id range can start without overlapping any existing one."""
    end = max((start + count for start, count in ranges), default=FIRST_SUBID)
    return max(end, FIRST_SUBID)


def file_caps_grant(xattr: bytes, cap: int) -> bool:
    """Whether a security.capability xattr (struct vfs_cap_data) makes `cap` effective on exec."""
    if len(xattr) < 12:
        return False
    magic = int.from_bytes(xattr[0:4], "little")
    effective = bool(magic & 1)
    permitted = int.from_bytes(xattr[4:8], "little")
    if len(xattr) >= 20:
        permitted |= int.from_bytes(xattr[12:16], "little") << 32
    return effective and bool(permitted >> cap & 1)


def parse_cgroup_mounts(mountinfo: str) -> tuple[str, list[str]]:
    """(mount point of the unified hierarchy or "", mount points of v1 hierarchies)."""
    v2 = ""
    v1: list[str] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        fstype = right.split()[0]
        mount_point = fields[4].replace("\\040", " ")
        if fstype == "cgroup2" and not v2:
            v2 = mount_point
        elif fstype == "cgroup":
            v1.append(mount_point)
    return v2, v1


def cgroup_version(v2_mount: str, v1_mounts: list[str]) -> Literal["v2", "v1", "hybrid", "none"]:
    if v2_mount and v1_mounts:
        return "hybrid"
    if v2_mount:
        return "v2"
    return "v1" if v1_mounts else "none"


def own_v2_cgroup(proc_self_cgroup: str) -> str:
    """Our path in the unified hierarchy (the "0::" line of /proc/self/cgroup)."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return ""


# ---------------------------------------------------------------------------------------------
# The I/O shell


def collect_facts(*, probe: bool = True) -> HostFacts:
    """Everything `rl doctor` judges. `probe=False` skips the user-namespace experiments."""
    from rootless import paths, userns

    uid, gid = os.getuid(), os.getgid()
    user = userns.current_user()
    release = os_release()
    subuid_text = _read(str(userns.SUBUID_FILE))
    subgid_text = _read(str(userns.SUBGID_FILE))
    xdg = os.environ.get("XDG_RUNTIME_DIR") or None  # empty counts as unset, as in paths
    store = inspect_path(str(paths.data_dir()), os.W_OK | os.X_OK)
    facts = HostFacts(
        uid=uid,
        gid=gid,
        user=user,
        kernel=platform.release(),
        distro_id=release.get("ID", ""),
        distro_like=tuple(release.get("ID_LIKE", "").split()),
        subuid_file=str(userns.SUBUID_FILE),
        subgid_file=str(userns.SUBGID_FILE),
        subuids=tuple(userns.parse_subids(subuid_text, user, uid)),
        subgids=tuple(userns.parse_subids(subgid_text, user, uid)),
        next_free_subid=next_free_subid(
            all_subid_ranges(subuid_text) + all_subid_ranges(subgid_text)
        ),
        newuidmap=_map_helper("newuidmap", CAP_SETUID),
        newgidmap=_map_helper("newgidmap", CAP_SETGID),
        sysctls={name: _sysctl(name) for name in SYSCTLS},
        uid_map=userns.default_mapping().uid_map_text(),
        xdg_runtime_dir=xdg,
        xdg_runtime=inspect_path(xdg, os.W_OK | os.X_OK) if xdg else None,
        login_runtime=inspect_path(f"/run/user/{uid}", os.W_OK | os.X_OK),
        dev_fuse=inspect_path(os.environ.get("RL_DEV_FUSE", "/dev/fuse"), os.R_OK | os.W_OK),
        dev_tun=inspect_path(os.environ.get("RL_DEV_NET_TUN", "/dev/net/tun"), os.R_OK | os.W_OK),
        store=store,
        store_ancestor=_nearest_ancestor(store.path) if not store.exists else None,
        cgroups=collect_cgroups(uid),
        systemd=os.path.isdir("/run/systemd/system"),
        linger=os.path.exists(f"/var/lib/systemd/linger/{user}"),
    )
    if not probe:
        return facts
    bare, idmap, mount, overlay = probe_user_namespaces()
    return replace(
        facts, userns=bare, idmap=idmap, mount_in_userns=mount, overlay_in_userns=overlay
    )


def inspect_path(path: str, access: int) -> PathFacts:
    try:
        st = os.stat(path)
    except OSError:
        return PathFacts(path)
    kind: Literal["dir", "chardev", "file", "other"]
    if stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISCHR(st.st_mode):
        kind = "chardev"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    return PathFacts(path, kind, st.st_uid, stat.S_IMODE(st.st_mode), os.access(path, access))


def _nearest_ancestor(path: str) -> PathFacts:
    for parent in Path(path).parents:
        facts = inspect_path(str(parent), os.W_OK | os.X_OK)
        if facts.exists:
            return facts
    return PathFacts("/")


def collect_cgroups(uid: int) -> CgroupFacts:
    v2_mount, v1_mounts = parse_cgroup_mounts(_read("/proc/self/mountinfo"))
    version = cgroup_version(v2_mount, v1_mounts)
    if not v2_mount:
        return CgroupFacts(version)
    own = own_v2_cgroup(_read("/proc/self/cgroup"))
    own_dir = Path(v2_mount) / own.lstrip("/")
    own_writable = os.access(own_dir, os.W_OK) and os.access(
        own_dir / "cgroup.subtree_control", os.W_OK
    )
    # Under systemd, podman and rl place containers below user@UID.service, which systemd
    # delegates to the user (when configured to); a login session's own cgroup is not ours.
    service = Path(v2_mount) / f"user.slice/user-{uid}.slice/user@{uid}.service"
    delegated: tuple[str, ...] = ()
    if os.access(service, os.W_OK):
        delegated = tuple(_read(str(service / "cgroup.controllers")).split())
    elif own_writable:
        delegated = tuple(_read(str(own_dir / "cgroup.controllers")).split())
    return CgroupFacts(version, v2_mount, own, own_writable, delegated)


def collect_memory() -> dict[str, int]:
    """/proc/meminfo in bytes: MemTotal, MemFree, MemAvailable, SwapTotal, SwapFree, ..."""
    out: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[-1] == "kB" else 1)
    return out


def os_release() -> dict[str, str]:
    return parse_os_release(_read("/etc/os-release") or _read("/usr/lib/os-release"))


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _map_helper(name: str, cap: int) -> MapHelper | None:
    # The same lookup rootless.userns uses when it runs the helper.
    path = shutil.which(name) or f"/usr/bin/{name}"
    try:
        st = os.stat(path)
    except OSError:
        return None
    try:
        caps = file_caps_grant(os.getxattr(path, "security.capability"), cap)
    except OSError:
        caps = False
    setuid_root = st.st_uid == 0 and bool(st.st_mode & stat.S_ISUID)
    return MapHelper(path, setuid_root, caps)


# ---------------------------------------------------------------------------------------------
# Probes: try it and see


def probe_user_namespaces() -> tuple[Probe, Probe, Probe, Probe]:
    """Can we create a user namespace, map our ids into it, mount in it, mount overlayfs?"""
    from rootless import userns
    from rootless.errors import RlError

    skipped = Probe("not-tried")
    bare = probe_unshare()
    if not bare.ok:
        return bare, skipped, skipped, skipped
    try:
        mount = probe_mount(userns.default_mapping())
        idmap = Probe("ok")
    except RlError as err:
        idmap = Probe("failed", err.message)
        # Learn whether mounting works with the one-id mapping, which needs no helper.
        try:
            mount = probe_mount(userns.build_mapping(os.getuid(), os.getgid(), [], []))
        except RlError as again:
            mount = Probe("failed", again.message)
    overlay = probe_overlay() if idmap.ok and mount.ok else skipped
    return bare, idmap, mount, overlay


def probe_overlay() -> Probe:
    """Ask the storage code's own probe, afresh: it mounts an overlay on the store's
    filesystem, as `rl run` will (and refreshes the answer `rl run` caches)."""
    from rootless.storage.probe import overlay_support

    try:
        result = overlay_support(refresh=True)
    except OSError as err:
        return Probe("failed", f"cannot probe in the store: {err}")
    return Probe("ok") if result.works else Probe("failed", result.reason)


def probe_unshare() -> Probe:
    """Can this process create a user namespace at all? (A forked child tries.)"""
    from rootless import syscalls

    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
        except OSError as err:
            code = err.errno or 255
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return Probe("ok")
    reason = os.strerror(code) if code > 0 else f"killed by signal {-code}"
    return Probe("failed", f"unshare(CLONE_NEWUSER): {reason}")


def probe_mount(mapping: IdMapping) -> Probe:
    """As root of a new user and mount namespace with `mapping`: may we mount there?
    Raises RlError when the namespace itself cannot be set up (the id mapping failed)."""
    from rootless import syscalls, userns

    host_mount_ns = os.stat("/proc/self/ns/mnt").st_ino
    return userns.run_in_userns(
        _mount_tmpfs, host_mount_ns, mapping=mapping, unshare_flags=syscalls.CLONE_NEWNS
    )


def _mount_tmpfs(host_mount_ns: int) -> Probe:
    from rootless import syscalls

    if os.stat("/proc/self/ns/mnt").st_ino == host_mount_ns:
        # Never change the host's mounts, whatever the caller did wrong.
        raise RuntimeError("refusing to probe mounts outside a new mount namespace")
    try:
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        syscalls.mount("tmpfs", "/tmp", "tmpfs", 0, "mode=0700")  # seen only in this namespace
    except OSError as err:
        return Probe("failed", err.strerror or str(err))
    return Probe("ok")
