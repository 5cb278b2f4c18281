"""Union-filesystem semantics, observed the same way on any implementation.

    python -m tests.fuseoverlay.semantics KIND BASE [SCENARIO...]

KIND is `kernel` (overlayfs with userxattr, as root of a user namespace), `fuse` (fuseoverlay as
root of a user namespace) or `fuse-plain` (fuseoverlay as the plain user, no namespace). Each
scenario builds its own lower layers under BASE, mounts, acts through the mount point, unmounts
and reports what it saw. Prints one JSON object {scenario: observations}; test_semantics.py runs
it for each kind and compares.

Knobs for exploring by hand: SEMANTICS_SEED and SEMANTICS_OPS vary the `random` scenario (a
seeded sequence of operations on a few names); FO_DEBUG=1 runs fuseoverlay with -d.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from traceback import format_exc
from typing import Any

from rootless import syscalls
from rootless.userns import run_in_userns

# Run by the installed python (tests/harness.py run_script): fuseoverlay is installed beside it.
FUSEOVERLAY = str(Path(sys.executable).parent / "fuseoverlay")
Obs = dict[str, Any]


def _err(fn: Callable[[], object]) -> str:
    """'ok' or the errno name an operation ends with."""
    try:
        fn()
    except OSError as exc:
        if not exc.errno:
            return str(exc.strerror)
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"


def _write(
    path: Path, data: str | bytes, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, *owner)


def _whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def _tree(root: Path) -> dict[str, str]:
    """Everything visible under root: type, mode, owner, size and content for files."""
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            desc = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
            if stat.S_ISREG(st.st_mode):
                desc += f" {path.read_bytes()[:64]!r}"
            elif stat.S_ISLNK(st.st_mode):
                desc += f" -> {os.readlink(path)}"
            seen[rel] = desc
    return seen


def _upper(root: Path) -> dict[str, str]:
    """The upper layer as overlayfs reads it: whiteouts, opaque dirs, plain entries."""
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                seen[rel] = "whiteout"
            elif stat.S_ISDIR(st.st_mode):
                try:
                    opaque = os.getxattr(path, "user.overlay.opaque") == b"y"
                except OSError:
                    opaque = False
                seen[rel] = "opaque dir" if opaque else "dir"
            else:
                seen[rel] = "file"
    return seen


# --- mounting ------------------------------------------------------------------------------


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


@contextlib.contextmanager
def mounted(kind: str, base: Path) -> Iterator[Path]:
    lowers = sorted((p for p in base.iterdir() if p.name.startswith("lower")), reverse=True)
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for d in (upper, work, merged):
        d.mkdir(exist_ok=True)
    lowerdir = ":".join(str(p) for p in lowers)  # lower2 above lower1
    options = f"lowerdir={lowerdir},upperdir={upper},workdir={work}"
    if kind == "kernel":
        syscalls.mount("overlay", merged, "overlay", 0, options + ",userxattr")
        try:
            yield merged
        finally:
            syscalls.umount(merged, syscalls.MNT_DETACH)
        return
    proc = subprocess.Popen(
        [FUSEOVERLAY, "-d" if os.environ.get("FO_DEBUG") else "-f", "-o", options, str(merged)],
        preexec_fn=lambda: syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL),
    )
    try:
        deadline = time.monotonic() + 15
        while not _mounted(merged):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fuseoverlay did not mount (exit {proc.poll()})")
            time.sleep(0.02)
        yield merged
    finally:
        if _mounted(merged):
            if kind == "fuse-plain":
                subprocess.run(["fusermount3", "-u", "-z", str(merged)], check=False, timeout=30)
            else:
                syscalls.umount(merged, syscalls.MNT_DETACH)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- scenarios: build(lower_dirs) then act(merged, base) -> observations ----------------------


def build_rename(base: Path) -> None:
    lower = base / "lower1"
    (lower / "dir" / "sub").mkdir(parents=True)
    _write(lower / "dir" / "a", "a")
    _write(lower / "dir" / "sub" / "b", "b")
    _write(lower / "file", "file")
    (lower / "other").mkdir()


def act_rename(m: Path, base: Path) -> Obs:
    obs: Obs = {}
    obs["rename lower dir"] = _err(lambda: os.rename(m / "dir", m / "moved"))
    mv = subprocess.run(["mv", str(m / "dir"), str(m / "moved")], capture_output=True, check=False)
    obs["mv lower dir"] = mv.returncode
    obs["rename lower file"] = _err(lambda: os.rename(m / "file", m / "other" / "file2"))
    (m / "new").mkdir()
    _write(m / "new" / "x", "x")
    obs["rename upper dir"] = _err(lambda: os.rename(m / "new", m / "other" / "new2"))
    obs["rename over non-empty"] = _err(lambda: os.rename(m / "other", m / "moved"))
    (m / "empty").mkdir()
    obs["rename dir over empty dir"] = _err(lambda: os.rename(m / "other" / "new2", m / "empty"))
    obs["tree"] = _tree(m)
    obs["upper"] = _upper(base / "upper")
    return obs


def build_hardlink(base: Path) -> None:
    lower = base / "lower1"
    lower.mkdir()
    _write(lower / "f", "lower")


def act_hardlink(m: Path, base: Path) -> Obs:
    os.link(m / "f", m / "g")
    f, g = os.stat(m / "f"), os.stat(m / "g")
    obs: Obs = {"nlink": [f.st_nlink, g.st_nlink], "same inode": f.st_ino == g.st_ino}
    with open(m / "g", "a") as out:
        out.write("+through g")
    obs["f after write to g"] = (m / "f").read_text()
    os.unlink(m / "f")
    obs["g nlink after unlink f"] = os.stat(m / "g").st_nlink
    obs["g"] = (m / "g").read_text()
    obs["tree"] = _tree(m)
    return obs


def build_whiteout(base: Path) -> None:
    lower = base / "lower1"
    (lower / "d").mkdir(parents=True)
    _write(lower / "f", "old")
    _write(lower / "d" / "x", "x")
    upper_layer = base / "lower2"  # a second lower hiding `gone` with a whiteout
    upper_layer.mkdir()
    _write(lower / "gone", "gone")
    _whiteout(upper_layer / "gone")
    _whiteout(upper_layer / "d")  # hides the lower dir d


def act_whiteout(m: Path, base: Path) -> Obs:
    obs: Obs = {"initial": sorted(os.listdir(m))}
    os.unlink(m / "f")
    obs["after unlink"] = sorted(os.listdir(m))
    obs["stat removed"] = _err(lambda: os.stat(m / "f"))
    _write(m / "f", "new", 0o600)
    obs["recreated"] = (m / "f").read_text()
    obs["recreated mode"] = oct(os.stat(m / "f").st_mode)
    _write(m / "gone", "back")
    (m / "d").mkdir()
    obs["d after mkdir"] = sorted(os.listdir(m / "d"))
    obs["tree"] = _tree(m)
    obs["upper"] = _upper(base / "upper")
    return obs


def build_opaque(base: Path) -> None:
    lower = base / "lower1"
    (lower / "d" / "deep").mkdir(parents=True)
    _write(lower / "d" / "x", "x")
    _write(lower / "d" / "deep" / "y", "y")


def act_opaque(m: Path, base: Path) -> Obs:
    obs: Obs = {"rmdir non-empty": _err(lambda: os.rmdir(m / "d"))}
    shutil.rmtree(m / "d")
    obs["exists after rmtree"] = (m / "d").exists()
    (m / "d").mkdir()
    obs["listing of new d"] = sorted(os.listdir(m / "d"))
    obs["stat old child"] = _err(lambda: os.stat(m / "d" / "x"))
    _write(m / "d" / "z", "z")
    obs["tree"] = _tree(m)
    obs["upper"] = _upper(base / "upper")
    return obs


READDIR_FILES = 3000


def build_readdir(base: Path) -> None:
    lower = base / "lower1"
    (lower / "d").mkdir(parents=True)
    for i in range(READDIR_FILES):
        _write(lower / "d" / f"lower-file-with-a-long-name-{i:05d}", "")


def act_readdir(m: Path, base: Path) -> Obs:
    d = m / "d"
    for i in range(0, READDIR_FILES, 2):  # half of them copied up
        os.chmod(d / f"lower-file-with-a-long-name-{i:05d}", 0o600)
    removed: set[str] = set()
    added: set[str] = set()
    seen: list[str] = []
    with os.scandir(d) as it:
        for n, entry in enumerate(it):
            seen.append(entry.name)
            if n % 10 == 0:  # remove one not yet read and add a new one
                victim = f"lower-file-with-a-long-name-{READDIR_FILES - 1 - n:05d}"
                if victim not in seen and (d / victim).exists():
                    os.unlink(d / victim)
                    removed.add(victim)
                name = f"added-{n:05d}"
                _write(d / name, "")
                added.add(name)
    stable = {f"lower-file-with-a-long-name-{i:05d}" for i in range(READDIR_FILES)} - removed
    return {
        "duplicates": len(seen) - len(set(seen)),
        "stable entries missed": sorted(stable - set(seen)),
        "removed entries seen": sorted(removed & set(seen)),
        "final count": len(os.listdir(d)),
        "expected final count": READDIR_FILES - len(removed) + len(added),
    }


def build_xattr(base: Path) -> None:
    lower = base / "lower1"
    (lower / "d").mkdir(parents=True)
    _write(lower / "f", "f")
    os.setxattr(lower / "f", "user.lower", b"from lower")


def act_xattr(m: Path, base: Path) -> Obs:
    obs: Obs = {"lower xattr": os.getxattr(m / "f", "user.lower").decode()}
    os.setxattr(m / "f", "user.added", b"added")
    os.rename(m / "f", m / "d" / "g")
    g = m / "d" / "g"
    obs["after rename"] = {
        n: os.getxattr(g, n).decode() for n in sorted(os.listxattr(g)) if n.startswith("user.")
    }
    os.removexattr(g, "user.lower")
    obs["after remove"] = sorted(n for n in os.listxattr(g) if n.startswith("user."))
    obs["remove missing"] = _err(lambda: os.removexattr(g, "user.lower"))
    obs["get missing"] = _err(lambda: os.getxattr(g, "user.nothing"))
    os.setxattr(m / "d", "user.dir", b"dir")
    obs["dir xattrs"] = sorted(n for n in os.listxattr(m / "d") if n.startswith("user."))
    return obs


MTIME = 1_000_000_000


def build_chmod(base: Path) -> None:
    lower = base / "lower1"
    lower.mkdir()
    _write(lower / "f", "content", 0o644, (0, 0))
    _write(lower / "g", "content", 0o4755, (0, 0))
    _write(lower / "owned", "content", 0o640, (1000, 1000))
    for name in ("f", "g", "owned"):
        os.utime(lower / name, (MTIME, MTIME))


def act_chmod(m: Path, base: Path) -> Obs:
    os.chmod(m / "f", 0o600)
    obs: Obs = {"chown": _err(lambda: os.chown(m / "g", 1000, 1000))}
    st_f, st_g, st_o = os.stat(m / "f"), os.stat(m / "g"), os.stat(m / "owned")
    obs["f"] = [oct(st_f.st_mode), st_f.st_mtime_ns // 10**9, (m / "f").read_text()]
    obs["g"] = [oct(st_g.st_mode), st_g.st_uid, st_g.st_gid, st_g.st_mtime_ns // 10**9]
    obs["owned"] = [oct(st_o.st_mode), st_o.st_uid, st_o.st_gid]
    obs["utime"] = _err(lambda: os.utime(m / "owned", (5, MTIME + 5)))
    obs["owned mtime"] = os.stat(m / "owned").st_mtime_ns // 10**9
    obs["lower untouched"] = oct((base / "lower1" / "f").stat().st_mode)
    return obs


def build_truncate(base: Path) -> None:
    lower = base / "lower1"
    lower.mkdir()
    _write(lower / "f", b"x" * 10000)
    _write(lower / "g", b"y" * 10000)
    _write(lower / "h", b"z" * 100)


def act_truncate(m: Path, base: Path) -> Obs:
    os.truncate(m / "f", 100)
    obs: Obs = {"f size": os.stat(m / "f").st_size, "f": (m / "f").read_bytes() == b"x" * 100}
    os.truncate(m / "f", 20000)
    data = (m / "f").read_bytes()
    obs["f grown"] = [len(data), data[:100] == b"x" * 100, data[100:] == bytes(19900)]
    with open(m / "g", "r+b") as fh:
        fh.truncate(5)
    obs["g"] = (m / "g").read_bytes().decode()
    with open(m / "h", "wb") as fh:
        fh.write(b"new")
    obs["h"] = (m / "h").read_bytes().decode()
    with open(m / "h", "ab") as fh:  # O_APPEND
        fh.write(b"+more")
    obs["h appended"] = (m / "h").read_bytes().decode()
    obs["lower f"] = (base / "lower1" / "f").stat().st_size
    with open(m / "h", "wb") as fh:  # O_TRUNC of a file already in the upper layer
        fh.write(b"x")
    obs["h rewritten"] = (m / "h").read_bytes().decode()
    _write(m / "suid", "#!/bin/sh\n", 0o6755)
    with open(m / "suid", "ab") as fh:
        fh.write(b"exit 0\n")
    obs["suid after write"] = oct(os.stat(m / "suid").st_mode)
    _write(m / "suid2", "#!/bin/sh\n", 0o6755)
    os.truncate(m / "suid2", 3)
    obs["suid after truncate"] = oct(os.stat(m / "suid2").st_mode)
    return obs


GIB = 1 << 30


def build_sparse(base: Path) -> None:
    lower = base / "lower1"
    lower.mkdir()
    with open(lower / "sparse", "wb") as fh:
        fh.write(b"head")
        fh.seek(GIB // 2)
        fh.write(b"middle")
        fh.truncate(GIB)


def act_sparse(m: Path, base: Path) -> Obs:
    os.chmod(m / "sparse", 0o600)  # copy-up
    st = os.stat(m / "sparse")
    with open(m / "sparse", "rb") as fh:
        head = fh.read(4)
        fh.seek(GIB // 2)
        middle = fh.read(6)
    obs: Obs = {"size": st.st_size, "head": head.decode(), "middle": middle.decode()}
    obs["sparse after copy-up"] = st.st_blocks * 512 < 64 * 1024 * 1024
    big = m / "big"
    with open(big, "wb") as fh:  # beyond 4 GiB
        fh.seek(5 * GIB)
        fh.write(b"far")
    with open(big, "rb") as fh:
        fh.seek(5 * GIB)
        obs["beyond 4 GiB"] = [os.stat(big).st_size, fh.read().decode()]
    return obs


def build_open_before(base: Path) -> None:
    lower = base / "lower1"
    lower.mkdir()
    _write(lower / "f", "old content")


def act_open_before(m: Path, base: Path) -> Obs:
    reader = os.open(m / "f", os.O_RDONLY)
    try:
        first = os.pread(reader, 3, 0)
        with open(m / "f", "r+b") as fh:
            fh.write(b"NEW")
        after = os.pread(reader, 100, 0)
    finally:
        os.close(reader)
    return {"first": first.decode(), "after copy-up": after.decode()}


def build_kinds(base: Path) -> None:
    lower = base / "lower1"
    lower.mkdir()
    _write(lower / "f", "f")
    os.symlink("f", lower / "link")


def act_kinds(m: Path, base: Path) -> Obs:
    obs: Obs = {"readlink": os.readlink(m / "link"), "via link": (m / "link").read_text()}
    os.symlink("../elsewhere", m / "dangling")
    os.mkfifo(m / "fifo", 0o640)
    obs["fifo"] = stat.S_ISFIFO(os.lstat(m / "fifo").st_mode)
    obs["mknod socket"] = _err(lambda: os.mknod(m / "sock", stat.S_IFSOCK | 0o600))
    obs["chr device"] = _err(lambda: os.mknod(m / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3)))
    os.unlink(m / "link")
    obs["link removed"] = os.path.lexists(m / "link")
    with open(m / "mapped", "w+b") as fh:
        fh.truncate(8192)
        with mmap.mmap(fh.fileno(), 8192) as mem:
            mem[4096:4101] = b"hello"
            mem.flush()
        os.fsync(fh.fileno())
        os.fdatasync(fh.fileno())
    obs["mmap"] = (m / "mapped").read_bytes()[4096:4101].decode()
    vfs = os.statvfs(m)
    up = os.statvfs(base / "upper")
    obs["statfs like upper"] = (vfs.f_blocks, vfs.f_bsize) == (up.f_blocks, up.f_bsize)
    st1 = os.stat(m / "f").st_ino
    os.chmod(m / "f", 0o600)
    obs["inode stable across copy-up"] = os.stat(m / "f").st_ino == st1
    old_umask = os.umask(0)
    try:
        os.close(os.open(m / "open-to-all", os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(m / "dir-open-to-all", 0o777)
        os.mkfifo(m / "fifo-open-to-all", 0o666)
    finally:
        os.umask(old_umask)
    obs["tree"] = _tree(m)
    return obs


def build_owner(base: Path) -> None:
    (base / "lower1").mkdir()


def act_owner(m: Path, base: Path) -> Obs:
    shared = m / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    _write(shared / "mine", "")
    group_dir = m / "group"  # setgid: new entries take its group, subdirectories the bit
    group_dir.mkdir()
    os.chown(group_dir, 0, 2000)
    os.chmod(group_dir, 0o2777)
    pid = os.fork()
    if pid == 0:  # another user of the namespace creates a file
        code = 1
        try:
            os.setgid(1000)
            os.setuid(1000)
            _write(shared / "theirs", "")
            (shared / "theirdir").mkdir()
            _write(group_dir / "file", "")
            (group_dir / "sub").mkdir()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    obs: Obs = {"child exit": os.waitstatus_to_exitcode(status)}
    obs["owners"] = {p.name: [p.stat().st_uid, p.stat().st_gid] for p in sorted(shared.iterdir())}
    obs["setgid dir"] = _tree(group_dir)
    return obs


def build_deep(base: Path) -> None:
    lower = base / "lower1"
    (lower / "a" / "b" / "c").mkdir(parents=True)
    _write(lower / "a" / "b" / "c" / "f", "f", 0o600, (1000, 1000))
    _write(lower / "a" / "b" / "keep", "keep")
    os.chmod(lower / "a" / "b", 0o750)
    if os.geteuid() == 0:
        os.chown(lower / "a" / "b", 1000, 1000)
    for d in (lower / "a" / "b" / "c", lower / "a" / "b", lower / "a"):
        os.utime(d, (MTIME, MTIME))


def act_deep(m: Path, base: Path) -> Obs:
    with open(m / "a" / "b" / "c" / "f", "a") as fh:
        fh.write("+more")
    obs: Obs = {}
    for rel in ("a", "a/b", "a/b/c", "a/b/c/f"):
        st = os.stat(m / rel)
        obs[rel] = [oct(st.st_mode), st.st_mtime_ns // 10**9 == MTIME]
    obs["tree"] = _tree(m)
    obs["upper"] = _upper(base / "upper")
    return obs


def build_layers(base: Path) -> None:
    """Twelve lowers (lower01 at the bottom): each adds, replaces, whites out or makes opaque."""
    for i in range(1, 13):
        layer = base / f"lower{i:02d}"
        (layer / "d").mkdir(parents=True)
        _write(layer / "d" / f"from-{i}", str(i))
        if i != 11:
            (layer / "d" / "sub").mkdir()
            _write(layer / "d" / "sub" / f"deep-{i}", str(i))
        _write(layer / "replaced", f"layer {i}")
        if i % 4 == 0:
            _whiteout(layer / "d" / f"from-{i - 1}")
        if i == 7:
            os.setxattr(layer / "d" / "sub", "user.overlay.opaque", b"y")
        if i == 9:
            (layer / "gone").mkdir()
            _write(layer / "gone" / "x", "x")
        if i == 11:
            _whiteout(layer / "gone")
            _write(layer / "d" / "sub", "now a file")


def act_layers(m: Path, base: Path) -> Obs:
    obs: Obs = {"before": _tree(m)}
    (m / "d" / "new").mkdir()
    os.unlink(m / "d" / "from-5")
    os.rename(m / "d" / "from-6", m / "d" / "new" / "six")
    obs["after"] = _tree(m)
    obs["upper"] = _upper(base / "upper")
    return obs


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): both names stay, swapped."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def build_exchange(base: Path) -> None:
    lower = base / "lower1"
    (lower / "ldir").mkdir(parents=True)
    _write(lower / "ldir" / "x", "x")
    (lower / "other").mkdir()
    _write(lower / "other" / "o", "o")
    _write(lower / "a", "A", 0o600)
    _write(lower / "b", "B", 0o640)
    _write(lower / "c", "C")
    os.setxattr(lower / "a", "user.tag", b"a")


def act_exchange(m: Path, base: Path) -> Obs:
    obs: Obs = {}
    ino = {n: os.stat(m / n).st_ino for n in ("a", "b")}
    obs["lower files"] = _err(lambda: _exchange(m / "a", m / "b"))
    obs["inodes follow"] = [
        os.stat(m / "b").st_ino == ino["a"],
        os.stat(m / "a").st_ino == ino["b"],
    ]
    _write(m / "new", "N")
    obs["lower and upper file"] = _err(lambda: _exchange(m / "c", m / "new"))
    (m / "udir").mkdir()
    _write(m / "udir" / "y", "y")
    obs["upper dir and file"] = _err(lambda: _exchange(m / "udir", m / "new"))
    obs["across dirs"] = _err(lambda: _exchange(m / "a", m / "other" / "o"))
    obs["lower dir"] = _err(lambda: _exchange(m / "ldir", m / "c"))
    obs["lower dir and upper dir"] = _err(lambda: _exchange(m / "udir", m / "ldir"))
    obs["missing"] = _err(lambda: _exchange(m / "a", m / "nothing"))
    (m / "other" / "sub").mkdir()
    obs["upper dir into merged dir"] = _err(lambda: _exchange(m / "other" / "sub", m / "new"))
    obs["xattr followed"] = os.getxattr(m / "b", "user.tag").decode()
    obs["tree"] = _tree(m)
    obs["upper"] = _upper(base / "upper")
    return obs


RANDOM_NAMES = ("a", "b", "c", "d/a", "d/b", "d/e", "d/e/a", "e", "e/a", "e/b")


def build_random(base: Path) -> None:
    """Two lowers with files, directories, a whiteout and an opaque directory on small names."""
    low, high = base / "lower1", base / "lower2"
    for layer in (low, high):
        (layer / "d" / "e").mkdir(parents=True)
    _write(low / "a", "low a")
    _write(low / "d" / "a", "low d/a")
    _write(low / "d" / "e" / "a", "low d/e/a")
    (low / "e").mkdir()
    _write(low / "e" / "a", "low e/a")
    _write(high / "b", "high b")
    _write(high / "d" / "b", "high d/b")
    _whiteout(high / "d" / "a")
    (high / "e").mkdir()
    os.setxattr(high / "e", "user.overlay.opaque", b"y")
    _write(high / "e" / "b", "high e/b")


def act_random(m: Path, base: Path) -> Obs:
    """A fixed pseudo-random sequence of operations; every result and the final tree."""
    import random

    rng = random.Random(int(os.environ.get("SEMANTICS_SEED", "20261122")))
    results: list[str] = []

    def pick() -> Path:
        return m / rng.choice(RANDOM_NAMES)

    def write(path: Path, text: str) -> None:
        with open(path, "a") as fh:
            fh.write(text)

    held: list[int] = []  # descriptors kept open across later operations

    def hold(path: Path) -> None:
        held.append(os.open(path, os.O_RDONLY))

    def read_held(i: int) -> None:
        if held:
            data = os.pread(held[i % len(held)], 64, 0)
            raise OSError(0, f"read {data!r}")  # reported like an outcome

    operations: list[Callable[[int], partial[Any]]] = [
        lambda i: partial(write, pick(), f"w{i}"),
        lambda i: partial(os.unlink, pick()),
        lambda i: partial(os.mkdir, pick()),
        lambda i: partial(os.rmdir, pick()),
        lambda i: partial(os.rename, pick(), pick()),
        lambda i: partial(os.link, pick(), pick()),
        lambda i: partial(os.truncate, pick(), i % 7),
        lambda i: partial(os.chmod, pick(), 0o600 + i % 2 * 0o40),
        lambda i: partial(os.setxattr, pick(), "user.k", str(i).encode()),
        lambda i: partial(os.symlink, f"target-{i}", pick()),
        lambda i: partial(os.removexattr, pick(), "user.k"),
        lambda i: partial(hold, pick()),
        lambda i: partial(read_held, i),
    ]
    for i in range(int(os.environ.get("SEMANTICS_OPS", "400"))):
        op = rng.choice(operations)(i)
        results.append(f"{op.func.__name__}{op.args[:2]!s}: {_err(op)}".replace(str(m), ""))
    for fd in held:
        os.close(fd)
    tree = _tree(m)
    for rel in list(tree):
        path = m / rel
        if not path.is_symlink():
            xattrs = sorted(n for n in os.listxattr(path) if n.startswith("user."))
            tree[rel] += f" {xattrs}" if xattrs else ""
            tree[rel] += f" links={path.lstat().st_nlink}" if path.is_file() else ""
    return {"results": results, "tree": tree}


SCENARIOS: dict[str, tuple[Callable[[Path], None], Callable[[Path, Path], Obs]]] = {
    "rename": (build_rename, act_rename),
    "hardlink": (build_hardlink, act_hardlink),
    "whiteout": (build_whiteout, act_whiteout),
    "opaque": (build_opaque, act_opaque),
    "readdir": (build_readdir, act_readdir),
    "xattr": (build_xattr, act_xattr),
    "chmod": (build_chmod, act_chmod),
    "truncate": (build_truncate, act_truncate),
    "sparse": (build_sparse, act_sparse),
    "open_before": (build_open_before, act_open_before),
    "kinds": (build_kinds, act_kinds),
    "owner": (build_owner, act_owner),
    "deep": (build_deep, act_deep),
    "layers": (build_layers, act_layers),
    "random": (build_random, act_random),
    "exchange": (build_exchange, act_exchange),
}


WATCHDOG = 200  # seconds: a hung filesystem ends the run (and, by PDEATHSIG, its helper)


def run_all(kind: str, base: str, names: list[str]) -> dict[str, Any]:
    signal.alarm(WATCHDOG)  # alarms are not inherited across fork: this process needs its own
    if kind != "fuse-plain":
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    results: dict[str, Any] = {}
    for name in names:
        build, act = SCENARIOS[name]
        where = Path(base) / name
        where.mkdir()
        build(where)
        try:
            with mounted(kind, where) as merged:
                results[name] = act(merged, where)
        except Exception as exc:  # reported, and the other scenarios still run
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": format_exc()}
    return results


def main() -> None:
    signal.alarm(WATCHDOG)
    kind, base, *names = sys.argv[1:]
    names = names or list(SCENARIOS)
    if kind == "fuse-plain":
        names = [n for n in names if n != "owner"]
        results = run_all(kind, base, names)
    else:
        results = run_in_userns(
            partial(run_all, kind, base, names), unshare_flags=syscalls.CLONE_NEWNS
        )
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
