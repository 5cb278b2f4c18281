"""Container listing and queries: ps, inspect, rename, port, wait, container exists/prune.

The logic is in rootless.containers.listing (filters, rows, status text, ports, wait) and
rootless.containers.inspect (podman's inspect JSON); this module reads the stores and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container, ContainerStore
    from rootless.images.store import Image, ImageStore

INSPECT_TYPES = ("container", "image", "volume", "all")


def register(commands: CommandGroup) -> None:
    container = commands.group("container", "Manage containers")
    _register_ps(commands, ())
    _register_ps(container, ("ls", "list"))
    _register_inspect(commands, top_level=True)
    _register_inspect(container, top_level=False)
    for group in (commands, container):
        _register_rename(group)
        _register_port(group)
        _register_wait(group)
    _register_exists(container)
    _register_prune(container)


# --- shared -------------------------------------------------------------------------------


def _open() -> ContainerStore:
    from rootless.containers.store import ContainerStore

    return ContainerStore.open()


def _go_json(value: Any, indent: int) -> str:
    """Go's json.MarshalIndent: HTML characters escaped as \\u003c etc."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Images:
    """Image lookups for a listing, each image read once (and only when asked for)."""

    def __init__(self) -> None:
        self._store: ImageStore | None = None
        self._cache: dict[str, Image | None] = {}

    def get(self, image_id: str) -> Image | None:
        if image_id not in self._cache:
            from rootless.errors import RlError

            try:
                if self._store is None:
                    from rootless.images.store import ImageStore

                    self._store = ImageStore.open()
                found = self._store.find(image_id) if image_id else None
            except RlError:
                found = None
            self._cache[image_id] = found[0] if found else None
        return self._cache[image_id]

    def labels_of(self, record: Container) -> dict[str, str]:
        """The container's labels over its image's (podman's container labels)."""
        image = self.get(record.image_id)
        image_labels = ((image.config.get("config") or {}).get("Labels") or {}) if image else {}
        return {**image_labels, **record.labels}

    def size(self, image_id: str) -> int:
        image = self.get(image_id)
        return image.size if image else 0


def _tree_size(path: Path) -> int:
    """Bytes in the files under `path` (what this user can see: entries the container's ids
    made unreadable are left out)."""
    total = 0
    for parent, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                continue
    return total


def _sizes(store: ContainerStore, record: Container, images: _Images) -> tuple[int, int]:
    """(rw, rootfs) as podman's -s: the container's changes, and its image's size."""
    from rootless.containers.storageview import COPY, UPPER

    directory = store.container_dir(record.id)
    image_size = images.size(record.image_id)
    if (directory / COPY).is_dir():
        return max(0, _tree_size(directory / COPY) - image_size), image_size
    return _tree_size(directory / UPPER), image_size


