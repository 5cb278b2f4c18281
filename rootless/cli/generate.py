"""`rl generate systemd`: a systemd user unit for a container (the core: rootless.systemd.units)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container
    from rootless.systemd.units import ContainerInfo

SYSTEMD_DESCRIPTION = """\
Generate a systemd user unit for a container, to run it as a user service (with
`loginctl enable-linger` it starts at boot). By default the unit prints to stdout.

Without --new the unit starts and stops the existing container (Type=forking: systemd follows
the container's monitor through its pid file). With --new each start creates a fresh
container from the command line that made this one (`rl run --rm --replace -d …`), and the
monitor tells systemd when it runs (Type=notify, --sdnotify=conmon).

Install a unit with:
  rl generate systemd --new --name --files CONTAINER
  mv container-NAME.service ~/.config/systemd/user/
  systemctl --user daemon-reload && systemctl --user enable --now container-NAME.service"""


def register(commands: CommandGroup) -> None:
    group = commands.group("generate", "Generate structured data based on containers")
    p = group.command("systemd", "Generate systemd units", description=SYSTEMD_DESCRIPTION)
    p.usage = "rl generate systemd [options] CONTAINER"
    add = p.add_argument
    add(
        "--after",
        action="append",
        default=[],
        metavar="UNIT",
        help="Add dependencies order to the generated unit file",
    )
    add(
        "--container-prefix",
        default="container",
        metavar="PREFIX",
        help='Systemd unit name prefix for containers (default "container")',
    )
    add(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="ENV",
        help="Set environment variables to the systemd unit files",
    )
    add(
        "-f",
        "--files",
        action="store_true",
        help="Generate .service files instead of printing to stdout",
    )
    add("--format", metavar="FORMAT", help="Print the created units in specified format (json)")
    add("-n", "--name", action="store_true", help="Use container names instead of IDs")
    add(
        "--new",
        action="store_true",
        help="Create a new container instead of starting an existing one",
    )
    add("--no-header", action="store_true", help="Skip header generation")
    add(
        "--requires",
        action="append",
        default=[],
        metavar="UNIT",
        help="Similar to wants, but declares stronger requirement dependencies",
    )
    add(
        "--restart-policy",
        default=None,
        metavar="POLICY",
        help='Systemd restart-policy (default "on-failure")',
    )
    add("--restart-sec", type=int, default=None, metavar="SECONDS", help="Systemd restart-sec")
    add(
        "--separator",
        default="-",
        metavar="SEP",
        help='Systemd unit name separator between name/id and prefix (default "-")',
    )
    add("--start-timeout", type=int, default=None, metavar="SECONDS", help="Start timeout override")
    add(
        "--stop-timeout",
        "-t",
        "--time",
        dest="stop_timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="Stop timeout override (default: the container's, 10)",
    )
    add(
        "--wants",
        action="append",
        default=[],
        metavar="UNIT",
        help="Add (weak) requirement dependencies to the generated unit file",
    )
    add("container", nargs="?", metavar="CONTAINER")
    p.set_defaults(func=systemd_command)


def systemd_command(args: argparse.Namespace) -> int:
    import os
    import time

    from rootless import __version__
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError
    from rootless.systemd import units

    if not args.container:
        raise RlError("accepts 1 arg(s), received 0")
    if args.format not in (None, "", "json"):
        raise RlError(f"unsupported format {args.format!r}: use json")
    for value, flag in ((args.restart_sec, "--restart-sec"), (args.stop_timeout, "--time")):
        if value is not None and value < 0:
            raise RlError(f'invalid argument "{value}" for "{flag}" flag: must not be negative')
    options = units.GenerateOptions(
        new=args.new,
        use_name=args.name,
        restart_policy=args.restart_policy,
        restart_sec=args.restart_sec,
        stop_timeout=args.stop_timeout,
        container_prefix=args.container_prefix,
        separator=args.separator,
        header=not args.no_header,
        start_timeout=args.start_timeout,
        env=args.env,
        after=args.after,
        wants=args.wants,
        requires=args.requires,
    )
    store = ContainerStore.open()
    try:
        record = store.find(args.container)
    finally:
        store.close()
    if record is None:
        raise RlError(
            f"{args.container} does not refer to a container or pod: no such container "
            "(rl has no pods)"
        )
    try:
        unit = units.container_unit(
            container_info(record),
            options,
            rl=rl_command(),
            value_flags=run_value_flags(),
            version=__version__,
            now=time.strftime("%a %b %e %H:%M:%S %Z %Y"),
        )
    except units.UnitError as err:
        raise RlError(str(err)) from None
    if args.files:
        path = os.path.join(os.getcwd(), unit.name)
        try:
            with open(path, "w") as f:
                f.write(unit.text)
        except OSError as exc:
            raise RlError(f"cannot write {path}: {exc.strerror}") from None
        if args.format == "json":
            from rootless.cli.output import print_json

            print_json({unit.stem: path})
        else:
            print(path)
    elif args.format == "json":
        from rootless.cli.output import print_json

        print_json({unit.stem: unit.text})
    else:
        sys.stdout.write(unit.text)
    return 0


def container_info(record: Container) -> ContainerInfo:
    from rootless.paths import data_dir, runtime_dir
    from rootless.systemd.notify import pidfile_path
    from rootless.systemd.units import ContainerInfo

    config = record.config
    return ContainerInfo(
        id=record.id,
        name=record.name,
        stop_timeout=int(config.get("stop_timeout", 10)),
        restart=str(config.get("restart") or "no"),
        create_command=config.get("create_command"),
        pidfile=str(pidfile_path(record.id)),
        requires_mounts=(str(runtime_dir()), str(data_dir())),
    )


def rl_command() -> list[str]:
    """How the unit runs rl: this executable (absolute), and --root when the store is not
    the default one."""
    import os
    import shutil

    program = sys.argv[0] if sys.argv else ""
    if os.path.basename(program).startswith("rl") and os.access(program, os.X_OK):
        argv = [os.path.abspath(program)]
    elif shutil.which("rl"):
        argv = [str(shutil.which("rl"))]
    else:
        argv = [sys.executable, "-m", "rootless"]
    root = os.environ.get("RL_ROOT")
    if root:
        argv += ["--root", root]
    return argv


def run_value_flags() -> frozenset[str]:
    """The flags of `rl run` that take a value (to take recorded command lines apart)."""
    from rootless.cli.run import _add_run_flags

    parser = argparse.ArgumentParser(add_help=False)
    _add_run_flags(parser)
    return frozenset(
        option
        for action in parser._actions
        if action.option_strings and action.nargs != 0
        for option in action.option_strings
    )
