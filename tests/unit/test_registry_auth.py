"""WWW-Authenticate parsing and the token-auth state machine, driven as an HTTP shell would."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootless.errors import RlError
from rootless.registry.auth import (
    Challenge,
    Credentials,
    FetchToken,
    RegistryAuth,
    Scope,
    Token,
    TokenCache,
    UseHeader,
    covers,
    merge_scopes,
    parse_scope,
    parse_token_response,
    parse_www_authenticate,
    registry_error_message,
    repository_scope,
)

HUB = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:library/busybox:pull"'
)
NOW = 1_700_000_000.0


# --- challenges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            HUB,
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/busybox:pull",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        ("Basic", [Challenge("basic")]),
        ("BASIC Realm=simple", [Challenge("basic", {"realm": "simple"})]),
        (
            "Negotiate a87421000492aa874209af8bc028",
            [Challenge("negotiate", {}, "a87421000492aa874209af8bc028")],
        ),
        ("NTLM abc+/def==", [Challenge("ntlm", {}, "abc+/def==")]),
        (
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        ),
        (
            'Basic realm="a\\\\b", Bearer realm="https://t/x", , error="insufficient_scope"',
            [
                Challenge("basic", {"realm": "a\\b"}),
                Challenge("bearer", {"realm": "https://t/x", "error": "insufficient_scope"}),
            ],
        ),
        (
            'Bearer  realm = "https://t" ,service= "reg, with comma"',
            [Challenge("bearer", {"realm": "https://t", "service": "reg, with comma"})],
        ),
        ("Basic, Bearer realm=x", [Challenge("basic"), Challenge("bearer", {"realm": "x"})]),
        (", ,Basic realm=x,,", [Challenge("basic", {"realm": "x"})]),
        ('Bearer realm="", service=""', [Challenge("bearer", {"realm": "", "service": ""})]),
        ('Bearer realm="x", REALM="y"', [Challenge("bearer", {"realm": "x"})]),
        ('Bearer realm="a=b,c"', [Challenge("bearer", {"realm": "a=b,c"})]),
        ('Bearer realm="ünïcode"', [Challenge("bearer", {"realm": "ünïcode"})]),
        (
            "Bearer realm=https://auth.example/token?a=b,service=reg.example",
            [
                Challenge(
                    "bearer", {"realm": "https://auth.example/token?a=b", "service": "reg.example"}
                )
            ],
        ),
        ("", []),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


def test_several_header_values() -> None:
    assert parse_www_authenticate(['Basic realm="r"', HUB]) == [
        Challenge("basic", {"realm": "r"}),
        *parse_www_authenticate(HUB),
    ]


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="unterminated',
        "Bearer realm=",
        "Bearer realm=a b",
        "Bearer a==b",
        "Basic realm=x y=z",
        "=x",
        '"quoted"',
    ],
)
def test_malformed_challenges(header: str) -> None:
    with pytest.raises(RlError, match="malformed WWW-Authenticate header"):
        parse_www_authenticate(header)


_value = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
_name = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_name, st.dictionaries(_name, _value, max_size=4)), max_size=3))
def test_quoted_params_round_trip(challenges: list[tuple[str, dict[str, str]]]) -> None:
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = ", ".join(
        scheme + (" " + ", ".join(f"{k}={quote(v)}" for k, v in params.items()) if params else "")
        for scheme, params in challenges
    )
    assert parse_www_authenticate(header) == [Challenge(s, p) for s, p in challenges]


# --- scopes -------------------------------------------------------------------------------


def test_scopes() -> None:
    scope = parse_scope("repository:samalba/my-app:push,pull")
    assert scope == Scope("repository", "samalba/my-app", ("pull", "push"))
    assert str(scope) == "repository:samalba/my-app:pull,push"
    assert str(parse_scope("repository(plugin):a/b:pull")) == "repository(plugin):a/b:pull"
    assert str(parse_scope("registry:catalog:*")) == "registry:catalog:*"
    assert repository_scope("a/b") == Scope("repository", "a/b", ("pull",))
    assert repository_scope("a/b", "push", "pull") == Scope("repository", "a/b", ("pull", "push"))
    with pytest.raises(RlError, match="invalid auth scope"):
        parse_scope("repository")
    merged = merge_scopes(
        [repository_scope("b"), repository_scope("a", "push"), repository_scope("a")]
    )
    assert [str(s) for s in merged] == ["repository:a:pull,push", "repository:b:pull"]
    assert covers(merged, [repository_scope("a")])
    assert not covers([repository_scope("a")], [repository_scope("a", "push")])
    assert not covers([repository_scope("a")], [repository_scope("b")])


# --- token responses ----------------------------------------------------------------------


def test_token_response_fields() -> None:
    token = parse_token_response(b'{"token": "t1", "expires_in": 300}', NOW)
    assert token == Token("t1", NOW + 300)
    assert token.authorization() == "Bearer t1"
    # access_token wins (OAuth2 servers send both)
    assert parse_token_response(b'{"token": "a", "access_token": "b"}', NOW).value == "b"
    assert (
        parse_token_response(b'{"access_token": "b", "refresh_token": "r"}', NOW).refresh_token
        == "r"
    )


def test_token_lifetime_defaults_and_minimum() -> None:
    assert parse_token_response(b'{"token": "t"}', NOW).expires_at == NOW + 60
    assert parse_token_response(b'{"token": "t", "expires_in": 10}', NOW).expires_at == NOW + 60
    assert parse_token_response(b'{"token": "t", "expires_in": "x"}', NOW).expires_at == NOW + 60
    assert parse_token_response(b'{"token": "t", "expires_in": true}', NOW).expires_at == NOW + 60


def test_issued_at_is_honoured_but_never_extends_lifetime() -> None:
    past = parse_token_response(
        b'{"token": "t", "expires_in": 300, "issued_at": "2023-11-14T22:12:20.123456789Z"}', NOW
    )
    assert past.expires_at == pytest.approx(NOW - 60 + 0.123456 + 300, abs=1e-3)
    future = parse_token_response(
        b'{"token": "t", "expires_in": 300, "issued_at": "2030-01-01T00:00:00+00:00"}', NOW
    )
    assert future.expires_at == NOW + 300
    garbage = parse_token_response(b'{"token": "t", "issued_at": "yesterday"}', NOW)
    assert garbage.expires_at == NOW + 60


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (b"{}", "has no token"),
        (b'{"token": ""}', "has no token"),
        (b'{"token": 5}', "has no token"),
    ],
)
def test_bad_token_responses(body: bytes, message: str) -> None:
    with pytest.raises(RlError, match=message):
        parse_token_response(body, NOW)


# --- cache --------------------------------------------------------------------------------


def test_cache_by_registry_and_scope_with_expiry() -> None:
    cache = TokenCache()
    pull_push = [repository_scope("a", "pull", "push")]
    cache.store("r1", pull_push, Token("t", NOW + 100))
    assert cache.lookup("r1", [repository_scope("a")], NOW) == Token("t", NOW + 100)
    assert cache.lookup("r2", [repository_scope("a")], NOW) is None
    assert cache.lookup("r1", [repository_scope("b")], NOW) is None
    assert cache.lookup("r1", pull_push, NOW + 96) is None  # inside the safety margin
    assert cache.lookup("r1", pull_push, NOW) is None  # dropped once expired


def test_cache_discard() -> None:
    cache = TokenCache()
    cache.store("r", [repository_scope("a")], Token("t", NOW + 100))
    cache.discard("r", "Bearer other")
    assert cache.lookup("r", [repository_scope("a")], NOW) is not None
    cache.discard("r", "Bearer t")
    assert cache.lookup("r", [repository_scope("a")], NOW) is None


# --- the state machine --------------------------------------------------------------------

BUSYBOX = [repository_scope("library/busybox")]


def query(fetch: FetchToken) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(fetch.url).query)


def test_anonymous_bearer_flow() -> None:
    auth = RegistryAuth("docker.io")
    assert auth.before_request(BUSYBOX, NOW) is None  # nothing known yet
    fetch = auth.on_unauthorized(HUB, BUSYBOX, sent_authorization=None, now=NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.method == "GET" and fetch.authorization is None
    assert fetch.url.startswith("https://auth.docker.io/token?")
    assert query(fetch) == [
        ("service", "registry.docker.io"),
        ("scope", "repository:library/busybox:pull"),
    ]
    retry = auth.on_token(b'{"token": "abc", "expires_in": 300}', fetch, NOW)
    assert retry == UseHeader("Bearer abc")
    auth.on_success(BUSYBOX)
    # later requests reuse the token without a round trip
    assert auth.before_request(BUSYBOX, NOW + 10) == UseHeader("Bearer abc")
    # a new repository: fetch a token before even trying
    other = [repository_scope("library/alpine")]
    ahead = auth.before_request(other, NOW + 10)
    assert isinstance(ahead, FetchToken)
    assert ("scope", "repository:library/alpine:pull") in query(ahead)
    # and after expiry, a new token is fetched up front
    assert isinstance(auth.before_request(BUSYBOX, NOW + 400), FetchToken)


def test_credentials_go_to_the_token_server() -> None:
    auth = RegistryAuth("quay.io", Credentials("me", "s3cret:x"))
    fetch = auth.on_unauthorized(
        'Bearer realm="https://quay.io/v2/auth?x=1",service="quay.io"',
        [repository_scope("me/app", "pull", "push")],
        sent_authorization=None,
        now=NOW,
    )
    assert isinstance(fetch, FetchToken)
    assert fetch.authorization == "Basic " + base64.b64encode(b"me:s3cret:x").decode()
    assert fetch.url.startswith("https://quay.io/v2/auth?x=1&")
    assert query(fetch) == [
        ("x", "1"),
        ("service", "quay.io"),
        ("scope", "repository:me/app:pull,push"),
        ("account", "me"),
    ]


def test_identity_token_uses_oauth2_refresh_grant() -> None:
    auth = RegistryAuth("r.example", Credentials("", "", identity_token="refresh-me"))
    fetch = auth.on_unauthorized(
        'Bearer realm="https://r.example/oauth",service="r"',
        BUSYBOX,
        sent_authorization=None,
        now=NOW,
    )
    assert isinstance(fetch, FetchToken)
    assert fetch.method == "POST" and fetch.url == "https://r.example/oauth"
    assert fetch.form == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-me",
        "service": "r",
        "client_id": "rl",
        "scope": "repository:library/busybox:pull",
    }


def test_insufficient_scope_asks_for_the_wider_scope() -> None:
    auth = RegistryAuth("r.example", Credentials("u", "p"))
    pull = [repository_scope("team/app")]
    fetch = auth.on_unauthorized(
        'Bearer realm="https://r.example/token",service="r"', pull, sent_authorization=None, now=NOW
    )
    assert isinstance(fetch, FetchToken)
    header = auth.on_token(b'{"token": "pull-only"}', fetch, NOW)
    auth.on_success(pull)
    push = [repository_scope("team/app", "pull", "push")]
    # the cached pull token is not enough for push: fetch ahead
    assert isinstance(auth.before_request(push, NOW), FetchToken)
    # a registry that answers 401 insufficient_scope for a blob mount names the scope it wants
    wider = auth.on_unauthorized(
        'Bearer realm="https://r.example/token",service="r",error="insufficient_scope",'
        'scope="repository:team/app:pull,push repository:team/base:pull"',
        pull,
        sent_authorization=header.authorization,
        now=NOW,
    )
    assert isinstance(wider, FetchToken)
    assert [str(s) for s in wider.scopes] == [
        "repository:team/app:pull,push",
        "repository:team/base:pull",
    ]


def test_rejected_cached_token_is_refetched_once_then_denied() -> None:
    auth = RegistryAuth("docker.io")
    fetch = auth.on_unauthorized(HUB, BUSYBOX, sent_authorization=None, now=NOW)
    assert isinstance(fetch, FetchToken)
    header = auth.on_token(b'{"token": "t1"}', fetch, NOW)
    auth.on_success(BUSYBOX)
    # the server revoked it: drop it and fetch again
    again = auth.on_unauthorized(HUB, BUSYBOX, sent_authorization=header.authorization, now=NOW)
    assert isinstance(again, FetchToken)
    assert auth.before_request(BUSYBOX, NOW) == again  # the old one is gone from the cache
    fresh = auth.on_token(b'{"token": "t2"}', again, NOW)
    # a freshly fetched token for exactly this scope refused: retrying cannot help
    with pytest.raises(RlError) as info:
        auth.on_unauthorized(HUB, BUSYBOX, sent_authorization=fresh.authorization, now=NOW)
    assert info.value.message.startswith(
        "docker.io: requested access to the resource is denied (repository:library/busybox:pull); "
    )
    assert "rl login docker.io" in info.value.message


def test_basic_auth_flow() -> None:
    auth = RegistryAuth("localhost:5000", Credentials("u", "p"))
    action = auth.on_unauthorized(
        'Basic realm="Registry Realm"', BUSYBOX, sent_authorization=None, now=NOW
    )
    assert action == UseHeader("Basic dTpw")
    assert auth.before_request(BUSYBOX, NOW) == UseHeader("Basic dTpw")
    with pytest.raises(RlError, match="invalid username/password"):
        auth.on_unauthorized(
            'Basic realm="Registry Realm"', BUSYBOX, sent_authorization="Basic dTpw", now=NOW
        )


def test_basic_auth_without_credentials_says_how_to_log_in() -> None:
    auth = RegistryAuth("localhost:5000")
    with pytest.raises(RlError) as info:
        auth.on_unauthorized('Basic realm="r"', BUSYBOX, sent_authorization=None, now=NOW)
    assert info.value.message == (
        "localhost:5000: unauthorized: authentication required; "
        "log in with `rl login localhost:5000`"
    )


def test_bearer_is_preferred_over_basic() -> None:
    auth = RegistryAuth("r", Credentials("u", "p"))
    action = auth.on_unauthorized(
        ['Basic realm="r"', 'Bearer realm="https://t/token"'],
        BUSYBOX,
        sent_authorization=None,
        now=NOW,
    )
    assert isinstance(action, FetchToken)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "without a WWW-Authenticate challenge"),
        ("Negotiate abc", "unsupported authentication scheme"),
        ('Bearer service="x"', "bearer challenge without a realm"),
        ('Bearer realm="file:///etc/passwd"', r"is not an http\(s\) URL"),
    ],
)
def test_unusable_challenges(header: str, message: str) -> None:
    with pytest.raises(RlError, match=message):
        RegistryAuth("r").on_unauthorized(header, BUSYBOX, sent_authorization=None, now=NOW)


def test_token_failures() -> None:
    body = json.dumps(
        {"errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]}
    )
    err = RegistryAuth("r", Credentials("u", "bad")).token_failure(401, body.encode())
    assert "invalid username/password (incorrect username or password)" in err.message
    err = RegistryAuth("r").token_failure(401, b'{"details": "no anonymous access"}')
    assert "authentication required (no anonymous access)" in err.message
    assert (
        RegistryAuth("r").token_failure(500, b"oops").message
        == "r: token server answered 500: oops"
    )


def test_registry_error_message() -> None:
    assert (
        registry_error_message(b'{"errors":[{"code":"DENIED","message":"m1"},{"code":"X"}]}')
        == "m1; X"
    )
    assert registry_error_message(b'{"error": "invalid_grant"}') == "invalid_grant"
    assert registry_error_message(b"plain text") == "plain text"
    assert registry_error_message(b"[1]") == ""
