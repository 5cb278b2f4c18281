"""`rl image create-demo`: a busybox image built on this host, to try rl without a registry."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup

DEMO_NAME = "localhost/rl-demo:latest"  # rootless.images.demo.DEMO_NAME, without importing it


def register(commands: CommandGroup) -> None:
    image = commands.group("image", "Manage images")
    parser = image.command(
        "create-demo",
        "Create a small busybox demo image from this host's busybox-static",
        description=(
            "Create a small busybox demo image from this host's /bin/busybox (Debian's\n"
            "busybox-static package), with no registry or network needed. Its default\n"
            f"command prints a greeting. Default name: {DEMO_NAME}"
        ),
    )
    parser.add_argument("name", nargs="?", default=DEMO_NAME, metavar="NAME", help="image name")
    parser.set_defaults(func=_run_create_demo)


def _run_create_demo(args: argparse.Namespace) -> int:
    from rootless.images.demo import create_demo

    image_id = create_demo(args.name)
    sys.stdout.write(f"{image_id}\n")
    return 0
