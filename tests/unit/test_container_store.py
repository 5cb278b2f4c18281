"""Container records in rl.db: names, lookup, state, reconciliation, removal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.containers.store import ContainerStore
from rootless.errors import RlError


@pytest.fixture
def store(tmp_path: Path) -> ContainerStore:
    return ContainerStore.open(tmp_path)


def test_create_makes_record_and_dirs(store: ContainerStore) -> None:
    c = store.create(name="web", image_id="a" * 64, image_name="img", command=["sh"])
    assert len(c.id) == 64 and c.state == "created"
    assert store.userdata(c.id).is_dir() and store.rootfs(c.id).is_dir()
    assert store.get("web").id == c.id
    assert store.get(c.id[:5]).name == "web"


def test_name_in_use_is_podmans_error(store: ContainerStore) -> None:
    first = store.create(name="x", image_id="", image_name="i", command=["a"])
    with pytest.raises(RlError) as err:
        store.create(name="x", image_id="", image_name="i", command=["a"])
    assert err.value.message == (
        f'creating container storage: the container name "x" is already in use by {first.id}. '
        "You have to remove that container to be able to reuse that name: that name is "
        "already in use"
    )


def test_invalid_name(store: ContainerStore) -> None:
    with pytest.raises(RlError, match="names must match"):
        store.create(name="-bad", image_id="", image_name="i", command=["a"])


def test_random_names_and_missing(store: ContainerStore) -> None:
    a = store.create(name=None, image_id="", image_name="i", command=["a"])
    assert "_" in a.name
    with pytest.raises(RlError, match='no container with name or ID "nope" found'):
        store.get("nope")


def test_state_transitions(store: ContainerStore) -> None:
    c = store.create(name="s", image_id="", image_name="i", command=["a"])
    store.mark_running(c.id, 1234)
    running = store.get("s")
    assert running.state == "running" and running.runner_pid == os.getpid()
    store.mark_exited(c.id, 42)
    done = store.get("s")
    assert (done.state, done.exit_code) == ("exited", 42)


def test_a_restart_is_restarting_until_the_container_has_a_pid(store: ContainerStore) -> None:
    c = store.create(name="r", image_id="", image_name="i", command=["a"])
    store.mark_running(c.id, 1)
    store.mark_exited(c.id, 1)
    store.mark_running(c.id, state="restarting")
    starting = store.get("r")
    assert (starting.state, starting.container_pid, starting.exit_code) == (
        "restarting",
        None,
        None,
    )
    assert starting.runner_pid == os.getpid()
    store.mark_started(c.id, 4321)
    started = store.get("r")
    assert (started.state, started.container_pid) == ("running", 4321)


def test_a_restart_whose_runner_died_reads_as_exited(store: ContainerStore) -> None:
    c = store.create(name="r2", image_id="", image_name="i", command=["a"])
    store.mark_running(c.id, state="restarting")
    store.db.execute("UPDATE containers SET runner_pid = 2147483646 WHERE id = ?", (c.id,))
    record = store.get("r2")
    assert record.state == "exited" and "exit code unknown" in record.error


def test_running_record_of_a_dead_runner_reads_as_exited(store: ContainerStore) -> None:
    c = store.create(name="ghost", image_id="", image_name="i", command=["a"])
    store.mark_running(c.id, 1)
    store.db.execute("UPDATE containers SET runner_pid = 2147483646 WHERE id = ?", (c.id,))
    record = store.get("ghost")
    assert record.state == "exited" and record.exit_code is None
    assert "exit code unknown" in record.error and "2147483646" in record.error


def test_a_new_run_clears_the_previous_outcome(store: ContainerStore) -> None:
    c = store.create(name="again", image_id="", image_name="i", command=["a"])
    store.mark_running(c.id, 1)
    store.set_oom_killed(c.id)
    store.mark_exited(c.id, 137, "killed")
    store.count_restart(c.id)
    store.mark_running(c.id, 2)
    record = store.get("again")
    assert (record.state, record.exit_code, record.error, record.oom_killed) == (
        "running",
        None,
        "",
        False,
    )
    assert record.restart_count == 1


def test_rename_and_health(store: ContainerStore) -> None:
    a = store.create(name="a", image_id="", image_name="i", command=["a"])
    store.create(name="b", image_id="", image_name="i", command=["a"])
    with pytest.raises(RlError, match='"b" is already in use'):
        store.rename(a.id, "b")
    with pytest.raises(RlError, match="names must match"):
        store.rename(a.id, "/bad")
    store.rename(a.id, "c")
    store.set_health(a.id, {"Status": "healthy", "FailingStreak": 0, "Log": []})
    record = store.get("c")
    assert record.id == a.id
    assert record.health == {"Status": "healthy", "FailingStreak": 0, "Log": []}


def test_an_older_database_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from rootless.containers.store import SCHEMA

    db = sqlite3.connect(tmp_path / "rl.db")
    db.execute(SCHEMA)
    db.execute(
        "INSERT INTO containers (id, name, image_id, image_name, command, created, state) "
        "VALUES ('ab', 'old', '', 'i', '[]', 0, 'exited')"
    )
    db.commit()
    db.close()
    store = ContainerStore.open(tmp_path)
    try:
        old = store.get("old")
        assert (old.restart_count, old.stopped_by_user) == (0, False)
        assert (old.health, old.error) == (None, "")
    finally:
        store.close()


def test_remove(store: ContainerStore) -> None:
    c = store.create(name="r", image_id="", image_name="i", command=["a"])
    (store.userdata(c.id) / "hosts").write_text("x")
    store.remove(c)
    assert store.find("r") is None
    assert not store.container_dir(c.id).exists()


def test_volume_users(store: ContainerStore) -> None:
    c = store.create(name="v", image_id="", image_name="i", command=["a"])
    store.set_volumes(c.id, ["data", "anon"], ["anon"])
    assert store.get("v").config.get("volumes") is None  # RunOptions' -v list untouched
    assert store.volume_users("data") == [c.id]
    assert store.volume_users("other") == []
    assert store.get("v").config["anonymous_volumes"] == ["anon"]


def test_log_max_size_is_decimal_like_podman() -> None:
    from rootless.runtime.options import parse_human_size

    assert parse_human_size("1k", "x") == 1000
    assert parse_human_size("1ki", "x") == 1000
    assert parse_human_size("2MB", "x") == 2_000_000
    assert parse_human_size("512", "x") == 512
    with pytest.raises(RlError, match="invalid size"):
        parse_human_size("lots", "x")


def test_latest_is_the_newest_container(store: ContainerStore) -> None:
    with pytest.raises(RlError, match="no containers to act on"):
        store.latest()
    store.create(name="older", image_id="", image_name="i", command=["a"])
    newer = store.create(name="newer", image_id="", image_name="i", command=["a"])
    assert store.latest().id == newer.id
