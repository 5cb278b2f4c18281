"""The stack's TCP endpoint, driven segment by segment as the container's TCP would."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netns.packets import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment
from netns.tcp import (
    DATA_RETRIES,
    SYN_RETRIES,
    Closed,
    DeliverToHost,
    HostEOF,
    State,
    TcpAction,
    TcpConnection,
    Transmit,
    seq_diff,
)

CPORT, SPORT = 40000, 80
CISS = 5000  # the container's initial sequence number
ISS = 1000  # the stack's
MSS = 1460


def state_of(conn: TcpConnection) -> State:
    """The connection's state (a call, so mypy does not narrow it across assertions)."""
    return conn.state


def segments(actions: list[TcpAction]) -> list[TcpSegment]:
    return [a.segment for a in actions if isinstance(a, Transmit)]


def others(actions: list[TcpAction]) -> list[TcpAction]:
    return [a for a in actions if not isinstance(a, Transmit)]


def syn(seq: int = CISS, options: TcpOptions | None = None, window: int = 65535) -> TcpSegment:
    options = options if options is not None else TcpOptions(mss=MSS)
    return TcpSegment(CPORT, SPORT, seq, 0, SYN, window, options=options)


class Peer:
    """The container's end, tracking its own sequence numbers."""

    def __init__(self, conn: TcpConnection, seq: int, ack: int, window: int = 65535) -> None:
        self.conn = conn
        self.seq = seq
        self.ack = ack
        self.window = window

    def segment(self, flags: int, payload: bytes = b"", *, seq: int | None = None) -> TcpSegment:
        return TcpSegment(
            CPORT,
            SPORT,
            self.seq if seq is None else seq,
            self.ack,
            flags,
            self.window,
            payload,
        )

    def send(self, flags: int, payload: bytes = b"", now: float = 0.0) -> list[TcpAction]:
        segment = self.segment(flags, payload)
        self.seq = (self.seq + segment.sequence_length) & 0xFFFFFFFF
        return self.conn.receive_segment(segment, now)

    def ack_all(self, actions: list[TcpAction], now: float = 0.0) -> list[TcpAction]:
        """Acknowledge everything the stack transmitted in `actions`."""
        for seg in segments(actions):
            end = (seg.seq + seg.sequence_length) & 0xFFFFFFFF
            if seq_diff(end, self.ack) > 0:
                self.ack = end
        return self.send(ACK, now=now)


def connect(
    *, iss: int = ISS, options: TcpOptions | None = None, **kwargs: int | float
) -> tuple[TcpConnection, Peer]:
    conn = TcpConnection(syn(options=options), 0.0, iss=iss, mtu=1500, **kwargs)  # type: ignore[arg-type]
    assert state_of(conn) is State.CONNECTING
    [syn_ack] = segments(conn.host_connected(0.0))
    peer = Peer(conn, CISS + 1, (syn_ack.seq + 1) & 0xFFFFFFFF)
    assert peer.send(ACK) == []
    assert state_of(conn) is State.ESTABLISHED
    return conn, peer


# --- handshake ------------------------------------------------------------------------------------


def test_handshake() -> None:
    conn = TcpConnection(syn(), 0.0, iss=ISS, mtu=1500)
    assert conn.receive_segment(syn(), 0.1) == []  # retransmitted SYN waits for the host
    actions = conn.host_connected(0.2)
    [syn_ack] = segments(actions)
    assert others(actions) == []
    assert (syn_ack.src_port, syn_ack.dst_port) == (SPORT, CPORT)
    assert syn_ack.flags == SYN | ACK
    assert (syn_ack.seq, syn_ack.ack) == (ISS, CISS + 1)
    assert syn_ack.options == TcpOptions(mss=1460)  # no window scale unless offered
    assert syn_ack.window == 65535
    assert state_of(conn) is State.SYN_RECEIVED
    ack = TcpSegment(CPORT, SPORT, CISS + 1, ISS + 1, ACK, 65535)
    assert conn.receive_segment(ack, 0.25) == []
    assert state_of(conn) is State.ESTABLISHED
    assert conn.next_timeout() is None
    assert conn.rto == pytest.approx(0.2)  # one 50 ms sample, floored at MIN_RTO


def test_host_connect_failure_resets() -> None:
    conn = TcpConnection(syn(), 0.0, iss=ISS)
    actions = conn.host_connect_failed(0.0)
    [rst] = segments(actions)
    assert rst.flags == RST | ACK and rst.seq == 0 and rst.ack == CISS + 1
    assert others(actions) == [Closed(reset=True)]
    assert state_of(conn) is State.CLOSED


def test_container_gives_up_while_connecting() -> None:
    conn = TcpConnection(syn(), 0.0, iss=ISS)
    rst = TcpSegment(CPORT, SPORT, CISS + 1, 0, RST, 0)
    assert conn.receive_segment(rst, 0.0) == [Closed(reset=True)]
    assert state_of(conn) is State.CLOSED


