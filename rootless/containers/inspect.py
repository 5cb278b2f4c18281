"""`rl inspect` of a container without I/O: the record, its config.json and a few facts the
shell gathers -> podman 4.3's JSON shape (keys in podman's order; fields rl has no notion
of carry podman's empty values, so scripts that read them keep working)."""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rootless.containers import listing
from rootless.network import ipv6_settings

if TYPE_CHECKING:
    from rootless.containers.store import Container

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
NANOSECONDS = 1_000_000_000
DEFAULT_STOP_TIMEOUT = 10
# Propagation options (HostConfig.Binds keeps them, Mounts[].Options does not).
_PROPAGATIONS = frozenset(
    ["private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"]
)


@dataclass(frozen=True)
class InspectFacts:
    """What inspect needs besides the record and config.json (the shell looks them up)."""

    userdata: str = ""  # <store>/containers/<id>/userdata
    volumes_dir: str = ""  # <store>/volumes
    log_path: str = ""
    driver: str = "overlay"
    image_config: Mapping[str, Any] = field(default_factory=dict)  # the image's OCI config
    image_digest: str = ""
    size: tuple[int, int] | None = None  # (rw, rootfs) with --size


def rfc3339_nano(epoch: float | None) -> str:
    """Go's RFC3339Nano in UTC, trailing zeros of the fraction dropped; Go's zero time for
    None."""
    if not epoch:
        return GO_ZERO_TIME
    whole = int(epoch)
    micros = round((epoch - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    fraction = f".{micros:06d}".rstrip("0").rstrip(".")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + fraction + "Z"


def signal_number(name: str | int | None, default: int = int(signal.SIGTERM)) -> int:
    """ "SIGINT", "INT", "2" -> 2 (podman's Config.StopSignal is a number)."""
    if name is None or name == "":
        return default
    if isinstance(name, int):
        return name
    text = str(name).strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        return default


def _state(record: Container, spec: Mapping[str, Any]) -> dict[str, Any]:
    running = record.state == "running"
    state: dict[str, Any] = {
        "OciVersion": spec.get("ociVersion", ""),
        "Status": record.state,
        "Running": running,
        "Paused": record.state == "paused",
        "Restarting": record.state == "restarting",
        "OOMKilled": record.oom_killed,
        "Dead": False,
        "Pid": (record.container_pid or 0) if running else 0,
    }
    if running and record.runner_pid:
        state["ConmonPid"] = record.runner_pid
    state.update(
        {
            "ExitCode": listing.exit_code(record),
            "Error": record.error,
            "StartedAt": rfc3339_nano(record.started),
            "FinishedAt": rfc3339_nano(record.finished),
            "Health": dict(record.health)
            if record.health
            else {"Status": "", "FailingStreak": 0, "Log": None},
            "CheckpointedAt": GO_ZERO_TIME,
            "RestoredAt": GO_ZERO_TIME,
        }
    )
    return state


def _entrypoint_and_cmd(
    record: Container, image_config: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """Split the command as run into podman's Config.Entrypoint and Config.Cmd."""
    config = record.config
    entrypoint = config.get("entrypoint")
    if entrypoint is None:
        entrypoint = list(image_config.get("Entrypoint") or [])
    command = list(record.command)
    if command[: len(entrypoint)] == list(entrypoint):
        return list(entrypoint), command[len(entrypoint) :]
    return [], command


def _mount_entry(mount: Mapping[str, Any], volumes_dir: str) -> tuple[dict[str, Any], str]:
    """One of podman's Mounts entries and its HostConfig.Binds line."""
    source = str(mount.get("source", ""))
    destination = str(mount.get("destination", ""))
    options = [str(o) for o in mount.get("options") or []]
    read_only = "ro" in options
    propagation = next((o for o in options if o in _PROPAGATIONS), "rprivate")
    volume = ""
    prefix = volumes_dir.rstrip("/") + "/" if volumes_dir else None
    if prefix and source.startswith(prefix) and source.endswith("/_data"):
        volume = source[len(prefix) : -len("/_data")]
    kept = [o for o in options if o not in ("rw", "ro") and o not in _PROPAGATIONS]
    entry: dict[str, Any] = {"Type": "volume" if volume else "bind"}
    if volume:
        entry["Name"] = volume
    entry.update(
        {
            "Source": source,
            "Destination": destination,
            "Driver": "local" if volume else "",
            "Mode": "",
            "Options": kept,
            "RW": not read_only,
            "Propagation": propagation,
        }
    )
    bind_options = ["ro" if read_only else "rw"] + [o for o in options if o not in ("rw", "ro")]
    bind = f"{volume or source}:{destination}:{','.join(bind_options)}"
    return entry, bind


def _user_mounts(
    spec: Mapping[str, Any], facts: InspectFacts
) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """podman's Mounts (volumes first, then binds, each by destination), HostConfig.Binds and
    HostConfig.Tmpfs from the spec's mounts the user asked for."""
    volumes: list[tuple[dict[str, Any], str]] = []
    binds: list[tuple[dict[str, Any], str]] = []
    tmpfs: dict[str, str] = {}
    for mount in spec.get("mounts") or []:
        if not listing.is_user_mount(mount, facts.userdata):
            continue
        if mount.get("type") == "tmpfs":
            tmpfs[str(mount.get("destination"))] = ",".join(mount.get("options") or [])
            continue
        entry, line = _mount_entry(mount, facts.volumes_dir)
        (volumes if entry["Type"] == "volume" else binds).append((entry, line))
    ordered = sorted(volumes, key=lambda e: e[0]["Destination"]) + sorted(
        binds, key=lambda e: e[0]["Destination"]
    )
    return [e for e, _ in ordered], [b for _, b in ordered], tmpfs


def _ports(
    mappings: Sequence[Mapping[str, Any]], image_config: Mapping[str, Any]
) -> dict[str, Any]:
    """podman's NetworkSettings.Ports / HostConfig.PortBindings: the image's exposed ports
    (null) and the published ones, one key per port of a range."""
    ports: dict[str, Any] = {key: None for key in image_config.get("ExposedPorts") or {}}
    for m in mappings:
        for i in range(m.get("range", 1)):
            key = f"{m['container_port'] + i}/{m['protocol']}"
            host = m["host_port"] + i if m["host_port"] else 0
            binding = {"HostIp": m.get("host_ip", ""), "HostPort": str(host) if host else ""}
            ports[key] = (ports.get(key) or []) + [binding]
    return dict(sorted(ports.items()))


def _restart_policy(text: str | None) -> dict[str, Any]:
    name, _, count = (text or "no").partition(":")
    return {
        "Name": "" if name == "no" else name,
        "MaximumRetryCount": int(count) if count.isdigit() else 0,
    }


def _seconds_to_ns(value: Any) -> int:
    try:
        return int(float(value) * NANOSECONDS)
    except (TypeError, ValueError):
        return 0


def healthcheck_config(health: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """podman's Config.Healthcheck from record.config["healthcheck"] (HealthConfig's JSON):
    durations in ns, zero fields left out as podman does."""
    if not health:
        return None
    if "Test" in health:
        return dict(health)
    from rootless.monitor.health import HealthConfig

    return HealthConfig.from_json(dict(health)).inspect()


def _on_failure(health: Mapping[str, Any] | None) -> str:
    if not health:
        return "none"
    return str(
        health.get("HealthcheckOnFailureAction")
        or health.get("on_failure")
        or health.get("OnFailure")
        or "none"
    )


def _cap(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") or upper == "ALL" else "CAP_" + upper


def _log_config(record: Container, facts: InspectFacts) -> dict[str, Any]:
    opts = dict(record.config.get("log_opts") or {})
    path = opts.pop("path", "") or facts.log_path
    size = opts.pop("max-size", "") or "0B"
    driver = record.config.get("log_driver") or "k8s-file"
    return {
        "Type": driver,
        "Config": opts or None,
        "Path": path if driver == "k8s-file" else "",
        "Tag": "",
        "Size": size,
    }


def _mount_source(spec: Mapping[str, Any], destination: str) -> str:
    for mount in spec.get("mounts") or []:
        if mount.get("destination") == destination:
            return str(mount.get("source", ""))
    return ""


def _ulimits(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    process = spec.get("process") or {}
    return [
        {"Name": r.get("type", ""), "Soft": r.get("soft", 0), "Hard": r.get("hard", 0)}
        for r in process.get("rlimits") or []
    ]


def inspect_container(
    record: Container, spec: Mapping[str, Any], facts: InspectFacts | None = None
) -> dict[str, Any]:
    """`rl container inspect` of one container: podman 4.3's JSON shape."""
    facts = facts or InspectFacts()
    config = record.config
    process = spec.get("process") or {}
    capabilities = process.get("capabilities") or {}
    image_config: Mapping[str, Any] = facts.image_config.get("config") or {}
    entrypoint, cmd = _entrypoint_and_cmd(record, image_config)
    mounts, binds, tmpfs = _user_mounts(spec, facts)
    ports = _ports(listing.port_mappings(config), image_config)
    annotations = dict(spec.get("annotations") or {})
    stop_signal = signal_number(
        config.get("stop_signal")
        or image_config.get("StopSignal")
        or annotations.get("org.opencontainers.image.stopSignal")
    )
    labels = {**(image_config.get("Labels") or {}), **record.labels}
    health = config.get("healthcheck")
    userns = config.get("userns") or {}
    umask = (process.get("user") or {}).get("umask")
    result: dict[str, Any] = {
        "Id": record.id,
        "Created": rfc3339_nano(record.created),
        "Path": record.command[0] if record.command else "",
        "Args": list(record.command[1:]),
        "State": _state(record, spec),
        "Image": record.image_id,
        "ImageDigest": facts.image_digest,
        "ImageName": record.image_name,
        "Rootfs": record.image_name if config.get("rootfs") else "",
        "Pod": "",
        "ResolvConfPath": _mount_source(spec, "/etc/resolv.conf"),
        "HostnamePath": _mount_source(spec, "/etc/hostname"),
        "HostsPath": _mount_source(spec, "/etc/hosts"),
        "StaticDir": facts.userdata,
        "OCIConfigPath": f"{facts.userdata}/config.json" if facts.userdata else "",
        "OCIRuntime": "rl",
        "ConmonPidFile": "",
        "PidFile": "",
        "Name": record.name,
        "RestartCount": record.restart_count,
        "Driver": facts.driver,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "EffectiveCaps": list(capabilities.get("effective") or []),
        "BoundingCaps": list(capabilities.get("bounding") or []),
        "ExecIDs": [],
        "GraphDriver": {"Name": facts.driver, "Data": None},
        "Mounts": mounts,
        "Dependencies": [],
        "NetworkSettings": {
            "EndpointID": "",
            "Gateway": "",
            "IPAddress": "",
            "IPPrefixLen": 0,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "MacAddress": "",
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports,
            "SandboxKey": "",
            **ipv6_settings(config),
        },
        "Namespace": "",
        "IsInfra": False,
        "IsService": False,
    }
    if facts.size is not None:
        result["SizeRw"] = facts.size[0]
        result["SizeRootFs"] = facts.size[1]
    container_config: dict[str, Any] = {
        "Hostname": spec.get("hostname", ""),
        "Domainname": "",
        "User": config.get("user") or "",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": bool(config.get("tty")),
        "OpenStdin": bool(config.get("interactive")),
        "StdinOnce": False,
        "Env": list(process.get("env") or []),
        "Cmd": cmd,
        "Image": record.image_name,
        "Volumes": None,
        "WorkingDir": process.get("cwd", "/"),
        "Entrypoint": " ".join(entrypoint),
        "OnBuild": None,
        "Labels": dict(sorted(labels.items())) or None,
        "Annotations": annotations,
        "StopSignal": stop_signal,
    }
    healthcheck = healthcheck_config(health)
    if healthcheck is not None:
        container_config["Healthcheck"] = healthcheck
    container_config["HealthcheckOnFailureAction"] = _on_failure(health)
    if config.get("create_command"):
        container_config["CreateCommand"] = list(config["create_command"])
    container_config.update(
        {
            "Umask": f"{umask:04o}" if isinstance(umask, int) else "0022",
            "Timeout": 0,
            "StopTimeout": int(config.get("stop_timeout", DEFAULT_STOP_TIMEOUT)),
            "Passwd": True,
            "sdNotifyMode": "container",
        }
    )
    result["Config"] = container_config
    result["HostConfig"] = {
        "Binds": binds,
        "CgroupManager": "cgroupfs",
        "CgroupMode": "host",
        "ContainerIDFile": "",
        "LogConfig": _log_config(record, facts),
        "NetworkMode": config.get("network") or "none",
        "PortBindings": ports,
        "RestartPolicy": _restart_policy(config.get("restart")),
        "AutoRemove": record.autoremove,
        "VolumeDriver": "",
        "VolumesFrom": None,
        "CapAdd": [_cap(c) for c in config.get("cap_add") or []],
        "CapDrop": [_cap(c) for c in config.get("cap_drop") or []],
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": [],
        "GroupAdd": list(config.get("group_add") or []),
        "IpcMode": "private",
        "Cgroup": "",
        "Cgroups": "default",
        "Links": None,
        "OomScoreAdj": 0,
        "PidMode": "private",
        "Privileged": bool(config.get("privileged")),
        "PublishAllPorts": False,
        "ReadonlyRootfs": bool(config.get("read_only")),
        "SecurityOpt": list(config.get("security_opt") or []),
        "Tmpfs": tmpfs,
        "UTSMode": "private",
        "UsernsMode": userns.get("mode", "") if isinstance(userns, Mapping) else "",
        "ShmSize": int(config.get("shm_size") or 0),
        "Runtime": "oci",
        "ConsoleSize": [0, 0],
        "Isolation": "",
        "CpuShares": 0,
        "Memory": 0,
        "NanoCpus": 0,
        "CgroupParent": "",
        "BlkioWeight": 0,
        "BlkioWeightDevice": None,
        "BlkioDeviceReadBps": None,
        "BlkioDeviceWriteBps": None,
        "BlkioDeviceReadIOps": None,
        "BlkioDeviceWriteIOps": None,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": "",
        "CpusetMems": "",
        "Devices": [],
        "DiskQuota": 0,
        "KernelMemory": 0,
        "MemoryReservation": 0,
        "MemorySwap": 0,
        "MemorySwappiness": 0,
        "OomKillDisable": False,
        "PidsLimit": 0,
        "Ulimits": _ulimits(spec),
        "CpuCount": 0,
        "CpuPercent": 0,
        "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
        "CgroupConf": None,
    }
    return result
