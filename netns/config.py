"""slirp's addressing conventions and the stack's resource limits."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Everything the sans-IO stack needs to know about one container's network."""

    container_ip: bytes = parse_ip(CONTAINER_ADDRESS)
    gateway_ip: bytes = parse_ip(GATEWAY_ADDRESS)
    dns_ip: bytes = parse_ip(DNS_ADDRESS)
    network: bytes = parse_ip(NETWORK)
    prefix_length: int = PREFIX_LENGTH
    mtu: int = MTU
    gateway_mac: bytes = GATEWAY_MAC
    # Connections to the gateway address reach the host's loopback only when this is set
    # (slirp4netns --disable-host-loopback is podman's default, so off by default).
    allow_host_loopback: bool = False
    # Where TCP connections to the DNS address, port 53, go (the host's resolver, from
    # resolv.conf); None refuses them. UDP queries are handed to the driver as DnsQuery instead.
    dns_upstream: str | None = None
    max_flows: int = 1024  # TCP connections + UDP flows per container
    max_buffered_bytes: int = 64 << 20  # all TCP buffers of the container together
    tcp_receive_buffer: int = 1 << 20  # per connection, container -> host
    tcp_send_buffer: int = 1 << 20  # per connection, host -> container
    udp_flow_timeout: float = 60.0
    tcp_time_wait: float = 30.0

    def in_network(self, address: bytes) -> bool:
        mask = (0xFFFFFFFF << (32 - self.prefix_length)) & 0xFFFFFFFF
        return int.from_bytes(address, "big") & mask == int.from_bytes(self.network, "big") & mask

    @property
    def broadcast_ip(self) -> bytes:
        host_bits = (1 << (32 - self.prefix_length)) - 1
        return (int.from_bytes(self.network, "big") | host_bits).to_bytes(4, "big")