def test_syn_ack_retransmitted_then_given_up() -> None:
    conn = TcpConnection(syn(), 0.0, iss=ISS)
    conn.host_connected(0.0)
    now = 0.0
    for _ in range(SYN_RETRIES):
        deadline = conn.next_timeout()
        assert deadline is not None and deadline > now
        now = deadline
        [again] = segments(conn.timeout(now))
        assert again.flags == SYN | ACK and again.seq == ISS
    # A retransmitted SYN from the container also gets the SYN-ACK again.
    [again] = segments(conn.receive_segment(syn(), now))
    assert again.flags == SYN | ACK
    deadline = conn.next_timeout()
    assert deadline is not None
    actions = conn.timeout(deadline)
    assert [s.flags for s in segments(actions)] == [RST]
    assert others(actions) == [Closed(reset=True)]


def test_bad_ack_in_syn_received_gets_reset() -> None:
    conn = TcpConnection(syn(), 0.0, iss=ISS)
    conn.host_connected(0.0)
    bogus = TcpSegment(CPORT, SPORT, CISS + 1, ISS + 77, ACK, 65535)
    [rst] = segments(conn.receive_segment(bogus, 0.0))
    assert rst.flags == RST and rst.seq == ISS + 77
    assert state_of(conn) is State.SYN_RECEIVED


def test_window_scale_and_mss_negotiation() -> None:
    conn = TcpConnection(
        syn(options=TcpOptions(mss=9000, window_scale=7), window=100),
        0.0,
        iss=ISS,
        mtu=65520,
        receive_buffer=1 << 20,
    )
    [syn_ack] = segments(conn.host_connected(0.0))
    assert syn_ack.options == TcpOptions(mss=65480, window_scale=5)
    assert conn.send_mss == 9000
    peer = Peer(conn, CISS + 1, ISS + 1, window=100)
    peer.send(ACK)
    assert conn.snd_wnd == 100 << 7
    [ack] = segments(peer.send(ACK | PSH, b"x"))
    assert ack.window == ((1 << 20) - 1) >> 5


def test_default_peer_mss_is_536() -> None:
    conn, _peer = connect(options=TcpOptions())
    assert conn.send_mss == 536
    sent = segments(conn.send(b"y" * 2000, 0.0))
    assert [len(s.payload) for s in sent] == [536, 536, 536, 392]


def test_data_before_handshake_completes_is_held() -> None:
    conn = TcpConnection(syn(), 0.0, iss=ISS)
    conn.host_connected(0.0)
    assert segments(conn.send(b"early", 0.0)) == []
    ack = TcpSegment(CPORT, SPORT, CISS + 1, ISS + 1, ACK, 65535)
    [data] = segments(conn.receive_segment(ack, 0.0))
    assert data.payload == b"early" and data.seq == ISS + 1


# --- data -----------------------------------------------------------------------------------------


def test_container_to_host() -> None:
    conn, peer = connect()
    actions = peer.send(ACK | PSH, b"hello")
    assert others(actions) == [DeliverToHost(b"hello")]
    [ack] = segments(actions)
    assert ack.ack == CISS + 1 + 5 and ack.flags == ACK
    # A retransmission of the same bytes is acknowledged again but not delivered twice.
    again = conn.receive_segment(peer.segment(ACK | PSH, b"hello", seq=CISS + 1), 0.0)
    assert others(again) == []
    assert segments(again)[0].ack == CISS + 6
    # Partly new data: only the new part is delivered.
    overlap = conn.receive_segment(peer.segment(ACK, b"loworld", seq=CISS + 4), 0.0)
    assert others(overlap) == [DeliverToHost(b"world")]


def test_out_of_order_data_is_held_until_the_hole_fills() -> None:
    conn, peer = connect()
    actions = conn.receive_segment(peer.segment(ACK, b"later", seq=CISS + 11), 0.0)
    assert others(actions) == []
    assert segments(actions)[0].ack == CISS + 1  # duplicate ACK: the hole is at CISS + 1
    actions = conn.receive_segment(peer.segment(ACK, b"middle", seq=CISS + 5), 0.0)
    assert others(actions) == [] and segments(actions)[0].ack == CISS + 1
    assert conn.buffered == 11
    # Filling the hole delivers everything contiguous at once (overlaps trimmed).
    actions = conn.receive_segment(peer.segment(ACK, b"firs", seq=CISS + 1), 0.0)
    assert others(actions) == [DeliverToHost(b"firsmiddlelater")]
    assert segments(actions)[0].ack == CISS + 16
    assert conn.buffered == 15  # now undelivered, waiting for the host


