"""Test images built offline with `tarfile`, independently of rl's own archive code.

The tests check rl against this second implementation, so nothing here imports `rootless`.
Images are described by value (`ImageSpec`: layers of `Entry`s plus a config section), built in
memory (`build_image`) and written as docker-archive or oci-archive files. Everything is
deterministic (fixed mtimes, owners, gzip headers), so digests and image IDs are stable from run
to run and can be asserted.

    spec = rich_busybox_spec()
    image = build_image(spec)
    write_docker_archive(path, [image])       # what `podman save` writes
    write_oci_archive(path, [image])          # what `podman save --format oci-archive` writes
    image.id, image.diff_ids, image.layer_digests, merged_tree(spec)

The busybox binary comes from the host's busybox-static package (/bin/busybox), so the images
run for real.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import platform
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

FIXED_MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z
FIXED_CREATED = "2023-11-14T22:13:20Z"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_NAME = "localhost/rl-test/busybox:latest"
MINIMAL_NAME = "localhost/rl-test/minimal:latest"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_REF_NAME = "org.opencontainers.image.ref.name"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

EntryKind = Literal["file", "dir", "symlink", "hardlink", "whiteout", "opaque"]
Compression = Literal["none", "gzip"]
DockerLayout = Literal["podman", "docker-legacy", "docker-oci"]


# --- what goes into a layer ---------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tar member of a layer. `path` is relative (`etc/passwd`); whiteouts name the hidden
    path (`etc/motd`) and opaque entries the directory, the `.wh.` member names are derived."""

    path: str
    kind: EntryKind
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    target: str = ""  # symlink target, or the path a hardlink points at
    xattrs: tuple[tuple[str, str], ...] = ()

    @property
    def member_name(self) -> str:
        parent, base = _split(self.path)
        if self.kind == "whiteout":
            return _join(parent, WHITEOUT_PREFIX + base)
        if self.kind == "opaque":
            return _join(self.path, OPAQUE_MARKER)
        return self.path


def file(
    path: str,
    data: bytes | str = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    xattrs: Mapping[str, str] | None = None,
) -> Entry:
    content = data.encode() if isinstance(data, str) else data
    attrs = tuple(sorted((xattrs or {}).items()))
    return Entry(_clean(path), "file", content, mode, uid, gid, xattrs=attrs)


def directory(path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), "dir", mode=mode, uid=uid, gid=gid)


def symlink(path: str, target: str, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_clean(path), "symlink", mode=0o777, uid=uid, gid=gid, target=target)


def hardlink(path: str, target: str) -> Entry:
    """`path` becomes another name of the file `target` (earlier in the same layer)."""
    return Entry(_clean(path), "hardlink", target=_clean(target))


def whiteout(path: str) -> Entry:
    """Deletes `path` (and everything under it) of the layers below."""
    return Entry(_clean(path), "whiteout")


def opaque(path: str) -> Entry:
    """Hides everything the layers below have inside directory `path`."""
    return Entry(_clean(path), "opaque")


@dataclass(frozen=True)
class Layer:
    entries: tuple[Entry, ...]
    compression: Compression = "none"
    created_by: str = ""


def layer(
    entries: Iterable[Entry], compression: Compression = "none", created_by: str = ""
) -> Layer:
    return Layer(tuple(entries), compression, created_by)


@dataclass(frozen=True)
class ImageSpec:
    layers: tuple[Layer, ...]
    names: tuple[str, ...] = ()
    # The "config" section of the image config: Env, Cmd, Entrypoint, WorkingDir, User, Labels,
    # ExposedPorts, Volumes, StopSignal ...
    config: Mapping[str, Any] = field(default_factory=dict)
    architecture: str = ""  # default: the host's, in Go's spelling (amd64, arm64)
    os: str = "linux"
    created: str = FIXED_CREATED
    author: str = ""


# --- building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltLayer:
    blob: bytes  # as stored in the archive: plain or gzip-compressed tar
    tar: bytes  # the uncompressed tar
    compression: Compression

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)

    @property
    def media_type(self) -> str:
        return OCI_LAYER_GZIP if self.compression == "gzip" else OCI_LAYER


