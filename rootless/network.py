"""A container's user-mode network (`--network slirp4netns`): rl's side of netns/.

When the container's network namespace exists (the executor's on_netns hook, before the
container's command starts), the TAP device is created and configured in it (`tap_settings`)
and a `netns.driver.NetDriver` serves it (`driver_for`). Who hosts the driver:
- a detached container's monitor, in its watcher's selector loop (no extra process);
- a foreground `rl run`: `serve_in_child` forks a small process that serves the driver
  until the TAP device goes away with the container's namespace (or rl dies).
"""

from __future__ import annotations

import os

# The detached container's watcher (rootless.monitor.watch) imports this module: no `typing`
# at run time (~1.6 MB per process); every use below is an annotation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from netns.driver import NetDriver


def uses_stack(config: Mapping[str, Any]) -> bool:
    """Does a container with this record config get rl's network stack?"""
    return config.get("network") == "slirp4netns"


def ipv6_enabled(options: Mapping[str, str]) -> bool:
    """IPv6 unless slirp4netns:enable_ipv6=false: on by default, as in podman 4.x
    (containers.conf: "enable_ipv6=true|false: Enable IPv6. Default is true."). Its only
    address is a unique local one (fd00::100), which RFC 6724 address selection ranks below
    IPv4 for global destinations (glibc's getaddrinfo in a container lists a name's A address
    before its AAAA one, checked); a connection the host cannot make is refused (RST) as soon
    as the host's own connect fails, not left to time out."""
    return options.get("enable_ipv6") != "false"


def ipv6_required(options: Mapping[str, str]) -> bool:
    """Only an explicit enable_ipv6=true makes a namespace without IPv6 an error; by default
    the container then starts with IPv4 only (netns.tap.TapSettings.ipv6_optional)."""
    return options.get("enable_ipv6") == "true"


def host_ipv6_available(
    has_if_inet6: bool, inherit_init_net: str | None, default_disabled: str | None
) -> bool:
    """Can a new network namespace here have IPv6, from the host's /proc/net/if_inet6 (absent:
    booted with ipv6.disable=1, or no IPv6 in the kernel), net.core.devconf_inherit_init_net
    and net.ipv6.conf.default.disable_ipv6 (only inherited with devconf_inherit_init_net 1 or
    3; 0 and 2 give new namespaces the kernel's defaults: enabled)?"""
    if not has_if_inet6:
        return False
    inherited = (inherit_init_net or "0").strip() in ("1", "3")
    return not (inherited and (default_disabled or "0").strip() == "1")


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None


def _host_ipv6_available() -> bool:
    return host_ipv6_available(
        os.path.exists("/proc/net/if_inet6"),
        _read("/proc/sys/net/core/devconf_inherit_init_net"),
        _read("/proc/sys/net/ipv6/conf/default/disable_ipv6"),
    )


def ipv6_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """inspect's NetworkSettings IPv6 fields for a container with this record config ({} when
    it has no IPv6). By default a host without IPv6 gives containers none (tap_settings)."""
    options = config.get("network_options") or {}
    if not uses_stack(config) or not ipv6_enabled(options):
        return {}
    if not ipv6_required(options) and not _host_ipv6_available():
        return {}
    from netns.config import CONTAINER_ADDRESS6, GATEWAY_ADDRESS6, PREFIX_LENGTH6

    return {
        "GlobalIPv6Address": CONTAINER_ADDRESS6,
        "GlobalIPv6PrefixLen": PREFIX_LENGTH6,
        "IPv6Gateway": GATEWAY_ADDRESS6,
    }


def _config(options: Mapping[str, str]) -> Any:
    """The stack's netns.config.NetConfig for these slirp4netns options."""
    from netns.config import NetConfig

    return NetConfig(
        ipv6=ipv6_enabled(options),
        allow_host_loopback=options.get("allow_host_loopback") == "true",
        mtu=int(options.get("mtu") or 65520),
        # One container's buffers count against its memory budget.
        max_buffered_bytes=16 << 20,
    )


def tap_settings(options: Mapping[str, str]) -> Any:
    """How the container's TAP device is configured (netns.tap.TapSettings) for these options."""
    from netns.tap import TapSettings

    # By default, where the kernel refuses IPv6 in the container's namespace, it gets IPv4
    # only: no check beforehand (the refused address request is the check, at no extra cost).
    return TapSettings(
        mtu=int(options.get("mtu") or 65520),
        ipv6=ipv6_enabled(options),
        ipv6_optional=not ipv6_required(options),
    )


