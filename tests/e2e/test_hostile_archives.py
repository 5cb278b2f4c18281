"""Hostile image archives fed to `rl load`: each is refused (or contained) by the real command,
with one error line naming the layer and the entry, nothing written outside the store, and the
store exactly as before. The unpacker's own tests (test_unpack.py) cover more variants; these
prove the whole load path keeps the promise."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests import images as testimages
from tests.conftest import Rl

UP = "../../../../../../../.."  # enough to climb from any store to /

# name -> the hostile layer's entries: (member name, tar type, link target, data); "{out}" is
# the absolute path of a sentinel directory beside the store that must stay untouched.
Entry = tuple[str, bytes, str, bytes]
REG, SYM, LNK, DIR = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
HOSTILE: dict[str, list[Entry]] = {
    "dotdot": [("../../pwned", REG, "", b"x")],
    "absolute symlink then write": [("esc", SYM, "{out}", b""), ("esc/pwned", REG, "", b"x")],
    "relative symlink then write": [("esc", SYM, UP + "{out}", b""), ("esc/pwned", REG, "", b"x")],
    "hardlink to outside": [("stolen", LNK, UP + "{out}/f", b"")],
    "hardlink through a symlink": [("s", SYM, "{out}", b""), ("stolen", LNK, "s/f", b"")],
    "whiteout outside": [("../.wh.sentinel", REG, "", b"")],
    "opaque marker outside": [("../sentinel/.wh..wh..opq", REG, "", b"")],
    "symlink chain": [("a", SYM, "b", b""), ("b", SYM, UP, b""), ("a/tmp/pwned", REG, "", b"x")],
}


def _archive(path: Path, entries: list[Entry], outside: str) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target, data in [("etc", DIR, "", b""), *entries]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == DIR else 0o644
            info.linkname = target.replace("{out}", outside)
            info.size = len(data) if kind == REG else 0
            tar.addfile(info, io.BytesIO(data) if kind == REG else None)
    image = testimages.image_from_tars(
        [buffer.getvalue()], names=["localhost/hostile:latest"], config={"Cmd": ["sh"]}
    )
    testimages.write_docker_archive(path, [image])
    path.chmod(0o644)
    return path


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("case", list(HOSTILE))
def test_rl_load_refuses_hostile_layers(rl: Rl, workdir: Path, case: str) -> None:
    sentinel = workdir / "sentinel"
    sentinel.mkdir()
    (sentinel / "f").write_bytes(b"secret")
    archive = _archive(workdir / "hostile.tar", HOSTILE[case], str(sentinel))
    rl.ok("images")  # creates the store
    store_before = _snapshot(rl.root / "layers"), _snapshot(rl.root / "blobs")
    outside_before = _snapshot(sentinel)

    result = rl("load", "-i", str(archive))

    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result
    assert "entry" in lines[0] and "layer" in lines[0], result
    assert _snapshot(sentinel) == outside_before, "something outside the store changed"
    assert not (workdir / "pwned").exists() and not Path("/tmp/pwned").exists()
    assert (_snapshot(rl.root / "layers"), _snapshot(rl.root / "blobs")) == store_before
    assert rl.ok("images", "-q").stdout == ""
