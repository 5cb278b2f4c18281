"""The filesystem operations called directly, without a mount: layer formats it must read, and
copy-up details that are easier to see on the layer directories."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pyfuse3
import pytest
import trio

from fuseoverlay.copyup import copy_data
from fuseoverlay.fs import OverlayFS
from fuseoverlay.inodes import ROOT_INODE

T = TypeVar("T")


@dataclass
class Context:
    """The caller's identity, as FUSE passes it."""

    uid: int = 0
    gid: int = 0
    pid: int = 0
    umask: int = 0o022


CTX = cast(pyfuse3.RequestContext, Context())  # the fields the operations read


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return trio.run(fn)


class Layers:
    def __init__(self, base: Path, lowers: int = 2) -> None:
        self.lowers = [base / f"lower{i}" for i in range(lowers)]  # top first
        self.upper, self.work = base / "upper", base / "work"
        for d in (*self.lowers, self.upper, self.work):
            d.mkdir()

    def fs(self) -> OverlayFS:
        return OverlayFS(str(self.upper), [str(d) for d in self.lowers], str(self.work))


async def names(fs: OverlayFS, ino: int = ROOT_INODE) -> list[str]:
    fh = await fs.opendir(ino, CTX)
    try:
        return sorted(os.fsdecode(n) for n in fs._dirs[fh].names if n not in (b".", b".."))
    finally:
        await fs.releasedir(fh)


async def lookup(fs: OverlayFS, path: str) -> Any:
    ino = ROOT_INODE
    attr: Any = None
    for part in path.split("/"):
        attr = await fs.lookup(ino, part.encode(), CTX)
        ino = attr.st_ino
    return attr


@pytest.fixture
def layers(tmp_path: Path) -> Layers:
    return Layers(tmp_path)


def test_tarball_whiteouts_and_opaque_markers_are_honoured(layers: Layers) -> None:
    top, bottom = layers.lowers
    for name in ("a", "b", "c", "d", "e"):
        (bottom / name).mkdir()
        (bottom / name / "old").write_text("old")
    (top / ".wh.a").write_text("")
    (top / "b").mkdir()
    (top / "b" / ".wh..wh..opq").write_text("")
    (top / "c").mkdir()
    os.setxattr(top / "c", "user.fuseoverlayfs.opaque", b"y")
    (top / "d").mkdir()
    if os.geteuid() == 0:  # trusted.* needs privilege
        os.setxattr(top / "d", "trusted.overlay.opaque", b"y")
    else:
        (top / "d" / ".wh..wh..opq").write_text("")
    (top / "e").mkdir()
    (top / "e" / "new").write_text("new")

    async def check() -> None:
        fs = layers.fs()
        assert await names(fs) == ["b", "c", "d", "e"]
        assert (await lookup(fs, "a")).st_ino == 0  # a cached negative entry
        for opaque in ("b", "c", "d"):
            assert await names(fs, (await lookup(fs, opaque)).st_ino) == []
        assert await names(fs, (await lookup(fs, "e")).st_ino) == ["new", "old"]

    run(check)


def test_a_whiteout_file_deep_in_a_middle_layer_hides_a_file_below(layers: Layers) -> None:
    # The cold lookup looks for `.wh.NAME` next to NAME in each layer above the bottom one.
    top, bottom = layers.lowers
    (bottom / "x" / "y").mkdir(parents=True)
    for name in ("f", "g"):
        (bottom / "x" / "y" / name).write_text(name)
    (top / "x" / "y").mkdir(parents=True)
    (top / "x" / "y" / ".wh.f").write_text("")

    async def check() -> None:
        fs = layers.fs()
        assert (await lookup(fs, "x/y/f")).st_ino == 0
        assert (await lookup(fs, "x/y/g")).st_size == 1
        assert await names(fs, (await lookup(fs, "x/y")).st_ino) == ["g"]

    run(check)


def test_bookkeeping_xattrs_stay_hidden(layers: Layers) -> None:
    (layers.lowers[1] / "d").mkdir()
    (layers.lowers[1] / "d" / "x").write_text("x")

    async def check() -> None:
        fs = layers.fs()
        d = await lookup(fs, "d")
        x = await lookup(fs, "d/x")
        await fs.unlink(d.st_ino, b"x", CTX)
        await fs.rmdir(ROOT_INODE, b"d", CTX)
        d = await fs.mkdir(ROOT_INODE, b"d", 0o755, CTX)
        assert os.getxattr(layers.upper / "d", "user.overlay.opaque") == b"y"
        assert await fs.listxattr(d.st_ino, CTX) == []
        await fs.setxattr(d.st_ino, b"user.mine", b"1", CTX)
        assert await fs.listxattr(d.st_ino, CTX) == [b"user.mine"]
        assert x.st_ino != d.st_ino

    run(check)


