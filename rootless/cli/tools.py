"""Container tools that work without the monitor: exec, top, cp, diff, commit, unshare, mount.

Each finds the container through the container store; a running container is entered through
its pid 1's namespaces (rootless.runtime.join), a stopped one through its storage, mounted in
a private user+mount namespace.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.containers.store import Container

# podman 4.3 exits 255 (not 125) when an exec session cannot be created (measured here).
EXIT_EXEC_SESSION = 255
NOT_RUNNING_EXEC = "can only create exec sessions on running containers: container state improper"


def register(commands: CommandGroup) -> None:
    container = commands.group("container", "Manage containers")
    for group in (commands, container):
        _register_exec(group)
        _register_top(group)
        _register_cp(group)
        _register_diff(group)
        _register_commit(group)
        _register_mount(group)
    _register_unshare(commands)


# --- exec -------------------------------------------------------------------------------


def _register_exec(commands: CommandGroup) -> None:
    p = commands.command(
        "exec",
        "Run a process in a running container",
        description="Run a process in a running container.",
    )
    p.usage = "rl exec [options] CONTAINER COMMAND [ARG...]"
    add = p.add_argument
    add("-d", "--detach", action="store_true", help="Run the exec session in detached mode")
    add(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="ENV",
        help="Set environment variables (KEY=VALUE, KEY from the host, PREFIX*)",
    )
    add(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="Read in a file of environment variables",
    )
    add("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    add("-l", "--latest", action="store_true", help="Act on the latest container rl knows of")
    add("--privileged", action="store_true", help="Give the process extended privileges")
    add("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    add(
        "-u",
        "--user",
        metavar="USER[:GROUP]",
        help="Sets the username or UID used and optionally the groupname or GID",
    )
    add("-w", "--workdir", metavar="DIR", help="Working directory inside the container")
    add("container", metavar="CONTAINER", nargs="?")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(func=exec_command)


def _find_container(ref: str | None, latest: bool = False) -> Container:
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    store = ContainerStore.open()
    try:
        if latest:
            return store.latest()
        if not ref:
            raise RlError("you must provide a container name or ID")
        return store.get(ref)
    finally:
        store.close()


def running_pid(record: Container) -> int | None:
    """The host pid of a running container's pid 1, None when it does not run."""
    if record.state != "running" or not record.container_pid:
        return None
    if not os.path.exists(f"/proc/{record.container_pid}"):
        return None
    return record.container_pid


def container_spec(record: Container) -> dict[str, object]:
    import json

    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    store = ContainerStore.open()
    try:
        path = store.userdata(record.id) / "config.json"
    finally:
        store.close()
    try:
        spec: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RlError(f"cannot read the container's runtime spec {path}: {exc}") from exc
    return spec


def _exec_env(flags: list[str], files: list[str]) -> dict[str, str]:
    from rootless.containers.create import read_env_files
    from rootless.runtime.env import expand_env_flag

    host = dict(os.environ)
    env: dict[str, str] = {}
    for file_env in read_env_files(files, host):
        env.update(file_env)
    for flag in flags:
        env.update(expand_env_flag(flag, host))
    return env


def exec_command(args: argparse.Namespace) -> int:
    from rootless.errors import RlError
    from rootless.runtime import join

    ref = args.container
    command = list(args.command)
    if args.latest and ref is not None:
        command.insert(0, ref)  # with --latest, the first word is the command
        ref = None
    if not command:
        raise RlError("exec requires the name or ID of a container and a command to execute")
    record = _find_container(ref, args.latest)
    pid = running_pid(record)
    if pid is None:
        raise RlError(NOT_RUNNING_EXEC, exit_code=EXIT_EXEC_SESSION)
    from rootless.cgroups.container import enter_scope_for

    enter_scope_for(pid)  # the session joins the container's cgroup (rootless.cgroups)
    options = join.ExecOptions(
        args=tuple(command),
        env=_exec_env(args.env, args.env_file),
        user=args.user,
        workdir=args.workdir,
        privileged=args.privileged,
    )
    passwd = group = None
    if args.user is not None:
        passwd = join.read_container_file(pid, "/etc/passwd")
        group = join.read_container_file(pid, "/etc/group")
    try:
        plan = join.plan_exec_process(
            container_spec(record), options, passwd_text=passwd, group_text=group
        )
    except RlError as err:
        if args.user is not None and "unable to find" in err.message:
            raise RlError(err.message, exit_code=EXIT_EXEC_SESSION) from None
        raise
    session = join.ExecPlan(
        pid, plan, tty=args.tty, interactive=args.interactive, detach=args.detach
    )
    code = join.run_exec(session)
    if args.detach and code == 0:
        print(os.urandom(32).hex())  # podman prints the exec session's ID
    return code


