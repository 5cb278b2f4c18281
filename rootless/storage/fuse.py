"""The fuse driver: the image's layers through fuseoverlay, one helper process per container.

pyfuse3 serves one mount per process, so each container gets a helper, started by rl when the
container's storage is prepared (`python -m rootless.storage.fuse`, which imports pyfuse3 and
trio, ~200 ms, while rl goes on preparing). The mount itself is made by the container's
keeper inside the container's user and mount namespaces (`FuseRootfs.mount`): it opens
/dev/fuse, mounts it (`fd=N`), and passes the device and its user namespace to the helper over
a Unix socket. The helper joins that user namespace, so it owns the container's ids, and serves
the device (libfuse takes an already mounted device as `/dev/fd/N`). The helper never enters
the container's pid namespace, so it cannot become its pid 1.

Lifetime, on every path: the mount lives only in the container's mount namespace; when the
container's last process ends, the kernel flushes the page cache to the helper and ends the
connection, and the helper returns. If the device never arrives (setup failed, rl died), the
socket reaches end of file and the helper returns. After the container, rl stops and reaps it
(`release`), and says so in one line if it died early: from the moment it died, the container's
file system answered with errors ("Transport endpoint is not connected").

Ids: the layers hold the store's ids (userns.default_mapping). When the container's mapping
differs (--userns=keep-id, --uidmap), the helper translates with fuseoverlay's uid/gid mapping,
so the container sees the image's owners without a chowned copy of the image.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rootless.errors import RlError
from rootless.storage.overlay import UPPER, WORK, prepare_dirs

HELPER_MODULE = "rootless.storage.fuse"
# How long the keeper waits for the helper to take the device, and rl for it to end.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# The helper's exit status when it could not serve the device: the keeper has reported why.
START_FAILED = 3

Ranges = Sequence[tuple[int, int, int]]  # (container id, host id, count)


def shift_ranges(container: Ranges, store: Ranges) -> list[tuple[int, int, int]]:
    """fuseoverlay's `inner:outer:count` ranges for a container whose ids differ from the store's.

    Inner ids are what the container sees: the image's ids, i.e. the store namespace's.
    Outer ids are what the helper, inside the container's namespace, finds on disk. A store id
    maps to a host id, and that host id to the container id the helper sees. Empty when both
    mappings are the same (no translation)."""
    if sorted(container) == sorted(store):
        return []
    result = []
    for inner_start, host_start, count in sorted(store):
        for outer_start, c_host, c_count in sorted(container, key=lambda r: r[1]):
            low = max(host_start, c_host)
            high = min(host_start + count, c_host + c_count)
            if low < high:
                result.append(
                    (inner_start + low - host_start, outer_start + low - c_host, high - low)
                )
    return sorted(result)


def mapping_option(ranges: Ranges) -> str:
    return ":".join(f"{inner}:{outer}:{count}" for inner, outer, count in ranges)


def parse_id_map(text: str) -> list[tuple[int, int, int]]:
    """/proc/PID/uid_map lines."""
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3:
            ranges.append((int(fields[0]), int(fields[1]), int(fields[2])))
    return ranges


def mount_data(fd: int, root_mode: int) -> str:
    """The kernel's fuse mount options. default_permissions: the kernel checks modes and
    owners (the helper, as root of the namespace, does not); allow_other: every id of the
    container may use the mount, not only its root."""
    return f"fd={fd},rootmode={root_mode:o},user_id=0,group_id=0,allow_other,default_permissions"


def describe_death(returncode: int | None, message: str) -> str:
    if message:
        return message
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


class FuseRootfs:
    """A RootfsProvider backed by a fuseoverlay helper process (see the module doc)."""

    def __init__(self, container_dir: Path, lowers: Sequence[Path]) -> None:
        from rootless.userns import default_mapping

        self.container_dir = container_dir
        store = default_mapping()
        args = {
            "upper": os.fspath(container_dir / UPPER),
            "work": os.fspath(container_dir / WORK),
            "lowers": [os.fspath(p) for p in lowers],
            "uids": [(r.container, r.host, r.size) for r in store.uids],
            "gids": [(r.container, r.host, r.size) for r in store.gids],
        }
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock: socket.socket | None = ours
        try:
            self._helper: subprocess.Popen[bytes] | None = subprocess.Popen(
                # -P and cwd /: the caller's directory neither shadows modules nor stays busy
                [sys.executable, "-P", "-m", HELPER_MODULE, str(theirs.fileno()), json.dumps(args)],
                pass_fds=[theirs.fileno()],
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if _debug() else subprocess.DEVNULL,
                start_new_session=True,  # the terminal's ^C is for the container, not for it
            )
        except OSError as exc:
            ours.close()
            raise RlError(f"cannot start the fuseoverlay helper: {exc}") from exc
        finally:
            theirs.close()
        self._owner = os.getpid()

    def mount(self, target: Path) -> None:
        """In the container's keeper: mount /dev/fuse on `target` and hand it to the helper."""
        if self._sock is None:
            raise RlError("the fuseoverlay helper of this container is already stopped")
        root_mode = os.stat(self.container_dir / UPPER).st_mode
        try:
            device = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RlError(
                f"cannot open /dev/fuse: {exc.strerror}: FUSE is not usable here "
                "(see `rl doctor`); use --storage-driver vfs"
            ) from exc
        userns = -1
        try:
            from rootless import syscalls

            try:
                syscalls.mount(
                    "fuseoverlay", target, "fuse.fuseoverlay", 0, mount_data(device, root_mode)
                )
            except OSError as exc:
                raise RlError(
                    f"cannot mount the fuse root filesystem on {target}: {exc.strerror or exc}; "
                    "use --storage-driver vfs"
                ) from exc
            userns = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            self._sock.settimeout(START_TIMEOUT)
            try:
                socket.send_fds(self._sock, [b"mount"], [device, userns])
                reply = self._sock.recv(4096)
            except OSError as exc:
                reply = f"E{exc}".encode()
            if reply != b"ok":
                why = reply[1:].decode(errors="replace") or "it exited before taking the device"
                raise RlError(f"the fuseoverlay helper of this container failed: {why}")
        finally:
            os.close(device)  # the container must not hold the device: its end is the helper's
            if userns >= 0:
                os.close(userns)

    def keeper_fds(self) -> tuple[int, ...]:
        """The fds mount() needs in the keeper, which under a monitor closes all others."""
        return () if self._sock is None else (self._sock.fileno(),)

    def hand_over(self) -> tuple[int, int]:
        """For the process that releases the helper in our place after an exec (the monitor's
        watcher: rootless.monitor.helpers.release_fuse): its pid and the socket's fd, left
        open; release() does nothing afterwards."""
        helper, sock = self._helper, self._sock
        if helper is None or sock is None:
            raise RlError("the fuseoverlay helper of this container is already stopped")
        self._helper = self._sock = None
        # Not "still running" for Popen: it would reap the pid itself later (subprocess._active).
        helper.returncode = 0
        return helper.pid, sock.detach()

    def release(self, *, report: bool = True) -> str | None:
        """After the container: stop and reap the helper. Returns how it died when it did not
        end normally (and, with `report`, says so in one line)."""
        helper, sock = self._helper, self._sock
        self._helper = self._sock = None
        if helper is None or sock is None:
            return None
        try:
            sock.shutdown(socket.SHUT_WR)  # end of file for a helper still waiting for a device
        except OSError:
            pass
        if os.getpid() != self._owner:
            sock.close()
            return None  # only its parent can reap it; it ends by itself with the mount
        try:
            returncode = helper.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Something still holds the container's mount namespace: the helper must not
            # outlive the container all the same.
            helper.kill()
            helper.wait()
            sock.close()
            return None
        message = ""
        sock.setblocking(False)
        try:
            message = sock.recv(4096).decode(errors="replace")[1:]  # "E<why>" from a failure
        except OSError:
            pass
        sock.close()
        if returncode in (0, START_FAILED) and not message:
            return None
        death = describe_death(returncode, message)
        if report:
            from rootless.paths import warn

            warn(
                f"the fuseoverlay helper of this container died ({death}): from then on its "
                "file system failed with I/O errors"
            )
        return death


