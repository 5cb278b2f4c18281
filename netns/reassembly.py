"""IPv4 fragment reassembly (RFC 791; as in RFC 5722, overlapping fragments kill the datagram).

Sans-IO: `feed` fragments with the current time, call `expire(now)` when `next_timeout()` passes.
Limits bound the memory a hostile container can pin: datagrams in progress, fragments per
datagram, and the 64 KiB datagram size.
"""

from __future__ import annotations

import bisect

from netns.packets import IPV4_HEADER_LEN, IPv4Packet

_MAX_PAYLOAD = 0xFFFF - IPV4_HEADER_LEN

_Key = tuple[bytes, bytes, int, int]  # src, dst, protocol, identification


class _Partial:
    __slots__ = ("deadline", "first", "pieces", "total")

    def __init__(
        self,
        first: IPv4Packet,
        deadline: float,
        pieces: list[tuple[int, bytes]] | None = None,
        total: int | None = None,
    ) -> None:
        self.first = first  # the fragment at offset 0 supplies the header fields (once seen)
        self.deadline = deadline
        self.pieces = list() if pieces is None else pieces  # sorted by offset
        self.total = total  # payload length, known once the last fragment arrived


class Reassembler:
    def __init__(
        self, *, timeout: float = 30.0, max_datagrams: int = 64, max_fragments: int = 64
    ) -> None:
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.max_fragments = max_fragments
        self._partials: dict[_Key, _Partial] = {}  # insertion order = age
        self.dropped = 0  # datagrams given up (overlap, limits, timeout)

    def __len__(self) -> int:
        return len(self._partials)

    def feed(self, packet: IPv4Packet, now: float) -> IPv4Packet | None:
        """Add a fragment; return the whole datagram once complete. Non-fragments pass through."""
        if not packet.is_fragment:
            return packet
        self.expire(now)
        key = (packet.src, packet.dst, packet.protocol, packet.identification)
        start, data = packet.fragment_offset, packet.payload
        end = start + len(data)
        if end > _MAX_PAYLOAD or (packet.more_fragments and (len(data) % 8 or not data)):
            self._drop(key)
            return None
        partial = self._partials.get(key)
        if partial is None:
            if len(self._partials) >= self.max_datagrams:
                self._drop(next(iter(self._partials)))  # evict the oldest
            partial = self._partials[key] = _Partial(packet, now + self.timeout)
        if not self._add(partial, packet, start, end):
            self._drop(key)
            return None
        if partial.total is None or not _contiguous(partial.pieces, partial.total):
            return None
        del self._partials[key]
        return partial.first.replace(
            payload=b"".join(piece for _, piece in partial.pieces),
            more_fragments=False,
            fragment_offset=0,
        )

    def _add(self, partial: _Partial, packet: IPv4Packet, start: int, end: int) -> bool:
        """Insert the fragment; False when the datagram must be discarded."""
        if not packet.more_fragments:
            if partial.total is not None and partial.total != end:
                return False
            partial.total = end
        if partial.total is not None and end > partial.total:
            return False
        pieces = partial.pieces
        index = bisect.bisect_left(pieces, start, key=lambda piece: piece[0])
        if index < len(pieces) and pieces[index] == (start, packet.payload):
            return True  # an exact duplicate (a retransmission) is harmless
        if index > 0 and pieces[index - 1][0] + len(pieces[index - 1][1]) > start:
            return False
        if index < len(pieces) and pieces[index][0] < end:
            return False
        if len(pieces) >= self.max_fragments:
            return False
        pieces.insert(index, (start, packet.payload))
        if start == 0:
            partial.first = packet
        return True

    def _drop(self, key: _Key) -> None:
        if self._partials.pop(key, None) is not None:
            self.dropped += 1

    def expire(self, now: float) -> None:
        for key in [k for k, p in self._partials.items() if p.deadline <= now]:
            self._drop(key)

    def next_timeout(self) -> float | None:
        return min((p.deadline for p in self._partials.values()), default=None)


def _contiguous(pieces: list[tuple[int, bytes]], total: int) -> bool:
    position = 0
    for start, data in pieces:
        if start != position:
            return False
        position += len(data)
    return position == total
