"""resolv.conf: the host's resolvers for the DNS forwarder, and the container's own file.

The forwarder runs in the host's namespaces, so it can use every resolver the host lists,
including a local stub such as systemd-resolved's 127.0.0.53 that the container could never
reach. Parsing follows glibc's resolver: keywords at the start of a line, `#` or `;` comments,
at most three name servers (MAXNS), the last `search`/`domain` line wins, `options` accumulate,
and no usable name server means 127.0.0.1.
"""

from __future__ import annotations

import socket

from netns._record import Record

MAXNS = 3
DNS_PORT = 53
DEFAULT_NAMESERVER = "127.0.0.1"

Resolver = tuple[str, int]


class ResolvConf(Record):
    __slots__ = ("nameservers", "options", "search")

    def __init__(
        self,
        nameservers: tuple[str, ...] = (),
        search: tuple[str, ...] = (),
        options: tuple[str, ...] = (),
    ) -> None:
        self.nameservers = nameservers
        self.search = search
        self.options = options


def _valid_address(text: str) -> bool:
    address = text.split("%", 1)[0]  # IPv6 link-local addresses may carry a zone
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, address)
        except OSError:
            continue
        return family == socket.AF_INET6 or "%" not in text
    return False


def parse_resolv_conf(text: str) -> ResolvConf:
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        if line[:1] in ("#", ";"):
            continue
        words = line.split()
        if not words:
            continue
        keyword, args = words[0], words[1:]
        if keyword == "nameserver" and args:
            if len(nameservers) < MAXNS and _valid_address(args[0]):
                nameservers.append(args[0])
        elif keyword == "domain" and args:
            search = [args[0]]
        elif keyword == "search":
            search = [word for word in args if word[:1] not in ("#", ";")]
        elif keyword == "options":
            options.extend(word for word in args if word[:1] not in ("#", ";"))
    return ResolvConf(tuple(nameservers), tuple(search), tuple(options))


def host_resolvers(conf: ResolvConf, port: int = DNS_PORT) -> list[Resolver]:
    """Where the forwarder sends the container's queries, in order of preference."""
    return [(server, port) for server in conf.nameservers or (DEFAULT_NAMESERVER,)]


def container_resolv_conf(conf: ResolvConf, dns_address: str) -> str:
    """The container's resolv.conf: the host's search list and options, and the stack's DNS
    address as the only name server (the forwarder reaches the host's real ones)."""
    lines = []
    if conf.search:
        lines.append("search " + " ".join(conf.search))
    lines.append(f"nameserver {dns_address}")
    if conf.options:
        lines.append("options " + " ".join(conf.options))
    return "\n".join(lines) + "\n"


def read_resolv_conf(path: str = "/etc/resolv.conf") -> ResolvConf:
    """The parsed file; a missing or unreadable file reads as empty (glibc's behaviour)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return parse_resolv_conf(file.read())
    except OSError:
        return ResolvConf()
