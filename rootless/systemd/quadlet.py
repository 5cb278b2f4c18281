"""Quadlet for rl: `.container` and `.volume` files turned into systemd user units.

podman's Quadlet (podman-systemd.unit(5)) describes a container as a unit file with a
[Container] section; a systemd generator turns it into a .service that runs the container.
This module does the same for rl: the parsing and conversion are pure (text in, unit text
out); `main` is the generator (packaging/systemd/rl-user-generator runs it), which reads the
search directories, writes the units to systemd's output directory and links the [Install]
targets' .wants/.requires, as Quadlet does. A file with an error is reported on stderr and
skipped; the others are still generated.

    foo.container -> foo.service   (rl run --name systemd-foo --replace --rm -d … IMAGE)
    bar.volume    -> bar-volume.service   (rl volume create --ignore systemd-bar)

Values keep systemd's specifiers (%h, %N…): the unit file's author wrote them for systemd.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GENERATOR_NAME = "rl-user-generator"
CONTAINER_SECTION = "Container"
VOLUME_SECTION = "Volume"

# [Container] keys: Quadlet's name -> rl run flag (one flag per value of the key).
_CONTAINER_FLAGS = {
    "EnvironmentFile": "--env-file",
    "Mount": "--mount",
    "PublishPort": "--publish",
    "Tmpfs": "--tmpfs",
    "Ulimit": "--ulimit",
}
# Keys whose last value is one flag's value.
_CONTAINER_SINGLE = {
    "HealthCmd": "--health-cmd",
    "HealthInterval": "--health-interval",
    "HealthOnFailure": "--health-on-failure",
    "HealthRetries": "--health-retries",
    "HealthStartPeriod": "--health-start-period",
    "HealthTimeout": "--health-timeout",
    "HostName": "--hostname",
    "LogDriver": "--log-driver",
    "Network": "--network",
    "Pull": "--pull",
    "StopTimeout": "--stop-timeout",
    "Timezone": "--tz",
    "UserNS": "--userns",
    "WorkingDir": "--workdir",
    "Entrypoint": "--entrypoint",
}
# Boolean keys -> the flag they add when true.
_CONTAINER_BOOLS = {
    "EnvironmentHost": ["--env-host"],
    "NoNewPrivileges": ["--security-opt", "no-new-privileges"],
    "ReadOnly": ["--read-only"],
    "RunInit": ["--init"],
}
# Keys whose value is a space-separated list, one flag per word.
_CONTAINER_LISTS = {
    "AddCapability": "--cap-add",
    "DropCapability": "--cap-drop",
    "Label": "--label",
    "Environment": "--env",
}
_CONTAINER_HANDLED = {
    "Image",
    "ContainerName",
    "Exec",
    "PodmanArgs",
    "Volume",
    "User",
    "Group",
    "Notify",
    "SeccompProfile",
    "AutoUpdate",
}
# SELinux has no meaning for rl: accepted and ignored, so files written for podman still work.
_CONTAINER_IGNORED = {
    "SecurityLabelDisable",
    "SecurityLabelFileType",
    "SecurityLabelLevel",
    "SecurityLabelType",
}
CONTAINER_KEYS = frozenset(
    set(_CONTAINER_FLAGS)
    | set(_CONTAINER_SINGLE)
    | set(_CONTAINER_BOOLS)
    | set(_CONTAINER_LISTS)
    | _CONTAINER_HANDLED
    | _CONTAINER_IGNORED
)
# Quadlet keys rl cannot honour yet: an error names them rather than running something else.
UNSUPPORTED_CONTAINER_KEYS = frozenset(
    {
        "AddDevice",
        "Annotation",
        "ExposeHostPort",
        "IP",
        "IP6",
        "Pod",
        "RemapGid",
        "RemapUid",
        "RemapUidSize",
        "RemapUsers",
        "Rootfs",
        "Secret",
        "Sysctl",
        "VolatileTmp",
    }
)
VOLUME_KEYS = frozenset({"Label", "Device", "Type", "Options", "User", "Group", "VolumeName"})
# KillMode values that work with the monitor (as Quadlet allows).
_KILL_MODES = ("mixed", "control-group")


class QuadletError(ValueError):
    """A unit file that cannot be converted (the generator skips it)."""


# --- systemd's unit file syntax ----------------------------------------------------------


@dataclass
class Section:
    name: str
    entries: list[tuple[str, str]] = field(default_factory=list)

    def values(self, key: str) -> list[str]:
        return [v for k, v in self.entries if k == key]

    def last(self, key: str) -> str | None:
        found = self.values(key)
        return found[-1] if found else None


@dataclass
class UnitFile:
    sections: list[Section] = field(default_factory=list)

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def values(self, section: str, key: str) -> list[str]:
        found = self.section(section)
        return found.values(key) if found is not None else []

    def last(self, section: str, key: str) -> str | None:
        found = self.section(section)
        return found.last(key) if found is not None else None


def parse_unit_file(text: str) -> UnitFile:
    """systemd.syntax(7): [Section] headers, Key=Value lines, # and ; comments, a trailing
    backslash continuing a line (comment lines inside a continuation are skipped). The same
    section twice is merged, as systemd does."""
    unit = UnitFile()
    current: Section | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if pending:
            if line.startswith(("#", ";")):
                continue
            line = pending + line
            pending = ""
        elif not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise QuadletError(f"line {number}: invalid section header {line!r}")
            name = line[1:-1]
            current = unit.section(name)
            if current is None:
                current = Section(name)
                unit.sections.append(current)
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise QuadletError(f"line {number}: expected Key=Value, got {line!r}")
        if current is None:
            raise QuadletError(f"line {number}: assignment outside of a section")
        current.entries.append((key.strip(), value.strip()))
    if pending:
        line = pending.rstrip()
        if current is None:
            raise QuadletError("assignment outside of a section")
        key, sep, value = line.partition("=")
        if sep:
            current.entries.append((key.strip(), value.strip()))
    return unit


_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def split_words(text: str) -> list[str]:
    """systemd's word splitting (extract_first_word with unquoting and C escapes): words
    separated by whitespace, "double" or 'single' quotes grouping, backslash escapes."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x" and _is_hex(text[i + 2 : i + 4]):
                current.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
            else:
                current.append(_C_ESCAPES.get(nxt, nxt))
                i += 2
            in_word = True
            continue
        if char == "\\":
            raise QuadletError(f"a trailing backslash in {text!r}")
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
            in_word = True
        elif char in " \t\n":
            if in_word:
                words.append("".join(current))
                current = []
                in_word = False
        else:
            current.append(char)
            in_word = True
        i += 1
    if quote:
        raise QuadletError(f"unbalanced quotes in {text!r}")
    if in_word:
        words.append("".join(current))
    return words


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def parse_bool(text: str, key: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "y", "true", "t", "on"):
        return True
    if value in ("0", "no", "n", "false", "f", "off"):
        return False
    raise QuadletError(f"invalid boolean {text!r} for key {key}")


