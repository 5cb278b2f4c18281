"""The container's filesystem: spec mounts, /dev, masked and read-only paths, pivot_root.

Everything here runs in the container's mount namespace as root of its user namespace, before
pivot_root, with host paths still visible (bind sources, host device files). Rootless rules
shape the code:
- mknod is impossible, so /dev's device files are host device files bind-mounted onto empty
  files;
- flags of a mount that came from the host (nosuid, nodev, noexec, ro, atime) are *locked* in a
  user namespace: a read-only or other remount of a bind must repeat them, or the kernel says
  EPERM, so `remount_bind` reads them back with statvfs;
- sysfs needs the container's own network namespace and proc its own pid namespace; without
  them the host's tree is bind-mounted instead (what crun does).
Destinations are resolved inside the rootfs (`resolve_in_root`), so an image's symlinks cannot
point a mount outside it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from rootless import syscalls as sc

# option -> (flag, clears_it)
_FLAG_OPTIONS: dict[str, tuple[int, bool]] = {
    "ro": (sc.MS_RDONLY, False),
    "rw": (sc.MS_RDONLY, True),
    "nosuid": (sc.MS_NOSUID, False),
    "suid": (sc.MS_NOSUID, True),
    "nodev": (sc.MS_NODEV, False),
    "dev": (sc.MS_NODEV, True),
    "noexec": (sc.MS_NOEXEC, False),
    "exec": (sc.MS_NOEXEC, True),
    "sync": (sc.MS_SYNCHRONOUS, False),
    "async": (sc.MS_SYNCHRONOUS, True),
    "dirsync": (sc.MS_DIRSYNC, False),
    "mand": (sc.MS_MANDLOCK, False),
    "nomand": (sc.MS_MANDLOCK, True),
    "noatime": (sc.MS_NOATIME, False),
    "atime": (sc.MS_NOATIME, True),
    "nodiratime": (sc.MS_NODIRATIME, False),
    "diratime": (sc.MS_NODIRATIME, True),
    "relatime": (sc.MS_RELATIME, False),
    "norelatime": (sc.MS_RELATIME, True),
    "strictatime": (sc.MS_STRICTATIME, False),
    "nostrictatime": (sc.MS_STRICTATIME, True),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, False),
    "remount": (sc.MS_REMOUNT, False),
}
_PROPAGATION_OPTIONS = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# Options podman writes into specs that tell the runtime something rather than the kernel.
_IGNORED_OPTIONS = frozenset({"z", "Z", "U", "copy", "nocopy", "notmpcopyup", "defaults"})

# statvfs f_flag bits -> the mount flags they stand for; all are locked in a user namespace.
_LOCKED_FLAGS = (
    (os.ST_RDONLY, sc.MS_RDONLY),
    (os.ST_NOSUID, sc.MS_NOSUID),
    (os.ST_NODEV, sc.MS_NODEV),
    (os.ST_NOEXEC, sc.MS_NOEXEC),
    (os.ST_NOATIME, sc.MS_NOATIME),
    (os.ST_NODIRATIME, sc.MS_NODIRATIME),
    (os.ST_RELATIME, sc.MS_RELATIME),
)
_ATIME_FLAGS = sc.MS_NOATIME | sc.MS_RELATIME | sc.MS_STRICTATIME

# What podman/crun put in every container's /dev when it gets its own tmpfs there.
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
)
MAX_SYMLINKS = 40


class MountOptions(NamedTuple):
    """An OCI mount's option list, split into what each mount(2) call needs."""

    flags: int = 0  # MS_* for the mount itself (MS_BIND/MS_REC included for binds)
    propagation: tuple[int, ...] = ()  # one mount(2) call each, after the mount
    data: str = ""  # filesystem-specific options, comma-joined
    bind: bool = False
    tmpcopyup: bool = False

    @property
    def remount_flags(self) -> int:
        """Flags a bind mount must get through a second, MS_REMOUNT call."""
        return self.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)


def parse_options(options: Iterable[str]) -> MountOptions:
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    bind = tmpcopyup = False
    for opt in options:
        if opt in ("bind", "rbind"):
            bind = True
            flags |= sc.MS_BIND | (sc.MS_REC if opt == "rbind" else 0)
        elif opt in _FLAG_OPTIONS:
            flag, clears = _FLAG_OPTIONS[opt]
            flags = flags & ~flag if clears else flags | flag
        elif opt in _PROPAGATION_OPTIONS:
            propagation.append(_PROPAGATION_OPTIONS[opt])
        elif opt == "tmpcopyup":
            tmpcopyup = True
        elif opt in _IGNORED_OPTIONS:
            continue
        else:
            data.append(opt)
    return MountOptions(flags, tuple(propagation), ",".join(data), bind, tmpcopyup)


