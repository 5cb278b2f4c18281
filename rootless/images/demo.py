"""The demo image: a busybox root filesystem built on this host, without a registry.

`rl image create-demo` makes it from Debian's busybox-static (/bin/busybox and its applet
links), so a fresh install can show a container running with no network at all. The build is
deterministic: timestamps come from the busybox binary, so building twice gives the same image
ID, and the store keeps one copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rootless.errors import RlError

DEMO_NAME = "localhost/rl-demo:latest"
BUSYBOX = Path("/bin/busybox")
DEMO_CMD = ["/bin/sh", "-c", "echo Hello from a rootless rl container; uname -a"]
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
nogroup:x:65534:
"""
OS_RELEASE = """\
NAME="rl demo"
ID=rl-demo
PRETTY_NAME="rl demo (busybox)"
"""

# (path, mode) of the directories, parents first.
DIRECTORIES = (
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("dev", 0o755),
    ("proc", 0o755),
    ("sys", 0o755),
    ("run", 0o755),
    ("home", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/tmp", 0o1777),
)


@dataclass(frozen=True)
class DemoImage:
    rootfs_tar: bytes  # one uncompressed layer
    config: dict[str, Any]  # the image config; docker_archive() fills in rootfs.diff_ids


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """The applet link paths busybox knows (`bin/sh`, `usr/bin/awk` …), itself excluded."""
    try:
        listed = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as err:
        raise RlError(
            f"cannot run {busybox} to build the demo image ({err}): "
            "install busybox-static (apt-get install busybox-static)"
        ) from err
    return sorted(set(listed.stdout.split()) - {"bin/busybox"})


def build_demo(busybox: Path = BUSYBOX) -> DemoImage:
    if not busybox.is_file():
        raise RlError(
            f"{busybox} is missing, and the demo image is built from it: "
            "install busybox-static (apt-get install busybox-static)"
        )
    binary = busybox.read_bytes()
    if not is_static_executable(binary):
        # A dynamically linked busybox (Debian's `busybox`) finds no libc in the image.
        raise RlError(
            f"{busybox} is not a statically linked executable, and the demo image has no "
            "libraries: install busybox-static (apt-get install busybox-static)"
        )
    mtime = int(busybox.stat().st_mtime)
    rootfs = rootfs_tar(binary, busybox_applets(busybox), mtime)
    return DemoImage(rootfs, demo_config(mtime))


def is_static_executable(elf: bytes) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): it needs no ld.so."""
    if elf[:4] != b"\x7fELF" or len(elf) < 64:
        return False
    order = "<" if elf[5] == 1 else ">"
    if elf[4] == 2:  # 64-bit
        (phoff,) = struct.unpack_from(order + "Q", elf, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", elf, 0x36)
    else:
        (phoff,) = struct.unpack_from(order + "I", elf, 0x1C)
        phentsize, phnum = struct.unpack_from(order + "HH", elf, 0x2A)
    pt_interp = 3
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + 4 > len(elf):
            return False
        (p_type,) = struct.unpack_from(order + "I", elf, offset)
        if p_type == pt_interp:
            return False
    return True


def rootfs_tar(busybox_binary: bytes, applets: list[str], mtime: int) -> bytes:
    """A root filesystem tar: directories, busybox, its applet links, a few /etc files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, mtime, link
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for name, mode in DIRECTORIES:
            add(name, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox_binary)
        for applet in applets:
            if "/" in applet and applet.rsplit("/", 1)[0] not in dict(DIRECTORIES):
                continue  # an applet in a directory we do not make
            add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())
        add("etc/os-release", tarfile.REGTYPE, 0o644, OS_RELEASE.encode())
    return buffer.getvalue()


def demo_config(mtime: int) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    return {
        "created": created,
        "architecture": go_architecture(),
        "os": "linux",
        "config": {
            "Env": [PATH_ENV],
            "Cmd": list(DEMO_CMD),
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": "rl demo (busybox)"},
        },
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created": created, "created_by": "rl image create-demo"}],
    }


def docker_archive(demo: DemoImage, name: str) -> bytes:
    """The demo as a one-image docker-archive, the form `ImageStore.load` takes."""
    layer_hex = hashlib.sha256(demo.rootfs_tar).hexdigest()
    config = {**demo.config, "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]}}
    config_json = config_bytes(config)
    config_name = f"{hashlib.sha256(config_json).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [f"{layer_hex}.tar"]}]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in (
            (config_name, config_json),
            (f"{layer_hex}.tar", demo.rootfs_tar),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def create_demo(name: str = DEMO_NAME) -> str:
    """Builds the demo image and adds it to the store under `name`; returns its ID.

    Building twice gives the same image, so running this again only (re)sets the name.
    """
    from rootless.images.reference import normalize_local_name
    from rootless.images.store import ImageStore

    full_name = normalize_local_name(name)
    archive = docker_archive(build_demo(), full_name)
    store = ImageStore.open()
    try:
        store.load(io.BytesIO(archive))
        return store.resolve(full_name).id
    finally:
        store.close()


def go_architecture() -> str:
    import platform

    machine = platform.machine()
    names = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
    return names.get(machine, machine)


def config_bytes(config: dict[str, Any]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