def test_out_of_order_fin_closes_once_the_hole_fills() -> None:
    conn, peer = connect()
    fin = TcpSegment(CPORT, SPORT, CISS + 4, ISS + 1, ACK | FIN, 65535, b"end")
    assert others(conn.receive_segment(fin, 0.0)) == []
    assert state_of(conn) is State.ESTABLISHED
    actions = conn.receive_segment(peer.segment(ACK, b"the"), 0.0)
    assert others(actions) == [DeliverToHost(b"theend"), HostEOF()]
    assert segments(actions)[0].ack == CISS + 8
    assert state_of(conn) is State.CLOSE_WAIT


def test_pure_ack_at_the_right_window_edge_is_processed() -> None:
    """A container that filled the window sends its ACKs from the right edge; if we lost a
    segment in the middle those ACKs must still acknowledge our data (seen against Linux)."""
    conn, _peer = connect(receive_buffer=4096)
    [data] = segments(conn.send(b"ours", 0.0))
    edge = TcpSegment(CPORT, SPORT, CISS + 1 + 4096, data.seq + 4, ACK, 65535)
    conn.receive_segment(edge, 0.0)
    assert conn.next_timeout() is None  # our data is acknowledged
    assert conn.send_space == 1 << 20


def test_host_to_container_segmentation_and_ack() -> None:
    conn, peer = connect()
    data = bytes(range(256)) * 20  # 5120 bytes
    sent = segments(conn.send(data, 0.0))
    assert [len(s.payload) for s in sent] == [1460, 1460, 1460, 740]
    assert [s.seq for s in sent] == [ISS + 1 + i * 1460 for i in range(4)]
    assert b"".join(s.payload for s in sent) == data
    assert sent[-1].flags & PSH
    assert conn.send_space == (1 << 20) - len(data)
    assert conn.next_timeout() is not None
    assert peer.ack_all(conn.send(b"", 0.0) + [Transmit(s) for s in sent], 0.01) == []
    assert conn.send_space == 1 << 20
    assert conn.next_timeout() is None


def test_send_beyond_space_is_an_error() -> None:
    conn, _peer = connect(send_buffer=10)
    with pytest.raises(ValueError):
        conn.send(b"x" * 11, 0.0)


def test_receive_window_full_and_reopened() -> None:
    conn, peer = connect(receive_buffer=4096)
    actions = peer.send(ACK, b"a" * 4096)
    assert others(actions) == [DeliverToHost(b"a" * 4096)]
    assert segments(actions)[0].window == 0
    # More data into the closed window: trimmed away, acknowledged with window 0.
    actions = conn.receive_segment(peer.segment(ACK, b"b" * 100), 0.0)
    assert others(actions) == []
    [ack] = segments(actions)
    assert ack.window == 0 and ack.ack == peer.seq
    # The host drains some: no update for a sliver (silly window avoidance) ...
    assert conn.host_consumed(100, 0.0) == []
    # ... but one when half the buffer is free.
    [update] = segments(conn.host_consumed(2000, 0.0))
    assert update.window == 2100 and update.ack == peer.seq


def test_send_window_limits_flight() -> None:
    conn, peer = connect()
    peer.window = 3000
    peer.send(ACK)
    sent = segments(conn.send(b"z" * 10000, 0.0))
    # Two full segments; the 80-byte sliver waits for the window (sender-side SWS avoidance).
    assert [len(s.payload) for s in sent] == [1460, 1460]
    more = segments(peer.ack_all([Transmit(s) for s in sent]))
    assert [len(s.payload) for s in more] == [1460, 1460]
    assert more[0].seq == ISS + 1 + 2920


def test_sequence_numbers_wrap() -> None:
    conn, peer = connect(iss=0xFFFFFFFF - 1000)
    sent = segments(conn.send(b"w" * 4000, 0.0))
    assert sent[0].seq == 0xFFFFFFFF - 999
    assert any(s.seq < 4000 for s in sent)  # crossed zero
    assert segments(peer.ack_all([Transmit(s) for s in sent])) == []
    assert conn.send_space == 1 << 20 and conn.next_timeout() is None


# --- loss and retransmission ----------------------------------------------------------------------


def test_retransmission_after_timeout() -> None:
    conn, peer = connect()
    [first, second] = segments(conn.send(b"q" * 2000, 0.0))
    deadline = conn.next_timeout()
    assert deadline == pytest.approx(0.2)  # the handshake's RTT sample (0 s) floored at MIN_RTO
    assert conn.timeout(0.1) == []
    assert deadline is not None
    [again] = segments(conn.timeout(deadline))
    assert (again.seq, again.payload) == (first.seq, first.payload)
    assert conn.rto == pytest.approx(0.4)  # backed off
    # The container got `second` all along: one ACK covers both.
    peer.ack = (second.seq + len(second.payload)) & 0xFFFFFFFF
    assert segments(peer.send(ACK, now=1.1)) == []
    assert conn.next_timeout() is None


