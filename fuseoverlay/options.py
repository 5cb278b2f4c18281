"""fuse-overlayfs's command line (`-o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT`), parsed."""

from __future__ import annotations

from dataclasses import dataclass, field

OVERFLOW_ID = 65534
# Seconds the kernel may trust entries and attributes: only this process changes the tree
# while it is mounted, so long is safe and saves a round trip per path component.
DEFAULT_TIMEOUT = 3600.0


class OptionError(ValueError):
    pass


@dataclass(frozen=True)
class IdMap:
    """uidmapping/gidmapping: `inner:outer:count[:inner:outer:count...]`.

    Files on disk carry outer ids; the mount shows inner ones. The empty map is the identity.
    """

    ranges: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> IdMap:
        fields = text.split(":")
        if len(fields) % 3 or not all(f.isdigit() for f in fields):
            raise OptionError(f"invalid id mapping {text!r}: expected inner:outer:count[:...]")
        numbers = [int(f) for f in fields]
        return cls(
            tuple((numbers[i], numbers[i + 1], numbers[i + 2]) for i in range(0, len(numbers), 3))
        )

    def to_inner(self, outer: int) -> int:
        if not self.ranges:
            return outer
        for inner_start, outer_start, count in self.ranges:
            if outer_start <= outer < outer_start + count:
                return inner_start + outer - outer_start
        return OVERFLOW_ID

    def to_outer(self, inner: int) -> int | None:
        """None for an id the map does not cover (the caller answers EINVAL)."""
        if not self.ranges:
            return inner
        for inner_start, outer_start, count in self.ranges:
            if inner_start <= inner < inner_start + count:
                return outer_start + inner - inner_start
        return None


@dataclass(frozen=True)
class Config:
    mountpoint: str
    lowerdirs: tuple[str, ...]  # top first
    upperdir: str
    workdir: str
    uids: IdMap = IdMap()
    gids: IdMap = IdMap()
    foreground: bool = False
    debug: bool = False
    timeout: float = DEFAULT_TIMEOUT
    fuse_options: frozenset[str] = field(default_factory=frozenset)


# Options passed through to the kernel / libfuse when given; everything else unknown is ignored
# (podman passes fuse-overlayfs options this implementation has no use for).
PASSTHROUGH = {"allow_other", "allow_root", "ro", "noatime", "nodev", "nosuid", "noexec"}


def parse_args(argv: list[str]) -> Config:
    options: list[str] = []
    positional: list[str] = []
    foreground = debug = False
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            value = next(args, None)
            if value is None:
                raise OptionError("-o needs an argument")
            options.append(value)
        elif arg.startswith("-o") and len(arg) > 2:
            options.append(arg[2:])
        elif arg == "-f":
            foreground = True
        elif arg == "-d":
            debug = foreground = True
        elif arg.startswith("-") and arg != "-":
            raise OptionError(f"unknown flag {arg}")
        else:
            positional.append(arg)
    if len(positional) != 1:
        raise OptionError("expected exactly one MOUNTPOINT")
    values: dict[str, str] = {}
    flags: set[str] = set()
    for group in options:
        for item in group.split(","):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if sep:
                values[key] = value
            elif key in PASSTHROUGH:
                flags.add(key)
    lowers = tuple(d for d in values.get("lowerdir", "").split(":") if d)
    if not lowers:
        raise OptionError("lowerdir= is required")
    upper, work = values.get("upperdir"), values.get("workdir")
    if not upper or not work:
        # fuse-overlayfs allows a read-only mount without them; this implementation needs both.
        raise OptionError("upperdir= and workdir= are required")
    try:
        timeout = float(values.get("timeout", DEFAULT_TIMEOUT))
    except ValueError as exc:
        raise OptionError(f"invalid timeout {values['timeout']!r}") from exc
    return Config(
        mountpoint=positional[0],
        lowerdirs=lowers,
        upperdir=upper,
        workdir=work,
        uids=IdMap.parse(values["uidmapping"]) if values.get("uidmapping") else IdMap(),
        gids=IdMap.parse(values["gidmapping"]) if values.get("gidmapping") else IdMap(),
        foreground=foreground,
        debug=debug,
        timeout=timeout,
        fuse_options=frozenset(flags),
    )
