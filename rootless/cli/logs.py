"""`rl logs` / `rl container logs`: a container's k8s-file log, with podman's flags and output.

Like podman 4.3: stdout entries go to stdout and stderr entries to stderr; a partial entry is
printed without a newline (so the next entry continues it); with several containers each line
starts with the container's short ID (its name with -n); -t puts the entry's time first, in Go's
RFC3339Nano. Several containers are merged in time order. -f polls the files, follows
rotations and ends once every container has stopped and its log is drained.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container, ContainerStore
    from rootless.monitor.logfile import LogEntry, LogReader

POLL_INTERVAL = 0.1
NOT_LOGGING = (
    "this container is using the '{}' log driver, cannot read logs: "
    "this container is not logging output"
)


def register(commands: CommandGroup) -> None:
    container = commands.group("container", "Manage containers")
    for group, prefix in ((commands, "rl"), (container, "rl container")):
        p = group.command(
            "logs",
            "Fetch the logs of one or more containers",
            description="Retrieves logs for one or more containers.\n\n"
            "This does not guarantee execution order when combined with rl run (i.e., your run "
            "may not have generated any logs at the time you execute rl logs).",
        )
        p.usage = f"{prefix} logs [options] CONTAINER [CONTAINER...]"
        add = p.add_argument
        add(
            "--color",
            action="store_true",
            help="Output the containers with different colors in the log (ignored)",
        )
        add("-f", "--follow", action="store_true", help="Follow log output.  The default is false")
        add("-l", "--latest", action="store_true", help="Act on the latest container rl knows of")
        add("-n", "--names", action="store_true", help="Output the container name in the log")
        add("--since", metavar="TIMESTAMP", help="Show logs since TIMESTAMP")
        add(
            "--tail",
            default="-1",
            metavar="LINES",
            help="Output the specified number of LINES at the end of the logs.  Defaults to -1, "
            "which prints all lines",
        )
        add("-t", "--timestamps", action="store_true", help="Output the timestamps in the log")
        add("--until", metavar="TIMESTAMP", help="Show logs until TIMESTAMP")
        add("containers", nargs="*", metavar="CONTAINER")
        p.set_defaults(func=logs_command)


# --- options ----------------------------------------------------------------------------


def parse_tail(text: str) -> int:
    """--tail N as podman's ParseInt: any integer, negative meaning all lines."""
    from rootless.errors import RlError

    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise RlError(
            f'invalid argument "{text}" for "--tail" flag: strconv.ParseInt: parsing "{text}": '
            "invalid syntax"
        )
    return int(text)


def parse_time_option(flag: str, text: str | None, now_ns: int) -> int | None:
    """--since/--until -> Unix ns (None when not given), podman's error text when invalid."""
    from rootless.errors import RlError
    from rootless.monitor.logfile import parse_time_arg

    if text is None or text == "":
        return None
    try:
        return parse_time_arg(text, since=flag == "--since", now_ns=now_ns)
    except ValueError:
        raise RlError(f'parsing {flag} "{text}": unable to interpret time value') from None


def log_path(store: ContainerStore, record: Container) -> str:
    """Where a container's k8s-file log is: --log-opt path=…, else userdata/ctr.log."""
    opts = record.config.get("log_opts") or {}
    explicit = opts.get("path") if isinstance(opts, dict) else None
    return str(explicit) if explicit else str(store.userdata(record.id) / "ctr.log")


def check_log_driver(record: Container) -> None:
    from rootless.errors import RlError

    driver = record.config.get("log_driver") or "k8s-file"
    if driver in ("none", "passthrough"):
        raise RlError(NOT_LOGGING.format(driver))


# --- output -----------------------------------------------------------------------------


def render(entry: LogEntry, *, prefix: bytes = b"", timestamps: bool = False) -> bytes:
    """One entry as podman prints it (a partial entry without a newline)."""
    from rootless.monitor.logfile import format_go_timestamp

    head = prefix
    if timestamps:
        head += format_go_timestamp(entry.time_ns, entry.offset).encode() + b" "
    return head + entry.text + (b"" if entry.partial else b"\n")


