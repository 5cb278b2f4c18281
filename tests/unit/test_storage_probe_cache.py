"""The storage probe's cache (rootless.storage.probe): keyed by kernel and the store's
filesystem, so it must only hold answers about those. A store directory the user cannot
write (rl info on someone else's store) once put "cannot make a probe directory" into it,
and every store on that filesystem went on using vfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.storage import probe


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RL_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "rl" / "probe.json"


def test_an_answer_is_cached(dirs: Path) -> None:
    asked = []

    def works(store: Path) -> probe.ProbeResult:
        asked.append(store)
        return probe.ProbeResult(True, "")

    assert probe._cached("probe.json", works, False).works
    assert probe._cached("probe.json", works, False).works
    assert len(asked) == 1 and dirs.exists()


def test_a_store_without_room_for_the_probe_is_not_cached(dirs: Path) -> None:
    def unwritable(store: Path) -> probe.ProbeResult:
        return probe.run_probe(store / "missing")  # mkdtemp fails: no such directory

    result = probe._cached("probe.json", unwritable, False)
    assert not result.works and "cannot make a probe directory" in result.reason
    assert not dirs.exists()
