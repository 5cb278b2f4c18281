"""Lifecycle commands of existing containers: start, stop, kill, restart, attach."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container, ContainerStore


def register(commands: CommandGroup) -> None:
    group = commands.group("container", "Manage containers")
    for family in (commands, group):
        _register_start(family)
        _register_stop(family)
        _register_kill(family)
        _register_restart(family)
        _register_attach(family)


def _register_start(commands: CommandGroup) -> None:
    p = commands.command(
        "start",
        "Start one or more containers",
        description="Starts one or more containers. With --attach, the output of the one "
        "container is shown until it exits, and rl exits with its code.",
    )
    p.usage = "rl start [options] CONTAINER [CONTAINER...]"
    p.add_argument(
        "-a", "--attach", action="store_true", help="Attach container's STDOUT and STDERR"
    )
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="Make STDIN available to the contained process",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="Start all containers regardless of their state or configuration",
    )
    p.add_argument(
        "--detach-keys",
        default=None,
        metavar="KEYS",
        help="Select the key sequence for detaching a container",
    )
    p.add_argument(
        "--sig-proxy",
        default=None,
        choices=["true", "false"],
        help="Proxy received signals to the process (default true if attaching, false otherwise)",
    )
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=start_command)


def _register_stop(commands: CommandGroup) -> None:
    p = commands.command(
        "stop",
        "Stop one or more containers",
        description="Stops one or more running containers: their StopSignal (SIGTERM unless "
        "set), then SIGKILL after the timeout.",
    )
    p.usage = "rl stop [options] CONTAINER [CONTAINER...]"
    p.add_argument("-a", "--all", action="store_true", help="Stop all running containers")
    p.add_argument(
        "-i",
        "--ignore",
        action="store_true",
        help="Ignore errors when a specified container is missing",
    )
    p.add_argument(
        "-t",
        "--time",
        type=int,
        default=None,
        metavar="SECONDS",
        help="Seconds to wait for stop before killing the container (default 10)",
    )
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=stop_command)


def _register_kill(commands: CommandGroup) -> None:
    p = commands.command(
        "kill",
        "Kill one or more running containers with a specific signal",
        description="The main process inside each container specified will be sent SIGKILL, "
        "or any signal specified with option --signal.",
    )
    p.usage = "rl kill [options] CONTAINER [CONTAINER...]"
    p.add_argument("-a", "--all", action="store_true", help="Signal all running containers")
    p.add_argument(
        "-s",
        "--signal",
        default="KILL",
        metavar="SIGNAL",
        help='Signal to send to the container (default "KILL")',
    )
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=kill_command)


def _register_restart(commands: CommandGroup) -> None:
    p = commands.command(
        "restart", "Restart one or more containers", description="Restarts one or more containers."
    )
    p.usage = "rl restart [options] CONTAINER [CONTAINER...]"
    p.add_argument("-a", "--all", action="store_true", help="Restart all non-running containers")
    p.add_argument("--running", action="store_true", help="Restart only running containers")
    p.add_argument(
        "-t",
        "--time",
        type=int,
        default=None,
        metavar="SECONDS",
        help="Seconds to wait for stop before killing the container (default 10)",
    )
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=restart_command)


def _register_attach(commands: CommandGroup) -> None:
    p = commands.command(
        "attach",
        "Attach to a running container",
        description="The container's output is shown and, unless --no-stdin, your input goes "
        "to it. Detach with the detach keys (ctrl-p,ctrl-q) and the container keeps running.",
    )
    p.usage = "rl attach [options] CONTAINER"
    p.add_argument(
        "--detach-keys",
        default=None,
        metavar="KEYS",
        help="Select the key sequence for detaching a container",
    )
    p.add_argument("--no-stdin", action="store_true", help="Do not attach STDIN")
    p.add_argument(
        "--sig-proxy",
        default="true",
        choices=["true", "false"],
        help="Proxy received signals to the process (default true)",
    )
    p.add_argument(
        "-l", "--latest", action="store_true", help="Act on the latest container rl is aware of"
    )
    p.add_argument("container", nargs="?", metavar="CONTAINER")
    p.set_defaults(func=attach_command)


# --- helpers -----------------------------------------------------------------------------


def _targets(
    store: ContainerStore, refs: list[str], all_: bool, which: Callable[[Container], bool]
) -> list[str]:
    from rootless.errors import RlError

    if all_ and refs:
        raise RlError("when using the --all switch, you may not pass any containers names or IDs")
    if all_:
        return [c.id for c in store.containers() if which(c)]
    if not refs:
        raise RlError("you must provide at least one container name or ID")
    return refs


def _each(refs: list[str], action: Callable[[str], object], *, ignore_missing: bool = False) -> int:
    """podman's multi-container commands: act on each, print each ref that worked, report
    each failure as `Error: …`, exit with the last failure's code."""
    from rootless.errors import RlError

    code = 0
    for ref in refs:
        try:
            action(ref)
            print(ref, flush=True)
        except RlError as err:
            if ignore_missing and "no such container" in err.message:
                continue
            print(f"Error: {err.message}", file=sys.stderr, flush=True)
            code = err.exit_code
    return code


