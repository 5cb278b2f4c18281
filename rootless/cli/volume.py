"""`rl volume create/ls/inspect/rm/prune/exists`, with podman's flags, output and exit codes."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.volumes import Volume, VolumeStore


def register(commands: CommandGroup) -> None:
    group = commands.group("volume", "Manage volumes")

    p = group.command("create", "Create a new volume")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-d", "--driver", default="local", help="Specify volume driver name")
    p.add_argument("-l", "--label", action="append", default=[], help="Set metadata for a volume")
    p.add_argument("-o", "--opt", action="append", default=[], help="Set driver specific options")
    p.add_argument("--ignore", action="store_true", help="Don't fail if volume already exists")
    p.set_defaults(func=run_create)

    p = group.command("ls", "List volumes", aliases=["list"])
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter volume output")
    p.add_argument("--format", help="Format volume output using JSON or a Go template")
    p.add_argument("-n", "--noheading", action="store_true", help="Do not print headers")
    p.add_argument("-q", "--quiet", action="store_true", help="Print volume output in quiet mode")
    p.set_defaults(func=run_ls)

    p = group.command("inspect", "Display detailed information on one or more volumes")
    p.add_argument("names", nargs="*", metavar="VOLUME")
    p.add_argument("-a", "--all", action="store_true", help="Inspect all volumes")
    p.add_argument("-f", "--format", help="Format volume output using a Go template")
    p.set_defaults(func=run_inspect)

    p = group.command("rm", "Remove one or more volumes", aliases=["remove"])
    p.add_argument("names", nargs="*", metavar="VOLUME")
    p.add_argument("-a", "--all", action="store_true", help="Remove all volumes")
    p.add_argument("-f", "--force", action="store_true", help="Do not error on missing volumes")
    p.add_argument("-t", "--time", type=int, default=10, help="Seconds to wait for containers")
    p.set_defaults(func=run_rm)

    p = group.command("prune", "Remove all unused volumes")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values")
    p.set_defaults(func=run_prune)

    p = group.command("exists", "Check if volume exists in local storage")
    p.add_argument("name", metavar="VOLUME")
    p.set_defaults(func=run_exists)


def _store() -> VolumeStore:
    from rootless.volumes import VolumeStore

    return VolumeStore(users_of=_containers_using)


def _containers_using(name: str) -> list[str]:
    """IDs of the containers whose mounts use volume `name`."""
    from rootless.containers.store import ContainerStore

    return ContainerStore.open().volume_users(name)


# --- create ----------------------------------------------------------------------------


def parse_labels(values: Sequence[str]) -> dict[str, str]:
    """`--label k=v` (a bare `k` is k="")."""
    labels: dict[str, str] = {}
    for value in values:
        key, _, val = value.partition("=")
        if not key:
            from rootless.errors import RlError

            raise RlError(f'invalid label "{value}": the key must not be empty')
        labels[key] = val
    return labels


def run_create(args: argparse.Namespace) -> int:
    from rootless.errors import RlError

    if args.driver != "local":
        raise RlError(f'volume driver "{args.driver}" is not available: rl supports "local" only')
    if args.opt:
        raise RlError(
            f"volume options are not supported yet (--opt {args.opt[0]}): "
            "create the volume without --opt"
        )
    volume = _store().create(
        args.name or None, parse_labels(args.label), ignore_existing=args.ignore
    )
    print(volume.name)
    return 0


# --- ls / inspect ------------------------------------------------------------------------

_FILTER_KEYS = ("name", "label", "driver", "scope", "dangling")


def parse_filters(
    values: Sequence[str], allowed: Sequence[str] = _FILTER_KEYS
) -> dict[str, list[str]]:
    from rootless.errors import RlError

    filters: dict[str, list[str]] = {}
    for value in values:
        key, eq, val = value.partition("=")
        if not eq:
            raise RlError(f'invalid filter "{value}": use KEY=VALUE')
        if key not in allowed:
            raise RlError(f'"{key}" is an invalid volume filter')
        filters.setdefault(key, []).append(val)
    return filters


def matches(volume: Volume, filters: dict[str, list[str]], used: Callable[[str], bool]) -> bool:
    """Values of one key are alternatives; different keys must all match (podman's rule)."""
    from rootless.errors import RlError

    for key, values in filters.items():
        ok = False
        for value in values:
            if key == "name":
                try:
                    ok = re.search(value, volume.name) is not None
                except re.error as exc:
                    raise RlError(f"invalid name filter {value!r}: {exc}") from exc
            elif key == "label":
                lkey, eq, lval = value.partition("=")
                ok = lkey in volume.labels and (not eq or volume.labels[lkey] == lval)
            elif key in ("driver", "scope"):
                ok = value == "local"
            elif key == "dangling":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise RlError(f'invalid dangling filter value "{value}": use true or false')
                ok = (not used(volume.name)) == (value.lower() in ("true", "1"))
            if ok:
                break
        if not ok:
            return False
    return True


_HEADERS = {"Name": "VOLUME NAME", "MountCount": "MOUNT COUNT", "CreatedAt": "CREATED AT"}


def render(template: str, obj: dict[str, Any]) -> str:
    """One object through a Go template (rootless.gotemplate), without the final newline."""
    from rootless.gotemplate import render as render_template

    return render_template(template, obj).removesuffix("\n")


def _tabular(template: str, objs: Sequence[dict[str, Any]], header: bool) -> str:
    from rootless.gotemplate import render_table

    return render_table(template, objs, _HEADERS, heading=header)


def run_ls(args: argparse.Namespace) -> int:
    from rootless.cli.output import print_json

    store = _store()
    filters = parse_filters(args.filter)
    volumes = [v for v in store.list() if matches(v, filters, lambda n: bool(store.users_of(n)))]
    if args.quiet:
        for v in volumes:
            print(v.name)
        return 0
    objs = [v.inspect(len(store.users_of(v.name))) for v in volumes]
    fmt = args.format
    if fmt == "json":
        print_json(objs)
        return 0
    if not volumes:
        return 0  # podman prints nothing at all, not even the header
    if fmt and not fmt.startswith("table"):
        for o in objs:
            print(render(fmt, o))
        return 0
    template = fmt[len("table") :].strip() if fmt else "{{.Driver}}\t{{.Name}}"
    sys.stdout.write(_tabular(template, objs, header=not args.noheading))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from rootless.cli.output import print_json
    from rootless.errors import RlError

    if not args.names and not args.all:
        raise RlError("provide one or more volume names or use --all")
    if args.names and args.all:
        raise RlError("--all and naming volumes cannot be used together")
    store = _store()
    found: list[Volume] = []
    missing: list[str] = []
    if args.all:
        found = store.list()
    for name in args.names:
        volume = store.find(name)
        if volume is None:
            missing.append(name)
        else:
            found.append(volume)
    objs = [v.inspect(len(store.users_of(v.name))) for v in found]
    if args.format and args.format != "json":
        for o in objs:
            print(render(args.format, o))
    else:
        print_json(objs)
    for name in missing[:-1]:
        print(f"error inspecting object: no such volume {name}", file=sys.stderr)
    if missing:
        raise RlError(f"inspecting object: no such volume {missing[-1]}")
    return 0


# --- rm / prune / exists -----------------------------------------------------------------


def run_rm(args: argparse.Namespace) -> int:
    from rootless.errors import RlError

    if bool(args.names) == bool(args.all):
        raise RlError("choose either one or more volumes or all")
    store = _store()
    names = [v.name for v in store.list()] if args.all else list(args.names)
    errors: list[RlError] = []
    for name in names:
        try:
            store.remove(name, force=args.force)
        except RlError as err:
            if args.force and not store.exists(name):
                continue
            errors.append(err)
            continue
        print(name)
    for earlier in errors[:-1]:
        print(f"Error: {earlier.message}", file=sys.stderr)
    if errors:
        last = errors[-1]
        # podman exits 1 when a volume is missing, 2 when one is in use
        raise RlError(last.message, exit_code=last.exit_code if last.exit_code != 125 else 1)
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from rootless.errors import RlError

    store = _store()
    filters = parse_filters(args.filter, allowed=("label",))
    unused = [
        v
        for v in store.list()
        if not store.users_of(v.name) and matches(v, filters, lambda n: False)
    ]
    if not args.force:
        print(
            "WARNING! This will remove all volumes not used by at least one container. "
            "The following volumes will be removed:"
        )
        for v in unused:
            print(v.name)
        print("Are you sure you want to continue? [y/N] ", end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    errors: list[RlError] = []
    for v in unused:
        try:
            store.remove(v.name)
        except RlError as err:
            errors.append(err)
            continue
        print(v.name)
    for earlier in errors[:-1]:
        print(f"Error: {earlier.message}", file=sys.stderr)
    if errors:
        raise errors[-1]
    return 0


def run_exists(args: argparse.Namespace) -> int:
    return 0 if _store().exists(args.name) else 1
