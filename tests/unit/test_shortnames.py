"""registries.conf parsing and merging, short-name resolution, and per-registry settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.registry.reference import Reference, parse
from rootless.registry.shortnames import (
    Mirror,
    PullSource,
    RegistriesConfig,
    RegistryEntry,
    alias_cache_path,
    config_paths,
    find_registry,
    is_insecure_registry,
    load_registries_config,
    parse_registries_conf,
    record_alias,
    registry_for,
    resolve_short_name,
)

FEDORA = """
unqualified-search-registries = [
  "registry.fedoraproject.org", "registry.access.redhat.com", "docker.io", "quay.io"
]
short-name-mode = "enforcing"
"""

SHORTNAMES = """
[aliases]
  # containers
  "podman" = "quay.io/podman/stable"
  "alpine" = "docker.io/library/alpine"
  "fedora" = "registry.fedoraproject.org/fedora"
  "team/app" = "quay.io/team/app"
"""


def conf(*texts: str) -> RegistriesConfig:
    return parse_registries_conf((f"/etc/file{i}.conf", t) for i, t in enumerate(texts))


def strs(refs: tuple[Reference, ...]) -> list[str]:
    return [str(r) for r in refs]


# --- parsing ------------------------------------------------------------------------------


def test_empty_configuration() -> None:
    config = conf("")
    assert config == RegistriesConfig(sources=("/etc/file0.conf",))
    assert config.short_name_mode == "permissive"


def test_v2_file() -> None:
    config = conf(
        FEDORA
        + """
[[registry]]
prefix = "example.com/foo"
location = "mirror.internal/foo/"
insecure = true

[[registry.mirror]]
location = "m1.internal"
insecure = true

[[registry.mirror]]
location = "m2.internal/x"
pull-from-mirror = "digest-only"

[[registry]]
location = "blocked.example.com"
blocked = true
"""
    )
    assert config.unqualified_search_registries == (
        "registry.fedoraproject.org",
        "registry.access.redhat.com",
        "docker.io",
        "quay.io",
    )
    assert config.search_origin == "/etc/file0.conf"
    assert config.short_name_mode == "enforcing"
    assert config.registries == (
        RegistryEntry(
            "blocked.example.com", "blocked.example.com", blocked=True, origin="/etc/file0.conf"
        ),
        RegistryEntry(
            "example.com/foo",
            "mirror.internal/foo",
            insecure=True,
            mirrors=(Mirror("m1.internal", True), Mirror("m2.internal/x", False, "digest-only")),
            origin="/etc/file0.conf",
        ),
    )


def test_v1_file() -> None:
    config = conf(
        """
