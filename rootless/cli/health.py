"""`rl healthcheck run` and the --health-* flags of `rl run` / `rl create`.

A check runs the container's healthcheck command inside the running container, as `rl exec`
would (rootless.runtime.join: its namespaces, user, capabilities and seccomp), with stdout and
stderr captured in a memory file and the command's process group killed after the timeout.
The result goes into the record's State.Health (rootless.monitor.health's state machine) in
one SQLite transaction, without the container lock (a check must never hold up `rl stop`);
then --health-on-failure is applied when the container turned unhealthy.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container, ContainerStore
    from rootless.monitor.health import HealthConfig

# How much of a check's output is read back (podman keeps 500 bytes of the joined lines).
OUTPUT_READ_LIMIT = 4096


def register(commands: CommandGroup) -> None:
    group = commands.group("healthcheck", "Manage health checks on containers")
    p = group.command(
        "run",
        "Run the health check of a container",
        description="Run the health check of a container.\n\n"
        "Exit status: 0 the check passed, 1 it failed, 125 an error (no such container,\n"
        "no healthcheck defined, not running, the check timed out).",
    )
    p.usage = "rl healthcheck run CONTAINER"
    p.add_argument("container", metavar="CONTAINER", nargs="?")
    p.set_defaults(func=healthcheck_run_command)


# --- flags of rl run / rl create ------------------------------------------------------------


def _retries(text: str) -> int:
    try:
        value = int(text, 10)
        if value < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'invalid argument "{text}" for "--health-retries" flag: strconv.ParseUint: '
            f'parsing "{text}": invalid syntax'
        ) from None
    return value


def add_health_flags(parser: argparse.ArgumentParser) -> None:
    """podman's healthcheck flags; a flag not given is None (so the image's value stays)."""
    add = parser.add_argument
    add(
        "--health-cmd",
        metavar="COMMAND",
        help="set a healthcheck command for the container ('none' disables the existing "
        "healthcheck)",
    )
    add(
        "--health-interval",
        metavar="INTERVAL",
        help="set an interval for the healthchecks (a value of disable results in no automatic "
        'timer setup) (default "30s")',
    )
    add(
        "--health-on-failure",
        metavar="ACTION",
        help='action to take once the container turns unhealthy (default "none")',
    )
    add(
        "--health-retries",
        type=_retries,
        metavar="RETRIES",
        help="the number of retries allowed before a healthcheck is considered to be unhealthy "
        "(default 3)",
    )
    add(
        "--health-start-period",
        metavar="PERIOD",
        help='the initialization time needed for a container to bootstrap (default "0s")',
    )
    add(
        "--health-timeout",
        metavar="TIMEOUT",
        help="the maximum time allowed to complete the healthcheck before an interval is "
        'considered failed (default "30s")',
    )
    add("--no-healthcheck", action="store_true", help="Disable healthchecks on container")


def health_from_args(
    args: argparse.Namespace, image_config: dict[str, Any] | None
) -> dict[str, Any] | None:
    """RunOptions.healthcheck from the flags over the image's config (the whole image config
    or its "config" section); None when the container has no healthcheck. RlError (podman's
    messages) for bad values."""
    from rootless.monitor import health

    config = health.config_from_flags(
        getattr(args, "health_cmd", None),
        getattr(args, "health_interval", None),
        getattr(args, "health_timeout", None),
        getattr(args, "health_retries", None),
        getattr(args, "health_start_period", None),
        getattr(args, "health_on_failure", None),
        bool(getattr(args, "no_healthcheck", False)),
        health.image_healthcheck(image_config),
    )
    return config.to_json() if config is not None else None


# --- rl healthcheck run ---------------------------------------------------------------------


def healthcheck_run_command(args: argparse.Namespace) -> int:
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    ref = args.container
    if not ref:
        raise RlError("must pass the name or ID of a container: rl healthcheck run CONTAINER")
    store = ContainerStore.open()
    try:
        record = store.find(ref)
        if record is None:
            raise RlError(
                f"unable to look up {ref} to perform a health check: no container with name "
                f'or ID "{ref}" found: no such container'
            )
        return run_healthcheck(store, record)
    finally:
        store.close()


def run_healthcheck(store: ContainerStore, record: Container) -> int:
    """One check of a running container, recorded; 0 passed, 1 failed (prints "unhealthy",
    as podman 4.3 does); RlError (125) when it cannot run or timed out."""
    import time

    from rootless import syscalls as sc
    from rootless.cli.tools import running_pid
    from rootless.errors import RlError
    from rootless.monitor import health

    pid = running_pid(record)
    if pid is None:
        raise RlError(f"container {record.id} is not running")
    stored = record.config.get("healthcheck")
    config = health.HealthConfig.from_json(stored) if stored else None
    if config is None or not config.command():
        raise RlError(f"container {record.id} has no defined healthcheck")
    try:
        # Held from here so that a kill on failure cannot reach a later process with the pid.
        container_fd = sc.pidfd_open(pid)
    except OSError:
        raise RlError(f"container {record.id} is not running") from None
    os.set_inheritable(container_fd, False)  # not for the check's command
    try:
        start = time.time()
        code, output, timed_out, error = _run_check(record, pid, config)
        end = time.time()
        if error is not None:
            log_code = health.CHECK_ERROR
        else:
            log_code = health.check_exit_code(code, timed_out or end - start > config.timeout)
        old, new = _record_result(store, record.id, log_code, output, start, end, config)
        action = health.failure_action(old, new, config) if new is not None else None
        if action is not None:
            _apply_action(action, record, container_fd)
    finally:
        os.close(container_fd)
    if error is not None:
        raise RlError(error)
    if log_code == health.CHECK_TIMED_OUT:
        raise RlError(
            f"healthcheck command exceeded timeout of {health.seconds_text(config.timeout)}"
        )
    if log_code != health.CHECK_PASSED:
        print(health.UNHEALTHY, flush=True)
        return 1
    return 0


def _run_check(
    record: Container, pid: int, config: HealthConfig
) -> tuple[int, bytes, bool, str | None]:
    """Run the check's command in the container: (exit code, output, timed out, error)."""
    import contextlib
    import io
    import signal
    import threading

    from rootless.cli.tools import container_spec
    from rootless.errors import RlError
    from rootless.runtime import join

    timed_out = threading.Event()
    timer: threading.Timer | None = None

    def kill_group(command_pid: int) -> None:
        timed_out.set()
        try:
            os.killpg(command_pid, signal.SIGKILL)  # the command called setsid(): its group
        except OSError:
            pass  # it has just ended

    def started(command_pid: int) -> None:
        nonlocal timer
        timer = threading.Timer(config.timeout, kill_group, (command_pid,))
        timer.daemon = True
        timer.start()

    output_fd = os.memfd_create("rl-healthcheck", os.MFD_CLOEXEC)
    messages = io.StringIO()
    try:
        plan = join.plan_exec_process(
            container_spec(record),
            join.ExecOptions(args=tuple(config.command()), env={}),
            passwd_text=None,
            group_text=None,
        )
        session = join.ExecPlan(pid, plan, tty=False, interactive=False, output_fd=output_fd)
        try:
            # An exec failure (command not found, ...) is printed by run_exec: it belongs in
            # the check's output, as the failed check's reason, not on rl's stderr.
            with contextlib.redirect_stderr(messages):
                code = join.run_exec(session, on_started=started)
        except RlError as err:
            return 125, err.message.encode(), False, err.message
        finally:
            if timer is not None:
                timer.cancel()
        output = os.pread(output_fd, OUTPUT_READ_LIMIT, 0)
    finally:
        os.close(output_fd)
    failure = messages.getvalue().strip()
    if failure.startswith("Error: "):
        failure = failure[len("Error: ") :]
    if failure:
        output += (b"\n" if output and not output.endswith(b"\n") else b"") + failure.encode()
    return code, output, timed_out.is_set(), None


