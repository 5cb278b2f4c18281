"""Unit files of `rl generate systemd` (pure: values in, text out).

The units follow `podman generate systemd` (4.3) key for key where that makes sense for rl:

- without --new the unit starts and stops an existing container. `rl start` returns once the
  container runs and leaves its monitor (rl's conmon) behind, so the unit is Type=forking
  with PIDFile= naming the pid file the monitor writes when the container runs (like
  podman's conmon.pid): systemd then follows the monitor, whose life is the container's.
- with --new the unit creates a fresh container each start from the command line that made
  the original (`config["create_command"]`), as `rl run --rm --sdnotify=conmon -d --replace
  --name NAME …`; it is Type=notify with NotifyAccess=all, and the monitor sends
  MAINPID=<its pid> and READY=1 once the container runs. The container always gets a name
  (the original's when it had none given), so ExecStop/ExecStopPost find it by name
  instead of podman's --cidfile.

KillMode=mixed (as Quadlet uses): on stop systemd sends SIGTERM to the monitor only, which
stops the container with its StopSignal, and SIGKILL to everything left after the timeout.
Delegate=yes (as Quadlet's units have it): rl may make the container's cgroup below the
service's own, which systemd then leaves alone; rl must not move into a scope of its own
there, or systemd loses the monitor (MAINPID and notifications must come from the unit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SYSTEMD_RESTART_POLICIES = (
    "no",
    "on-success",
    "on-failure",
    "on-abnormal",
    "on-watchdog",
    "on-abort",
    "always",
)
DEFAULT_RESTART_POLICY = "on-failure"
# podman: TimeoutStopSec is the container's stop timeout plus this much for the cleanup.
STOP_TIMEOUT_EXTRA = 60
# Global rl options that take a value (as rootless.cli.main knows them).
GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--log-level", "--root", "--storage-driver"})
# Flags of the original command line that the --new unit sets itself (or that conflict with
# --rm, like --restart, whose policy becomes systemd's Restart=).
DROPPED_RUN_FLAGS = frozenset(
    {"-d", "--detach", "--rm", "--replace", "--sdnotify", "--restart", "--cidfile"}
)
LINE_WIDTH = 80


class Raw(str):
    """An Exec argument written as is: it holds systemd specifiers (%t, %n) on purpose."""


@dataclass(frozen=True)
class GenerateOptions:
    new: bool = False
    use_name: bool = False
    restart_policy: str | None = None  # None: from the container's --restart, else on-failure
    restart_sec: int | None = None
    stop_timeout: int | None = None  # None: the container's --stop-timeout
    container_prefix: str = "container"
    separator: str = "-"
    header: bool = True
    start_timeout: int | None = None
    env: Sequence[str] = ()  # extra Environment= assignments
    after: Sequence[str] = ()
    wants: Sequence[str] = ()
    requires: Sequence[str] = ()


@dataclass(frozen=True)
class ContainerInfo:
    """What a unit needs to know of one container."""

    id: str
    name: str
    stop_timeout: int = 10
    restart: str = "no"  # rl's --restart policy
    create_command: Sequence[str] | None = None
    pidfile: str = ""
    requires_mounts: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Unit:
    name: str  # with ".service"
    text: str

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".service")


class UnitError(ValueError):
    """The unit cannot be made (the CLI turns it into an RlError)."""


# --- escaping ----------------------------------------------------------------------------

_NEEDS_QUOTES = set(" \t\n\"'\\;")


def escape_arg(arg: str) -> str:
    """One word of an Exec line: specifiers (%) and variables ($) escaped, quoted when it
    holds spaces, quotes or backslashes (systemd.service(5), "Command lines")."""
    if isinstance(arg, Raw):
        return quote_word(arg)
    return quote_word(arg.replace("%", "%%").replace("$", "$$"))


def quote_word(text: str) -> str:
    """`text` as one word of a systemd command line (specifiers and variables left alone)."""
    if text and not (set(text) & _NEEDS_QUOTES):
        return text
    inner = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    inner = inner.replace("\t", "\\t")
    return f'"{inner}"'


def exec_line(argv: Sequence[str], head: int = 2) -> str:
    """An Exec value. A long one is broken as podman breaks its lines: the first `head`
    words (program, verb) on the first line, then each flag on a line of its own with its
    value and the positional words that follow it."""
    words = [escape_arg(a) for a in argv]
    single = " ".join(words)
    if len(single) <= LINE_WIDTH or len(words) <= head:
        return single
    lines = [" ".join(words[:head])]
    for index in range(head, len(words)):
        if argv[index].startswith("-"):
            lines.append(words[index])
        else:
            lines[-1] += " " + words[index]
    return " \\\n\t".join(lines)


# --- the restart policy ------------------------------------------------------------------


def check_restart_policy(policy: str) -> str:
    if policy not in SYSTEMD_RESTART_POLICIES:
        raise UnitError(f"{policy} is not a valid restart policy")
    return policy


def systemd_restart(rl_policy: str) -> str:
    """systemd's Restart= for a container's own --restart policy."""
    name = rl_policy.split(":", 1)[0]
    if name in ("always", "unless-stopped"):
        return "always"
    return DEFAULT_RESTART_POLICY


# --- the --new command line --------------------------------------------------------------


@dataclass(frozen=True)
class CommandLine:
    """A `rl [globals] run|create [flags] IMAGE [ARGS]` command line, taken apart."""

    program: str
    globals: list[str]
    flags: list[list[str]]  # each flag with its value (one or two words)
    rest: list[str]  # image and command


def split_command(argv: Sequence[str], value_flags: Iterable[str]) -> CommandLine:
    """Take a recorded `rl run`/`rl create` command line apart. `value_flags` are the run
    flags that take a value (from the parser), short and long."""
    values = set(value_flags)
    if not argv:
        raise UnitError("the container's create command is empty")
    i = 1
    globals_: list[str] = []
    while i < len(argv) and argv[i].startswith("-"):
        globals_.append(argv[i])
        if argv[i] in GLOBAL_OPTIONS_WITH_VALUE and i + 1 < len(argv):
            globals_.append(argv[i + 1])
            i += 1
        i += 1
    if i < len(argv) and argv[i] == "container":
        i += 1
    if i >= len(argv) or argv[i] not in ("run", "create"):
        raise UnitError(f"not a run or create command: {' '.join(argv)}")
    i += 1
    flags: list[list[str]] = []
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        if word.startswith("--"):
            if "=" not in word and word in values and i + 1 < len(argv):
                flags.append([word, argv[i + 1]])
                i += 2
                continue
            flags.append([word])
            i += 1
            continue
        # A short flag, or a cluster of them (-dit), maybe with its value attached (-eA=b).
        cluster = word[1:]
        for j, char in enumerate(cluster):
            short = "-" + char
            if short in values:
                if j + 1 < len(cluster):
                    flags.append([short, cluster[j + 1 :]])
                elif i + 1 < len(argv):
                    flags.append([short, argv[i + 1]])
                    i += 1
                else:
                    flags.append([short])
                break
            flags.append([short])
        i += 1
    return CommandLine(argv[0], globals_, flags, list(argv[i:]))


def _flag_name(flag: list[str]) -> str:
    return flag[0].split("=", 1)[0]


def _has_flag(flags: Iterable[list[str]], *names: str) -> bool:
    return any(_flag_name(f) in names for f in flags)


def new_run_command(
    create_command: Sequence[str],
    value_flags: Iterable[str],
    *,
    rl: Sequence[str],
    name: str,
) -> list[str]:
    """The ExecStart of a --new unit: the original run/create command as `rl run --rm
    --sdnotify=conmon -d --replace …`, named (`name` when it had no --name), with `rl` (the
    executable and the store's global options) in front. Global options of the original
    are kept except --root, which `rl` decides."""
    line = split_command(create_command, value_flags)
    kept_globals: list[str] = []
    words = iter(line.globals)
    for word in words:
        if word == "--root":
            next(words, None)
        elif not word.startswith("--root="):
            kept_globals.append(word)
    flags = [f for f in line.flags if _flag_name(f) not in DROPPED_RUN_FLAGS]
    argv = [*rl, *kept_globals, "run", "--rm", "--sdnotify=conmon", "-d", "--replace"]
    if not _has_flag(flags, "--name"):
        argv += ["--name", name]
    for flag in flags:
        argv += flag
    rest = line.rest
    if rest and rest[0].startswith("-"):
        argv.append("--")  # the image (or a command word) looks like a flag: keep it apart
    return argv + rest


# --- the unit ----------------------------------------------------------------------------


def unit_name(info: ContainerInfo, options: GenerateOptions) -> str:
    ident = info.name if options.use_name else info.id
    prefix = options.container_prefix
    base = f"{prefix}{options.separator}{ident}" if prefix else ident
    return base + ".service"


def container_unit(
    info: ContainerInfo,
    options: GenerateOptions,
    *,
    rl: Sequence[str],
    value_flags: Iterable[str] = (),
    version: str = "",
    now: str = "",
) -> Unit:
    """The unit of one container. `rl` is the rl executable with the global options that
    name the container's store (e.g. [/usr/local/bin/rl, --root, /x])."""
    name = unit_name(info, options)
    timeout = info.stop_timeout if options.stop_timeout is None else options.stop_timeout
    if options.restart_policy is not None:
        restart = check_restart_policy(options.restart_policy)
    else:
        restart = systemd_restart(info.restart)
    ref = info.name if options.use_name else info.id
    if options.new:
        ref = info.name
    lines: list[str] = []
    if options.header:
        lines += [f"# {name}", f"# autogenerated by rl {version}".rstrip(), f"# {now}".rstrip()]
        lines.append("")
    else:
        lines += [f"# {name}", ""]
    lines += ["[Unit]", f"Description=rl {name}"]
    lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [f"After={v}" for v in options.after]
    lines += [f"Wants={v}" for v in options.wants]
    lines += [f"Requires={v}" for v in options.requires]
    if info.requires_mounts:
        lines.append("RequiresMountsFor=" + " ".join(escape_arg(p) for p in info.requires_mounts))
    environment = " ".join(["PODMAN_SYSTEMD_UNIT=%n", *(escape_arg(e) for e in options.env)])
    lines += ["", "[Service]", f"Environment={environment}", f"Restart={restart}"]
    if options.restart_sec:
        lines.append(f"RestartSec={options.restart_sec}")
    if options.start_timeout:
        lines.append(f"TimeoutStartSec={options.start_timeout}")
    lines.append(f"TimeoutStopSec={timeout + STOP_TIMEOUT_EXTRA}")
    if options.new:
        if not info.create_command:
            raise UnitError(
                f"container {info.name} has no record of the command that created it (made "
                "by an older rl): recreate it, or generate the unit without --new"
            )
        start = new_run_command(info.create_command, value_flags, rl=rl, name=info.name)
        lines.append("ExecStart=" + exec_line(start, len(rl) + 1))
        lines.append(
            "ExecStop=" + exec_line([*rl, "stop", "--ignore", "-t", str(timeout), ref], len(rl) + 1)
        )
        lines.append(
            "ExecStopPost="
            + exec_line([*rl, "rm", "-f", "--ignore", "-t", str(timeout), ref], len(rl) + 1)
        )
        lines += ["KillMode=mixed", "Delegate=yes", "Type=notify", "NotifyAccess=all"]
    else:
        lines.append("ExecStart=" + exec_line([*rl, "start", ref], len(rl) + 1))
        lines.append("ExecStop=" + exec_line([*rl, "stop", "-t", str(timeout), ref], len(rl) + 1))
        lines.append(
            "ExecStopPost=" + exec_line([*rl, "stop", "-t", str(timeout), ref], len(rl) + 1)
        )
        lines.append("PIDFile=" + escape_arg(info.pidfile))
        lines += ["KillMode=mixed", "Delegate=yes", "Type=forking"]
    lines += ["", "[Install]", "WantedBy=default.target", ""]
    return Unit(name, "\n".join(lines))


# --- reading units (for tests and for comparing with podman's) ---------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order; continuation lines joined, comments dropped.
    (The full parser with systemd's rules is rootless.systemd.quadlet.parse_unit_file.)"""
    from rootless.systemd.quadlet import parse_unit_file

    return {s.name: list(s.entries) for s in parse_unit_file(text).sections}