# --- writing units -----------------------------------------------------------------------


def render_unit(sections: Sequence[Section], comment: str = "") -> str:
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    for section in sections:
        if lines:
            lines.append("")
        lines.append(f"[{section.name}]")
        lines += [f"{key}={value}" for key, value in section.entries]
    return "\n".join(lines) + "\n"


def exec_words(argv: Sequence[str]) -> str:
    from rootless.systemd.units import quote_word

    return " ".join(quote_word(a) for a in argv)


@dataclass(frozen=True)
class Generated:
    """One generated unit: its file name, text, and the targets that want/require it."""

    name: str
    text: str
    wanted_by: tuple[str, ...] = ()
    required_by: tuple[str, ...] = ()


def service_name(file_name: str) -> str:
    """foo.container -> foo.service; foo.volume -> foo-volume.service."""
    base, ext = os.path.splitext(os.path.basename(file_name))
    if ext == ".container":
        return base + ".service"
    if ext == ".volume":
        return base + "-volume.service"
    raise QuadletError(f"unsupported unit type {ext!r}: rl converts .container and .volume")


def default_volume_name(file_name: str) -> str:
    return "systemd-" + os.path.splitext(os.path.basename(file_name))[0]


def _passthrough(unit: UnitFile, own: str) -> tuple[list[Section], Section, Section]:
    """The file's sections for the unit: [Unit] and [Service] (created when missing), the
    own section renamed X-… (systemd ignores it, as with Quadlet's output), the rest as is."""
    out: list[Section] = []
    unit_section = service_section = None
    for section in unit.sections:
        copy = Section(section.name, list(section.entries))
        if section.name == own:
            copy.name = "X-" + own
        elif section.name == "Unit":
            unit_section = copy
        elif section.name == "Service":
            service_section = copy
        out.append(copy)
    if unit_section is None:
        unit_section = Section("Unit")
        out.insert(0, unit_section)
    if service_section is None:
        service_section = Section("Service")
        index = next((i for i, s in enumerate(out) if s.name == "Install"), len(out))
        out.insert(index, service_section)
    return out, unit_section, service_section


