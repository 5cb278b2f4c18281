"""Image names: parsing and the minimal normalisation rules podman applies.

`busybox` read from an archive means `docker.io/library/busybox:latest` (what `docker save`
meant by it); a name the user gives to `rl tag` or `rl import` without a registry lives in
`localhost/`, as podman does. Lookups of short names (`busybox`, `foo/bar:1`) match any stored
name whose repository ends with that path. A registry client will extend this module.
"""

from __future__ import annotations

import re

from rootless.errors import RlError
from rootless.registry.reference import DEFAULT_TAG, DOCKER_HUB, LOCALHOST, Reference
from rootless.registry.reference import parse as _parse_reference

__all__ = ["DEFAULT_TAG", "DOCKER_HUB", "LOCALHOST", "Reference", "parse"]

_HEX = re.compile(r"^[0-9a-f]{1,64}$")


def _invalid(text: str, why: str) -> RlError:
    return RlError(f"invalid reference format {text!r}: {why}")


def parse(text: str) -> Reference:
    """Split a reference into its parts without adding defaults (the distribution grammar of
    rootless.registry.reference); RlError when malformed."""
    return _parse_reference(text)


def qualify(ref: Reference, registry: str) -> Reference:
    """`ref` with `registry` when it has none, Docker Hub's `library/` and the default tag."""
    return ref.qualified(registry).with_default_tag()


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
