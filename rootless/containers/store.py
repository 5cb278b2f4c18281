"""Container records in rl.db and their directories under `<data_dir>/containers/<id>/`.

A record is created before anything is set up (so a name is taken atomically, by SQLite's
UNIQUE constraint) and its state moves created -> running -> exited (-> restarting -> running
while the monitor applies a restart policy). The process that runs a container (the
foreground rl, or the detached container's monitor) is recorded with its start time; a record
that says "running" while that process is gone (it was SIGKILLed, the machine rebooted) reads
as exited with an unknown exit code, so nothing waits on a dead run and `rm`/`start` just work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from rootless.containers.names import new_id, random_name
from rootless.errors import RlError

BUSY_TIMEOUT_MS = 10000
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# States whose truth depends on a live runner (foreground rl or monitor).
LIVE_STATES = ("running", "restarting", "stopping", "paused")

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,               -- 64 hex digits
    name TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL,
    image_name TEXT NOT NULL,
    command TEXT NOT NULL,             -- JSON list: entrypoint + cmd as run
    created REAL NOT NULL,
    state TEXT NOT NULL,               -- created | running | exited
    exit_code INTEGER,
    started REAL,
    finished REAL,
    runner_pid INTEGER,                -- the rl process running it in the foreground
    runner_start TEXT,                 -- its start time (/proc/PID/stat field 22): pid reuse
    container_pid INTEGER,             -- the container's pid 1, in rl's pid namespace
    autoremove INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}', -- JSON object
    config TEXT NOT NULL DEFAULT '{}'  -- JSON: the run options, for inspect and later restarts
)
"""
# Columns added after the first schema: (name, declaration). Older databases get them by
# ALTER TABLE when opened.
LATER_COLUMNS = (
    ("restart_count", "INTEGER NOT NULL DEFAULT 0"),
    ("stopped_by_user", "INTEGER NOT NULL DEFAULT 0"),  # no restart policy after rl stop
    ("oom_killed", "INTEGER NOT NULL DEFAULT 0"),
    ("health", "TEXT"),  # JSON: podman's State.Health {Status, FailingStreak, Log}
    ("error", "TEXT NOT NULL DEFAULT ''"),  # podman's State.Error
)


class Container:
    """One container's record. A plain class rather than a dataclass: this module is on the
    path of every `rl run`, and a dataclass costs ~0.5 ms to create at import (issue 3)."""

    def __init__(
        self,
        id: str,
        name: str,
        image_id: str,
        image_name: str,
        command: list[str],
        created: float,
        state: str = "created",
        exit_code: int | None = None,
        started: float | None = None,
        finished: float | None = None,
        runner_pid: int | None = None,
        runner_start: str | None = None,
        container_pid: int | None = None,
        autoremove: bool = False,
        labels: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
        restart_count: int = 0,
        stopped_by_user: bool = False,
        oom_killed: bool = False,
        health: dict[str, Any] | None = None,
        error: str = "",
    ) -> None:
        self.id = id
        self.name = name
        self.image_id = image_id
        self.image_name = image_name
        self.command = command
        self.created = created
        self.state = state
        self.exit_code = exit_code
        self.started = started
        self.finished = finished
        self.runner_pid = runner_pid
        self.runner_start = runner_start
        self.container_pid = container_pid
        self.autoremove = autoremove
        self.labels = labels if labels is not None else {}
        self.config = config if config is not None else {}
        self.restart_count = restart_count
        self.stopped_by_user = stopped_by_user
        self.oom_killed = oom_killed
        self.health = health
        self.error = error

    def __repr__(self) -> str:
        return f"Container({self.__dict__!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Container) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    @property
    def short_id(self) -> str:
        return self.id[:12]


_COLUMNS = (
    "id, name, image_id, image_name, command, created, state, exit_code, started, finished, "
    "runner_pid, runner_start, container_pid, autoremove, labels, config, "
    "restart_count, stopped_by_user, oom_killed, health, error"
)


def _from_row(row: tuple[Any, ...]) -> Container:
    return Container(
        id=row[0],
        name=row[1],
        image_id=row[2],
        image_name=row[3],
        command=json.loads(row[4]),
        created=row[5],
        state=row[6],
        exit_code=row[7],
        started=row[8],
        finished=row[9],
        runner_pid=row[10],
        runner_start=row[11],
        container_pid=row[12],
        autoremove=bool(row[13]),
        labels=json.loads(row[14]),
        config=json.loads(row[15]),
        restart_count=row[16],
        stopped_by_user=bool(row[17]),
        oom_killed=bool(row[18]),
        health=json.loads(row[19]) if row[19] else None,
        error=row[20],
    )


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat, which tells a process from a later one with its pid;
    None when there is no such process or it has ended."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie has ended: only its parent's wait is missing
    return fields[19]


