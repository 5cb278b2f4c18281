"""What `rl run` was asked to do, as one value, and the pure parsers of its flag syntaxes.

Each parser takes the flag's text and returns a value or raises RlError with podman's wording,
so the CLI layer stays a thin translation from argparse to `RunOptions`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from rootless.errors import RlError
from rootless.userns import IdMapping, IdRange

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
NETWORK_MODES = ("slirp4netns", "none", "host")
PULL_POLICIES = ("always", "missing", "never", "newer")
# podman's rootless default: user-mode networking (rl's own stack, see netns/).
DEFAULT_NETWORK = "slirp4netns"


class Userns(NamedTuple):
    """--userns: "" (the default subuid mapping) or keep-id, optionally with uid=/gid=."""

    mode: str = ""
    uid: int | None = None
    gid: int | None = None


class RunOptions:
    """What `rl run`/`rl create` was asked to do.

    A plain class rather than a dataclass: creating a 54-field dataclass costs ~1.5 ms of every
    `rl run` (start-up is a benchmark target, issue 3). `as_dict()` is what dataclasses.asdict
    gave: the record's config.
    """

    def __init__(
        self,
        image: str,
        *,
        command: list[str] | None = None,
        rm: bool = False,
        interactive: bool = False,
        tty: bool = False,
        detach: bool = False,
        name: str | None = None,
        env: list[str] | None = None,
        env_files: list[str] | None = None,
        env_host: bool = False,
        workdir: str | None = None,
        user: str | None = None,
        group_add: list[str] | None = None,
        entrypoint: list[str] | None = None,  # None: the image's; []: cleared
        hostname: str | None = None,
        userns: Userns | None = None,
        uidmap: list[IdRange] | None = None,
        gidmap: list[IdRange] | None = None,
        network: str = DEFAULT_NETWORK,
        network_options: dict[str, str] | None = None,  # slirp4netns:…
        dns: list[str] | None = None,  # --dns: replaces the nameservers
        dns_search: list[str] | None = None,
        dns_options: list[str] | None = None,
        add_hosts: list[tuple[str, str]] | None = None,  # (name, address)
        read_only: bool = False,
        read_only_tmpfs: bool = True,
        rootfs: bool = False,
        volumes: list[str] | None = None,
        mounts: list[str] | None = None,
        tmpfs: list[str] | None = None,
        cap_add: list[str] | None = None,
        cap_drop: list[str] | None = None,
        privileged: bool = False,
        security_opt: list[str] | None = None,
        ulimits: list[str] | None = None,
        tz: str | None = None,
        init: bool = False,
        shm_size: int = DEFAULT_SHM_SIZE,
        sig_proxy: bool = True,
        pull: str = "missing",
        labels: dict[str, str] | None = None,
        print_spec: bool = False,
        # Lifecycle (the monitor's business; see rootless.monitor)
        restart: str = "no",  # no | on-failure[:N] | always | unless-stopped
        log_driver: str = "k8s-file",  # k8s-file | none | passthrough
        log_opts: dict[str, str] | None = None,  # max-size, path, …
        stop_signal: str | None = None,  # None: the image's StopSignal, else SIGTERM
        stop_timeout: int = 10,
        healthcheck: dict[str, Any] | None = None,  # monitor.health's HealthConfig, as JSON
        detach_keys: str = "ctrl-p,ctrl-q",
        publish: list[str] | None = None,  # -p specs, for the network stack
        publish_all: bool = False,  # -P: the image's EXPOSEd ports, on random host ports
        # cgroups (rootless.cgroups): the resource flags as rootless.cgroups.core.Limits.to_json()
        resources: dict[str, Any] | None = None,
        cgroups: str = "enabled",  # enabled | disabled | no-conmon | split
        cgroupns: str = "private",  # private | host
    ) -> None:
        self.image = image
        self.command = command or []
        self.rm = rm
        self.interactive = interactive
        self.tty = tty
        self.detach = detach
        self.name = name
        self.env = env or []
        self.env_files = env_files or []
        self.env_host = env_host
        self.workdir = workdir
        self.user = user
        self.group_add = group_add or []
        self.entrypoint = entrypoint
        self.hostname = hostname
        self.userns = userns or Userns()
        self.uidmap = uidmap or []
        self.gidmap = gidmap or []
        self.network = network
        self.network_options = network_options or {}
        self.dns = dns or []
        self.dns_search = dns_search or []
        self.dns_options = dns_options or []
        self.add_hosts = add_hosts or []
        self.read_only = read_only
        self.read_only_tmpfs = read_only_tmpfs
        self.rootfs = rootfs
        self.volumes = volumes or []
        self.mounts = mounts or []
        self.tmpfs = tmpfs or []
        self.cap_add = cap_add or []
        self.cap_drop = cap_drop or []
        self.privileged = privileged
        self.security_opt = security_opt or []
        self.ulimits = ulimits or []
        self.tz = tz
        self.init = init
        self.shm_size = shm_size
        self.sig_proxy = sig_proxy
        self.pull = pull
        self.labels = labels or {}
        self.print_spec = print_spec
        self.restart = restart
        self.log_driver = log_driver
        self.log_opts = log_opts or {}
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.healthcheck = healthcheck
        self.detach_keys = detach_keys
        self.publish = publish or []
        self.publish_all = publish_all
        self.resources = resources or {}
        self.cgroups = cgroups
        self.cgroupns = cgroupns

    def __repr__(self) -> str:
        return f"RunOptions({self.__dict__!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunOptions) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def as_dict(self) -> dict[str, Any]:
        """Every option by name, for JSON: the id ranges and --userns as objects."""
        data = dict(self.__dict__)
        data["userns"] = self.userns._asdict()
        data["uidmap"] = [r._asdict() for r in self.uidmap]
        data["gidmap"] = [r._asdict() for r in self.gidmap]
        return data


_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str, flag: str = "--shm-size") -> int:
    """A size like podman's (go-units RAMInBytes): 64m, 1g, 512k, 1048576; binary units."""
    match = _SIZE.match(text.strip())
    if not match:
        raise RlError(
            f"invalid size for {flag}: {text!r}: use a number with an optional unit b, k, m or g"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def parse_human_size(text: str, flag: str) -> int:
    """A size as go-units FromHumanSize reads it (--log-opt max-size): decimal units, so
    1k is 1000 bytes, and a trailing i changes nothing (podman shows 1ki as 1kB too)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise RlError(
            f"invalid size for {flag}: {text!r}: use a number with an optional unit b, k, m or g"
        )
    number, unit = match.groups()
    power = "kmgtp".index(unit.lower()) + 1 if unit else 0
    return int(float(number) * 1000**power)


def parse_pull(text: str) -> str:
    if text in PULL_POLICIES:
        return text
    raise RlError(f'invalid pull policy "{text}": use always, missing, never or newer')


def parse_entrypoint(text: str) -> list[str]:
    """--entrypoint: a JSON array, or one executable name; "" clears the image's entrypoint."""
    if text == "":
        return []
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    return [text]


def parse_network(text: str) -> str:
    """--network's mode: slirp4netns (user-mode networking, the rootless default), none
    (loopback only) or host. Its options are parse_network_options' business."""
    mode = text.split(":", 1)[0]
    if mode in ("", "default", "private"):
        return DEFAULT_NETWORK
    if mode in ("pasta", "bridge"):
        raise RlError(
            f"network mode {mode!r} is not available in rl: use slirp4netns (the default, "
            "user-mode networking), none or host"
        )
    if mode not in NETWORK_MODES:
        raise RlError(f"unknown network mode {text!r}: use slirp4netns (the default), none or host")
    return mode


SLIRP_OPTIONS = ("allow_host_loopback", "mtu", "enable_ipv6", "port_handler")


def parse_network_options(text: str) -> dict[str, str]:
    """`slirp4netns:allow_host_loopback=true,mtu=1500` -> {"allow_host_loopback": "true", …},
    checked. Options podman knows but rl does not implement are refused, not ignored."""
    mode, sep, rest = text.partition(":")
    if not sep:
        return {}
    if mode != "slirp4netns":
        raise RlError(f"network mode {mode} takes no options: {text!r}")
    opts: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if key not in SLIRP_OPTIONS or not eq:
            raise RlError(
                f"unknown slirp4netns option {item!r}: rl knows allow_host_loopback=true|false, "
                "enable_ipv6=true|false and mtu=N"
            )
        if key in ("allow_host_loopback", "enable_ipv6") and value not in ("true", "false"):
            raise RlError(f"invalid slirp4netns option {item!r}: use {key}=true or {key}=false")
        if key == "mtu" and not (value.isdigit() and 576 <= int(value) <= 65520):
            raise RlError(f"invalid slirp4netns option {item!r}: mtu must be 576 to 65520")
        if key == "port_handler" and value not in ("rootlesskit", "slirp4netns"):
            raise RlError(f"invalid slirp4netns option {item!r}")
        opts[key] = value
    return opts


def parse_add_host(text: str) -> tuple[str, str]:
    """--add-host NAME:IP (IPv6 addresses contain colons: the name ends at the first)."""
    import ipaddress

    name, sep, address = text.partition(":")
    if not sep or not name:
        raise RlError(f'invalid --add-host "{text}": use HOST:IP')
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise RlError(f'invalid IP address in add-host: "{address}"') from None
    return name, address.strip("[]")


def parse_dns_server(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise RlError(f"{text} is not an ip address") from None


def parse_userns(text: str) -> Userns:
    """--userns: "" or host (the default subuid mapping when rootless), keep-id[:uid=N,gid=N]."""
    if text in ("", "host"):
        return Userns()
    mode, _, rest = text.partition(":")
    if mode != "keep-id":
        raise RlError(f"unsupported --userns mode {text!r}: use keep-id[:uid=N,gid=N] or host")
    ids: dict[str, int] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if key not in ("uid", "gid") or not sep or not value.isdigit():
            raise RlError(f"invalid --userns option {item!r}: use keep-id:uid=N,gid=N")
        ids[key] = int(value)
    return Userns("keep-id", ids.get("uid"), ids.get("gid"))


def parse_idmap(text: str, flag: str) -> list[IdRange]:
    """--uidmap/--gidmap container:host:size[,container:host:size…] (host = intermediate ids)."""
    ranges = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or int(parts[2]) == 0:
            raise RlError(
                f"invalid {flag} {item!r}: use container_id:host_id:amount, e.g. 0:1:1000"
            )
        ranges.append(IdRange(int(parts[0]), int(parts[1]), int(parts[2])))
    return ranges


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?$")


def parse_hostname(text: str) -> str:
    if not _HOSTNAME.match(text):
        raise RlError(f"invalid hostname {text!r}: use up to 63 letters, digits, dots and dashes")
    return text


def parse_label(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key:
        raise RlError(f"invalid label {text!r}: use KEY=VALUE")
    return key, value


ZONEINFO = Path("/usr/share/zoneinfo")


def timezone_file(tz: str, zoneinfo: Path = ZONEINFO) -> Path:
    """--tz: the zoneinfo file to copy to /etc/localtime ("local" is the host's own)."""
    if tz == "local":
        return Path("/etc/localtime")
    path = zoneinfo / tz
    if ".." in Path(tz).parts or tz.startswith("/") or not path.is_file():
        raise RlError(f"finding timezone: unknown time zone {tz}")
    return path


def container_mapping(
    options: RunOptions, base: IdMapping, host_uid: int, host_gid: int
) -> IdMapping:
    """The container's id mapping in host ids, from --userns/--uidmap/--gidmap.

    `base` is the user's default mapping (0 -> the user, 1… -> subordinate ids); podman calls
    that the intermediate namespace, and --uidmap's host ids and keep-id refer to it.
    """
    if options.uidmap or options.gidmap:
        # podman: --uidmap alone sets both maps; --gidmap alone keeps the default uid map.
        uidmap = options.uidmap or _identity(base.uids)
        gidmap = options.gidmap or options.uidmap
        uids = compose(uidmap, base.uids, "--uidmap")
        gids = compose(gidmap, base.gids, "--gidmap")
        if not _maps_host_id(uids, host_uid) or not _maps_host_id(gids, host_gid):
            # The container's storage belongs to the user: without the user's ids in the
            # namespace its root cannot reach it (podman would copy and chown the image).
            raise RlError(
                "--uidmap/--gidmap must map your own user, intermediate id 0, to some "
                "container id (e.g. --uidmap 0:1:1000 --uidmap 1000:0:1): rl cannot yet give a "
                "container a root filesystem without it"
            )
        return IdMapping(tuple(uids), tuple(gids))
    if options.userns.mode == "keep-id":
        if base.single:
            raise RlError(
                "--userns=keep-id needs subordinate ids: add a range for your user to "
                "/etc/subuid and /etc/subgid (see `rl doctor`)"
            )
        uid = host_uid if options.userns.uid is None else options.userns.uid
        gid = host_gid if options.userns.gid is None else options.userns.gid
        return IdMapping(
            tuple(compose(keep_id_ranges(uid, base.uids), base.uids, "--userns")),
            tuple(compose(keep_id_ranges(gid, base.gids), base.gids, "--userns")),
        )
    return base


def _maps_host_id(ranges: list[IdRange], host_id: int) -> bool:
    return any(r.host <= host_id < r.host + r.size for r in ranges)


def _identity(ranges: tuple[IdRange, ...]) -> list[IdRange]:
    return [IdRange(r.container, r.container, r.size) for r in ranges]


def keep_id_ranges(cid: int, base: tuple[IdRange, ...]) -> list[IdRange]:
    """keep-id in intermediate ids: 0..cid-1 -> 1..cid, cid -> 0 (the user), the rest as is."""
    total = sum(r.size for r in base)  # the user plus its subordinate ids
    subs = total - 1
    if cid > subs:
        raise RlError(f"--userns=keep-id: uid/gid {cid} is beyond the {subs} subordinate ids")
    ranges = []
    if cid > 0:
        ranges.append(IdRange(0, 1, cid))
    ranges.append(IdRange(cid, 0, 1))
    if subs - cid > 0:
        ranges.append(IdRange(cid + 1, cid + 1, subs - cid))
    return ranges


def compose(wanted: list[IdRange], base: tuple[IdRange, ...], flag: str) -> list[IdRange]:
    """Ranges container -> intermediate, turned into container -> host through `base`."""
    out: list[IdRange] = []
    for r in wanted:
        container, inter, left = r.container, r.host, r.size
        while left:
            piece = next((b for b in base if b.container <= inter < b.container + b.size), None)
            if piece is None:
                raise RlError(
                    f"{flag}: intermediate id {inter} is not mapped: your user has "
                    f"{sum(b.size for b in base)} ids (0 is you, 1… are /etc/subuid's)"
                )
            take = min(left, piece.container + piece.size - inter)
            out.append(IdRange(container, piece.host + inter - piece.container, take))
            container, inter, left = container + take, inter + take, left - take
    return out


def parse_signal(text: str) -> str:
    """A signal as podman takes it (TERM, SIGTERM, sigterm, 15); its canonical name."""
    import signal

    name = text.strip().upper()
    if name.isdigit():
        try:
            return signal.Signals(int(name)).name
        except ValueError:
            raise RlError(f"invalid signal: {text}") from None
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__:
        raise RlError(f"invalid signal: {text}")
    return name