def _open_tap(keeper_pid: int, options: Mapping[str, str]) -> int:
    from netns.tap import open_tap_in

    return open_tap_in(keeper_pid, tap_settings(options))


def upstream_resolvers(environ: Mapping[str, str]) -> list[tuple[str, int]] | None:
    """RL_DNS_UPSTREAM="IP[:PORT],…" sends the DNS forwarder's queries there instead of to
    the nameservers of the host's /etc/resolv.conf (None: those)."""
    text = environ.get("RL_DNS_UPSTREAM", "").strip()
    if not text:
        return None
    resolvers = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or "]" in port or (host.count(":") and not host.startswith("[")):
            host, port = item.strip(), "53"
        resolvers.append((host.strip("[]"), int(port)))
    return resolvers


def driver_for(tap_fd: int, options: Mapping[str, str]) -> NetDriver:
    """The driver serving the TAP device `tap_fd` (not yet registered with a selector)."""
    from netns.driver import NetDriver

    return NetDriver(tap_fd, _config(options), resolvers=upstream_resolvers(os.environ))


def parse_ports(specs: list[str]) -> list[Any]:
    """-p values as netns PortMappings; RlError with podman's message for a bad one."""
    from netns.ports import PortSpecError, parse_publish
    from rootless.errors import RlError

    try:
        return [parse_publish(spec) for spec in specs]
    except PortSpecError as exc:
        raise RlError(str(exc)) from None


def publish(keeper_pid: int, specs: list[str]) -> Any:
    """Bind the host ports of `specs` and start the dialer in the container's network
    namespace: a netns.ports.PortPublisher (not yet registered). OSError (PublishError
    with the cause: port taken, privileged port) when a port cannot be bound."""
    from netns.ports import PortPublisher, PublishError
    from rootless.errors import RlError

    try:
        return PortPublisher(parse_ports(specs), pid=keeper_pid)
    except PublishError as exc:  # its message says what to do
        raise RlError(exc.strerror or str(exc)) from None


def bound_ports(publisher: Any) -> list[dict[str, Any]]:
    """What `rl port`, ps and inspect show: the ports actually bound."""
    return [
        {"host_ip": m.host_ip, "host_port": m.host_port, "container_port": m.container_port,
         "protocol": m.protocol, "range": 1}
        for m in publisher.bound
    ]  # fmt: skip


def serve_in_child(
    keeper_pid: int, options: Mapping[str, str], ports: list[str]
) -> tuple[int, list[dict[str, Any]]]:
    """Foreground runs: a child process serves the container's network (and its published
    ports); (its pid, the ports bound). It ends when the TAP device goes (the namespace died
    with the container) or when rl dies. OSError when the TAP or a port cannot be set up."""
    import json
    import signal

    tap_fd = _open_tap(keeper_pid, options)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            import selectors

            from rootless import syscalls as sc
            from rootless.errors import RlError
            from rootless.runtime.process import reset_signals

            os.close(report_r)
            reset_signals()
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(0)
            os.setpgid(0, 0)  # ^C on rl's terminal is not for us
            sc.set_process_name("rl-network")
            try:
                publisher = publish(keeper_pid, ports) if ports else None
            except (OSError, RlError) as exc:
                message = exc.message if isinstance(exc, RlError) else exc.strerror or str(exc)
                os.write(report_w, json.dumps({"error": message}).encode())
                os._exit(1)
            bound = bound_ports(publisher) if publisher is not None else []
            os.write(report_w, json.dumps({"ports": bound}).encode())
            os.close(report_w)
            driver = driver_for(tap_fd, options)
            with selectors.DefaultSelector() as selector:
                driver.register(selector)
                if publisher is not None:
                    publisher.register(selector)
                while not driver.finished:
                    timeouts = [driver.select_timeout()]
                    if publisher is not None:
                        timeouts.append(publisher.select_timeout())
                    timeout = min((t for t in timeouts if t is not None), default=None)
                    for key, mask in selector.select(timeout):
                        key.data(mask)
                    driver.run_timers()
                    if publisher is not None:
                        publisher.run_timers()
                if publisher is not None:
                    publisher.close()
                driver.close()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(tap_fd)
    os.close(report_w)
    try:
        with os.fdopen(report_r, "rb") as report:
            answer = json.loads(report.read() or b"{}")
    except ValueError:
        answer = {}
    if "ports" not in answer:
        from rootless.errors import RlError

        os.waitpid(pid, 0)
        raise RlError(answer.get("error") or "the container's network process ended at once")
    return pid, answer["ports"]