def _install_targets(unit: UnitFile) -> tuple[tuple[str, ...], tuple[str, ...]]:
    wanted = tuple(w for v in unit.values("Install", "WantedBy") for w in split_words(v))
    required = tuple(w for v in unit.values("Install", "RequiredBy") for w in split_words(v))
    return wanted, required


def _check_keys(section: Section, allowed: Iterable[str], unsupported: Iterable[str]) -> None:
    allowed_set, unsupported_set = set(allowed), set(unsupported)
    for key, _ in section.entries:
        if key in unsupported_set:
            raise QuadletError(f"key {key!r} in group {section.name!r} is not supported by rl")
        if key not in allowed_set:
            raise QuadletError(f"unsupported key {key!r} in group {section.name!r}")


def _defaults_first(service: Section, defaults: list[tuple[str, str]]) -> None:
    """The generated settings, then the author's [Service] lines (the last assignment of a
    key wins in systemd, so the author's choices override ours)."""
    service.entries[:0] = defaults


def convert_container(
    unit: UnitFile,
    file_name: str,
    *,
    rl: str = "rl",
    source_path: str = "",
    volume_names: Mapping[str, str] | None = None,
    requires_mounts: Sequence[str] = (),
) -> Generated:
    """A .container file -> its .service. `volume_names` maps the .volume files Volume=
    refers to (foo.volume) to their volume names (default systemd-foo)."""
    container = unit.section(CONTAINER_SECTION)
    if container is None:
        raise QuadletError(f"no [{CONTAINER_SECTION}] section")
    _check_keys(container, CONTAINER_KEYS, UNSUPPORTED_CONTAINER_KEYS)
    image = container.last("Image")
    if not image:
        raise QuadletError("no Image key specified")
    kill_mode = unit.last("Service", "KillMode")
    if kill_mode is not None and kill_mode not in _KILL_MODES:
        raise QuadletError(f"invalid KillMode {kill_mode!r}: use mixed or control-group")
    name = container.last("ContainerName") or "systemd-%N"
    args: list[str] = []
    notify = container.last("Notify")
    sdnotify = "container" if notify is not None and parse_bool(notify, "Notify") else "conmon"

    for key, value in container.entries:
        if key in _CONTAINER_FLAGS:
            args += [_CONTAINER_FLAGS[key], value]
        elif key in _CONTAINER_LISTS:
            args += [w for word in split_words(value) for w in (_CONTAINER_LISTS[key], word)]
    for key, flag in _CONTAINER_SINGLE.items():
        single = container.last(key)
        if single is not None:
            if key == "StopTimeout" and not single.isdigit():
                raise QuadletError(f"invalid StopTimeout {single!r}: a number of seconds")
            args += [flag, single]
    for key, flags in _CONTAINER_BOOLS.items():
        boolean = container.last(key)
        if boolean is not None and parse_bool(boolean, key):
            args += flags
    user, group = container.last("User"), container.last("Group")
    if group and not user:
        raise QuadletError("Group set without User")
    if user:
        args += ["--user", f"{user}:{group}" if group else user]
    seccomp = container.last("SeccompProfile")
    if seccomp:
        args += ["--security-opt", f"seccomp={seccomp}"]
    auto_update = container.last("AutoUpdate")
    if auto_update:
        args += ["--label", f"io.containers.autoupdate={auto_update}"]

    out, unit_section, service = _passthrough(unit, CONTAINER_SECTION)
    dependencies: list[str] = []
    for value in container.values("Volume"):
        source, sep, rest = value.partition(":")
        if sep and source.endswith(".volume"):
            volume_service = service_name(source)
            volume = (volume_names or {}).get(source) or default_volume_name(source)
            value = f"{volume}:{rest}"
            dependencies.append(volume_service)
        args += ["--volume", value]
    network = container.last("Network")
    if network and network.endswith(".network"):
        raise QuadletError(f"Network={network}: .network units are not supported by rl")
    for value in container.values("PodmanArgs"):
        args += split_words(value)
    command = [w for v in container.values("Exec") for w in split_words(v)]

    unit_defaults = [("SourcePath", source_path)] if source_path else []
    if requires_mounts:
        unit_defaults.append(("RequiresMountsFor", " ".join(requires_mounts)))
    for dependency in dependencies:
        unit_defaults += [("Requires", dependency), ("After", dependency)]
    unit_section.entries += unit_defaults

    stop_timeout = container.last("StopTimeout") or "10"
    start = [
        rl, "run", f"--name={name}", "--replace", "--rm", f"--sdnotify={sdnotify}", "-d",
        *args, image, *command,
    ]  # fmt: skip
    defaults = [
        ("Environment", "PODMAN_SYSTEMD_UNIT=%n"),
        ("KillMode", "mixed"),
        ("ExecStop", exec_words([rl, "stop", "--ignore", "-t", stop_timeout, name])),
        ("ExecStopPost", "-" + exec_words([rl, "rm", "-f", "--ignore", name])),
        ("Delegate", "yes"),
        ("Type", "notify"),
        ("NotifyAccess", "all"),
        ("SyslogIdentifier", "%N"),
        ("ExecStart", exec_words(start)),
    ]
    if "TimeoutStopSec" not in {k for k, _ in service.entries}:
        defaults.insert(2, ("TimeoutStopSec", str(int(stop_timeout) + 60)))
    _defaults_first(service, defaults)
    wanted, required = _install_targets(unit)
    text = render_unit(out, f"Automatically generated by {GENERATOR_NAME}\n")
    return Generated(service_name(file_name), text, wanted, required)