def _spec(store: ContainerStore, record: Container) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((store.userdata(record.id) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


# --- ps -----------------------------------------------------------------------------------

PS_DESCRIPTION = """\
Prints out information about the containers.

Filters (--filter KEY=VALUE, repeatable; values of one key are alternatives, different keys
must all match, every label= must match): id, name (regular expressions), label=KEY[=VALUE],
status (created, running, paused, stopped, exited, …), ancestor (image name or ID),
exited=CODE, health (starting, healthy, unhealthy, none), before/since=CONTAINER."""


def _register_ps(group: CommandGroup, aliases: tuple[str, ...]) -> None:
    p = group.command("ps", "List containers", aliases=aliases, description=PS_DESCRIPTION)
    p.usage = "rl ps [options]"
    add = p.add_argument
    add(
        "-a",
        "--all",
        action="store_true",
        help="Show all the containers, default is only running containers",
    )
    add(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="FILTER",
        help="Filter output based on conditions given",
    )
    add("--format", help="Pretty-print containers to JSON or using a Go template")
    add(
        "-n",
        "--last",
        type=int,
        default=-1,
        metavar="N",
        help="Print the n last created containers (all states)",
    )
    add(
        "-l",
        "--latest",
        action="store_true",
        help="Act on the latest container rl is aware of",
    )
    add("--no-trunc", action="store_true", help="Display the extended information")
    add("--noheading", action="store_true", help="Do not print headers")
    add("-q", "--quiet", action="store_true", help="Print the numeric IDs of the containers only")
    add("-s", "--size", action="store_true", help="Display the total file sizes")
    add(
        "--sort",
        metavar="KEY",
        help="Sort output by: command, created, id, image, names, runningfor, size, status",
    )
    p.set_defaults(func=ps_command)


def ps_command(args: argparse.Namespace) -> int:
    from rootless import gotemplate
    from rootless.containers import listing
    from rootless.errors import RlError

    if args.last >= 0 and args.latest:
        raise RlError("last and latest are mutually exclusive")
    if args.quiet and args.size:
        raise RlError("quiet conflicts with size and namespace")
    filters = listing.parse_filters(args.filter)
    fmt: str | None = args.format
    images = _Images()
    is_json = fmt is not None and fmt.strip() == "json"
    want_labels = "label" in filters or is_json or (fmt is not None and "Label" in fmt)
    want_mounts = is_json or (fmt is not None and "Mounts" in fmt)
    store = _open()
    try:
        everything = [settled(store, record) for record in store.containers()]
        created = {r.id: r.created for r in everything}

        def created_of(ref: str) -> float | None:
            found = store.find(ref)
            return created.get(found.id) if found else None

        records = listing.select(
            everything,
            all_states=args.all,
            latest=args.latest,
            last=args.last,
            filters=filters,
            labels_of=images.labels_of if want_labels else None,
            created_of=created_of,
        )
        now = time.time()
        sizes = {r.id: _sizes(store, r, images) for r in records} if args.size else {}
        if args.sort:
            records = listing.sort_rows(records, args.sort, now, sizes)
        mounts = {
            r.id: listing.mount_destinations(_spec(store, r), str(store.userdata(r.id)))
            for r in records
            if want_mounts
        }
    finally:
        store.close()

    def labels(record: Container) -> dict[str, str]:
        return images.labels_of(record) if want_labels else dict(record.labels)

    if is_json:
        rows = [
            listing.json_row(
                r, now, labels=labels(r), size=sizes.get(r.id), mounts=mounts.get(r.id, ())
            )
            for r in records
        ]
        print(_go_json(rows, 2))
        return 0
    if args.quiet and fmt is None:
        for r in records:
            print(r.id if args.no_trunc else r.short_id)
        return 0
    rows = [
        listing.template_row(
            r,
            now,
            no_trunc=args.no_trunc,
            labels=labels(r),
            size=sizes.get(r.id),
            mounts=mounts.get(r.id, ()),
        )
        for r in records
    ]
    if fmt is None:
        sys.stdout.write(_default_table(rows, size=args.size, heading=not args.noheading))
        return 0
    template = fmt
    heading = not args.noheading and fmt.startswith("table")
    if template.startswith("table"):
        out = gotemplate.render_table(template, rows, listing.HEADERS, heading=heading)
    else:
        out = gotemplate.render_rows(template, rows) if rows else ""
    sys.stdout.write(out)
    return 0


_DEFAULT_COLUMNS = ("ID", "Image", "Command", "CreatedHuman", "Status", "Ports", "Names")


def _default_table(rows: list[dict[str, Any]], *, size: bool, heading: bool) -> str:
    """`ps` without --format: podman's default table, without the template engine's import
    cost (what `table {{.ID}}\t{{.Image}}…` renders to)."""
    from rootless.containers.listing import HEADERS
    from rootless.tabwriter import tabwrite

    columns = _DEFAULT_COLUMNS + (("Size",) if size else ())
    lines = [[HEADERS.get(c, c.upper()) for c in columns]] if heading else []
    lines += [[str(row[c]) for c in columns] for row in rows]
    return tabwrite("".join("\t".join(cells) + "\n" for cells in lines))


# --- inspect ------------------------------------------------------------------------------

INSPECT_DESCRIPTION = """\
Displays the low-level information on an object identified by name or ID: a container, an
image or a volume (tried in that order unless --type says which)."""


def _register_inspect(group: CommandGroup, *, top_level: bool) -> None:
    if top_level:
        p = group.command(
            "inspect",
            "Display the configuration of object denoted by ID",
            description=INSPECT_DESCRIPTION,
        )
        p.usage = "rl inspect [options] {CONTAINER|IMAGE|VOLUME} [...]"
        p.add_argument(
            "-t",
            "--type",
            default="all",
            metavar="TYPE",
            help='Specify inspect-object type: container, image, volume or all (default "all")',
        )
    else:
        p = group.command(
            "inspect",
            "Display the configuration of a container",
            description="Displays the configuration of a container.",
        )
        p.usage = "rl container inspect [options] CONTAINER [CONTAINER...]"
        p.set_defaults(type="container")
    p.add_argument(
        "-f",
        "--format",
        default="json",
        help='Format the output to a Go template or json (default "json")',
    )
    p.add_argument(
        "-l", "--latest", action="store_true", help="Act on the latest container rl is aware of"
    )
    p.add_argument("-s", "--size", action="store_true", help="Display total file size")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=inspect_command)


def container_json(
    store: ContainerStore, record: Container, images: _Images, size: bool = False
) -> dict[str, Any]:
    """`inspect` of one container: the pure core fed with what the stores know."""
    from rootless.containers.inspect import InspectFacts, inspect_container
    from rootless.containers.storageview import COPY

    image = images.get(record.image_id)
    userdata = store.userdata(record.id)
    facts = InspectFacts(
        userdata=str(userdata),
        volumes_dir=str(store.root / "volumes"),
        log_path=str(userdata / "ctr.log"),
        driver="vfs" if (store.container_dir(record.id) / COPY).is_dir() else "overlay",
        image_config=image.config if image else {},
        image_digest=image.digest if image else "",
        size=_sizes(store, record, images) if size else None,
    )
    return inspect_container(record, _spec(store, record), facts)


# How long ps and inspect wait for a starting container's pid (a start takes ~50 ms; one
# that hangs is shown as it is after this).
READ_WAIT = 5.0


def settled(store: ContainerStore, record: Container) -> Container:
    """`record`, or, while its runner is starting it ("running" without a pid yet), the
    record once it has the pid: rl ps never shows a running container with Pid 0."""
    if record.state != "running" or record.container_pid:
        return record
    from rootless.containers.lifecycle import with_pid

    return with_pid(store, record, timeout=READ_WAIT)


def _inspector(
    kind: str, store: ContainerStore, images: _Images, size: bool
) -> Callable[[str], dict[str, Any] | None]:
    """A lookup of one kind of object by name: its inspect JSON, or None when not there."""
    if kind == "container":

        def container(name: str) -> dict[str, Any] | None:
            record = store.find(name)
            return container_json(store, settled(store, record), images, size) if record else None

        return container
    if kind == "image":

        def image(name: str) -> dict[str, Any] | None:
            from rootless.cli.images import inspect_image
            from rootless.images.store import ImageStore

            image_store = ImageStore.open()
            try:
                found = image_store.find(name)
                return inspect_image(image_store, found[0]) if found else None
            finally:
                image_store.close()

        return image

    def volume(name: str) -> dict[str, Any] | None:
        from rootless.volumes import VolumeStore

        volumes = VolumeStore(store.root, users_of=store.volume_users)
        found = volumes.find(name)
        return found.inspect(len(volumes.users_of(found.name))) if found else None

    return volume


def _not_found(kind: str, name: str) -> str:
    return {
        "container": f"no such container {name}",
        "image": f"{name}: image not known",
        "volume": f"no such volume {name}",
    }.get(kind, f'no such object: "{name}"')


def inspect_command(args: argparse.Namespace) -> int:
    from rootless.cli.output import print_json
    from rootless.errors import RlError

    kind = args.type
    if kind not in INSPECT_TYPES:
        raise RlError(f'invalid type "{kind}": must be "image", "container", "volume", or "all"')
    if args.latest and args.names:
        raise RlError("--latest and containers cannot be used together")
    if args.latest and kind not in ("container", "all"):
        raise RlError("--latest is only supported for containers")
    if not args.latest and not args.names:
        raise RlError("no names or ids specified")
    images = _Images()
    store = _open()
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        names = [store.latest().id] if args.latest else list(args.names)
        kinds = ("container", "image", "volume") if kind == "all" else (kind,)
        lookups = [_inspector(k, store, images, args.size) for k in kinds]
        for name in names:
            found = None
            for lookup in lookups:
                found = lookup(name)
                if found is not None:
                    break
            if found is None:
                errors.append(_not_found(kind, name))
            else:
                results.append(found)
    finally:
        store.close()
    if args.format and args.format.strip() != "json":
        from rootless import gotemplate

        for result in results:
            sys.stdout.write(gotemplate.render(args.format, result))
    else:
        print_json(results)
    for message in errors[1:]:
        print(f"error inspecting object: {message}", file=sys.stderr)
    if errors:
        raise RlError(f"inspecting object: {errors[0]}")
    return 0


# --- rename / exists ----------------------------------------------------------------------


def _register_rename(group: CommandGroup) -> None:
    p = group.command(
        "rename",
        "Rename an existing container",
        description="Renames an existing container.",
    )
    p.usage = "rl rename CONTAINER NAME"
    p.add_argument("args", nargs="*", metavar="CONTAINER NAME")
    p.set_defaults(func=rename_command)


def rename_command(args: argparse.Namespace) -> int:
    from rootless.containers.store import NAME_RE, ContainerLock
    from rootless.errors import RlError

    if len(args.args) != 2:
        raise RlError(f"accepts 2 arg(s), received {len(args.args)}")
    ref, new_name = args.args
    store = _open()
    try:
        record = store.get(ref)
        with ContainerLock(record.id):
            record = store.get(record.id)
            if new_name == record.name:
                return 0
            if not NAME_RE.fullmatch(new_name):
                raise RlError("names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*: invalid argument")
            owner = store.find(new_name)
            if owner is not None and owner.name == new_name:
                raise RlError(
                    f"renaming container {record.id}: name {new_name} already in use, cannot "
                    f"rename container {record.id}: container already exists"
                )
            store.rename(record.id, new_name)
    finally:
        store.close()
    return 0


def _register_exists(group: CommandGroup) -> None:
    p = group.command(
        "exists",
        "Check if a container exists in local storage",
        description="If the named container exists in local storage, rl container exists "
        "exits with 0, otherwise the exit code will be 1.",
    )
    p.usage = "rl container exists [options] CONTAINER"
    p.add_argument("--external", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("container", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=exists_command)


def exists_command(args: argparse.Namespace) -> int:
    from rootless.errors import RlError

    if len(args.container) != 1:
        raise RlError(f"accepts 1 arg(s), received {len(args.container)}")
    store = _open()
    try:
        return 0 if store.find(args.container[0]) is not None else 1
    finally:
        store.close()


# --- prune --------------------------------------------------------------------------------


def _register_prune(group: CommandGroup) -> None:
    p = group.command(
        "prune",
        "Remove all non running containers",
        description="Removes all non running containers.",
    )
    p.usage = "rl container prune [options]"
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FILTER",
        help="Provide filter values (label=KEY[=VALUE], label!=KEY[=VALUE], until=DURATION)",
    )
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.set_defaults(func=prune_command)


def _confirm(warning: str) -> bool:
    """podman's `[y/N]` prompt; EOF on stdin is an error, as in podman."""
    from rootless.errors import RlError

    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise RlError("EOF")
    return answer.strip().lower() in ("y", "yes")


def prune_command(args: argparse.Namespace) -> int:
    from rootless.containers import listing
    from rootless.containers.store import ContainerLock
    from rootless.errors import RlError

    filters = listing.parse_prune_filters(args.filter)
    if not args.force and not _confirm("WARNING! This will remove all non running containers."):
        return 0
    images = _Images()
    store = _open()
    errors: list[RlError] = []
    try:
        now = time.time()
        for record in sorted(store.containers(), key=lambda r: r.created):
            if not listing.prunable(record, filters, images.labels_of(record), now):
                continue
            try:
                with ContainerLock(record.id):
                    current = store.find(record.id)
                    if current is None or current.state not in listing.PRUNABLE_STATES:
                        continue
                    store.remove(current)
            except RlError as err:
                errors.append(err)
                continue
            print(record.id)
    finally:
        store.close()
    for earlier in errors[:-1]:
        print(f"Error: {earlier.message}", file=sys.stderr)
    if errors:
        raise errors[-1]
    return 0


# --- port ---------------------------------------------------------------------------------


def _register_port(group: CommandGroup) -> None:
    p = group.command(
        "port",
        "List port mappings or a specific mapping for the container",
        description="List port mappings for the CONTAINER, or look up the public-facing port "
        "that is NAT-ed to the PRIVATE_PORT.",
    )
    p.usage = "rl port [options] CONTAINER [PORT]"
    p.add_argument(
        "-a", "--all", action="store_true", help="Display port information for all containers"
    )
    p.add_argument(
        "-l", "--latest", action="store_true", help="Act on the latest container rl is aware of"
    )
    p.add_argument("args", nargs="*", metavar="CONTAINER [PORT]")
    p.set_defaults(func=port_command)


def port_command(args: argparse.Namespace) -> int:
    from rootless.containers import listing
    from rootless.errors import RlError

    positional = list(args.args)
    if not positional and not args.latest and not args.all:
        raise RlError("you must supply a running container name or id")
    if args.all and positional:
        raise RlError("no arguments are needed with --all")
    ref = None if args.latest or args.all else positional.pop(0)
    if len(positional) > 1:
        raise RlError("port formats are port/protocol. too many arguments")
    wanted_text = positional[0] if positional else ""
    wanted = listing.parse_private_port(wanted_text) if wanted_text else ""
    store = _open()
    try:
        if args.all:
            records = sorted(store.containers(), key=lambda r: r.created)
        elif args.latest:
            records = [store.latest()]
        else:
            assert ref is not None
            records = [store.get(ref)]
    finally:
        store.close()
    for record in records:
        mappings = listing.port_mappings(record.config)
        if record.state != "running" or not mappings:
            continue
        found = False
        for private, public in listing.port_lines(mappings):
            prefix = f"{record.short_id}\t" if args.all else ""
            if not wanted:
                print(f"{prefix}{private} -> {public}")
            elif private == wanted:
                print(f"{prefix}{public}")
                found = True
                break
        if wanted and not found:
            raise RlError(f'failed to find published port "{wanted_text}"')
    return 0


# --- wait ---------------------------------------------------------------------------------


def _register_wait(group: CommandGroup) -> None:
    p = group.command(
        "wait",
        "Block on one or more containers",
        description="Block until one or more containers stop and then print their exit codes.",
    )
    p.usage = "rl wait [options] CONTAINER [CONTAINER...]"
    p.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="STATE",
        help="Condition to wait on: stopped (default), exited, created, running, paused, "
        "healthy, unhealthy",
    )
    p.add_argument(
        "-i",
        "--interval",
        default="250ms",
        help='Time Interval to wait before polling for completion (default "250ms")',
    )
    p.add_argument(
        "-l", "--latest", action="store_true", help="Act on the latest container rl is aware of"
    )
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=wait_command)


