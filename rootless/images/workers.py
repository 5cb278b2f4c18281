"""Workers in one user namespace: a helper process that is root of a new user namespace and
forks a worker for each job (`rl pull` unpacks every layer in one while it downloads, and
commits in another).

A module of its own, apart from the unpacking code, so that `rl pull` can start the helper
before it imports anything heavy: the helper then imports what its jobs need (`preload`)
while newuidmap/newgidmap write its id maps, on the other core, while `rl pull` imports its
network stack; the main process never loads tarfile, the store's commit code or sqlite3's
writers for the workers' sake (issue 5).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from rootless import syscalls
from rootless.errors import RlError
from rootless.outcome import capture, read_all, unpack, write_all

if TYPE_CHECKING:
    from rootless.userns import IdMapping

T = TypeVar("T")

# What the jobs of `rl pull`'s workers need (rootless.images.unpack's unpack_fd, the store's
# prepare_pull and commit_pulled): their helper imports these while its id maps are written,
# on the other core, while `rl pull` imports its network stack; `rl pull` never loads them.
PULL_JOB_MODULES = (
    "pickle",
    "rootless.images.unpack",
    "rootless.images.archive",
    "rootless.images.store",
)


class NamespaceWorkers:
    """One helper process that is root of a new user namespace (the user's subordinate ids
    mapped: one newuidmap/newgidmap round trip in all) and forks a worker for each job.

    `rl pull` starts it before its event loop, so that every layer can be unpacked by its own
    worker while the layer downloads (the pipe it reads is passed along with the job), and the
    store's commit runs in the same namespace. A job is a module-level function and picklable
    arguments; file descriptors passed with it are appended to the arguments (as the worker's
    numbers). The worker's return value or exception comes back pickled through a pipe whose
    read end `submit` returns. The helper ignores SIGINT (the terminal sends it to the whole
    process group): it ends when rl closes the control socket or dies, after its workers.
    """

    def __init__(self, mapping: IdMapping | None = None, preload: Sequence[str] = ()) -> None:
        """Starts the helper and returns at once: the helper has its id maps written itself
        (newuidmap/newgidmap are setuid execs, 10-30 ms), so rl can work meanwhile (`rl pull`
        imports its network stack). `ready` (or the first job) waits for the outcome.
        `preload`: modules the helper imports while it waits for its id maps, so that every
        worker it forks has them (the jobs' own modules; those of their arguments)."""
        from rootless.userns import default_mapping

        mapping = mapping or default_mapping()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper
            code = 1
            try:
                ours.close()
                os.close(ready_r)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                problem = _enter_namespace(mapping, preload)
                if not problem:
                    _become_root()
                os.write(ready_w, problem.encode() or READY)
                os.close(ready_w)
                if not problem:
                    _serve_jobs(theirs)
                    code = 0
            finally:
                os._exit(code)
        theirs.close()
        os.close(ready_w)
        self._pid: int | None = pid
        self._control = ours
        self._ready = ready_r  # -1 once read

    def ready(self) -> None:
        """Wait until the helper is root of its namespace and takes jobs; raises RlError when
        it cannot be (then the helper is gone)."""
        if self._ready < 0:
            return
        try:
            answer = read_all(self._ready)
        finally:
            os.close(self._ready)
            self._ready = -1
        if answer != READY:
            self.close()
            raise RlError(answer.decode(errors="replace") or NO_NAMESPACE)

    def __enter__(self) -> NamespaceWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        fn: Callable[..., object] | str,
        *args: object,
        fds: Sequence[int] = (),
        early: bool = False,
    ) -> int:
        """Start `fn(*args, *fds)` in a worker; returns the fd to read its outcome from (pass
        it to `outcome` when read to the end). `fds` stay open here: close them yourself.
        `fn` may be named, "module:function": then only the worker imports the module (the
        helper has it when it was preloaded). `early`: do not wait until the helper is ready
        (its id maps written): the job waits in the socket and starts as soon as it is; call
        `ready` before reading the outcome, so that a failed namespace is reported as such."""
        import pickle

        if not early:
            self.ready()
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        try:
            payload = pickle.dumps((fn, args))
            header = struct.pack("!QI", len(payload), len(fds))
            socket.send_fds(self._control, [header], [result_w, *fds])
            self._control.sendall(payload)
        except OSError as exc:
            os.close(result_r)
            self.ready()  # (the namespace's failure, if that is why the helper is gone)
            raise RlError(f"the user namespace helper process is gone: {exc}") from exc
        finally:
            os.close(result_w)
        return result_r

    def call(self, fn: Callable[..., T] | str, *args: object) -> T:
        """Run `fn(*args)` in a worker and wait for it."""
        fd = self.submit(fn, *args)
        try:
            data = read_all(fd)
        finally:
            os.close(fd)
        result: T = outcome(data)
        return result

    def close(self) -> None:
        """Let the helper finish: it waits for its workers, then exits."""
        if self._ready >= 0:
            os.close(self._ready)
            self._ready = -1
        if self._pid is None:
            return
        self._control.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)
        self._pid = None