def test_lost_ack_is_recovered() -> None:
    conn, peer = connect()
    [seg] = segments(conn.send(b"data", 0.0))
    [again] = segments(conn.timeout(1.0))
    assert again == seg
    peer.ack_all([Transmit(again)])
    assert conn.next_timeout() is None


def test_retransmissions_exhausted_reset() -> None:
    conn, _peer = connect()
    conn.send(b"lost forever", 0.0)
    actions: list[TcpAction] = []
    for _ in range(DATA_RETRIES + 1):
        deadline = conn.next_timeout()
        assert deadline is not None
        actions = conn.timeout(deadline)
    assert [s.flags for s in segments(actions)] == [RST]
    assert others(actions) == [Closed(reset=True)]
    assert state_of(conn) is State.CLOSED


def test_fast_retransmit_on_three_duplicate_acks() -> None:
    conn, peer = connect()
    sent = segments(conn.send(b"f" * (5 * MSS), 0.0))
    assert len(sent) == 5
    for _ in range(2):
        assert segments(peer.send(ACK)) == []
    [again] = segments(peer.send(ACK))
    assert again.seq == sent[0].seq and again.payload == sent[0].payload


class LossyContainer:
    """A minimal receiving TCP: in-order only, loses segments and ACKs at random."""

    def __init__(self, conn: TcpConnection, peer: Peer, rng: random.Random) -> None:
        self.conn, self.peer, self.rng = conn, peer, rng
        self.received = bytearray()

    def deliver(self, actions: list[TcpAction], now: float) -> list[TcpAction]:
        replies: list[TcpAction] = []
        for seg in segments(actions):
            if self.rng.random() < 0.2:
                continue  # lost on the way to the container
            if seg.seq == self.peer.ack and seg.payload:
                self.received += seg.payload
                self.peer.ack = (self.peer.ack + len(seg.payload)) & 0xFFFFFFFF
            if self.rng.random() < 0.2:
                continue  # the ACK is lost
            replies += self.peer.send(ACK, now=now)
        return replies


@pytest.mark.parametrize("seed", range(8))
def test_transfer_survives_random_loss(seed: int) -> None:
    rng = random.Random(seed)
    conn, peer = connect()
    container = LossyContainer(conn, peer, rng)
    data = rng.randbytes(200_000)
    pending = bytearray(data)
    now = 0.0
    actions: list[TcpAction] = []
    for _ in range(10_000):
        chunk = bytes(pending[: conn.send_space])
        del pending[: len(chunk)]
        if chunk:
            actions += conn.send(chunk, now)
        while actions:
            actions = container.deliver(actions, now)
        if len(container.received) == len(data):
            break
        deadline = conn.next_timeout()
        assert deadline is not None, "data outstanding but no timer armed"
        now = max(now, deadline)
        actions = conn.timeout(now)
    assert bytes(container.received) == data


# --- zero window ----------------------------------------------------------------------------------


def test_zero_window_probe() -> None:
    conn, peer = connect()
    peer.window = 0
    peer.send(ACK)
    assert segments(conn.send(b"blocked", 0.0)) == []
    deadline = conn.next_timeout()
    assert deadline is not None
    [probe] = segments(conn.timeout(deadline))
    assert probe.seq == ISS and probe.payload == b""  # snd_una - 1: forces an ACK
    # The container answers with its (still zero) window; the next probe comes later.
    peer.send(ACK, now=deadline)
    second = conn.next_timeout()
    assert second is not None and second - deadline > deadline - 0.0 - 1e-9
    # The window opens: data flows, probing stops.
    peer.window = 1000
    [data] = segments(peer.send(ACK, now=second - 0.01))
    assert data.payload == b"blocked"
    peer.ack_all([Transmit(data)])
    assert conn.next_timeout() is None


def test_peer_window_smaller_than_mss_still_makes_progress() -> None:
    conn, peer = connect()
    peer.window = 100
    peer.send(ACK)
    [first] = segments(conn.send(b"s" * 300, 0.0))
    assert len(first.payload) == 100
    [second] = segments(peer.ack_all([Transmit(first)]))
    assert len(second.payload) == 100 and second.seq == first.seq + 100


# --- closing --------------------------------------------------------------------------------------


def test_container_closes_first() -> None:
    conn, peer = connect()
    actions = peer.send(ACK | FIN, b"bye")
    assert others(actions) == [DeliverToHost(b"bye"), HostEOF()]
    [ack] = segments(actions)
    assert ack.ack == peer.seq
    assert state_of(conn) is State.CLOSE_WAIT
    # Half-closed: the host may still send.
    [data] = segments(conn.send(b"reply", 0.0))
    peer.ack_all([Transmit(data)])
    [fin] = segments(conn.close(0.0))
    assert fin.flags == ACK | FIN and state_of(conn) is State.LAST_ACK
    assert peer.ack_all([Transmit(fin)]) == [Closed(reset=False)]
    assert state_of(conn) is State.CLOSED


