"""`rl info`: its output formats (the YAML printer, the Go-template subset) and helpers."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rootless import gotemplate, info, yamltext
from rootless.errors import RlError

PODMAN_SHAPED = {
    "host": {
        "idMappings": {"uidmap": [{"container_id": 0, "host_id": 1000, "size": 1}]},
        "distribution": {"version": "12", "codename": "bookworm"},
        "cgroupControllers": [],
        "graphOptions": {},
        "security": {"rootless": True},
    }
}


def test_yaml_has_podmans_shape() -> None:
    assert yamltext.dump(PODMAN_SHAPED) == (
        "host:\n"
        "  cgroupControllers: []\n"
        "  distribution:\n"
        "    codename: bookworm\n"
        '    version: "12"\n'
        "  graphOptions: {}\n"
        "  idMappings:\n"
        "    uidmap:\n"
        "    - container_id: 0\n"
        "      host_id: 1000\n"
        "      size: 1\n"
        "  security:\n"
        "    rootless: true\n"
    )


@pytest.mark.parametrize(
    "text", ["12", "1.5", "true", "no", "null", "~", "", " x", "a: b", "- x", "#x", "1e5", "0x1f"]
)
def test_ambiguous_strings_are_quoted(text: str) -> None:
    assert yamltext.scalar(text).startswith('"')
    assert yaml.safe_load(f"k: {yamltext.scalar(text)}") == {"k": text}


text = st.text(st.characters(exclude_categories=["Cs"]))  # lone surrogates are not text
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
keys = st.text(st.characters(exclude_categories=["Cs"]), min_size=1)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(keys, values, max_size=5))
def test_yaml_reads_back_as_the_same_data(data: dict[str, Any]) -> None:
    assert yaml.safe_load(yamltext.dump(data) or "{}") == data


INFO = {
    "host": {"kernel": "6.1.0", "idMappings": {"uidmap": [{"size": 1}]}, "rootless": True},
    "store": {"graphRoot": "/home/a/.local/share/rl", "imageStore": {"number": 3}},
}


def test_template_fields_match_case_insensitively() -> None:
    assert gotemplate.render("{{.Host.Kernel}}", INFO) == "6.1.0\n"
    assert gotemplate.render("{{ .Store.GraphRoot }}", INFO) == "/home/a/.local/share/rl\n"
    assert gotemplate.render("{{.Store.ImageStore.Number}}\\t{{.Host.Rootless}}", INFO) == (
        "3\ttrue\n"
    )
    assert gotemplate.render("{{json .Host.IDMappings.UIDMap}}", INFO) == '[{"size":1}]\n'
    assert gotemplate.render("plain", INFO) == "plain\n"


@pytest.mark.parametrize("fmt", ["{{.Host.Nope}}", "{{.Host.Kernel.Deeper}}", "{{range .}}"])
def test_bad_templates_are_errors(fmt: str) -> None:
    with pytest.raises(RlError):
        gotemplate.render(fmt, INFO)


def test_info_helpers() -> None:
    assert info.go_arch("x86_64") == "amd64"
    assert info.go_arch("aarch64") == "arm64"
    assert info.format_uptime(1046.0) == "0h 17m 26.00s"
    assert info.format_uptime(90061.5) == "25h 1m 1.50s"


def test_count_rows(tmp_path: Path) -> None:
    db = tmp_path / "rl.db"
    assert info.count_rows(db, "images") == 0
    assert not db.exists(), "counting must not create the store"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE images (id TEXT)")
    conn.executemany("INSERT INTO images VALUES (?)", [("a",), ("b",)])
    conn.commit()
    conn.close()
    assert info.count_rows(db, "images") == 2
    assert info.count_rows(db, "containers") == 0  # not there yet


def test_disk_usage_of_a_store_not_yet_made(tmp_path: Path) -> None:
    allocated, used = info.disk_usage(tmp_path / "not" / "yet")
    assert allocated > 0
    assert 0 <= used <= allocated


def test_container_counts(tmp_path: Path) -> None:
    from rootless.containers.store import ContainerStore

    assert info.container_counts(tmp_path)["number"] == 0
    store = ContainerStore.open(tmp_path)
    try:
        for name in ("one", "two"):
            store.create(name=name, image_id="0" * 64, image_name="x", command=["true"])
    finally:
        store.close()
    counts = info.container_counts(tmp_path)
    assert counts == {"number": 2, "paused": 0, "running": 0, "stopped": 2}
