"""Healthchecks as podman runs them: the configuration, the status state machine, the schedule.

Sans-IO and standard library only: the monitor imports this (10 MB budget) and so does
`rl healthcheck run` (rootless.cli.health), which runs one check and records its result.

- Configuration: Docker's HealthConfig (Test, Interval, Timeout, StartPeriod, Retries) from
  the image's config, or from --health-cmd and its companion flags (podman's parsing, Go
  durations, podman's error messages), plus --health-on-failure. Stored as `to_json()` in the
  container record's config["healthcheck"].
- State: podman's State.Health {"Status", "FailingStreak", "Log"}. A container starts
  "starting"; one passing check makes it "healthy"; `retries` failing checks in a row make it
  "unhealthy". Failures that begin within the start period are logged but not counted. The
  log keeps the last 5 checks, each with at most 500 bytes of output.
- Schedule: like podman's systemd timer (OnUnitInactiveSec=interval), a check is due one
  interval after the container started, then one interval after the previous check ended.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rootless.errors import RlError

NONE, CMD, CMD_SHELL = "NONE", "CMD", "CMD-SHELL"
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
ON_FAILURE_ACTIONS = ("none", "kill", "restart", "stop")

# podman's defaults (define.DefaultHealthCheck*) and limits (libpod/healthcheck.go).
DEFAULT_INTERVAL = "30s"
DEFAULT_TIMEOUT = "30s"
DEFAULT_RETRIES = 3
DEFAULT_START_PERIOD = "0s"
MAX_LOG_ENTRIES = 5
MAX_OUTPUT_BYTES = 500

# The ExitCode of a Log entry: podman records 0 (passed), 1 (failed, also when the command
# could not be executed), -1 (ran past the timeout), 125 (the check could not be run).
CHECK_PASSED, CHECK_FAILED, CHECK_TIMED_OUT, CHECK_ERROR = 0, 1, -1, 125

_SECOND = 1_000_000_000


class HealthConfig(NamedTuple):
    """A container's healthcheck; durations in seconds."""

    test: list[str]  # Docker's form: ["CMD-SHELL", "cmd"], ["CMD", arg0, ...] or ["NONE"]
    interval: float = 30.0  # 0: no automatic checks (--health-interval disable)
    timeout: float = 30.0
    start_period: float = 0.0
    retries: int = DEFAULT_RETRIES
    on_failure: str = "none"  # none | kill | restart | stop

    def to_json(self) -> dict[str, Any]:
        return {
            "test": list(self.test),
            "interval": self.interval,
            "timeout": self.timeout,
            "start_period": self.start_period,
            "retries": self.retries,
            "on_failure": self.on_failure,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HealthConfig:
        return cls(
            test=[str(word) for word in data.get("test") or [NONE]],
            interval=float(data.get("interval", 30.0)),
            timeout=float(data.get("timeout", 30.0)),
            start_period=float(data.get("start_period", 0.0)),
            retries=int(data.get("retries", DEFAULT_RETRIES)),
            on_failure=str(data.get("on_failure") or "none"),
        )

    def command(self) -> list[str]:
        """The argv the check runs in the container; [] when there is none (podman's switch:
        CMD-SHELL runs through /bin/sh -c, CMD runs its arguments, anything else as is)."""
        if not self.test or self.test[0] in ("", NONE):
            return []
        if self.test[0] == CMD:
            argv = list(self.test[1:])
        elif self.test[0] == CMD_SHELL:
            argv = ["/bin/sh", "-c", " ".join(self.test[1:])]
        else:
            argv = list(self.test)
        return argv if argv and argv[0] else []

    def inspect(self) -> dict[str, Any]:
        """podman inspect's Config.Healthcheck (nanoseconds; zero durations left out)."""
        shown: dict[str, Any] = {"Test": list(self.test)}
        for key, seconds in (
            ("StartPeriod", self.start_period),
            ("Interval", self.interval),
            ("Timeout", self.timeout),
        ):
            if seconds:
                shown[key] = round(seconds * _SECOND)
        if self.retries:
            shown["Retries"] = self.retries
        return shown


# --- Go durations ---------------------------------------------------------------------------

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": _SECOND,
    "m": 60 * _SECOND,
    "h": 3600 * _SECOND,
}
_MAX_DURATION = (1 << 63) - 1


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration ("1m30s", "500ms", "1.5h", "0"): nanoseconds, or ValueError
    with Go's message."""
    invalid = ValueError(f"time: invalid duration {_go_quote(text)}")
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        if not (rest[0] == "." or rest[0].isdigit()):
            raise invalid
        i = 0
        while i < len(rest) and "0" <= rest[i] <= "9":
            i += 1
        whole, rest = rest[:i], rest[i:]
        fraction = ""
        if rest[:1] == ".":
            rest = rest[1:]
            j = 0
            while j < len(rest) and "0" <= rest[j] <= "9":
                j += 1
            fraction, rest = rest[:j], rest[j:]
        if not whole and not fraction:
            raise invalid  # "." or ".s"
        j = 0
        while j < len(rest) and rest[j] != "." and not ("0" <= rest[j] <= "9"):
            j += 1
        if j == 0:
            raise ValueError(f"time: missing unit in duration {_go_quote(text)}")
        unit_name, rest = rest[:j], rest[j:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(
                f"time: unknown unit {_go_quote(unit_name)} in duration {_go_quote(text)}"
            )
        value = int(whole or "0") * unit
        if fraction:
            value += int(fraction) * unit // 10 ** len(fraction)
        total += value
        if total > _MAX_DURATION:
            raise invalid
    return -total if negative else total


def _fraction(value: int, digits: int) -> str:
    """`value` / 10**digits without trailing zeros (Go's fmtFrac and fmtInt)."""
    whole, frac = divmod(value, 10**digits)
    text = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def format_duration(nanoseconds: int) -> str:
    """Go's Duration.String(): "30s", "1m30s", "1h0m0s", "500ms", "1.5s"."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(nanoseconds)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fraction(ns, 3)}µs"
    if ns < _SECOND:
        return f"{sign}{_fraction(ns, 6)}ms"
    minutes, seconds = divmod(ns, 60 * _SECOND)
    text = _fraction(seconds, 9) + "s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        text = f"{minutes}m{text}"
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def seconds_text(seconds: float) -> str:
    return format_duration(round(seconds * _SECOND))


# --- configuration from flags and image -----------------------------------------------------


def parse_test(command: str) -> list[str]:
    """--health-cmd as podman reads it: a JSON array of strings is taken as an argv (or as
    Docker's form when it starts with CMD, CMD-SHELL or NONE; one element is a shell command);
    any other text is a shell command ("CMD ..." split on blanks, "none" disables)."""
    import json

    words: list[str] | None = None
    try:
        parsed = json.loads(command)
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and all(isinstance(word, str) for word in parsed):
        words = parsed
    if words is not None:
        if not words:
            raise RlError("must define a healthcheck command for all healthchecks")
        keyword = words[0].upper()
        if keyword == NONE:
            return [NONE]
        if keyword in (CMD, CMD_SHELL):
            return [keyword, *words[1:]]
        if len(words) > 1:
            return [CMD, *words]
        return [CMD_SHELL, words[0]]
    first, _, rest = command.partition(" ")
    keyword = first.upper()
    if keyword == NONE:
        return [NONE]
    if keyword == CMD:
        return [CMD, *command.split()[1:]]
    if keyword == CMD_SHELL:
        return [CMD_SHELL, rest]
    return [CMD_SHELL, command]


def _flag_duration(flag: str, text: str) -> float:
    if flag == "interval" and text == "disable":
        text = "0"
    try:
        return parse_duration(text) / _SECOND
    except ValueError as exc:
        raise RlError(f"invalid healthcheck-{flag}: {exc}") from None


def parse_on_failure(action: str | None) -> str:
    if action is None or action == "":
        return "none"
    if action not in ON_FAILURE_ACTIONS:
        raise RlError(
            f'invalid on-failure action "{action}" for health check: supported actions are '
            + ",".join(ON_FAILURE_ACTIONS)
        )
    return action


def _checked(config: HealthConfig) -> HealthConfig:
    if config.retries < 1:
        raise RlError("healthcheck-retries must be greater than 0")
    if config.timeout <= 0:
        raise RlError("healthcheck-timeout must be at least 1 second")
    if config.start_period < 0:
        raise RlError("healthcheck-start-period must be 0 seconds or greater")
    return config


def from_image(healthcheck: dict[str, Any] | None) -> HealthConfig | None:
    """The image config's Healthcheck (nanoseconds; zero means the default), None when the
    image has none or disables it."""
    if not healthcheck:
        return None
    test = [str(word) for word in healthcheck.get("Test") or []]
    if not test or test[0] in ("", NONE):
        return None
    return HealthConfig(
        test=test,
        interval=(healthcheck.get("Interval") or 0) / _SECOND or 30.0,
        timeout=(healthcheck.get("Timeout") or 0) / _SECOND or 30.0,
        start_period=max(0, healthcheck.get("StartPeriod") or 0) / _SECOND,
        # Docker's builder stores 0 when HEALTHCHECK gave no --retries; Docker reads it as 3.
        retries=int(healthcheck.get("Retries") or DEFAULT_RETRIES),
    )


def image_healthcheck(image_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Healthcheck of an image config, given whole ({"config": {...}}) or its "config"."""
    if not image_config:
        return None
    found = image_config.get("Healthcheck")
    if found is None and isinstance(image_config.get("config"), dict):
        found = image_config["config"].get("Healthcheck")
    return found if isinstance(found, dict) else None


def config_from_flags(
    cmd: str | None,
    interval: str | None,
    timeout: str | None,
    retries: int | None,
    start_period: str | None,
    on_failure: str | None,
    no_healthcheck: bool,
    image_healthcheck: dict[str, Any] | None,
) -> HealthConfig | None:
    """The container's healthcheck from podman's flags (None for a flag not given) over the
    image's Healthcheck; None when there is none.

    With --health-cmd the flags define it (podman's defaults for those not given); without,
    the image's healthcheck applies, with the flags that were given overriding its fields
    (podman 5; podman 4.3 ignored them). --health-cmd none and --no-healthcheck disable it."""
    action = parse_on_failure(on_failure)
    if cmd:
        if no_healthcheck:
            raise RlError("cannot specify both --no-healthcheck and --health-cmd")
        base = HealthConfig(
            test=parse_test(cmd),
            interval=_flag_duration("interval", DEFAULT_INTERVAL),
            timeout=_flag_duration("timeout", DEFAULT_TIMEOUT),
            start_period=_flag_duration("start-period", DEFAULT_START_PERIOD),
        )
    elif no_healthcheck:
        return None
    else:
        image = from_image(image_healthcheck)
        if image is None:
            return None
        base = image
    config = base._replace(on_failure=action)
    if interval is not None:
        config = config._replace(interval=_flag_duration("interval", interval))
    if retries is not None:
        config = config._replace(retries=retries)
    if timeout is not None:
        config = config._replace(timeout=_flag_duration("timeout", timeout))
    if start_period is not None:
        config = config._replace(start_period=_flag_duration("start-period", start_period))
    _checked(config)
    if config.test[0] == NONE:
        return None
    return config


# --- the state machine ----------------------------------------------------------------------


def rfc3339_nano(timestamp: float) -> str:
    """Go's time.RFC3339Nano in local time (podman's Start and End)."""
    import time

    ns = round(timestamp * 1e6) * 1000  # a float's epoch is good to the microsecond
    seconds, fraction = divmod(ns, _SECOND)
    local = time.localtime(seconds)
    digits = f"{fraction:09d}".rstrip("0")
    offset = time.strftime("%z", local)
    zone = "Z" if offset in ("+0000", "-0000", "") else f"{offset[:3]}:{offset[3:]}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + (f".{digits}" if digits else "") + zone


def log_output(data: bytes) -> str:
    """What podman keeps of a check's stdout+stderr: its lines joined by "\\n" (no trailing
    newline, "\\r\\n" as "\\n"), cut to 500 bytes."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    text = b"\n".join(line[:-1] if line.endswith(b"\r") else line for line in lines)
    return text[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")


def started_state(health: dict[str, Any] | None) -> dict[str, Any]:
    """State.Health when the container (re)starts: "starting", streak reset, log kept."""
    log = list((health or {}).get("Log") or [])
    return {"Status": STARTING, "FailingStreak": 0, "Log": log or None}


def next_state(
    health: dict[str, Any] | None,
    result_exit_code: int,
    output: bytes | str,
    start: float,
    end: float,
    started_at: float | None,
    config: HealthConfig,
) -> dict[str, Any]:
    """State.Health after one check that ran from `start` to `end` (epoch seconds) and whose
    Log ExitCode is `result_exit_code` (CHECK_*); `started_at` is when the container started.

    podman's updateHealthCheckLog: a pass makes it healthy and resets the streak; a failure
    that began in the start period is only logged; any other failure lengthens the streak,
    and a streak of `retries` makes it unhealthy."""
    previous = health or {}
    status = previous.get("Status") or STARTING
    streak = int(previous.get("FailingStreak") or 0)
    in_start_period = (
        config.start_period > 0
        and started_at is not None
        and start < started_at + config.start_period
    )
    if result_exit_code == CHECK_PASSED:
        status, streak = HEALTHY, 0
    elif not in_start_period:
        streak += 1
        if streak >= config.retries:
            status = UNHEALTHY
    text = log_output(output) if isinstance(output, bytes) else output
    if len(text.encode()) > MAX_OUTPUT_BYTES:
        text = text.encode()[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    entry = {
        "Start": rfc3339_nano(start),
        "End": rfc3339_nano(end),
        "ExitCode": result_exit_code,
        "Output": text,
    }
    log = [*(previous.get("Log") or []), entry][-MAX_LOG_ENTRIES:]
    return {"Status": status, "FailingStreak": streak, "Log": log}


def check_exit_code(command_exit: int, timed_out: bool) -> int:
    """The Log ExitCode for a check whose command exited with `command_exit`."""
    if timed_out:
        return CHECK_TIMED_OUT
    return CHECK_PASSED if command_exit == 0 else CHECK_FAILED


def failure_action(
    old: dict[str, Any] | None, new: dict[str, Any], config: HealthConfig
) -> str | None:
    """What to do to the container after a check: "kill", "restart", "stop" or None.

    Like podman's processHealthCheckStatus, the action applies after every check that leaves
    the container unhealthy (in practice the one that turns it so: the action ends or
    restarts the container, which starts again as "starting"); so a failed action is tried
    again at the next check. `old` is the state before the check, for the caller's logs."""
    del old
    if new.get("Status") != UNHEALTHY or config.on_failure == "none":
        return None
    return config.on_failure


def schedule(
    config: HealthConfig, now: float, started_at: float, last_run: float | None
) -> float | None:
    """When the next automatic check is due (same clock as the arguments), None for none.

    podman's timer is systemd's OnUnitInactiveSec=interval: the first check one interval
    after the container started, each next one an interval after the previous check ENDED
    (`last_run`); checks never overlap. An overdue check is due `now`."""
    if config.interval <= 0 or not config.command():
        return None
    due = (started_at if last_run is None else last_run) + config.interval
    return max(due, now)
