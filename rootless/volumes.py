"""Named volumes, and turning mount requests into the OCI mounts of a container.

A volume is `<data_dir>/volumes/<name>/` holding `_data/` (what containers see) and
`volume.json` (labels, creation time, pending first-use work). Creation is one rename of a
fully built directory, removal one rename out of the way followed by deletion, so no reader
ever sees half a volume. Files in `_data` belong to the container's ids, i.e. subordinate ids
on the host: copy-up, chown and removal happen as root of the user namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.errors import RlError
from rootless.mountflags import MountRequest, check_destinations, oci_options

if TYPE_CHECKING:
    from rootless.userns import IdMapping

DATA = "_data"
META = "volume.json"
DRIVER = "local"
# In the container dir: upper/work dirs of `O` mounts (removed with the container's storage).
OVERLAY_SCRATCH = "volume-overlays"

# Given a volume name, the containers (ids or names) whose mounts use it.
UsersOf = Callable[[str], list[str]]


def _no_users(name: str) -> list[str]:
    return []


def rfc3339_nano(timestamp: float) -> str:
    """Go's time.RFC3339Nano in local time, as podman prints CreatedAt."""
    ns = int(timestamp * 1e9)
    local = time.localtime(ns // 1_000_000_000)
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    offset = time.strftime("%z", local)
    zone = "Z" if offset in ("+0000", "-0000") else f"{offset[:3]}:{offset[3:]}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + (f".{frac}" if frac else "") + zone


@dataclass
class Volume:
    name: str
    mountpoint: Path
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    # First-use work podman also tracks: copy the image's content in, chown to the user.
    needs_copy_up: bool = True
    needs_chown: bool = True

    def to_meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created": self.created,
            "labels": self.labels,
            "options": self.options,
            "anonymous": self.anonymous,
            "needs_copy_up": self.needs_copy_up,
            "needs_chown": self.needs_chown,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], mountpoint: Path) -> Volume:
        return cls(
            name=str(meta["name"]),
            mountpoint=mountpoint,
            created=float(meta.get("created", 0.0)),
            labels={str(k): str(v) for k, v in dict(meta.get("labels") or {}).items()},
            options={str(k): str(v) for k, v in dict(meta.get("options") or {}).items()},
            anonymous=bool(meta.get("anonymous", False)),
            needs_copy_up=bool(meta.get("needs_copy_up", False)),
            needs_chown=bool(meta.get("needs_chown", False)),
        )

    def inspect(self, mount_count: int = 0) -> dict[str, Any]:
        """podman's `volume inspect` object."""
        out: dict[str, Any] = {
            "Name": self.name,
            "Driver": DRIVER,
            "Mountpoint": str(self.mountpoint),
            "CreatedAt": rfc3339_nano(self.created),
            "Labels": dict(self.labels),
            "Scope": "local",
            "Options": dict(self.options),
            "MountCount": mount_count,
        }
        if self.needs_copy_up:
            out["NeedsCopyUp"] = True
        if self.needs_chown:
            out["NeedsChown"] = True
        return out


def no_such_volume(name: str) -> RlError:
    return RlError(f'no volume with name "{name}" found: no such volume')