# --- diff -------------------------------------------------------------------------------


def _register_diff(commands: CommandGroup) -> None:
    p = commands.command(
        "diff",
        "Inspect changes to the container's file systems",
        description="Displays changes to the container's filesystem: A added, C changed, "
        "D deleted.",
    )
    p.usage = "rl diff [options] CONTAINER"
    p.add_argument("--format", metavar="FORMAT", help="Change the output format (json)")
    p.add_argument("-l", "--latest", action="store_true", help="Act on the latest container")
    p.add_argument("container", metavar="CONTAINER", nargs="?")
    p.set_defaults(func=diff_command)


def _scan(root: str, lowers: list[str], is_copy: bool) -> list[tuple[str, str]]:
    from rootless.containers import changes

    scan = changes.scan_copy(root, lowers) if is_copy else changes.scan_upper(root, lowers)
    return [(c.kind, c.path) for c in changes.visible(scan.changes)]


def container_changes(record: Container) -> list[tuple[str, str]]:
    """(A|C|D, path) of everything the container changed in its image."""
    import functools

    from rootless.containers.storageview import container_storage
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError
    from rootless.images.store import ImageStore
    from rootless.userns import run_in_userns

    if not record.image_id:
        raise RlError(
            f"container {record.id} runs a --rootfs directory: rl cannot tell its changes"
        )
    containers = ContainerStore.open()
    images = ImageStore.open()
    try:
        view = container_storage(
            containers.container_dir(record.id), images, images.resolve(record.image_id)
        )
    finally:
        images.close()
        containers.close()
    return run_in_userns(
        functools.partial(
            _scan, os.fspath(view.root), [os.fspath(p) for p in view.lowers], view.is_copy
        )
    )


def diff_command(args: argparse.Namespace) -> int:
    from rootless.errors import RlError

    if args.format not in (None, "", "json"):
        raise RlError(f"unknown --format {args.format!r}: only json is supported")
    found = container_changes(_find_container(args.container, args.latest))
    if args.format == "json":
        from rootless.cli.output import print_json

        keys = {"C": "changed", "A": "added", "D": "deleted"}
        grouped: dict[str, list[str]] = {}
        for kind in ("C", "A", "D"):
            paths = [path for k, path in found if k == kind]
            if paths:
                grouped[keys[kind]] = paths
        print_json(grouped)
        return 0
    for kind, path in found:
        print(f"{kind} {path}")
    return 0


# --- commit -----------------------------------------------------------------------------


def _register_commit(commands: CommandGroup) -> None:
    p = commands.command(
        "commit",
        "Create new image based on the changed container",
        description="Creates an image from a container's changes. The new image holds the "
        "container's image layers plus one layer with the changes.",
    )
    p.usage = "rl commit [options] CONTAINER [IMAGE]"
    add = p.add_argument
    add("-a", "--author", metavar="AUTHOR", help="Set the author for the image committed")
    add(
        "-c",
        "--change",
        action="append",
        default=[],
        metavar="INSTRUCTION",
        help="Apply the following possible instructions to the created image: "
        "CMD | ENTRYPOINT | ENV | EXPOSE | LABEL | STOPSIGNAL | USER | VOLUME | WORKDIR",
    )
    add(
        "-f",
        "--format",
        default="oci",
        choices=["oci", "docker"],
        help="Format of the image manifest and metadata (default oci)",
    )
    add("-m", "--message", default="", help="Set commit message for imported image")
    add(
        "-p",
        "--pause",
        action="store_true",
        help="Pause container during commit (accepted; rl does not pause)",
    )
    add("-q", "--quiet", action="store_true", help="Suppress output")
    add("container", metavar="CONTAINER")
    add("image", metavar="IMAGE", nargs="?")
    p.set_defaults(func=commit_command)


