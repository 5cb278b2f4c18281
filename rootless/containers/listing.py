"""`rl ps` without I/O: filters, selection, status text, port mappings, and the rows that the
table, `--format` templates and `--format json` print (podman 4.3's shapes).

Measured on podman 4.3 here:
- a running container's status is "Up 5 seconds ago" (4.3 still says "ago"; podman 5 dropped
  it), an exited one "Exited (3) 5 seconds ago", others their state capitalised ("Created");
  a healthcheck status follows in parentheses, also after "Exited …" ("(starting)").
- an exit code that is unknown (the process that ran the container died without recording
  it) is -1, as podman records it when conmon's exit file is missing: "Exited (-1) …".
- filters: values of one key are alternatives, different keys must all match — except
  `label`, where every value must match (podman's MatchLabelFilters). A `status` filter lists
  all containers, not just running ones; -n N (and -l, which is -n 1) too.
- rows are listed oldest first; -n N keeps the N newest of them.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rootless.errors import RlError

if TYPE_CHECKING:
    from rootless.containers.store import Container

FILTER_KEYS = ("id", "name", "label", "status", "ancestor", "exited", "health", "before", "since")
STATUS_VALUES = (
    "created",
    "running",
    "paused",
    "stopped",
    "exited",
    "unknown",
    "restarting",
    "stopping",
    "removing",
)
HEALTH_VALUES = ("starting", "healthy", "unhealthy", "none")
# An exit code nobody recorded (podman's value in the same case).
UNKNOWN_EXIT_CODE = -1
# Go's zero time.Time as Unix seconds: podman's ExitedAt/StartedAt when there was none.
GO_ZERO_UNIX = -62135596800
PROTOCOLS = ("tcp", "udp", "sctp")

# podman's column headers for `ps` fields (others: the field's words upper-cased).
HEADERS = {
    "ID": "CONTAINER ID",
    "CreatedHuman": "CREATED",
    "RunningFor": "CREATED",
    "Names": "NAMES",
    "Pod": "POD ID",
    "PodName": "PODNAME",
    "Networks": "NETWORKS",
}
DEFAULT_ROW = (
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.CreatedHuman}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
)
SORT_KEYS = ("command", "created", "id", "image", "names", "runningfor", "size", "status")


# --- durations ----------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """go-units HumanDuration (podman's CREATED and STATUS columns)."""
    from rootless.cli.output import human_duration as go_units

    return go_units(seconds)


# --- filters ------------------------------------------------------------------------------


def parse_filters(values: Sequence[str]) -> dict[str, list[str]]:
    """`--filter KEY=VALUE` (repeatable) -> {key: [values]}, with podman's errors."""
    filters: dict[str, list[str]] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            raise RlError(f'invalid filter "{item}"')
        if key not in FILTER_KEYS:
            raise RlError(f"{key} is an invalid filter")
        if key == "status" and value not in STATUS_VALUES:
            raise RlError(f"unknown container state: {value}: invalid argument")
        if key == "health" and value not in HEALTH_VALUES:
            raise RlError(
                f'"{value}" is not a valid health status: use starting, healthy, unhealthy or none'
            )
        if key == "exited":
            _exit_code(value)
        if key in ("id", "name"):
            _regex(value, key)
        filters.setdefault(key, []).append(value)
    return filters


def _exit_code(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise RlError(
            f'exited code out of range "{value}": strconv.ParseInt: parsing "{value}": '
            "invalid syntax"
        ) from None


def _regex(value: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except re.error as exc:
        raise RlError(f"invalid {key} filter {value!r}: {exc}") from None


def exit_code(record: Container) -> int:
    """The exit code podman would report: -1 when unknown, 0 before any exit."""
    if record.exit_code is not None:
        return record.exit_code
    return UNKNOWN_EXIT_CODE if record.state == "exited" else 0


def health_status(record: Container) -> str:
    """The healthcheck's status ("starting", "healthy", "unhealthy"), "" without one."""
    if not record.health:
        return ""
    return str(record.health.get("Status") or "")


def labels_match(filter_values: Iterable[str], labels: Mapping[str, str]) -> bool:
    """podman's MatchLabelFilters: every `key[=value]` must match some label (keys may be
    glob patterns)."""
    for item in filter_values:
        key, eq, value = item.partition("=")
        if not any(
            (not eq or label_value == value)
            and (label_key == key or fnmatch.fnmatchcase(label_key, key))
            for label_key, label_value in labels.items()
        ):
            return False
    return True


def ancestor_matches(value: str, image_id: str, image_name: str) -> bool:
    """podman 4.3: the image's full ID, its full name, or the name without a `:latest` tag."""
    if value in (image_id, image_name):
        return True
    name, colon, tag = image_name.rpartition(":")
    return bool(colon) and "/" not in tag and tag == "latest" and name == value


def matches(
    record: Container,
    filters: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    created_of: Callable[[str], float | None] | None = None,
) -> bool:
    """Does `record` pass every filter? `labels` are its labels merged over its image's;
    `created_of(ref)` gives the creation time of the container a before/since filter names."""
    for key, values in filters.items():
        if key == "label":
            if not labels_match(values, labels):
                return False
        elif not any(_matches_one(record, key, v, created_of) for v in values):
            return False
    return True


def _matches_one(
    record: Container,
    key: str,
    value: str,
    created_of: Callable[[str], float | None] | None,
) -> bool:
    if key == "id":
        return _regex(value, key).search(record.id) is not None
    if key == "name":
        return _regex(value, key).search(record.name) is not None
    if key == "status":
        state = record.state
        return state == value or (value == "stopped" and state == "exited")
    if key == "exited":
        return record.state == "exited" and exit_code(record) == _exit_code(value)
    if key == "ancestor":
        return ancestor_matches(value, record.image_id, record.image_name)
    if key == "health":
        status = health_status(record)
        return status == value or (value == "none" and status == "")
    if key in ("before", "since"):
        reference = created_of(value) if created_of else None
        if reference is None:
            raise RlError(f'no container with name or ID "{value}" found: no such container')
        return record.created < reference if key == "before" else record.created > reference
    return False


def select(
    records: Iterable[Container],
    *,
    all_states: bool = False,
    latest: bool = False,
    last: int = -1,
    filters: Mapping[str, Sequence[str]] | None = None,
    labels_of: Callable[[Container], Mapping[str, str]] | None = None,
    created_of: Callable[[str], float | None] | None = None,
) -> list[Container]:
    """The containers `ps` lists, oldest first (podman's order)."""
    filters = filters or {}
    if latest:
        last = 1
    show_all = all_states or last > 0 or bool(filters.get("status"))
    chosen = []
    for record in sorted(records, key=lambda r: r.created):
        if not show_all and record.state != "running":
            continue
        labels = labels_of(record) if labels_of else record.labels
        if matches(record, filters, labels, created_of):
            chosen.append(record)
    if last > 0:
        chosen = chosen[-last:]
    return chosen


# --- status text --------------------------------------------------------------------------


def state_text(record: Container, now: float) -> str:
    """podman 4.3's `{{.State}}` in ps: the status without the healthcheck's."""
    if record.state == "running":
        return f"Up {human_duration(now - (record.started or record.created))} ago"
    if record.state == "exited":
        when = record.finished or record.started or record.created
        return f"Exited ({exit_code(record)}) {human_duration(now - when)} ago"
    return record.state[:1].upper() + record.state[1:]


def status_text(record: Container, now: float) -> str:
    """The STATUS column: "Up 5 seconds ago (healthy)", "Exited (0) 3 seconds ago",
    "Created"…"""
    text = state_text(record, now)
    health = health_status(record)
    return f"{text} ({health})" if health else text


# --- ports --------------------------------------------------------------------------------


def _port_range(text: str, spec: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        start = int(first)
        end = int(last) if dash else start
    except ValueError:
        raise RlError(f'invalid port "{text}" in "{spec}": use a number or a range N-M') from None
    if not (0 <= start <= 65535 and 0 <= end <= 65535) or end < start:
        raise RlError(f'invalid port "{text}" in "{spec}": ports are 0-65535')
    return start, end - start + 1


def parse_publish(spec: str) -> list[dict[str, Any]]:
    """One `-p [[IP:][HOST_PORT]:]CONTAINER_PORT[/PROTO[,PROTO]]` as podman's PortMapping
    records ({host_ip, container_port, host_port, range, protocol}, one per protocol; a host
    port not given is 0 until the network stack picks one)."""
    text, _, protos = spec.partition("/")
    protocols = [p for p in (protos or "tcp").split(",") if p]
    for proto in protocols:
        if proto not in PROTOCOLS:
            raise RlError(f'invalid protocol "{proto}" in "{spec}": use tcp, udp or sctp')
    host_ip = ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise RlError(f'invalid IPv6 address in "{spec}"')
        host_ip, text = text[1:close], text[close + 1 :].removeprefix(":")
        parts = text.split(":")
        if len(parts) == 1:
            parts = ["", parts[0]]
    else:
        parts = text.split(":")
        if len(parts) == 3:
            host_ip = parts.pop(0)
    if len(parts) > 2 or not parts[-1]:
        raise RlError(f'invalid port format "{spec}": use [[IP:][HOST_PORT]:]CONTAINER_PORT')
    container_port, size = _port_range(parts[-1], spec)
    host_port = 0
    if len(parts) == 2 and parts[0]:
        host_port, host_size = _port_range(parts[0], spec)
        if host_size != size:
            raise RlError(
                f'invalid port format "{spec}": host and container port ranges differ in size'
            )
    if host_ip in ("0.0.0.0", "::"):
        host_ip = ""
    return [
        {
            "host_ip": host_ip,
            "container_port": container_port,
            "host_port": host_port,
            "range": size,
            "protocol": proto,
        }
        for proto in protocols
    ]


def port_mappings(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The container's published ports (record.config["publish"]: -p specs as given, or
    PortMapping dicts once the network stack records the ports it bound)."""
    if config.get("ports"):  # what the network stack actually bound (random ports resolved)
        return [dict(m) for m in config["ports"]]
    found: list[dict[str, Any]] = []
    for item in config.get("publish") or []:
        if isinstance(item, Mapping):
            found.append(dict(item))
        else:
            found.extend(parse_publish(str(item)))
    return found


def ports_text(mappings: Sequence[Mapping[str, Any]]) -> str:
    """The PORTS column: "0.0.0.0:8080->80/tcp, 127.0.0.1:9000-9001->90-91/udp"."""
    parts = []
    for m in mappings:
        ip = m.get("host_ip") or "0.0.0.0"
        host, cport, size, proto = (
            m["host_port"],
            m["container_port"],
            m.get("range", 1),
            m["protocol"],
        )
        if size > 1:
            parts.append(f"{ip}:{host}-{host + size - 1}->{cport}-{cport + size - 1}/{proto}")
        else:
            parts.append(f"{ip}:{host}->{cport}/{proto}")
    return ", ".join(parts)


def port_lines(mappings: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """`rl port`'s lines, one per port of a range: ("80/tcp", "0.0.0.0:8080")."""
    lines = []
    for m in mappings:
        ip = m.get("host_ip") or "0.0.0.0"
        for i in range(m.get("range", 1)):
            host = m["host_port"] + i if m["host_port"] else 0
            lines.append((f"{m['container_port'] + i}/{m['protocol']}", f"{ip}:{host}"))
    return lines


def parse_private_port(text: str) -> str:
    """`rl port CONTAINER 80[/udp]` -> "80/udp" (tcp by default), podman's errors."""
    number, slash, proto = text.partition("/")
    if proto.count("/"):
        raise RlError(f"port formats are port/protocol. '{text}' is invalid")
    try:
        port = int(number)
    except ValueError:
        raise RlError(f'strconv.Atoi: parsing "{number}": invalid syntax') from None
    return f"{port}/{proto if slash else 'tcp'}"


# --- rows ---------------------------------------------------------------------------------


def go_time(epoch: float) -> str:
    """Go's time.Time.String() in UTC: "2026-12-02 15:30:53.835619 +0000 UTC"."""
    whole = int(epoch)
    micros = round((epoch - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
    fraction = f".{micros:06d}".rstrip("0").rstrip(".")
    return f"{text}{fraction} +0000 UTC"


def size_text(size: tuple[int, int] | None) -> str:
    """`-s`: "12B (virtual 1.99MB)" (go-units, 3 significant digits, no space)."""
    if size is None:
        return ""
    from rootless.cli.output import human_size

    rw, rootfs = size
    return f"{human_size(rw, 3, '')} (virtual {human_size(rootfs, 3, '')})"


def truncated_command(command: Sequence[str], no_trunc: bool) -> str:
    text = " ".join(command)
    return text if no_trunc or len(text) <= 17 else text[:17] + "..."


def template_row(
    record: Container,
    now: float,
    *,
    no_trunc: bool = False,
    labels: Mapping[str, str] | None = None,
    size: tuple[int, int] | None = None,
    mounts: Sequence[str] = (),
) -> dict[str, Any]:
    """The fields `ps --format` templates see (podman 4.3's psReporter)."""
    mappings = port_mappings(record.config)
    created_human = human_duration(now - record.created) + " ago"
    return {
        "ID": record.id if no_trunc else record.short_id,
        "Image": record.image_name,
        "ImageID": record.image_id if no_trunc else record.image_id[:12],
        "Command": truncated_command(record.command, no_trunc),
        "CreatedHuman": created_human,
        "Created": go_time(record.created),
        "CreatedAt": go_time(record.created),
        "RunningFor": created_human,
        "Status": status_text(record, now),
        "State": state_text(record, now),
        "Ports": ports_text(mappings),
        "Names": record.name,
        "Labels": dict(sorted((labels if labels is not None else record.labels).items())),
        "Mounts": list(mounts),
        "Networks": "",
        "Pid": _pid(record),
        "Pod": "",
        "PodName": "",
        "Size": size_text(size),
        "Exited": record.state == "exited",
        "ExitCode": exit_code(record),
        "ExitedAt": int(record.finished) if record.finished else GO_ZERO_UNIX,
        "StartedAt": int(record.started) if record.started else GO_ZERO_UNIX,
        "AutoRemove": record.autoremove,
        "IsInfra": False,
        "Namespaces": {},
        "Restarts": record.restart_count,
    }


def json_row(
    record: Container,
    now: float,
    *,
    labels: Mapping[str, str] | None = None,
    size: tuple[int, int] | None = None,
    mounts: Sequence[str] = (),
) -> dict[str, Any]:
    """One entry of `ps --format json` (podman 4.3's ListContainer, keys in its order)."""
    mappings = port_mappings(record.config)
    return {
        "AutoRemove": record.autoremove,
        "Command": list(record.command),
        "CreatedAt": human_duration(now - record.created) + " ago",
        "Exited": record.state == "exited",
        "ExitedAt": int(record.finished) if record.finished else GO_ZERO_UNIX,
        "ExitCode": exit_code(record),
        "Id": record.id,
        "Image": record.image_name,
        "ImageID": record.image_id,
        "IsInfra": False,
        "Labels": dict(sorted((labels if labels is not None else record.labels).items())) or None,
        "Mounts": list(mounts),
        "Names": [record.name],
        "Namespaces": {},
        "Networks": [],
        "Pid": _pid(record),
        "Pod": "",
        "PodName": "",
        "Ports": mappings or None,
        "Restarts": record.restart_count,
        "Size": {"rootFsSize": size[1], "rwSize": size[0]} if size is not None else None,
        "StartedAt": int(record.started) if record.started else GO_ZERO_UNIX,
        "State": record.state,
        "Status": status_text(record, now),
        "Created": int(record.created),
    }


def _pid(record: Container) -> int:
    return (record.container_pid or 0) if record.state == "running" else 0


def mount_destinations(spec: Mapping[str, Any], userdata: str) -> list[str]:
    """Where the container's -v, --mount and --tmpfs mounts are (podman's ps `Mounts`): the
    spec's bind and tmpfs mounts, less rl's own (/dev, /dev/shm, the files in userdata)."""
    found = []
    for mount in spec.get("mounts") or []:
        if is_user_mount(mount, userdata):
            found.append(str(mount.get("destination", "")))
    return found


# Mounts every container gets (not the user's).
_SYSTEM_DESTINATIONS = frozenset(
    ["/proc", "/dev", "/sys", "/dev/pts", "/dev/mqueue", "/dev/shm", "/sys/fs/cgroup"]
)


def is_user_mount(mount: Mapping[str, Any], userdata: str) -> bool:
    if mount.get("type") not in ("bind", "tmpfs"):
        return False
    if mount.get("destination") in _SYSTEM_DESTINATIONS:
        return False
    source = str(mount.get("source", ""))
    return not (userdata and source.startswith(userdata.rstrip("/") + "/"))


def sort_rows(
    records: list[Container],
    key: str,
    now: float,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> list[Container]:
    """`ps --sort`: podman's keys."""
    keys: dict[str, Callable[[Container], Any]] = {
        "command": lambda r: " ".join(r.command),
        "created": lambda r: r.created,
        "runningfor": lambda r: -r.created,
        "id": lambda r: r.id,
        "image": lambda r: r.image_name,
        "names": lambda r: r.name,
        "status": lambda r: status_text(r, now),
        "size": lambda r: (sizes or {}).get(r.id, (0, 0))[0],
    }
    if key not in keys:
        raise RlError(f"invalid option for --sort, options are: {', '.join(SORT_KEYS)}")
    return sorted(records, key=keys[key])


# --- durations, prune, wait ---------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration ("250ms", "1h30m", "1.5s") in seconds; RlError when invalid."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise RlError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not body:
        raise RlError(f'time: invalid duration "{text}"')
    return sign * total


def parse_interval(text: str) -> float:
    """`wait --interval`: a Go duration, or a bare number of milliseconds (podman's rule)."""
    if text.strip().isdigit():
        return int(text) / 1000
    return parse_go_duration(text)


def parse_until(text: str, now: float) -> float:
    """podman's `until=` filter value as an epoch: a duration before now ("10m"), Unix
    seconds, or an RFC 3339 date-time."""
    import datetime

    try:
        return now - parse_go_duration(text)
    except RlError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RlError(
            f'invalid until filter "{text}": use a duration, Unix seconds or an RFC 3339 time'
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


PRUNE_FILTER_KEYS = ("label", "label!", "until")
# States `container prune` removes (podman: everything not running, paused or stopping).
PRUNABLE_STATES = ("created", "exited")


def parse_prune_filters(values: Sequence[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            raise RlError(f'invalid filter "{item}"')
        if key not in PRUNE_FILTER_KEYS:
            raise RlError(f"{key} is an invalid filter")
        filters.setdefault(key, []).append(value)
    return filters


def prunable(
    record: Container, filters: Mapping[str, Sequence[str]], labels: Mapping[str, str], now: float
) -> bool:
    """Does `container prune` remove `record`?"""
    if record.state not in PRUNABLE_STATES:
        return False
    if "label" in filters and not labels_match(filters["label"], labels):
        return False
    if any(labels_match([v], labels) for v in filters.get("label!", [])):
        return False
    return all(record.created < parse_until(v, now) for v in filters.get("until", []))


WAIT_CONDITIONS = (
    "created",
    "running",
    "paused",
    "stopped",
    "exited",
    "stopping",
    "restarting",
    "healthy",
    "unhealthy",
)
# States in which a container still runs (podman's wait for "stopped" blocks in them).
ACTIVE_STATES = ("running", "paused", "stopping", "restarting")


def parse_conditions(values: Sequence[str]) -> list[str]:
    """`wait --condition` (repeatable, comma-separated too); "stopped" by default."""
    conditions = [c for v in values for c in v.split(",") if c] or ["stopped"]
    for condition in conditions:
        if condition not in WAIT_CONDITIONS:
            raise RlError(f"unknown container state: {condition}: invalid argument")
    return conditions


def wait_result(record: Container, conditions: Sequence[str]) -> int | None:
    """What `rl wait` prints once `record` meets one of `conditions` (its exit code for
    stopped/exited, -1 for the others, as podman), or None while it does not yet."""
    for condition in conditions:
        if condition in ("stopped", "exited"):
            if record.state not in ACTIVE_STATES:
                return exit_code(record)
        elif condition in ("healthy", "unhealthy"):
            if health_status(record) == condition:
                return UNKNOWN_EXIT_CODE
        elif record.state == condition:
            return UNKNOWN_EXIT_CODE
    return None