@dataclass(frozen=True)
class BuiltImage:
    spec: ImageSpec
    layers: tuple[BuiltLayer, ...]
    config_bytes: bytes
    manifest_bytes: bytes  # the OCI image manifest (what an oci-archive holds)

    @property
    def config_digest(self) -> str:
        return sha256(self.config_bytes)

    @property
    def id(self) -> str:
        """The image ID podman and rl show: the hex sha256 of the config blob."""
        return self.config_digest.removeprefix("sha256:")

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def diff_ids(self) -> list[str]:
        return [built.diff_id for built in self.layers]

    @property
    def layer_digests(self) -> list[str]:
        return [built.digest for built in self.layers]

    @property
    def names(self) -> list[str]:
        return list(self.spec.names)

    @property
    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.config_bytes)
        return loaded

    @property
    def size(self) -> int:
        """Bytes of uncompressed layer content (sum of the layer tars)."""
        return sum(len(built.tar) for built in self.layers)


def build_image(spec: ImageSpec) -> BuiltImage:
    return assemble_image(spec, [build_layer(item) for item in spec.layers])


def image_from_tars(
    tars: Sequence[bytes],
    *,
    names: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    compression: Compression = "none",
) -> BuiltImage:
    """An image from ready-made layer tars (a rootfs split up, for benchmarks)."""
    layers = [
        BuiltLayer(gzip.compress(tar, mtime=0) if compression == "gzip" else tar, tar, compression)
        for tar in tars
    ]
    return assemble_image(ImageSpec(layers=(), names=tuple(names), config=config or {}), layers)


def assemble_image(spec: ImageSpec, layers: Sequence[BuiltLayer]) -> BuiltImage:
    """Config and manifest for built layers; `spec` gives names, config and metadata."""
    commands = [item.created_by for item in spec.layers]
    config = {
        "created": spec.created,
        "architecture": spec.architecture or host_architecture(),
        "os": spec.os,
        "config": dict(spec.config),
        "rootfs": {"type": "layers", "diff_ids": [built.diff_id for built in layers]},
        "history": [
            {
                "created": spec.created,
                "created_by": (commands[index] if index < len(commands) else "")
                or f"layer {index}",
            }
            for index in range(len(layers))
        ],
    }
    if spec.author:
        config["author"] = spec.author
    config_bytes = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": built.media_type, "digest": built.digest, "size": len(built.blob)}
            for built in layers
        ],
    }
    return BuiltImage(spec, tuple(layers), config_bytes, _json(manifest))


def build_layer(spec: Layer) -> BuiltLayer:
    tar = layer_tar(spec.entries)
    blob = gzip.compress(tar, mtime=0) if spec.compression == "gzip" else tar
    return BuiltLayer(blob, tar, spec.compression)


