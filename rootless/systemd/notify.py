"""sd_notify without libsystemd: the message format, a sender, and --sdnotify's policy.

systemd's notification protocol is one AF_UNIX datagram of newline-separated KEY=VALUE
assignments sent to the path (or, with a leading "@", the abstract name) in $NOTIFY_SOCKET;
systemd learns the sender's pid from the socket's credentials, so nothing else is needed.

--sdnotify (podman's modes), used when rl runs under a Type=notify unit:
- conmon: the monitor (rl's conmon) sends MAINPID=<its own pid> and READY=1 once the
  container runs. systemd then follows the monitor, whose life is the container's (restarts
  included), and a SIGTERM to it stops the container properly.
- container: the socket is bind-mounted into the container (NOTIFY_SOCKET=/run/notify/notify.sock
  there); the monitor sends MAINPID only and the container's process says READY=1 itself.
- ignore: NOTIFY_SOCKET is dropped; neither rl nor the container sends anything.

The monitor calls `container_spec` on the spec it is about to run and `container_started`
after the container runs (before it tells the CLI "R<pid>"): the latter also writes the
monitor's pid file, which the Type=forking units of `rl generate systemd` name in PIDFile=.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

SDNOTIFY_MODES = ("container", "conmon", "ignore")
DEFAULT_SDNOTIFY = "container"
# Where the container sees the socket in "container" mode (crun uses the same place).
CONTAINER_SOCKET = "/run/notify/notify.sock"
PIDFILE_NAME = "monitor.pid"


def parse_sdnotify(text: str) -> str:
    from rootless.errors import RlError

    if text in SDNOTIFY_MODES:
        return text
    raise RlError(f'invalid --sdnotify value "{text}": use container, conmon or ignore')


def build_message(*fields: tuple[str, str | int], **named: str | int) -> bytes:
    """The datagram for some assignments: build_message(READY=1, MAINPID=42)."""
    lines = []
    for key, value in (*fields, *named.items()):
        text = str(value)
        if not key or "=" in key or "\n" in key or "\n" in text:
            raise ValueError(f"invalid sd_notify field {key!r}={text!r}")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode()


def parse_message(data: bytes) -> dict[str, str]:
    """The assignments of a datagram (for tests and debugging; the last one of a key wins)."""
    fields = {}
    for line in data.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


def socket_address(value: str | None) -> str | bytes | None:
    """$NOTIFY_SOCKET as a socket address: a path, or an abstract name (leading "@")."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # systemd only ever gives absolute paths or abstract names


def send(message: bytes, address: str | bytes | None) -> bool:
    """Send one notification; False when there is no socket or it cannot be reached."""
    if address is None:
        return False
    import socket  # here: every `rl run` imports this module, few send anything

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message, address)
        except OSError:
            return False
    return True


def notify(environ: Mapping[str, str] | None = None, **fields: str | int) -> bool:
    """sd_notify(3): send `fields` to $NOTIFY_SOCKET (of `environ`, default os.environ)."""
    env = os.environ if environ is None else environ
    return send(build_message(**fields), socket_address(env.get("NOTIFY_SOCKET")))


def mode_of(config: Mapping[str, Any]) -> str:
    mode = config.get("sdnotify") or DEFAULT_SDNOTIFY
    return mode if mode in SDNOTIFY_MODES else DEFAULT_SDNOTIFY


def started_messages(mode: str, monitor_pid: int, has_socket: bool) -> bytes | None:
    """What the monitor sends once the container runs, or None (pure)."""
    if not has_socket or mode == "ignore":
        return None
    if mode == "conmon":
        return build_message(MAINPID=monitor_pid, READY=1)
    return build_message(MAINPID=monitor_pid)  # the container sends READY=1 itself


def spec_with_socket(
    spec: MutableMapping[str, Any], config: Mapping[str, Any], notify_socket: str | None
) -> MutableMapping[str, Any]:
    """--sdnotify=container: the host's socket bind-mounted at CONTAINER_SOCKET and
    NOTIFY_SOCKET set in the container's environment (pure: returns `spec`, changed)."""
    if mode_of(config) != "container" or not notify_socket or not notify_socket.startswith("/"):
        return spec  # an abstract socket is bound to the host's netns: cannot be passed
    mounts = [m for m in spec.get("mounts", []) if m.get("destination") != CONTAINER_SOCKET]
    mounts.append(
        {
            "destination": CONTAINER_SOCKET,
            "type": "bind",
            "source": notify_socket,
            "options": ["bind", "rprivate"],
        }
    )
    spec["mounts"] = mounts
    process = spec.setdefault("process", {})
    env = [e for e in process.get("env", []) if not e.startswith("NOTIFY_SOCKET=")]
    env.append(f"NOTIFY_SOCKET={CONTAINER_SOCKET}")
    process["env"] = env
    return spec


def pidfile_path(container_id: str) -> Path:
    """The monitor's pid file (PIDFile= of a generated Type=forking unit)."""
    from rootless.paths import runtime_dir

    return runtime_dir() / "containers" / container_id / PIDFILE_NAME


# --- the monitor's two calls ---------------------------------------------------------------


def container_spec(
    spec: MutableMapping[str, Any],
    config: Mapping[str, Any],
    environ: MutableMapping[str, str] | None = None,
) -> MutableMapping[str, Any]:
    """Monitor, before starting the container: apply --sdnotify to the spec; with "ignore"
    drop NOTIFY_SOCKET from the monitor's own environment (and so its children's)."""
    env = os.environ if environ is None else environ
    if mode_of(config) == "ignore":
        env.pop("NOTIFY_SOCKET", None)
        return spec
    return spec_with_socket(spec, config, env.get("NOTIFY_SOCKET"))


def container_started(
    container_id: str,
    config: Mapping[str, Any],
    monitor_pid: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Monitor, once the container runs (before its "R" report to the CLI): write the pid
    file, then tell systemd (MAINPID, READY per --sdnotify). Never raises: a unit that is
    not watching must not stop the container."""
    pid = os.getpid() if monitor_pid is None else monitor_pid
    env = os.environ if environ is None else environ
    path = pidfile_path(container_id)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{PIDFILE_NAME}.{pid}")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, path)
    except OSError:
        pass
    address = socket_address(env.get("NOTIFY_SOCKET"))
    message = started_messages(mode_of(config), pid, address is not None)
    if message is not None:
        send(message, address)
