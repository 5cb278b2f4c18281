"""auth.json: the search order, key matching as containers/image does it, and edits."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.registry import authfile
from rootless.registry.auth import Credentials
from rootless.registry.authfile import (
    AuthPath,
    add_credentials,
    auth_file_paths,
    credential_helper,
    find_credentials,
    normalize_login_key,
    remove_all_credentials,
    remove_credentials,
    write_auth_file,
)

HOME = Path("/home/u")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auths(**entries: object) -> str:
    return json.dumps({"auths": entries})


def entry(user: str, password: str) -> dict[str, str]:
    return {"auth": b64(f"{user}:{password}")}


# --- where to look ------------------------------------------------------------------------


def test_default_search_order() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert auth_file_paths(env, HOME, 1000) == [
        AuthPath(Path("/run/user/1000/containers/auth.json")),
        AuthPath(HOME / ".config/containers/auth.json"),
        AuthPath(HOME / ".docker/config.json"),
        AuthPath(HOME / ".dockercfg", legacy_format=True),
    ]


def test_search_order_honours_xdg_and_docker_config() -> None:
    env = {"XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dk"}
    assert auth_file_paths(env, HOME, 1000) == [
        AuthPath(Path("/run/containers/1000/auth.json"), unreadable_is_empty=True),
        AuthPath(Path("/cfg/containers/auth.json")),
        AuthPath(Path("/dk/config.json")),
        AuthPath(HOME / ".dockercfg", legacy_format=True),
    ]


def test_without_xdg_runtime_dir_the_users_session_dir_is_used_as_podman_does() -> None:
    # after `su USER` the variable is unset; rootless podman then takes /run/user/UID when
    # it is the user's, so `rl login` there and `podman pull` must meet in the same file
    paths = auth_file_paths({}, HOME, 1000, session_dir=Path("/run/user/1000"))
    assert paths[0] == AuthPath(Path("/run/user/1000/containers/auth.json"))
    # the variable, when set, wins
    env = {"XDG_RUNTIME_DIR": "/elsewhere"}
    paths = auth_file_paths(env, HOME, 1000, session_dir=Path("/run/user/1000"))
    assert paths[0] == AuthPath(Path("/elsewhere/containers/auth.json"))


# /proc/sys/vm/compact_memory is mode 0200: reading it fails with EACCES even for root, which
# is how the suite (run as root in CI) gets a real unreadable file.
UNREADABLE = Path("/proc/sys/vm/compact_memory")


@pytest.mark.skipif(not UNREADABLE.exists(), reason="needs /proc/sys/vm/compact_memory")
def test_an_unreadable_per_uid_file_counts_as_empty_but_others_are_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docker = tmp_path / "config.json"
    write_auth_file(docker, auths(**{"quay.io": entry("docker", "1")}))
    paths = [AuthPath(UNREADABLE, unreadable_is_empty=True), AuthPath(docker)]
    monkeypatch.setattr(authfile, "default_paths", lambda authfile=None: paths)
    assert authfile.lookup_credentials("quay.io/x") == Credentials("docker", "1")
    paths[0] = AuthPath(UNREADABLE)
    with pytest.raises(RlError, match=f"^reading {UNREADABLE}: permission denied$"):
        authfile.lookup_credentials("quay.io/x")


def test_explicit_auth_file_is_the_only_one() -> None:
    env = {"REGISTRY_AUTH_FILE": "/env/auth.json", "XDG_RUNTIME_DIR": "/run/user/1"}
    assert auth_file_paths(env, HOME, 1) == [AuthPath(Path("/env/auth.json"))]
    # --authfile beats the environment
    assert auth_file_paths(env, HOME, 1, "/flag.json") == [AuthPath(Path("/flag.json"))]


# --- lookup -------------------------------------------------------------------------------


def test_registry_entry() -> None:
    text = auths(**{"quay.io": entry("u", "p")})
    assert find_credentials(text, "quay.io/team/app") == Credentials("u", "p")
    assert find_credentials(text, "quay.io") == Credentials("u", "p")
    assert find_credentials(text, "quay.iox/team/app") is None
    assert find_credentials(text, "docker.io/library/busybox") is None


def test_most_specific_namespace_wins() -> None:
    text = auths(
        **{
            "quay.io": entry("reg", "1"),
            "quay.io/team": entry("team", "2"),
            "quay.io/team/app": entry("app", "3"),
        }
    )
    assert find_credentials(text, "quay.io/team/app").username == "app"  # type: ignore[union-attr]
    assert find_credentials(text, "quay.io/team/other").username == "team"  # type: ignore[union-attr]
    assert find_credentials(text, "quay.io/teamwork/x").username == "reg"  # type: ignore[union-attr]
    assert find_credentials(text, "quay.io/team/app/sub").username == "app"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "key",
    ["https://index.docker.io/v1/", "http://docker.io", "index.docker.io", "registry-1.docker.io"],
)
def test_docker_hub_keys_docker_wrote(key: str) -> None:
    text = auths(**{key: entry("hub", "pw")})
    assert find_credentials(text, "docker.io/library/busybox") == Credentials("hub", "pw")


def test_url_keys_match_by_host() -> None:
    text = auths(**{"https://registry.example.com:5000/v2/": entry("u", "p")})
    assert find_credentials(text, "registry.example.com:5000/a/b") == Credentials("u", "p")
    assert find_credentials(text, "registry.example.com/a/b") is None


def test_exact_keys_beat_normalised_ones() -> None:
    text = auths(
        **{"https://index.docker.io/v1/": entry("old", "1"), "docker.io": entry("new", "2")}
    )
    assert find_credentials(text, "docker.io/library/x").username == "new"  # type: ignore[union-attr]


def test_legacy_dockercfg() -> None:
    text = json.dumps({"https://index.docker.io/v1/": {"auth": b64("old:pw"), "email": "x@y"}})
    found = find_credentials(text, "docker.io/library/busybox", legacy_format=True)
    assert found == Credentials("old", "pw")
    # the legacy format knows registries only: a key's path is ignored
    ns = json.dumps({"quay.io/team": {"auth": b64("a:b")}})
    assert find_credentials(ns, "quay.io/other/app", legacy_format=True) == Credentials("a", "b")


def test_identity_token_and_odd_entries() -> None:
    text = auths(
        **{
            "a.example": {"auth": b64("u:p"), "identitytoken": "tok"},
            "b.example": {"identitytoken": "only"},
            "c.example": {},  # docker leaves these when a credential helper holds the secret
            "d.example": {"auth": b64("no-colon")},
            "e.example": {"auth": "!!!not base64"},
            "f.example": {"auth": b64("u:p:with:colons\x00\x00")},
            "g.example": "junk",
        }
    )
    assert find_credentials(text, "a.example/x") == Credentials("u", "p", "tok")
    assert find_credentials(text, "b.example/x") == Credentials("", "", "only")
    for host in ("c", "d", "e", "g"):
        assert find_credentials(text, f"{host}.example/x") is None
    assert find_credentials(text, "f.example/x") == Credentials("u", "p:with:colons")


def test_files_without_auths() -> None:
    assert find_credentials("", "quay.io/x") is None
    assert find_credentials("{}", "quay.io/x") is None
    assert find_credentials('{"credsStore": "desktop"}', "quay.io/x") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "invalid JSON"), ("[]", "not a JSON object"), ('{"auths": []}', '"auths" is not')],
)
def test_broken_files_are_named(text: str, message: str) -> None:
    with pytest.raises(RlError, match=message) as info:
        find_credentials(text, "quay.io/x", where="/run/user/1/containers/auth.json")
    assert info.value.message.startswith("/run/user/1/containers/auth.json: ")


def test_credential_helpers() -> None:
    text = json.dumps({"credHelpers": {"gcr.io": "gcloud"}, "credsStore": "desktop"})
    assert credential_helper(text, "gcr.io") == "gcloud"
    assert credential_helper(text, "quay.io") == "desktop"
    assert credential_helper("{}", "quay.io") is None
    assert credential_helper("not json", "quay.io") is None


# --- login keys and edits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "key"),
    [
        ("quay.io", "quay.io"),
        ("localhost:5000", "localhost:5000"),
        ("https://quay.io/v1/", "quay.io"),
        ("http://localhost:5000", "localhost:5000"),
        ("quay.io/team", "quay.io/team"),
        ("quay.io/team/app", "quay.io/team/app"),
        ("docker.io/team", "docker.io/team"),  # not library/-expanded
    ],
)
def test_normalize_login_key(argument: str, key: str) -> None:
    assert normalize_login_key(argument) == key


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("quay.io/foo:tag", 'reference "quay.io/foo:tag" contains tag or digest'),
        ("quay.io/Foo", "repository name must be lowercase"),
        ("/x", "empty host"),
        ("https://", "no host"),
    ],
)
def test_normalize_login_key_rejects(argument: str, message: str) -> None:
    with pytest.raises(RlError) as info:
        normalize_login_key(argument)
    assert message in info.value.message


def test_add_credentials_keeps_everything_else() -> None:
    original = json.dumps(
        {"auths": {"quay.io": entry("old", "1")}, "credHelpers": {"gcr.io": "gcloud"}}
    )
    new = add_credentials(original, "quay.io", "new", "p@ss:word")
    doc = json.loads(new)
    assert doc["credHelpers"] == {"gcr.io": "gcloud"}
    assert find_credentials(new, "quay.io/x") == Credentials("new", "p@ss:word")
    added = add_credentials(new, "localhost:5000", "u", "p")
    assert set(json.loads(added)["auths"]) == {"quay.io", "localhost:5000"}
    # podman's layout: tab-indented, no trailing newline
    assert added.startswith('{\n\t"auths": {\n\t\t"quay.io"')


def test_add_to_missing_or_empty_file() -> None:
    for text in (None, "", "  \n"):
        assert json.loads(add_credentials(text, "r", "u", "p")) == {"auths": {"r": entry("u", "p")}}


def test_remove_credentials() -> None:
    text = auths(**{"quay.io": entry("u", "p"), "quay.io/team": entry("t", "p")})
    left = remove_credentials(text, "quay.io/team")
    assert json.loads(left) == {"auths": {"quay.io": entry("u", "p")}}
    with pytest.raises(RlError) as info:
        remove_credentials(left, "quay.io/ns")
    assert info.value.message == "not logged into quay.io/ns"
    with pytest.raises(RlError, match=r"not logged into quay\.io"):
        remove_credentials(None, "quay.io")
    assert json.loads(remove_all_credentials(text)) == {"auths": {}}


def test_edits_refuse_broken_files() -> None:
    with pytest.raises(RlError, match="not valid JSON"):
        add_credentials("{", "r", "u", "p")
    with pytest.raises(RlError, match='no "auths" object'):
        remove_credentials('{"auths": 1}', "r")


# --- the I/O shell ------------------------------------------------------------------------


def test_write_is_private_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "containers" / "auth.json"
    write_auth_file(target, add_credentials(None, "r", "u", "p"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    write_auth_file(target, add_credentials(target.read_text(), "s", "u", "p"))
    assert set(json.loads(target.read_text())["auths"]) == {"r", "s"}
    assert os.listdir(target.parent) == ["auth.json"]  # no temp files left


def test_lookup_walks_the_files_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, home = tmp_path / "run", tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    assert authfile.lookup_credentials("quay.io/x") is None
    write_auth_file(home / ".docker/config.json", auths(**{"quay.io": entry("docker", "1")}))
    assert authfile.lookup_credentials("quay.io/x") == Credentials("docker", "1")
    write_auth_file(runtime / "containers/auth.json", auths(**{"quay.io": entry("podman", "2")}))
    assert authfile.lookup_credentials("quay.io/x") == Credentials("podman", "2")
    explicit = tmp_path / "explicit.json"
    write_auth_file(explicit, "{}")
    assert authfile.lookup_credentials("quay.io/x", str(explicit)) is None
    assert authfile.read_auth_file(explicit) == "{}"
    assert authfile.read_auth_file(tmp_path / "missing.json") is None