def wait_command(args: argparse.Namespace) -> int:
    from rootless.containers import listing
    from rootless.errors import RlError

    if not args.containers and not args.latest:
        raise RlError('"rl wait" requires a name, id, or the "--latest" flag')
    if args.containers and args.latest:
        raise RlError("--latest and containers cannot be used together")
    conditions = listing.parse_conditions(args.condition)
    interval = listing.parse_interval(args.interval)
    if interval <= 0:
        raise RlError(f'invalid --interval "{args.interval}": it must be more than 0')
    store = _open()
    try:
        records = [store.latest()] if args.latest else [store.get(c) for c in args.containers]
        for record in records:
            print(_wait_for(store, record, conditions, interval), flush=True)
    finally:
        store.close()
    return 0


def _wait_for(
    store: ContainerStore, record: Container, conditions: list[str], interval: float
) -> int:
    """Poll the store until `record` meets a condition; its exit code (or -1)."""
    from rootless.containers import listing
    from rootless.containers.store import no_such_container

    while True:
        current = store.find(record.id)
        if current is None:  # removed meanwhile: by its monitor (--rm), which kept the code
            from rootless.containers.lifecycle import removed_exit_code

            code = removed_exit_code(record.id)
            if code is not None and {"stopped", "exited"} & set(conditions):
                return code
            raise no_such_container(record.name)
        result = listing.wait_result(current, conditions)
        if result is not None:
            return result
        time.sleep(interval)
