"""netns: slirp-style user-mode networking (see DESIGN.md).

Sans-IO core (no sockets, no trio; everything takes `now` and returns actions):

- `netns.packets`: Ethernet II, ARP, IPv4, ICMP, UDP and TCP codecs; parsers raise only
  `ParseError`.
- `netns.reassembly`: IPv4 fragment reassembly with limits and timeouts.
- `netns.config`: slirp's addresses (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3, MTU 65520)
  and per-container limits (`NetConfig`).
- `netns.tcp`: the stack's end of one container TCP connection (`TcpConnection`).
- `netns.stack`: the per-container demultiplexer (`Stack`) a driver feeds with TAP frames and
  host socket events.
"""