def runner_alive(record: Container) -> bool:
    """Is the process recorded as running this container still that process?"""
    if record.runner_pid is None:
        return False
    return process_start_time(record.runner_pid) == record.runner_start


class ContainerLock:
    """An exclusive flock per container under the runtime dir: operations on one container
    (start, stop, rm, rename, …) serialise; different containers proceed in parallel. The
    kernel drops it when its holder dies, so a killed rl never leaves it held."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.fd = -1

    def __enter__(self) -> ContainerLock:
        import fcntl

        from rootless.paths import ensure_dir, runtime_dir

        directory = ensure_dir(runtime_dir() / "locks")
        self.fd = os.open(
            directory / f"{self.container_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)
        self.fd = -1


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise RlError(
            "running container create option: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: "
            "invalid argument"
        )


def name_in_use(name: str, owner: str) -> RlError:
    return RlError(
        f'creating container storage: the container name "{name}" is already in use by '
        f"{owner}. You have to remove that container to be able to reuse that name: that name "
        "is already in use"
    )


def no_such_container(ref: str) -> RlError:
    return RlError(f'no container with name or ID "{ref}" found: no such container')


class ContainerStore:
    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self.db = db

    @classmethod
    def open(cls, root: Path | None = None) -> ContainerStore:
        if root is None:
            from rootless.paths import data_dir

            root = data_dir()
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            db = sqlite3.connect(
                root / "rl.db", timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL stays consistent after a crash and saves an fsync per state change.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(containers)")}
            for column, declaration in LATER_COLUMNS:
                if column not in have:
                    db.execute(f"ALTER TABLE containers ADD COLUMN {column} {declaration}")
        except (OSError, sqlite3.Error) as exc:
            raise RlError(f"cannot open the container store in {root}: {exc}") from exc
        return cls(root, db)

    def close(self) -> None:
        self.db.close()

    # --- directories -------------------------------------------------------------------
    def container_dir(self, container_id: str) -> Path:
        return self.root / "containers" / container_id

    def userdata(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "userdata"

    def rootfs(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "rootfs"

    # --- records -----------------------------------------------------------------------
    def create(
        self,
        *,
        container_id: str | None = None,
        name: str | None,
        image_id: str,
        image_name: str,
        command: list[str],
        autoremove: bool = False,
        labels: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> Container:
        """A new record and its (empty) directory; the name is taken or RlError says by whom."""
        if name is not None:
            check_name(name)
        for _attempt in range(20):
            record = Container(
                id=container_id if container_id and _attempt == 0 else new_id(),
                name=name or random_name(),
                image_id=image_id,
                image_name=image_name,
                command=command,
                created=time.time(),
                autoremove=autoremove,
                labels=labels or {},
                config=config or {},
            )
            try:
                self.db.execute(
                    "INSERT INTO containers (id, name, image_id, image_name, command, created, "
                    "state, autoremove, labels, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.name,
                        image_id,
                        image_name,
                        json.dumps(command),
                        record.created,
                        record.state,
                        int(autoremove),
                        json.dumps(record.labels),
                        json.dumps(record.config),
                    ),
                )
            except sqlite3.IntegrityError:
                if name is None:
                    continue  # a random name (or, in theory, an id) collided: draw again
                owner = self.db.execute(
                    "SELECT id FROM containers WHERE name = ?", (name,)
                ).fetchone()
                raise name_in_use(name, owner[0] if owner else "another container") from None
            try:
                (self.userdata(record.id)).mkdir(mode=0o700, parents=True)
                self.rootfs(record.id).mkdir(mode=0o755)
            except OSError as exc:
                self._delete_record(record.id)
                raise RlError(f"cannot create the container directory: {exc}") from exc
            return record
        raise RlError("cannot find a free random container name: give one with --name")

    def _delete_record(self, container_id: str) -> None:
        self.db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def _reconcile(self, record: Container) -> Container:
        """A live-state record whose runner is gone is an exited one; its exit code is
        unknown (NULL) unless the runner recorded it, and State.Error says so."""
        if record.state not in LIVE_STATES or record.runner_pid is None:
            return record
        if runner_alive(record):
            return record
        self.db.execute(
            "UPDATE containers SET state = 'exited', finished = coalesce(finished, ?), "
            "error = CASE WHEN exit_code IS NULL THEN ? ELSE error END "
            "WHERE id = ? AND state = ? AND runner_pid = ?",
            (
                time.time(),
                f"exit code unknown: the process that ran the container (pid "
                f"{record.runner_pid}) ended without recording it",
                record.id,
                record.state,
                record.runner_pid,
            ),
        )
        return self._by_id(record.id) or record

    def _by_id(self, container_id: str) -> Container | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM containers WHERE id = ?", (container_id,)
        ).fetchone()
        return _from_row(row) if row else None

    def find(self, ref: str) -> Container | None:
        """By exact name, full id or unique id prefix."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM containers WHERE name = ? OR id = ?", (ref, ref)
        ).fetchone()
        if row is None and re.fullmatch(r"[0-9a-f]{1,64}", ref):
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM containers WHERE id LIKE ?", (ref + "%",)
            ).fetchall()
            if len(rows) > 1:
                raise RlError(f'more than one result for container "{ref}"')
            row = rows[0] if rows else None
        return self._reconcile(_from_row(row)) if row else None

    def get(self, ref: str) -> Container:
        record = self.find(ref)
        if record is None:
            raise no_such_container(ref)
        return record

    def latest(self) -> Container:
        """The newest container (podman's --latest); RlError when there is none."""
        records = self.containers()
        if not records:
            raise RlError("no containers to act on: create one first")
        return records[0]

    def containers(self) -> list[Container]:
        """All records, newest first. A --rm container whose runner died without removing it
        (rl was SIGKILLed) is removed here, as its runner would have done."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM containers ORDER BY created DESC"
        ).fetchall()
        result = []
        for row in rows:
            record = _from_row(row)
            reconciled = self._reconcile(record)
            if reconciled.autoremove and record.state == "running" and reconciled.state == "exited":
                self.remove(reconciled, volumes=True)
                continue
            result.append(reconciled)
        return result

    def mark_running(
        self, container_id: str, container_pid: int | None = None, *, state: str = "running"
    ) -> None:
        """This process runs the container from now on (a fresh start: exit code, error and
        OOM flag of the previous run are cleared). Recorded before the container starts, so
        that a runner killed at any later point reads as exited; `state` is what the record
        says until `mark_started` gives it the container's pid (a restart stays
        "restarting": never "running" without a pid)."""
        me = os.getpid()
        self.db.execute(
            "UPDATE containers SET state = ?, started = ?, runner_pid = ?, "
            "runner_start = ?, container_pid = ?, exit_code = NULL, error = '', "
            "oom_killed = 0, finished = NULL WHERE id = ?",
            (state, time.time(), me, process_start_time(me), container_pid, container_id),
        )

    def set_state(self, container_id: str, state: str) -> None:
        self.db.execute("UPDATE containers SET state = ? WHERE id = ?", (state, container_id))

    def set_stopped_by_user(self, container_id: str, stopped: bool = True) -> None:
        self.db.execute(
            "UPDATE containers SET stopped_by_user = ? WHERE id = ?", (int(stopped), container_id)
        )

    def count_restart(self, container_id: str) -> None:
        self.db.execute(
            "UPDATE containers SET restart_count = restart_count + 1 WHERE id = ?",
            (container_id,),
        )

    def set_health(self, container_id: str, health: dict[str, Any] | None) -> None:
        self.db.execute(
            "UPDATE containers SET health = ? WHERE id = ?",
            (json.dumps(health) if health is not None else None, container_id),
        )

    def set_oom_killed(self, container_id: str) -> None:
        self.db.execute("UPDATE containers SET oom_killed = 1 WHERE id = ?", (container_id,))

    def rename(self, container_id: str, new_name: str) -> None:
        """RlError when the name is invalid or taken (podman's messages)."""
        check_name(new_name)
        try:
            self.db.execute("UPDATE containers SET name = ? WHERE id = ?", (new_name, container_id))
        except sqlite3.IntegrityError:
            owner = self.db.execute(
                "SELECT id FROM containers WHERE name = ?", (new_name,)
            ).fetchone()
            raise name_in_use(new_name, owner[0] if owner else "another container") from None

    def mark_started(self, container_id: str, container_pid: int) -> None:
        """The container runs as `container_pid` (after `mark_running`)."""
        self.db.execute(
            "UPDATE containers SET state = 'running', container_pid = ? WHERE id = ?",
            (container_pid, container_id),
        )

    def mark_exited(self, container_id: str, exit_code: int | None, error: str = "") -> None:
        self.db.execute(
            "UPDATE containers SET state = 'exited', exit_code = ?, finished = ?, error = ? "
            "WHERE id = ?",
            (exit_code, time.time(), error, container_id),
        )

    def update_config(self, container_id: str, **values: Any) -> None:
        """Merge `values` into the record's config (one transaction)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            record = self._by_id(container_id)
            if record is not None:
                config = dict(record.config, **values)
                self.db.execute(
                    "UPDATE containers SET config = ? WHERE id = ?",
                    (json.dumps(config), container_id),
                )
        finally:
            self.db.execute("COMMIT")

    def set_volumes(self, container_id: str, used: list[str], anonymous: list[str]) -> None:
        """Remember the volumes a container mounts (and which of them die with it)."""
        record = self._by_id(container_id)
        if record is None:
            return
        # "volumes" itself is RunOptions' -v list: the names go under their own key.
        config = dict(record.config, volume_names=used, anonymous_volumes=anonymous)
        self.db.execute(
            "UPDATE containers SET config = ? WHERE id = ?", (json.dumps(config), container_id)
        )

    def volume_users(self, volume: str) -> list[str]:
        """IDs of the containers whose mounts use `volume` (podman's `volume rm` lists IDs)."""
        return [c.id for c in self.containers() if volume in c.config.get("volume_names", [])]

    # --- removal -----------------------------------------------------------------------
    def remove(self, record: Container, *, volumes: bool = False) -> None:
        """Storage (subordinate-owned, removed in the user namespace), directory, record;
        with `volumes`, also the anonymous volumes the container made (podman's --rm, rm -v)."""
        record = self._by_id(record.id) or record  # volumes are recorded after creation
        from rootless.cgroups import container as cgroup

        cgroup.remove(self, record)  # its cgroup, when it has one (errors are not fatal)
        directory = self.container_dir(record.id)
        if directory.exists() and not _remove_own_tree(directory):
            from rootless.storage import remove_container_storage

            remove_container_storage(directory)
            _remove_dir(directory)
        self._delete_record(record.id)
        _remove_runtime_dir(record.id)
        if volumes:
            self._remove_anonymous_volumes(record)

    def _remove_anonymous_volumes(self, record: Container) -> None:
        names = record.config.get("anonymous_volumes") or []
        if not names:
            return
        from rootless.volumes import VolumeStore

        store = VolumeStore(self.root, users_of=self.volume_users)
        for name in names:
            if store.exists(name):
                store.remove(name)


def _remove_runtime_dir(container_id: str) -> None:
    """The monitor's attach socket and pid file live there (rootless.monitor)."""
    from rootless.paths import runtime_dir

    shutil.rmtree(runtime_dir() / "containers" / container_id, ignore_errors=True)


def _remove_own_tree(directory: Path) -> bool:
    """Remove `directory` directly when everything in it is ours (the common case: a
    container that wrote nothing as another id), saving a user namespace round trip.
    False when some entry belongs to another id (then nothing of theirs was touched)."""
    try:
        return _remove_own_tree_or_fail(directory)
    except PermissionError:
        return False


def _remove_own_tree_or_fail(directory: Path) -> bool:
    import stat

    me = os.getuid()
    dirs: list[str] = []
    for parent, subdirs, names in os.walk(directory, onerror=_raise):
        for name in subdirs + names:
            st = os.lstat(os.path.join(parent, name))
            if st.st_uid != me:
                return False
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o700 != 0o700:
                dirs.append(os.path.join(parent, name))
        for path in dirs:  # overlay's work/work is mode 000: open it up before walking in
            os.chmod(path, 0o700)
        dirs.clear()
    shutil.rmtree(directory)
    return True


def _raise(exc: OSError) -> None:
    raise exc


def _remove_dir(directory: Path) -> None:
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except PermissionError:
        # Something the container's ids own is left (a driver's leftover): remove it as root
        # of the user namespace, where those ids are ordinary.
        from rootless.userns import run_in_userns

        run_in_userns(shutil.rmtree, os.fspath(directory), True)
        if directory.exists():
            raise RlError(f"cannot remove {directory}: permission denied") from None
    except OSError as exc:
        raise RlError(f"cannot remove {directory}: {exc}") from exc
