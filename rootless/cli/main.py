"""Entry point of `rl`: global options, command dispatch, and the one-line error contract.

Start-up time is a feature, so this module and the command modules import only the standard
library at import time; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, cast

from rootless import __version__, log
from rootless.errors import EXIT_ERROR, RlError

# Each module defines register(commands: CommandGroup) -> None.
COMMAND_MODULES = (
    "rootless.cli.images",
    "rootless.cli.system",
    "rootless.cli.volume",
    "rootless.cli.run",
    "rootless.cli.demo",
    "rootless.cli.registry",
    "rootless.cli.tools",
    "rootless.cli.lifecycle",
    "rootless.cli.logs",
    "rootless.cli.health",
    "rootless.cli.containers",
    "rootless.cli.cgroups",
    "rootless.cli.generate",
)

# The module that registers each top-level command (aliases too), so that `rl run` imports one
# command module rather than all of them (~4 ms of every start; start-up is issue 3's target).
# Families (`rl image …`) and words not listed here load every module, as does a listed word
# its module turns out not to register. tests/unit/test_cli_main.py checks this table.
COMMAND_HOMES = {
    **dict.fromkeys(
        ("images", "load", "save", "import", "rmi", "tag", "untag"), "rootless.cli.images"
    ),
    **dict.fromkeys(("info", "doctor"), "rootless.cli.system"),
    **dict.fromkeys(("run", "create", "rm"), "rootless.cli.run"),
    **dict.fromkeys(("pull", "push", "login", "logout"), "rootless.cli.registry"),
    **dict.fromkeys(
        ("exec", "top", "cp", "diff", "commit", "mount", "unmount", "umount", "unshare"),
        "rootless.cli.tools",
    ),
    **dict.fromkeys(("start", "stop", "kill", "restart", "attach"), "rootless.cli.lifecycle"),
    "logs": "rootless.cli.logs",
    **dict.fromkeys(("ps", "inspect", "rename", "port", "wait"), "rootless.cli.containers"),
    **dict.fromkeys(("stats", "update", "pause", "unpause"), "rootless.cli.cgroups"),
}


class PodmanHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help in podman's shape: description, `Usage:` block, `Options:` block."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)

    def add_usage(
        self,
        usage: str | None,
        actions: object,
        groups: object,
        prefix: str | None = None,
    ) -> None:
        # argparse passes prefix="" when it computes a subcommand's prog: keep that untouched.
        if prefix is None:
            prefix = "Usage:\n  "
        super().add_usage(usage, actions, groups, prefix)  # type: ignore[arg-type]


class Parser(argparse.ArgumentParser):
    """argparse with podman's conventions: bad flags exit 125 with one `Error:` line."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", PodmanHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._optionals.title = "Options"
        self._positionals.title = "Arguments"

    def format_help(self) -> str:
        """Podman's order: what the command does, then Usage, then the option groups."""
        formatter = self._get_formatter()
        formatter.add_text(self.description)
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        for group in self._action_groups:
            formatter.start_section(group.title)
            formatter.add_text(group.description)
            formatter.add_arguments(group._group_actions)
            formatter.end_section()
        formatter.add_text(self.epilog)
        return formatter.format_help()

    def error(self, message: str) -> NoReturn:
        print(f"Error: {message}", file=sys.stderr)
        print(f"See '{self.prog} --help'", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


class _Unused:
    """Stands in for the parser of a command this invocation does not run.

    Building all ~40 argparse parsers costs ~10 ms of every start, and start-up time is a
    benchmark target; every call on this object is accepted and ignored.
    """

    def __getattr__(self, name: str) -> Any:
        return self._ignore

    def _ignore(self, *args: object, **kwargs: object) -> _Unused:
        return self


class CommandGroup:
    """A set of subcommands (`rl …`, `rl image …`): a thin layer over argparse subparsers.

    With `only`, just the command of that name (or alias) gets a real parser.
    """

    def __init__(
        self,
        parser: argparse.ArgumentParser,
        title: str = "Available Commands",
        only: str | None = None,
    ) -> None:
        self.parser = parser
        self._sub = parser.add_subparsers(title=title, metavar="COMMAND", parser_class=Parser)
        self._groups: dict[str, CommandGroup] = {}
        self.only = only
        self.matched = False

    def command(
        self, name: str, summary: str, *, aliases: Sequence[str] = (), description: str = ""
    ) -> argparse.ArgumentParser:
        if self.only is not None and self.only != name and self.only not in aliases:
            return cast(argparse.ArgumentParser, _Unused())
        self.matched = True
        parser = self._sub.add_parser(
            name,
            aliases=list(aliases),
            help=summary,
            description=description or summary,
        )
        # Like podman's global flags, --storage-driver also works after the command word.
        parser.add_argument("--storage-driver", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return parser

    def group(self, name: str, summary: str, *, aliases: Sequence[str] = ()) -> CommandGroup:
        """A nested family such as `rl image …`; `rl image` alone prints its help."""
        if name in self._groups:
            return self._groups[name]
        parser = self.command(name, summary, aliases=aliases)
        if isinstance(parser, _Unused):
            return cast(CommandGroup, parser)
        group = CommandGroup(parser)
        parser.set_defaults(func=lambda args, p=parser: _print_help(p))
        self._groups[name] = group
        return group


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


# Global options that take a value, so that the command word can be found without argparse.
_GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--log-level", "--root", "--storage-driver"})


def _scan(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The global flags before the subcommand (their values left out), and the subcommand."""
    flags: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            return flags, arg
        flags.append(arg)
        i += 2 if arg in _GLOBAL_OPTIONS_WITH_VALUE else 1
    return flags, None


def command_word(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (`rl --root X run …` -> "run"), if any."""
    return _scan(argv)[1]


def asks_version(argv: Sequence[str]) -> bool:
    """`rl [global options] --version`, with no command: answered without any parser (the
    full one, with every command's, takes ~50 ms to build)."""
    flags, _ = _scan(argv)
    return "-v" in flags or "--version" in flags


def build_parser(only: str | None = None) -> tuple[Parser, CommandGroup]:
    """The parser of `rl`; with `only`, real subparsers for that command alone (falling back
    to all of them when no command has that name, so argparse can list the choices)."""
    parser = Parser(
        prog="rl",
        description="Manage pods, containers and images, rootless and without a daemon.",
    )
    parser.add_argument("-v", "--version", action="version", version=f"rl version {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("RL_LOG_LEVEL", "warn"),
        choices=["debug", "info", "warn", "error"],
        help="Log messages above specified level (default: warn)",
    )
    parser.add_argument(
        "--root",
        metavar="PATH",
        help="Path to the image and container store (default: ~/.local/share/rl)",
    )
    parser.add_argument(
        "--storage-driver",
        metavar="DRIVER",
        help="Storage driver for container root filesystems: auto, overlay, fuse, vfs",
    )
    commands = CommandGroup(parser, only=only)
    home = COMMAND_HOMES.get(only) if only is not None else None
    for name in (home,) if home else COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    if only is not None and not commands.matched:
        return build_parser()
    parser.set_defaults(func=lambda args: _print_help(parser))
    return parser, commands


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # Most of a command's start is imports (`rl pull`: trio and httpx, ~100 ms), and each
    # 700 allocations they trigger a collection of the young objects, which finds nothing to
    # free: ~10% of their CPU. Collections stay, 100x rarer (long-running commands still
    # collect their cycles).
    gc.set_threshold(100_000)
    argv = sys.argv[1:] if argv is None else argv
    if asks_version(argv):
        print(f"rl version {__version__}")
        raise SystemExit(0)
    parser, _ = build_parser(only=command_word(argv))
    args = parser.parse_args(argv)
    log.configure(args.log_level)
    if args.root:
        os.environ["RL_ROOT"] = os.path.abspath(args.root)
    if args.storage_driver:
        os.environ["RL_STORAGE_DRIVER"] = args.storage_driver
    debug = args.log_level == "debug"
    try:
        code = args.func(args)
    except RlError as err:
        if debug:
            log.logger().exception("rl error")
        print(f"Error: {err.message}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`rl images | head`): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except Exception as exc:  # the contract: never a traceback unless asked for
        if debug:
            log.logger().exception("internal error")
        print(
            f"Error: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --log-level debug for details and report it)",
            file=sys.stderr,
        )
        code = EXIT_ERROR
    # The interpreter's collections at exit would examine every object of the ~190 modules
    # loaded by now, ~5-10 ms of every command (start-up is issue 3's target); frozen, they are
    # skipped, and the end of the process releases them anyway.
    gc.freeze()
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