def resolve_in_root(root: str, path: str) -> str:
    """The host path of container path `path`, following symlinks as if `root` were `/`.

    Components that do not exist yet are kept literally (the caller creates them)."""
    parts = [p for p in path.split("/") if p and p != "."]
    parts.reverse()  # a stack: next component last
    current = ""
    links = 0
    while parts:
        part = parts.pop()
        if part == "..":
            current = current.rpartition("/")[0]
            continue
        candidate = f"{current}/{part}"
        try:
            st = os.lstat(root + candidate)
        except (FileNotFoundError, NotADirectoryError):
            current = candidate
            continue
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"too many symlinks resolving {path} in the rootfs")
        target = os.readlink(root + candidate)
        if target.startswith("/"):
            current = ""
        parts.extend(reversed([p for p in target.split("/") if p and p != "."]))
    return root + (current or "/")


def make_mountpoint(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def locked_flags(path: str) -> int:
    """The flags of the mount at `path` that a remount in a user namespace must keep."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st_bit, ms in _LOCKED_FLAGS if f_flag & st_bit)


def remount_bind(path: str, flags: int) -> None:
    """Apply `flags` (e.g. MS_RDONLY) to the bind mount at `path`, keeping its locked flags."""
    keep = locked_flags(path)
    if flags & _ATIME_FLAGS:  # atime flags are locked too: only the source's may stay
        flags &= ~_ATIME_FLAGS
    sc.mount(None, path, None, sc.MS_REMOUNT | sc.MS_BIND | flags | keep)


def _bind(source: str, target: str, flags: int, recursive: bool = True) -> None:
    sc.mount(source, target, None, sc.MS_BIND | (sc.MS_REC if recursive else 0))
    if flags:
        remount_bind(target, flags)


class MountContext(NamedTuple):
    """Facts about the container that change how some filesystem types are mounted."""

    own_netns: bool
    own_pidns: bool
    own_cgroupns: bool
    # cgroup v1 host: what to bind under the container's /sys/fs/cgroup (see cgroup_v1_binds)
    cgroup_v1_binds: tuple[tuple[str, str], ...] | None = None


def mount_all(root: str, mounts: Iterable[Mapping[str, Any]], ctx: MountContext) -> None:
    for entry in mounts:
        try:
            mount_entry(root, entry, ctx)
        except OSError as exc:
            dest = entry.get("destination", "?")
            why = exc.strerror if not exc.filename else f"{exc.filename}: {exc.strerror}"
            raise OSError(exc.errno, f"mount {dest} ({entry.get('type', 'bind')}): {why}") from exc


def mount_entry(root: str, entry: Mapping[str, Any], ctx: MountContext) -> None:
    opts = parse_options(entry.get("options") or ())
    kind = entry.get("type") or ("bind" if opts.bind else "none")
    source = entry.get("source") or kind
    dest = resolve_in_root(root, entry["destination"])
    if opts.bind or kind == "bind":
        if not os.path.exists(source):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", source)
        make_mountpoint(dest, os.path.isdir(source))
        _bind(source, dest, opts.remount_flags, recursive=bool(opts.flags & sc.MS_REC))
    else:
        make_mountpoint(dest, True)
        copy_from = _open_dir(dest) if opts.tmpcopyup and kind == "tmpfs" else None
        _mount_filesystem(kind, source, dest, opts, ctx)
        if copy_from is not None:
            _copy_up(copy_from, dest)
    for propagation in opts.propagation:
        sc.mount(None, dest, None, propagation)


def _mount_filesystem(
    kind: str, source: str, dest: str, opts: MountOptions, ctx: MountContext
) -> None:
    flags, data = opts.flags, opts.data or None
    if kind == "sysfs" and not ctx.own_netns:
        _bind("/sys", dest, flags)  # the kernel allows sysfs only with a netns of our own
        return
    if kind == "proc" and not ctx.own_pidns:
        _bind("/proc", dest, flags)
        return
    if kind == "cgroup":
        _mount_cgroup(dest, flags, ctx)
        return
    try:
        sc.mount(source, dest, kind, flags, data)
    except OSError as exc:
        if kind == "devpts" and exc.errno == errno.EINVAL and data and "gid=" in data:
            # gid=5 (tty) is not mapped with a single-id user namespace: crun drops it too.
            rest = ",".join(o for o in data.split(",") if not o.startswith("gid="))
            sc.mount(source, dest, kind, flags, rest or None)
        elif kind in ("sysfs", "mqueue", "proc") and exc.errno in (errno.EPERM, errno.EBUSY):
            _bind({"sysfs": "/sys", "mqueue": "/dev/mqueue", "proc": "/proc"}[kind], dest, flags)
        else:
            raise


def _mount_cgroup(dest: str, flags: int, ctx: MountContext) -> None:
    """What runc does, rootless: on a cgroup v1 (or hybrid) host a tmpfs with each v1
    hierarchy's own cgroup directory bound read-only below it; on a cgroup v2 host the cgroup2
    filesystem of our own cgroup namespace, else the host's tree read-only."""
    if ctx.cgroup_v1_binds is not None:
        sc.mount("tmpfs", dest, "tmpfs", flags & ~sc.MS_RDONLY, "mode=755")
        for name, source in ctx.cgroup_v1_binds:
            target = f"{dest}/{name}"
            os.makedirs(target, exist_ok=True)
            _bind(source, target, flags | sc.MS_RDONLY, recursive=False)
        return
    if ctx.own_cgroupns:
        try:
            sc.mount("cgroup2", dest, "cgroup2", flags)
            return
        except OSError:
            pass
    _bind("/sys/fs/cgroup", dest, flags | sc.MS_RDONLY)


def cgroup_v1_binds(mountinfo: str, proc_cgroup: str) -> list[tuple[str, str]] | None:
    """(name under /sys/fs/cgroup, host directory) for each cgroup v1 hierarchy mounted
    under /sys/fs/cgroup, the directory being this process's own cgroup in it (read from the
    host's /proc/self/mountinfo and /proc/self/cgroup). None when /sys/fs/cgroup is cgroup2
    (a v2 host). The cgroup2 `unified` tree of a hybrid host is left out, as runc does."""
    own: dict[frozenset[str], str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1]:
            own[frozenset(parts[1].split(","))] = parts[2]
    binds: list[tuple[str, str]] = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, described = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(described) < 3:
            continue
        root, mount_point = fields[3], fields[4]
        fstype, super_options = described[0], described[2]
        if mount_point == "/sys/fs/cgroup" and fstype == "cgroup2":
            return None
        if fstype != "cgroup" or not mount_point.startswith("/sys/fs/cgroup/"):
            continue
        options = set(super_options.split(","))  # controllers plus e.g. rw, xattr
        path = next((p for names, p in own.items() if names <= options), "/")
        inner = path[len(root) :] if path.startswith(root) else path
        source = mount_point + ("/" + inner.strip("/") if inner.strip("/") else "")
        binds.append((mount_point.rsplit("/", 1)[1], source))
    return binds


def _open_dir(path: str) -> int | None:
    """An fd of a mountpoint's directory, to reach its content after a tmpfs covers it."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _copy_up(dir_fd: int, dest: str) -> None:
    """podman's tmpcopyup: the tmpfs starts with the image's content at that path."""
    try:
        if not os.listdir(dir_fd):
            return
        import shutil  # only for the rare non-empty case

        shutil.copytree(f"/proc/self/fd/{dir_fd}", dest, symlinks=True, dirs_exist_ok=True)
    finally:
        os.close(dir_fd)


def populate_dev(root: str, devices: Iterable[Mapping[str, Any]] = ()) -> None:
    """Device files (host ones, bind-mounted: mknod is not allowed) and the usual symlinks."""
    dev = resolve_in_root(root, "/dev")
    paths = [f"/dev/{name}" for name in DEFAULT_DEVICES]
    paths += [d["path"] for d in devices if d.get("path") and d["path"] not in paths]
    for path in paths:
        if not os.path.exists(path):
            continue  # e.g. /dev/tty without a controlling terminal is fine, a missing one too
        target = resolve_in_root(root, path)
        make_mountpoint(target, False)
        os.chmod(target, 0o666)
        try:
            sc.mount(path, target, None, sc.MS_BIND)
        except OSError as exc:
            raise OSError(exc.errno, f"bind device {path}: {exc.strerror}") from exc
    for name, target in DEV_SYMLINKS:
        try:
            os.symlink(target, f"{dev}/{name}")
        except FileExistsError:
            pass


def mask_paths(root: str, paths: Iterable[str]) -> None:
    """Hide files behind /dev/null and directories behind an empty read-only tmpfs."""
    for path in paths:
        target = resolve_in_root(root, path)
        try:
            is_dir = stat.S_ISDIR(os.stat(target).st_mode)
        except OSError:
            continue  # nothing there: nothing to hide
        try:
            if is_dir:
                sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY)
            else:
                sc.mount("/dev/null", target, None, sc.MS_BIND)
        except OSError as exc:
            raise OSError(exc.errno, f"mask {path}: {exc.strerror}") from exc


def readonly_paths(root: str, paths: Iterable[str]) -> None:
    for path in paths:
        target = resolve_in_root(root, path)
        if not os.path.exists(target):
            continue
        try:
            _bind(target, target, sc.MS_RDONLY)
        except OSError as exc:
            raise OSError(exc.errno, f"make {path} read-only: {exc.strerror}") from exc


def make_root_mount(root: str) -> None:
    """pivot_root needs the new root to be a mount point of its own."""
    sc.mount(root, root, None, sc.MS_BIND | sc.MS_REC)


def pivot_into(root: str) -> None:
    """pivot_root with the new root stacked on the old one, then detach the old one: no
    directory for the old root is needed inside the image (runc's trick)."""
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)  # never propagate the umount to the host
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")


def remount_root_readonly() -> None:
    remount_bind("/", sc.MS_RDONLY)
