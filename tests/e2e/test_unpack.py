"""The layer unpacker, run for real: as the unprivileged user, inside a user namespace.

The test (root) builds layer tars with `tarfile`, runs rl's unpacker as the test user through a
tiny runner script (run_in_userns + unpack_layer, as the image store does), and inspects the
result on the host: owners shifted into the user's subordinate range, modes, times, xattrs,
whiteouts, and, for hostile layers, that nothing outside the layer directory changed.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import stat
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import User, installed_tool

pytestmark = pytest.mark.e2e

# rl's own venv python: it has `rootless` installed, whatever directory the tests run from.
PYTHON = installed_tool("python")

RUNNER = r"""
import functools, json, os, sys
from pathlib import Path
from rootless.errors import RlError
from rootless.images.unpack import remove_tree, unpack_layer
from rootless.userns import build_mapping, run_in_userns

action, blob, dest, diff_id = sys.argv[1:5]
try:
    if action == "remove":
        run_in_userns(remove_tree, Path(dest))
        print(json.dumps({"removed": True}))
    elif action == "remove-outside-userns":
        remove_tree(Path(dest))
        print(json.dumps({"removed": True}))
    else:
        single = build_mapping(os.getuid(), os.getgid(), [], [])
        unpack = functools.partial(
            unpack_layer, Path(blob), Path(dest), diff_id=diff_id, layer_ref="test-layer"
        )
        size = run_in_userns(unpack, mapping=single if action == "unpack-single" else None)
        print(json.dumps({"size": size}))
except RlError as exc:
    print(json.dumps({"error": str(exc)}))