def layer_tar(entries: Iterable[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.member_name)
            info.mtime = FIXED_MTIME
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            content: bytes | None = None
            if entry.kind in ("file", "whiteout", "opaque"):
                info.type = tarfile.REGTYPE
                content = entry.data
                info.size = len(content)
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
            elif entry.kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = entry.target
            if entry.kind in ("whiteout", "opaque"):
                info.mode = 0o644
            info.pax_headers = {f"SCHILY.xattr.{name}": value for name, value in entry.xattrs}
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


# --- the view a container sees ----------------------------------------------------------------


def merged_tree(spec: ImageSpec | Sequence[Layer]) -> dict[str, Entry]:
    """What the root filesystem shows once every layer is applied, by path.

    Whiteouts and opaque markers never appear; a hardlink keeps kind "hardlink" with `target`
    naming the path it shares an inode with.
    """
    layers = spec.layers if isinstance(spec, ImageSpec) else spec
    tree: dict[str, Entry] = {}
    for item in layers:
        for entry in item.entries:
            if entry.kind == "whiteout":
                _remove_subtree(tree, entry.path, keep_root=False)
            elif entry.kind == "opaque":
                _remove_subtree(tree, entry.path, keep_root=True)
        for entry in item.entries:
            if entry.kind in ("whiteout", "opaque"):
                continue
            previous = tree.get(entry.path)
            if previous is not None and (previous.kind == "dir") != (entry.kind == "dir"):
                _remove_subtree(tree, entry.path, keep_root=False)
            tree[entry.path] = entry
    return tree


def _remove_subtree(tree: dict[str, Entry], path: str, *, keep_root: bool) -> None:
    prefix = path + "/"
    for name in [name for name in tree if name.startswith(prefix) or name == path]:
        if keep_root and name == path:
            continue
        del tree[name]


# --- archives ---------------------------------------------------------------------------------


def docker_archive_members(
    images: Sequence[BuiltImage], layout: DockerLayout = "podman"
) -> list[tuple[str, bytes]]:
    """The files of a docker-archive (`docker save` / `podman save`), in writing order.

    layout "podman": `<config-hex>.json`, `<diffid-hex>.tar` (what podman 4 writes);
    "docker-legacy": `<id>/layer.tar`, `<id>/json`, `<id>/VERSION` (docker before 25);
    "docker-oci": an OCI layout plus manifest.json, blobs under `blobs/sha256/` (docker 25+).
    """
    members: dict[str, bytes] = {}
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for image in images:
        config_name = {
            "podman": f"{image.id}.json",
            "docker-legacy": f"{image.id}.json",
            "docker-oci": f"blobs/sha256/{image.id}",
        }[layout]
        members[config_name] = image.config_bytes
        layer_names = []
        parent = ""
        for built in image.layers:
            if layout == "podman":
                name = f"{_hex(built.diff_id)}.tar"
            elif layout == "docker-legacy":
                # The legacy v1 ID chains the layer to its parent; any stable hash will do.
                v1_id = _hex(sha256(f"{parent}\n{built.diff_id}".encode()))
                name = f"{v1_id}/layer.tar"
                members[f"{v1_id}/VERSION"] = b"1.0"
                v1_json: dict[str, Any] = {"id": v1_id, "created": image.spec.created}
                if parent:
                    v1_json["parent"] = parent
                members[f"{v1_id}/json"] = _json(v1_json)
                parent = v1_id
            else:
                name = f"blobs/sha256/{_hex(built.digest)}"
            members[name] = built.blob
            layer_names.append(name)
        manifest.append({"Config": config_name, "RepoTags": image.names, "Layers": layer_names})
        for name in image.names:
            repo, tag = split_tag(name)
            repositories.setdefault(repo, {})[tag] = _hex(image.diff_ids[-1])
    if layout == "docker-oci":
        for image in images:
            members[f"blobs/sha256/{_hex(image.manifest_digest)}"] = image.manifest_bytes
        members["oci-layout"] = _json({"imageLayoutVersion": "1.0.0"})
        members["index.json"] = _oci_index(images)
    members["manifest.json"] = _json(manifest)
    if repositories and layout != "docker-oci":
        members["repositories"] = _json(repositories)
    return list(members.items())


def oci_archive_members(images: Sequence[BuiltImage]) -> list[tuple[str, bytes]]:
    """The files of an oci-archive: `oci-layout`, `index.json`, `blobs/sha256/*`."""
    members: dict[str, bytes] = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"})}
    for image in images:
        for built in image.layers:
            members[f"blobs/sha256/{_hex(built.digest)}"] = built.blob
        members[f"blobs/sha256/{image.id}"] = image.config_bytes
        members[f"blobs/sha256/{_hex(image.manifest_digest)}"] = image.manifest_bytes
    members["index.json"] = _oci_index(images)
    return list(members.items())


def _oci_index(images: Sequence[BuiltImage]) -> bytes:
    manifests = []
    for image in images:
        descriptor: dict[str, Any] = {
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": len(image.manifest_bytes),
        }
        if not image.names:
            manifests.append(descriptor)
        for name in image.names:
            manifests.append({**descriptor, "annotations": {OCI_REF_NAME: name}})
    return _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def write_docker_archive(
    path: Path,
    images: Sequence[BuiltImage],
    *,
    layout: DockerLayout = "podman",
    gzip_archive: bool = False,
) -> Path:
    """Writes a docker-archive tar (gzip-compressed as a whole when asked); returns `path`."""
    return _write_tar(path, docker_archive_members(images, layout), gzip_archive)


def write_oci_archive(
    path: Path, images: Sequence[BuiltImage], *, gzip_archive: bool = False
) -> Path:
    return _write_tar(path, oci_archive_members(images), gzip_archive)


def write_oci_layout(directory: Path, images: Sequence[BuiltImage]) -> Path:
    """The same content as an oci-archive, unpacked into a directory (`oci:` transport)."""
    for name, data in oci_archive_members(images):
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory


def _write_tar(path: Path, members: Sequence[tuple[str, bytes]], gzip_archive: bool) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for name, data in members:
            for parent in reversed(PurePosixPath(name).parents[:-1]):
                if str(parent) not in directories:
                    directories.add(str(parent))
                    info = tarfile.TarInfo(str(parent))
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if gzip_archive else data)
    path.chmod(0o644)
    return path


