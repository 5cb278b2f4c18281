"""The files podman generates for a container, rendered from values. Pure.

Shapes as podman 4.3 writes them here (compared on this machine):
- /etc/hosts: the host's entries, then `host.containers.internal`, then the container's own
  hostname and name on 127.0.0.1 (no own entry with --network host);
- /etc/hostname: the hostname, without a newline;
- /etc/resolv.conf: only with a network (with --network none podman leaves the image's file):
  the host's file, minus loopback nameservers when the container has its own network
  namespace (they would point at the container itself), falling back to public resolvers;
- /run/.containerenv: empty, except with --privileged, where it names the engine, the
  container and its image.
"""

from __future__ import annotations

HOST_GATEWAY = "192.0.2.2"  # what podman 4.3 writes for host.containers.internal
SLIRP_ADDRESS = "10.0.2.100"
SLIRP_DNS = "10.0.2.3"
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def host_entries(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            entries.append((fields[0], fields[1:]))
    return entries


def hosts_file(
    host_hosts: str,
    *,
    hostname: str,
    name: str,
    own_netns: bool,
    slirp: bool = False,
    extra: list[tuple[str, str]] | None = None,
) -> str:
    """With user-mode networking (slirp) the container's own names are on its address, as
    podman 4.3 writes them with slirp4netns (host.containers.internal stays 192.0.2.2)."""
    lines = [f"{ip}\t{' '.join(names)}" for ip, names in host_entries(host_hosts)]
    lines += [f"{address}\t{host}" for host, address in extra or []]  # --add-host
    lines.append(f"{HOST_GATEWAY}\thost.containers.internal")
    if own_netns:
        own = [hostname] + ([name] if name and name != hostname else [])
        lines.append(f"{SLIRP_ADDRESS if slirp else '127.0.0.1'}\t{' '.join(own)}")
    return "".join(line + "\n" for line in lines)


def hostname_file(hostname: str) -> str:
    return hostname


def _is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(host_text: str, *, own_netns: bool, slirp: bool = False) -> str:
    """With user-mode networking the stack's DNS forwarder (which asks the host's resolvers,
    a local stub like 127.0.0.53 included) comes first, then the host's own nameservers as
    podman 4.3 writes them with slirp4netns."""
    if not own_netns:
        return host_text
    kept: list[str] = [f"nameserver {SLIRP_DNS}"] if slirp else []
    servers = 0
    for line in host_text.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            if _is_loopback(fields[1]):
                continue
            servers += 1
        kept.append(line)
    if not servers and not slirp:
        kept += [f"nameserver {ip}" for ip in FALLBACK_NAMESERVERS]
    return "".join(line + "\n" for line in kept)


def override_resolv_conf(
    text: str, *, servers: list[str], search: list[str], options: list[str]
) -> str:
    """--dns, --dns-search, --dns-option each replace that kind of line (podman's rule)."""
    lines = text.splitlines()
    for keyword, values in (("nameserver", servers), ("search", search), ("options", options)):
        if not values:
            continue
        lines = [ln for ln in lines if ln.split()[:1] != [keyword]]
        if keyword == "nameserver":
            lines += [f"nameserver {v}" for v in values]
        else:
            lines.append(f"{keyword} {' '.join(values)}")
    return "".join(line + "\n" for line in lines)


def containerenv(
    *, privileged: bool, engine: str, name: str, container_id: str, image: str, image_id: str
) -> str:
    if not privileged:
        return ""
    return (
        f'engine="{engine}"\nname="{name}"\nid="{container_id}"\n'
        f'image="{image}"\nimageid="{image_id}"\nrootless=1\n'
    )
