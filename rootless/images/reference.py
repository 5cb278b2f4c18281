"""Image names: parsing and the minimal normalisation rules podman applies.

`busybox` read from an archive means `docker.io/library/busybox:latest` (what `docker save`
meant by it); a name the user gives to `rl tag` or `rl import` without a registry lives in
`localhost/`, as podman does. Lookups of short names (`busybox`, `foo/bar:1`) match any stored
name whose repository ends with that path. A registry client will extend this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rootless.errors import RlError

DOCKER_HUB = "docker.io"
LOCALHOST = "localhost"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$"
)
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`; `registry` is "" when the name had none."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository with its registry: what podman shows in the REPOSITORY column."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _invalid(text: str, why: str) -> RlError:
    return RlError(f"invalid reference format {text!r}: {why}")


def parse(text: str) -> Reference:
    """Split a reference into its parts without adding defaults; RlError when malformed."""
    if not text or len(text) > 255 + 128 + 72:
        raise _invalid(text, "empty or too long")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise _invalid(text, "digest must be sha256: followed by 64 lowercase hex digits")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise _invalid(text, "bad tag")
    registry = ""
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == LOCALHOST or first != first.lower()):
        if not _DOMAIN.match(first):
            raise _invalid(text, "bad registry host")
        registry, rest = first, remainder
    if rest != rest.lower():
        raise _invalid(text, "repository name must be lowercase")
    if not all(_COMPONENT.match(part) for part in rest.split("/")):
        raise _invalid(text, "bad repository name")
    return Reference(registry, rest, tag, digest)


def qualify(ref: Reference, registry: str) -> Reference:
    """`ref` with `registry` when it has none, Docker Hub's `library/` and the default tag."""
    reg = ref.registry or registry
    repo = ref.repository
    if reg == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    tag = ref.tag if ref.tag or ref.digest else DEFAULT_TAG
    return Reference(reg, repo, tag, ref.digest)


def normalize_archive_name(text: str) -> str:
    """A name read from an archive (`RepoTags`, `org.opencontainers.image.ref.name`)."""
    return str(qualify(parse(text), DOCKER_HUB))


def normalize_local_name(text: str) -> str:
    """A name the user gives to `rl tag`/`rl import`: unqualified names go to `localhost/`."""
    ref = parse(text)
    if ref.digest:
        raise _invalid(text, "a tag cannot contain a digest")
    return str(qualify(ref, LOCALHOST))


def looks_like_id(text: str) -> bool:
    """Could `text` be an image ID or an ID prefix (`71eac`, `sha256:71eac…`)?"""
    return bool(_HEX.match(text.removeprefix("sha256:")))


def matches(query: str, stored: str) -> bool:
    """Does the user's `query` name the stored, fully qualified name `stored`?

    A query with a registry must match exactly (after defaults); a short one matches any
    stored repository that ends with its path, with the same tag (default `latest`).
    """
    try:
        q = parse(query)
        s = parse(stored)
    except RlError:
        return False
    q_tag = q.tag or (None if q.digest else DEFAULT_TAG)
    if q.digest or q_tag != s.tag:
        return False
    if q.registry:
        return qualify(q, q.registry).name == s.name
    return s.repository == q.repository or s.name.endswith("/" + q.repository)


def split_name(stored: str) -> tuple[str, str]:
    """("docker.io/library/busybox", "latest") for the REPOSITORY and TAG columns."""
    ref = parse(stored)
    return ref.name, ref.tag or "<none>"