# --- the standard test images -----------------------------------------------------------------

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
tester:x:1000:1000:Test User:/home/tester:/bin/sh
"""

GROUP = """\
root:x:0:
daemon:x:1:
tester:x:1000:
extra:x:2000:tester
nobody:x:65534:
"""

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@functools.cache
def busybox_applets() -> tuple[str, ...]:
    """Paths of the applet links (`usr/bin/awk`, `bin/sh` …) as the host's busybox lists them."""
    if not BUSYBOX.exists():
        raise RuntimeError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    listed = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, check=True, text=True
    )
    return tuple(sorted(set(listed.stdout.split()) - {"bin/busybox"}))


@functools.cache
def _busybox_binary() -> bytes:
    return BUSYBOX.read_bytes()


def busybox_base_entries() -> list[Entry]:
    """A runnable busybox root filesystem: directories, the binary, applet links, users."""
    entries = [
        directory("bin"),
        directory("sbin"),
        directory("usr"),
        directory("usr/bin"),
        directory("usr/sbin"),
        directory("usr/local"),
        directory("usr/local/bin"),
        directory("etc"),
        directory("dev"),
        directory("proc"),
        directory("sys"),
        directory("run"),
        directory("var"),
        directory("var/tmp", mode=0o1777),
        directory("tmp", mode=0o1777),
        directory("root", mode=0o700),
        directory("home"),
        file("bin/busybox", _busybox_binary(), mode=0o755),
    ]
    entries += [symlink(applet, "/bin/busybox") for applet in busybox_applets()]
    entries += [
        file("etc/passwd", PASSWD),
        file("etc/group", GROUP),
        file("etc/hostname", "rl-test\n"),
        file("etc/motd", "layer 1\n"),
    ]
    return entries


def minimal_spec(name: str = MINIMAL_NAME, compression: Compression = "none") -> ImageSpec:
    """One busybox layer: the smallest image that runs."""
    return ImageSpec(
        layers=(layer(busybox_base_entries(), compression, "ADD busybox /"),),
        names=(name,) if name else (),
        config={"Env": [PATH_ENV], "Cmd": ["sh"]},
    )


