"""The container's environment, merged the way podman 4.3 does it. Pure.

Precedence, lowest first: rl's defaults (PATH, TERM=xterm, container=podman), the host's
environment with --env-host, the image's Env, --env-file files in order, -e flags in order.
HOME (from the resolved user) and HOSTNAME are added last unless already set.

`container=podman`: podman sets it on every container and tools key on it (systemd's
virtualization detection recognises "podman", scripts test `[ "$container" = podman ]`).
rl keeps podman's value so those behave the same under rl; /run/.containerenv is how a
container tells which engine started it.

TERM=xterm is set with and without -t, as podman 4.3 does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rootless.errors import RlError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINER_VALUE = "podman"
DEFAULT_ENV = {"PATH": DEFAULT_PATH, "TERM": "xterm", "container": CONTAINER_VALUE}


def expand_env_flag(flag: str, host_env: Mapping[str, str]) -> dict[str, str]:
    """One `-e` value: K=V; K (the host's value, dropped when unset); PREFIX* (every host
    variable whose name starts with PREFIX)."""
    key, sep, value = flag.partition("=")
    if not key:
        raise RlError(f"invalid environment variable {flag!r}: use NAME=VALUE or NAME")
    if sep:
        return {key: value}
    if key.endswith("*"):
        prefix = key[:-1]
        return {k: v for k, v in host_env.items() if k.startswith(prefix)}
    return {key: host_env[key]} if key in host_env else {}


def parse_env_file(
    text: str, host_env: Mapping[str, str], source: str = "env file"
) -> dict[str, str]:
    """An --env-file: one K=V (value taken verbatim, quotes included) or K per line; blank
    lines and # comments skipped; leading whitespace ignored."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.partition("=")[0]
        if not key or any(c.isspace() for c in key):
            raise RlError(f"{source} line {number}: invalid variable name {key!r}")
        result.update(expand_env_flag(line, host_env))
    return result


def env_list_to_dict(env: Iterable[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        if key:
            result[key] = value
    return result


def merge_env(
    image_env: Iterable[str],
    *,
    env_flags: Iterable[str] = (),
    env_files: Iterable[dict[str, str]] = (),
    env_host: bool = False,
    host_env: Mapping[str, str] | None = None,
    home: str = "/",
    hostname: str = "",
) -> list[str]:
    """The process.env list for the spec."""
    host = dict(host_env or {})
    merged: dict[str, str] = dict(DEFAULT_ENV)
    if env_host:
        merged.update(host)
    merged.update(env_list_to_dict(image_env))
    for file_env in env_files:
        merged.update(file_env)
    for flag in env_flags:
        merged.update(expand_env_flag(flag, host))
    merged.setdefault("HOME", home)
    if hostname:
        merged.setdefault("HOSTNAME", hostname)
    return [f"{k}={v}" for k, v in merged.items()]
