"""slirp's addressing conventions and the stack's resource limits."""

from __future__ import annotations

from netns._record import Record
from netns.ipv6 import parse_ip6
from netns.packets import parse_ip

# The addresses slirp4netns (and podman) give a container by default.
NETWORK = "10.0.2.0"
PREFIX_LENGTH = 24
CONTAINER_ADDRESS = "10.0.2.100"
GATEWAY_ADDRESS = "10.0.2.2"
DNS_ADDRESS = "10.0.2.3"
MTU = 65520
# A locally administered unicast MAC (bit 1 of the first octet set, bit 0 clear), like slirp's.
GATEWAY_MAC = bytes.fromhex("5255 0a00 0202".replace(" ", ""))
DNS_PORT = 53
# slirp4netns --enable-ipv6: the container's network is fd00::/64, the gateway (the host, its
# loopback only when allowed) fd00::2, the DNS forwarder fd00::3. rl configures the container's
# address statically (tap.py), as fd00::100 like slirp4netns' SLAAC-less examples.
NETWORK6 = "fd00::"
PREFIX_LENGTH6 = 64
CONTAINER_ADDRESS6 = "fd00::100"
GATEWAY_ADDRESS6 = "fd00::2"
DNS_ADDRESS6 = "fd00::3"
# The gateway's link-local address (slirp's): neighbour solicitations to the container come
# from it.
GATEWAY_LINK_LOCAL6 = "fe80::2"


class NetConfig(Record):
    """Everything the sans-IO stack needs to know about one container's network."""

    __slots__ = (
        "allow_host_loopback",
        "checksum_offload",
        "container_ip",
        "container_ip6",
        "dns_ip",
        "dns_ip6",
        "dns_upstream",
        "gateway_ip",
        "gateway_ip6",
        "gateway_link_local6",
        "gateway_mac",
        "ipv6",
        "max_buffered_bytes",
        "max_flows",
        "mtu",
        "network",
        "network6",
        "ping_flow_timeout",
        "prefix_length",
        "tcp_receive_buffer",
        "tcp_send_buffer",
        "tcp_time_wait",
        "udp_flow_timeout",
        "verify_checksums",
    )

    def __init__(
        self,
        container_ip: bytes = parse_ip(CONTAINER_ADDRESS),
        gateway_ip: bytes = parse_ip(GATEWAY_ADDRESS),
        dns_ip: bytes = parse_ip(DNS_ADDRESS),
        network: bytes = parse_ip(NETWORK),
        prefix_length: int = PREFIX_LENGTH,
        mtu: int = MTU,
        gateway_mac: bytes = GATEWAY_MAC,
        allow_host_loopback: bool = False,
        dns_upstream: str | None = None,
        max_flows: int = 1024,
        max_buffered_bytes: int = 64 << 20,
        tcp_receive_buffer: int = 1 << 20,
        tcp_send_buffer: int = 1 << 20,
        udp_flow_timeout: float = 60.0,
        tcp_time_wait: float = 30.0,
        verify_checksums: bool = False,
        checksum_offload: bool = False,
        ipv6: bool = False,
        container_ip6: bytes = parse_ip6(CONTAINER_ADDRESS6),
        gateway_ip6: bytes = parse_ip6(GATEWAY_ADDRESS6),
        dns_ip6: bytes = parse_ip6(DNS_ADDRESS6),
        gateway_link_local6: bytes = parse_ip6(GATEWAY_LINK_LOCAL6),
        network6: bytes = parse_ip6(NETWORK6),
        ping_flow_timeout: float = 30.0,
    ) -> None:
        self.container_ip = container_ip
        self.gateway_ip = gateway_ip
        self.dns_ip = dns_ip
        self.network = network
        self.prefix_length = prefix_length
        self.mtu = mtu
        self.gateway_mac = gateway_mac
        # Connections to the gateway address reach the host's loopback only when this is set
        # (slirp4netns --disable-host-loopback is podman's default, so off by default).
        self.allow_host_loopback = allow_host_loopback
        # Where TCP connections to the DNS address, port 53, go (the host's resolver, from
        # resolv.conf); None refuses them. UDP queries are handed to the driver as DnsQuery
        # instead.
        self.dns_upstream = dns_upstream
        self.max_flows = max_flows  # TCP connections + UDP flows per container
        self.max_buffered_bytes = max_buffered_bytes  # all TCP buffers of the container together
        self.tcp_receive_buffer = tcp_receive_buffer  # per connection, container -> host
        self.tcp_send_buffer = tcp_send_buffer  # per connection, host -> container
        self.udp_flow_timeout = udp_flow_timeout
        self.tcp_time_wait = tcp_time_wait
        # TCP, UDP and ICMP checksums of the container's frames. Off: frames read from a TAP
        # device (without offloads) carry checksums the container's kernel computed, nothing on
        # the way can corrupt them, and a hostile container computes valid ones anyway, while
        # verifying a 64 KiB segment in Python costs more than everything else the stack does
        # with it (measured: 42% of the time). The IPv4 header checksum is always verified.
        self.verify_checksums = verify_checksums
        # TCP segments to the container leave their checksum to its kernel (SendFrame's
        # partial_checksum): the driver sets this when the TAP device takes virtio-net headers.
        self.checksum_offload = checksum_offload
        # IPv6 (slirp4netns' enable_ipv6): off, the container's IPv6 frames are ignored.
        self.ipv6 = ipv6
        self.container_ip6 = container_ip6
        self.gateway_ip6 = gateway_ip6
        self.dns_ip6 = dns_ip6
        self.gateway_link_local6 = gateway_link_local6
        self.network6 = network6  # a /64
        # ICMP echo forwarded through the host's ICMP sockets: idle flows are forgotten.
        self.ping_flow_timeout = ping_flow_timeout

    def in_network(self, address: bytes) -> bool:
        mask = (0xFFFFFFFF << (32 - self.prefix_length)) & 0xFFFFFFFF
        return int.from_bytes(address, "big") & mask == int.from_bytes(self.network, "big") & mask

    def in_network6(self, address: bytes) -> bool:
        return address[:8] == self.network6[:8]

    @property
    def broadcast_ip(self) -> bytes:
        host_bits = (1 << (32 - self.prefix_length)) - 1
        return (int.from_bytes(self.network, "big") | host_bits).to_bytes(4, "big")
