"""rootless.containers.inspect: podman 4.3's container inspect JSON from a record and its spec.
The expected shape (keys, their order, values of the bind/volume entries) is podman's, from
`podman inspect` of a container run with the same flags on this machine."""

from __future__ import annotations

from typing import Any

from rootless.containers.inspect import (
    GO_ZERO_TIME,
    InspectFacts,
    healthcheck_config,
    inspect_container,
    rfc3339_nano,
    signal_number,
)
from rootless.containers.store import Container

CID = "9d1c587ff0ad77596e26024b7e498e0fb95ccb814ef0929a8a065d1c9d837e61"
STORE = "/home/u/.local/share/rl"
USERDATA = f"{STORE}/containers/{CID}/userdata"

PODMAN_TOP_KEYS = [
    "Id", "Created", "Path", "Args", "State", "Image", "ImageDigest", "ImageName", "Rootfs",
    "Pod", "ResolvConfPath", "HostnamePath", "HostsPath", "StaticDir", "OCIConfigPath",
    "OCIRuntime", "ConmonPidFile", "PidFile", "Name", "RestartCount", "Driver", "MountLabel",
    "ProcessLabel", "AppArmorProfile", "EffectiveCaps", "BoundingCaps", "ExecIDs",
    "GraphDriver", "Mounts", "Dependencies", "NetworkSettings", "Namespace", "IsInfra",
    "IsService", "Config", "HostConfig",
]  # fmt: skip
PODMAN_STATE_KEYS = [
    "OciVersion", "Status", "Running", "Paused", "Restarting", "OOMKilled", "Dead", "Pid",
    "ExitCode", "Error", "StartedAt", "FinishedAt", "Health", "CheckpointedAt", "RestoredAt",
]  # fmt: skip


def spec() -> dict[str, Any]:
    def bind(dest: str, source: str, options: list[str]) -> dict[str, Any]:
        return {"destination": dest, "type": "bind", "source": source, "options": options}

    return {
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0, "umask": 18},
            "args": ["sh", "-c", "exit 3"],
            "env": ["PATH=/bin", "X=1"],
            "cwd": "/tmp",
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN", "CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 10000}],
        },
        "hostname": "9d1c587ff0ad",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": []},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": []},
            bind("/etc/hosts", f"{USERDATA}/hosts", ["bind", "rprivate"]),
            bind("/etc/hostname", f"{USERDATA}/hostname", ["bind", "rprivate"]),
            bind("/mnt", "/tmp/bind", ["ro", "rprivate", "rbind"]),
            bind(
                "/data",
                f"{STORE}/volumes/vol1/_data",
                ["rw", "rprivate", "nosuid", "nodev", "rbind"],
            ),
            bind(
                "/anon",
                f"{STORE}/volumes/{'ab' * 32}/_data",
                ["rw", "rprivate", "nosuid", "nodev", "rbind"],
            ),
            {
                "destination": "/t",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"],
            },
        ],
        "annotations": {"io.container.manager": "rl"},
    }


IMAGE_CONFIG = {
    "config": {
        "Cmd": ["sh"],
        "Labels": {"maintainer": "rl tests"},
        "ExposedPorts": {"8080/tcp": {}},
    }
}


def record(**kw: Any) -> Container:
    fields: dict[str, Any] = {
        "id": CID,
        "name": "r1",
        "image_id": "5d" * 32,
        "image_name": "localhost/rl-test/busybox:latest",
        "command": ["sh", "-c", "exit 3"],
        "created": 1796225591.25,
        "state": "exited",
        "exit_code": 3,
        "started": 1796225592.0,
        "finished": 1796225592.5,
        "labels": {"foo": "bar"},
        "config": {
            "restart": "on-failure:2",
            "stop_signal": "SIGINT",
            "stop_timeout": 7,
            "cap_add": ["net_admin"],
            "log_opts": {"max-size": "1m"},
            "shm_size": 65536000,
            "network": "none",
            "publish": ["18080:80"],
        },
    }
    fields.update(kw)
    return Container(**fields)


