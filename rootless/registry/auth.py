"""Registry authentication without I/O: `WWW-Authenticate` challenges, the token dance
(docker's distribution token spec), and a token cache.

The HTTP shell drives `RegistryAuth`:

    action = auth.before_request(scopes, now)      # None, UseHeader or FetchToken
    ... send the request (with action.authorization if UseHeader) ...
    on 401:  action = auth.on_unauthorized(headers, scopes, sent_authorization=..., now=...)
             FetchToken -> GET/POST action.url / action.form with action.authorization;
                           200 -> auth.on_token(body, action, now) gives the UseHeader to retry;
                           else raise auth.token_failure(status, body)
    on success: auth.on_success(scopes)

A token that is refused for the scope it was fetched for is dropped and fetched once more;
a second refusal is an error. An `insufficient_scope` challenge widens the scope asked for.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit, urlunsplit

from rootless.errors import RlError

# RFC 7230 token characters; token68 (RFC 7235) for schemes that send one blob.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_PARAM_START_RE = re.compile(rf"({_TOKEN})[ \t]*=")
# Values should be tokens or quoted strings; servers also send bare URLs, so accept any run
# of characters that cannot end the parameter.
_BARE_VALUE_RE = re.compile(r'[^\s,"=][^\s,"]*')
_WHITESPACE = " \t"

DEFAULT_TOKEN_LIFETIME = 60  # seconds; also the minimum docker honours
EXPIRY_MARGIN = 5  # seconds; don't send a token that expires in flight


# The default of mapping fields: one shared empty mapping, read-only so no instance can
# change another's (what field(default_factory=dict) guaranteed).
EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class Challenge(NamedTuple):
    scheme: str  # lowercased: "bearer", "basic"
    params: Mapping[str, str] = EMPTY_MAPPING  # names lowercased
    token68: str | None = None


class _Cursor:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        found = pattern.match(self.text, self.pos)
        if found:
            self.pos = found.end()
        return found

    def quoted_string(self) -> str:
        assert self.peek() == '"'
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        raise RlError(f"malformed WWW-Authenticate header {self.text!r}: unterminated quote")

    def fail(self, why: str) -> RlError:
        return RlError(f"malformed WWW-Authenticate header {self.text!r}: {why} at {self.pos}")


def parse_www_authenticate(header: str | Iterable[str]) -> list[Challenge]:
    """All challenges in one or more `WWW-Authenticate` header values (RFC 7235 grammar)."""
    if not isinstance(header, str):
        return [c for value in header for c in parse_www_authenticate(value)]
    cursor = _Cursor(header)
    challenges: list[Challenge] = []
    while True:
        cursor.skip(_WHITESPACE + ",")
        if cursor.at_end():
            return challenges
        scheme = cursor.match(_TOKEN_RE)
        if scheme is None:
            raise cursor.fail("expected an auth scheme")
        challenges.append(_challenge_body(cursor, scheme.group().lower()))


def _challenge_body(cursor: _Cursor, scheme: str) -> Challenge:
    cursor.skip(_WHITESPACE)
    if cursor.at_end() or cursor.peek() == ",":
        return Challenge(scheme)
    if not _PARAM_START_RE.match(cursor.text, cursor.pos):
        token68 = cursor.match(_TOKEN68_RE)
        if token68 is None:
            raise cursor.fail("expected auth parameters")
        cursor.skip(_WHITESPACE)
        if not (cursor.at_end() or cursor.peek() == ","):
            raise cursor.fail("unexpected text after token68")
        return Challenge(scheme, {}, token68.group())
    params: dict[str, str] = {}
    while True:
        start = cursor.match(_PARAM_START_RE)
        if start is None:
            raise cursor.fail("expected name=value")
        cursor.skip(_WHITESPACE)
        if cursor.peek() == '"':
            value = cursor.quoted_string()
        else:
            token = cursor.match(_BARE_VALUE_RE)
            if token is None:
                raise cursor.fail("expected a token or quoted string")
            value = token.group()
        params.setdefault(start.group(1).lower(), value)
        cursor.skip(_WHITESPACE)
        if cursor.at_end():
            break
        if cursor.peek() != ",":
            raise cursor.fail("expected ','")
        # Elements of the list may be empty; after them comes a parameter or a new challenge.
        cursor.skip(_WHITESPACE + ",")
        if cursor.at_end() or not _PARAM_START_RE.match(cursor.text, cursor.pos):
            break
    return Challenge(scheme, params)


# --- scopes -------------------------------------------------------------------------------


class Scope(NamedTuple):
    """`repository:library/busybox:pull,push` (resource type, name, actions)."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def repository_scope(name: str, *actions: str) -> Scope:
    return Scope("repository", name, tuple(sorted(set(actions or ("pull",)))))


