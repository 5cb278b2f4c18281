"""Parsers for `-v/--volume`, `--mount` and `--tmpfs`: flag text in, `MountRequest` out.

Pure functions (the working directory is a parameter), so every rule podman applies to these
flags, and its error messages, can be tested directly. What a request becomes on disk (named
volumes, copy-up, chown, overlay scratch dirs) is decided later by `rootless.volumes`.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from rootless.errors import RlError

# podman's rule for volume names (libpod/define: NameRegex).
VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
VOLUME_NAME_RULE = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"

PROPAGATIONS = frozenset(
    {"private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"}
)
_PAIRS = {
    "ro": "rw",
    "rw": "ro",
    "suid": "nosuid",
    "nosuid": "suid",
    "exec": "noexec",
    "noexec": "exec",
    "dev": "nodev",
    "nodev": "dev",
}
# Other flags the kernel's generic mount code understands, passed through to the spec.
_ATIME = frozenset({"atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime"})
_TMPFS_VALUE_KEYS = frozenset({"size", "mode", "nr_inodes", "nr_blocks", "uid", "gid"})
MOUNT_FORMAT = (
    "incorrect mount format: should be --mount type=<bind|tmpfs|volume>,"
    "[src=<host-dir|volume-name>,]target=<ctr-dir>[,options]"
)


# A NamedTuple rather than a dataclass: this module is on the path of every `rl run`, and a
# dataclass costs ~0.5 ms to create at import (start-up is issue 3's target).
class MountRequest(NamedTuple):
    """One mount the user asked for, validated but not yet tied to anything on disk.

    type: "bind" (source = absolute host path), "volume" (source = volume name, "" for a new
    anonymous volume), "tmpfs" or "devpts". options: the OCI mount options the user gave, in
    their order, without the ones rl acts on itself (z/Z/U/O/copy/nocopy).
    """

    type: str
    destination: str
    source: str = ""
    options: tuple[str, ...] = ()
    chown: bool = False  # U: chown the source to the container's user
    overlay: bool = False  # O: overlay with a throwaway upper dir
    # Copy the image's content at the destination into a new volume (nocopy: don't) or,
    # for tmpfs, into the tmpfs (notmpcopyup: don't).
    copy_up: bool = True


def is_named_volume(source: str) -> bool:
    """podman's rule: a source that does not start with `/` or `.` names a volume."""
    return not source.startswith(("/", "."))


def check_volume_name(name: str) -> None:
    if not VOLUME_NAME_RE.fullmatch(name):
        raise RlError(
            f'creating named volume "{name}": running volume create option: '
            f"names must match {VOLUME_NAME_RULE}: invalid argument"
        )


def _container_path(path: str) -> str:
    if not path:
        raise RlError("container directory cannot be empty")
    if not path.startswith("/"):
        raise RlError(f'invalid container path "{path}", must be an absolute path')
    return posixpath.normpath(path).replace("//", "/")


def _host_path(path: str, cwd: str | None) -> str:
    base = cwd if cwd is not None else os.getcwd()
    return posixpath.normpath(posixpath.join(base, path)).replace("//", "/")


def parse_volume(flag: str, *, cwd: str | None = None) -> MountRequest:
    """`-v [SOURCE:]DEST[:OPTIONS]` as podman reads it."""
    parts = flag.split(":")
    if len(parts) > 3:
        raise RlError(f"{flag}: incorrect volume format, should be [host-dir:]ctr-dir[:option]")
    if len(parts) == 1:
        return MountRequest("volume", _container_path(parts[0]))
    source, dest = parts[0], parts[1]
    if not source:
        raise RlError("host directory cannot be empty")
    destination = _container_path(dest)
    options = _volume_options(parts[2].split(",") if len(parts) == 3 else [])
    named = is_named_volume(source)
    if named:
        check_volume_name(source)
    else:
        source = _host_path(source, cwd)
    return MountRequest(
        "volume" if named else "bind",
        destination,
        source,
        options.oci,
        chown=options.chown,
        overlay=options.overlay,
        copy_up=options.copy_up,
    )


class _Options:
    def __init__(self) -> None:
        self.oci: tuple[str, ...] = ()
        self.chown = False
        self.overlay = False
        self.copy_up = True