class _Source:
    """One container being read."""

    def __init__(self, record: Container, reader: LogReader, prefix: bytes) -> None:
        self.record = record
        self.reader = reader
        self.prefix = prefix


class _Output:
    """Writes entries to stdout or stderr by stream, keeping their order where both are the
    same terminal or pipe (the other stream is flushed before switching)."""

    def __init__(self, timestamps: bool) -> None:
        self.timestamps = timestamps
        self.last: BinaryIO | None = None

    def emit(self, items: list[tuple[LogEntry, _Source]]) -> None:
        for entry, source in items:
            out = sys.stderr.buffer if entry.stream == "stderr" else sys.stdout.buffer
            if self.last is not None and self.last is not out:
                self.last.flush()
            self.last = out
            out.write(render(entry, prefix=source.prefix, timestamps=self.timestamps))
        if self.last is not None:
            self.last.flush()


def merge(batches: list[list[tuple[LogEntry, _Source]]]) -> list[tuple[LogEntry, _Source]]:
    """The entries of several containers in time order (each container's in file order)."""
    import heapq

    if len(batches) == 1:
        return batches[0]
    return list(heapq.merge(*batches, key=lambda item: item[0].time_ns))


# --- the command ------------------------------------------------------------------------


def _records(store: ContainerStore, args: argparse.Namespace) -> list[Container]:
    from rootless.errors import RlError

    if args.latest:
        if args.containers:
            raise RlError("--latest and containers cannot be used together")
        records = store.containers()
        if not records:
            raise RlError("no such container")
        return records[:1]
    if not args.containers:
        raise RlError("specify at least one container name or ID to log")
    return [store.get(ref) for ref in args.containers]


def logs_command(args: argparse.Namespace) -> int:
    from rootless.containers.store import ContainerStore
    from rootless.monitor.logfile import LogReader, select_entries

    tail = parse_tail(args.tail)
    now_ns = time.time_ns()
    since = parse_time_option("--since", args.since, now_ns)
    until = parse_time_option("--until", args.until, now_ns)
    store = ContainerStore.open()
    try:
        records = _records(store, args)
        for record in records:
            check_log_driver(record)
        multi = len(records) > 1
        sources = []
        for record in records:
            label = record.name if args.names else record.short_id
            prefix = f"{label} ".encode() if multi else b""
            sources.append(_Source(record, LogReader(log_path(store, record), tail), prefix))
        output = _Output(args.timestamps)
        try:
            batches = [
                [(e, s) for e in select_entries(s.reader.read(), since, until)] for s in sources
            ]
            output.emit(merge(batches))
            if args.follow:
                _follow(store, sources, output, since, until)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            from rootless.errors import RlError

            raise RlError(f"cannot read the container log: {exc}") from exc
        finally:
            for source in sources:
                source.reader.close()
    finally:
        store.close()
    return 0


def _still_running(store: ContainerStore, record: Container) -> bool:
    from rootless.containers.store import LIVE_STATES

    current = store.find(record.id)
    return current is not None and current.state in LIVE_STATES


def _follow(
    store: ContainerStore,
    sources: list[_Source],
    output: _Output,
    since: int | None,
    until: int | None,
) -> None:
    """Poll until every container has stopped and its log is drained (or --until passed).

    A container counts as stopped once its record leaves the live states; its monitor writes
    the last output before it records the exit, so one more read after that gets everything.
    """
    from rootless.monitor.logfile import select_entries

    active = list(sources)
    while active:
        time.sleep(POLL_INTERVAL)
        batches = []
        done = []
        for source in active:
            entries = source.reader.read()
            if not entries and not _still_running(store, source.record):
                entries = source.reader.read()
                done.append(source)
            batches.append([(e, source) for e in select_entries(entries, since, until)])
        output.emit(merge(batches))
        active = [s for s in active if s not in done]
        if until is not None and time.time_ns() >= until:
            return
