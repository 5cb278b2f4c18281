"""`--change` instructions (Dockerfile syntax) applied to an image config. Pure functions.

Accepted: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, written
`INSTR value` or, as podman also allows, `INSTR=value`. CMD/ENTRYPOINT/VOLUME take the JSON
(exec) form or the shell form; ENV and LABEL take `k=v …` pairs (quotes allowed) or the legacy
`ENV key value`.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import shlex
from collections.abc import Iterable
from typing import Any

from rootless.errors import RlError

INSTRUCTIONS = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)

_HEAD = re.compile(r"^\s*([A-Za-z]+)(?:\s+|=)(.*)$", re.S)


def apply_changes(image_config: dict[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """A copy of the OCI image config `image_config` with each change applied to its `config`."""
    result = copy.deepcopy(image_config)
    config: dict[str, Any] = result.setdefault("config", {})
    for change in changes:
        instruction, value = parse_change(change)
        _APPLY[instruction](config, value, change)
    return result


def parse_change(change: str) -> tuple[str, str]:
    """("CMD", '["sh"]') from 'CMD ["sh"]' or 'CMD=["sh"]'; RlError when malformed."""
    match = _HEAD.match(change)
    if not match or not match.group(2).strip():
        raise _bad(change, "must be formatted as KEY VALUE")
    instruction = match.group(1).upper()
    if instruction not in INSTRUCTIONS:
        raise _bad(change, f"invalid instruction {instruction}")
    return instruction, match.group(2).strip()


def _bad(change: str, why: str) -> RlError:
    return RlError(f"invalid change {json.dumps(change)} - {why}")


def _json_or_shell(value: str) -> list[str]:
    """The exec form when `value` is a JSON array of strings, else Docker's shell form."""
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _words(value: str, change: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise _bad(change, str(exc)) from exc


def _pairs(value: str, change: str) -> list[tuple[str, str]]:
    """`a=1 b="two words"` or the legacy `key value with spaces`."""
    words = _words(value, change)
    if "=" not in words[0]:
        key, _, rest = value.partition(" ")
        if not rest.strip():
            raise _bad(change, "must be formatted as KEY VALUE or KEY=VALUE")
        return [(key, " ".join(_words(rest, change)))]
    pairs = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key:
            raise _bad(change, f"{word!r} is not KEY=VALUE")
        pairs.append((key, val))
    return pairs


def _cmd(config: dict[str, Any], value: str, change: str) -> None:
    config["Cmd"] = _json_or_shell(value)


def _entrypoint(config: dict[str, Any], value: str, change: str) -> None:
    config["Entrypoint"] = _json_or_shell(value)


def _env(config: dict[str, Any], value: str, change: str) -> None:
    env: list[str] = list(config.get("Env") or [])
    for key, val in _pairs(value, change):
        env = [e for e in env if e.split("=", 1)[0] != key]
        env.append(f"{key}={val}")
    config["Env"] = env


def _label(config: dict[str, Any], value: str, change: str) -> None:
    labels: dict[str, str] = dict(config.get("Labels") or {})
    labels.update(_pairs(value, change))
    config["Labels"] = labels


def _expose(config: dict[str, Any], value: str, change: str) -> None:
    ports: dict[str, Any] = dict(config.get("ExposedPorts") or {})
    for word in _words(value, change):
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        low, _, high = port.partition("-")
        if not (low.isdigit() and (not high or high.isdigit())) or proto not in (
            "tcp",
            "udp",
            "sctp",
        ):
            raise _bad(change, f"invalid port {word!r}: expected PORT[/PROTO]")
        ports[f"{port}/{proto}"] = {}
    config["ExposedPorts"] = ports


def _volume(config: dict[str, Any], value: str, change: str) -> None:
    volumes: dict[str, Any] = dict(config.get("Volumes") or {})
    paths = _json_or_shell(value)
    if paths[:2] == ["/bin/sh", "-c"]:
        paths = _words(value, change)
    for path in paths:
        volumes[path] = {}
    config["Volumes"] = volumes


def _workdir(config: dict[str, Any], value: str, change: str) -> None:
    # A relative WORKDIR continues from the previous one, as in a Dockerfile.
    config["WorkingDir"] = posixpath.join(config.get("WorkingDir") or "/", value)


def _user(config: dict[str, Any], value: str, change: str) -> None:
    config["User"] = value


def _stopsignal(config: dict[str, Any], value: str, change: str) -> None:
    config["StopSignal"] = value


_APPLY = {
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "ENV": _env,
    "EXPOSE": _expose,
    "LABEL": _label,
    "STOPSIGNAL": _stopsignal,
    "USER": _user,
    "VOLUME": _volume,
    "WORKDIR": _workdir,
}
