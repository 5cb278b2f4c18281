"""Container commands: run, plus the minimal rm and ps needed to list and clean up after it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container
    from rootless.runtime.options import RunOptions

RUN_DESCRIPTION = """\
Runs a command in a new container from the given image.

Networking: rl has no user-mode networking yet, so --network is `none` by default (the
container gets its own network namespace with only loopback); `--network host` shares the
host's network. Detached containers (-d) arrive with the container lifecycle commands.

Debugging: --print-spec prints the OCI runtime-spec config.json rl would run, without creating
or running anything. Every created container also keeps it in
<store>/containers/<id>/userdata/config.json."""


def register(commands: CommandGroup) -> None:
    run = commands.command(
        "run",
        "Run a command in a new container",
        description=RUN_DESCRIPTION,
    )
    run.usage = "rl run [options] IMAGE [COMMAND [ARG...]]"
    _add_run_flags(run)
    run.set_defaults(func=run_command)

    rm = commands.command(
        "rm", "Remove one or more containers", description="Removes one or more containers."
    )
    rm.usage = "rl rm [options] CONTAINER [CONTAINER...]"
    rm.add_argument(
        "-f", "--force", action="store_true", help="Force removal of a running container"
    )
    rm.add_argument("-a", "--all", action="store_true", help="Remove all containers")
    rm.add_argument(
        "-v",
        "--volumes",
        action="store_true",
        help="Remove anonymous volumes associated with the container",
    )
    rm.add_argument("containers", nargs="*", metavar="CONTAINER")
    rm.set_defaults(func=rm_command)

    ps = commands.command(
        "ps", "List containers", description="Prints out information about the containers."
    )
    ps.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="Show all the containers, default is only running containers",
    )
    ps.add_argument(
        "-q", "--quiet", action="store_true", help="Print the numeric IDs of the containers only"
    )
    ps.add_argument("--no-trunc", action="store_true", help="Display the extended information")
    ps.set_defaults(func=ps_command)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add(
        "--cap-add",
        action="append",
        default=[],
        metavar="CAP",
        help="Add capabilities to the container",
    )
    add(
        "--cap-drop",
        action="append",
        default=[],
        metavar="CAP",
        help="Drop capabilities from the container",
    )
    add(
        "-d",
        "--detach",
        action="store_true",
        help="Run container in background and print container ID (not supported yet)",
    )
    add(
        "--entrypoint",
        metavar="CMD",
        help='Overwrite the image\'s ENTRYPOINT (a command or a JSON array; "" clears it)',
    )
    add(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="ENV",
        help="Set environment variables in container (KEY=VALUE, KEY from the host, PREFIX*)",
    )
    add(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="Read in a file of environment variables",
    )
    add(
        "--env-host",
        action="store_true",
        help="Use all current host environment variables in container",
    )
    add(
        "--group-add",
        action="append",
        default=[],
        metavar="GROUP",
        help="Add additional groups to the primary container process",
    )
    add("--hostname", metavar="NAME", help="Set container hostname")
    add(
        "--init",
        action="store_true",
        help="Run an init inside the container that forwards signals and reaps processes",
    )
    add("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    add(
        "-l",
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Set metadata on container",
    )
    add(
        "--mount",
        action="append",
        default=[],
        metavar="MOUNT",
        help="Attach a filesystem mount to the container",
    )
    add("--name", help="Assign a name to the container")
    add(
        "--network",
        "--net",
        default="",
        metavar="MODE",
        help="Connect a container to a network: none (default, loopback only) or host",
    )
    add(
        "--print-spec",
        action="store_true",
        help="Print the OCI runtime spec (config.json) instead of running (debugging)",
    )
    add("--privileged", action="store_true", help="Give extended privileges to container")
    add(
        "--pull",
        default="missing",
        metavar="POLICY",
        help="Pull image policy: missing (default: pull only when not in the local store), "
        "always, newer (pull when the registry has another image, else use the local one), never",
    )
    add("--read-only", action="store_true", help="Make containers root filesystem read-only")
    add(
        "--read-only-tmpfs",
        default="true",
        choices=["true", "false"],
        help="When running --read-only, mount tmpfs on /run, /tmp and /var/tmp (default true)",
    )
    add("--rm", action="store_true", help="Remove container (and anonymous volumes) after exit")
    add(
        "--rootfs",
        action="store_true",
        help="The first argument is not an image but the rootfs to the exploded container",
    )
    add(
        "--security-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="Security options: seccomp=unconfined|PROFILE.json, no-new-privileges, "
        "mask=PATHS, unmask=PATHS|ALL",
    )
    add("--shm-size", default="64m", metavar="SIZE", help="Size of /dev/shm (default 64m)")
    add(
        "--sig-proxy",
        default="true",
        choices=["true", "false"],
        help="Proxy received signals to the process (default true)",
    )
    add(
        "--tmpfs",
        action="append",
        default=[],
        metavar="TMPFS",
        help="Mount a temporary filesystem (tmpfs) into a container",
    )
    add("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY for container")
    add("--tz", metavar="TIMEZONE", help='Set timezone in container ("local" for the host\'s)')
    add(
        "--uidmap",
        action="append",
        default=[],
        metavar="MAP",
        help="UID map for the user namespace (container:intermediate:size)",
    )
    add(
        "--gidmap",
        action="append",
        default=[],
        metavar="MAP",
        help="GID map for the user namespace (container:intermediate:size)",
    )
    add("--ulimit", action="append", default=[], metavar="NAME=SOFT:HARD", help="Ulimit options")
    add(
        "-u",
        "--user",
        metavar="USER[:GROUP]",
        help="Username or UID (format: <name|uid>[:<group|gid>])",
    )
    add(
        "--userns",
        default="",
        metavar="MODE",
        help='User namespace: "" (default mapping), host (same in rootless), keep-id[:uid=N,gid=N]',
    )
    add(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="VOLUME",
        help="Bind mount a volume into the container",
    )
    add("-w", "--workdir", metavar="DIR", help="Working directory inside the container")
    add("image", metavar="IMAGE", nargs="?")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    from rootless.runtime import options as opt

    return opt.RunOptions(
        image=args.image,
        command=list(args.command),
        rm=args.rm,
        interactive=args.interactive,
        tty=args.tty,
        detach=args.detach,
        name=args.name,
        env=args.env,
        env_files=args.env_file,
        env_host=args.env_host,
        workdir=args.workdir,
        user=args.user,
        group_add=args.group_add,
        entrypoint=None if args.entrypoint is None else opt.parse_entrypoint(args.entrypoint),
        hostname=None if args.hostname is None else opt.parse_hostname(args.hostname),
        userns=opt.parse_userns(args.userns),
        uidmap=[r for m in args.uidmap for r in opt.parse_idmap(m, "--uidmap")],
        gidmap=[r for m in args.gidmap for r in opt.parse_idmap(m, "--gidmap")],
        network=opt.parse_network(args.network),
        read_only=args.read_only,
        read_only_tmpfs=args.read_only_tmpfs == "true",
        rootfs=args.rootfs,
        volumes=args.volume,
        mounts=args.mount,
        tmpfs=args.tmpfs,
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        security_opt=args.security_opt,
        ulimits=args.ulimit,
        tz=args.tz,
        init=args.init,
        shm_size=opt.parse_size(args.shm_size),
        sig_proxy=args.sig_proxy == "true",
        pull=opt.parse_pull(args.pull),
        labels=dict(opt.parse_label(label) for label in args.label),
        print_spec=args.print_spec,
    )


class _Stop(Exception):
    """A termination signal arrived while the container was being set up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signum)