def test_host_closes_first() -> None:
    conn, peer = connect()
    sent = segments(conn.send(b"last words", 0.0) + conn.close(0.0))
    assert sent[-1].flags & FIN
    assert state_of(conn) is State.FIN_WAIT_1
    peer.ack_all([Transmit(s) for s in sent])
    assert state_of(conn) is State.FIN_WAIT_2
    # The container can still send in FIN_WAIT_2.
    assert others(peer.send(ACK, b"more")) == [DeliverToHost(b"more")]
    actions = peer.send(ACK | FIN)
    assert others(actions) == [HostEOF(), Closed(reset=False)]
    assert state_of(conn) is State.TIME_WAIT
    # A retransmitted FIN is acknowledged again.
    [reack] = segments(conn.receive_segment(peer.segment(ACK | FIN, seq=peer.seq - 1), 1.0))
    assert reack.ack == peer.seq
    deadline = conn.next_timeout()
    assert deadline == pytest.approx(31.0)
    assert deadline is not None and conn.timeout(deadline) == []
    assert state_of(conn) is State.CLOSED


def test_fin_piggybacks_on_last_data() -> None:
    conn, _peer = connect()
    conn.send(b"x" * 10, 0.0)  # sent at once
    [fin] = segments(conn.close(0.0))
    assert fin.flags == ACK | FIN and fin.payload == b""
    conn2, _peer2 = connect()
    conn2.send(b"x" * 10, 0.0)
    conn2.close(0.0)
    # Queued data behind a closed window goes out with the FIN on the same segment.
    conn3, peer3 = connect()
    peer3.window = 0
    peer3.send(ACK)
    conn3.send(b"tail", 0.0)
    conn3.close(0.0)
    peer3.window = 1000
    [last] = segments(peer3.send(ACK))
    assert last.payload == b"tail" and last.flags & FIN


def test_simultaneous_close() -> None:
    conn, peer = connect()
    [fin] = segments(conn.close(0.0))
    # The container's FIN crosses ours: it does not acknowledge our FIN yet.
    actions = peer.send(ACK | FIN)
    assert others(actions) == [HostEOF()]
    assert segments(actions)[0].ack == peer.seq
    assert state_of(conn) is State.CLOSING
    assert peer.ack_all([Transmit(fin)]) == [Closed(reset=False)]
    assert state_of(conn) is State.TIME_WAIT


def test_fin_and_ack_of_our_fin_in_one_segment() -> None:
    conn, peer = connect()
    [fin] = segments(conn.close(0.0))
    peer.ack = fin.seq + 1
    actions = peer.send(ACK | FIN)
    assert others(actions) == [HostEOF(), Closed(reset=False)]
    assert state_of(conn) is State.TIME_WAIT


def test_lost_fin_is_retransmitted() -> None:
    conn, peer = connect()
    [fin] = segments(conn.close(0.0))
    deadline = conn.next_timeout()
    assert deadline is not None
    [again] = segments(conn.timeout(deadline))
    assert again.flags & FIN and again.seq == fin.seq
    peer.ack_all([Transmit(again)])
    assert state_of(conn) is State.FIN_WAIT_2


# --- every state: RST, FIN, abort -----------------------------------------------------------------


def reach(state: State) -> tuple[TcpConnection, Peer]:
    """A connection in `state`, with a peer whose next sequence number is rcv_nxt."""
    if state in (State.CONNECTING, State.SYN_RECEIVED):
        conn = TcpConnection(syn(), 0.0, iss=ISS)
        if state is State.SYN_RECEIVED:
            conn.host_connected(0.0)
        return conn, Peer(conn, CISS + 1, ISS + 1)
    conn, peer = connect()
    steps: dict[State, Callable[[], object]] = {
        State.ESTABLISHED: lambda: None,
        State.CLOSE_WAIT: lambda: peer.send(ACK | FIN),
        State.FIN_WAIT_1: lambda: conn.close(0.0),
        State.FIN_WAIT_2: lambda: peer.ack_all(conn.close(0.0)),
        State.CLOSING: lambda: (conn.close(0.0), peer.send(ACK | FIN)),
        State.LAST_ACK: lambda: (peer.send(ACK | FIN), conn.close(0.0)),
        State.TIME_WAIT: lambda: (peer.ack_all(conn.close(0.0)), peer.send(ACK | FIN)),
    }
    steps[state]()
    if state in (State.CLOSING, State.LAST_ACK):
        pass  # our FIN is outstanding and unacknowledged
    assert state_of(conn) is state
    return conn, peer


ALL_STATES = [s for s in State if s is not State.CLOSED]
REPORTED_CLOSED = {State.TIME_WAIT}


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
def test_rst_in_every_state(state: State) -> None:
    conn, peer = reach(state)
    actions = conn.receive_segment(peer.segment(RST), 0.0)
    assert segments(actions) == []
    expected = [] if state in REPORTED_CLOSED else [Closed(reset=True)]
    assert others(actions) == expected
    assert state_of(conn) is State.CLOSED
    assert conn.next_timeout() is None


