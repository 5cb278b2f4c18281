"""Credentials in podman's `auth.json` (and docker's `config.json`), as containers/image
reads and writes them:

    {"auths": {"quay.io": {"auth": "<base64 user:password>"},
               "quay.io/team": {"auth": "…"}, "docker.io": {"identitytoken": "…"}}}

Files are searched in order: `--authfile`/`REGISTRY_AUTH_FILE` alone when given, else
`$XDG_RUNTIME_DIR/containers/auth.json` (where `rl login` writes; without the variable, as
rootless podman: `/run/user/UID/` when it is the user's, else `/run/containers/UID/`),
`$XDG_CONFIG_HOME/containers/auth.json`, `$DOCKER_CONFIG/config.json` or
`~/.docker/config.json`, and the legacy `~/.dockercfg` (the map without the "auths" wrapper).
Within a file the most specific key wins (`quay.io/team/app`, `quay.io/team`, `quay.io`); keys
docker wrote as URLs (`https://index.docker.io/v1/`) match by host.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from rootless.errors import RlError
from rootless.paths import home, session_runtime_dir
from rootless.registry.auth import Credentials
from rootless.registry.reference import parse_normalized


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class AuthPath(NamedTuple):
    path: Path
    legacy_format: bool = False  # ~/.dockercfg: no "auths" wrapper, keys are registry URLs
    # /run/containers/UID: root makes that tree 0700 where nobody logs in through it; no
    # credentials of this user can be there then, so reading it is not an error
    unreadable_is_empty: bool = False


def auth_file_paths(
    env: Mapping[str, str],
    home: Path,
    uid: int,
    authfile: str | None = None,
    *,
    session_dir: Path | None = None,
) -> list[AuthPath]:
    """Where to look, in order; the first one is where `rl login` writes. `session_dir`: the
    user's own `/run/user/UID` when it exists (what rootless podman uses for $XDG_RUNTIME_DIR
    when the variable is unset, e.g. after `su`)."""
    explicit = authfile or env.get("REGISTRY_AUTH_FILE")
    if explicit:
        return [AuthPath(Path(explicit))]
    runtime = env.get("XDG_RUNTIME_DIR") or session_dir
    first = (
        AuthPath(Path(runtime) / "containers" / "auth.json")
        if runtime
        else AuthPath(Path(f"/run/containers/{uid}/auth.json"), unreadable_is_empty=True)
    )
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    docker_config = env.get("DOCKER_CONFIG")
    docker = Path(docker_config) / "config.json" if docker_config else home / ".docker/config.json"
    return [
        first,
        AuthPath(config_home / "containers" / "auth.json"),
        AuthPath(docker),
        AuthPath(home / ".dockercfg", legacy_format=True),
    ]


def normalize_login_key(argument: str) -> str:
    """What `rl login/logout ARG` stores under: a URL becomes host[:port]; a repository key
    (`quay.io/team`) stays as written (not `library/`-expanded) but must be a plain name."""
    key = argument
    if key.startswith(("http://", "https://")):
        key = urlsplit(key).netloc
        if not key:
            raise RlError(f"invalid registry {argument!r}: no host in the URL")
        return key
    registry, sep, _ = key.partition("/")
    if not registry:
        raise RlError(f"invalid registry {argument!r}: empty host")
    if not sep:
        return key
    ref = parse_normalized(key)
    if ref.tag is not None or ref.digest is not None:
        raise RlError(f'reference "{ref}" contains tag or digest')
    return key


def _registry_alias(registry: str) -> str:
    # Docker Hub answers to several names; containers/image compares them as one.
    return "index.docker.io" if registry in ("docker.io", "registry-1.docker.io") else registry


def _normalize_file_key(key: str, legacy_format: bool) -> str:
    stripped = key.removeprefix("http://").removeprefix("https://")
    if legacy_format or stripped != key:
        stripped = stripped.partition("/")[0]
    return _registry_alias(stripped)


def _candidate_keys(key: str) -> list[str]:
    """`quay.io/a/b` -> ["quay.io/a/b", "quay.io/a", "quay.io"]: the most specific first."""
    parts = key.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _entries(text: str, where: str, legacy_format: bool) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RlError(f"{where}: invalid JSON ({exc}); fix or remove the file") from None
    if not isinstance(doc, dict):
        raise RlError(f"{where}: not a JSON object; fix or remove the file")
    auths = doc if legacy_format else doc.get("auths", {})
    if not isinstance(auths, dict):
        raise RlError(f'{where}: "auths" is not a JSON object; fix or remove the file')
    return auths


def _decode(entry: Any) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    identity = entry.get("identitytoken") or ""
    identity = identity if isinstance(identity, str) else ""
    encoded = entry.get("auth") or ""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode() if encoded else ""
    except (binascii.Error, UnicodeDecodeError, TypeError):
        decoded = ""
    user, sep, password = decoded.partition(":")
    if not sep:
        # docker writes empty entries when a credential helper holds the secret
        return Credentials("", "", identity) if identity else None
    return Credentials(user, password.strip("\x00"), identity)


def find_credentials(
    text: str, key: str, *, legacy_format: bool = False, where: str = "auth file"
) -> Credentials | None:
    """Credentials in one file's text for `key` (`registry[/namespace…]`, e.g. a ref's name)."""
    auths = _entries(text, where, legacy_format)
    registry = key.partition("/")[0]
    keys = [registry] if legacy_format else _candidate_keys(key)
    for candidate in keys:
        if candidate in auths:
            return _decode(auths[candidate])
    wanted = _registry_alias(registry)
    for file_key, entry in auths.items():
        if _normalize_file_key(file_key, legacy_format) == wanted:
            return _decode(entry)
    return None


def credential_helper(text: str, registry: str) -> str | None:
    """The docker credential helper configured for `registry` (`credHelpers`/`credsStore`)."""
    try:
        doc = json.loads(text) if text.strip() else {}
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict) and isinstance(helpers.get(registry), str):
        return str(helpers[registry])
    store = doc.get("credsStore")
    return store if isinstance(store, str) and store else None


def add_credentials(text: str | None, key: str, username: str, password: str) -> str:
    """The file's new text with `key`'s credentials set; other content is kept."""
    doc = _document(text)
    auths = doc.setdefault("auths", {})
    raw = f"{username}:{password}".encode()
    auths[key] = {"auth": base64.b64encode(raw).decode("ascii")}
    return _dump(doc)


def remove_credentials(text: str | None, key: str) -> str:
    """The file's new text without `key` (exactly that key, as podman removes it);
    RlError("not logged into KEY") when absent."""
    doc = _document(text)
    if key not in doc["auths"]:
        raise RlError(f"not logged into {key}")
    del doc["auths"][key]
    return _dump(doc)


def remove_all_credentials(text: str | None) -> str:
    doc = _document(text)
    doc["auths"] = {}
    return _dump(doc)


def _document(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {"auths": {}}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RlError(f"auth file is not valid JSON ({exc}); fix or remove it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise RlError('auth file has no "auths" object; fix or remove it')
    doc.setdefault("auths", {})
    return doc


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent="\t")


# --- the I/O shell ----------------------------------------------------------------------


def default_paths(authfile: str | None = None) -> list[AuthPath]:
    return auth_file_paths(
        os.environ, home(), os.getuid(), authfile, session_dir=session_runtime_dir()
    )


def lookup_credentials(key: str, authfile: str | None = None) -> Credentials | None:
    """Credentials for `key` from the first file that has them (missing files are skipped, and
    so is the per-UID file under /run/containers when that directory is root's alone)."""
    for auth_path in default_paths(authfile):
        try:
            text = auth_path.path.read_text()
        except FileNotFoundError:
            continue
        except PermissionError:
            if auth_path.unreadable_is_empty:
                continue
            raise RlError(f"reading {auth_path.path}: permission denied") from None
        except OSError as exc:
            raise RlError(f"reading {auth_path.path}: {exc.strerror}") from None
        found = find_credentials(
            text, key, legacy_format=auth_path.legacy_format, where=str(auth_path.path)
        )
        if found is not None:
            return found
    return None


def read_auth_file(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RlError(f"reading {path}: {exc.strerror}") from None


def write_auth_file(path: Path, text: str) -> None:
    """Replace `path` atomically with mode 0600 (credentials must never be world-readable)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".auth-", suffix=".json", dir=path.parent)
    except OSError as exc:
        raise RlError(f"writing {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise RlError(f"writing {path}: {exc.strerror}") from None