def parse_scope(text: str) -> Scope:
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        raise RlError(f"invalid auth scope {text!r}: expected TYPE:NAME:ACTIONS")
    return Scope(kind, name, tuple(sorted({a for a in actions.split(",") if a})))


def merge_scopes(scopes: Iterable[Scope]) -> tuple[Scope, ...]:
    """One scope per resource with the union of actions, in a stable order (a cache key)."""
    merged: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
    return tuple(Scope(t, n, tuple(sorted(a))) for (t, n), a in sorted(merged.items()))


def covers(granted: Sequence[Scope], wanted: Sequence[Scope]) -> bool:
    have = {(s.type, s.name): set(s.actions) for s in merge_scopes(granted)}
    return all(set(w.actions) <= have.get((w.type, w.name), set()) for w in wanted)


# --- credentials and tokens ----------------------------------------------------------------


class Credentials(NamedTuple):
    username: str
    password: str
    identity_token: str = ""  # an OAuth2 refresh token (auth.json `identitytoken`)

    def basic_authorization(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


class Token(NamedTuple):
    value: str
    expires_at: float
    refresh_token: str = ""

    def authorization(self) -> str:
        return f"Bearer {self.value}"


def parse_token_response(body: bytes, now: float) -> Token:
    """A token endpoint's JSON: `token` or `access_token`, `expires_in`, `issued_at`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RlError("registry token response is not JSON") from None
    if not isinstance(doc, dict):
        raise RlError("registry token response is not a JSON object")
    value = doc.get("access_token") or doc.get("token")
    if not isinstance(value, str) or not value:
        raise RlError("registry token response has no token")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        expires_in = DEFAULT_TOKEN_LIFETIME
    expires_in = max(float(expires_in), DEFAULT_TOKEN_LIFETIME)
    issued = _parse_time(doc.get("issued_at"))
    # A server clock ahead of ours must not make a token live longer than it will.
    start = min(issued, now) if issued is not None else now
    refresh = doc.get("refresh_token")
    return Token(value, start + expires_in, refresh if isinstance(refresh, str) else "")


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Go writes nanoseconds; Python 3.11 reads at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo else None


class TokenCache:
    """Bearer tokens by registry and the scopes they were granted for."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, tuple[Scope, ...]], Token] = {}

    def store(self, registry: str, scopes: Sequence[Scope], token: Token) -> None:
        self._entries[(registry, merge_scopes(scopes))] = token

    def lookup(self, registry: str, scopes: Sequence[Scope], now: float) -> Token | None:
        """A live token whose scopes include `scopes` (a push token serves pulls too)."""
        for (reg, granted), token in list(self._entries.items()):
            if token.expires_at - EXPIRY_MARGIN <= now:
                del self._entries[(reg, granted)]
            elif reg == registry and covers(granted, scopes):
                return token
        return None

    def discard(self, registry: str, authorization: str) -> None:
        for key, token in list(self._entries.items()):
            if key[0] == registry and token.authorization() == authorization:
                del self._entries[key]


# --- the state machine ---------------------------------------------------------------------


class UseHeader(NamedTuple):
    """Send (or resend) the request with this `Authorization` header."""

    authorization: str


class FetchToken(NamedTuple):
    """Ask the token server for a token; GET `url`, or POST `form` to `realm` (OAuth2)."""

    realm: str
    service: str
    scopes: tuple[Scope, ...]
    account: str = ""
    authorization: str | None = None  # Basic credentials for the token server, if any
    form: Mapping[str, str] | None = None  # set for the OAuth2 refresh-token POST

    @property
    def method(self) -> str:
        return "POST" if self.form is not None else "GET"

    @property
    def url(self) -> str:
        if self.form is not None:
            return self.realm
        query: list[tuple[str, str]] = []
        if self.service:
            query.append(("service", self.service))
        query.extend(("scope", str(s)) for s in self.scopes)
        if self.account:
            query.append(("account", self.account))
        parts = urlsplit(self.realm)
        joined = "&".join(q for q in (parts.query, urlencode(query)) if q)
        return urlunsplit(parts._replace(query=joined))


class RegistryAuth:
    """Authentication with one registry: which scheme it wants, and tokens per scope."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None = None,
        cache: TokenCache | None = None,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.cache = cache if cache is not None else TokenCache()
        self._scheme: str | None = None  # learnt from the first challenge
        self._bearer: Challenge | None = None
        self._fresh: set[tuple[Scope, ...]] = set()  # fetched and not yet seen to work

    def before_request(self, scopes: Sequence[Scope], now: float) -> UseHeader | FetchToken | None:
        """What to send up front: nothing until the registry has said what it wants."""
        if self._scheme == "basic" and self.credentials is not None:
            return UseHeader(self.credentials.basic_authorization())
        if self._scheme == "bearer" and self._bearer is not None:
            token = self.cache.lookup(self.registry, scopes, now)
            if token is not None:
                return UseHeader(token.authorization())
            return self._fetch(self._bearer, merge_scopes(scopes))
        return None

    def on_unauthorized(
        self,
        www_authenticate: str | Iterable[str],
        scopes: Sequence[Scope],
        *,
        sent_authorization: str | None,
        now: float,
    ) -> UseHeader | FetchToken:
        """The next step after a 401, or an RlError when retrying cannot help."""
        challenges = parse_www_authenticate(www_authenticate)
        by_scheme = {c.scheme: c for c in reversed(challenges)}
        if "bearer" in by_scheme:
            return self._on_bearer(by_scheme["bearer"], scopes, sent_authorization)
        if "basic" in by_scheme:
            self._scheme = "basic"
            if self.credentials is None:
                raise self._login_required()
            if sent_authorization is not None and sent_authorization.startswith("Basic "):
                raise self._bad_credentials()
            return UseHeader(self.credentials.basic_authorization())
        if not challenges:
            raise RlError(
                f"{self.registry}: unauthorized (401) without a WWW-Authenticate challenge"
            )
        schemes = ", ".join(sorted({c.scheme for c in challenges}))
        raise RlError(f"{self.registry}: unsupported authentication scheme(s): {schemes}")

    def _on_bearer(
        self, challenge: Challenge, scopes: Sequence[Scope], sent_authorization: str | None
    ) -> FetchToken:
        if not challenge.params.get("realm"):
            raise RlError(f"{self.registry}: bearer challenge without a realm")
        self._scheme, self._bearer = "bearer", challenge
        wanted = list(scopes)
        for text in challenge.params.get("scope", "").split():
            try:
                wanted.append(parse_scope(text))
            except RlError:
                continue  # an unparseable hint: keep asking for what we need
        needed = merge_scopes(wanted)
        if sent_authorization is not None and sent_authorization.startswith("Bearer "):
            self.cache.discard(self.registry, sent_authorization)
            if needed in self._fresh:
                raise self._denied(needed, challenge)
        return self._fetch(challenge, needed)

    def _fetch(self, challenge: Challenge, scopes: tuple[Scope, ...]) -> FetchToken:
        realm = challenge.params["realm"]
        if urlsplit(realm).scheme not in ("http", "https"):
            raise RlError(f"{self.registry}: token realm {realm!r} is not an http(s) URL")
        service = challenge.params.get("service", "")
        creds = self.credentials
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": service,
                "client_id": "rl",
                "scope": " ".join(str(s) for s in scopes),
            }
            return FetchToken(realm, service, scopes, form=form)
        if creds is not None:
            return FetchToken(realm, service, scopes, creds.username, creds.basic_authorization())
        return FetchToken(realm, service, scopes)

    def on_token(self, body: bytes, fetch: FetchToken, now: float) -> UseHeader:
        token = parse_token_response(body, now)
        self.cache.store(self.registry, fetch.scopes, token)
        self._fresh.add(merge_scopes(fetch.scopes))
        return UseHeader(token.authorization())

    def on_success(self, scopes: Sequence[Scope]) -> None:
        self._fresh.discard(merge_scopes(scopes))

    def token_failure(self, status: int, body: bytes) -> RlError:
        """The error for a token server that said no."""
        detail = registry_error_message(body)
        if status in (401, 403) and self.credentials is not None:
            return self._bad_credentials(detail)
        if status in (401, 403):
            return self._login_required(detail)
        return RlError(
            f"{self.registry}: token server answered {status}" + (f": {detail}" if detail else "")
        )

    def _login_required(self, detail: str = "") -> RlError:
        why = f" ({detail})" if detail else ""
        return RlError(
            f"{self.registry}: unauthorized: authentication required{why}; "
            f"log in with `rl login {self.registry}`"
        )

    def _bad_credentials(self, detail: str = "") -> RlError:
        why = f" ({detail})" if detail else ""
        return RlError(
            f"{self.registry}: invalid username/password{why}; "
            f"log in again with `rl login {self.registry}`"
        )

    def _denied(self, scopes: tuple[Scope, ...], challenge: Challenge) -> RlError:
        error = challenge.params.get("error", "")
        wanted = " ".join(str(s) for s in scopes)
        hint = (
            f"log in with `rl login {self.registry}`"
            if self.credentials is None
            else "check that the repository exists and that your account may access it"
        )
        return RlError(
            f"{self.registry}: requested access to the resource is denied ({wanted}"
            + (f", {error}" if error else "")
            + f"); {hint}"
        )


def registry_error_message(body: bytes) -> str:
    """The message of a registry's JSON error body (`{"errors": [{"message": …}]}`)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list):
            texts = [
                str(e.get("message") or e.get("code") or "") for e in errors if isinstance(e, dict)
            ]
            return "; ".join(t for t in texts if t)
        for key in ("details", "error_description", "error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    return ""