def commit_command(args: argparse.Namespace) -> int:
    from rootless.errors import RlError
    from rootless.images.changes import parse_change
    from rootless.images.commit import CommitRequest, commit

    if args.message and args.format != "docker":
        raise RlError("messages are only compatible with the docker image format (-f docker)")
    for change in args.change:
        parse_change(change)  # bad input fails before any work
    image_id = commit(
        CommitRequest(
            container_ref=args.container,
            image_name=args.image,
            changes=tuple(args.change),
            message=args.message,
            author=args.author,
        )
    )
    print(image_id)
    return 0


# --- the other commands arrive below ------------------------------------------------------


def _register_top(commands: CommandGroup) -> None:
    p = commands.command(
        "top",
        "Display the running processes of a container",
        description="Display the running processes of a container. Descriptors (AIX `%C` or "
        "long `pcpu` form, space- or comma-separated) choose the columns; the default is "
        "user pid ppid pcpu etime tty time args.",
    )
    p.usage = "rl top [options] CONTAINER [FORMAT-DESCRIPTORS]"
    p.add_argument("-l", "--latest", action="store_true", help="Act on the latest container")
    p.add_argument("container", metavar="CONTAINER", nargs="?")
    p.add_argument("descriptors", nargs="*", metavar="DESCRIPTOR")
    p.set_defaults(func=top_command)


def top_command(args: argparse.Namespace) -> int:
    import grp
    import pwd

    from rootless.containers import top
    from rootless.errors import RlError
    from rootless.runtime.join import read_container_file

    words = list(args.descriptors)
    ref = args.container
    if args.latest and ref is not None:
        words.insert(0, ref)
        ref = None
    descriptors = top.parse_descriptors(words)
    record = _find_container(ref, args.latest)
    pid = running_pid(record)
    if pid is None:
        raise RlError("top can only be used on running containers")

    def host_user(uid: int) -> str:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def host_group(gid: int) -> str:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)

    try:
        uid_map = top.parse_id_map(Path(f"/proc/{pid}/uid_map").read_text())
        gid_map = top.parse_id_map(Path(f"/proc/{pid}/gid_map").read_text())
    except OSError as exc:
        raise RlError(f"cannot read the container's id maps: {exc.strerror}") from exc
    procs = top.container_processes(pid)
    ctx = top.Context(
        clock=top.host_clock(),
        uid_map=uid_map,
        gid_map=gid_map,
        users=top.names_by_id(read_container_file(pid, "/etc/passwd")),
        groups=top.names_by_id(read_container_file(pid, "/etc/group")),
        ns_pids={p.host_pid: p.ns_pid for p in procs},
        host_users=host_user,
        host_groups=host_group,
    )
    headers = [top.HEADERS[d] for d in descriptors]
    sys.stdout.write(top.render(headers, top.rows(procs, descriptors, ctx)))
    return 0


def _register_cp(commands: CommandGroup) -> None:
    p = commands.command(
        "cp",
        "Copy files/folders between a container and the local filesystem",
        description="Copy the contents of SRC_PATH to the DEST_PATH. A container path is "
        "written CONTAINER:PATH; `-` reads a tar archive from stdin (as SRC) or writes one "
        "to stdout (as DEST). Owners are kept through the container's id mapping.",
    )
    p.usage = "rl cp [options] [CONTAINER:]SRC_PATH [CONTAINER:]DEST_PATH"
    p.add_argument(
        "-a",
        "--archive",
        default="true",
        choices=["true", "false"],
        help="Keep the owners of copied files (default true)",
    )
    p.add_argument("source", metavar="SRC_PATH")
    p.add_argument("dest", metavar="DEST_PATH")
    p.set_defaults(func=cp_command)