"""

MTIME = 1_600_000_000
DIR_MTIME = 1_500_000_000


# --- building layers ---------------------------------------------------------------------


@dataclass
class Layer:
    """A layer tar under construction: members in order, PAX format (for xattrs)."""

    members: list[tuple[tarfile.TarInfo, bytes]] = field(default_factory=list)

    def _add(self, name: str, kind: bytes, data: bytes = b"", **attrs: Any) -> Layer:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data)
        info.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
        info.mtime = MTIME
        for key, value in attrs.items():
            setattr(info, key, value)
        self.members.append((info, data))
        return self

    def file(self, name: str, data: bytes = b"", **attrs: Any) -> Layer:
        return self._add(name, tarfile.REGTYPE, data, **attrs)

    def dir(self, name: str, **attrs: Any) -> Layer:
        return self._add(name, tarfile.DIRTYPE, **attrs)

    def symlink(self, name: str, target: str, **attrs: Any) -> Layer:
        return self._add(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **attrs)

    def hardlink(self, name: str, target: str) -> Layer:
        return self._add(name, tarfile.LNKTYPE, linkname=target)

    def fifo(self, name: str, **attrs: Any) -> Layer:
        return self._add(name, tarfile.FIFOTYPE, **attrs)

    def device(self, name: str, kind: bytes, major: int, minor: int) -> Layer:
        return self._add(name, kind, devmajor=major, devminor=minor)

    def tar_bytes(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self.members:
                tar.addfile(info, io.BytesIO(data) if data else None)
        return out.getvalue()


def diff_id_of(tar: bytes) -> str:
    return "sha256:" + hashlib.sha256(tar).hexdigest()


@dataclass
class Outcome:
    dest: Path
    size: int | None
    error: str | None

    @property
    def refused(self) -> bool:
        return self.error is not None


class Unpacker:
    """Runs the real unpacker as the test user, with a sentinel directory beside `dest`."""

    def __init__(self, user: User, workdir: Path) -> None:
        self.user = user
        self.workdir = workdir
        self.dest = workdir / "layer"
        self.sentinel = workdir / "sentinel"
        self.blobs = workdir / "blobs"
        self.blobs.mkdir()
        os.chown(self.blobs, user.uid, user.gid)
        self.sentinel.mkdir(mode=0o755)
        (self.sentinel / "secret").write_bytes(b"original")
        (self.sentinel / "sub").mkdir(mode=0o755)
        for path in (self.sentinel, self.sentinel / "secret", self.sentinel / "sub"):
            os.chown(path, user.uid, user.gid)
        self.count = 0

    def run(self, action: str, blob: Path, diff_id: str) -> dict[str, object]:
        result = self.user.run([PYTHON, "-c", RUNNER, action, str(blob), str(self.dest), diff_id])
        assert result.returncode == 0, f"runner crashed: {result}"
        lines = result.stdout.strip().splitlines()
        assert lines, f"runner printed nothing: {result}"
        answer: dict[str, object] = json.loads(lines[-1])
        return answer

    def unpack(
        self,
        layer: Layer | bytes,
        *,
        compress: bool = False,
        diff_id: str | None = None,
        single_mapping: bool = False,
    ) -> Outcome:
        tar = layer if isinstance(layer, bytes) else layer.tar_bytes()
        self.count += 1
        blob = self.blobs / f"layer-{self.count}.tar"
        blob.write_bytes(gzip.compress(tar) if compress else tar)
        os.chown(blob, self.user.uid, self.user.gid)
        if self.dest.exists():
            self.run("remove", blob, "")
        action = "unpack-single" if single_mapping else "unpack"
        answer = self.run(action, blob, diff_id or diff_id_of(tar))
        size = answer.get("size")
        error = answer.get("error")
        return Outcome(
            self.dest,
            size if isinstance(size, int) else None,
            error if isinstance(error, str) else None,
        )

    def outside(self) -> dict[str, tuple[int, int, int, int, bytes]]:
        """Everything in workdir except the layer itself: what no layer may change."""
        seen = {}
        for path in _walk(self.workdir):
            if any(path == top or top in path.parents for top in (self.dest, self.blobs)):
                continue
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            seen[str(path)] = (st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, content)
        return seen


def _walk(top: Path) -> Iterator[Path]:
    for entry in os.scandir(top):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)


def subid_start(user: User) -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _count = line.split(":")
        if name in (user.name, str(user.uid)):
            return int(start)
    pytest.skip(f"{user.name} has no /etc/subuid range")


@pytest.fixture
def unpacker(user: User, workdir: Path) -> Unpacker:
    return Unpacker(user, workdir)


# --- what a layer holds ------------------------------------------------------------------


def capability_xattr(cap_bit: int) -> bytes:
    """A VFS_CAP_REVISION_2 security.capability value granting `cap_bit` (permitted, effective)."""
    return struct.pack("<IIIII", 0x02000000 | 1, 1 << cap_bit, 0, 0, 0)


def test_ownership_modes_times_xattrs_and_links(unpacker: Unpacker, user: User) -> None:
    start = subid_start(user)
    cap_net_bind_service = 10
    layer = (
        Layer()
        .dir("home", mtime=DIR_MTIME)
        .dir("home/alice", uid=1000, gid=1000, mode=0o2750, mtime=DIR_MTIME)
        .file("home/alice/notes", b"hello\n", uid=1000, gid=1000, mode=0o600)
        .file("usr/bin/su", b"\x7fELF", uid=0, gid=0, mode=0o4755)
        .file("usr/bin/wall", b"\x7fELF", uid=0, gid=5, mode=0o2755)
        .dir("tmp", mode=0o1777, mtime=DIR_MTIME)
        .file(
            "usr/bin/ping",
            b"\x7fELF",
            mode=0o755,
            pax_headers={
                "SCHILY.xattr.user.comment": "pings",
                "SCHILY.xattr.security.capability": capability_xattr(cap_net_bind_service).decode(
                    "utf-8", "surrogateescape"
                ),
                "SCHILY.xattr.trusted.secret": "dropped",
                "SCHILY.xattr.user.overlay.redirect": "/etc",
            },
        )
        .hardlink("usr/bin/su-again", "usr/bin/su")
        .symlink("usr/bin/sh", "/bin/busybox", uid=1000, gid=1000)
        .fifo("run/pipe", uid=1000, gid=1000, mode=0o620)
        .file("/abs/path", b"x")  # a leading / is stripped, as tar does
    )
    outcome = unpacker.unpack(layer)
    assert outcome.error is None
    assert outcome.size == len(b"hello\n") + 4 * 3 + 1
    dest = outcome.dest

    alice = (dest / "home/alice").lstat()
    assert (alice.st_uid, alice.st_gid) == (start + 999, start + 999)
    assert stat.S_IMODE(alice.st_mode) == 0o2750
    assert alice.st_mtime == DIR_MTIME  # set after its file was created
    notes = (dest / "home/alice/notes").lstat()
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (
        start + 999,
        start + 999,
        0o600,
    )
    assert notes.st_mtime == MTIME
    assert (dest / "home/alice/notes").read_bytes() == b"hello\n"
    assert (dest / "home").lstat().st_mtime == DIR_MTIME

    su = (dest / "usr/bin/su").lstat()
    assert (su.st_uid, su.st_gid) == (user.uid, user.gid)  # container root is the user
    assert stat.S_IMODE(su.st_mode) == 0o4755
    wall = (dest / "usr/bin/wall").lstat()
    assert wall.st_gid == start + 4 and stat.S_IMODE(wall.st_mode) == 0o2755
    assert stat.S_IMODE((dest / "tmp").lstat().st_mode) == 0o1777
    # Missing parents are created like tar does: 0755, owned by container root.
    usr = (dest / "usr").lstat()
    assert stat.S_IMODE(usr.st_mode) == 0o755 and usr.st_uid == user.uid

    ping = dest / "usr/bin/ping"
    assert os.getxattr(ping, "user.comment") == b"pings"
    capability = os.getxattr(ping, "security.capability")
    assert struct.unpack("<I", capability[4:8])[0] & (1 << cap_net_bind_service)
    names = os.listxattr(ping)
    assert "trusted.secret" not in names and "user.overlay.redirect" not in names

    again = (dest / "usr/bin/su-again").lstat()
    assert again.st_ino == su.st_ino and again.st_nlink == 2
    sh = dest / "usr/bin/sh"
    assert os.readlink(sh) == "/bin/busybox"
    assert sh.lstat().st_uid == start + 999
    pipe = (dest / "run/pipe").lstat()
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620
    assert pipe.st_uid == start + 999
    assert (dest / "abs/path").read_bytes() == b"x"


def test_concatenated_gzip_members(unpacker: Unpacker, user: User) -> None:
    tar = Layer().file("a", b"A" * 100_000).file("b", b"B" * 70_000).tar_bytes()
    blob = unpacker.blobs / "multi.tar.gz"
    blob.write_bytes(gzip.compress(tar[:30_000]) + gzip.compress(tar[30_000:]))
    os.chown(blob, user.uid, user.gid)
    answer = unpacker.run("unpack", blob, diff_id_of(tar))
    assert answer == {"size": 170_000}
    assert (unpacker.dest / "b").read_bytes() == b"B" * 70_000


def test_whiteouts_and_opaque_directories(unpacker: Unpacker) -> None:
    layer = (
        Layer()
        .dir("etc")
        .file("etc/.wh.motd")
        .file("lib/.wh.modules")  # in a directory only a lower layer has
        .dir("var/cache")
        .file("var/cache/.wh..wh..opq")
        .file("var/cache/fresh", b"new")
        .file("srv/.wh..wh..opq")  # before its directory's own entry
        .dir("srv", mode=0o700)
        .file(".wh..wh.plnk/12.34")  # aufs bookkeeping: skipped
    )
    outcome = unpacker.unpack(layer)
    assert outcome.error is None
    for hidden in ("etc/motd", "lib/modules"):
        st = (outcome.dest / hidden).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, hidden
    for opaque in ("var/cache", "srv"):
        assert os.getxattr(outcome.dest / opaque, "user.overlay.opaque") == b"y", opaque
    assert stat.S_IMODE((outcome.dest / "srv").lstat().st_mode) == 0o700
    assert (outcome.dest / "var/cache/fresh").read_bytes() == b"new"
    assert not (outcome.dest / ".wh..wh.plnk").exists()
    assert "user.overlay.opaque" not in os.listxattr(outcome.dest / "etc")


def test_later_entries_replace_earlier_ones(unpacker: Unpacker) -> None:
    layer = (
        Layer()
        .file("file-over-file", b"old")
        .file("file-over-file", b"new")
        .file("dir-over-file", b"old")
        .dir("dir-over-file")
        .dir("file-over-dir")
        .file("file-over-dir/child", b"gone")
        .dir("file-over-dir/deeper", mode=0o000)
        .file("file-over-dir", b"flat")
        .dir("merged")
        .file("merged/kept", b"kept")
        .file("merged/.wh..wh..opq")
        .dir("merged", mode=0o750)
        .file("link-over-file", b"old")
        .symlink("link-over-file", "elsewhere")
        .dir("link-over-dir")
        .symlink("link-over-dir", "elsewhere")
        .file("whiteout-over-file", b"old")
        .file(".wh.whiteout-over-file")
    )
    outcome = unpacker.unpack(layer)
    assert outcome.error is None, outcome.error
    dest = outcome.dest
    assert (dest / "file-over-file").read_bytes() == b"new"
    assert (dest / "dir-over-file").is_dir()
    assert (dest / "file-over-dir").read_bytes() == b"flat"
    assert (dest / "merged/kept").read_bytes() == b"kept"
    assert os.getxattr(dest / "merged", "user.overlay.opaque") == b"y"
    assert stat.S_IMODE((dest / "merged").lstat().st_mode) == 0o750
    assert os.readlink(dest / "link-over-file") == "elsewhere"
    assert os.readlink(dest / "link-over-dir") == "elsewhere"
    assert stat.S_ISCHR((dest / "whiteout-over-file").lstat().st_mode)


# --- hostile layers ------------------------------------------------------------------------


def hostile_layers(sentinel: Path) -> dict[str, tuple[Layer, bool]]:
    """name -> (layer, refused?): each must be refused, or contained when refused is False."""
    absolute = str(sentinel)
    return {
        "dotdot traversal": (Layer().file("../sentinel/pwned", b"x"), True),
        "dotdot in the middle": (Layer().dir("a").file("a/../../sentinel/pwned", b"x"), True),
        "absolute path": (Layer().file(f"{absolute}/pwned", b"x"), False),
        "write through a symlink to a directory": (
            Layer().symlink("escape", "../sentinel").file("escape/pwned", b"x"),
            True,
        ),
        "write through an absolute symlink to a directory": (
            Layer().symlink("escape", absolute).dir("escape/sub").file("escape/sub/pwned", b"x"),
            True,
        ),
        "write through a symlink to a file": (
            Layer().symlink("secret", "../sentinel/secret").file("secret", b"pwned"),
            False,
        ),
        "directory entry over a symlink to a directory": (
            Layer().symlink("d", "../sentinel").dir("d", mode=0o777),
            False,
        ),
        "hardlink to outside": (Layer().hardlink("stolen", "../sentinel/secret"), True),
        "hardlink to an absolute path": (Layer().hardlink("stolen", f"{absolute}/secret"), True),
        "hardlink through a symlink": (
            Layer().symlink("s", "../sentinel").hardlink("stolen", "s/secret"),
            True,
        ),
        "hardlink to a symlink, then write": (
            Layer().symlink("s", "../sentinel/secret").hardlink("h", "s").file("h", b"pwned"),
            False,
        ),
        "whiteout naming outside": (Layer().file("../.wh.sentinel"), True),
        "whiteout of dotdot": (Layer().file("etc/.wh.."), True),
        "opaque marker outside": (Layer().file("../sentinel/.wh..wh..opq"), True),
        "symlink chain escape": (
            Layer().symlink("a", "b").symlink("b", "../../..").file("a/tmp/pwned", b"x"),
            True,
        ),
        "symlink chain to the sentinel": (
            Layer().symlink("a", "b").symlink("b", "../sentinel").file("a/secret", b"pwned"),
            True,
        ),
        "device nodes": (
            Layer()
            .device("dev/sda", tarfile.BLKTYPE, 8, 0)
            .device("dev/mem", tarfile.CHRTYPE, 1, 1),
            False,
        ),
        "non-directory as the layer root": (Layer().file("./", b"x"), True),
    }


@pytest.mark.parametrize("case", list(hostile_layers(Path("/x"))))
def test_hostile_layer_is_refused_or_contained(unpacker: Unpacker, case: str) -> None:
    layer, refused = hostile_layers(unpacker.sentinel)[case]
    before = unpacker.outside()
    outcome = unpacker.unpack(layer)
    assert unpacker.outside() == before, "something outside the layer changed"
    if refused:
        assert outcome.error is not None, "the layer was accepted"
        assert outcome.error.startswith("layer test-layer: entry "), outcome.error
        assert not outcome.dest.exists(), "a refused layer leaves nothing behind"
    else:
        assert outcome.error is None, outcome.error


def test_contained_layers_land_inside(unpacker: Unpacker) -> None:
    cases = hostile_layers(unpacker.sentinel)
    outcome = unpacker.unpack(cases["absolute path"][0])
    assert (outcome.dest / str(unpacker.sentinel).lstrip("/") / "pwned").read_bytes() == b"x"
    outcome = unpacker.unpack(cases["write through a symlink to a file"][0])
    assert (outcome.dest / "secret").read_bytes() == b"pwned"
    assert not (outcome.dest / "secret").is_symlink()
    outcome = unpacker.unpack(cases["device nodes"][0])
    assert outcome.error is None
    assert not (outcome.dest / "dev/sda").exists() and not (outcome.dest / "dev/mem").exists()
    outcome = unpacker.unpack(cases["directory entry over a symlink to a directory"][0])
    assert (outcome.dest / "d").is_dir() and not (outcome.dest / "d").is_symlink()
    assert stat.S_IMODE(unpacker.sentinel.stat().st_mode) == 0o755


def test_refusal_messages_name_the_entry_and_why(unpacker: Unpacker) -> None:
    cases = hostile_layers(unpacker.sentinel)
    error = unpacker.unpack(cases["write through a symlink to a directory"][0]).error
    assert error == (
        "layer test-layer: entry escape/pwned: parent /escape is a symlink; "
        "refusing to write through it"
    )
    error = unpacker.unpack(cases["dotdot traversal"][0]).error
    assert error == "layer test-layer: entry ../sentinel/pwned: path contains '..'"
    error = unpacker.unpack(cases["hardlink to an absolute path"][0]).error
    assert error is not None and "is not in the layer" in error
    error = unpacker.unpack(Layer().file("../two\nlines", b"x")).error
    assert error == "layer test-layer: entry '../two\\nlines': path contains '..'"


# --- whole-layer failures ------------------------------------------------------------------


def test_wrong_diff_id_is_refused_and_removed(unpacker: Unpacker) -> None:
    layer = Layer().dir("etc").file("etc/hosts", b"127.0.0.1 localhost\n")
    outcome = unpacker.unpack(layer, compress=True, diff_id="sha256:" + "0" * 64)
    assert outcome.error is not None
    assert "not the expected sha256:" + "0" * 64 in outcome.error
    assert not outcome.dest.exists()


def test_corrupt_streams_are_refused_and_removed(unpacker: Unpacker) -> None:
    tar = Layer().file("a", os.urandom(20_000)).file("b", b"b").tar_bytes()
    truncated = gzip.compress(tar)[:-100]
    outcome = unpacker.unpack(truncated, diff_id=diff_id_of(tar))
    assert outcome.error is not None and "not a valid (compressed) tar stream" in outcome.error
    assert not outcome.dest.exists()
    # A damaged header in the middle must not end the archive quietly.
    damaged = bytearray(tar)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        second_header = archive.getmembers()[1].offset
    damaged[second_header : second_header + 100] = b"\xff" * 100
    outcome = unpacker.unpack(bytes(damaged))
    assert outcome.error is not None and "corrupt tar stream" in outcome.error
    assert not outcome.dest.exists()


def test_single_id_mapping_explains_subordinate_ids(unpacker: Unpacker, user: User) -> None:
    layer = Layer().dir("home").file("home/app", b"x", uid=1000, gid=1000)
    outcome = unpacker.unpack(layer, single_mapping=True)
    assert outcome.error == (
        "layer test-layer: entry home/app: owned by 1000:1000, but only one id is mapped into "
        "the user namespace (no subordinate ids): add a range to /etc/subuid and /etc/subgid, "
        "e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
        f"{user.name}`"
    )
    assert not outcome.dest.exists()
    # Root-owned content is fine with a single mapping.
    assert unpacker.unpack(Layer().file("etc/x", b"x"), single_mapping=True).error is None


def test_remove_tree_copes_with_locked_directories(unpacker: Unpacker, user: User) -> None:
    layer = (
        Layer()
        .dir("locked", mode=0o000)
        .dir("locked/inner", mode=0o000)
        .file("locked/inner/file", b"x", mode=0o000, uid=1000, gid=1000)
        .dir("readonly", mode=0o500)
        .file("readonly/file", b"x")
        .symlink("readonly/link", str(unpacker.sentinel))
    )
    assert unpacker.unpack(layer).error is None
    assert unpacker.run("remove", Path("-"), "") == {"removed": True}
    assert not unpacker.dest.exists()
    assert (unpacker.sentinel / "secret").read_bytes() == b"original"

    # The user's own tree, outside any namespace (no capabilities to bypass modes).
    mine = unpacker.dest
    (mine / "a/b").mkdir(parents=True)
    (mine / "a/b/f").write_text("x")
    for path in (mine, mine / "a", mine / "a/b", mine / "a/b/f"):
        os.chown(path, user.uid, user.gid)
    os.chmod(mine / "a/b", 0o000)
    os.chmod(mine / "a", 0o500)
    assert unpacker.run("remove-outside-userns", Path("-"), "") == {"removed": True}
    assert not mine.exists()


def test_existing_destination_is_left_alone(unpacker: Unpacker, user: User) -> None:
    unpacker.dest.mkdir()
    (unpacker.dest / "mine").write_bytes(b"keep")
    os.chown(unpacker.dest, user.uid, user.gid)
    tar = Layer().file("a", b"a").tar_bytes()
    blob = unpacker.blobs / "plain.tar"
    blob.write_bytes(tar)
    answer = unpacker.run("unpack", blob, diff_id_of(tar))
    assert answer == {"error": f"layer test-layer: cannot create {unpacker.dest}: File exists"}
    assert (unpacker.dest / "mine").read_bytes() == b"keep"


def test_unsupported_compression_is_explained(unpacker: Unpacker) -> None:
    zstd_frame = b"\x28\xb5\x2f\xfd" + b"\0" * 60
    outcome = unpacker.unpack(zstd_frame, diff_id="sha256:" + "1" * 64)
    assert outcome.error is not None
    if importlib.util.find_spec("zstandard") is None:
        assert "zstd-compressed: install the Python module `zstandard`" in outcome.error
    assert not outcome.dest.exists()
    outcome = unpacker.unpack(b"BZh91AY&SY" + b"\0" * 60, diff_id="sha256:" + "1" * 64)
    assert (
        outcome.error is not None and "bzip2-compressed layers are not supported" in outcome.error
    )
    assert not outcome.dest.exists()
