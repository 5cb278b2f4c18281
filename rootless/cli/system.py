"""System commands: info, doctor (system check), system df, system reset."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup

INFO_HELP = "Display rl system information"
DOCTOR_HELP = "Check that this host can run rootless containers, and say how to fix it"
DOCTOR_DESCRIPTION = f"""{DOCTOR_HELP}.

Checks subordinate ids, newuidmap/newgidmap, user namespaces (for real), overlayfs in a user
namespace, XDG_RUNTIME_DIR, /dev/fuse, /dev/net/tun, cgroup delegation and systemd lingering.
Each problem comes with the command that fixes it.

Exit status: 0 when nothing is an error (warnings are allowed: rl works with less),
1 when at least one check is an error, 125 when the check itself could not run."""


def register(commands: CommandGroup) -> None:
    system = commands.group("system", "Manage rl")
    for group in (commands, system):
        info = group.command("info", INFO_HELP, description=f"{INFO_HELP}.")
        info.add_argument(
            "-f",
            "--format",
            default="",
            metavar="FORMAT",
            help="Change the output format to JSON or a Go template",
        )
        info.set_defaults(func=run_info)
    for group, name in ((commands, "doctor"), (system, "check")):
        doctor = group.command(name, DOCTOR_HELP, description=DOCTOR_DESCRIPTION)
        doctor.add_argument(
            "-f",
            "--format",
            default="",
            choices=["", "json"],
            metavar="FORMAT",
            help="Change the output format to JSON",
        )
        doctor.set_defaults(func=run_doctor)


def run_info(args: argparse.Namespace) -> int:
    from rootless import gotemplate, info

    data = info.gather()
    fmt = args.format
    if fmt == "json":
        from rootless.cli.output import print_json

        print_json(data)
    elif fmt in ("", "yaml"):
        from rootless import yamltext

        sys.stdout.write(yamltext.dump(data))
    else:
        sys.stdout.write(gotemplate.render(fmt, data))
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    from rootless import doctor, hostfacts

    findings = doctor.diagnose(hostfacts.collect_facts())
    if args.format == "json":
        from rootless.cli.output import print_json

        print_json([f.as_dict() for f in findings])
    else:
        sys.stdout.write(doctor.render(findings))
    return doctor.exit_code(findings)
