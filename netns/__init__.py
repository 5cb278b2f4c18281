"""netns: slirp-style user-mode networking (see DESIGN.md).

Sans-IO core (no sockets; everything takes `now` and returns actions):

- `netns.packets`: Ethernet II, ARP, IPv4, ICMP, UDP and TCP codecs; parsers raise only
  `ParseError`.
- `netns.ipv6`: IPv6 (extension headers skipped, fragments dropped), ICMPv6 and neighbour
  discovery codecs.
- `netns.reassembly`: IPv4 fragment reassembly with limits and timeouts.
- `netns.config`: slirp's addresses (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3, MTU 65520)
  and per-container limits (`NetConfig`).
- `netns.tcp`: the stack's end of one container TCP connection (`TcpConnection`).
- `netns.sendbuffer`: its send buffer, which lends segments views of the host's bytes
  (`SendBuffer`), and reused memory for host sockets to receive into (`RecvArena`).
- `netns.fastpath`: zero-copy parsing of established IPv4/IPv6 TCP frames.
- `netns.stack`: the per-container demultiplexer (`Stack`) a driver feeds with TAP frames and
  host socket events.
- `netns.resolvconf`: resolv.conf parsing (the host's resolvers, the container's file).
- `netns._record`: the value-object base the codecs use instead of dataclasses (import cost).

I/O shells (standard library `selectors`, for the per-container monitor's loop):

- `netns.tap`: the TAP device, created inside the container's network namespace (rtnetlink
  configuration, `open_tap_in(pid)` passes its fd out).
- `netns.driver`: `NetDriver`, which runs a `Stack` over the TAP fd and host sockets.
- `netns.ping`: echo requests beyond the gateway through unprivileged ICMP sockets
  (`PingRelay`, which the driver delegates to; the echo codecs are pure).
- `netns.ports`: port publishing: `parse_publish` (podman's `-p` syntax, pure),
  `NamespaceDialer` (a pool of sockets made in the container's netns by short-lived makers,
  connected on demand)
  and `PortPublisher` (host listeners, os.splice for TCP, a relay for UDP).
"""