def outcome(data: bytes) -> Any:
    """A worker's pickled (ok, value): the value, or its exception raised here."""
    return unpack(data, "a worker process in the user namespace died")


READY = b"ready"  # what the helper answers when it takes jobs (else why not, or nothing)
NO_NAMESPACE = (
    "cannot create a user namespace: unprivileged user namespaces may be disabled (see `rl doctor`)"
)


def _enter_namespace(mapping: IdMapping, preload: Sequence[str] = ()) -> str:
    """In the helper: unshare a user namespace and have the id maps written by a child forked
    first (it stays outside the namespace, as newuidmap's caller must), importing `preload`
    meanwhile; "" or what failed."""
    from rootless.userns import apply_mapping

    helper = os.getpid()
    go_r, go_w = os.pipe()
    result_r, result_w = os.pipe()
    mapper = os.fork()
    if mapper == 0:
        code = 1
        try:
            os.close(go_w)
            os.close(result_r)
            if os.read(go_r, 1) == b"1":
                try:
                    apply_mapping(helper, mapping)
                    text = READY.decode()
                except RlError as exc:
                    text = exc.message
                except OSError as exc:
                    text = f"cannot write the id maps of the user namespace: {exc}"
                os.write(result_w, text.encode())
                code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(result_w)
    try:
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
        except OSError:
            return NO_NAMESPACE
        os.write(go_w, b"1")
        _preload(preload)  # while the mapper waits for newuidmap and newgidmap
    finally:
        os.close(go_w)  # (without the go-ahead the mapper exits)
        try:
            answer = read_all(result_r)
        finally:
            os.close(result_r)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(mapper, 0)
    if answer == READY:
        return ""
    return answer.decode(errors="replace") or "the process writing the id maps died"


def _preload(modules: Sequence[str]) -> None:
    """Import what the jobs will need; a module that fails to import is left to the job that
    needs it (which then reports the error)."""
    import gc

    for name in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # What is loaded now is shared with every worker forked later: frozen, a worker's garbage
    # collections leave it alone instead of touching (and so copying) its pages.
    gc.freeze()


def _become_root() -> None:
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    with contextlib.suppress(OSError):  # denied in a single-id namespace
        os.setgroups([])


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            raise EOFError("the control socket closed in the middle of a job")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _serve_jobs(sock: socket.socket) -> None:
    """The helper's loop: receive a job, fork its worker, reap finished workers."""
    import pickle

    header_size = struct.calcsize("!QI")
    workers: set[int] = set()
    try:
        while True:
            header, fds, _, _ = socket.recv_fds(sock, header_size, 64)
            if not header:
                break
            size, count = struct.unpack("!QI", header)
            result_w, passed = fds[0], fds[1 : 1 + count]
            try:
                fn, args = pickle.loads(_receive_exactly(sock, size))
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    _run_job(result_w, fn, (*args, *passed))
                workers.add(pid)
            finally:
                for fd in fds:
                    os.close(fd)
            while workers:
                done, _ = os.waitpid(-1, os.WNOHANG)
                if done == 0:
                    break
                workers.discard(done)
    finally:
        for pid in workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _run_job(result_w: int, fn: Callable[..., object] | str, args: tuple[object, ...]) -> None:
    """In a worker: run the job, send back its outcome, exit."""

    def job() -> object:
        if isinstance(fn, str):
            module, _, name = fn.partition(":")
            return getattr(importlib.import_module(module), name)(*args)
        return fn(*args)

    code = 0
    try:
        write_all(result_w, capture(job))
        os.close(result_w)  # the end of the outcome now, not once this process is torn down
    except BaseException:
        code = 1
    finally:
        os._exit(code)
