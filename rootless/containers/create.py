"""From `RunOptions` to a created container: record, generated files, storage, config.json.

This is the I/O shell around the pure pieces (options, users, env, spec, files): it reads the
image and the host, decides, writes. Everything a user can get wrong is checked before the
record exists, so bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rootless.containers import files
from rootless.containers.names import new_id
from rootless.containers.store import Container, ContainerStore
from rootless.errors import EXIT_CANNOT_EXECUTE, RlError
from rootless.runtime.options import RunOptions, container_mapping, timezone_file
from rootless.runtime.spec import ProcessSettings, build_spec, resolve_args, resolve_process

if TYPE_CHECKING:
    from rootless.images.store import Image, ImageStore
    from rootless.mountflags import MountRequest
    from rootless.storage import RootfsProvider
    from rootless.userns import IdMapping

ENGINE = "rl"


# NamedTuples and plain classes rather than dataclasses: this module is on the path of every
# `rl run`, and a dataclass costs ~0.5 ms to create at import (start-up is issue 3's target).
class ImageSource(NamedTuple):
    """What a container is made from: an image's layers, or a --rootfs directory."""

    name: str
    id: str
    config: Mapping[str, Any]
    lowers: list[Path]  # top first; empty for --rootfs
    rootfs_dir: Path | None = None  # --rootfs


class Prepared(NamedTuple):
    record: Container
    spec: dict[str, Any]
    mapping: IdMapping
    rootfs: RootfsProvider | None


# --- reading the image ------------------------------------------------------------------


