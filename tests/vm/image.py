"""Build (once, cached) the Debian guest of the cgroup v2 test lane.

mmdebstrap makes a minimal bookworm root with systemd, the test user `rlvm` (uid 1000, lingering,
`Delegate=yes` for user@.service) and an agent service (guest_setup.sh); mke2fs turns it into
an ext4 disk image. The kernel and initrd are copied next to it for qemu's -kernel/-initrd.

Cache: /var/cache/rl-test-vm/<key>/ (RL_TEST_VM_CACHE overrides the parent), where <key> hashes
packages.txt and guest_setup.sh; a half-built entry is never used (built in a temporary
directory, renamed when complete).

    python3 -m tests.vm.image        # build now (as root), print the directory
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
DISK_SIZE = "3G"


def cache_root() -> Path:
    return Path(os.environ.get("RL_TEST_VM_CACHE", "/var/cache/rl-test-vm"))


def packages() -> list[str]:
    lines = (HERE / "packages.txt").read_text().splitlines()
    return [word for line in lines if (word := line.split("#", 1)[0].strip())]


def image_key() -> str:
    digest = hashlib.sha256()
    digest.update(SUITE.encode() + b"\0" + DISK_SIZE.encode() + b"\0")
    digest.update((HERE / "packages.txt").read_bytes() + b"\0")
    digest.update((HERE / "guest_setup.sh").read_bytes())
    return digest.hexdigest()[:16]


def image_dir() -> Path:
    return cache_root() / image_key()


def cached_image() -> Path | None:
    path = image_dir()
    return path if (path / "disk.img").exists() and (path / "initrd.img").exists() else None


def missing_tools() -> list[str]:
    return [
        tool
        for tool in ("mmdebstrap", "mke2fs", "qemu-system-x86_64")
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()
    ]


def build(log: Path | None = None) -> Path:
    """Build the image unless cached; the directory with disk.img, vmlinuz, initrd.img."""
    done = cached_image()
    if done is not None:
        return done
    target = image_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    out = open(log, "ab") if log else None  # noqa: SIM115 (closed in the finally below)
    try:
        rootfs = work / "rootfs"
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=" + ",".join(packages()),
                f'--customize-hook=sh {HERE / "guest_setup.sh"} "$1"',
                SUITE,
                str(rootfs),
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        boot = rootfs / "boot"
        shutil.copy(next(boot.glob("vmlinuz-*")), work / "vmlinuz")
        shutil.copy(next(boot.glob("initrd.img-*")), work / "initrd.img")
        subprocess.run(
            [
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                "rlroot",
                "-d",
                str(rootfs),
                str(work / "disk.img"),
                DISK_SIZE,
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        shutil.rmtree(rootfs)
        work.rename(target)
    finally:
        if out:
            out.close()
        _unmount_below(work)  # an interrupted mmdebstrap leaves /proc, /sys, /dev mounted
        shutil.rmtree(work, ignore_errors=True)
    return target


def _unmount_below(path: Path) -> None:
    prefix = str(path) + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