def test_unlinking_an_upper_only_file_leaves_no_whiteout(layers: Layers) -> None:
    async def check() -> None:
        fs = layers.fs()
        fi, _ = await fs.create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, os.O_WRONLY, CTX)
        await fs.write(fi.fh, 0, b"data")
        await fs.release(fi.fh)
        await fs.unlink(ROOT_INODE, b"f", CTX)
        assert os.listdir(layers.upper) == []

    run(check)


def test_rename_of_a_lower_file_keeps_its_inode_and_whites_out_the_old_name(layers: Layers) -> None:
    (layers.lowers[0] / "f").write_text("content")

    async def check() -> None:
        fs = layers.fs()
        before = await lookup(fs, "f")
        await fs.rename(ROOT_INODE, b"f", ROOT_INODE, b"g", 0, CTX)
        after = await lookup(fs, "g")
        assert after.st_ino == before.st_ino
        assert (layers.upper / "g").read_text() == "content"
        assert stat.S_ISCHR(os.lstat(layers.upper / "f").st_mode)
        assert await names(fs) == ["g"]

    run(check)


def test_a_write_after_unlink_still_reaches_the_open_file(layers: Layers) -> None:
    (layers.lowers[0] / "f").write_text("content")

    async def check() -> None:
        fs = layers.fs()
        f = await lookup(fs, "f")
        fi = await fs.open(f.st_ino, os.O_RDWR, CTX)
        await fs.unlink(ROOT_INODE, b"f", CTX)
        await fs.write(fi.fh, 0, b"CON")
        assert (await fs.getattr(f.st_ino, CTX)).st_size == 7
        assert await fs.read(fi.fh, 0, 100) == b"CONtent"
        await fs.release(fi.fh)
        assert await names(fs) == []

    run(check)


def test_copy_data_keeps_holes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    with open(src, "wb") as f:
        f.write(b"a")
        f.seek(64 << 20)
        f.write(b"b")
    size = src.stat().st_size
    src_fd, dst_fd = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT)
    try:
        copy_data(src_fd, dst_fd, size)
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    assert dst.stat().st_size == size
    assert dst.stat().st_blocks * 512 < (1 << 20)
    data = dst.read_bytes()
    assert data[0:1] == b"a" and data[-1:] == b"b" and data.count(0) == size - 2


def test_leftovers_of_a_crashed_copy_up_are_cleaned(layers: Layers) -> None:
    (layers.work / "#fo-99-1").mkdir()
    (layers.work / "#fo-99-1" / "half").write_text("half")
    (layers.work / "#fo-99-2").write_text("half")
    (layers.work / "work").mkdir()  # kernel overlayfs's, not ours
    layers.fs()
    assert os.listdir(layers.work) == ["work"]


def test_modes_are_exact_whatever_this_process_umask(layers: Layers) -> None:
    old = os.umask(0o077)
    try:

        async def check() -> None:
            fs = layers.fs()
            fi, _ = await fs.create(ROOT_INODE, b"f", stat.S_IFREG | 0o666, os.O_WRONLY, CTX)
            await fs.release(fi.fh)
            await fs.mkdir(ROOT_INODE, b"d", stat.S_IFDIR | 0o777, CTX)
            await fs.mknod(ROOT_INODE, b"p", stat.S_IFIFO | 0o666, 0, CTX)

        run(check)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in layers.upper.iterdir()}
    assert modes == {"f": 0o666, "d": 0o777, "p": 0o666}


