"""Storage-driver scenarios run as the unprivileged user (`python -m tests.e2e.storage_scenarios
BASE`); prints one JSON object with what was seen, for tests/e2e/test_storage.py to judge.

Layers are built the way the image store leaves them (STORE-API.md): as root of the user
namespace, whiteouts as character devices 0:0, opaque directories marked with
`user.overlay.opaque=y`, files owned by container ids (subordinate ids on the host).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from functools import partial
from pathlib import Path
from typing import Any

from rootless import syscalls
from rootless.storage import rootfs_provider
from rootless.storage.overlay import OverlayDriver
from rootless.storage.vfs import VfsDriver
from rootless.userns import run_in_userns

MANY = 40  # layers on top of the two special ones: 42 in all


def _file(path: Path, text: str, uid: int = 0, gid: int = 0, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def build_layers(layers_dir: str) -> list[str]:
    """Runs in the user namespace. Returns the layer dirs, top first."""
    base = Path(layers_dir)
    base.mkdir()
    dirs = [base / f"{i:064x}" for i in range(2 + MANY)]
    for d in dirs:
        d.mkdir(mode=0o755)
    bottom, special = dirs[0], dirs[1]

    (bottom / "etc").mkdir()
    _file(bottom / "etc" / "hostname", "base")
    (bottom / "a").mkdir()
    _file(bottom / "a" / "keep", "keep")
    _file(bottom / "a" / "gone", "gone")
    (bottom / "opq").mkdir()
    _file(bottom / "opq" / "old", "old")
    _file(bottom / "owned", "owned", 1000, 1000, 0o640)
    (bottom / "d0").mkdir()
    _file(bottom / "d0" / "x", "x", 33, 33)
    os.chown(bottom / "d0", 33, 33)
    os.chmod(bottom / "d0", 0o700)
    _file(bottom / "h1", "hard")
    os.link(bottom / "h1", bottom / "h2")
    os.symlink("a/keep", bottom / "link")
    os.lchown(bottom / "link", 7, 7)
    _file(bottom / "suid", "suid", mode=0o4755)
    (bottom / "gonedir").mkdir()
    _file(bottom / "gonedir" / "f", "f")

    (special / "a").mkdir()
    _whiteout(special / "a" / "gone")
    (special / "opq").mkdir()
    os.setxattr(special / "opq", "user.overlay.opaque", b"y")
    _file(special / "opq" / "new", "new")
    _whiteout(special / "gonedir")
    (special / "etc").mkdir()
    _file(special / "etc" / "hostname", "top")
    _file(special / "withxattr", "x")
    os.setxattr(special / "withxattr", "user.test", b"value")

    for i in range(MANY):
        layer = dirs[2 + i]
        (layer / "many").mkdir()
        _file(layer / "many" / f"f{i}", str(i))
    _whiteout(dirs[-1] / "many" / "f0")
    return [os.fspath(d) for d in reversed(dirs)]


def view(root: str) -> dict[str, Any]:
    """Every entry under `root`: kind, owner, mode, content or link target, xattr."""
    out: dict[str, Any] = {}
    for top, subdirs, files in os.walk(root):
        for name in [".", *subdirs, *files] if top == root else [*subdirs, *files]:
            path = os.path.normpath(os.path.join(top, name))
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry: list[Any] = [stat.filemode(st.st_mode), st.st_uid, st.st_gid]
            if stat.S_ISREG(st.st_mode):
                entry.append(Path(path).read_text())
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            try:
                entry.append(os.getxattr(path, "user.test", follow_symlinks=False).decode())
            except OSError:
                pass
            out[rel] = entry
    h1, h2 = os.lstat(os.path.join(root, "h1")), os.lstat(os.path.join(root, "h2"))
    out["<h1 and h2 are one inode>"] = h1.st_ino == h2.st_ino
    return out


def mounted_view(provider: Any, target: str, change: bool) -> dict[str, Any]:
    """Runs in a new user+mount namespace: mount the rootfs, look, optionally change it."""
    provider.mount(Path(target))
    seen = view(target)
    if change:
        os.unlink(os.path.join(target, "a", "keep"))
        Path(target, "written").write_text("w")
    return seen


def upper_entries(upper: str) -> dict[str, list[Any]]:
    out = {}
    for top, subdirs, files in os.walk(upper):
        for name in subdirs + files:
            st = os.lstat(os.path.join(top, name))
            rel = os.path.relpath(os.path.join(top, name), upper)
            out[rel] = [stat.filemode(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
    return out


def host_owner(path: Path) -> list[int]:
    st = os.lstat(path)
    return [st.st_uid, st.st_gid]


def main(base_arg: str) -> dict[str, Any]:
    base = Path(base_arg)
    # A store path as deep as a real one: the absolute lower paths alone exceed a page.
    store = base / "home-of-a-user-with-a-long-name" / ".local" / "share" / "rl"
    store.mkdir(parents=True)
    lowers = [Path(p) for p in run_in_userns(build_layers, os.fspath(store / "layers"))]
    result: dict[str, Any] = {"layers": len(lowers)}
    result["abs_options_len"] = len(":".join(map(str, lowers)))
    in_ns = partial(run_in_userns, unshare_flags=syscalls.CLONE_NEWNS)

    c1 = base / "c1"
    c1.mkdir()
    (c1 / "rootfs").mkdir()
    overlay = OverlayDriver().prepare(c1, lowers)
    result["overlay"] = in_ns(mounted_view, overlay, os.fspath(c1 / "rootfs"), True)
    result["overlay_upper"] = upper_entries(os.fspath(c1 / "diff"))
    # A second mount of the same container sees its earlier changes.
    again = OverlayDriver().prepare(c1, lowers)
    second = in_ns(mounted_view, again, os.fspath(c1 / "rootfs"), False)
    result["overlay_again"] = {k: second.get(k) for k in ("a/keep", "written")}

    c2 = base / "c2"
    c2.mkdir()
    (c2 / "rootfs").mkdir()
    vfs = VfsDriver().prepare(c2, lowers)
    result["vfs"] = in_ns(mounted_view, vfs, os.fspath(c2 / "rootfs"), False)
    result["vfs_host_owner_owned"] = host_owner(c2 / "vfs" / "owned")
    result["vfs_host_owner_d0"] = host_owner(c2 / "vfs" / "d0")

    c3 = base / "c3"
    c3.mkdir()
    (c3 / "rootfs").mkdir()
    empty = OverlayDriver().prepare(c3, [])
    result["empty"] = sorted(in_ns(_listing, empty, os.fspath(c3 / "rootfs")))

    c4 = base / "c4"
    c4.mkdir()
    (c4 / "rootfs").mkdir()
    provider = rootfs_provider(f"{lowers[-1]}:O", c4)
    result["rootfs_O"] = sorted(in_ns(_listing, provider, os.fspath(c4 / "rootfs")))

    for c in (c1, c2, c3, c4):
        OverlayDriver().remove(c)
    result["left_after_remove"] = {c.name: sorted(os.listdir(c)) for c in (c1, c2, c3, c4)}
    return result


def _listing(provider: Any, target: str) -> list[str]:
    provider.mount(Path(target))
    return os.listdir(target)


def tree(root: str) -> dict[str, list[Any]]:
    """Runs in the user namespace: entries under `root` (root itself as ".")."""
    out: dict[str, list[Any]] = {}
    for top, subdirs, files in os.walk(root):
        for name in [".", *subdirs, *files] if top == root else [*subdirs, *files]:
            path = os.path.normpath(os.path.join(top, name))
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = [stat.filemode(st.st_mode), st.st_uid, st.st_gid]
    return out


def volumes_main(base_arg: str) -> dict[str, Any]:
    """resolve_mounts as `rl run` will call it: volumes created on first use with copy-up,
    U, O, tmpfs, and a missing host path."""
    from rootless.errors import RlError
    from rootless.mountflags import parse_tmpfs, parse_volume
    from rootless.volumes import VolumeStore, resolve_mounts

    base = Path(base_arg)
    store = base / "store"
    store.mkdir()
    lowers = [Path(p) for p in run_in_userns(build_layers, os.fspath(store / "layers"))]
    volumes = VolumeStore(store)
    host = base / "host"
    (host / "sub").mkdir(parents=True)
    (host / "sub" / "file").write_text("mine")
    (base / "c").mkdir()
    requests = [
        parse_volume("data:/d0"),
        parse_volume("/a"),
        parse_volume("nothing:/not/in/image"),
        parse_volume("nc:/opq:nocopy"),
        parse_volume(f"{host}:/x:U"),
        parse_tmpfs("/t:size=1m"),
        parse_volume(f"{host}:/y:O"),
    ]
    mounts = resolve_mounts(
        requests, volumes=volumes, image_lowers=lowers, user=(1000, 1000), container_dir=base / "c"
    )
    result: dict[str, Any] = {"mounts": mounts}
    result["inspect"] = {v.name: v.inspect() for v in volumes.list()}
    result["anonymous"] = [v.name for v in volumes.list() if v.anonymous]
    result["trees"] = {
        name: run_in_userns(tree, m["source"])
        for name, m in zip(("data", "anon", "nothing", "nc", "host"), mounts, strict=False)
    }
    # Second use: the content is the volume's now, no copy-up again.
    run_in_userns(_add_file, mounts[0]["source"])
    resolve_mounts([parse_volume("data:/d0")], volumes=volumes, image_lowers=lowers)
    result["data_again"] = sorted(run_in_userns(tree, mounts[0]["source"]))
    try:
        bad = [parse_volume("early:/e"), parse_volume(f"{base}/missing:/m")]
        resolve_mounts(bad, volumes=volumes)
        result["missing"] = "no error"
    except RlError as exc:
        result["missing"] = [exc.message, exc.exit_code, os.path.exists(base / "missing")]
    result["half_made"] = volumes.exists("early")
    result["names_of"] = [volumes.name_of(m["source"]) for m in mounts]
    return result


def _add_file(path: str) -> None:
    Path(path, "added").write_text("added")


def _unpack_all(blobs: list[str], diff_ids: list[str], layers_dir: str) -> list[str]:
    """Runs in the user namespace, as the image store does (STORE-API.md)."""
    from rootless.images.unpack import unpack_layer

    dirs = []
    for index, (blob, diff_id) in enumerate(zip(blobs, diff_ids, strict=True)):
        dest = Path(layers_dir) / diff_id.removeprefix("sha256:")
        unpack_layer(Path(blob), dest, diff_id=diff_id, layer_ref=f"layer {index}")
        dirs.append(os.fspath(dest))
    return dirs[::-1]  # top first


def _paths(provider: Any, target: str) -> dict[str, Any]:
    provider.mount(Path(target))
    out: dict[str, Any] = {}
    for top, subdirs, files in os.walk(target):
        for name in subdirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, target)
            data = Path(path).read_bytes().hex() if stat.S_ISREG(st.st_mode) else ""
            out[rel] = [stat.filemode(st.st_mode), st.st_uid, st.st_gid, data]
    return out


def image_main(base_arg: str) -> dict[str, Any]:
    """The rich test image's layer blobs (written into `base` by the test from tests/images.py,
    an independent tar writer; this script runs as the test user and cannot import the test
    suite), unpacked by the store's unpacker and seen through both drivers."""
    base = Path(base_arg)
    diff_ids = json.loads((base / "diff_ids.json").read_text())
    blobs = [os.fspath(base / f"blob{index}") for index in range(len(diff_ids))]
    (base / "layers").mkdir()
    lowers = run_in_userns(_unpack_all, blobs, diff_ids, os.fspath(base / "layers"))
    in_ns = partial(run_in_userns, unshare_flags=syscalls.CLONE_NEWNS)
    result: dict[str, Any] = {}
    for driver in (OverlayDriver(), VfsDriver()):
        cdir = base / driver.name
        (cdir / "rootfs").mkdir(parents=True)
        provider = driver.prepare(cdir, [Path(p) for p in lowers])
        result[driver.name] = in_ns(_paths, provider, os.fspath(cdir / "rootfs"))
        driver.remove(cdir)
    return result


if __name__ == "__main__":
    if sys.argv[1] == "image":
        json.dump(image_main(sys.argv[2]), sys.stdout)
    elif sys.argv[1] == "volumes":
        json.dump(volumes_main(sys.argv[2]), sys.stdout)
    else:
        json.dump(main(sys.argv[1]), sys.stdout)