def run_command(args: argparse.Namespace) -> int:
    import signal

    from rootless.errors import RlError

    if args.image is None:
        raise RlError("requires at least 1 arg(s), only received 0")
    options = options_from_args(args)
    if options.detach:
        raise RlError(
            "detached containers are not supported yet: run the container in the foreground "
            "(without -d)"
        )
    from rootless.containers.create import prepare
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    if options.print_spec:
        from rootless.cli.output import print_json

        print_json(prepare(options, store, print_only=True).spec)
        return 0
    # Until the executor takes over signal handling, a SIGTERM/SIGINT/SIGHUP must still run
    # the cleanup below (--rm), not kill rl half-way.
    previous = {
        s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    record = None
    code = 125
    try:
        prepared = prepare(options, store)
        record = prepared.record
        code = _run_prepared(prepared, options, store)
        return code
    except _Stop as stop:
        code = 128 + stop.signum
        return code
    finally:
        # The cleanup must not be interrupted by a second signal either.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        try:
            if record is not None:
                if options.rm:
                    store.remove(record, volumes=True)
                elif store.find(record.id) is not None:
                    store.mark_exited(record.id, code)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            store.close()


def _run_prepared(prepared: Any, options: RunOptions, store: Any) -> int:
    from rootless.runtime.executor import run_container

    record = prepared.record
    # Running from here on, so that a runner killed at any later point reads as exited.
    store.mark_running(record.id)

    def started(pid: int) -> None:
        store.set_container_pid(record.id, pid)

    return run_container(
        prepared.spec,
        mapping=prepared.mapping,
        rootfs=prepared.rootfs,
        tty=options.tty,
        interactive=options.interactive,
        sig_proxy=options.sig_proxy,
        init=options.init,
        on_started=started,
    )


# --- rm ---------------------------------------------------------------------------------


def _stop_container(record: Container, store: Any) -> None:
    """SIGKILL a running container's processes and wait (briefly) for its runner to finish."""
    import signal

    from rootless.containers.store import process_start_time

    if record.container_pid:
        try:
            os.kill(record.container_pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (
            record.runner_pid is None
            or process_start_time(record.runner_pid) != record.runner_start
        ):
            return
        time.sleep(0.02)


def rm_command(args: argparse.Namespace) -> int:
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    if args.all and args.containers:
        raise RlError("when using the --all switch, you may not pass any containers names or IDs")
    if not args.all and not args.containers:
        raise RlError("must specify at least one container to remove")
    store = ContainerStore.open()
    try:
        refs = [c.id for c in store.containers()] if args.all else args.containers
        code = 0
        for ref in refs:
            try:
                record = store.get(ref)
                if record.state == "running":
                    if not args.force:
                        raise RlError(
                            f"cannot remove container {record.id} as it is running - running or "
                            "paused containers cannot be removed without force: container state "
                            "improper",
                            exit_code=2,
                        )
                    _stop_container(record, store)
                current = store.find(record.id)
                if current is not None:
                    store.remove(current, volumes=args.volumes)
                print(record.id if args.all else ref)
            except RlError as err:
                if args.force and "no such container" in err.message:
                    continue
                print(f"Error: {err.message}", file=sys.stderr)
                code = code or (1 if "no such container" in err.message else err.exit_code)
        return code
    finally:
        store.close()


# --- ps ---------------------------------------------------------------------------------


def _status(record: Container, now: float) -> str:
    from rootless.cli.output import ago, human_duration

    if record.state == "running" and record.started:
        return f"Up {human_duration(now - record.started)}"
    if record.state == "exited":
        when = ago(record.finished or record.created, now)
        return f"Exited ({record.exit_code if record.exit_code is not None else 0}) {when}"
    return "Created"


def ps_command(args: argparse.Namespace) -> int:
    from rootless.cli.output import ago, table
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    try:
        records = [c for c in store.containers() if args.all or c.state == "running"]
    finally:
        store.close()
    if args.quiet:
        for c in records:
            print(c.id if args.no_trunc else c.short_id)
        return 0
    now = time.time()
    rows = []
    for c in records:
        command = " ".join(c.command)
        if not args.no_trunc and len(command) > 20:
            command = command[:17] + "..."
        rows.append(
            [
                c.id if args.no_trunc else c.short_id,
                c.image_name,
                command,
                ago(c.created, now),
                _status(c, now),
                "",
                c.name,
            ]
        )
    table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows)
    return 0
