"""The CLI builds a real parser only for the command it runs; it must parse as the full one."""

from __future__ import annotations

import argparse
import importlib

import pytest

from rootless import __version__
from rootless.cli.main import (
    COMMAND_HOMES,
    COMMAND_MODULES,
    CommandGroup,
    Parser,
    asks_version,
    build_parser,
    command_word,
    main,
)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _shape(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Option strings and nested subcommands, recursively: what parsing depends on."""
    shape = [tuple(a.option_strings) or (a.dest,) for a in parser._actions]
    for name, sub in sorted(_subcommands(parser).items()):
        shape += [(name, *opts) for opts in _shape(sub)]
    return shape


FULL, _ = build_parser()
COMMANDS = sorted(_subcommands(FULL))


@pytest.mark.parametrize("name", COMMANDS)
def test_partial_parser_matches_the_full_one(name: str) -> None:
    partial, _ = build_parser(only=name)
    assert _shape(_subcommands(partial)[name]) == _shape(_subcommands(FULL)[name])


def test_every_familiar_command_is_there() -> None:
    for name in ("images", "load", "save", "import", "rmi", "tag", "run", "ps", "rm", "info"):
        assert name in COMMANDS


def test_unknown_command_falls_back_to_the_full_parser() -> None:
    partial, _ = build_parser(only="no-such-command")
    assert sorted(_subcommands(partial)) == COMMANDS


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["run", "--rm", "x"], "run"),
        (["--root", "/s", "images"], "images"),
        (["--log-level", "debug", "--root=/s", "image", "ls"], "image"),
        (["--storage-driver", "vfs", "-v"], None),
        ([], None),
    ],
)
def test_command_word(argv: list[str], word: str | None) -> None:
    assert command_word(argv) == word


def _registered(module: str) -> tuple[set[str], set[str]]:
    """The top-level commands (aliases included) and families a command module registers."""
    commands = CommandGroup(Parser(prog="rl"))
    importlib.import_module(module).register(commands)
    return set(commands._sub.choices), set(commands._groups)


def test_command_homes_name_the_module_that_registers_each_command() -> None:
    leaves: dict[str, str] = {}
    families: set[str] = set()
    for module in COMMAND_MODULES:
        names, groups = _registered(module)
        families |= groups
        leaves.update(dict.fromkeys(names - groups, module))
    # Every top-level command has its home (so `rl CMD` imports one module), and no family
    # does (a family's subcommands come from several modules).
    assert leaves == COMMAND_HOMES
    assert not families & set(COMMAND_HOMES)


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["-v"], ["--root", "/x", "--version"], ["--log-level", "debug", "-v"]],
)
def test_version_is_answered_without_a_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as leaving:
        main(argv)
    assert leaving.value.code == 0
    assert capsys.readouterr().out == f"rl version {__version__}\n"


@pytest.mark.parametrize("argv", [["--root", "-v", "ps"], ["ps", "-v"], ["run", "--help"], []])
def test_version_is_not_taken_from_a_value_or_a_command(argv: list[str]) -> None:
    assert not asks_version(argv)
