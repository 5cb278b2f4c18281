"""IPv4 fragment reassembly: order, overlap, limits and timeouts."""

from __future__ import annotations

import random

from netns.packets import PROTO_UDP, IPv4Packet, fragment, parse_ip
from netns.reassembly import Reassembler

SRC = parse_ip("10.0.2.100")
DST = parse_ip("1.2.3.4")
PAYLOAD = bytes(random.Random(1).randbytes(3000))
WHOLE = IPv4Packet(SRC, DST, PROTO_UDP, PAYLOAD, identification=42)


def pieces(mtu: int = 1000) -> list[IPv4Packet]:
    return fragment(WHOLE, mtu)


def test_unfragmented_passes_through() -> None:
    packet = IPv4Packet(SRC, DST, PROTO_UDP, b"x")
    assert Reassembler().feed(packet, 0.0) is packet


def test_in_order() -> None:
    reassembler = Reassembler()
    fragments = pieces()
    assert len(fragments) == 4
    results = [reassembler.feed(f, 0.0) for f in fragments]
    assert results[:-1] == [None, None, None]
    assert results[-1] == WHOLE
    assert len(reassembler) == 0


def test_out_of_order() -> None:
    reassembler = Reassembler()
    fragments = pieces()
    order = [3, 1, 0, 2]
    results = [reassembler.feed(fragments[i], 0.0) for i in order]
    assert results[-1] == WHOLE and results[:-1] == [None] * 3


def test_exact_duplicate_is_harmless() -> None:
    reassembler = Reassembler()
    fragments = pieces()
    assert reassembler.feed(fragments[0], 0.0) is None
    assert reassembler.feed(fragments[0], 0.0) is None
    for f in fragments[1:-1]:
        assert reassembler.feed(f, 0.0) is None
    assert reassembler.feed(fragments[-1], 0.0) == WHOLE


def test_overlapping_fragment_discards_the_datagram() -> None:
    reassembler = Reassembler()
    fragments = pieces()
    reassembler.feed(fragments[0], 0.0)
    overlapping = fragments[1].replace(fragment_offset=fragments[1].fragment_offset - 8)
    assert reassembler.feed(overlapping, 0.0) is None
    assert len(reassembler) == 0 and reassembler.dropped == 1
    # The remaining fragments alone never complete it.
    assert [reassembler.feed(f, 0.0) for f in fragments[1:]] == [None] * 3


def test_conflicting_ends_discard() -> None:
    reassembler = Reassembler()
    fragments = pieces()
    reassembler.feed(fragments[-1], 0.0)
    short_last = fragments[1].replace(more_fragments=False)
    assert reassembler.feed(short_last, 0.0) is None
    assert reassembler.dropped == 1


def test_fragment_beyond_64k_is_dropped() -> None:
    reassembler = Reassembler()
    huge = IPv4Packet(
        SRC, DST, PROTO_UDP, bytes(16), identification=1, fragment_offset=65520
    )  # "ping of death"
    assert reassembler.feed(huge, 0.0) is None
    assert len(reassembler) == 0


def test_non_last_fragment_must_be_multiple_of_8() -> None:
    reassembler = Reassembler()
    odd = IPv4Packet(SRC, DST, PROTO_UDP, bytes(13), identification=1, more_fragments=True)
    assert reassembler.feed(odd, 0.0) is None
    assert len(reassembler) == 0


def test_too_many_fragments() -> None:
    reassembler = Reassembler(max_fragments=4)
    fragments = fragment(WHOLE, 400)  # 8 fragments
    assert [reassembler.feed(f, 0.0) for f in fragments] == [None] * len(fragments)
    assert reassembler.dropped >= 1


def test_too_many_datagrams_evicts_the_oldest() -> None:
    reassembler = Reassembler(max_datagrams=3)
    first_fragments = {}
    for ident in range(5):
        datagram = WHOLE.replace(identification=ident)
        first_fragments[ident] = fragment(datagram, 1000)
        reassembler.feed(first_fragments[ident][0], float(ident))
    assert len(reassembler) == 3
    # Datagram 0 was evicted: its other fragments no longer complete it ...
    assert [reassembler.feed(f, 5.0) for f in first_fragments[0][1:]][-1] is None
    # ... while datagram 4 still completes.
    results = [reassembler.feed(f, 5.0) for f in first_fragments[4][1:]]
    assert results[-1] == WHOLE.replace(identification=4)


def test_timeout() -> None:
    reassembler = Reassembler(timeout=30.0)
    fragments = pieces()
    reassembler.feed(fragments[0], 100.0)
    assert reassembler.next_timeout() == 130.0
    reassembler.expire(129.9)
    assert len(reassembler) == 1
    reassembler.expire(130.0)
    assert len(reassembler) == 0 and reassembler.next_timeout() is None
    # Late fragments start afresh and cannot complete without the first one.
    assert [reassembler.feed(f, 131.0) for f in fragments[1:]] == [None] * 3


def test_different_ids_do_not_mix() -> None:
    reassembler = Reassembler()
    a = fragment(WHOLE.replace(identification=1), 1000)
    b = fragment(WHOLE.replace(identification=2, payload=bytes(3000)), 1000)
    for x, y in zip(a[:-1], b[:-1], strict=True):
        assert reassembler.feed(x, 0.0) is None
        assert reassembler.feed(y, 0.0) is None
    assert reassembler.feed(b[-1], 0.0) == WHOLE.replace(identification=2, payload=bytes(3000))
    assert reassembler.feed(a[-1], 0.0) == WHOLE.replace(identification=1)
