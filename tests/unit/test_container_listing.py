"""rootless.containers.listing: ps filters, selection, status text, ports, rows, prune and wait
rules. Expected strings are podman 4.3's, measured on this machine."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rootless.containers import listing
from rootless.containers.store import Container
from rootless.errors import RlError

NOW = 1_800_000_000.0
IMAGE_ID = "5d77b4ecbf69634b7370cf8b2900ef182fa937691a7d2b32016c58d2060b1a29"


def ctr(name: str = "web", **kw: Any) -> Container:
    fields: dict[str, Any] = {
        "id": (name.encode().hex() * 64)[:64],
        "name": name,
        "image_id": IMAGE_ID,
        "image_name": "localhost/rl-test/busybox:latest",
        "command": ["sh", "-c", "exit 3"],
        "created": NOW - 100,
    }
    fields.update(kw)
    return Container(**fields)


def running(name: str = "up", **kw: Any) -> Container:
    return ctr(name, state="running", started=NOW - 5, container_pid=42, **kw)


def exited(name: str = "down", code: int | None = 0, **kw: Any) -> Container:
    return ctr(name, state="exited", exit_code=code, started=NOW - 10, finished=NOW - 3, **kw)


# --- status text --------------------------------------------------------------------------


def test_status_of_each_state() -> None:
    assert listing.status_text(running(), NOW) == "Up 5 seconds ago"
    assert listing.status_text(exited(code=3), NOW) == "Exited (3) 3 seconds ago"
    assert listing.status_text(ctr(), NOW) == "Created"
    assert listing.status_text(ctr(state="restarting"), NOW) == "Restarting"
    assert listing.status_text(ctr(state="paused"), NOW) == "Paused"


def test_unknown_exit_code_reads_minus_one() -> None:
    record = exited(code=None)
    assert listing.status_text(record, NOW) == "Exited (-1) 3 seconds ago"
    assert listing.exit_code(record) == -1
    assert listing.exit_code(ctr()) == 0  # never ran: podman's 0


def test_health_follows_the_status_even_after_exit() -> None:
    healthy = running(health={"Status": "healthy", "FailingStreak": 0, "Log": []})
    assert listing.status_text(healthy, NOW) == "Up 5 seconds ago (healthy)"
    assert listing.state_text(healthy, NOW) == "Up 5 seconds ago"
    starting = exited(code=3, health={"Status": "starting"})
    assert listing.status_text(starting, NOW) == "Exited (3) 3 seconds ago (starting)"
    assert listing.status_text(running(health={"Status": "unhealthy"}), NOW).endswith("(unhealthy)")


# --- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["status"], 'invalid filter "status"'),
        (["foo=bar"], "foo is an invalid filter"),
        (["status=bogus"], "unknown container state: bogus: invalid argument"),
        (["exited=abc"], 'exited code out of range "abc"'),
        (["name=("], "invalid name filter"),
        (["health=sick"], "not a valid health status"),
    ],
)
def test_bad_filters(values: list[str], message: str) -> None:
    with pytest.raises(RlError, match=message.replace("(", r"\(")):
        listing.parse_filters(values)


def test_parse_filters_groups_values_by_key() -> None:
    parsed = listing.parse_filters(["status=exited", "status=created", "name=a"])
    assert parsed == {"status": ["exited", "created"], "name": ["a"]}


def _names(records: list[Container], *filters: str, **kw: Any) -> list[str]:
    return [r.name for r in listing.select(records, filters=listing.parse_filters(filters), **kw)]


def test_same_key_or_different_keys_and() -> None:
    records = [exited("a", code=1), exited("b", code=3), ctr("c"), running("d")]
    assert _names(records, "status=exited", "status=created") == ["a", "b", "c"]
    assert _names(records, "status=exited", "exited=3") == ["b"]
    assert _names(records, "name=a", "name=c", all_states=True) == ["a", "c"]
    assert _names(records, "name=^a$", "status=created") == []


def test_label_values_must_all_match() -> None:
    both = ctr("both", labels={"x": "1", "y": "2"})
    only_x = ctr("onlyx", labels={"x": "1"})
    assert _names([both, only_x], "label=x", all_states=True) == ["both", "onlyx"]
    assert _names([both, only_x], "label=x=1", "label=y", all_states=True) == ["both"]
    assert _names([both, only_x], "label=x=2", all_states=True) == []
    assert _names([both, only_x], "label=*", all_states=True) == ["both", "onlyx"]


def test_labels_of_merges_image_labels() -> None:
    record = ctr("a")
    found = listing.select(
        [record],
        all_states=True,
        filters={"label": ["org.rl.test=yes"]},
        labels_of=lambda r: {"org.rl.test": "yes", **r.labels},
    )
    assert found == [record]


def test_status_filter_lists_every_state_without_all() -> None:
    records = [exited("a"), running("b")]
    assert _names(records) == ["b"]
    assert _names(records, "status=exited") == ["a"]
    assert _names(records, "status=stopped") == ["a"]
    assert _names(records, "name=a") == []  # other filters keep running-only


def test_id_ancestor_health_filters() -> None:
    a, b = exited("a"), exited("b", image_name="docker.io/library/alpine:3")
    assert _names([a, b], f"id={a.id[:6]}", all_states=True) == ["a"]
    assert _names([a, b], "ancestor=localhost/rl-test/busybox", all_states=True) == ["a"]
    assert _names([a, b], "ancestor=localhost/rl-test/busybox:latest", all_states=True) == ["a"]
    assert _names([a, b], "ancestor=busybox", all_states=True) == []
    assert _names([a, b], f"ancestor={IMAGE_ID}", all_states=True) == ["a", "b"]
    assert _names([a, b], "ancestor=docker.io/library/alpine", all_states=True) == []
    sick = running("sick", health={"Status": "unhealthy"})
    assert _names([sick, running("plain")], "health=unhealthy") == ["sick"]
    assert _names([sick, running("plain")], "health=none") == ["plain"]


def test_before_and_since() -> None:
    old, mid, new = ctr("old", created=1.0), ctr("mid", created=2.0), ctr("new", created=3.0)
    created = {"mid": 2.0}
    kw: dict[str, Any] = {"all_states": True, "created_of": created.get}
    assert _names([old, mid, new], "before=mid", **kw) == ["old"]
    assert _names([old, mid, new], "since=mid", **kw) == ["new"]
    with pytest.raises(RlError, match="no such container"):
        _names([old], "since=nosuch", **kw)


def test_order_last_and_latest() -> None:
    records = [ctr("c", created=3.0), running("a", created=1.0), exited("b", created=2.0)]
    assert _names(records, all_states=True) == ["a", "b", "c"]  # oldest first, as podman
    assert _names(records, last=2) == ["b", "c"]  # -n implies all states
    assert _names(records, latest=True) == ["c"]
    assert _names(records, "status=exited", last=5) == ["b"]


# --- ports --------------------------------------------------------------------------------


def test_parse_publish_forms() -> None:
    assert listing.parse_publish("8080:80") == [
        {"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1, "protocol": "tcp"}
    ]
    [udp] = listing.parse_publish("127.0.0.1:9000:90/udp")
    assert (udp["host_ip"], udp["host_port"], udp["protocol"]) == ("127.0.0.1", 9000, "udp")
    [ranged] = listing.parse_publish("18090-18091:90-91")
    assert (ranged["host_port"], ranged["container_port"], ranged["range"]) == (18090, 90, 2)
    [bare] = listing.parse_publish("80")
    assert bare["host_port"] == 0
    both = listing.parse_publish("[::1]:53:53/tcp,udp")
    assert [m["protocol"] for m in both] == ["tcp", "udp"]
    assert both[0]["host_ip"] == "::1"
    assert listing.parse_publish("0.0.0.0:1:2")[0]["host_ip"] == ""


@pytest.mark.parametrize("spec", ["80/xyz", "1-3:1-2", "a:80", "1:2:3:4", "70000", ""])
def test_parse_publish_rejects(spec: str) -> None:
    with pytest.raises(RlError):
        listing.parse_publish(spec)


def test_ports_text_and_port_lines() -> None:
    config = {"publish": ["18080:80", "127.0.0.1:18081:81/udp", "18090-18091:90-91"]}
    mappings = listing.port_mappings(config)
    assert listing.ports_text(mappings) == (
        "0.0.0.0:18080->80/tcp, 127.0.0.1:18081->81/udp, 0.0.0.0:18090-18091->90-91/tcp"
    )
    assert listing.port_lines(mappings) == [
        ("80/tcp", "0.0.0.0:18080"),
        ("81/udp", "127.0.0.1:18081"),
        ("90/tcp", "0.0.0.0:18090"),
        ("91/tcp", "0.0.0.0:18091"),
    ]
    assert listing.ports_text([]) == ""
    recorded = {"host_ip": "", "container_port": 1, "host_port": 2, "range": 1, "protocol": "tcp"}
    assert listing.port_mappings({"publish": [recorded]}) == [recorded]


def test_private_port() -> None:
    assert listing.parse_private_port("80") == "80/tcp"
    assert listing.parse_private_port("81/udp") == "81/udp"
    with pytest.raises(RlError, match="invalid syntax"):
        listing.parse_private_port("abc")
    with pytest.raises(RlError, match="port/protocol"):
        listing.parse_private_port("1/tcp/x")


# --- rows ---------------------------------------------------------------------------------


def test_template_row_truncates_unless_asked() -> None:
    record = exited("a", command=["sh", "-c", "echo a; echo b; sleep 1"])
    row = listing.template_row(record, NOW)
    assert row["ID"] == record.id[:12]
    assert row["ImageID"] == IMAGE_ID[:12]
    assert row["Command"] == "sh -c echo a; ech..."
    assert row["CreatedHuman"] == "About a minute ago"
    assert row["Status"] == "Exited (0) 3 seconds ago"
    full = listing.template_row(record, NOW, no_trunc=True, size=(12, 1986004))
    assert full["ID"] == record.id and full["Command"] == "sh -c echo a; echo b; sleep 1"
    assert full["Size"] == "12B (virtual 1.99MB)"
    assert listing.template_row(running(), NOW)["Pid"] == 42
    assert listing.template_row(exited(), NOW)["ExitedAt"] == int(NOW - 3)
    assert listing.template_row(ctr(), NOW)["ExitedAt"] == listing.GO_ZERO_UNIX


def test_json_row_shape() -> None:
    record = running("a", labels={"z": "1", "a": "2"}, config={"publish": ["8080:80"]})
    row = listing.json_row(record, NOW, size=(12, 100), mounts=["/data"])
    assert row["Names"] == ["a"] and row["Id"] == record.id
    assert row["Command"] == record.command and row["State"] == "running"
    assert list(row["Labels"]) == ["a", "z"]
    assert row["Ports"][0]["host_port"] == 8080
    assert row["Size"] == {"rootFsSize": 100, "rwSize": 12}
    assert row["Mounts"] == ["/data"]
    assert row["Created"] == int(NOW - 100)
    assert listing.json_row(ctr(), NOW)["Ports"] is None
    assert listing.json_row(ctr(), NOW)["Labels"] is None


def test_go_time() -> None:
    assert listing.go_time(0.5) == "1970-01-01 00:00:00.5 +0000 UTC"
    assert listing.go_time(60.0) == "1970-01-01 00:01:00 +0000 UTC"


def test_mount_destinations_leave_out_rls_own() -> None:
    spec = {
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/etc/hosts", "type": "bind", "source": "/s/c/userdata/hosts"},
            {"destination": "/mnt", "type": "bind", "source": "/tmp/x"},
            {"destination": "/t", "type": "tmpfs", "source": "tmpfs"},
        ]
    }
    assert listing.mount_destinations(spec, "/s/c/userdata") == ["/mnt", "/t"]


def test_sort_rows() -> None:
    records = [ctr("b", created=1.0), ctr("a", created=2.0)]
    assert [r.name for r in listing.sort_rows(records, "names", NOW)] == ["a", "b"]
    with pytest.raises(RlError, match="invalid option for --sort"):
        listing.sort_rows(records, "bogus", NOW)


# --- durations, prune, wait ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("0", 0.0), ("2us", 2e-6)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert listing.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "s", "1h 2m"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(RlError, match="invalid duration"):
        listing.parse_go_duration(text)


def test_wait_interval_bare_number_is_milliseconds() -> None:
    assert listing.parse_interval("100") == pytest.approx(0.1)
    assert listing.parse_interval("2s") == 2.0


def test_prune_rules() -> None:
    filters = listing.parse_prune_filters(["label=keep=no"])
    assert listing.prunable(exited("a"), {}, {}, NOW)
    assert listing.prunable(ctr("c"), {}, {}, NOW)
    assert not listing.prunable(running("r"), {}, {}, NOW)
    assert not listing.prunable(ctr(state="restarting"), {}, {}, NOW)
    assert listing.prunable(exited("a"), filters, {"keep": "no"}, NOW)
    assert not listing.prunable(exited("a"), filters, {"keep": "yes"}, NOW)
    negated = listing.parse_prune_filters(["label!=keep"])
    assert not listing.prunable(exited("a"), negated, {"keep": "1"}, NOW)
    assert listing.prunable(exited("a"), negated, {}, NOW)
    until = listing.parse_prune_filters(["until=1h"])
    assert not listing.prunable(exited("a"), until, {}, NOW)  # created 100 s ago
    assert listing.prunable(exited("a", created=NOW - 7200), until, {}, NOW)
    assert listing.parse_until("1970-01-01T00:01:00Z", NOW) == 60.0
    assert listing.parse_until("120", NOW) == 120.0
    with pytest.raises(RlError, match="bogus is an invalid filter"):
        listing.parse_prune_filters(["bogus=1"])


def test_wait_conditions() -> None:
    assert listing.parse_conditions([]) == ["stopped"]
    assert listing.parse_conditions(["exited,running"]) == ["exited", "running"]
    with pytest.raises(RlError, match="unknown container state: bogus: invalid argument"):
        listing.parse_conditions(["bogus"])
    stopped = ["stopped"]
    assert listing.wait_result(exited(code=3), stopped) == 3
    assert listing.wait_result(exited(code=None), stopped) == -1
    assert listing.wait_result(ctr(), stopped) == 0  # never started: podman returns at once
    assert listing.wait_result(running(), stopped) is None
    assert listing.wait_result(ctr(state="restarting"), ["exited"]) is None
    assert listing.wait_result(running(), ["running"]) == -1
    assert listing.wait_result(ctr(), ["created"]) == -1
    assert listing.wait_result(running(health={"Status": "healthy"}), ["healthy"]) == -1
    assert listing.wait_result(running(health={"Status": "starting"}), ["healthy"]) is None


def test_default_table_is_the_default_template() -> None:
    from rootless.cli.containers import _default_table
    from rootless.gotemplate import render_table

    rows = [
        listing.template_row(r, NOW, size=(12, 2_000_000))
        for r in (exited("a", code=3), running("b", config={"publish": ["8080:80"]}), ctr("c"))
    ]
    for size in (False, True):
        template = "table " + listing.DEFAULT_ROW + ("\t{{.Size}}" if size else "")
        for heading in (True, False):
            expected = render_table(template, rows, listing.HEADERS, heading=heading)
            assert _default_table(rows, size=size, heading=heading) == expected
    header = _default_table([], size=False, heading=True)
    assert re.split(r"\s{2,}", header.strip()) == [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