def _debug() -> bool:
    import logging

    from rootless.log import logger

    return logger().isEnabledFor(logging.DEBUG)


class FuseDriver:
    name = "fuse"

    def prepare(self, container_dir: Path, lower_dirs: list[Path]) -> FuseRootfs:
        names = prepare_dirs(container_dir, lower_dirs)
        # fuseoverlay takes the layer dirs themselves (no page-size limit on its options).
        lowers = list(lower_dirs) if lower_dirs else [container_dir / names[0]]
        return FuseRootfs(container_dir, lowers)

    def remove(self, container_dir: Path) -> None:
        from rootless.storage import remove_container_storage

        remove_container_storage(container_dir)


# --- the helper process ----------------------------------------------------------------------


def _join_userns(fd: int) -> None:
    """Become root of the container's user namespace (the owner of a namespace may join it)."""
    from rootless import syscalls

    if os.fstat(fd).st_ino != os.stat("/proc/self/ns/user").st_ino:
        syscalls.setns(fd, syscalls.CLONE_NEWUSER)
    try:
        os.setgroups([])
    except OSError:
        pass  # setgroups is denied in a single-id namespace
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def serve(sock_fd: int, args: dict[str, Any]) -> int:
    import pyfuse3

    from fuseoverlay.fs import OverlayFS
    from fuseoverlay.options import IdMap
    from fuseoverlay.session import serve as serve_session
    from rootless import syscalls

    syscalls.set_process_name("rl-fuseoverlay")  # what `ps -o comm` and top show
    sock = socket.socket(fileno=sock_fd)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 64, 2)
    except OSError:
        return 0
    if len(fds) != 2:
        return 0  # no container to serve: its setup ended before the mount
    device, userns = fds
    try:
        _join_userns(userns)
        os.close(userns)
        os.umask(0)  # modes arrive with the container's umask applied
        os.chdir("/")

        def id_map(kind: str) -> IdMap:
            with open(f"/proc/self/{kind}_map") as f:
                container = parse_id_map(f.read())
            store = [(int(a), int(b), int(c)) for a, b, c in args[f"{kind}s"]]
            ranges = shift_ranges(container, store)
            return IdMap.parse(mapping_option(ranges)) if ranges else IdMap()

        fs = OverlayFS(
            str(args["upper"]),
            [str(p) for p in args["lowers"]],
            str(args["work"]),
            uids=id_map("uid"),
            gids=id_map("gid"),
        )
        pyfuse3.init(fs, f"/dev/fd/{device}", set())
    except Exception as exc:
        _send(sock, f"E{exc}")
        return START_FAILED
    _send(sock, "ok")
    try:
        serve_session(stop_signals=False)  # it ends with the container's mount
    except BaseException as exc:
        _send(sock, f"E{exc or type(exc).__name__}")
        return 1
    finally:
        pyfuse3.close(unmount=False)
    return 0


def _send(sock: socket.socket, text: str) -> None:
    try:
        sock.send(text.encode(errors="replace"))
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(f"usage: python -m {HELPER_MODULE} SOCKET-FD JSON", file=sys.stderr)
        return 2
    return serve(int(args[0]), json.loads(args[1]))


if __name__ == "__main__":
    # No interpreter teardown (~30 ms with trio loaded): rl waits for this exit.
    os._exit(main())