def _copy_in_stopped(view: object, rootfs: str, request: object) -> None:
    """Root of a fresh user+mount namespace with the container's mapping: mount the
    container's root filesystem on its rootfs dir (seen only here), then copy."""
    from rootless import syscalls as sc
    from rootless.containers import archive
    from rootless.containers.storageview import StorageView, mount_rootfs

    assert isinstance(view, StorageView) and isinstance(request, archive.CopyRequest)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    mount_rootfs(view, Path(rootfs))
    archive.copy(request)


def cp_command(args: argparse.Namespace) -> int:
    import functools

    from rootless.containers import archive
    from rootless.errors import RlError

    src_ctr, src_path = archive.parse_location(args.source)
    dst_ctr, dst_path = archive.parse_location(args.dest)
    if src_ctr and dst_ctr:
        raise RlError("copying between containers is not supported: copy through the host")
    if not src_ctr and not dst_ctr:
        raise RlError(
            "invalid arguments: one of SRC_PATH and DEST_PATH must be a container path "
            "(CONTAINER:PATH)"
        )
    ref = src_ctr or dst_ctr
    assert ref is not None
    record = _find_container(ref)
    pid = running_pid(record)
    container_root = f"/proc/{pid}/root" if pid else ""
    if not pid:
        from rootless.containers.store import ContainerStore

        store = ContainerStore.open()
        try:
            container_root = os.fspath(store.rootfs(record.id))
        finally:
            store.close()

    def location(container: str | None, path: str, label: str) -> archive.Location | None:
        if path == "-" and container is None:
            return None
        if container is not None:
            return archive.Location(
                container_root, path if path.startswith("/") else "/" + path, label
            )
        return archive.Location("/", os.path.abspath(path), label)

    source = location(src_ctr, src_path, args.source)
    dest = location(dst_ctr, dst_path, args.dest)
    contents_only = src_path.endswith(("/.", "/./")) or src_path == "."
    request = archive.CopyRequest(source, dest, contents_only, args.archive == "true")
    if pid:
        from rootless.runtime.join import run_in_container_userns

        run_in_container_userns(pid, archive.copy, request)
        return 0
    from rootless import syscalls as sc
    from rootless.runtime.executor import mapping_from_spec
    from rootless.userns import run_in_userns

    view = _stopped_storage(record)
    mapping = mapping_from_spec(container_spec(record))
    run_in_userns(
        functools.partial(_copy_in_stopped, view, container_root, request),
        mapping=mapping,
        unshare_flags=sc.CLONE_NEWNS,
    )
    return 0


def _stopped_storage(record: Container) -> object:
    from rootless.containers.storageview import container_storage
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError
    from rootless.images.store import ImageStore

    if not record.image_id:
        raise RlError(f"container {record.id} runs a --rootfs directory: start it to copy files")
    containers = ContainerStore.open()
    images = ImageStore.open()
    try:
        return container_storage(
            containers.container_dir(record.id), images, images.resolve(record.image_id)
        )
    finally:
        images.close()
        containers.close()


def _register_mount(commands: CommandGroup) -> None:
    p = commands.command(
        "mount",
        "Mount a working container's root filesystem",
        description="Mounts the container's root filesystem and prints the mount point; "
        "without a container, lists the mounted ones. Rootless, this works inside "
        "`rl unshare` only, whose mount namespace holds the mount.",
    )
    p.usage = "rl mount [options] [CONTAINER...]"
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=mount_command)
    u = commands.command(
        "unmount",
        "Unmount working container's root filesystem",
        aliases=["umount"],
        description="Unmounts the root filesystem of containers mounted with `rl mount`.",
    )
    u.usage = "rl unmount [options] CONTAINER [CONTAINER...]"
    u.add_argument("-a", "--all", action="store_true", help="Unmount all mounted containers")
    u.add_argument("containers", nargs="*", metavar="CONTAINER")
    u.set_defaults(func=unmount_command)