def test_exchange_swaps_directories_with_what_is_below_them(layers: Layers) -> None:
    (layers.lowers[0] / "f").write_text("lower")

    async def check() -> None:
        fs = layers.fs()
        for name in (b"a", b"b"):
            await fs.mkdir(ROOT_INODE, name, stat.S_IFDIR | 0o755, CTX)
        a, b = await lookup(fs, "a"), await lookup(fs, "b")
        fi, inside = await fs.create(a.st_ino, b"in-a", stat.S_IFREG | 0o644, os.O_WRONLY, CTX)
        await fs.release(fi.fh)
        f = await lookup(fs, "f")
        await fs.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", pyfuse3.RENAME_EXCHANGE, CTX)
        assert (await lookup(fs, "b")).st_ino == a.st_ino
        assert (await lookup(fs, "a")).st_ino == b.st_ino
        assert (await lookup(fs, "b/in-a")).st_ino == inside.st_ino
        assert sorted(os.listdir(layers.upper / "b")) == ["in-a"]
        # a lower file and an upper directory: both in the upper layer afterwards
        await fs.rename(ROOT_INODE, b"f", ROOT_INODE, b"a", pyfuse3.RENAME_EXCHANGE, CTX)
        assert (await lookup(fs, "a")).st_ino == f.st_ino
        assert (layers.upper / "a").read_text() == "lower"
        assert (layers.upper / "f").is_dir()
        with pytest.raises(pyfuse3.FUSEError) as missing:
            await fs.rename(ROOT_INODE, b"a", ROOT_INODE, b"zz", pyfuse3.RENAME_EXCHANGE, CTX)
        assert missing.value.errno == errno.ENOENT

    run(check)


def test_a_stray_whiteout_in_an_upper_only_directory_is_replaced(layers: Layers) -> None:
    """Whiteouts are looked for only in merged directories; one found elsewhere still gives way."""

    async def check() -> None:
        fs = layers.fs()
        d = await fs.mkdir(ROOT_INODE, b"d", stat.S_IFDIR | 0o755, CTX)
        os.mknod(layers.upper / "d" / "x", stat.S_IFCHR, os.makedev(0, 0))
        fi, _ = await fs.create(d.st_ino, b"x", stat.S_IFREG | 0o600, os.O_WRONLY, CTX)
        await fs.write(fi.fh, 0, b"x")
        await fs.release(fi.fh)
        assert (layers.upper / "d" / "x").read_text() == "x"

    run(check)


def test_one_layer_directories_hide_whiteouts_and_list_opaque_subdirectories(
    layers: Layers,
) -> None:
    """Names in a directory of one layer are resolved without the merge (the cold lookup's
    short cut): a whiteout device there still hides, an opaque subdirectory is still shown."""
    bottom = layers.lowers[1]
    (bottom / "only-here" / "sub").mkdir(parents=True)
    (bottom / "only-here" / "sub" / "f").write_text("f")
    os.setxattr(bottom / "only-here" / "sub", "user.overlay.opaque", b"y")

    async def check() -> None:
        fs = layers.fs()
        d = await fs.mkdir(ROOT_INODE, b"d", stat.S_IFDIR | 0o755, CTX)
        os.mknod(layers.upper / "d" / "gone", stat.S_IFCHR, os.makedev(0, 0))
        (layers.upper / "d" / "kept").write_text("k")
        assert (await fs.lookup(d.st_ino, b"gone", CTX)).st_ino == 0
        assert stat.S_ISREG((await fs.lookup(d.st_ino, b"kept", CTX)).st_mode)
        sub = await lookup(fs, "only-here/sub")
        assert stat.S_ISDIR(sub.st_mode)
        assert await names(fs, sub.st_ino) == ["f"]

    run(check)


@pytest.mark.skipif(os.geteuid() != 0, reason="setting security.capability needs CAP_SETFCAP")
def test_an_absent_file_capability_is_remembered_until_an_xattr_changes(layers: Layers) -> None:
    """The kernel asks for security.capability before every write; the answer "none" is kept
    per file, and must not outlive setxattr/removexattr or hide a capability on a lower file."""
    import struct

    caps = struct.pack("<5I", 0x02000000, 1 << 10, 0, 0, 0)  # v2: cap_net_bind_service
    (layers.lowers[0] / "ping").write_text("")
    os.setxattr(layers.lowers[0] / "ping", "security.capability", caps)

    async def no_caps(ino: int) -> bool:
        try:
            await fs.getxattr(ino, b"security.capability", CTX)
        except pyfuse3.FUSEError as exc:
            assert exc.errno == errno.ENODATA
            return True
        return False

    fs = layers.fs()

    async def check() -> None:
        assert await fs.getxattr((await lookup(fs, "ping")).st_ino, b"security.capability", CTX)
        fi, attr = await fs.create(ROOT_INODE, b"f", stat.S_IFREG | 0o755, os.O_WRONLY, CTX)
        await fs.release(fi.fh)
        assert await no_caps(attr.st_ino)
        await fs.setxattr(attr.st_ino, b"security.capability", caps, CTX)
        assert await fs.getxattr(attr.st_ino, b"security.capability", CTX) == caps
        await fs.removexattr(attr.st_ino, b"security.capability", CTX)
        assert await no_caps(attr.st_ino)

    run(check)