def _running(record: Container) -> bool:
    return record.state in ("running", "restarting")


# --- commands ----------------------------------------------------------------------------


def start_command(args: argparse.Namespace) -> int:
    from rootless.containers import lifecycle
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    store = ContainerStore.open()
    try:
        refs = _targets(store, args.containers, args.all, lambda c: not _running(c))
        if args.attach or args.interactive:
            if len(refs) != 1:
                raise RlError("you cannot start and attach multiple containers at once")
            record = store.get(refs[0])
            if _running(record):
                raise RlError(f"container {record.id} is already running: use `rl attach`")
            return _start_attached(store, record, stdin=args.interactive, keys=args.detach_keys)
        return _each(refs, lambda ref: lifecycle.start(store, ref))
    finally:
        store.close()


def _start_attached(
    store: ContainerStore, record: Container, *, stdin: bool, keys: str | None
) -> int:
    """start -a: connect to the new monitor before the container starts, then relay its
    output (and input) until it exits; its exit code."""
    from rootless.containers import lifecycle
    from rootless.monitor import attach
    from rootless.monitor.main import socket_path

    detach_keys = attach.parse_detach_keys(
        keys if keys is not None else record.config.get("detach_keys") or attach.DEFAULT_DETACH_KEYS
    )
    connected = []

    def connect() -> None:
        connected.append(attach.connect(socket_path(record.id), stdin=stdin))

    try:
        lifecycle.start(store, record.id, before_start=connect)
    except BaseException:
        for sock in connected:
            sock.close()
        raise
    if not connected:  # it was running already: attach the usual way
        return _attach(record, stdin=stdin, keys=keys)
    try:
        code = attach.relay(
            connected[0], stdin=stdin, tty=bool(record.config.get("tty")), detach_keys=detach_keys
        )
    except attach.Detached:
        return 0
    return code if code is not None else _final_code(record)


def _attach(record: Container, *, stdin: bool, keys: str | None) -> int:
    from rootless.monitor import attach
    from rootless.monitor.main import socket_path

    detach_keys = attach.parse_detach_keys(
        keys if keys is not None else record.config.get("detach_keys") or attach.DEFAULT_DETACH_KEYS
    )
    try:
        code = attach.attach(
            socket_path(record.id),
            stdin=stdin,
            tty=bool(record.config.get("tty")),
            detach_keys=detach_keys,
        )
    except attach.Detached:
        return 0
    return code if code is not None else _final_code(record)


def _final_code(record: Container) -> int:
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    try:
        final = store.find(record.id)
    finally:
        store.close()
    return final.exit_code if final is not None and final.exit_code is not None else 0


def attach_command(args: argparse.Namespace) -> int:
    from rootless.containers.store import ContainerStore, runner_alive
    from rootless.errors import RlError

    store = ContainerStore.open()
    try:
        if args.latest:
            record = store.latest()
        elif args.container:
            record = store.get(args.container)
        else:
            raise RlError("attach requires the name or ID of one running container")
    finally:
        store.close()
    if record.state != "running" or not runner_alive(record):
        raise RlError("you can only attach to running containers")
    stdin = not args.no_stdin and bool(record.config.get("interactive"))
    return _attach(record, stdin=stdin, keys=args.detach_keys)


def stop_command(args: argparse.Namespace) -> int:
    from rootless.containers import lifecycle
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    try:
        refs = _targets(store, args.containers, args.all, _running)
        timeout = None if args.time is None else float(args.time)
        return _each(
            refs, lambda ref: lifecycle.stop(store, ref, timeout), ignore_missing=args.ignore
        )
    finally:
        store.close()


def kill_command(args: argparse.Namespace) -> int:
    import signal

    from rootless.containers import lifecycle
    from rootless.containers.store import ContainerStore
    from rootless.runtime.options import parse_signal

    sig = int(getattr(signal, parse_signal(args.signal)))
    store = ContainerStore.open()
    try:
        refs = _targets(store, args.containers, args.all, _running)
        return _each(refs, lambda ref: lifecycle.kill(store, ref, sig))
    finally:
        store.close()


def restart_command(args: argparse.Namespace) -> int:
    from rootless.containers import lifecycle
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    try:
        which = _running if args.running else (lambda c: True)
        refs = _targets(store, args.containers, args.all or args.running, which)
        timeout = None if args.time is None else float(args.time)

        def restart(ref: str) -> None:
            lifecycle.stop(store, ref, timeout)
            lifecycle.start(store, ref)

        return _each(refs, restart)
    finally:
        store.close()