def rich_busybox_spec(
    name: str = BUSYBOX_NAME, compression: Compression | Sequence[Compression] = "none"
) -> ImageSpec:
    """Three layers with every feature the store must handle.

    Layer 2 adds: tester-owned files (1000:1000, 0640), a setuid file, hardlinks, relative,
    absolute and dangling symlinks, user xattrs, and things layer 3 removes. Layer 3 deletes a
    file and a directory with whiteouts, makes `data/opaque` opaque, turns a file into a
    directory, and overwrites /etc/motd. `merged_tree(spec)` gives the expected result.
    """
    kinds = [compression] * 3 if isinstance(compression, str) else list(compression)
    features = [
        directory("home/tester", uid=1000, gid=1000),
        file("home/tester/secret.txt", "tester's secret\n", mode=0o640, uid=1000, gid=1000),
        directory("home/tester/shared", mode=0o2775, uid=1000, gid=2000),
        file("usr/local/bin/setuid-tool", "#!/bin/sh\nid\n", mode=0o4755),
        directory("data"),
        file("data/hardlink-a", "one inode, two names\n"),
        hardlink("data/hardlink-b", "data/hardlink-a"),
        symlink("data/link-relative", "hardlink-a"),
        symlink("data/link-absolute", "/etc/passwd"),
        symlink("data/link-dangling", "/does/not/exist"),
        file(
            "data/xattrs",
            "has xattrs\n",
            xattrs={"user.rl.test": "hello", "user.rl.other": "world"},
        ),
        file("data/empty", ""),
        file("data/file-then-dir", "a file in layer 2\n"),
        file("etc/to-be-deleted", "removed by a whiteout in layer 3\n"),
        directory("data/dir-to-be-deleted"),
        file("data/dir-to-be-deleted/inner", "gone too\n"),
        directory("data/opaque"),
        file("data/opaque/old-1", "hidden by the opaque marker\n"),
        file("data/opaque/old-2", "hidden by the opaque marker\n"),
        file("etc/motd", "layer 2\n"),
    ]
    changes = [
        directory("etc"),
        whiteout("etc/to-be-deleted"),
        directory("data"),
        whiteout("data/dir-to-be-deleted"),
        directory("data/opaque"),
        opaque("data/opaque"),
        file("data/opaque/new", "the only file left in data/opaque\n"),
        directory("data/file-then-dir"),
        file("data/file-then-dir/child", "a directory in layer 3\n"),
        file("etc/motd", "layer 3\n"),
    ]
    return ImageSpec(
        layers=(
            layer(busybox_base_entries(), kinds[0], "ADD busybox /"),
            layer(features, kinds[1], "COPY features /"),
            layer(changes, kinds[2], "RUN rm -rf /etc/to-be-deleted …"),
        ),
        names=(name,) if name else (),
        config={
            "Env": [PATH_ENV, "RL_TEST=yes", "GREETING=hello world"],
            "Cmd": ["/bin/sh", "-c", "echo hello from the rl test image"],
            "WorkingDir": "/data",
            "Labels": {"org.rl.test": "yes", "maintainer": "rl tests"},
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "StopSignal": "SIGTERM",
        },
        author="rl tests",
    )


@dataclass(frozen=True)
class ArchiveSet:
    """The session's prebuilt archives (see the fixtures in tests/conftest.py)."""

    directory: Path
    busybox: BuiltImage  # rich_busybox_spec(): three plain layers
    busybox_gzip: BuiltImage  # gzip-compressed layers: same diff_ids and ID, other digests
    minimal: BuiltImage
    docker_archive: Path  # busybox as a docker-archive (podman layout)
    oci_archive: Path  # busybox as an oci-archive
    gzip_docker_archive: Path  # busybox_gzip as a docker-archive
    multi_docker_archive: Path  # busybox + minimal in one docker-archive
    multi_oci_archive: Path  # busybox + minimal in one oci-archive


def build_test_archives(directory: Path) -> ArchiveSet:
    busybox = build_image(rich_busybox_spec())
    busybox_gzip = build_image(rich_busybox_spec(compression="gzip"))
    minimal = build_image(minimal_spec())
    return ArchiveSet(
        directory=directory,
        busybox=busybox,
        busybox_gzip=busybox_gzip,
        minimal=minimal,
        docker_archive=write_docker_archive(directory / "busybox.docker.tar", [busybox]),
        oci_archive=write_oci_archive(directory / "busybox.oci.tar", [busybox]),
        gzip_docker_archive=write_docker_archive(
            directory / "busybox-gzip.docker.tar", [busybox_gzip]
        ),
        multi_docker_archive=write_docker_archive(
            directory / "multi.docker.tar", [busybox, minimal]
        ),
        multi_oci_archive=write_oci_archive(directory / "multi.oci.tar", [busybox, minimal]),
    )


# --- small helpers ----------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_tag(name: str) -> tuple[str, str]:
    """`registry/repo:tag` -> (`registry/repo`, `tag`); a port colon is not a tag."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"


def host_architecture() -> str:
    machine = platform.machine()
    go_names = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
    return go_names.get(machine, machine)


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _clean(path: str) -> str:
    cleaned = str(PurePosixPath("/", path).relative_to("/"))
    if cleaned in ("", ".") or ".." in PurePosixPath(cleaned).parts:
        raise ValueError(f"bad layer path: {path!r}")
    return cleaned


def _split(path: str) -> tuple[str, str]:
    pure = PurePosixPath(path)
    parent = str(pure.parent)
    return ("" if parent == "." else parent), pure.name


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