@pytest.mark.parametrize(
    "state", [s for s in ALL_STATES if s is not State.CONNECTING], ids=lambda s: s.value
)
def test_blind_rst_in_window_gets_challenge_ack(state: State) -> None:
    conn, peer = reach(state)
    actions = conn.receive_segment(peer.segment(RST, seq=peer.seq + 10), 0.0)
    assert [s.flags for s in segments(actions)] == [ACK]
    assert state_of(conn) is state
    # Out of the window entirely: ignored.
    assert conn.receive_segment(peer.segment(RST, seq=peer.seq + (1 << 30)), 0.0) == []
    assert state_of(conn) is state


FIN_NEXT = {
    State.ESTABLISHED: State.CLOSE_WAIT,
    State.FIN_WAIT_1: State.CLOSING,
    State.FIN_WAIT_2: State.TIME_WAIT,
    # Already past the container's FIN: a repeated one is only acknowledged.
    State.CLOSE_WAIT: State.CLOSE_WAIT,
    State.CLOSING: State.CLOSING,
    State.LAST_ACK: State.LAST_ACK,
    State.TIME_WAIT: State.TIME_WAIT,
}


@pytest.mark.parametrize("state", list(FIN_NEXT), ids=lambda s: s.value)
def test_fin_in_every_synchronized_state(state: State) -> None:
    conn, peer = reach(state)
    already_finished = state in (State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT)
    seq = peer.seq - 1 if already_finished else peer.seq
    actions = conn.receive_segment(peer.segment(ACK | FIN, seq=seq), 0.0)
    assert state_of(conn) is FIN_NEXT[state]
    [ack] = segments(actions)
    assert ack.flags & ACK and ack.ack == (peer.seq if already_finished else peer.seq + 1)
    assert (HostEOF() in others(actions)) == (not already_finished)


def test_fin_in_syn_received_with_the_handshake_ack() -> None:
    conn, peer = reach(State.SYN_RECEIVED)
    actions = peer.send(ACK | FIN)
    assert others(actions) == [HostEOF()]
    assert state_of(conn) is State.CLOSE_WAIT


def test_fin_while_connecting_is_ignored() -> None:
    conn, peer = reach(State.CONNECTING)
    assert conn.receive_segment(peer.segment(FIN), 0.0) == []
    assert state_of(conn) is State.CONNECTING


def test_close_in_syn_received_sends_fin_after_handshake() -> None:
    conn, peer = reach(State.SYN_RECEIVED)
    assert conn.close(0.0) == []
    actions = peer.send(ACK)
    [fin] = segments(actions)
    assert fin.flags & FIN and state_of(conn) is State.FIN_WAIT_1


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
def test_abort_in_every_state(state: State) -> None:
    conn, _peer = reach(state)
    actions = conn.abort(0.0)
    flags = [s.flags & RST for s in segments(actions)]
    assert flags == ([] if state is State.TIME_WAIT else [RST])
    assert others(actions) == ([] if state in REPORTED_CLOSED else [Closed(reset=True)])
    assert state_of(conn) is State.CLOSED
    assert conn.abort(0.0) == []


@pytest.mark.parametrize(
    "state", [s for s in ALL_STATES if s is not State.CONNECTING], ids=lambda s: s.value
)
def test_syn_on_synchronized_connection_gets_challenge_ack(state: State) -> None:
    conn, peer = reach(state)
    if state is State.SYN_RECEIVED:
        other = syn(seq=CISS + 12345)
    else:
        other = peer.segment(SYN, seq=peer.seq)
    actions = conn.receive_segment(other, 0.0)
    assert [s.flags for s in segments(actions)] == [ACK]
    assert state_of(conn) is state


def test_ack_of_unsent_data_is_answered_and_dropped() -> None:
    _conn, peer = connect()
    peer.ack = ISS + 1000
    actions = peer.send(ACK, b"ignored")
    assert others(actions) == []
    [ack] = segments(actions)
    assert ack.seq == ISS + 1


def test_segment_without_ack_is_dropped() -> None:
    conn, peer = connect()
    assert conn.receive_segment(peer.segment(PSH, b"data"), 0.0) == []


