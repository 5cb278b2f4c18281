"""Container commands: run and rm (ps and the other queries are in rootless.cli.containers)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.runtime.options import RunOptions

RUN_DESCRIPTION = """\
Runs a command in a new container from the given image.

Networking: by default (`--network slirp4netns`, podman's name) the container gets its own
network namespace with a TAP device served by rl's user-space TCP/IP stack: address
10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3 forwarding to the host's resolvers. The host's
loopback is reachable as 10.0.2.2 only with `--network slirp4netns:allow_host_loopback=true`.
`--network none` gives loopback only; `--network host` shares the host's network.

Detached (-d): the container runs under a small monitor process of its own (no daemon) that
keeps its output in a log (`rl logs`), applies --restart, runs healthchecks and removes --rm
containers; rl prints the container's ID and returns.

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

    create = commands.command(
        "create",
        "Create but do not start a container",
        description="Creates a new container from the given image, ready to be started with "
        "`rl start`.",
    )
    create.usage = "rl create [options] IMAGE [COMMAND [ARG...]]"
    _add_run_flags(create)
    create.set_defaults(func=create_command)

    rm = commands.command(
        "rm", "Remove one or more containers", description="Removes one or more containers."
    )
    rm.usage = "rl rm [options] CONTAINER [CONTAINER...]"
    rm.add_argument(
        "-f", "--force", action="store_true", help="Force removal of a running container"
    )
    rm.add_argument("-a", "--all", action="store_true", help="Remove all containers")
    rm.add_argument(
        "-i",
        "--ignore",
        action="store_true",
        help="Ignore errors when a specified container is missing",
    )
    rm.add_argument(
        "-t",
        "--time",
        type=int,
        default=None,
        metavar="SECONDS",
        help="Seconds to wait for stop before killing the container (with --force)",
    )
    rm.add_argument(
        "--depend",
        action="store_true",
        help="Remove container and all containers that depend on it (none: rl has no pods)",
    )
    rm.add_argument(
        "-v",
        "--volumes",
        action="store_true",
        help="Remove anonymous volumes associated with the container",
    )
    rm.add_argument("containers", nargs="*", metavar="CONTAINER")
    rm.set_defaults(func=rm_command)


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
        help="Run container in background and print container ID",
    )
    add(
        "--detach-keys",
        default="ctrl-p,ctrl-q",
        metavar="KEYS",
        help="Override the key sequence for detaching a container (default ctrl-p,ctrl-q)",
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
        "--add-host",
        action="append",
        default=[],
        metavar="HOST:IP",
        help="Add a custom host-to-IP mapping (host:ip)",
    )
    add("--dns", action="append", default=[], metavar="IP", help="Set custom DNS servers")
    add(
        "--dns-search",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="Set custom DNS search domains",
    )
    add(
        "--dns-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="Set custom DNS options",
    )
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
        help="Connect a container to a network: slirp4netns[:OPTIONS] (default, user-mode "
        "networking), none (loopback only) or host",
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
    add(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="PORT",
        help="Publish a container's port, or a range of ports, to the host",
    )
    add(
        "-P",
        "--publish-all",
        action="store_true",
        help="Publish all exposed ports to random ports on the host interfaces",
    )
    add("--read-only", action="store_true", help="Make containers root filesystem read-only")
    add(
        "--read-only-tmpfs",
        default="true",
        choices=["true", "false"],
        help="When running --read-only, mount tmpfs on /run, /tmp and /var/tmp (default true)",
    )
    add(
        "--restart",
        default="no",
        metavar="POLICY",
        help="Restart policy to apply when a container exits (no, on-failure[:max_retries], "
        "always, unless-stopped)",
    )
    add(
        "--log-driver",
        default="k8s-file",
        choices=["k8s-file", "none", "passthrough"],
        help="Logging driver for the container (default k8s-file)",
    )
    add(
        "--log-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="Logging driver options: max-size=SIZE, path=FILE",
    )
    add(
        "--replace",
        action="store_true",
        help="If a container with the same name exists, replace it",
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
    add(
        "--sdnotify",
        default="container",
        choices=["container", "conmon", "ignore"],
        help='Control sd-notify behavior: container, conmon or ignore (default "container")',
    )
    add("--shm-size", default="64m", metavar="SIZE", help="Size of /dev/shm (default 64m)")
    add("--stop-signal", metavar="SIGNAL", help="Signal to stop a container (default SIGTERM)")
    add(
        "--stop-timeout",
        type=int,
        default=10,
        metavar="SECONDS",
        help="Timeout (in seconds) to stop a container (default 10)",
    )
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
    from rootless.cli.health import add_health_flags

    add_health_flags(p)
    from rootless.cgroups.flags import add_resource_flags

    add_resource_flags(p)
    add("image", metavar="IMAGE", nargs="?")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    from rootless.cgroups.flags import resources_from_args
    from rootless.monitor.restart import parse_restart
    from rootless.runtime import options as opt

    resources, cgroups, cgroupns = resources_from_args(args)
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
        network_options=opt.parse_network_options(args.network),
        dns=[opt.parse_dns_server(s) for s in args.dns],
        dns_search=args.dns_search,
        dns_options=args.dns_option,
        add_hosts=[opt.parse_add_host(h) for h in args.add_host],
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
        restart=str(parse_restart(args.restart)),
        log_driver=args.log_driver,
        log_opts=parse_log_opts(args.log_opt),
        stop_signal=None if args.stop_signal is None else opt.parse_signal(args.stop_signal),
        stop_timeout=args.stop_timeout,
        detach_keys=args.detach_keys,
        publish=args.publish,
        publish_all=args.publish_all,
        healthcheck=_health_flags(args),
        resources=resources,
        cgroups=cgroups,
        cgroupns=cgroupns,
    )