class VolumeStore:
    def __init__(self, root: Path | None = None, users_of: UsersOf | None = None) -> None:
        if root is None:
            from rootless.paths import data_dir

            root = data_dir()
        self.dir = root / "volumes"
        self.users_of = users_of or _no_users

    def _path(self, name: str) -> Path:
        return self.dir / name

    def find(self, name: str) -> Volume | None:
        if not name or "/" in name or name.startswith("."):
            return None
        path = self._path(name)
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RlError(f"volume {name}: unreadable metadata {path / META}: {exc}") from exc
        return Volume.from_meta(meta, path / DATA)

    def get(self, name: str) -> Volume:
        volume = self.find(name)
        if volume is None:
            raise no_such_volume(name)
        return volume

    def exists(self, name: str) -> bool:
        return self.find(name) is not None

    def list(self) -> list[Volume]:
        try:
            names = sorted(n for n in os.listdir(self.dir) if not n.startswith("."))
        except FileNotFoundError:
            return []
        return [v for v in (self.find(n) for n in names) if v is not None]

    def name_of(self, source: str | Path) -> str | None:
        """The volume whose `_data` is `source` (an OCI mount's source), else None: lets the
        container record which volumes it uses, e.g. to remove anonymous ones with it."""
        path = Path(source)
        if path.name != DATA or path.parent.parent != self.dir:
            return None
        name = path.parent.name
        return name if self.exists(name) else None

    def create(
        self,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        anonymous: bool = False,
        ignore_existing: bool = False,
    ) -> Volume:
        """A new, empty volume; a random 64-hex name when `name` is None (as podman)."""
        name = name or secrets.token_hex(32)
        _check_name(name)
        existing = self.find(name)
        if existing is not None:
            if ignore_existing:
                return existing
            raise RlError(f"volume with name {name} already exists: volume already exists")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = self.dir / f".new-{secrets.token_hex(8)}"
        staging.mkdir(mode=0o700)
        (staging / DATA).mkdir(mode=0o755)
        volume = Volume(
            name,
            self._path(name) / DATA,
            time.time(),
            dict(labels or {}),
            anonymous=anonymous,
        )
        (staging / META).write_text(json.dumps(volume.to_meta()))
        try:
            os.rename(staging, self._path(name))
        except OSError as exc:
            _remove_as_owner(staging)
            if self.exists(name):  # a concurrent create won
                if ignore_existing:
                    return self.get(name)
                raise RlError(
                    f"volume with name {name} already exists: volume already exists"
                ) from exc
            raise RlError(f"cannot create volume {name}: {exc}") from exc
        return volume

    def save(self, volume: Volume) -> None:
        path = self._path(volume.name)
        tmp = path / f".{META}.{os.getpid()}"
        tmp.write_text(json.dumps(volume.to_meta()))
        os.replace(tmp, path / META)

    def remove(self, name: str, *, force: bool = False) -> None:
        """Delete a volume and its data; refuses while containers use it."""
        self.get(name)
        users = self.users_of(name)
        if users:
            raise RlError(
                f"volume {name} is being used by the following container(s): "
                f"{', '.join(users)}: volume is being used",
                exit_code=2,
            )
        trash = self.dir / f".trash-{secrets.token_hex(8)}"
        try:
            os.rename(self._path(name), trash)
        except FileNotFoundError as exc:
            raise no_such_volume(name) from exc
        _remove_as_owner(trash)


def _check_name(name: str) -> None:
    from rootless.mountflags import VOLUME_NAME_RE, VOLUME_NAME_RULE

    if not VOLUME_NAME_RE.fullmatch(name):
        raise RlError(
            f"running volume create option: names must match {VOLUME_NAME_RULE}: invalid argument"
        )


def _remove_as_owner(path: Path) -> None:
    """Remove a tree whose files may belong to subordinate ids."""
    from rootless.storage.tree import remove_paths

    if os.getuid() == 0:
        remove_paths([path])
        return
    from rootless.userns import run_in_userns

    run_in_userns(remove_paths, [os.fspath(path)])


# --- from mount requests to OCI mounts ----------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """First-use work on a mount source, done together in one user-namespace process."""

    kind: str  # "copy-up" | "chown" | "chown-r"
    path: str
    subpath: str = ""


def _run_jobs(jobs: Sequence[_Job], lowers: Sequence[str], uid: int, gid: int) -> list[bool]:
    """Runs as root of the user namespace. For each copy-up: whether image content was there."""
    from rootless.storage.tree import chown_tree, merge_layers

    done = []
    for job in jobs:
        if job.kind == "copy-up":
            if os.listdir(job.path):
                done.append(False)  # only an empty volume receives the image's content
                continue
            copied = merge_layers(lowers, job.path, job.subpath) if lowers else False
            if not copied:
                os.chown(job.path, uid, gid)
            done.append(copied)
        elif job.kind == "chown":
            os.chown(job.path, uid, gid)
            done.append(True)
        else:
            chown_tree(job.path, uid, gid)
            done.append(True)
    return done