FACTS = InspectFacts(
    userdata=USERDATA,
    volumes_dir=f"{STORE}/volumes",
    log_path=f"{USERDATA}/ctr.log",
    image_config=IMAGE_CONFIG,
    image_digest="sha256:70fd",
)


def test_top_level_and_state_keys_in_podmans_order() -> None:
    result = inspect_container(record(), spec(), FACTS)
    assert list(result) == PODMAN_TOP_KEYS
    assert list(result["State"]) == PODMAN_STATE_KEYS


def test_identity_and_times() -> None:
    result = inspect_container(record(), spec(), FACTS)
    assert result["Id"] == CID and result["Name"] == "r1"
    assert result["Created"] == "2026-12-02T15:33:11.25Z"
    assert result["Path"] == "sh" and result["Args"] == ["-c", "exit 3"]
    assert result["ImageName"] == "localhost/rl-test/busybox:latest"
    assert result["ImageDigest"] == "sha256:70fd"
    assert result["HostsPath"] == f"{USERDATA}/hosts"
    assert result["ResolvConfPath"] == ""
    assert result["OCIConfigPath"] == f"{USERDATA}/config.json"
    assert result["EffectiveCaps"] == ["CAP_CHOWN", "CAP_KILL"]


def test_state_of_an_exited_container() -> None:
    state = inspect_container(record(), spec(), FACTS)["State"]
    assert state["Status"] == "exited" and not state["Running"]
    assert state["ExitCode"] == 3 and state["Pid"] == 0
    assert state["StartedAt"] == "2026-12-02T15:33:12Z"
    assert state["FinishedAt"] == "2026-12-02T15:33:12.5Z"
    assert state["Health"] == {"Status": "", "FailingStreak": 0, "Log": None}
    assert "ConmonPid" not in state


def test_state_of_running_created_and_unknown_exit() -> None:
    live = inspect_container(
        record(state="running", container_pid=99, runner_pid=98, exit_code=None, finished=None),
        spec(),
        FACTS,
    )["State"]
    assert live["Running"] and live["Pid"] == 99 and live["ConmonPid"] == 98
    assert live["FinishedAt"] == GO_ZERO_TIME
    created = inspect_container(
        record(state="created", exit_code=None, started=None, finished=None), spec(), FACTS
    )["State"]
    assert created["ExitCode"] == 0 and created["StartedAt"] == GO_ZERO_TIME
    lost = inspect_container(record(exit_code=None, error="exit code unknown: …"), spec(), FACTS)[
        "State"
    ]
    assert lost["ExitCode"] == -1 and lost["Error"] == "exit code unknown: …"
    health = {"Status": "healthy", "FailingStreak": 0, "Log": [{"ExitCode": 0}]}
    assert inspect_container(record(health=health), spec(), FACTS)["State"]["Health"] == health


def test_mounts_binds_and_tmpfs_as_podman() -> None:
    result = inspect_container(record(), spec(), FACTS)
    assert [(m["Type"], m["Destination"]) for m in result["Mounts"]] == [
        ("volume", "/anon"),
        ("volume", "/data"),
        ("bind", "/mnt"),
    ]
    volume = result["Mounts"][1]
    assert volume == {
        "Type": "volume",
        "Name": "vol1",
        "Source": f"{STORE}/volumes/vol1/_data",
        "Destination": "/data",
        "Driver": "local",
        "Mode": "",
        "Options": ["nosuid", "nodev", "rbind"],
        "RW": True,
        "Propagation": "rprivate",
    }
    assert result["Mounts"][2] == {
        "Type": "bind",
        "Source": "/tmp/bind",
        "Destination": "/mnt",
        "Driver": "",
        "Mode": "",
        "Options": ["rbind"],
        "RW": False,
        "Propagation": "rprivate",
    }
    host = result["HostConfig"]
    assert host["Binds"] == [
        f"{'ab' * 32}:/anon:rw,rprivate,nosuid,nodev,rbind",
        "vol1:/data:rw,rprivate,nosuid,nodev,rbind",
        "/tmp/bind:/mnt:ro,rprivate,rbind",
    ]
    assert host["Tmpfs"] == {"/t": "rw,rprivate,nosuid,nodev,tmpcopyup"}