def _volume_options(opts: Sequence[str]) -> _Options:
    """The option list of `-v`: podman's checks, in podman's words."""
    joined = ", ".join(opts)

    def dupe(what: str) -> RlError:
        return RlError(f'invalid options "{joined}", can only specify 1 {what} option')

    seen: set[str] = set()
    result = _Options()
    oci: list[str] = []
    for opt in opts:
        group = _volume_option_group(opt)
        if group in seen:
            raise dupe(_GROUP_WORDS[group])
        seen.add(group)
        if opt == "O":
            result.overlay = True
        elif opt == "U":
            result.chown = True
        elif opt in ("nocopy", "copy"):
            result.copy_up = opt == "copy"
        elif opt in ("z", "Z"):
            pass  # SELinux relabelling: nothing to do without SELinux
        else:
            oci.append(opt)
    if result.overlay and len(opts) > 1:
        raise RlError("can't use 'O' with other options")
    result.oci = tuple(oci)
    return result


_GROUP_WORDS = {
    "rw": "'rw' or 'ro'",
    "suid": "'nosuid' or 'suid'",
    "exec": "'noexec' or 'exec'",
    "dev": "'nodev' or 'dev'",
    "label": "'z', 'Z', or 'O'",
    "bind": "'[r]bind'",
    "propagation": "'[r]shared', '[r]private', '[r]slave' or '[r]unbindable'",
    "U": "'U'",
    "copy": "'copy' or 'nocopy'",
}
_GROUP_WORDS.update({a: f"'{a}'" for a in _ATIME})


def _volume_option_group(opt: str) -> str:
    """Options in one group exclude each other; unknown options are an error."""
    if opt in ("ro", "rw"):
        return "rw"
    if opt in ("suid", "nosuid"):
        return "suid"
    if opt in ("exec", "noexec"):
        return "exec"
    if opt in ("dev", "nodev"):
        return "dev"
    if opt in ("z", "Z", "O"):
        return "label"
    if opt in ("bind", "rbind"):
        return "bind"
    if opt in PROPAGATIONS:
        return "propagation"
    if opt in ("U", "copy", "nocopy"):
        return "copy" if opt != "U" else "U"
    if opt in _ATIME:
        return opt
    if opt == "idmap" or opt.startswith("idmap="):
        raise RlError("the idmap volume option is not supported by rl")
    raise RlError(f'invalid option type "{opt}"')


def parse_tmpfs(flag: str) -> MountRequest:
    """`--tmpfs DEST[:OPTIONS]`."""
    dest, _, opts = flag.partition(":")
    destination = _container_path(dest)
    options = _tmpfs_options(opts.split(",") if opts else [])
    return MountRequest(
        "tmpfs",
        destination,
        "tmpfs",
        tuple(o for o in options if o != "notmpcopyup"),
        copy_up="notmpcopyup" not in options,
    )


