"""`rl load` against `podman load`: a ~50 MB, 4-layer docker-archive into a fresh store.

    /opt/rl/venv/bin/python bench/load.py [--reps 5] [--podman-driver overlay] [--rebuild]

The image is built offline: a Debian rootfs from mmdebstrap (`apt-get install mmdebstrap`; it
fetches packages from the Debian mirrors) when available, else real files copied from /usr;
split into 4 layers and cached under bench/results/. Both tools run rootless as the test user,
each run into a new empty store (rl: `--root`; podman: `--root`/`--runroot`), alternating which
goes first; the first round is a warm-up. Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    RESULTS,
    BenchError,
    Samples,
    bench_user,
    fresh_dir,
    ratio_line,
    rl_binary,
    timed,
)
from tests.images import image_from_tars, write_docker_archive

IMAGE_NAME = "localhost/rl-bench/load:latest"
TARGET_BYTES = 50 * 1024 * 1024
LAYERS = 4
# Debian's smallest set (Essential: yes packages) less documentation and locales; perl's modules
# and gconv are left out of the image afterwards (dpkg needs them while installing): ~53 MB.
MMDEBSTRAP = [
    "mmdebstrap",
    "--variant=essential",
    "--quiet",
    *(
        f"--dpkgopt=path-exclude={pattern}"
        for pattern in ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*")
    ),
    "bookworm",
]
LEFT_OUT = ("usr/share/perl/", "usr/lib/x86_64-linux-gnu/perl/", "usr/lib/x86_64-linux-gnu/gconv/")


def debian_rootfs(cache: Path) -> bytes | None:
    """A Debian rootfs tar from mmdebstrap (cached), or None when mmdebstrap is unavailable."""
    if cache.exists():
        return cache.read_bytes()
    if shutil.which("mmdebstrap") is None:
        return None
    partial = cache.with_suffix(".partial.tar")  # mmdebstrap writes a tar for *.tar
    print("building a Debian rootfs with mmdebstrap (about 30 s) ...", flush=True)
    done = subprocess.run([*MMDEBSTRAP, str(partial)], check=False)
    if done.returncode != 0:
        print("mmdebstrap failed: using files from /usr instead")
        partial.unlink(missing_ok=True)
        return None
    partial.rename(cache)
    return cache.read_bytes()


def synthetic_rootfs(source: Path = Path("/usr"), budget: int = TARGET_BYTES) -> bytes:
    """Real files from the host (libraries, programs, data) until `budget` bytes."""
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(source):
            dirs.sort()
            tar.add(directory, arcname=directory.lstrip("/"), recursive=False, filter=_as_root)
            for name in sorted(files):
                path = os.path.join(directory, name)
                if total >= budget or not (os.path.islink(path) or os.path.isfile(path)):
                    continue
                if not os.access(path, os.R_OK):
                    continue
                tar.add(path, arcname=path.lstrip("/"), recursive=False, filter=_as_root)
                total += 0 if os.path.islink(path) else os.path.getsize(path)
            if total >= budget:
                break
    return buffer.getvalue()


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def split_layers(rootfs: bytes, count: int = LAYERS) -> list[bytes]:
    """Splits a rootfs tar into `count` layer tars of about equal content size.

    Device nodes are left out (an unprivileged loader cannot make them), and so is LEFT_OUT.
    Every member's parent directories are repeated in its layer, and a hardlink goes where its
    target went.
    """
    with tarfile.open(fileobj=io.BytesIO(rootfs)) as source:
        members = []
        for info in source.getmembers():
            info.name = info.name.removeprefix("./").rstrip("/")
            if not info.name or info.name == "." or info.ischr() or info.isblk() or info.isfifo():
                continue
            if info.name.startswith(LEFT_OUT):
                continue
            data = source.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            members.append((info, data))
    total = sum(info.size for info, _ in members if info.isfile()) or 1
    directories = {info.name: info for info, _ in members if info.isdir()}
    layer_of: dict[str, int] = {}
    layers: list[list[tuple[tarfile.TarInfo, bytes | None]]] = [[] for _ in range(count)]
    done = 0
    for info, data in members:
        if info.islnk():
            index = layer_of.get(info.linkname.removeprefix("./"), count - 1)
        else:
            index = min(count - 1, done * count // total)
        layer_of[info.name] = index
        layers[index].append((info, data))
        if info.isfile():
            done += info.size
    return [_layer_tar(items, directories) for items in layers]


def _layer_tar(
    items: list[tuple[tarfile.TarInfo, bytes | None]], directories: dict[str, tarfile.TarInfo]
) -> bytes:
    buffer = io.BytesIO()
    written: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            parts = info.name.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in written:
                    written.add(parent)
                    tar.addfile(directories.get(parent) or _directory(parent))
            if info.name in written:
                continue
            written.add(info.name)
            if info.islnk():
                info.linkname = info.linkname.removeprefix("./")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def build_archive(path: Path, *, synthetic: bool) -> str:
    """Writes the benchmark's docker-archive; returns what it holds."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    rootfs = None if synthetic else debian_rootfs(RESULTS / "debian-rootfs.tar")
    origin = "Debian bookworm (mmdebstrap, essential)"
    if rootfs is None:
        rootfs, origin = synthetic_rootfs(), "files copied from /usr"
    image = image_from_tars(
        split_layers(rootfs),
        names=[IMAGE_NAME],
        config={"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
    )
    write_docker_archive(path, [image])
    path.with_suffix(".txt").write_text(origin)
    return origin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5, help="timed runs per tool (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument(
        "--podman-driver",
        default="overlay",
        help="podman's storage driver (default overlay: native rootless overlay, like rl)",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached archive")
    parser.add_argument("--synthetic", action="store_true", help="use /usr files, not Debian")
    args = parser.parse_args()

    archive = RESULTS / "load-image.docker.tar"
    if args.rebuild or args.synthetic or not archive.exists():
        origin = build_archive(archive, synthetic=args.synthetic)
    else:
        origin = archive.with_suffix(".txt").read_text()
    with tarfile.open(archive) as tar:
        layer_count = sum(1 for name in tar.getnames() if name.endswith(".tar"))
    size_mb = archive.stat().st_size / 1e6
    print(f"image: {origin}; {layer_count} layers, docker-archive {size_mb:.1f} MB")

    user = bench_user()
    rl = rl_binary()
    print(f"as user {user.name}; rl = {rl}; podman --storage-driver {args.podman_driver}")
    tools: dict[str, Callable[[Path], list[str]]] = {
        "rl load": lambda store: [rl, "--root", str(store / "rl"), "load", "-i", str(archive)],
        "podman load": lambda store: [
            "podman",
            "--root",
            str(store / "root"),
            "--runroot",
            str(store / "run"),
            "--storage-driver",
            args.podman_driver,
            "load",
            "-i",
            str(archive),
        ],
    }
    samples = {name: Samples(name) for name in tools}
    for round_number in range(args.warmup + args.reps):
        order = list(tools) if round_number % 2 == 0 else list(reversed(tools))
        for name in order:
            with fresh_dir(user, "rl-bench-load-") as store:
                seconds = timed(user, tools[name](store))
            os.sync()  # the next run should not pay for writing back this one's pages
            if round_number >= args.warmup:
                samples[name].seconds.append(seconds)
    print()
    for name in tools:
        print(samples[name].row())
    print(ratio_line(samples["rl load"], samples["podman load"]))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as err:
        print(f"benchmark failed: {err}")
        raise SystemExit(1) from None