def _read_in_userns(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except PermissionError:
        # Layer files belong to subordinate ids: a 0600 file is readable only as its owner.
        from rootless.userns import run_in_userns

        return run_in_userns(_read_in_userns, path)
    except OSError:
        return None


def image_file(source: ImageSource, relpath: str) -> str | None:
    """The text of a regular file in the image's merged view (whiteouts applied), or None."""
    if source.rootfs_dir is not None:
        full = source.rootfs_dir / relpath
        return _read(os.fspath(full)) if full.is_file() else None
    import stat

    from rootless.storage.tree import dir_stack, is_whiteout

    parent, _, name = relpath.rpartition("/")
    stack: list[str] | None = [os.fspath(p) for p in source.lowers]
    for part in filter(None, parent.split("/")):
        if not stack:
            return None
        stack = dir_stack(stack, part)
    for layer_dir in stack or ():
        path = os.path.join(layer_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if is_whiteout(st) or not stat.S_ISREG(st.st_mode):
            return None
        return _read(path)
    return None


def image_has_dir(source: ImageSource, path: str) -> bool:
    if source.rootfs_dir is not None:
        return (source.rootfs_dir / path.lstrip("/")).is_dir()
    from rootless.storage.tree import dir_stack

    stack: list[str] | None = [os.fspath(p) for p in source.lowers]
    for part in filter(None, path.split("/")):
        if not stack:
            return False
        stack = dir_stack(stack, part)
    return bool(stack)


def open_image(options: RunOptions) -> ImageSource:
    if options.rootfs:
        spec = options.image
        path = Path(spec[:-2] if spec.endswith(":O") else spec).resolve()
        if not path.is_dir():
            raise RlError(f"--rootfs {spec}: no such directory")
        return ImageSource(spec, "", {}, [], rootfs_dir=path)
    from rootless.images.store import ImageStore

    store = ImageStore.open()
    try:
        image = _image_by_policy(store, options.image, options.pull)
        lowers = [store.layer_path(d) for d in reversed(image.diff_ids)]
    finally:
        store.close()
    name = image.names[0] if image.names else image.id
    return ImageSource(name, image.id, image.config, lowers)


def _image_by_policy(store: ImageStore, ref: str, policy: str) -> Image:
    """The image to run under podman's --pull policy; pulls (progress on stderr) as needed."""
    local = store.find(ref) if policy != "always" else None
    if local is not None and policy in ("missing", "never"):
        return local[0]
    if policy == "never":
        return store.resolve(ref)  # podman's "image not known"
    from rootless.registry.pull import PullOptions, pull

    try:
        image_id = pull(ref, PullOptions())
    except RlError:
        if local is None:  # newer: the local image serves when the registry cannot answer
            raise
        return local[0]
    return store.resolve(image_id)


# --- host facts -----------------------------------------------------------------------


def _host_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def read_env_files(paths: Sequence[str], host_env: Mapping[str, str]) -> list[dict[str, str]]:
    from rootless.runtime.env import parse_env_file

    result = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RlError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from exc
        result.append(parse_env_file(text, host_env, source=path))
    return result


def parse_mount_requests(options: RunOptions) -> list[MountRequest]:
    from rootless import mountflags

    cwd = os.getcwd()
    requests = [mountflags.parse_volume(v, cwd=cwd) for v in options.volumes]
    requests += [mountflags.parse_mount(m, cwd=cwd) for m in options.mounts]
    requests += [mountflags.parse_tmpfs(t) for t in options.tmpfs]
    mountflags.check_destinations(requests)
    return requests


def _covered_by_mount(path: str, requests: Sequence[MountRequest]) -> bool:
    path = path.rstrip("/") or "/"
    for req in requests:
        dest = req.destination.rstrip("/") or "/"
        if path == dest or path.startswith(dest + "/"):
            return True
    return False


# --- security -------------------------------------------------------------------------


class Security:
    def __init__(self) -> None:
        self.seccomp_profile: str | None = None  # None: default; "unconfined"; or a path
        self.no_new_privileges = False
        self.masked: list[str] | None = None
        self.unmasked: list[str] | None = None


def parse_security_opts(opts: Sequence[str]) -> Security:
    sec = Security()
    for opt in opts:
        key, sep, value = opt.partition("=" if "=" in opt else ":")
        if key == "seccomp" and sep:
            sec.seccomp_profile = value
        elif key == "no-new-privileges" and (not sep or value in ("true", "1")):
            sec.no_new_privileges = True
        elif key == "no-new-privileges" and value in ("false", "0"):
            sec.no_new_privileges = False
        elif key == "mask" and sep:
            sec.masked = (sec.masked or []) + [p for p in value.split(":") if p]
        elif key == "unmask" and sep:
            sec.unmasked = (sec.unmasked or []) + [p for p in value.split(":") if p]
        elif key in ("label", "apparmor", "systempaths", "proc-opts"):
            continue  # no SELinux/AppArmor in rl; accepted as podman does on hosts without them
        else:
            raise RlError(f"invalid --security-opt {opt!r}")
    return sec


def _paths(defaults: Sequence[str], sec: Security, privileged: bool) -> list[str]:
    unmasked = sec.unmasked or []
    if privileged or "ALL" in unmasked:
        return []
    return [p for p in defaults if p not in unmasked]


def seccomp_section(sec: Security, privileged: bool, caps: Sequence[str]) -> dict[str, Any] | None:
    if privileged or sec.seccomp_profile == "unconfined":
        return None
    from rootless.runtime import seccomp

    profile = (
        seccomp.load_profile(Path(sec.seccomp_profile))
        if sec.seccomp_profile
        else seccomp.default_profile()
    )
    result: dict[str, Any] = seccomp.profile_to_oci(profile, list(caps))
    return result


# --- files in userdata ----------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644) -> str:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return os.fspath(path)


def write_userdata(
    userdata: Path,
    options: RunOptions,
    *,
    record_name: str,
    container_id: str,
    hostname: str,
    source: ImageSource,
    passwd: str | None,
    group: str | None,
) -> dict[str, str]:
    """Generate the container's files; returns {container path: host file} to bind."""
    own_netns = options.network != "host"
    slirp = options.network == "slirp4netns"
    binds = {
        "/etc/hosts": _write(
            userdata / "hosts",
            files.hosts_file(
                _host_text("/etc/hosts"),
                hostname=hostname,
                name=record_name,
                own_netns=own_netns,
                slirp=slirp,
                extra=options.add_hosts,
            ),
        ),
        "/etc/hostname": _write(userdata / "hostname", files.hostname_file(hostname)),
        "/run/.containerenv": _write(
            userdata / ".containerenv",
            files.containerenv(
                privileged=options.privileged,
                engine=f"{ENGINE}-{_version()}",
                name=record_name,
                container_id=container_id,
                image=source.name,
                image_id=source.id,
            ),
        ),
    }
    dns_flags = options.dns or options.dns_search or options.dns_options
    # With --network none podman leaves the image's file, unless --dns* flags say otherwise.
    if not own_netns or slirp or dns_flags:
        text = files.resolv_conf(_host_text("/etc/resolv.conf"), own_netns=own_netns, slirp=slirp)
        if dns_flags:
            text = files.override_resolv_conf(
                text, servers=options.dns, search=options.dns_search, options=options.dns_options
            )
        binds["/etc/resolv.conf"] = _write(userdata / "resolv.conf", text)
    if options.tz:
        zone = timezone_file(options.tz)
        binds["/etc/localtime"] = _write(userdata / "localtime", "")
        Path(binds["/etc/localtime"]).write_bytes(zone.read_bytes())
    if passwd is not None:
        binds["/etc/passwd"] = _write(userdata / "passwd", passwd)
    if group is not None:
        binds["/etc/group"] = _write(userdata / "group", group)
    return binds


def _version() -> str:
    from rootless import __version__

    return __version__


# --- the whole creation ---------------------------------------------------------------


def _keep_id_identity(
    options: RunOptions, passwd: str | None, group: str | None
) -> tuple[str | None, str | None, str | None]:
    """keep-id: the default user is the caller's uid:gid, and /etc/passwd and /etc/group gain
    entries for them when the image has none (podman does the same)."""
    if options.userns.mode != "keep-id":
        return None, None, None
    import pwd

    from rootless.runtime.users import add_group_entry, add_passwd_entry

    uid = os.getuid() if options.userns.uid is None else options.userns.uid
    gid = os.getgid() if options.userns.gid is None else options.userns.gid
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = str(uid)
    new_passwd = add_passwd_entry(passwd, name, uid, gid, "/")
    new_group = add_group_entry(group, name, gid)
    return f"{uid}:{gid}", new_passwd, new_group


def prepare(options: RunOptions, store: ContainerStore, *, print_only: bool = False) -> Prepared:
    """Check everything, then create the record, files and storage, and write config.json.

    With print_only nothing is created: the spec is built against the would-be paths."""
    from rootless import paths
    from rootless.runtime import caps as capsmod
    from rootless.runtime import ulimits
    from rootless.runtime.spec import MASKED_PATHS, READONLY_PATHS
    from rootless.userns import SINGLE_MAPPING_WARNING, default_mapping

    host_env = dict(os.environ)
    source = open_image(options)
    # The command is checked first: a run without one should fail before anything else.
    args = resolve_args(source.config.get("config") or {}, options.entrypoint, options.command)
    base = default_mapping()
    if base.single and os.getuid() != 0:
        paths.warn(SINGLE_MAPPING_WARNING)
    mapping = container_mapping(options, base, os.getuid(), os.getgid())

    container_id = new_id()
    if options.network == "host":
        hostname = options.hostname or os.uname().nodename  # gethostname(), without socket
    else:
        hostname = options.hostname or container_id[:12]
    passwd = image_file(source, "etc/passwd")
    group = image_file(source, "etc/group")
    default_user, passwd_override, group_override = _keep_id_identity(options, passwd, group)
    env_files = read_env_files(options.env_files, host_env)
    process: ProcessSettings = resolve_process(
        source.config,
        options,
        passwd_text=passwd_override if passwd_override is not None else passwd,
        group_text=group_override if group_override is not None else group,
        host_env=host_env,
        hostname=hostname,
        env_files=env_files,
        default_user=default_user,
    )
    requests = parse_mount_requests(options)
    # podman 4.3 creates a missing workdir only when it comes from the image; a missing -w
    # directory is an error (exit 126), with this message.
    if options.workdir and not (
        image_has_dir(source, options.workdir) or _covered_by_mount(options.workdir, requests)
    ):
        raise RlError(
            f'workdir "{options.workdir}" does not exist on container {container_id}',
            EXIT_CANNOT_EXECUTE,
        )
    sec = parse_security_opts(options.security_opt)
    cap_set = capsmod.effective_caps(options.cap_add, options.cap_drop, options.privileged)
    capabilities = capsmod.process_capabilities(cap_set, process.user.uid, options.cap_add)
    seccomp = seccomp_section(sec, options.privileged, cap_set)
    rlimits = ulimits.container_rlimits(options.ulimits, ulimits.host_default_rlimits())
    if rlimits:
        ulimits.check_raisable(rlimits, ulimits.host_hard_limits())
    masked = _paths(MASKED_PATHS, sec, options.privileged) + (sec.masked or [])
    readonly = _paths(READONLY_PATHS, sec, options.privileged)
    if options.tz:
        timezone_file(options.tz)  # fail before creating anything

    def spec_for(
        rootfs_path: str, binds: Mapping[str, str], mounts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        return build_spec(
            source.config,
            options,
            process=process,
            rootfs_path=rootfs_path,
            hostname=hostname,
            mapping=mapping,
            capabilities=capabilities,
            seccomp=seccomp,
            rlimits=rlimits,
            bind_files=binds,
            user_mounts=mounts,
            no_new_privileges=sec.no_new_privileges,
            masked_paths=masked,
            readonly_paths=readonly,
        )

    if print_only:
        from rootless.mountflags import oci_options

        userdata = store.userdata(container_id)
        binds = {
            "/etc/hosts": os.fspath(userdata / "hosts"),
            "/etc/hostname": os.fspath(userdata / "hostname"),
            "/run/.containerenv": os.fspath(userdata / ".containerenv"),
        }
        mounts = [
            {"destination": r.destination, "type": "bind" if r.type == "volume" else r.type,
             "source": r.source or "<anonymous volume>", "options": oci_options(r)}
            for r in requests
        ]  # fmt: skip
        record = Container(container_id, options.name or "", source.id, source.name, args, 0.0)
        return Prepared(
            record, spec_for(os.fspath(store.rootfs(container_id)), binds, mounts), mapping, None
        )

    record = store.create(
        container_id=container_id,
        name=options.name,
        image_id=source.id,
        image_name=source.name,
        command=process.args,
        autoremove=options.rm,
        labels=options.labels,
        config=_config_json(options, source),
    )
    try:
        userdata = store.userdata(record.id)
        binds = write_userdata(
            userdata,
            options,
            record_name=record.name,
            container_id=record.id,
            hostname=hostname,
            source=source,
            passwd=passwd_override,
            group=group_override,
        )
        mounts = _resolve_mounts(requests, store, record, source, process, mapping)
        rootfs, storage_description = _rootfs(options, store.container_dir(record.id), source)
        store.update_config(record.id, storage=storage_description)
        spec = spec_for(os.fspath(store.rootfs(record.id)), binds, mounts)
        _write(userdata / "config.json", json.dumps(spec, indent=2), 0o600)
    except BaseException:
        if options.rm:
            store.remove(record, volumes=True)
        raise
    return Prepared(record, spec, mapping, rootfs)


def _config_json(options: RunOptions, source: ImageSource) -> dict[str, Any]:
    data = options.as_dict()
    data.pop("print_spec", None)
    image_config = source.config.get("config") or {}
    data["stop_signal"] = options.stop_signal or image_config.get("StopSignal") or "SIGTERM"
    data["healthcheck"] = container_healthcheck(options.healthcheck, source.config)
    if options.publish_all:  # -P: every EXPOSEd port, on a host port the kernel picks
        exposed = sorted((image_config.get("ExposedPorts") or {}).keys())
        data["publish"] = list(options.publish) + [p for p in exposed if p not in options.publish]
    data["uidmap"] = [[r.container, r.host, r.size] for r in options.uidmap]
    data["gidmap"] = [[r.container, r.host, r.size] for r in options.gidmap]
    return data


def container_healthcheck(
    flags: Mapping[str, Any] | None, image_config: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The healthcheck the monitor runs: the --health-* flags over the image's HEALTHCHECK."""
    from rootless.monitor import health

    image = health.image_healthcheck(dict(image_config))
    if flags is None and image is None:
        return None
    f = dict(flags or {})
    config = health.config_from_flags(
        f.get("cmd"),
        f.get("interval"),
        f.get("timeout"),
        f.get("retries"),
        f.get("start_period"),
        f.get("on_failure"),
        bool(f.get("no_healthcheck")),
        image,
    )
    return config.to_json() if config is not None else None


def _resolve_mounts(
    requests: Sequence[MountRequest],
    store: ContainerStore,
    record: Container,
    source: ImageSource,
    process: ProcessSettings,
    mapping: IdMapping,
) -> list[dict[str, Any]]:
    if not requests:
        return []
    from rootless.volumes import VolumeStore, resolve_mounts

    volumes = VolumeStore(store.root, users_of=store.volume_users)
    mounts = resolve_mounts(
        requests,
        volumes=volumes,
        image_lowers=source.lowers,
        user=(process.user.uid, process.user.gid),
        container_dir=store.container_dir(record.id),
        mapping=mapping,
    )
    used = [n for n in (volumes.name_of(m["source"]) for m in mounts if m.get("source")) if n]
    anonymous = [n for n in used if (v := volumes.find(n)) is not None and v.anonymous]
    store.set_volumes(record.id, used, anonymous)
    return mounts


def _rootfs(
    options: RunOptions, container_dir: Path, source: ImageSource
) -> tuple[RootfsProvider, dict[str, Any]]:
    """The provider, and its description for later starts (see storage.reopen_rootfs)."""
    from rootless import storage

    if source.rootfs_dir is not None:
        provider = storage.rootfs_provider(options.image, container_dir)
        path = options.image
        absolute = os.path.join(os.getcwd(), path[:-2] if path.endswith(":O") else path)
        full = os.path.realpath(absolute) + (":O" if path.endswith(":O") else "")
        return provider, storage.describe_rootfs("", [], full)
    driver = storage.select_driver(None)
    provider = driver.prepare(container_dir, source.lowers)
    return provider, storage.describe_rootfs(driver.name, source.lowers, None)