def _health_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --health-* flags as given (checked now; merged with the image's HEALTHCHECK when
    the container is created, see rootless.containers.create)."""
    from rootless.cli.health import health_from_args

    health_from_args(args, None)  # bad values fail before anything is pulled or created
    flags = {
        "cmd": args.health_cmd,
        "interval": args.health_interval,
        "timeout": args.health_timeout,
        "retries": args.health_retries,
        "start_period": args.health_start_period,
        "on_failure": args.health_on_failure,
        "no_healthcheck": bool(args.no_healthcheck),
    }
    return None if all(v in (None, False) for v in flags.values()) else flags


def parse_log_opts(values: list[str]) -> dict[str, str]:
    from rootless.errors import RlError
    from rootless.runtime.options import parse_human_size

    opts: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or key not in ("max-size", "path", "tag", "max-file"):
            raise RlError(
                f'invalid --log-opt "{value}": use max-size=SIZE or path=FILE (k8s-file driver)'
            )
        if key == "max-size":
            parse_human_size(text, "--log-opt max-size")
        opts[key] = text
    return opts


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
    _check_lifecycle_options(options)
    if options.cgroups != "disabled" and not options.print_spec:
        from rootless.cgroups.fs import reexec_in_scope

        # Like podman: into a delegated systemd scope of our own (the monitor of -d too).
        reexec_in_scope([sys.executable, "-m", "rootless", *sys.argv[1:]])
    from rootless.containers.create import prepare
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    extras = _systemd_extras(args, options, store)  # rl generate systemd / --sdnotify
    if options.detach and not options.print_spec:
        try:
            return _run_detached(options, store, extras)
        finally:
            store.close()
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
        store.update_config(record.id, **extras)
        from rootless.systemd.notify import container_spec

        container_spec(prepared.spec, extras)  # --sdnotify=container: the socket, inside
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


def _check_lifecycle_options(options: RunOptions) -> None:
    from rootless.errors import RlError

    if options.publish:
        from rootless.network import parse_ports

        parse_ports(options.publish)  # a bad -p fails before anything is created
        if options.network != "slirp4netns":  # podman's warning, and podman's choice
            print(
                "Port mappings have been discarded as one of the Host, Container, Pod, and "
                "None network modes are in use",
                file=sys.stderr,
            )
            options.publish = []
    if options.restart != "no" and options.rm:
        raise RlError(
            'the --rm option conflicts with --restart, when the restartPolicy is not "" and "no"'
        )
    if options.log_driver == "passthrough" and options.detach:
        raise RlError("passthrough logging driver is not supported in detached mode")


def _systemd_extras(args: argparse.Namespace, options: RunOptions, store: Any) -> dict[str, Any]:
    """--replace, --sdnotify=ignore, and what `rl generate systemd` reads from the record:
    the command line (for --new) and the --sdnotify mode (for the monitor)."""
    import os

    from rootless.errors import RlError

    if args.sdnotify == "ignore":
        os.environ.pop("NOTIFY_SOCKET", None)
    if args.replace and not options.print_spec:
        if not options.name:
            raise RlError("cannot replace container without --name being set")
        existing = store.find(options.name)
        if existing is not None:
            from rootless.containers import lifecycle

            if existing.state in ("running", "restarting"):
                lifecycle.stop(store, existing.id)  # its StopSignal and timeout, as podman
            if store.find(existing.id) is not None:  # an --rm one is gone after the stop
                lifecycle.remove(store, existing.id, force=True, volumes=False)
    return {"create_command": list(sys.argv), "sdnotify": args.sdnotify}


def _run_detached(options: RunOptions, store: Any, extras: dict[str, Any] | None = None) -> int:
    """run -d: create, start under a monitor, print the ID. A start that fails leaves the
    container as podman does (exited, or removed with --rm) and exits with the cause's code."""
    from rootless.containers.create import prepare
    from rootless.containers.lifecycle import early_monitor, spawn_monitor

    monitor = early_monitor()  # loads its modules meanwhile (rootless.containers.lifecycle)
    try:
        prepared = prepare(options, store)
        store.update_config(prepared.record.id, **(extras or {}))
    except BaseException:
        monitor.cancel()
        raise
    from rootless.containers.store import ContainerLock

    # Under the container's lock until it runs, as `rl start` holds it: the monitor records
    # "running" before the container has a pid, and a concurrent `rl stop`, `rm -f` or `kill`
    # in that window found no pid to signal (a stop returned, the container ran on). They
    # wait for the start now. (The monitor was spawned before: it does not share the lock.)
    with ContainerLock(prepared.record.id):
        spawn_monitor(store, prepared.record, early=monitor)
    print(prepared.record.id)
    return 0


