"""Healthchecks' pure parts: podman's flag parsing, Go durations, the State.Health state
machine, the on-failure decision and the schedule. Expected values come from podman 4.3 on
this machine (`podman create --health-* …` then `podman inspect`)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from rootless.cli.health import add_health_flags, health_from_args
from rootless.errors import RlError
from rootless.monitor import health
from rootless.monitor.health import HealthConfig

SHELL = HealthConfig(test=["CMD-SHELL", "test -e /tmp/ok"])

# --- Go durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("30s", 30_000_000_000),
        ("1m30s", 90_000_000_000),
        ("500ms", 500_000_000),
        ("1.5h", 5_400_000_000_000),
        ("2h45m", 9_900_000_000_000),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("100us", 100_000),
        ("100µs", 100_000),
        ("7ns", 7),
        ("-1s", -1_000_000_000),
        ("+2s", 2_000_000_000),
        ("1h1m1s1ms", 3_661_001_000_000),
    ],
)
def test_parse_duration_like_go(text: str, ns: int) -> None:
    assert health.parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", 'time: missing unit in duration "10"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("", 'time: invalid duration ""'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        ("1s ", 'time: unknown unit "s " in duration "1s "'),
        ("5 s", 'time: unknown unit " s" in duration "5 s"'),
        ("abc", 'time: invalid duration "abc"'),
        ("99999999999h", 'time: invalid duration "99999999999h"'),
        ("00", 'time: missing unit in duration "00"'),
    ],
)
def test_parse_duration_errors_in_go_words(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        health.parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (30_000_000_000, "30s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (500_000_000, "500ms"),
        (1_500_000_000, "1.5s"),
        (1_500_000, "1.5ms"),
        (2_000, "2µs"),
        (7, "7ns"),
        (-1_000_000_000, "-1s"),
    ],
)
def test_format_duration_like_go(ns: int, text: str) -> None:
    assert health.format_duration(ns) == text


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "test"),
    [
        ("echo  a", ["CMD-SHELL", "echo  a"]),
        ("CMD echo  a b", ["CMD", "echo", "a", "b"]),
        ("cmd echo a", ["CMD", "echo", "a"]),
        ("CMD-SHELL echo  a", ["CMD-SHELL", "echo  a"]),
        ('["echo a"]', ["CMD-SHELL", "echo a"]),
        ('["nosuchcmd", "x"]', ["CMD", "nosuchcmd", "x"]),
        ('["CMD-SHELL", "x y"]', ["CMD-SHELL", "x y"]),
        ('["CMD", "true"]', ["CMD", "true"]),
        ("none", ["NONE"]),
        ('"quoted"', ["CMD-SHELL", '"quoted"']),  # JSON, but not an array: a shell command
    ],
)
def test_health_cmd_forms_as_podman_stores_them(cmd: str, test: list[str]) -> None:
    assert health.parse_test(cmd) == test


def test_empty_json_array_is_refused() -> None:
    with pytest.raises(RlError, match="must define a healthcheck command for all healthchecks"):
        health.parse_test("[]")


def _flags(**given: Any) -> HealthConfig | None:
    values: dict[str, Any] = {
        "cmd": None,
        "interval": None,
        "timeout": None,
        "retries": None,
        "start_period": None,
        "on_failure": None,
        "no_healthcheck": False,
        "image_healthcheck": None,
    }
    values.update(given)
    return health.config_from_flags(**values)


def test_health_cmd_alone_gets_podman_defaults() -> None:
    assert _flags(cmd="true") == HealthConfig(
        test=["CMD-SHELL", "true"],
        interval=30.0,
        timeout=30.0,
        start_period=0.0,
        retries=3,
        on_failure="none",
    )


def test_flags_set_every_field() -> None:
    config = _flags(
        cmd="curl -f http://localhost/",
        interval="1m30s",
        timeout="500ms",
        retries=5,
        start_period="2.5s",
        on_failure="kill",
    )
    assert config == HealthConfig(
        test=["CMD-SHELL", "curl -f http://localhost/"],
        interval=90.0,
        timeout=0.5,
        start_period=2.5,
        retries=5,
        on_failure="kill",
    )
    assert config.inspect() == {
        "Test": ["CMD-SHELL", "curl -f http://localhost/"],
        "StartPeriod": 2_500_000_000,
        "Interval": 90_000_000_000,
        "Timeout": 500_000_000,
        "Retries": 5,
    }


def test_interval_disable_means_no_automatic_checks() -> None:
    config = _flags(cmd="true", interval="disable")
    assert config is not None and config.interval == 0
    assert "Interval" not in config.inspect()  # podman shows no Interval then
    assert health.schedule(config, now=100.0, started_at=100.0, last_run=None) is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"interval": "1x"},
            'invalid healthcheck-interval: time: unknown unit "x" in duration "1x"',
        ),
        ({"interval": "10"}, 'invalid healthcheck-interval: time: missing unit in duration "10"'),
        ({"interval": ""}, 'invalid healthcheck-interval: time: invalid duration ""'),
        ({"timeout": "0s"}, "healthcheck-timeout must be at least 1 second"),
        ({"timeout": "soon"}, 'invalid healthcheck-timeout: time: invalid duration "soon"'),
        ({"retries": 0}, "healthcheck-retries must be greater than 0"),
        ({"start_period": "-1s"}, "healthcheck-start-period must be 0 seconds or greater"),
        ({"no_healthcheck": True}, "cannot specify both --no-healthcheck and --health-cmd"),
        (
            {"on_failure": "bogus"},
            'invalid on-failure action "bogus" for health check: supported actions are '
            "none,kill,restart,stop",
        ),
    ],
)
def test_bad_flags_fail_in_podman_words(given: dict[str, Any], message: str) -> None:
    with pytest.raises(RlError) as info:
        _flags(cmd="true", **given)
    assert info.value.message == message
    assert info.value.exit_code == 125


IMAGE_CHECK = {
    "Test": ["CMD-SHELL", "wget -q -O- http://localhost/"],
    "Interval": 5_000_000_000,
    "StartPeriod": 1_000_000_000,
    "Retries": 2,
}


def test_image_healthcheck_is_the_default_with_podmans_defaults_for_zeros() -> None:
    assert _flags(image_healthcheck=IMAGE_CHECK) == HealthConfig(
        test=["CMD-SHELL", "wget -q -O- http://localhost/"],
        interval=5.0,
        timeout=30.0,  # Timeout 0 -> podman's default
        start_period=1.0,
        retries=2,
    )
    # Docker's builder writes Retries 0 when HEALTHCHECK had no --retries.
    zero = _flags(image_healthcheck={"Test": ["CMD", "true"], "Retries": 0})
    assert zero is not None and zero.retries == 3 and zero.interval == 30.0


def test_flags_override_the_image_and_health_cmd_replaces_it() -> None:
    config = _flags(image_healthcheck=IMAGE_CHECK, retries=7, on_failure="restart")
    assert config is not None
    assert (config.test, config.interval, config.retries, config.on_failure) == (
        IMAGE_CHECK["Test"],
        5.0,
        7,
        "restart",
    )
    replaced = _flags(image_healthcheck=IMAGE_CHECK, cmd="true")
    assert replaced == HealthConfig(test=["CMD-SHELL", "true"])  # the image's fields are gone


def test_healthcheck_disabled_or_absent() -> None:
    assert _flags() is None
    assert _flags(interval="5s") is None  # flags without any command: nothing to check
    assert _flags(cmd="none") is None
    with pytest.raises(RlError):  # validated like podman, then disabled
        _flags(cmd="none", timeout="0s")
    assert _flags(no_healthcheck=True, image_healthcheck=IMAGE_CHECK) is None
    assert _flags(image_healthcheck={"Test": ["NONE"]}) is None
    assert _flags(image_healthcheck={"Test": []}) is None


def test_json_round_trip() -> None:
    config = HealthConfig(["CMD", "true"], 2.0, 1.0, 3.0, 4, "stop")
    assert HealthConfig.from_json(config.to_json()) == config
    assert config.to_json()["test"] == ["CMD", "true"]


@pytest.mark.parametrize(
    ("test", "argv"),
    [
        (["CMD-SHELL", "test -e /tmp/ok"], ["/bin/sh", "-c", "test -e /tmp/ok"]),
        (["CMD-SHELL", "a", "b"], ["/bin/sh", "-c", "a b"]),
        (["CMD", "true", "x"], ["true", "x"]),
        (["/bin/true"], ["/bin/true"]),
        (["NONE"], []),
        (["CMD"], []),
        ([], []),
    ],
)
def test_command_run_in_the_container(test: list[str], argv: list[str]) -> None:
    assert HealthConfig(test=test).command() == argv


def test_rl_run_flags_through_argparse() -> None:
    parser = argparse.ArgumentParser()
    add_health_flags(parser)
    args = parser.parse_args(
        ["--health-cmd", "true", "--health-retries", "2", "--health-interval", "1s"]
    )
    assert health_from_args(args, None) == {
        "test": ["CMD-SHELL", "true"],
        "interval": 1.0,
        "timeout": 30.0,
        "start_period": 0.0,
        "retries": 2,
        "on_failure": "none",
    }
    image = {"config": {"Healthcheck": IMAGE_CHECK}}  # a whole image config
    assert health_from_args(parser.parse_args([]), image) is not None
    assert health_from_args(parser.parse_args(["--no-healthcheck"]), image) is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--health-retries", "-1"])


# --- the state machine ----------------------------------------------------------------------


def _check(
    state: dict[str, Any] | None,
    code: int,
    config: HealthConfig = SHELL,
    at: float = 1000.0,
    started_at: float = 0.0,
    output: bytes | str = b"",
) -> dict[str, Any]:
    return health.next_state(state, code, output, at, at + 0.1, started_at, config)


def test_retries_consecutive_failures_make_it_unhealthy_one_pass_heals() -> None:
    config = SHELL._replace(retries=3)
    state = health.started_state(None)
    assert state == {"Status": "starting", "FailingStreak": 0, "Log": None}
    state = _check(state, 1, config)
    assert (state["Status"], state["FailingStreak"]) == ("starting", 1)
    state = _check(state, 1, config)
    assert (state["Status"], state["FailingStreak"]) == ("starting", 2)
    state = _check(state, 1, config)
    assert (state["Status"], state["FailingStreak"]) == ("unhealthy", 3)
    state = _check(state, 1, config)
    assert (state["Status"], state["FailingStreak"]) == ("unhealthy", 4)
    state = _check(state, 0, config)
    assert (state["Status"], state["FailingStreak"]) == ("healthy", 0)
    state = _check(state, 1, config)
    assert (state["Status"], state["FailingStreak"]) == ("healthy", 1)  # not yet unhealthy


def test_a_first_pass_makes_it_healthy_and_timeouts_count_as_failures() -> None:
    state = _check(None, 0)
    assert state["Status"] == "healthy"
    config = SHELL._replace(retries=1)
    state = _check(state, health.CHECK_TIMED_OUT, config)
    assert state["Status"] == "unhealthy"
    assert state["Log"][-1]["ExitCode"] == -1


def test_failures_in_the_start_period_are_logged_but_not_counted() -> None:
    config = SHELL._replace(retries=1, start_period=10.0)
    state = health.started_state(None)
    state = _check(state, 1, config, at=105.0, started_at=100.0)
    assert (state["Status"], state["FailingStreak"], len(state["Log"])) == ("starting", 0, 1)
    # A pass within the start period counts: healthy at once.
    passed = _check(state, 0, config, at=106.0, started_at=100.0)
    assert passed["Status"] == "healthy"
    # After it, failures count again (a check that began at started_at + period is outside).
    state = _check(state, 1, config, at=110.0, started_at=100.0)
    assert (state["Status"], state["FailingStreak"]) == ("unhealthy", 1)


def test_log_keeps_the_last_five_with_podmans_output_form() -> None:
    state: dict[str, Any] | None = None
    for i in range(7):
        state = _check(state, i % 2, at=1000.0 + i, output=f"run {i}\r\nline\n".encode())
    assert state is not None
    assert [entry["Output"] for entry in state["Log"]] == [f"run {i}\nline" for i in range(2, 7)]
    assert [entry["ExitCode"] for entry in state["Log"]] == [0, 1, 0, 1, 0]
    entry = state["Log"][-1]
    assert set(entry) == {"Start", "End", "ExitCode", "Output"}
    assert entry["Start"].endswith(("Z", ":00")) and "T" in entry["Start"]


def test_output_is_cut_to_500_bytes() -> None:
    data = "".join(f"{n}\n" for n in range(1, 401)).encode()
    text = health.log_output(data)
    assert len(text) == 500
    assert text.endswith("151\n152\n")  # podman 4.3 measured: `seq 1 400`
    state = _check(None, 0, output="x" * 2000)
    assert len(state["Log"][0]["Output"]) == 500


def test_restart_resets_status_and_streak_keeps_log() -> None:
    state = _check(_check(None, 1, SHELL._replace(retries=1)), 1, SHELL._replace(retries=1))
    assert state["Status"] == "unhealthy"
    restarted = health.started_state(state)
    assert restarted["Status"] == "starting"
    assert restarted["FailingStreak"] == 0
    assert restarted["Log"] == state["Log"]


def test_rfc3339_nano_like_go(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert health.rfc3339_nano(1_700_000_000.25) == "2023-11-14T22:13:20.25Z"
        assert health.rfc3339_nano(1_700_000_000.0) == "2023-11-14T22:13:20Z"
        monkeypatch.setenv("TZ", "Europe/Berlin")
        time.tzset()
        assert health.rfc3339_nano(1_700_000_000.123456) == "2023-11-14T23:13:20.123456+01:00"
    finally:
        monkeypatch.undo()
        time.tzset()


# --- on failure ------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["kill", "restart", "stop"])
def test_failure_action_when_it_turns_unhealthy(action: str) -> None:
    config = SHELL._replace(retries=2, on_failure=action)
    first = _check(health.started_state(None), 1, config)
    assert health.failure_action(None, first, config) is None  # still within retries
    second = _check(first, 1, config)
    assert health.failure_action(first, second, config) == action
    healed = _check(second, 0, config)
    assert health.failure_action(second, healed, config) is None


def test_no_failure_action_by_default() -> None:
    config = SHELL._replace(retries=1)
    assert health.failure_action(None, _check(None, 1, config), config) is None


# --- the schedule ----------------------------------------------------------------------------


def test_schedule_first_check_one_interval_after_start_then_after_each_check_ends() -> None:
    config = SHELL._replace(interval=30.0)
    assert health.schedule(config, now=100.0, started_at=100.0, last_run=None) == 130.0
    assert health.schedule(config, now=131.0, started_at=100.0, last_run=131.5) == 161.5
    # overdue (the monitor was stopped, the clock jumped): now
    assert health.schedule(config, now=500.0, started_at=100.0, last_run=131.5) == 500.0
    none = HealthConfig(test=["NONE"])
    assert health.schedule(none, now=100.0, started_at=100.0, last_run=None) is None
