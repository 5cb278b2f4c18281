"""Healthchecks end to end, as the unprivileged user: `rl healthcheck run`, State.Health, the
monitor's automatic checks and --health-on-failure. Expected values come from podman 4.3 run
rootless on this machine (`podman --runtime runc`): a passing check prints nothing and exits
0, a failing one prints "unhealthy" and exits 1, errors exit 125.

Until `rl run` takes the --health-* flags, the foreground tests give a container its
healthcheck by writing it into the container's record (the JSON `rl run` will store there);
the detached tests wait for `rl run -d`.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.harness import User, installed_tool, rl_binary

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"
CHECK = "test -e /tmp/ok"


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-health-") as rl:
        yield rl


@functools.cache
def _run_help(binary: str) -> str:
    from tests.harness import ensure_user

    return ensure_user().run([binary, "run", "--help"]).stdout


def _health_flags_supported() -> bool:
    try:
        return "--health-cmd" in _run_help(rl_binary())
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return False


# Written into a record by the test user's python (the installed rl's store API), as
# `rl run --health-cmd … --health-retries 2 --health-timeout 2s` stores it.
_INJECT = """
import json, sys
from rootless.containers.store import ContainerStore
from rootless.monitor.health import config_from_flags
store = ContainerStore.open()
record = store.get(sys.argv[1])
config = config_from_flags(sys.argv[2], "disable", sys.argv[3], 2, None, sys.argv[4], False, None)
record.config["healthcheck"] = config.to_json()
update = "UPDATE containers SET config = ? WHERE id = ?"
store.db.execute(update, (json.dumps(record.config), record.id))
"""


def _argv(rl: Rl, *args: str) -> list[str]:
    return rl.user.argv([rl_binary(), "--root", str(rl.root), *args], rl.user.env())


def _health(rl: Rl, name: str) -> dict[str, object]:
    """State.Health, read as the test user from the store (rl inspect shows the same)."""
    code = (
        "import json, sys\n"
        "from rootless.containers.store import ContainerStore\n"
        "print(json.dumps(ContainerStore.open().get(sys.argv[1]).health))\n"
    )
    result = rl.user.run(
        [installed_tool("python"), "-c", code, name], env={"RL_ROOT": str(rl.root)}
    )
    assert result.returncode == 0, result
    health: dict[str, object] = json.loads(result.stdout)
    return health


class Foreground:
    """A container running `sleep 1000` under a foreground `rl run` in the background."""

    def __init__(self, rl: Rl, name: str, health_args: list[str]) -> None:
        self.rl = rl
        self.name = name
        self.proc = subprocess.Popen(
            _argv(rl, "run", "--name", name, *health_args, IMAGE, "sleep", "1000"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        deadline = time.monotonic() + 30
        while rl("exec", name, "true").returncode != 0:
            assert self.proc.poll() is None, "rl run ended early"
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.1)

    def close(self) -> None:
        self.rl("rm", "-f", self.name)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def foreground(rlm: Rl) -> Iterator[functools.partial[Foreground]]:
    started: list[Foreground] = []

    def start(
        name: str, cmd: str | None = None, timeout: str = "2s", on_failure: str = "none"
    ) -> Foreground:
        flags = []
        if cmd is not None and _health_flags_supported():
            flags = [
                f"--health-cmd={cmd}",
                "--health-interval=disable",
                "--health-retries=2",
                f"--health-timeout={timeout}",
                f"--health-on-failure={on_failure}",
            ]
        container = Foreground(rlm, name, flags)
        started.append(container)
        if cmd is not None and not flags:
            result = rlm.user.run(
                [installed_tool("python"), "-c", _INJECT, name, cmd, timeout, on_failure],
                env={"RL_ROOT": str(rlm.root)},
            )
            assert result.returncode == 0, result
        return container

    yield functools.partial(start)
    for container in started:
        container.close()


# --- errors ------------------------------------------------------------------------------------


def test_errors_exit_125_in_podmans_words(
    rlm: Rl, foreground: functools.partial[Foreground]
) -> None:
    result = rlm("healthcheck", "run", "no-such-ctr")
    assert result.returncode == 125
    assert result.stderr == (
        "Error: unable to look up no-such-ctr to perform a health check: no container with "
        'name or ID "no-such-ctr" found: no such container\n'
    )
    container = foreground("health-none")
    record_id = rlm.ok("ps", "-q", "--no-trunc").stdout.split()[0]
    result = rlm("healthcheck", "run", container.name)
    assert result.returncode == 125
    assert result.stderr == f"Error: container {record_id} has no defined healthcheck\n"
    rlm.ok("run", "--name", "health-exited", IMAGE, "true")
    result = rlm("healthcheck", "run", "health-exited")
    assert result.returncode == 125
    assert result.stderr.startswith("Error: container ")
    assert result.stderr.endswith(" is not running\n")


# --- checks in a foreground container ----------------------------------------------------------


def test_check_flips_healthy_unhealthy_healthy(
    rlm: Rl, foreground: functools.partial[Foreground]
) -> None:
    container = foreground("health-flip", f"echo out; echo err >&2; {CHECK}")
    name = container.name
    result = rlm("healthcheck", "run", name)
    assert (result.returncode, result.stdout) == (1, "unhealthy\n")  # one failure of two
    health = _health(rlm, name)
    assert (health["Status"], health["FailingStreak"]) == ("starting", 1)
    assert rlm("healthcheck", "run", name).returncode == 1
    health = _health(rlm, name)
    assert (health["Status"], health["FailingStreak"]) == ("unhealthy", 2)
    rlm.ok("exec", name, "touch", "/tmp/ok")
    result = rlm("healthcheck", "run", name)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    health = _health(rlm, name)
    assert (health["Status"], health["FailingStreak"]) == ("healthy", 0)
    log = health["Log"]
    assert isinstance(log, list) and len(log) == 3
    assert [entry["ExitCode"] for entry in log] == [1, 1, 0]
    assert log[-1]["Output"] == "out\nerr"  # stdout and stderr, lines joined like podman
    rlm.ok("exec", name, "rm", "/tmp/ok")
    assert rlm("healthcheck", "run", name).returncode == 1
    assert _health(rlm, name)["Status"] == "healthy"  # one failure: not yet unhealthy
    for _ in range(4):
        rlm("healthcheck", "run", name)
    log = _health(rlm, name)["Log"]
    assert isinstance(log, list) and len(log) == 5  # podman keeps the last five


def test_check_runs_as_the_container_process_would(
    rlm: Rl, foreground: functools.partial[Foreground]
) -> None:
    container = foreground("health-env", 'echo "$(id -u) $(pwd) $HOME"')
    assert rlm("healthcheck", "run", container.name).returncode == 0
    log = _health(rlm, container.name)["Log"]
    assert isinstance(log, list)
    assert log[-1]["Output"] == "0 /data /root"  # the image's WorkingDir and user


def test_a_check_past_its_timeout_is_killed_and_fails(
    rlm: Rl, foreground: functools.partial[Foreground]
) -> None:
    container = foreground("health-slow", "sleep 100; echo late", timeout="1s")
    started = time.monotonic()
    result = rlm("healthcheck", "run", container.name, timeout=60)
    assert time.monotonic() - started < 50  # killed, not waited for
    assert result.returncode == 125
    assert result.stderr == "Error: healthcheck command exceeded timeout of 1s\n"
    health = _health(rlm, container.name)
    log = health["Log"]
    assert isinstance(log, list)
    assert (log[-1]["ExitCode"], log[-1]["Output"], health["FailingStreak"]) == (-1, "", 1)


def test_a_command_that_cannot_run_is_a_failed_check(
    rlm: Rl, foreground: functools.partial[Foreground]
) -> None:
    container = foreground("health-missing", '["no-such-command", "x"]')
    result = rlm("healthcheck", "run", container.name)
    assert (result.returncode, result.stdout, result.stderr) == (1, "unhealthy\n", "")
    log = _health(rlm, container.name)["Log"]
    assert isinstance(log, list)
    assert log[-1]["ExitCode"] == 1
    assert "no-such-command" in str(log[-1]["Output"])


def test_on_failure_kill(rlm: Rl, foreground: functools.partial[Foreground]) -> None:
    container = foreground("health-kill", "false", on_failure="kill")
    assert rlm("healthcheck", "run", container.name).returncode == 1
    assert container.proc.poll() is None  # one failure of two: still running
    assert rlm("healthcheck", "run", container.name).returncode == 1
    assert container.proc.wait(timeout=30) == 137  # SIGKILLed: the foreground run says so


# --- detached containers: the monitor's checks ------------------------------------------------


@pytest.fixture
def detached(rlm: Rl) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        rlm("rm", "-f", name)


def _inspect(rl: Rl, name: str, template: str) -> str:
    return rl.ok("inspect", "--format", template, name).stdout.strip()


def _wait_for(rl: Rl, name: str, template: str, want: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while (got := _inspect(rl, name, template)) != want:
        assert time.monotonic() < deadline, f"{template} is {got!r}, not {want!r}"
        time.sleep(0.2)


def test_detached_healthcheck_run_and_inspect(rlm: Rl, detached: list[str]) -> None:
    detached.append("health-d")
    rlm.ok(
        "run", "-d", "--name", "health-d", f"--health-cmd={CHECK}", "--health-interval=disable",
        "--health-retries=1", IMAGE, "sleep", "1000",
    )  # fmt: skip
    assert _inspect(rlm, "health-d", "{{.State.Health.Status}}") == "starting"
    config = json.loads(_inspect(rlm, "health-d", "{{json .Config.Healthcheck}}"))
    assert config == {"Test": ["CMD-SHELL", CHECK], "Timeout": 30_000_000_000, "Retries": 1}
    result = rlm("healthcheck", "run", "health-d")
    assert (result.returncode, result.stdout) == (1, "unhealthy\n")
    assert _inspect(rlm, "health-d", "{{.State.Health.Status}}") == "unhealthy"
    rlm.ok("exec", "health-d", "touch", "/tmp/ok")
    assert rlm("healthcheck", "run", "health-d").returncode == 0
    assert _inspect(rlm, "health-d", "{{.State.Health.Status}}") == "healthy"
    rlm.ok("exec", "health-d", "rm", "/tmp/ok")
    assert rlm("healthcheck", "run", "health-d").returncode == 1
    assert _inspect(rlm, "health-d", "{{.State.Health.Status}}") == "unhealthy"


def test_detached_no_healthcheck_is_125(rlm: Rl, detached: list[str]) -> None:
    detached.append("health-d-none")
    container_id = rlm.ok("run", "-d", "--name", "health-d-none", IMAGE, "sleep", "1000")
    result = rlm("healthcheck", "run", "health-d-none")
    assert result.returncode == 125
    assert result.stderr == (
        f"Error: container {container_id.stdout.strip()} has no defined healthcheck\n"
    )


@pytest.mark.slow
def test_monitor_checks_flip_healthy_unhealthy_healthy(rlm: Rl, detached: list[str]) -> None:
    detached.append("health-auto")
    rlm.ok(
        "run", "-d", "--name", "health-auto", f"--health-cmd={CHECK}", "--health-interval=1s",
        "--health-retries=2", IMAGE, "sh", "-c", "touch /tmp/ok; exec sleep 1000",
    )  # fmt: skip
    status = "{{.State.Health.Status}}"
    _wait_for(rlm, "health-auto", status, "healthy")
    rlm.ok("exec", "health-auto", "rm", "/tmp/ok")
    _wait_for(rlm, "health-auto", status, "unhealthy")
    assert int(_inspect(rlm, "health-auto", "{{.State.Health.FailingStreak}}")) >= 2
    rlm.ok("exec", "health-auto", "touch", "/tmp/ok")
    _wait_for(rlm, "health-auto", status, "healthy")
    assert rlm.ok("ps").stdout.count("(healthy)") == 1


@pytest.mark.slow
def test_monitor_applies_on_failure_kill(rlm: Rl, detached: list[str]) -> None:
    detached.append("health-auto-kill")
    rlm.ok(
        "run", "-d", "--name", "health-auto-kill", "--health-cmd=false", "--health-interval=1s",
        "--health-retries=1", "--health-on-failure=kill", IMAGE, "sleep", "1000",
    )  # fmt: skip
    _wait_for(rlm, "health-auto-kill", "{{.State.Status}}", "exited")
    assert _inspect(rlm, "health-auto-kill", "{{.State.ExitCode}}") == "137"
    assert _inspect(rlm, "health-auto-kill", "{{.State.Health.Status}}") == "unhealthy"