def _record_result(
    store: ContainerStore,
    container_id: str,
    log_code: int,
    output: bytes,
    start: float,
    end: float,
    config: HealthConfig,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Read-modify-write State.Health in one transaction (a check by the monitor and one by
    hand must not lose each other's entry); (old, new), new None if the record is gone."""
    from rootless.monitor import health

    store.db.execute("BEGIN IMMEDIATE")
    try:
        current = store.find(container_id)
        if current is None:
            store.db.execute("COMMIT")
            return None, None
        new = health.next_state(
            current.health, log_code, output, start, end, current.started, config
        )
        store.set_health(container_id, new)
        store.db.execute("COMMIT")
    except BaseException:
        store.db.execute("ROLLBACK")
        raise
    return current.health, new


def _apply_action(action: str, record: Container, container_fd: int) -> None:
    """--health-on-failure for a container that turned unhealthy (podman's messages)."""
    import signal

    from rootless import syscalls as sc
    from rootless.errors import RlError

    if action == "kill":
        try:
            sc.pidfd_send_signal(container_fd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it has ended by itself
        except OSError as exc:
            raise RlError(f"killing container health-check turned unhealthy: {exc}") from exc
        return
    verb = "restarting" if action == "restart" else "stopping"
    message = _in_own_session(_stop_or_restart, action, record.id)
    if message:
        raise RlError(f"{verb} container after health-check turned unhealthy: {message}")


def _stop_or_restart(action: str, container_id: str) -> None:
    from rootless.containers import lifecycle
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    try:
        lifecycle.stop(store, container_id)
        if action == "restart":
            lifecycle.start(store, container_id)
    finally:
        store.close()


def _in_own_session(fn: Callable[[str, str], None], *args: str) -> str:
    """fn(*args) in a child in a session of its own; its error message, "" if it succeeded.

    The monitor runs this check as its child and, once the container has stopped, kills
    what is left of the check: the stop-and-start must survive that to finish."""
    import sys

    from rootless.errors import RlError

    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        # Only os._exit from here: the parent's SQLite connection must not be closed here.
        code = 0
        try:
            os.close(read_fd)
            os.setsid()
            fn(*args)
        except RlError as err:
            os.write(write_fd, err.message.encode(errors="replace"))
            code = 1
        except BaseException as exc:
            os.write(write_fd, f"{type(exc).__name__}: {exc}".encode(errors="replace"))
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    try:
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(child, 0)
    return b"".join(chunks).decode(errors="replace")