def _check_requests(requests: Sequence[MountRequest], container_dir: Path | None) -> None:
    """Everything that can fail before anything is created, so a bad flag leaves no
    half-made volumes behind."""
    check_destinations(requests)
    for req in requests:
        if req.type == "bind" and not os.path.exists(req.source):
            raise RlError(f"statfs {req.source}: no such file or directory")
        if req.type == "bind" and req.overlay and ("," in req.source or ":" in req.source):
            raise RlError(f"{req.source}: the O volume option cannot use a path with ',' or ':'")
    if any(req.overlay for req in requests):
        if container_dir is None:
            raise RlError("internal error: the O volume option needs the container's directory")
        from rootless.storage.probe import overlay_support

        probe = overlay_support()
        if not probe.works:
            raise RlError(
                f"the O volume option needs kernel overlayfs in a user namespace: {probe.reason}"
            )


def _overlay_mount(req: MountRequest, source: str, scratch: Path) -> dict[str, Any]:
    """`-v SRC:DST:O`: SRC as the lower dir of an overlay whose upper dir is thrown away
    with the container (podman's shape: type overlay, private, userxattr)."""
    for name in ("upper", "work"):
        (scratch / name).mkdir(mode=0o755, parents=True, exist_ok=True)
    return {
        "destination": req.destination,
        "type": "overlay",
        "source": "overlay",
        "options": [
            f"lowerdir={source}",
            f"upperdir={scratch / 'upper'}",
            f"workdir={scratch / 'work'}",
            "private",
            "userxattr",
        ],
    }


def resolve_mounts(
    requests: Sequence[MountRequest],
    *,
    volumes: VolumeStore,
    image_lowers: Sequence[Path] = (),
    user: tuple[int, int] = (0, 0),
    container_dir: Path | None = None,
    mapping: IdMapping | None = None,
) -> list[dict[str, Any]]:
    """OCI mount dicts for `requests`, in order, with podman's options.

    Bind sources must exist (podman 4.3 refuses a missing host path with "statfs …: no such
    file or directory" rather than creating it). Named volumes are created on first use
    (anonymous ones get a random name and are marked anonymous); a volume's first mount copies
    in the image's content at the destination (`image_lowers`, top first) unless `nocopy`,
    or else chowns it to `user` (container uid, gid). `U` chowns the source recursively.
    `container_dir` holds the scratch dirs of `O` mounts. `mapping` is the container's
    IdMapping (default: the user's default mapping).
    """
    _check_requests(requests, container_dir)
    mounts: list[dict[str, Any]] = []
    jobs: list[_Job] = []
    pending: list[tuple[int, Volume, str]] = []  # (job index, volume, what to clear)
    for index, req in enumerate(requests):
        if req.type == "bind":
            source = req.source
        elif req.type == "volume":
            volume = volumes.find(req.source) if req.source else None
            if volume is None:
                volume = volumes.create(req.source or None, anonymous=not req.source)
            source = str(volume.mountpoint)
            if volume.needs_copy_up and req.copy_up:
                pending.append((len(jobs), volume, "copy-up"))
                jobs.append(_Job("copy-up", source, req.destination))
            elif volume.needs_chown:
                pending.append((len(jobs), volume, "chown"))
                jobs.append(_Job("chown", source))
        else:
            mounts.append(
                {
                    "destination": req.destination,
                    "type": req.type,
                    "source": req.source,
                    "options": oci_options(req),
                }
            )
            continue
        if req.chown:
            jobs.append(_Job("chown-r", source))
        if req.overlay and container_dir is not None:
            scratch = container_dir / OVERLAY_SCRATCH / str(index)
            mounts.append(_overlay_mount(req, source, scratch))
        else:
            mounts.append(
                {
                    "destination": req.destination,
                    "type": "bind",
                    "source": source,
                    "options": oci_options(req),
                }
            )
    if jobs:
        lowers = [os.fspath(p) for p in image_lowers]
        if os.getuid() == 0:
            results = _run_jobs(jobs, lowers, user[0], user[1])
        else:
            from rootless.userns import run_in_userns

            results = run_in_userns(_run_jobs, jobs, lowers, user[0], user[1], mapping=mapping)
        for job_index, volume, what in pending:
            if what == "copy-up" and results[job_index]:
                volume.needs_copy_up = False
            volume.needs_chown = False
            volumes.save(volume)
    return mounts
