"""registries.conf and short-name resolution, as containers/image does them.

Configuration (containers-registries.conf(5), v2 TOML; v1 tables are read too):
- the main file: `$CONTAINERS_REGISTRIES_CONF`, else `~/.config/containers/registries.conf`
  when it exists (it *replaces* the system file), else `/etc/containers/registries.conf`;
- drop-ins `*.conf`, in name order, from `/etc/containers/registries.conf.d/` (not when the
  user file replaced the system one) and then `~/.config/containers/registries.conf.d/`.
  A drop-in that sets a key replaces it; `[[registry]]` entries replace those with the same
  prefix; `[aliases]` merge (an empty value removes an alias);
- the alias cache `~/.cache/containers/short-name-aliases.conf`, where answers to the
  interactive prompt are recorded; it wins over the configuration's aliases.

Resolution of a short name (`busybox`, `team/app:1`): an alias gives the only candidate;
otherwise each unqualified-search registry gives one, in order. Several candidates need the
user to choose (a TTY prompt) unless short-name-mode is permissive (try them all, no TTY) or
disabled (try them all, never prompt); enforcing without a TTY is an error.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from rootless.errors import RlError
from rootless.registry.reference import (
    Reference,
    is_valid_domain,
    looks_like_domain,
    parse,
    parse_normalized,
)

ShortNameMode = Literal["enforcing", "permissive", "disabled"]
SHORT_NAME_MODES: tuple[ShortNameMode, ...] = ("enforcing", "permissive", "disabled")
DEFAULT_SHORT_NAME_MODE: ShortNameMode = "permissive"  # containers/image's built-in default

PullFromMirror = Literal["all", "digest-only", "tag-only"]

SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
SYSTEM_REGISTRIES_CONF_D = Path("/etc/containers/registries.conf.d")


# The default of mapping fields: one shared empty mapping, read-only so no instance can
# change another's (what field(default_factory=dict) guaranteed).
EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class Mirror(NamedTuple):
    location: str
    insecure: bool = False
    pull_from_mirror: PullFromMirror | None = None


class RegistryEntry(NamedTuple):
    """One `[[registry]]` table: references under `prefix` are pulled from `location`."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()
    origin: str = ""


class Alias(NamedTuple):
    target: Reference | None  # None: an empty value that removes an earlier alias
    origin: str


class RegistriesConfig(NamedTuple):
    unqualified_search_registries: tuple[str, ...] = ()
    search_origin: str = ""  # the file that set the search list ("" when none did)
    short_name_mode: ShortNameMode = DEFAULT_SHORT_NAME_MODE
    registries: tuple[RegistryEntry, ...] = ()
    aliases: Mapping[str, Alias] = EMPTY_MAPPING
    cached_aliases: Mapping[str, Alias] = EMPTY_MAPPING
    sources: tuple[str, ...] = ()  # the files read, in order

    def alias(self, short_name: str) -> Alias | None:
        found = self.cached_aliases.get(short_name) or self.aliases.get(short_name)
        return found if found is not None and found.target is not None else None


# --- parsing -------------------------------------------------------------------------------


def _config_error(origin: str, why: str) -> RlError:
    return RlError(f'loading registries configuration "{origin}": {why}')


def parse_registries_conf(
    texts: Iterable[tuple[str, str]], alias_cache: tuple[str, str] | None = None
) -> RegistriesConfig:
    """Merge (origin, TOML text) pairs: the main file first, then drop-ins, in order.

    `alias_cache` is the (origin, text) of short-name-aliases.conf, when it exists.
    """
    config = RegistriesConfig()
    for origin, text in texts:
        config = _merge(config, _parse_one(origin, text))
    if alias_cache is not None:
        origin, text = alias_cache
        doc = _load_toml(origin, text)
        config = config._replace(cached_aliases=_aliases(origin, doc.get("aliases", {})))
    return config


class _FileConfig(NamedTuple):
    origin: str
    search: tuple[str, ...] | None
    mode: ShortNameMode | None
    registries: tuple[RegistryEntry, ...]
    aliases: dict[str, Alias]