def _tmpfs_options(opts: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    out: list[str] = []
    for opt in opts:
        key = opt.split("=", 1)[0]
        if key in _PAIRS:
            other = _PAIRS[key]
            if key in seen or other in seen:
                first, second = ("rw", "ro") if key in ("ro", "rw") else sorted((key, other))
                raise RlError(
                    f"only one of '{first}' and '{second}' can be used: "
                    "duplicate mount option passed"
                )
        elif key in _TMPFS_VALUE_KEYS:
            if "=" not in opt:
                raise RlError(
                    f'mount option "{key}" needs a value ({key}=...): invalid mount option'
                )
            if key == "size":
                check_tmpfs_size(opt.split("=", 1)[1])
            elif key == "mode":
                check_tmpfs_mode(opt.split("=", 1)[1])
        elif not (
            key in PROPAGATIONS or key in _ATIME or key in ("tmpcopyup", "notmpcopyup", "noswap")
        ):
            raise RlError(f'unknown mount option "{opt}": invalid mount option')
        seen[key] = opt
        out.append(opt)
    return tuple(out)


def check_tmpfs_size(size: str) -> None:
    if not re.fullmatch(r"[0-9]+[kKmMgG%]?", size):
        raise RlError(
            f'invalid tmpfs size "{size}": use a number of bytes with an optional k, m or g '
            "suffix, or a percentage of memory"
        )


def check_tmpfs_mode(mode: str) -> None:
    if not re.fullmatch(r"[0-7]{1,4}", mode):
        raise RlError(f'invalid tmpfs mode "{mode}": must be an octal number such as 1777')


def _bool(key: str, value: str | None, what: str) -> bool:
    if value is None:
        return True
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise RlError(
        f'{what} must be set to true or false, instead received "{value}": '
        "must provide an argument for option"
    )


_MOUNT_TYPES = ("bind", "volume", "tmpfs", "devpts")


def parse_mount(flag: str, *, cwd: str | None = None) -> MountRequest:
    """`--mount type=TYPE,src=…,dst=…[,options]` with podman's keys."""
    fields = [f for f in flag.split(",") if f]
    kv: list[tuple[str, str | None]] = []
    for f in fields:
        name, eq, text = f.partition("=")
        kv.append((name.strip(), text if eq else None))
    types = [v for k, v in kv if k == "type"]
    if not types:
        raise RlError(MOUNT_FORMAT)
    kind = types[-1] or ""
    if kind in ("image", "glob", "ramfs", "artifact"):
        raise RlError(f'mount type "{kind}" is not supported by rl yet')
    if kind not in _MOUNT_TYPES:
        raise RlError(f'invalid filesystem type "{kind}"')

    source = ""
    destination = ""
    oci: list[str] = []
    chown = False
    copy_up = True
    for key, value in kv:
        if key == "type":
            continue
        if key in ("src", "source"):
            if kind == "tmpfs":
                raise RlError("source is not supported with tmpfs mounts")
            if kind == "devpts":
                raise RlError("source is not supported with devpts mounts")
            source = value or ""
        elif key in ("dst", "destination", "target", "dest"):
            destination = value or ""
        elif key in ("ro", "readonly", "rw", "readwrite"):
            # Where it is given, as podman orders it; "false" leaves the default (rw).
            wanted = _bool(key, value, "'readonly', 'ro', or 'rw'")
            read_only = wanted if key in ("ro", "readonly") else not wanted
            oci = [o for o in oci if o not in ("ro", "rw")]
            if read_only:
                oci.append("ro")
        elif key in ("relabel", "consistency", "z", "Z"):
            pass  # SELinux relabelling / macOS consistency: no-ops here
        elif key in ("U", "chown") and kind in ("bind", "volume"):
            chown = _bool(key, value, f"'{key}'")
        elif key == "bind-propagation" and kind == "bind":
            if value not in PROPAGATIONS:
                raise RlError(f'invalid value "{value}" for bind-propagation')
            oci.append(value)
        elif key == "bind-nonrecursive" and kind == "bind":
            if _bool(key, value, "'bind-nonrecursive'"):
                oci.append("bind")
        elif key in ("nocopy", "volume-nocopy") and kind == "volume":
            copy_up = not _bool(key, value, f"'{key}'")
        elif key == "tmpfs-size" and kind == "tmpfs":
            check_tmpfs_size(value or "")
            oci.append(f"size={value}")
        elif key == "tmpfs-mode" and kind == "tmpfs":
            check_tmpfs_mode(value or "")
            oci.append(f"mode={value}")
        elif key in ("tmpcopyup", "noswap") and kind == "tmpfs" and value is None:
            oci.append(key)
        elif key == "notmpcopyup" and kind == "tmpfs" and value is None:
            copy_up = False
        elif key in ("suid", "nosuid", "exec", "noexec", "dev", "nodev") and value is None:
            if key in oci or _PAIRS[key] in oci:
                raise RlError(f"{key}: duplicate mount option passed")
            oci.append(key)
        elif key == "idmap" and kind in ("bind", "volume"):
            raise RlError("the idmap mount option is not supported by rl")
        else:
            raise RlError(f"{key}: invalid mount option")
    if not destination:
        raise RlError("must set volume destination")
    destination = _container_path(destination)
    if kind == "bind":
        if not source:
            raise RlError("must set the source of a bind mount (src=HOST-PATH)")
        source = _host_path(source, cwd)
    elif kind == "volume" and source:
        check_volume_name(source)
    elif kind == "tmpfs":
        source = "tmpfs"
    elif kind == "devpts":
        source = "devpts"
    return MountRequest(kind, destination, source, tuple(oci), chown=chown, copy_up=copy_up)


def check_destinations(requests: Sequence[MountRequest]) -> None:
    """Two mounts on one container path are a mistake podman rejects."""
    seen: set[str] = set()
    for req in requests:
        if req.destination in seen:
            raise RlError(f"{req.destination}: duplicate mount destination")
        seen.add(req.destination)


def oci_options(req: MountRequest) -> list[str]:
    """The options of the OCI mount for `req`, with podman's defaults appended in its order:
    rw unless ro, rprivate unless a propagation is given, nosuid+nodev for volumes and tmpfs,
    rbind unless bind, tmpcopyup for tmpfs."""
    opts = list(req.options)
    if req.type == "devpts":
        return opts
    if "ro" not in opts and "rw" not in opts:
        opts.append("rw")
    if not any(o in PROPAGATIONS for o in opts):
        opts.append("rprivate")
    if req.type in ("volume", "tmpfs"):
        for flag in ("nosuid", "nodev"):
            if flag not in opts and _PAIRS[flag] not in opts:
                opts.append(flag)
    if req.type in ("bind", "volume") and "bind" not in opts and "rbind" not in opts:
        opts.append("rbind")
    if req.type == "tmpfs" and req.copy_up and "tmpcopyup" not in opts:
        opts.append("tmpcopyup")
    return opts