def volume_name_of(unit: UnitFile, file_name: str) -> str:
    return unit.last(VOLUME_SECTION, "VolumeName") or default_volume_name(file_name)


def convert_volume(
    unit: UnitFile,
    file_name: str,
    *,
    rl: str = "rl",
    source_path: str = "",
    requires_mounts: Sequence[str] = (),
) -> Generated:
    """A .volume file -> a oneshot service that creates the volume (if it is not there)."""
    volume = unit.section(VOLUME_SECTION)
    if volume is None:
        volume = Section(VOLUME_SECTION)  # an empty .volume file: a plain named volume
    _check_keys(volume, VOLUME_KEYS, ())
    args = [rl, "volume", "create", "--ignore"]
    options = []
    user, group = volume.last("User"), volume.last("Group")
    if user:
        options.append(f"uid={user}")
    if group:
        options.append(f"gid={group}")
    extra = volume.last("Options")
    if extra:
        options.append(extra)
    if options:
        args += ["--opt", "o=" + ",".join(options)]
    for key, opt in (("Type", "type"), ("Device", "device")):
        value = volume.last(key)
        if value:
            args += ["--opt", f"{opt}={value}"]
    for value in volume.values("Label"):
        args += [w for word in split_words(value) for w in ("--label", word)]
    args.append(volume_name_of(unit, file_name))

    sections = [s for s in unit.sections if s.name != VOLUME_SECTION]
    parsed = UnitFile([Section(s.name, list(s.entries)) for s in sections])
    parsed.sections.append(Section(VOLUME_SECTION, list(volume.entries)))
    out, unit_section, service = _passthrough(parsed, VOLUME_SECTION)
    if source_path:
        unit_section.entries.append(("SourcePath", source_path))
    if requires_mounts:
        unit_section.entries.append(("RequiresMountsFor", " ".join(requires_mounts)))
    _defaults_first(
        service,
        [
            ("ExecStart", exec_words(args)),
            ("Type", "oneshot"),
            ("RemainAfterExit", "yes"),
            ("SyslogIdentifier", "%N"),
        ],
    )
    wanted, required = _install_targets(unit)
    text = render_unit(out, f"Automatically generated by {GENERATOR_NAME}\n")
    return Generated(service_name(file_name), text, wanted, required)


# --- the generator -----------------------------------------------------------------------


def search_dirs(environ: Mapping[str, str], uid: int, home: str) -> list[Path]:
    """Where a user's Quadlet files live, the first holding a file name winning: the
    user's config dir, then /etc/containers/systemd/users/UID and …/users (podman's).
    $QUADLET_UNIT_DIRS (colon-separated) replaces them, as with podman."""
    explicit = environ.get("QUADLET_UNIT_DIRS")
    if explicit:
        return [Path(p) for p in explicit.split(":") if p]
    candidates = []
    if environ.get("XDG_CONFIG_HOME"):
        candidates.append(Path(environ["XDG_CONFIG_HOME"]) / "containers" / "systemd")
    candidates.append(Path(home) / ".config" / "containers" / "systemd")
    candidates += [
        Path("/etc/containers/systemd/users") / str(uid),
        Path("/etc/containers/systemd/users"),
    ]
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def find_unit_files(dirs: Iterable[Path]) -> dict[str, Path]:
    """File name -> path of every .container/.volume file, the first directory winning."""
    found: dict[str, Path] = {}
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.endswith((".container", ".volume")) and name not in found:
                path = directory / name
                if path.is_file():
                    found[name] = path
    return found