@pytest.mark.parametrize("seed", range(6))
def test_reordered_duplicated_lossy_stream_arrives_intact(seed: int) -> None:
    rng = random.Random(seed)
    conn, _peer = connect()
    data = rng.randbytes(60_000)
    pieces = [(i, data[i : i + 1000]) for i in range(0, len(data), 1000)]
    received = bytearray()
    acked = CISS + 1
    for _ in range(200):
        if acked == CISS + 1 + len(data):
            break
        outstanding = [p for p in pieces if CISS + 1 + p[0] + len(p[1]) > acked]
        batch = [p for p in outstanding if rng.random() > 0.3]
        batch += rng.sample(outstanding, min(3, len(outstanding)))  # duplicates
        rng.shuffle(batch)
        for offset, chunk in batch:
            seg = TcpSegment(CPORT, SPORT, CISS + 1 + offset, ISS + 1, ACK, 65535, chunk)
            actions = conn.receive_segment(seg, 0.0)
            for action in others(actions):
                assert isinstance(action, DeliverToHost)
                received += action.data
                conn.host_consumed(len(action.data), 0.0)
            acks = segments(actions)
            assert acks, "every data segment is acknowledged"
            acked = max(acked, acks[-1].ack)
    assert bytes(received) == data


def test_rst_overlapping_old_data_is_challenged_not_obeyed() -> None:
    conn, peer = connect()
    peer.send(ACK, b"0123456789")
    rst = peer.segment(RST, b"6789xx", seq=peer.seq - 4)  # trims to rcv_nxt, but seq differs
    assert [s.flags for s in segments(conn.receive_segment(rst, 0.0))] == [ACK]
    assert state_of(conn) is State.ESTABLISHED


# --- fuzzing the state machine --------------------------------------------------------------------

fuzz_step = st.one_of(
    st.tuples(
        st.just("segment"),
        st.integers(-70000, 70000),  # seq relative to rcv_nxt
        st.integers(-70000, 70000),  # ack relative to snd_una
        st.sampled_from([ACK, ACK | PSH, ACK | FIN, RST, SYN, FIN, ACK | RST, SYN | ACK, 0]),
        st.integers(0, 0xFFFF),
        st.binary(max_size=3000),
    ),
    st.tuples(st.just("send"), st.integers(0, 5000)),
    st.tuples(st.just("consume"), st.integers(0, 5000)),
    st.tuples(st.just("close")),
    st.tuples(st.just("abort")),
    st.tuples(st.just("time"), st.floats(0, 100)),
)


@settings(max_examples=300)
@given(st.booleans(), st.lists(fuzz_step, max_size=30))
def test_state_machine_invariants_under_random_input(
    scaled: bool, steps: list[tuple[object, ...]]
) -> None:
    options = TcpOptions(mss=1000, window_scale=3 if scaled else None)
    conn = TcpConnection(syn(options=options), 0.0, iss=0xFFFFFF00, receive_buffer=8192)
    now = 0.0
    actions = conn.host_connected(now)
    delivered = 0
    closed_reports = 0
    for step in steps:
        kind = step[0]
        if kind == "segment":
            _, dseq, dack, flags, window, payload = step
            assert isinstance(dseq, int) and isinstance(dack, int) and isinstance(flags, int)
            assert isinstance(window, int) and isinstance(payload, bytes)
            seg = TcpSegment(
                CPORT,
                SPORT,
                (conn.rcv_nxt + dseq) & 0xFFFFFFFF,
                (conn.snd_una + dack) & 0xFFFFFFFF,
                flags,
                window,
                payload,
            )
            actions = conn.receive_segment(seg, now)
        elif kind == "send":
            assert isinstance(step[1], int)
            actions = conn.send(b"s" * min(step[1], conn.send_space), now)
        elif kind == "consume":
            assert isinstance(step[1], int)
            actions = conn.host_consumed(min(step[1], conn.undelivered), now)
        elif kind == "close":
            actions = conn.close(now)
        elif kind == "abort":
            actions = conn.abort(now)
        else:
            assert isinstance(step[1], float)
            now += step[1]
            deadline = conn.next_timeout()
            actions = conn.timeout(now) if deadline is not None and deadline <= now else []
        for action in actions:
            if isinstance(action, Transmit):
                seg = action.segment
                assert (seg.src_port, seg.dst_port) == (SPORT, CPORT)
                assert 0 <= seg.seq <= 0xFFFFFFFF and 0 <= seg.ack <= 0xFFFFFFFF
                assert 0 <= seg.window <= 0xFFFF
                assert len(seg.payload) <= conn.send_mss
            elif isinstance(action, DeliverToHost):
                delivered += len(action.data)
            elif isinstance(action, Closed):
                closed_reports += 1
        assert 0 <= conn.undelivered <= conn.receive_buffer
        assert conn.buffered >= 0
        assert closed_reports <= 1
        if kind == "time":  # every timer that was due has been handled
            deadline = conn.next_timeout()
            assert deadline is None or deadline > now
    if state_of(conn) is State.CLOSED:
        assert conn.next_timeout() is None


# --- header prediction ----------------------------------------------------------------------------


class Unpredicted(TcpConnection):
    """Header prediction switched off: the general path, the reference it must agree with."""

    def _predictable(self, seg: TcpSegment) -> bool:
        return False


