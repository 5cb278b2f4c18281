"""`--change` instructions applied to image configs (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from rootless.errors import RlError
from rootless.images.changes import apply_changes, parse_change


def config_after(*changes: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = apply_changes({"config": base or {}}, changes)["config"]
    return result


def test_cmd_and_entrypoint_exec_and_shell_forms() -> None:
    assert config_after('CMD ["sh", "-c", "echo hi"]')["Cmd"] == ["sh", "-c", "echo hi"]
    assert config_after("CMD echo hi")["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert config_after("ENTRYPOINT=/bin/busybox")["Entrypoint"] == [
        "/bin/sh",
        "-c",
        "/bin/busybox",
    ]
    assert config_after('ENTRYPOINT ["a", 1]')["Entrypoint"] == ["/bin/sh", "-c", '["a", 1]']


def test_env_pairs_legacy_form_and_replacement() -> None:
    env = config_after(
        'ENV A=1 B="two words"', "ENV C 3 4", "env A=2", base={"Env": ["PATH=/bin", "A=0"]}
    )["Env"]
    assert env == ["PATH=/bin", "B=two words", "C=3 4", "A=2"]


def test_labels_ports_volumes() -> None:
    config = config_after(
        'LABEL a=b "c d"=e',
        "EXPOSE 80 53/udp",
        "EXPOSE 8000-8010/TCP",
        "VOLUME /data /x",
        'VOLUME ["/y"]',
        base={"Labels": {"old": "1"}},
    )
    assert config["Labels"] == {"old": "1", "a": "b", "c d": "e"}
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000-8010/tcp": {}}
    assert config["Volumes"] == {"/data": {}, "/x": {}, "/y": {}}


def test_workdir_user_stopsignal() -> None:
    config = config_after("WORKDIR /w", "WORKDIR sub", "USER 1000:1000", "STOPSIGNAL SIGTERM")
    assert config["WorkingDir"] == "/w/sub"
    assert config["User"] == "1000:1000"
    assert config["StopSignal"] == "SIGTERM"


def test_input_config_is_not_modified() -> None:
    original: dict[str, Any] = {"config": {"Env": ["A=1"]}}
    apply_changes(original, ["ENV B=2"])
    assert original == {"config": {"Env": ["A=1"]}}


def test_missing_config_section_is_created() -> None:
    assert apply_changes({}, ["USER nobody"]) == {"config": {"User": "nobody"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("FOO bar", "invalid instruction FOO"),
        ("CMD", "must be formatted as KEY VALUE"),
        ("CMD   ", "must be formatted as KEY VALUE"),
        ("EXPOSE http", "invalid port"),
        ("EXPOSE 80/xyz", "invalid port"),
        ("ENV =x", "is not KEY=VALUE"),
        ("ENV A", "KEY VALUE"),
        ('LABEL a="unterminated', "No closing quotation"),
    ],
)
def test_bad_changes(change: str, message: str) -> None:
    with pytest.raises(RlError, match=message):
        apply_changes({}, [change])


def test_parse_change_accepts_both_separators() -> None:
    assert parse_change("cmd=sh") == ("CMD", "sh")
    assert parse_change("WORKDIR   /x ") == ("WORKDIR", "/x")
