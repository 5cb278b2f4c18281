"""`rl manifest inspect REF`: a remote manifest or index, as the registry serves it.

The document is printed as podman prints it: the registry's bytes re-indented with four
spaces the way Go's `json.Indent` does it (key order, number spelling and string escapes
kept; `{}` and `[]` stay on one line). Unlike podman 4.3, an OCI index is not converted to a
Docker manifest list, and a single-image manifest is printed instead of refused (as later
podman and `docker manifest inspect` do).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rootless.errors import RlError
from rootless.registry.auth import repository_scope
from rootless.registry.manifests import ACCEPT, verify_digest

if TYPE_CHECKING:
    from rootless.registry.pull import PullOptions
    from rootless.registry.reference import Reference

_WHITESPACE = " \t\r\n"


def indent_json(text: str, indent: str = "    ") -> str:
    """`text` (valid JSON) re-indented like Go's json.Indent(dst, src, "", indent)."""
    out: list[str] = []
    depth = 0
    in_string = False
    escaped = False
    pending_newline = False  # after an opening bracket: a newline unless it closes at once

    def newline() -> None:
        out.append("\n" + indent * depth)

    for char in text.lstrip(_WHITESPACE):
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char in _WHITESPACE:
            continue
        if pending_newline and char not in "]}":
            pending_newline = False
            depth += 1
            newline()
        if char == '"':
            in_string = True
            out.append(char)
        elif char in "{[":
            out.append(char)
            pending_newline = True
        elif char in "]}":
            if pending_newline:
                pending_newline = False  # empty: `{}` / `[]`
            else:
                depth -= 1
                newline()
            out.append(char)
        elif char == ",":
            out.append(char)
            newline()
        elif char == ":":
            out.append(": ")
        else:
            out.append(char)
    return "".join(out)


def render_manifest(body: bytes, source: str) -> str:
    """What `rl manifest inspect` prints for the registry's answer `body`."""
    try:
        text = body.decode()
        json.loads(text)
    except ValueError as exc:
        raise RlError(f"{source}: the registry's manifest is not JSON: {exc}") from None
    return indent_json(text)


def inspect_manifest(text: str, options: PullOptions) -> str:
    """The rendered manifest (or index) of `text`: short names tried in order, like pull."""
    import rootless.registry.quickimport  # noqa: F401  # isort: skip  (before trio)
    import trio

    from rootless.registry.pull import resolve_candidates
    from rootless.registry.reference import parse
    from rootless.registry.shortnames import load_registries_config, registry_for

    config = load_registries_config()
    errors: list[RlError] = []
    for candidate in resolve_candidates(parse(text), config):
        for source in registry_for(candidate, config).pull_sources():  # mirrors first
            insecure = source.insecure if options.verify_tls is None else not options.verify_tls
            try:
                body = trio.run(_fetch_manifest, source.reference, options, insecure)
            except RlError as exc:
                errors.append(exc)
                continue
            return render_manifest(body, str(candidate))
    if len(errors) == 1:
        raise errors[0]
    raise RlError("; ".join(e.message for e in errors))


async def _fetch_manifest(ref: Reference, options: PullOptions, insecure: bool) -> bytes:
    from rootless.registry.authfile import lookup_credentials
    from rootless.registry.client import RegistryClient

    credentials = options.credentials or lookup_credentials(ref.name, options.authfile)
    scopes = [repository_scope(ref.path, "pull")]
    wanted = ref.digest or ref.tag or "latest"
    async with RegistryClient(
        ref.domain, credentials=credentials, insecure=insecure, cert_dir=options.cert_dir
    ) as client:
        await client.ping()
        got = await client.get_manifest(ref.path, wanted, scopes, ACCEPT)
    if got is None:
        raise RlError(
            f"{ref}: reading manifest {wanted} in {ref.domain}/{ref.path}: "
            "manifest unknown (no such image or tag in the registry)"
        )
    body = got[0]
    if ref.digest is not None and ref.digest.partition(":")[0] in ("sha256", "sha384", "sha512"):
        verify_digest(body, ref.digest, what=f"{ref} manifest")
    return body