def _load_toml(origin: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _config_error(origin, f"invalid TOML: {exc}") from None


def _parse_one(origin: str, text: str) -> _FileConfig:
    doc = _load_toml(origin, text)
    v1 = doc.get("registries")
    v2_keys = {"registry", "unqualified-search-registries", "short-name-mode", "aliases"}
    if v1 is not None and v2_keys & doc.keys():
        raise _config_error(origin, "mixing sysregistry v1/v2 is not supported")
    if v1 is not None:
        return _parse_v1(origin, v1)
    search = None
    if "unqualified-search-registries" in doc:
        search = tuple(
            _search_registry(origin, r)
            for r in _strings(origin, doc, "unqualified-search-registries")
        )
    mode = doc.get("short-name-mode") or None
    if mode is not None and mode not in SHORT_NAME_MODES:
        raise _config_error(origin, f'invalid short-name mode: "{mode}"')
    raw_registries = doc.get("registry", [])
    if not isinstance(raw_registries, list):
        raise _config_error(origin, "[[registry]] must be an array of tables")
    registries = _unique_prefixes([_registry(origin, r) for r in raw_registries])
    _check_conflicts(origin, registries)
    return _FileConfig(origin, search, mode, registries, _aliases(origin, doc.get("aliases", {})))


def _strings(origin: str, table: Mapping[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _config_error(origin, f"{key} must be a list of strings")
    return list(value)


def _parse_v1(origin: str, v1: Any) -> _FileConfig:
    if not isinstance(v1, dict):
        raise _config_error(origin, "[registries] must be a table")

    def listed(kind: str) -> list[str]:
        table = v1.get(kind, {})
        if not isinstance(table, dict):
            raise _config_error(origin, f"[registries.{kind}] must be a table")
        return [_location(origin, r) for r in _strings(origin, table, "registries")]

    search = tuple(_search_registry(origin, r) for r in listed("search"))
    insecure, blocked = set(listed("insecure")), set(listed("block"))
    registries = tuple(
        RegistryEntry(r, r, r in insecure, r in blocked, origin=origin)
        for r in sorted(insecure | blocked)
    )
    return _FileConfig(origin, search or None, None, registries, {})


def _location(origin: str, text: str) -> str:
    trimmed = text.rstrip("/")
    if trimmed.startswith(("http://", "https://")):
        raise _config_error(origin, f"invalid location {text!r}: URI schemes are not supported")
    return trimmed


def _search_registry(origin: str, text: str) -> str:
    registry = _location(origin, text)
    if not is_valid_domain(registry):
        raise _config_error(origin, f"invalid unqualified-search-registries entry {registry!r}")
    return registry


def _bool(origin: str, table: Mapping[str, Any], key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise _config_error(origin, f"{key} must be true or false")
    return value


def _pull_from_mirror(origin: str, table: Mapping[str, Any], where: str) -> PullFromMirror | None:
    value = table.get("pull-from-mirror") or None
    if value is None:
        return None
    if value not in ("all", "digest-only", "tag-only"):
        raise _config_error(origin, f"unsupported pull-from-mirror value {value!r} for {where!r}")
    result: PullFromMirror = value
    return result


def _registry(origin: str, raw: Any) -> RegistryEntry:
    if not isinstance(raw, dict):
        raise _config_error(origin, "[[registry]] entries must be tables")
    location = _location(origin, str(raw.get("location", "")))
    prefix = str(raw.get("prefix", ""))
    if not prefix:
        if not location:
            raise _config_error(origin, "invalid condition: both location and prefix are unset")
        prefix = location
    else:
        prefix = _location(origin, prefix)
        if not prefix.startswith("*.") and not location:
            raise _config_error(
                origin,
                "invalid condition: location is unset and prefix is not in the format: "
                "*.example.com",
            )
    if prefix.startswith("*.") and ("/" in prefix or "*" in prefix[2:]):
        raise _config_error(origin, f"invalid prefix {prefix!r}: a wildcard prefix is *.domain")
    if raw.get("pull-from-mirror"):
        raise _config_error(
            origin, f"pull-from-mirror must not be set for a non-mirror registry {prefix!r}"
        )
    digest_only = _bool(origin, raw, "mirror-by-digest-only")
    raw_mirrors = raw.get("mirror", [])
    if not isinstance(raw_mirrors, list):
        raise _config_error(origin, "[[registry.mirror]] must be an array of tables")
    mirrors: list[Mirror] = []
    for m in raw_mirrors:
        if not isinstance(m, dict):
            raise _config_error(origin, "[[registry.mirror]] entries must be tables")
        mirror_location = _location(origin, str(m.get("location", "")))
        if not mirror_location:
            raise _config_error(origin, "invalid condition: mirror location is unset")
        pull_from = _pull_from_mirror(origin, m, mirror_location)
        if digest_only and pull_from is not None:
            raise _config_error(
                origin,
                f"cannot set mirror usage mirror-by-digest-only for the registry ({location!r}) "
                f"and pull-from-mirror for per-mirror ({mirror_location!r}) at the same time",
            )
        mirrors.append(Mirror(mirror_location, _bool(origin, m, "insecure"), pull_from))
    return RegistryEntry(
        prefix,
        location,
        _bool(origin, raw, "insecure"),
        _bool(origin, raw, "blocked"),
        digest_only,
        tuple(mirrors),
        origin,
    )


def _unique_prefixes(entries: Sequence[RegistryEntry]) -> tuple[RegistryEntry, ...]:
    # The first entry for a prefix wins; later ones could never match.
    seen: dict[str, RegistryEntry] = {}
    for entry in entries:
        seen.setdefault(entry.prefix, entry)
    return tuple(seen.values())


def _check_conflicts(origin: str, entries: Sequence[RegistryEntry]) -> None:
    by_location: dict[str, RegistryEntry] = {}
    for entry in entries:
        other = by_location.setdefault(entry.location or entry.prefix, entry)
        for flag in ("insecure", "blocked"):
            if getattr(entry, flag) != getattr(other, flag):
                raise _config_error(
                    origin,
                    f"registry {entry.location!r} is defined multiple times with conflicting "
                    f"{flag!r} setting",
                )


def _aliases(origin: str, raw: Any) -> dict[str, Alias]:
    if not isinstance(raw, dict):
        raise _config_error(origin, "[aliases] must be a table")
    aliases: dict[str, Alias] = {}
    for name, value in raw.items():
        _check_short_name(origin, name)
        if not isinstance(value, str):
            raise _config_error(origin, f"alias {name!r} must be a string")
        aliases[name] = Alias(_alias_target(origin, value) if value else None, origin)
    return aliases


def _check_short_name(origin: str, name: str) -> None:
    try:
        ref = parse(name)
    except RlError as exc:
        raise _config_error(origin, f"cannot parse short name {name!r}: {exc}") from None
    if ref.digest is not None:
        raise _config_error(origin, f"invalid short name {name!r}: must not contain digest")
    if ref.tag is not None:
        raise _config_error(origin, f"invalid short name {name!r}: must not contain tag")
    if not ref.is_short_name:
        raise _config_error(origin, f"invalid short name {name!r}: must not contain registry")


def _alias_target(origin: str, value: str) -> Reference:
    try:
        ref = parse(value)
    except RlError as exc:
        raise _config_error(origin, f"parsing alias {value!r}: {exc}") from None
    if ref.digest is not None:
        raise _config_error(origin, f"invalid alias {value!r}: must not contain digest")
    if ref.tag is not None:
        raise _config_error(origin, f"invalid alias {value!r}: must not contain tag")
    if ref.is_short_name:
        raise _config_error(
            origin, f"invalid alias {value!r}: must contain registry and repository"
        )
    return ref


def _merge(base: RegistriesConfig, update: _FileConfig) -> RegistriesConfig:
    by_prefix = {r.prefix: r for r in base.registries}
    by_prefix.update({r.prefix: r for r in update.registries})
    return RegistriesConfig(
        unqualified_search_registries=(
            update.search if update.search is not None else base.unqualified_search_registries
        ),
        search_origin=update.origin if update.search is not None else base.search_origin,
        short_name_mode=update.mode or base.short_name_mode,
        registries=tuple(by_prefix[p] for p in sorted(by_prefix)),
        aliases={**base.aliases, **update.aliases},
        cached_aliases=base.cached_aliases,
        sources=(*base.sources, update.origin),
    )


# --- resolution -----------------------------------------------------------------------------

Rationale = Literal["fully-qualified", "alias", "search-registries"]


class Resolution(NamedTuple):
    """What to try, in order. `needs_prompt`: ask the user to pick one (a TTY is there)."""

    candidates: tuple[Reference, ...]
    rationale: Rationale
    origin: str = ""  # the file with the alias or the search list
    short_name: str = ""  # the name as the user wrote it, without tag/digest
    needs_prompt: bool = False


def resolve_short_name(name: str | Reference, config: RegistriesConfig, *, tty: bool) -> Resolution:
    ref = parse(name) if isinstance(name, str) else name
    if not ref.is_short_name:
        return Resolution((ref.with_default_tag(),), "fully-qualified")
    short = ref.path
    alias = config.alias(short)
    if alias is not None and alias.target is not None:
        target = alias.target._replace(tag=ref.tag, digest=ref.digest).with_default_tag()
        return Resolution((target,), "alias", alias.origin, short)
    shown = str(name)
    if not config.unqualified_search_registries:
        if config.search_origin:
            raise RlError(
                f'short-name "{shown}" did not resolve to an alias and no unqualified-search '
                f'registries are defined in "{config.search_origin}"'
            )
        raise RlError(
            f'short-name "{shown}" did not resolve to an alias and no '
            "containers-registries.conf(5) was found"
        )
    candidates = tuple(
        parse_normalized(f"{registry}/{ref}").with_default_tag()
        for registry in config.unqualified_search_registries
    )
    resolution = Resolution(candidates, "search-registries", config.search_origin, short)
    if config.short_name_mode == "disabled" or len(candidates) == 1:
        return resolution
    if tty:
        return resolution._replace(needs_prompt=True)
    if config.short_name_mode == "permissive":
        return resolution
    listed = ", ".join(str(c) for c in candidates)
    raise RlError(
        "short-name resolution enforced but cannot prompt without a TTY: "
        f'"{shown}" could be any of {listed}; use a fully qualified name'
    )


def record_alias(cache_text: str | None, short_name: str, target: Reference) -> str:
    """The alias cache's new text with `short_name = target` (the user's answer to a prompt)."""
    doc = tomllib.loads(cache_text) if cache_text else {}
    aliases = dict(doc.get("aliases", {}))
    aliases[short_name] = str(target._replace(tag=None, digest=None))
    lines = ["[aliases]"] + [f'  "{k}" = "{v}"' for k, v in sorted(aliases.items())]
    return "\n".join(lines) + "\n"


# --- registries: rewrites, mirrors, insecure, blocked --------------------------------------


def _prefix_match_length(name: str, prefix: str) -> int:
    """How much of `name` (a reference string) `prefix` covers, or -1.

    `quay.io/team` covers `quay.io/team/app:1` but not `quay.io/teamwork`; `*.example.com`
    covers any subdomain's references.
    """
    if prefix.startswith("*."):
        suffix = prefix[1:]
        index = name.find(suffix)
        if index == -1 or "/" in name[:index]:
            return -1
        end = index + len(suffix)
        return end if end == len(name) or name[end] in ":/@" else -1
    if name == prefix:
        return len(prefix)
    if name.startswith(prefix) and name[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def find_registry(reference: Reference, config: RegistriesConfig) -> RegistryEntry | None:
    """The `[[registry]]` with the longest prefix matching the reference, if any."""
    text = str(reference)
    best: RegistryEntry | None = None
    best_length = -1
    for entry in config.registries:
        length = _prefix_match_length(text, entry.prefix)
        if length > best_length:
            best, best_length = entry, length
    return best


class PullSource(NamedTuple):
    reference: Reference
    insecure: bool
    is_mirror: bool = False


class RegistryAccess(NamedTuple):
    """How to reach a reference's registry under registries.conf."""

    reference: Reference  # after any `location` rewrite
    insecure: bool
    blocked: bool
    mirrors: tuple[PullSource, ...]
    entry: RegistryEntry | None

    def pull_sources(self) -> list[PullSource]:
        """Mirrors first (those that apply to a tag or digest pull), then the registry."""
        if self.blocked:
            origin = self.entry.origin if self.entry else "registries.conf"
            raise RlError(
                f"registry {self.reference.domain} is blocked in {origin}; "
                "remove `blocked = true` there to pull from it"
            )
        return [*self.mirrors, PullSource(self.reference, self.insecure)]


def _rewrite(reference: Reference, prefix: str, location: str) -> Reference:
    """What follows the matched prefix, appended to `location` (no location: unchanged)."""
    if not location:
        return reference
    text = str(reference)
    return parse(location + text[_prefix_match_length(text, prefix) :]).qualified()


def registry_for(reference: Reference, config: RegistriesConfig) -> RegistryAccess:
    """Location rewrite, mirrors, insecure and blocked for a fully qualified reference."""
    if reference.is_short_name:
        raise RlError(f"internal error: {reference} must be resolved before registry lookup")
    entry = find_registry(reference, config)
    if entry is None:
        return RegistryAccess(reference, False, False, (), None)
    digested = reference.digest is not None
    mirrors: list[PullSource] = []
    for mirror in entry.mirrors:
        if entry.mirror_by_digest_only and not digested:
            continue
        if mirror.pull_from_mirror == "digest-only" and not digested:
            continue
        if mirror.pull_from_mirror == "tag-only" and digested:
            continue
        mirrored = _rewrite(reference, entry.prefix, mirror.location)
        mirrors.append(PullSource(mirrored, mirror.insecure, is_mirror=True))
    return RegistryAccess(
        _rewrite(reference, entry.prefix, entry.location),
        entry.insecure,
        entry.blocked,
        tuple(mirrors),
        entry,
    )


def is_insecure_registry(domain: str, config: RegistriesConfig) -> bool:
    """`insecure = true` for this host (plain HTTP or unverified TLS allowed)."""
    entry = find_registry(parse(f"{domain}/x"), config) if looks_like_domain(domain) else None
    return bool(entry and entry.insecure)


# --- the loader (I/O) ------------------------------------------------------------------------


def config_paths(env: Mapping[str, str], home: Path) -> tuple[Path, list[Path]]:
    """The main registries.conf and the drop-in directories, in containers/image's order."""
    user_file = home / ".config/containers/registries.conf"
    user_dir = home / ".config/containers/registries.conf.d"
    override = env.get("CONTAINERS_REGISTRIES_CONF")
    if override:
        return Path(override), [SYSTEM_REGISTRIES_CONF_D, user_dir]
    if user_file.exists():
        return user_file, [user_dir]
    return SYSTEM_REGISTRIES_CONF, [SYSTEM_REGISTRIES_CONF_D, user_dir]


def alias_cache_path(env: Mapping[str, str], home: Path, uid: int) -> Path:
    if uid == 0:
        return Path("/var/cache/containers/short-name-aliases.conf")
    cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    return cache / "containers/short-name-aliases.conf"


def load_registries_config(
    env: Mapping[str, str] | None = None, home: Path | None = None, uid: int | None = None
) -> RegistriesConfig:
    env = os.environ if env is None else env
    home = home or Path(env.get("HOME") or os.path.expanduser("~"))
    main, dirs = config_paths(env, home)
    files = [main]
    for directory in dirs:
        try:
            files += sorted(p for p in directory.iterdir() if p.suffix == ".conf" and p.is_file())
        except (FileNotFoundError, NotADirectoryError):
            continue
    texts = [(str(p), text) for p in files if (text := _read(p)) is not None]
    cache_file = alias_cache_path(env, home, os.getuid() if uid is None else uid)
    cache_text = _read(cache_file)
    cache = (str(cache_file), cache_text) if cache_text is not None else None
    return parse_registries_conf(texts, cache)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RlError(f"reading {path}: {exc.strerror}") from None