def snapshot(conn: TcpConnection) -> tuple[object, ...]:
    return (
        conn.state, conn.rcv_nxt, conn.snd_una, conn.snd_nxt, conn.snd_max, conn.snd_wnd,
        conn.snd_wl1, conn.snd_wl2, conn.undelivered, conn.buffered, conn.send_space,
        conn.next_timeout(), conn.ack_owed,
    )  # fmt: skip


def data_values(actions: list[TcpAction]) -> list[TcpAction]:
    return [DeliverToHost(bytes(a.data)) if isinstance(a, DeliverToHost) else a for a in actions]


prediction_step = st.one_of(
    # Mostly the next data in order; sometimes not quite (acknowledging something, another
    # flag, a little off in sequence, empty, a window update).
    st.tuples(
        st.just("next"),
        st.integers(0, 3000),  # size
        st.booleans(),  # a new window
        st.sampled_from([0, 0, 0, 1, 500, -1]),  # ack relative to snd_una
        st.sampled_from([ACK, ACK, ACK | PSH, ACK | FIN, ACK | RST, ACK | SYN, 0]),
        st.sampled_from([0, 0, 0, 1, -1, 100]),  # seq relative to rcv_nxt
    ),
    fuzz_step,
    st.tuples(st.just("defer"), st.booleans()),
)


@settings(max_examples=500)
@given(st.booleans(), st.lists(prediction_step, max_size=40))
def test_header_prediction_changes_nothing(scaled: bool, steps: list[tuple[object, ...]]) -> None:
    """Whatever arrives, a connection predicting headers acts and ends up exactly like one that
    takes every segment through the general path."""
    options = TcpOptions(mss=1000, window_scale=3 if scaled else None)
    conns = [
        kind(syn(options=options), 0.0, iss=0xFFFFFF00, receive_buffer=8192)
        for kind in (TcpConnection, Unpredicted)
    ]
    window = 4096
    now = 0.0
    for conn in conns:
        conn.host_connected(now)
        conn.receive_segment(TcpSegment(CPORT, SPORT, CISS + 1, conn.snd_max, ACK, window), now)
        assert state_of(conn) is State.ESTABLISHED
    for step in steps:
        results = []
        if step[0] == "next" and step[2]:
            window = (window + 512) % 0x10000  # a window update riding on the data
        for conn in conns:
            kind = step[0]
            if kind == "next":
                _, size, _, dack, flags, dseq = step
                assert isinstance(size, int) and isinstance(dack, int)
                assert isinstance(flags, int) and isinstance(dseq, int)
                payload = bytes(range(256)) * (size // 256 + 1)
                segment = TcpSegment(
                    CPORT, SPORT, (conn.rcv_nxt + dseq) & 0xFFFFFFFF,
                    (conn.snd_una + dack) & 0xFFFFFFFF, flags, window, payload[:size],
                )  # fmt: skip
                actions = conn.receive_segment(segment, now)
            elif kind == "defer":
                conn.defer_acks = bool(step[1])
                actions = conn.flush_ack() if not step[1] else []
            elif kind == "segment":
                _, dseq, dack, flags, seg_window, data = step
                assert isinstance(dseq, int) and isinstance(dack, int) and isinstance(flags, int)
                assert isinstance(seg_window, int) and isinstance(data, bytes)
                segment = TcpSegment(
                    CPORT, SPORT, (conn.rcv_nxt + dseq) & 0xFFFFFFFF,
                    (conn.snd_una + dack) & 0xFFFFFFFF, flags, seg_window, data,
                )  # fmt: skip
                actions = conn.receive_segment(segment, now)
            elif kind == "send":
                assert isinstance(step[1], int)
                actions = conn.send(b"s" * min(step[1], conn.send_space), now)
            elif kind == "consume":
                assert isinstance(step[1], int)
                actions = conn.host_consumed(min(step[1], conn.undelivered), now)
            elif kind == "close":
                actions = conn.close(now)
            elif kind == "abort":
                actions = conn.abort(now)
            else:
                assert isinstance(step[1], float)
                deadline = conn.next_timeout()
                later = now + step[1]
                actions = conn.timeout(later) if deadline is not None and deadline <= later else []
            results.append((data_values(actions), snapshot(conn)))
        if step[0] == "time":
            assert isinstance(step[1], float)
            now += step[1]
        assert results[0] == results[1]


def test_header_prediction_is_taken_by_an_upload() -> None:
    """The fast path is not dead code: in-order data on an established connection takes it."""
    conn, peer = connect()
    seen: list[TcpSegment] = []
    original = conn._predicted

    def spy(seg: TcpSegment) -> list[TcpAction]:
        seen.append(seg)
        return original(seg)

    conn._predicted = spy  # type: ignore[method-assign]
    actions = peer.send(ACK | PSH, b"x" * 1000)
    assert others(actions) == [DeliverToHost(b"x" * 1000)]
    assert len(seen) == 1
