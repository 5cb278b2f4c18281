"""Container records in rl.db and their directories under `<data_dir>/containers/<id>/`.

A record is created before anything is set up (so a name is taken atomically, by SQLite's
UNIQUE constraint) and its state moves created -> running -> exited. The process that runs a
container is recorded with its start time; a record that says "running" while that process is
gone (rl was SIGKILLed) reads as exited, so nothing waits on a dead run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rootless.containers.names import new_id, random_name
from rootless.errors import RlError

BUSY_TIMEOUT_MS = 10000
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# Exit code recorded for a container whose runner vanished without recording one.
UNKNOWN_EXIT = 137

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


@dataclass
class Container:
    id: str
    name: str
    image_id: str
    image_name: str
    command: list[str]
    created: float
    state: str = "created"
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None
    runner_pid: int | None = None
    runner_start: str | None = None
    container_pid: int | None = None
    autoremove: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]


_COLUMNS = (
    "id, name, image_id, image_name, command, created, state, exit_code, started, finished, "
    "runner_pid, runner_start, container_pid, autoremove, labels, config"
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
    )


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat, which tells a process from a later one with its pid."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


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
                    f"INSERT INTO containers ({_COLUMNS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, ?, ?, ?)",
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
        """A "running" record whose runner is gone is an exited one."""
        if record.state != "running" or record.runner_pid is None:
            return record
        if process_start_time(record.runner_pid) == record.runner_start:
            return record
        self.db.execute(
            "UPDATE containers SET state = 'exited', exit_code = coalesce(exit_code, ?), "
            "finished = coalesce(finished, ?) WHERE id = ? AND state = 'running'",
            (UNKNOWN_EXIT, time.time(), record.id),
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

    def mark_running(self, container_id: str, container_pid: int | None = None) -> None:
        me = os.getpid()
        self.db.execute(
            "UPDATE containers SET state = 'running', started = ?, runner_pid = ?, "
            "runner_start = ?, container_pid = ? WHERE id = ?",
            (time.time(), me, process_start_time(me), container_pid, container_id),
        )

    def set_container_pid(self, container_id: str, container_pid: int) -> None:
        self.db.execute(
            "UPDATE containers SET container_pid = ? WHERE id = ?", (container_pid, container_id)
        )

    def mark_exited(self, container_id: str, exit_code: int) -> None:
        self.db.execute(
            "UPDATE containers SET state = 'exited', exit_code = ?, finished = ? WHERE id = ?",
            (exit_code, time.time(), container_id),
        )

    def set_volumes(self, container_id: str, used: list[str], anonymous: list[str]) -> None:
        """Remember the volumes a container mounts (and which of them die with it)."""
        record = self._by_id(container_id)
        if record is None:
            return
        config = dict(record.config, volumes=used, anonymous_volumes=anonymous)
        self.db.execute(
            "UPDATE containers SET config = ? WHERE id = ?", (json.dumps(config), container_id)
        )

    def volume_users(self, volume: str) -> list[str]:
        """IDs of the containers whose mounts use `volume` (podman's `volume rm` lists IDs)."""
        return [c.id for c in self.containers() if volume in c.config.get("volumes", [])]

    # --- removal -----------------------------------------------------------------------
    def remove(self, record: Container, *, volumes: bool = False) -> None:
        """Storage (subordinate-owned, removed in the user namespace), directory, record;
        with `volumes`, also the anonymous volumes the container made (podman's --rm, rm -v)."""
        record = self._by_id(record.id) or record  # volumes are recorded after creation
        directory = self.container_dir(record.id)
        if directory.exists() and not _remove_own_tree(directory):
            from rootless.storage import remove_container_storage

            remove_container_storage(directory)
            _remove_dir(directory)
        self._delete_record(record.id)
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