def create_command(args: argparse.Namespace) -> int:
    from rootless.containers.create import prepare
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    if args.image is None:
        raise RlError("requires at least 1 arg(s), only received 0")
    options = options_from_args(args)
    _check_lifecycle_options(options)
    store = ContainerStore.open()
    try:
        extras = _systemd_extras(args, options, store)
        if options.print_spec:
            from rootless.cli.output import print_json

            print_json(prepare(options, store, print_only=True).spec)
            return 0
        prepared = prepare(options, store)
        store.update_config(prepared.record.id, **extras)
        if prepared.rootfs is not None:
            prepared.rootfs.release()
        print(prepared.record.id)
        return 0
    finally:
        store.close()


def _run_prepared(prepared: Any, options: RunOptions, store: Any) -> int:
    from rootless.cgroups import container as cgroup

    cg = cgroup.setup(store, prepared.record)  # None: no cgroup of its own
    try:
        code = _run_in(prepared, options, store, cg.path if cg else None)
        if cg is not None and cg.oom_killed():
            store.set_oom_killed(prepared.record.id)
        return code
    finally:
        if cg is not None:
            cgroup.remove(store, prepared.record)


def _run_in(prepared: Any, options: RunOptions, store: Any, cgroup_dir: str | None) -> int:
    from rootless.runtime.executor import run_container

    record = prepared.record
    # Running from here on, so that a runner killed at any later point reads as exited.
    store.mark_running(record.id)

    def started(pid: int) -> None:
        store.mark_started(record.id, pid)
        from rootless.systemd.notify import container_started

        container_started(record.id, store.get(record.id).config)  # --sdnotify: READY=1

    on_netns = None
    if options.network == "slirp4netns":
        from rootless.network import serve_in_child

        def on_netns(keeper_pid: int) -> None:
            ports = list(record.config.get("publish") or [])
            _, bound = serve_in_child(keeper_pid, options.network_options, ports)
            if bound:
                store.update_config(record.id, ports=bound)

    # Logged like a detached run, --rm too (podman logs every container; `rl logs -f` works
    # while it runs): ~1 ms of start-up, below what the startup bench can tell apart.
    from rootless.containers.foreground_log import open_log

    log = open_log(record.config, str(store.userdata(record.id)))
    try:
        return run_container(
            prepared.spec,
            on_netns=on_netns,
            mapping=prepared.mapping,
            rootfs=prepared.rootfs,
            tty=options.tty,
            interactive=options.interactive,
            sig_proxy=options.sig_proxy,
            init=options.init,
            on_started=started,
            cgroup_dir=cgroup_dir,
            log=log,
        )
    finally:
        if log is not None:
            log.close()


# --- rm ---------------------------------------------------------------------------------


def rm_command(args: argparse.Namespace) -> int:
    from rootless.containers import lifecycle
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
                if args.force and args.time is not None:
                    current = store.get(ref)
                    if current.state in ("running", "restarting"):
                        lifecycle.stop(store, ref, float(args.time))
                record = lifecycle.remove(store, ref, force=args.force, volumes=args.volumes)
                print(record.id if args.all else ref)
            except RlError as err:
                if (args.force or args.ignore) and "no such container" in err.message:
                    continue
                print(f"Error: {err.message}", file=sys.stderr)
                code = code or (1 if "no such container" in err.message else err.exit_code)
        return code
    finally:
        store.close()
