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


def test_running_record_of_a_dead_runner_reads_as_exited(store: ContainerStore) -> None:
    c = store.create(name="ghost", image_id="", image_name="i", command=["a"])
    store.mark_running(c.id, 1)
    store.db.execute("UPDATE containers SET runner_pid = 2147483646 WHERE id = ?", (c.id,))
    record = store.get("ghost")
    assert record.state == "exited" and record.exit_code == 137


def test_remove(store: ContainerStore) -> None:
    c = store.create(name="r", image_id="", image_name="i", command=["a"])
    (store.userdata(c.id) / "hosts").write_text("x")
    store.remove(c)
    assert store.find("r") is None
    assert not store.container_dir(c.id).exists()


def test_volume_users(store: ContainerStore) -> None:
    c = store.create(name="v", image_id="", image_name="i", command=["a"])
    store.set_volumes(c.id, ["data", "anon"], ["anon"])
    assert store.volume_users("data") == [c.id]
    assert store.volume_users("other") == []
    assert store.get("v").config["anonymous_volumes"] == ["anon"]