def _require_unshare(command: str) -> None:
    """Rootless, mounting needs rl unshare's namespaces (where the user is root)."""
    from rootless.errors import RlError

    if os.getuid() != 0:
        raise RlError(
            f'cannot run command "rl {command}" in rootless mode, must execute `rl unshare` first'
        )


def _mounted_paths() -> set[str]:
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return set()
    return {line.split()[4].replace("\\040", " ") for line in text.splitlines()}


def mount_command(args: argparse.Namespace) -> int:
    from rootless.containers.storageview import mount_rootfs
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    _require_unshare("mount")
    store = ContainerStore.open()
    try:
        mounted = _mounted_paths()
        if not args.containers:
            for record in store.containers():
                path = os.fspath(store.rootfs(record.id))
                if path in mounted:
                    print(f"{record.id if args.no_trunc else record.short_id}  {path}")
            return 0
        records = [store.get(ref) for ref in args.containers]
    finally:
        store.close()
    for record in records:
        rootfs = os.fspath(_rootfs_path(record))
        if rootfs not in mounted and running_pid(record) is not None:
            raise RlError(
                f"{record.name} is running: a second mount of its storage is not supported; "
                "use rl cp or rl exec"
            )
        if rootfs not in mounted:
            view = _stopped_storage(record)
            mount_rootfs(view, Path(rootfs))  # type: ignore[arg-type]
        print(rootfs)
    return 0


def _rootfs_path(record: Container) -> Path:
    from rootless.containers.store import ContainerStore

    store = ContainerStore.open()
    try:
        return store.rootfs(record.id)
    finally:
        store.close()


def unmount_command(args: argparse.Namespace) -> int:
    from rootless import syscalls as sc
    from rootless.containers.store import ContainerStore
    from rootless.errors import RlError

    _require_unshare("unmount")
    if not args.all and not args.containers:
        raise RlError("container ID must be specified or use --all")
    store = ContainerStore.open()
    try:
        if args.all:
            targets = [(record.id, record) for record in store.containers()]
        else:
            targets = [(ref, store.get(ref)) for ref in args.containers]
        mounted = _mounted_paths()
        for label, record in targets:
            path = os.fspath(store.rootfs(record.id))
            if path in mounted:
                try:
                    sc.umount(path, sc.MNT_DETACH)
                except OSError as exc:
                    raise RlError(f"cannot unmount {path}: {exc.strerror}") from exc
            elif args.all:
                continue
            print(label)
    finally:
        store.close()
    return 0


# --- unshare ----------------------------------------------------------------------------


def _register_unshare(commands: CommandGroup) -> None:
    p = commands.command(
        "unshare",
        "Run a command in a modified user namespace",
        description="Runs a command (default: $SHELL) as root of a user namespace with the "
        "user's id mapping and a mount namespace of its own, where the files of rl's "
        "store and containers have their container owners. CONTAINERS_GRAPHROOT and "
        "CONTAINERS_RUNROOT name rl's store and runtime directories.",
    )
    p.usage = "rl unshare [options] [COMMAND [ARG...]]"
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(func=unshare_command)


def unshare_command(args: argparse.Namespace) -> int:
    from rootless.paths import data_dir, runtime_dir
    from rootless.runtime.join import run_unshared

    command = list(args.command) or [os.environ.get("SHELL") or "/bin/sh"]
    env = dict(os.environ)
    env["CONTAINERS_GRAPHROOT"] = os.fspath(data_dir())
    env["CONTAINERS_RUNROOT"] = os.fspath(runtime_dir())
    env["_CONTAINERS_USERNS_CONFIGURED"] = "done"
    env["_CONTAINERS_ROOTLESS_UID"] = str(os.getuid())
    env["_CONTAINERS_ROOTLESS_GID"] = str(os.getgid())
    return run_unshared(command, env)
