"""rootless.systemd.notify: sd_notify messages, the sender (against a real AF_UNIX datagram
socket, as systemd's), --sdnotify's policy and the monitor's pid file."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.systemd import notify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A socket like systemd's notify socket: datagrams, sender credentials on."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def _receive(sock: socket.socket) -> tuple[bytes, int | None]:
    data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    return data, pid


def _nothing_queued(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        sock.recv(4096)
    except TimeoutError:
        return True
    return False


# --- messages -----------------------------------------------------------------------------


def test_message_is_newline_separated_assignments_in_order() -> None:
    assert notify.build_message(MAINPID=42, READY=1) == b"MAINPID=42\nREADY=1\n"
    assert notify.build_message(("STATUS", "up and running")) == b"STATUS=up and running\n"


@pytest.mark.parametrize(
    "fields", [{"": "1"}, {"A=B": "1"}, {"STATUS": "two\nlines"}, {"A\nB": "1"}]
)
def test_message_refuses_fields_that_would_change_meaning(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        notify.build_message(*fields.items())


def test_parse_message_round_trips() -> None:
    data = notify.build_message(MAINPID=7, READY=1, STATUS="a=b")
    assert notify.parse_message(data) == {"MAINPID": "7", "READY": "1", "STATUS": "a=b"}


def test_socket_address_path_abstract_and_junk() -> None:
    assert notify.socket_address("/run/user/1000/systemd/notify") == "/run/user/1000/systemd/notify"
    assert notify.socket_address("@/org/freedesktop/systemd1/notify") == (
        b"\0/org/freedesktop/systemd1/notify"
    )
    assert notify.socket_address(None) is None
    assert notify.socket_address("") is None
    assert notify.socket_address("relative/notify") is None


# --- the sender, for real -----------------------------------------------------------------


def test_send_delivers_one_datagram_with_our_pid(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert notify.send(notify.build_message(READY=1), path)
    data, pid = _receive(sock)
    assert data == b"READY=1\n"
    assert pid == os.getpid()  # what systemd uses to attribute the message to the unit


def test_notify_reads_the_socket_from_the_environment(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert notify.notify({"NOTIFY_SOCKET": path}, READY=1, STATUS="ok")
    assert notify.parse_message(_receive(sock)[0]) == {"READY": "1", "STATUS": "ok"}


def test_send_to_an_abstract_socket() -> None:
    name = f"rl-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert notify.notify({"NOTIFY_SOCKET": "@" + name}, READY=1)
        assert sock.recv(4096) == b"READY=1\n"


def test_send_without_socket_or_listener_is_false_not_an_error(tmp_path: Path) -> None:
    assert notify.notify({}, READY=1) is False
    assert notify.send(b"READY=1\n", str(tmp_path / "nobody-listens")) is False


# --- --sdnotify ---------------------------------------------------------------------------


def test_parse_sdnotify() -> None:
    assert [notify.parse_sdnotify(m) for m in ("container", "conmon", "ignore")] == [
        "container",
        "conmon",
        "ignore",
    ]
    with pytest.raises(RlError, match="--sdnotify"):
        notify.parse_sdnotify("systemd")


def test_started_messages_per_mode() -> None:
    assert notify.started_messages("conmon", 10, True) == b"MAINPID=10\nREADY=1\n"
    # container: the container says READY itself; systemd must still follow the monitor
    assert notify.started_messages("container", 10, True) == b"MAINPID=10\n"
    assert notify.started_messages("ignore", 10, True) is None
    assert notify.started_messages("conmon", 10, False) is None


def test_mode_defaults_to_container() -> None:
    assert notify.mode_of({}) == "container"
    assert notify.mode_of({"sdnotify": None}) == "container"
    assert notify.mode_of({"sdnotify": "conmon"}) == "conmon"
    assert notify.mode_of({"sdnotify": "bogus"}) == "container"


def _spec() -> dict[str, object]:
    return {
        "process": {"env": ["PATH=/bin", "NOTIFY_SOCKET=/stale"]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    }


def test_container_mode_bind_mounts_the_socket_and_sets_the_variable() -> None:
    spec = notify.spec_with_socket(_spec(), {}, "/run/user/1000/systemd/notify")
    mounts = spec["mounts"]
    assert mounts[0]["destination"] == "/proc"
    assert mounts[-1] == {
        "destination": "/run/notify/notify.sock",
        "type": "bind",
        "source": "/run/user/1000/systemd/notify",
        "options": ["bind", "rprivate"],
    }
    assert spec["process"]["env"] == ["PATH=/bin", "NOTIFY_SOCKET=/run/notify/notify.sock"]
    # applied twice (a restart): still one mount
    again = notify.spec_with_socket(spec, {}, "/run/user/1000/systemd/notify")
    assert [m["destination"] for m in again["mounts"]].count("/run/notify/notify.sock") == 1


@pytest.mark.parametrize(
    ("config", "socket_value"),
    [
        ({"sdnotify": "conmon"}, "/run/user/1000/systemd/notify"),
        ({"sdnotify": "ignore"}, "/run/user/1000/systemd/notify"),
        ({}, None),
        ({}, "@abstract"),  # bound to the host's network namespace: cannot be passed in
    ],
)
def test_socket_not_passed_into_the_container(
    config: dict[str, str], socket_value: str | None
) -> None:
    spec = notify.spec_with_socket(_spec(), config, socket_value)
    assert spec == _spec()


def test_ignore_drops_notify_socket_from_the_monitor() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "HOME": "/h"}
    spec = notify.container_spec(_spec(), {"sdnotify": "ignore"}, env)
    assert env == {"HOME": "/h"}
    assert spec == _spec()


# --- the monitor's call: pid file and MAINPID/READY -----------------------------------------


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return run


def test_container_started_writes_the_pid_file_and_notifies(
    runtime: Path, receiver: tuple[socket.socket, str]
) -> None:
    sock, path = receiver
    notify.container_started("abc", {"sdnotify": "conmon"}, 4242, {"NOTIFY_SOCKET": path})
    pidfile = runtime / "rl" / "containers" / "abc" / "monitor.pid"
    assert notify.pidfile_path("abc") == pidfile
    assert pidfile.read_text() == "4242\n"
    assert notify.parse_message(_receive(sock)[0]) == {"MAINPID": "4242", "READY": "1"}


def test_container_started_without_systemd_only_writes_the_pid_file(
    runtime: Path, receiver: tuple[socket.socket, str]
) -> None:
    sock, _path = receiver
    notify.container_started("abc", {"sdnotify": "conmon"}, 5, {})
    assert (runtime / "rl" / "containers" / "abc" / "monitor.pid").read_text() == "5\n"
    assert _nothing_queued(sock)


def test_container_started_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr("rootless.paths.runtime_dir", lambda: blocker / "rl")  # not a dir
    notify.container_started("abc", {}, 5, {"NOTIFY_SOCKET": str(tmp_path / "gone")})