[registries.search]
registries = ["docker.io", "quay.io"]
[registries.insecure]
registries = ["localhost:5000"]
[registries.block]
registries = ["evil.example"]
"""
    )
    assert config.unqualified_search_registries == ("docker.io", "quay.io")
    assert [(r.location, r.insecure, r.blocked) for r in config.registries] == [
        ("evil.example", False, True),
        ("localhost:5000", True, False),
    ]


def test_drop_ins_merge() -> None:
    config = conf(
        FEDORA + '[[registry]]\nlocation = "a.example"\ninsecure = true\n',
        SHORTNAMES,
        'unqualified-search-registries = ["quay.io"]\n'
        '[[registry]]\nlocation = "a.example"\nblocked = true\n'
        '[aliases]\n"podman" = "docker.io/mine/podman"\n"fedora" = ""\n',
        'short-name-mode = "disabled"',
    )
    assert config.unqualified_search_registries == ("quay.io",)
    assert config.search_origin == "/etc/file2.conf"
    assert config.short_name_mode == "disabled"
    # same prefix: the drop-in's entry replaces the earlier one entirely
    assert [(r.prefix, r.insecure, r.blocked) for r in config.registries] == [
        ("a.example", False, True)
    ]
    assert str(config.alias("podman").target) == "docker.io/mine/podman"  # type: ignore[union-attr]
    assert config.alias("fedora") is None  # an empty value removes it
    assert config.alias("alpine").origin == "/etc/file1.conf"  # type: ignore[union-attr]
    assert config.sources == tuple(f"/etc/file{i}.conf" for i in range(4))


def test_empty_search_list_in_a_drop_in_clears_it() -> None:
    config = conf(FEDORA, "unqualified-search-registries = []")
    assert config.unqualified_search_registries == ()
    assert config.search_origin == "/etc/file1.conf"


def test_first_entry_for_a_prefix_wins_within_a_file() -> None:
    config = conf(
        '[[registry]]\nlocation = "a.example"\n'
        '[[registry]]\nprefix = "a.example"\nlocation = "b.example"\n'
    )
    assert [(r.prefix, r.location) for r in config.registries] == [("a.example", "a.example")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is not toml", "invalid TOML"),
        ('short-name-mode = "strict"', 'invalid short-name mode: "strict"'),
        ('unqualified-search-registries = "docker.io"', "must be a list of strings"),
        ('unqualified-search-registries = ["https://docker.io"]', "URI schemes are not supported"),
        ('unqualified-search-registries = ["not a host"]', "invalid unqualified-search-registries"),
        ("[[registry]]\ninsecure = true", "both location and prefix are unset"),
        (
            '[[registry]]\nprefix = "a.example/x"',
            "location is unset and prefix is not in the format",
        ),
        ('[[registry]]\nlocation = "https://a.example"', "URI schemes are not supported"),
        ('[[registry]]\nlocation = "a"\ninsecure = "yes"', "insecure must be true or false"),
        (
            '[[registry]]\nlocation = "a"\npull-from-mirror = "all"',
            "must not be set for a non-mirror",
        ),
        (
            '[[registry]]\nlocation = "a"\n[[registry.mirror]]\ninsecure = true',
            "mirror location is unset",
        ),
        (
            '[[registry]]\nlocation = "a"\n'
            '[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "some"',
            "unsupported pull-from-mirror value 'some'",
        ),
        (
            '[[registry]]\nlocation = "a"\nmirror-by-digest-only = true\n'
            '[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "all"',
            "cannot set mirror usage mirror-by-digest-only",
        ),
        (
            '[[registry]]\nprefix = "x.example"\nlocation = "a"\ninsecure = true\n'
            '[[registry]]\nprefix = "y.example"\nlocation = "a"\n',
            "defined multiple times with conflicting 'insecure' setting",
        ),
        ('[[registry]]\nprefix = "*.a/b"', "a wildcard prefix is *.domain"),
        (
            '[registries.search]\nregistries = ["a"]\n[[registry]]\nlocation = "b"',
            "mixing sysregistry v1/v2",
        ),
        ('[aliases]\n"busybox:1" = "docker.io/library/busybox"', "must not contain tag"),
        ('[aliases]\n"quay.io/x" = "quay.io/x"', "must not contain registry"),
        ('[aliases]\n"Busybox" = "docker.io/library/busybox"', "cannot parse short name"),
        ('[aliases]\n"busybox" = "busybox"', "must contain registry and repository"),
        ('[aliases]\n"busybox" = "docker.io/library/busybox:1"', "must not contain tag"),
        (
            '[aliases]\n"busybox" = "docker.io/library/busybox@sha256:' + "a" * 64 + '"',
            "must not contain digest",
        ),
        ('[aliases]\n"busybox" = 5', "must be a string"),
    ],
)
def test_invalid_files(text: str, message: str) -> None:
    with pytest.raises(RlError) as info:
        conf(text)
    assert info.value.message.startswith('loading registries configuration "/etc/file0.conf": ')
    assert message in info.value.message


# --- resolution ---------------------------------------------------------------------------


def test_fully_qualified_names_need_no_resolution() -> None:
    res = resolve_short_name("quay.io/podman/stable", conf(FEDORA), tty=False)
    assert strs(res.candidates) == ["quay.io/podman/stable:latest"]
    assert res.rationale == "fully-qualified"
    res = resolve_short_name("docker.io/busybox@sha256:" + "a" * 64, conf(""), tty=False)
    assert strs(res.candidates) == ["docker.io/library/busybox@sha256:" + "a" * 64]


def test_alias_is_the_only_candidate() -> None:
    config = conf(FEDORA, SHORTNAMES)
    res = resolve_short_name("podman", config, tty=False)
    assert strs(res.candidates) == ["quay.io/podman/stable:latest"]
    assert (res.rationale, res.origin, res.short_name, res.needs_prompt) == (
        "alias",
        "/etc/file1.conf",
        "podman",
        False,
    )
    assert strs(resolve_short_name("alpine:3.18", config, tty=False).candidates) == [
        "docker.io/library/alpine:3.18"
    ]
    digest = "sha256:" + "b" * 64
    assert strs(resolve_short_name(f"team/app:1@{digest}", config, tty=True).candidates) == [
        f"quay.io/team/app:1@{digest}"
    ]


def test_aliases_match_what_the_user_wrote() -> None:
    config = conf('unqualified-search-registries = ["quay.io"]', SHORTNAMES)
    # "library/alpine" is not the alias "alpine"
    res = resolve_short_name("library/alpine", config, tty=False)
    assert strs(res.candidates) == ["quay.io/library/alpine:latest"]


def test_alias_cache_wins_over_configuration() -> None:
    config = parse_registries_conf(
        [("/etc/containers/registries.conf", SHORTNAMES)],
        (
            "/home/u/.cache/containers/short-name-aliases.conf",
            '[aliases]\n"podman" = "docker.io/my/podman"\n',
        ),
    )
    res = resolve_short_name("podman", config, tty=False)
    assert strs(res.candidates) == ["docker.io/my/podman:latest"]
    assert res.origin == "/home/u/.cache/containers/short-name-aliases.conf"


def test_search_registries_in_order() -> None:
    config = conf(FEDORA.replace("enforcing", "permissive"))
    res = resolve_short_name("busybox:1.36", config, tty=False)
    assert strs(res.candidates) == [
        "registry.fedoraproject.org/busybox:1.36",
        "registry.access.redhat.com/busybox:1.36",
        "docker.io/library/busybox:1.36",
        "quay.io/busybox:1.36",
    ]
    assert (res.rationale, res.origin, res.needs_prompt) == (
        "search-registries",
        "/etc/file0.conf",
        False,
    )
    assert (
        strs(resolve_short_name("team/app", config, tty=False).candidates)[2]
        == "docker.io/team/app:latest"
    )


def test_enforcing_with_a_tty_asks() -> None:
    res = resolve_short_name("busybox", conf(FEDORA), tty=True)
    assert res.needs_prompt and len(res.candidates) == 4


def test_enforcing_without_a_tty_fails_listing_candidates() -> None:
    with pytest.raises(RlError) as info:
        resolve_short_name("busybox", conf(FEDORA), tty=False)
    assert info.value.message == (
        "short-name resolution enforced but cannot prompt without a TTY: "
        '"busybox" could be any of registry.fedoraproject.org/busybox:latest, '
        "registry.access.redhat.com/busybox:latest, docker.io/library/busybox:latest, "
        "quay.io/busybox:latest; use a fully qualified name"
    )


def test_permissive_with_a_tty_asks_and_without_tries_all() -> None:
    config = conf(FEDORA.replace("enforcing", "permissive"))
    assert resolve_short_name("busybox", config, tty=True).needs_prompt
    res = resolve_short_name("busybox", config, tty=False)
    assert not res.needs_prompt and len(res.candidates) == 4


def test_disabled_never_asks() -> None:
    config = conf(FEDORA.replace("enforcing", "disabled"))
    for tty in (True, False):
        res = resolve_short_name("busybox", config, tty=tty)
        assert not res.needs_prompt and len(res.candidates) == 4


def test_a_single_search_registry_is_not_ambiguous() -> None:
    config = conf('unqualified-search-registries = ["docker.io"]\nshort-name-mode = "enforcing"')
    res = resolve_short_name("busybox", config, tty=False)
    assert strs(res.candidates) == ["docker.io/library/busybox:latest"] and not res.needs_prompt


def test_no_search_registries() -> None:
    with pytest.raises(RlError) as info:
        resolve_short_name("busybox", conf(""), tty=False)
    assert info.value.message == (
        'short-name "busybox" did not resolve to an alias and no containers-registries.conf(5) '
        "was found"
    )
    with pytest.raises(RlError) as info:
        resolve_short_name("busybox:1", conf("unqualified-search-registries = []"), tty=True)
    assert info.value.message == (
        'short-name "busybox:1" did not resolve to an alias and no unqualified-search '
        'registries are defined in "/etc/file0.conf"'
    )


def test_resolution_refuses_bad_names() -> None:
    with pytest.raises(RlError, match="repository name must be lowercase"):
        resolve_short_name("BusyBox", conf(FEDORA), tty=False)


def test_record_alias() -> None:
    text = record_alias(None, "busybox", parse("docker.io/library/busybox:1"))
    assert text == '[aliases]\n  "busybox" = "docker.io/library/busybox"\n'
    text = record_alias(text, "app", parse("quay.io/team/app"))
    config = parse_registries_conf([], ("/cache", text))
    assert str(config.alias("app").target) == "quay.io/team/app"  # type: ignore[union-attr]
    assert str(config.alias("busybox").target) == "docker.io/library/busybox"  # type: ignore[union-attr]


# --- per-registry settings ----------------------------------------------------------------

REGISTRIES = """
[[registry]]
prefix = "example.com"
location = "example.com"
insecure = true

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"
mirror-by-digest-only = true
[[registry.mirror]]
location = "digest-mirror.example.com/foo"