def generate(
    files: Mapping[str, Path], *, rl: str, requires_mounts: Sequence[str] = ()
) -> tuple[list[Generated], list[str]]:
    """Convert every file: (units, one error line per file that was skipped)."""
    parsed: dict[str, UnitFile] = {}
    errors: list[str] = []
    for name, path in files.items():
        try:
            parsed[name] = parse_unit_file(path.read_text())
        except (OSError, UnicodeDecodeError, QuadletError) as exc:
            errors.append(f'error converting "{path}", ignoring: {exc}')
    volume_names = {n: volume_name_of(u, n) for n, u in parsed.items() if n.endswith(".volume")}
    units = []
    for name, unit in parsed.items():
        path = files[name]
        try:
            if name.endswith(".volume"):
                generated = convert_volume(
                    unit, name, rl=rl, source_path=str(path), requires_mounts=requires_mounts
                )
            else:
                generated = convert_container(
                    unit,
                    name,
                    rl=rl,
                    source_path=str(path),
                    volume_names=volume_names,
                    requires_mounts=requires_mounts,
                )
        except QuadletError as exc:
            errors.append(f'error converting "{path}", ignoring: {exc}')
            continue
        units.append(generated)
    return units, errors


def write_units(units: Iterable[Generated], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for unit in units:
        target = output / unit.name
        tmp = output / f".{unit.name}.tmp"
        tmp.write_text(unit.text)
        os.replace(tmp, target)
        for kind, targets in (("wants", unit.wanted_by), ("requires", unit.required_by)):
            for wanted_by in targets:
                link_dir = output / f"{wanted_by}.{kind}"
                link_dir.mkdir(exist_ok=True)
                link = link_dir / unit.name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(Path("..") / unit.name)


def default_rl() -> str:
    """The rl next to this Python (a venv's bin), else rl on PATH."""
    import shutil

    beside = Path(sys.executable).parent / "rl"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rl") or "/usr/local/bin/rl"


def default_requires_mounts() -> list[str]:
    """rl's runtime dir as the service will see it (%t: its $XDG_RUNTIME_DIR), and the store."""
    from rootless.paths import data_dir

    return ["%t/rl", str(data_dir())]


USAGE = (
    "usage: python -m rootless.systemd.quadlet [-user] [-dryrun] [-v] [--rl PATH] "
    "OUTPUT_DIR [EARLY_DIR] [LATE_DIR]"
)


def main(argv: Sequence[str]) -> int:
    """The generator: `… quadlet [-user] [-dryrun] [-v] [--rl PATH] NORMAL [EARLY LATE]`
    (systemd runs generators with three output directories; units go to the first)."""
    rl = ""
    dryrun = verbose = False
    dirs: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-user", "--user"):
            pass  # rl is rootless: always the user's units
        elif word in ("-dryrun", "--dryrun"):
            dryrun = True
        elif word in ("-v", "--verbose"):
            verbose = True
        elif word == "--rl" and i + 1 < len(words):
            rl = words[i + 1]
            i += 1
        elif word.startswith("--rl="):
            rl = word[5:]
        elif word in ("-h", "--help"):
            print(USAGE)
            return 0
        elif word.startswith("-"):
            print(f"{GENERATOR_NAME}: unknown option {word}\n{USAGE}", file=sys.stderr)
            return 2
        else:
            dirs.append(word)
        i += 1
    if not dryrun and not dirs:
        print(f"{GENERATOR_NAME}: missing the output directory\n{USAGE}", file=sys.stderr)
        return 2
    home = os.environ.get("HOME") or os.path.expanduser("~")
    files = find_unit_files(search_dirs(os.environ, os.getuid(), home))
    units, errors = generate(
        files, rl=rl or default_rl(), requires_mounts=default_requires_mounts()
    )
    for error in errors:
        print(f"{GENERATOR_NAME}: {error}", file=sys.stderr)
    if dryrun:
        for unit in units:
            print(f"---{unit.name}---")
            print(unit.text, end="")
    else:
        write_units(units, Path(dirs[0]))
        if verbose:
            for unit in units:
                print(f"{GENERATOR_NAME}: wrote {Path(dirs[0]) / unit.name}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