def test_config_section() -> None:
    config = inspect_container(record(), spec(), FACTS)["Config"]
    assert config["Hostname"] == "9d1c587ff0ad"
    assert config["Env"] == ["PATH=/bin", "X=1"]
    assert config["Cmd"] == ["sh", "-c", "exit 3"] and config["Entrypoint"] == ""
    assert config["WorkingDir"] == "/tmp"
    assert config["Labels"] == {"foo": "bar", "maintainer": "rl tests"}
    assert config["StopSignal"] == 2 and config["StopTimeout"] == 7
    assert config["Umask"] == "0022"
    assert "Healthcheck" not in config and config["HealthcheckOnFailureAction"] == "none"
    assert "CreateCommand" not in config


def test_entrypoint_is_split_from_cmd() -> None:
    image = {"config": {"Entrypoint": ["/init", "-v"], "Cmd": ["serve"]}}
    facts = InspectFacts(image_config=image)
    config = inspect_container(record(command=["/init", "-v", "serve"]), spec(), facts)["Config"]
    assert config["Entrypoint"] == "/init -v" and config["Cmd"] == ["serve"]
    cleared = record(command=["true"], config={"entrypoint": []})
    assert inspect_container(cleared, spec(), facts)["Config"]["Entrypoint"] == ""


def test_host_config_section() -> None:
    host = inspect_container(record(), spec(), FACTS)["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert host["LogConfig"] == {
        "Type": "k8s-file",
        "Config": None,
        "Path": f"{USERDATA}/ctr.log",
        "Tag": "",
        "Size": "1m",
    }
    assert host["CapAdd"] == ["CAP_NET_ADMIN"] and host["NetworkMode"] == "none"
    assert host["ShmSize"] == 65536000
    assert host["Ulimits"] == [{"Name": "RLIMIT_NOFILE", "Soft": 10000, "Hard": 20000}]
    assert host["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "18080"}],
        "8080/tcp": None,
    }
    plain = inspect_container(record(config={}), spec(), FACTS)["HostConfig"]
    assert plain["RestartPolicy"] == {"Name": "", "MaximumRetryCount": 0}
    assert plain["LogConfig"]["Size"] == "0B"


def test_network_settings_ports_and_size() -> None:
    result = inspect_container(record(), spec(), FACTS)
    assert result["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "", "HostPort": "18080"}]
    assert "SizeRw" not in result
    sized = inspect_container(
        record(),
        spec(),
        InspectFacts(userdata=USERDATA, size=(12, 2000)),
    )
    assert (sized["SizeRw"], sized["SizeRootFs"]) == (12, 2000)


def test_healthcheck_config_both_shapes() -> None:
    podman_shape = {"Test": ["CMD-SHELL", "true"], "Interval": 30_000_000_000}
    assert healthcheck_config(podman_shape) == podman_shape
    # HealthConfig's JSON (what rl stores); zero durations are left out, as podman does.
    assert healthcheck_config(
        {"test": ["CMD-SHELL", "curl -f x"], "interval": 30, "timeout": 5, "retries": 3,
         "start_period": 0}
    ) == {
        "Test": ["CMD-SHELL", "curl -f x"],
        "Interval": 30_000_000_000,
        "Timeout": 5_000_000_000,
        "Retries": 3,
    }  # fmt: skip
    assert healthcheck_config(None) is None
    with_check = record(config={"healthcheck": podman_shape})
    assert inspect_container(with_check, spec(), FACTS)["Config"]["Healthcheck"] == podman_shape


def test_small_helpers() -> None:
    assert rfc3339_nano(None) == GO_ZERO_TIME
    assert rfc3339_nano(0.0) == GO_ZERO_TIME
    assert rfc3339_nano(1.000001) == "1970-01-01T00:00:01.000001Z"
    assert signal_number("SIGINT") == 2
    assert signal_number("kill") == 9
    assert signal_number("15") == 15
    assert signal_number(None) == 15
    assert signal_number("NOPE") == 15
