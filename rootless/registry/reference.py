"""Image references, parsed by the grammar of the distribution project that docker and podman
share:

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [ domain "/" ] path-component *( "/" path-component )
    domain    := host [ ":" port ]          host := domain-name | "[" ipv6 "]"

The first component is a registry only when it looks like a host (`.` or `:` in it, or
`localhost`); otherwise the whole name is a repository path and the reference is a *short
name*, which podman resolves through registries.conf (see `shortnames`). Docker Hub's
spellings are normalised: `index.docker.io` is `docker.io`, and `docker.io/busybox` is
`docker.io/library/busybox`. Error texts are podman's, so scripts that match them keep working.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from rootless.errors import RlError

DOCKER_HUB = "docker.io"
LEGACY_DOCKER_HUB = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
LOCALHOST = "localhost"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# Go's regexp classes are ASCII-only: spell them out (Python's \w and \d match Unicode).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH}))"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_DOMAIN_RE = re.compile(_DOMAIN)
_PATH_RE = re.compile(_PATH)
_TAG_RE = re.compile(_TAG)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")

# hex length of each algorithm go-digest knows; anything else is "unsupported".
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}

INVALID_FORMAT = "invalid reference format"
NAME_EMPTY = "repository name must have at least one component"
NAME_UPPERCASE = "repository name must be lowercase"
NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
DIGEST_UNSUPPORTED = "unsupported digest algorithm"
DIGEST_BAD_LENGTH = "invalid checksum digest length"
DIGEST_BAD_FORMAT = "invalid checksum digest format"


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class Reference(NamedTuple):
    """`domain/path[:tag][@digest]`; `domain` is "" when the user gave none (a short name)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository with its registry, no tag or digest."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def registry(self) -> str:
        """The same as `domain` (the name rootless.images.reference uses)."""
        return self.domain

    @property
    def repository(self) -> str:
        """The same as `path` (the name rootless.images.reference uses)."""
        return self.path

    @property
    def is_short_name(self) -> bool:
        """No registry was given: podman resolves it through aliases and search registries."""
        return not self.domain

    def __str__(self) -> str:
        """The reference as parsed, e.g. `docker.io/library/busybox:latest` once qualified."""
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """Docker's short spelling: `busybox:1`, `user/app`, `quay.io/x/y` unchanged."""
        if self.domain != DOCKER_HUB:
            return str(self)
        path = self.path
        official, sep, rest = path.partition("/")
        if sep and official == OFFICIAL_NAMESPACE and "/" not in rest:
            path = rest
        return str(self._replace(domain="", path=path))

    def qualified(self, domain: str = DOCKER_HUB) -> Reference:
        """This reference with `domain` when it has none (plus Docker Hub's `library/`)."""
        if self.domain:
            return self
        return _checked(_normalized(domain, self.path, self.tag, self.digest))

    def with_default_tag(self) -> Reference:
        """`:latest` added when there is neither a tag nor a digest (what a pull asks for)."""
        if self.tag is None and self.digest is None:
            return self._replace(tag=DEFAULT_TAG)
        return self

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.fullmatch(tag):
            raise RlError(f"{INVALID_FORMAT}: invalid tag {tag!r}")
        return self._replace(tag=tag)

    def with_digest(self, digest: str) -> Reference:
        check_digest(digest)
        return self._replace(digest=digest)


def looks_like_domain(component: str) -> bool:
    """Docker's rule for the first path component: a registry host, not a namespace."""
    return "." in component or ":" in component or component == LOCALHOST


def parse(text: str) -> Reference:
    """Parse a reference as the user wrote it; a short name keeps domain "" (no defaults).

    A registry given as `docker.io`/`index.docker.io` is normalised, since that is unambiguous.
    """
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        if not text:
            raise RlError(NAME_EMPTY)
        if _REFERENCE_RE.fullmatch(text.lower()):
            raise RlError(NAME_UPPERCASE)
        raise RlError(INVALID_FORMAT)
    if len(match["name"]) > NAME_TOTAL_LENGTH_MAX:
        raise RlError(NAME_TOO_LONG)
    digest = match["digest"]
    if digest is not None:
        check_digest(digest)
    # The regex takes any host-like first component as a domain; docker's rule is narrower.
    domain, path = match["domain"] or "", match["path"]
    if domain and not looks_like_domain(domain):
        domain, path = "", f"{domain}/{path}"
    if domain:
        return _checked(_normalized(domain, path, match["tag"], digest))
    return _checked(Reference("", path, match["tag"], digest))


def parse_normalized(text: str, default_domain: str = DOCKER_HUB) -> Reference:
    """Parse and qualify: `busybox` -> `docker.io/library/busybox` (docker's normalised name).

    Unlike `parse`, the uppercase check comes first (a name like `Foo/bar` is not a registry
    `Foo`), and 64-hex strings are refused since they are image IDs.
    """
    if _IDENTIFIER_RE.fullmatch(text):
        raise RlError(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    return parse(text).qualified(default_domain)


def check_digest(digest: str) -> None:
    """Raise podman's error for a malformed or unsupported `algorithm:hex` digest."""
    algorithm, sep, hex_part = digest.partition(":")
    if not sep or not algorithm or not hex_part:
        raise RlError(DIGEST_BAD_FORMAT)
    expected = DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        if not re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", digest):
            raise RlError(DIGEST_BAD_FORMAT)
        raise RlError(DIGEST_UNSUPPORTED)
    if len(hex_part) != expected:
        raise RlError(DIGEST_BAD_LENGTH)
    if not re.fullmatch(r"[a-f0-9]+", hex_part):
        raise RlError(DIGEST_BAD_FORMAT)


def is_valid_domain(text: str) -> bool:
    return bool(_DOMAIN_RE.fullmatch(text))


def is_valid_path(text: str) -> bool:
    return bool(_PATH_RE.fullmatch(text))


def _normalized(domain: str, path: str, tag: str | None, digest: str | None) -> Reference:
    if domain == LEGACY_DOCKER_HUB:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    return Reference(domain, path, tag, digest)


def _checked(ref: Reference) -> Reference:
    if ref.path != ref.path.lower() or not _PATH_RE.fullmatch(ref.path):
        raise RlError(NAME_UPPERCASE if _PATH_RE.fullmatch(ref.path.lower()) else INVALID_FORMAT)
    if ref.domain and not _DOMAIN_RE.fullmatch(ref.domain):
        raise RlError(INVALID_FORMAT)
    if len(ref.name) > NAME_TOTAL_LENGTH_MAX:
        raise RlError(NAME_TOO_LONG)
    return ref
