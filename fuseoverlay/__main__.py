"""`fuseoverlay -o lowerdir=A:B,upperdir=U,workdir=W [-f] [-d] MOUNTPOINT` (fuse-overlayfs's CLI).

Mounts, then (unless -f) detaches into the background once the mount is ready, so the caller
can use the mount point as soon as this command returns. Unmount with `fusermount3 -u` (or
umount as root of the user namespace); SIGTERM/SIGINT unmount too.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fuseoverlay.options import Config

USAGE = "usage: fuseoverlay [-f] [-d] -o lowerdir=A[:B...],upperdir=U,workdir=W MOUNTPOINT"


def _error(message: str) -> int:
    print(f"fuseoverlay: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    from fuseoverlay.options import OptionError, parse_args

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    try:
        config = parse_args(args)
    except OptionError as exc:
        return _error(f"{exc}\n{USAGE}")
    for what, path in [("lowerdir", d) for d in config.lowerdirs] + [
        ("upperdir", config.upperdir),
        ("workdir", config.workdir),
        ("mountpoint", config.mountpoint),
    ]:
        if not os.path.isdir(path):
            return _error(f"{what} {path}: not a directory")
    if os.stat(config.upperdir).st_dev != os.stat(config.workdir).st_dev:
        # Copy-up renames from the work dir into the upper dir.
        return _error("workdir must be on the same filesystem as upperdir")
    if config.foreground:
        return _serve(config, None)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        status = b""
        while chunk := os.read(ready_r, 4096):
            status += chunk
        os.close(ready_r)
        if status == b"ok":
            return 0
        os.waitpid(pid, 0)
        return _error(status.decode(errors="replace") or "the mount helper died")
    os.close(ready_r)
    os.setsid()
    code = 1
    try:
        code = _serve(config, ready_w)
    finally:
        os._exit(code)


def _serve(config: Config, ready_fd: int | None) -> int:
    import pyfuse3

    from fuseoverlay.fs import OverlayFS

    logging.basicConfig(level=logging.DEBUG if config.debug else logging.WARNING)
    os.umask(0)  # modes arrive with the caller's umask applied; ours must not apply again
    options = set(pyfuse3.default_options)
    options |= {"fsname=fuseoverlay", "subtype=fuseoverlay", *config.fuse_options}
    if os.geteuid() == 0:
        # Root of a user namespace mounts directly: let every id of the namespace in.
        options.add("allow_other")
    if config.debug:
        options.add("debug")
    try:
        fs = OverlayFS.from_config(config)
        pyfuse3.init(fs, config.mountpoint, options)
    except Exception as exc:  # reported to whoever started us, not as a traceback
        message = f"cannot mount {config.mountpoint}: {exc}"
        if ready_fd is None:
            return _error(message)
        os.write(ready_fd, message.encode())
        os.close(ready_fd)
        return 1
    if ready_fd is not None:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            if not config.debug:
                os.dup2(devnull, fd)
        os.close(devnull)
        os.chdir("/")  # a daemon must not keep the caller's directory busy
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    from fuseoverlay.session import serve

    stopped = False
    try:
        stopped = serve()
    finally:
        pyfuse3.close(unmount=stopped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
