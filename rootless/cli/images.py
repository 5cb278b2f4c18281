"""Image commands: images, load, save, import, rmi, tag, image inspect/exists/prune."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup


def register(commands: CommandGroup) -> None:
    pass