[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000/hub"
insecure = true
[[registry.mirror]]
location = "tags.mirror.local"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "digests.mirror.local"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "*.blocked.example"
blocked = true

[[registry]]
location = "localhost:5000"
insecure = true
"""


@pytest.mark.parametrize(
    ("ref", "prefix"),
    [
        ("example.com/a", "example.com"),
        ("example.com/foo", "example.com/foo"),
        ("example.com/foo/bar:1", "example.com/foo"),
        ("example.com/foobar", "example.com"),
        ("example.com:5000/a", "example.com"),  # containers/image's documented quirk
        ("sub.example.com/a", None),
        ("docker.io/library/busybox", "docker.io"),
        ("a.blocked.example/x", "*.blocked.example"),
        ("a.b.blocked.example:5000/x", "*.blocked.example"),
        ("blocked.example/x", None),
        ("localhost:5000/x", "localhost:5000"),
        ("localhost/x", None),
    ],
)
def test_longest_prefix_match(ref: str, prefix: str | None) -> None:
    found = find_registry(parse(ref), conf(REGISTRIES))
    assert (found.prefix if found else None) == prefix


def test_location_rewrite() -> None:
    access = registry_for(parse("example.com/foo/app:1"), conf(REGISTRIES))
    assert str(access.reference) == "internal.example.com/bar/app:1"
    assert not access.insecure and not access.blocked
    # mirror-by-digest-only: no mirrors for a tag
    assert access.pull_sources() == [PullSource(parse("internal.example.com/bar/app:1"), False)]
    digest = "sha256:" + "c" * 64
    digested = registry_for(parse(f"example.com/foo/app@{digest}"), conf(REGISTRIES))
    assert [str(s.reference) for s in digested.pull_sources()] == [
        f"digest-mirror.example.com/foo/app@{digest}",
        f"internal.example.com/bar/app@{digest}",
    ]


def test_mirrors_by_tag_and_digest() -> None:
    config = conf(REGISTRIES)
    tagged = registry_for(parse("docker.io/library/busybox:1"), config).pull_sources()
    assert [(str(s.reference), s.insecure, s.is_mirror) for s in tagged] == [
        ("mirror.local:5000/hub/library/busybox:1", True, True),
        ("tags.mirror.local/library/busybox:1", False, True),
        ("docker.io/library/busybox:1", False, False),
    ]
    digest = "sha256:" + "d" * 64
    digested = registry_for(parse(f"docker.io/library/busybox@{digest}"), config).pull_sources()
    assert [str(s.reference) for s in digested] == [
        f"mirror.local:5000/hub/library/busybox@{digest}",
        f"digests.mirror.local/library/busybox@{digest}",
        f"docker.io/library/busybox@{digest}",
    ]


def test_wildcard_prefix_with_a_location_rewrites_the_host() -> None:
    config = conf(
        '[[registry]]\nprefix = "*.corp.example"\nlocation = "proxy.example/corp"\n'
        '[[registry.mirror]]\nlocation = "m.example/c"\n'
    )
    access = registry_for(parse("eu.corp.example/team/app:1"), config)
    assert str(access.reference) == "proxy.example/corp/team/app:1"
    assert [str(s.reference) for s in access.pull_sources()] == [
        "m.example/c/team/app:1",
        "proxy.example/corp/team/app:1",
    ]


def test_blocked_and_insecure() -> None:
    config = conf(REGISTRIES)
    access = registry_for(parse("x.blocked.example/app"), config)
    assert access.blocked and str(access.reference) == "x.blocked.example/app"
    with pytest.raises(RlError, match=r"registry x.blocked.example is blocked in /etc/file0.conf"):
        access.pull_sources()
    assert registry_for(parse("example.com/a"), config).insecure
    assert is_insecure_registry("localhost:5000", config)
    assert is_insecure_registry("example.com", config)
    assert not is_insecure_registry("quay.io", config)
    assert not is_insecure_registry("localhost", config)


def test_unconfigured_registry_is_used_as_is() -> None:
    access = registry_for(parse("quay.io/a/b:1"), conf(REGISTRIES))
    assert access.entry is None and access.pull_sources() == [
        PullSource(parse("quay.io/a/b:1"), False)
    ]
    with pytest.raises(RlError, match="must be resolved"):
        registry_for(parse("busybox"), conf(REGISTRIES))


# --- the loader ---------------------------------------------------------------------------


def test_config_paths(tmp_path: Path) -> None:
    system_dir = Path("/etc/containers/registries.conf.d")
    user_dir = tmp_path / ".config/containers/registries.conf.d"
    assert config_paths({}, tmp_path) == (
        Path("/etc/containers/registries.conf"),
        [system_dir, user_dir],
    )
    assert config_paths({"CONTAINERS_REGISTRIES_CONF": "/x.conf"}, tmp_path) == (
        Path("/x.conf"),
        [system_dir, user_dir],
    )
    user_file = tmp_path / ".config/containers/registries.conf"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("")
    # the user's file replaces the system file and the system drop-ins
    assert config_paths({}, tmp_path) == (user_file, [user_dir])


def test_alias_cache_path() -> None:
    home = Path("/home/u")
    assert alias_cache_path({}, home, 1000) == home / ".cache/containers/short-name-aliases.conf"
    assert alias_cache_path({"XDG_CACHE_HOME": "/c"}, home, 1000) == Path(
        "/c/containers/short-name-aliases.conf"
    )
    assert alias_cache_path({}, home, 0) == Path("/var/cache/containers/short-name-aliases.conf")


def test_load_user_configuration(tmp_path: Path) -> None:
    conf_dir = tmp_path / ".config/containers"
    (conf_dir / "registries.conf.d").mkdir(parents=True)
    (conf_dir / "registries.conf").write_text(FEDORA)
    (conf_dir / "registries.conf.d/10-b.conf").write_text('[aliases]\n"x" = "quay.io/b/x"\n')
    (conf_dir / "registries.conf.d/05-a.conf").write_text('[aliases]\n"x" = "quay.io/a/x"\n')
    (conf_dir / "registries.conf.d/ignored.txt").write_text("not toml at all")
    cache = tmp_path / ".cache/containers/short-name-aliases.conf"
    cache.parent.mkdir(parents=True)
    cache.write_text('[aliases]\n"y" = "quay.io/cached/y"\n')
    env = {"HOME": str(tmp_path)}
    config = load_registries_config(env, tmp_path, uid=1000)
    assert config.sources == (
        str(conf_dir / "registries.conf"),
        str(conf_dir / "registries.conf.d/05-a.conf"),
        str(conf_dir / "registries.conf.d/10-b.conf"),
    )
    assert str(config.alias("x").target) == "quay.io/b/x"  # type: ignore[union-attr]
    assert str(config.alias("y").target) == "quay.io/cached/y"  # type: ignore[union-attr]
    assert config.short_name_mode == "enforcing"


def test_load_with_override_and_missing_files(tmp_path: Path) -> None:
    env = {"CONTAINERS_REGISTRIES_CONF": str(tmp_path / "missing.conf"), "HOME": str(tmp_path)}
    config = load_registries_config(env, tmp_path)
    # only the system drop-ins (if this machine has any) were read
    assert all(s.startswith("/etc/containers/registries.conf.d/") for s in config.sources)
