"""User namespaces: who maps to whom, and running Python code as root inside one.

Container uid 0 is the user; container uids 1…N are the user's /etc/subuid range (likewise for
gids). The kernel only lets an unprivileged process write a single-line map for itself, so the
multi-range maps go through the setuid helpers newuidmap/newgidmap (Debian's `uidmap`). The
child and the parent synchronise through pipes: the child unshares, the parent writes its maps,
then the child proceeds as root of the namespace.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from rootless import syscalls
from rootless.errors import RlError

T = TypeVar("T")

SUBUID_FILE = Path(os.environ.get("RL_SUBUID_FILE", "/etc/subuid"))
SUBGID_FILE = Path(os.environ.get("RL_SUBGID_FILE", "/etc/subgid"))
MAX_ID = 4294967295

SINGLE_MAPPING_WARNING = (
    "Using rootless single mapping into the namespace. This might break some images. "
    "Check /etc/subuid and /etc/subgid for adding sub*ids if not using a network user"
)


# NamedTuples, not dataclasses, on the `rl run` path: a dataclass costs ~0.5 ms to create at
# import (start-up time is a benchmark target, issue 3).
class IdRange(NamedTuple):
    """`size` consecutive ids starting at `container` inside, `host` outside."""

    container: int
    host: int
    size: int


class IdMapping(NamedTuple):
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]

    @property
    def single(self) -> bool:
        """True when only one uid is mapped (no subordinate ids)."""
        return sum(r.size for r in self.uids) == 1

    def host_uid(self, uid: int) -> int | None:
        return _to_host(self.uids, uid)

    def host_gid(self, gid: int) -> int | None:
        return _to_host(self.gids, gid)

    def uid_map_text(self) -> str:
        return "".join(f"{r.container} {r.host} {r.size}\n" for r in self.uids)

    def gid_map_text(self) -> str:
        return "".join(f"{r.container} {r.host} {r.size}\n" for r in self.gids)


def _to_host(ranges: tuple[IdRange, ...], cid: int) -> int | None:
    for r in ranges:
        if r.container <= cid < r.container + r.size:
            return r.host + cid - r.container
    return None


def parse_subids(text: str, user: str, uid: int) -> list[tuple[int, int]]:
    """The (start, count) ranges /etc/subuid-style `text` grants to `user` (by name or uid)."""
    ranges = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            continue
        owner, start, count = parts
        if owner not in (user, str(uid)):
            continue
        try:
            ranges.append((int(start), int(count)))
        except ValueError:
            continue
    return [r for r in ranges if r[1] > 0]


def subordinate_ranges(path: Path, user: str, uid: int) -> list[tuple[int, int]]:
    try:
        return parse_subids(path.read_text(), user, uid)
    except OSError:
        return []


def current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def build_mapping(
    uid: int, gid: int, subuids: list[tuple[int, int]], subgids: list[tuple[int, int]]
) -> IdMapping:
    """Container 0 -> (uid, gid); container 1… -> the subordinate ranges in order."""

    def ranges(me: int, subs: list[tuple[int, int]]) -> tuple[IdRange, ...]:
        out = [IdRange(0, me, 1)]
        next_id = 1
        for start, count in subs:
            out.append(IdRange(next_id, start, count))
            next_id += count
        return tuple(out)

    return IdMapping(ranges(uid, subuids), ranges(gid, subgids))


def default_mapping() -> IdMapping:
    """The mapping containers and the image store use for the current user."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        full = (IdRange(0, 0, MAX_ID),)
        return IdMapping(full, full)
    user = current_user()
    subuids = subordinate_ranges(SUBUID_FILE, user, uid)
    subgids = subordinate_ranges(SUBGID_FILE, user, uid)
    if not subuids or not subgids:
        return build_mapping(uid, gid, [], [])
    return build_mapping(uid, gid, subuids, subgids)


def apply_mapping(pid: int, mapping: IdMapping) -> None:
    """Write the uid/gid maps of process `pid`, which has just unshared its user namespace."""
    if os.getuid() == 0 or mapping.single:
        # Root may write any map; an unprivileged user may write exactly its own id,
        # after denying setgroups (a kernel rule since 3.19).
        if os.getuid() != 0:
            Path(f"/proc/{pid}/setgroups").write_text("deny")
        Path(f"/proc/{pid}/uid_map").write_text(mapping.uid_map_text())
        Path(f"/proc/{pid}/gid_map").write_text(mapping.gid_map_text())
        return
    # Both helpers at once: each is a setuid exec of ~2 ms on the `rl run` start-up path.
    helpers = (("newuidmap", mapping.uids), ("newgidmap", mapping.gids))
    running = [(helper, _start_map_helper(helper, pid, ranges)) for helper, ranges in helpers]
    for helper, proc in running:
        _, stderr = proc.communicate()
        _check_map_helper(helper, pid, proc.returncode, stderr)


def _start_map_helper(helper: str, pid: int, ranges: tuple[IdRange, ...]) -> subprocess.Popen[str]:
    path = shutil.which(helper) or f"/usr/bin/{helper}"
    if not os.path.exists(path):
        raise RlError(
            f"{helper} not found: install it (Debian/Ubuntu: apt-get install uidmap) "
            "or run `rl doctor`"
        )
    argv = [path, str(pid)]
    for r in ranges:
        argv += [str(r.container), str(r.host), str(r.size)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _check_map_helper(helper: str, pid: int, returncode: int, stderr: str) -> None:
    if returncode != 0:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "failed"
        raise RlError(
            f"{helper} {pid}: {detail}: check that {helper} is setuid root and that "
            f"/etc/sub{'u' if helper == 'newuidmap' else 'g'}id has a range for "
            f"{current_user()} (see `rl doctor`)"
        )


def run_in_userns(
    fn: Callable[..., T],
    *args: Any,
    mapping: IdMapping | None = None,
    unshare_flags: int = 0,
) -> T:
    """Run `fn(*args)` in a forked child that is root of a new user namespace with `mapping`.

    The child also unshares `unshare_flags` (e.g. CLONE_NEWNS). Its return value or exception
    comes back pickled; RlError raised inside is re-raised here unchanged. The child's stdio
    is inherited, so debug output still reaches the terminal.
    """
    from rootless import outcome

    mapping = mapping or default_mapping()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(ready_r)
            os.close(go_w)
            os.close(result_r)

            def as_root_of_a_new_namespace() -> T:
                syscalls.unshare(syscalls.CLONE_NEWUSER | unshare_flags)
                os.write(ready_w, b"1")
                if os.read(go_r, 1) != b"1":
                    os._exit(1)
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                if os.getuid() == 0 and Path("/proc/self/setgroups").read_text().strip() == "allow":
                    os.setgroups([])
                return fn(*args)

            outcome.write_all(result_w, outcome.capture(as_root_of_a_new_namespace))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    os.close(result_w)
    try:
        if os.read(ready_r, 1) != b"1":
            raise RlError(
                "cannot create a user namespace: unprivileged user namespaces may be disabled "
                "(see `rl doctor`)"
            )
        try:
            apply_mapping(pid, mapping)
        except OSError as exc:
            raise RlError(f"cannot write the id maps of the user namespace: {exc}") from exc
        os.write(go_w, b"1")
        data = outcome.read_all(result_r)
    finally:
        for fd in (ready_r, go_w, result_r):
            os.close(fd)
        _, status = os.waitpid(pid, 0)
    died = f"helper process in the user namespace failed (wait status {status})"
    return outcome.unpack(data, died)  # type: ignore[no-any-return]
