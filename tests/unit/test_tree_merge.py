"""merge_layers, the flattening behind the vfs driver and volume copy-up, on small layer trees
made in a user namespace (whiteouts are character devices 0:0, opaque dirs carry
user.overlay.opaque=y), checked against the overlay rules."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rootless.storage.tree import merge_layers
from rootless.userns import run_in_userns


def _make(root: str, layers: list[dict[str, str]]) -> list[str]:
    """Layers from {path: spec}: "dir", "opaque", "whiteout", "-> target" or file content.
    Returns the layer dirs top first."""
    dirs = []
    for index, layer in enumerate(layers):
        base = Path(root) / f"layer{index}"
        base.mkdir()
        for rel, spec in layer.items():
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if spec in ("dir", "opaque"):
                path.mkdir(exist_ok=True)
                if spec == "opaque":
                    os.setxattr(path, "user.overlay.opaque", b"y")
            elif spec == "whiteout":
                os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
            elif spec.startswith("-> "):
                os.symlink(spec[3:], path)
            else:
                path.write_text(spec)
        dirs.append(os.fspath(base))
    return list(reversed(dirs))


def _merged(root: str, layers: list[dict[str, str]], subpath: str = "") -> dict[str, str]:
    def work() -> dict[str, str]:
        lowers = _make(root, layers)
        dest = os.path.join(root, "out")
        merge_layers(lowers, dest, subpath)
        out = {}
        for top, dirs, files in os.walk(dest):
            for name in dirs + files:
                path = os.path.join(top, name)
                rel = os.path.relpath(path, dest)
                if os.path.islink(path):
                    out[rel] = "-> " + os.readlink(path)
                elif os.path.isdir(path):
                    out[rel] = "dir"
                else:
                    out[rel] = Path(path).read_text()
        return out

    return run_in_userns(work)


def test_upper_files_win_and_dirs_merge(tmp_path: Path) -> None:
    assert _merged(
        str(tmp_path),
        [{"etc/a": "1", "etc/b": "old"}, {"etc/b": "new", "etc/c": "3", "top": "t"}],
    ) == {"etc": "dir", "etc/a": "1", "etc/b": "new", "etc/c": "3", "top": "t"}


def test_whiteouts_hide_files_and_whole_dirs(tmp_path: Path) -> None:
    assert _merged(
        str(tmp_path),
        [{"x/f": "f", "x/g": "g", "gone/deep/f": "f"}, {"x/f": "whiteout", "gone": "whiteout"}],
    ) == {"x": "dir", "x/g": "g"}


def test_opaque_dir_hides_lower_content(tmp_path: Path) -> None:
    assert _merged(
        str(tmp_path), [{"d/old": "o", "d/sub/x": "x"}, {"d": "opaque", "d/new": "n"}]
    ) == {"d": "dir", "d/new": "n"}


def test_a_file_replaces_a_dir_and_a_dir_a_file(tmp_path: Path) -> None:
    assert _merged(
        str(tmp_path), [{"p/in": "i", "q": "file"}, {"p": "now a file", "q/in": "dir now"}]
    ) == {"p": "now a file", "q": "dir", "q/in": "dir now"}


def test_a_dir_over_a_file_does_not_resurrect_older_content(tmp_path: Path) -> None:
    # layer0 has d/ with old, layer1 replaces d by a file, layer2 makes d a dir again.
    assert _merged(str(tmp_path), [{"d/old": "o"}, {"d": "file"}, {"d/new": "n"}]) == {
        "d": "dir",
        "d/new": "n",
    }


def test_symlinks_are_copied_not_followed(tmp_path: Path) -> None:
    assert _merged(str(tmp_path), [{"t/f": "f", "link": "-> t"}]) == {
        "t": "dir",
        "t/f": "f",
        "link": "-> t",
    }


def test_subpath_copy_up(tmp_path: Path) -> None:
    layers = [{"var/lib/db/a": "a", "var/lib/db/b": "b"}, {"var/lib/db/b": "whiteout"}]
    assert _merged(str(tmp_path), layers, "/var/lib/db") == {"a": "a"}


def test_subpath_under_whiteout_or_opaque_ancestor(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    assert _merged(str(tmp_path / "1"), [{"v/d/a": "a"}, {"v": "whiteout"}], "/v/d") == {}
    (tmp_path / "2").mkdir()
    assert _merged(
        str(tmp_path / "2"), [{"v/d/a": "a"}, {"v": "opaque", "v/d/b": "b"}], "/v/d"
    ) == {"b": "b"}
    (tmp_path / "3").mkdir()
    assert _merged(str(tmp_path / "3"), [{"v": "a file"}], "/v/d") == {}
