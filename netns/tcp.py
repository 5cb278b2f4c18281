"""The stack's end of one container TCP connection (sans-IO).

The stack terminates the container's TCP connection and relays the byte stream to a host socket,
as slirp does. A `TcpConnection` is created from the container's SYN; the driver connects a host
socket and reports back with `host_connected`/`host_connect_failed`. From then on:

- `receive_segment(segment, now)`: a segment from the container;
- `send(data, now)`: bytes read from the host socket (never more than `send_space`);
- `host_consumed(n, now)`: the driver wrote n delivered bytes to the host socket, which reopens
  the receive window (the window honours `receive_buffer`: undelivered bytes count against it);
- `close(now)`: the host socket reached EOF (send FIN after the buffered data);
- `abort(now)`: the host socket failed (send RST);
- `timeout(now)` whenever `now >= next_timeout()`.

Each returns a list of actions: `Transmit` a segment to the container, `DeliverToHost` bytes,
`HostEOF` (the container half-closed: shut the host socket for writing), `Closed` (the host
socket is no longer needed; reported once). The connection object can be forgotten once `state`
is `State.CLOSED`.

Implemented from RFC 9293 (with RFC 5961 challenge ACKs), RFC 6298 (RTO), RFC 5681 (slow start,
congestion avoidance, fast retransmit) and RFC 7323 (window scale). Out-of-order segments are
held (up to MAX_OUT_OF_ORDER segments, within the window) and announced with a duplicate ACK;
SACK and timestamps are declined in the handshake.
"""

from __future__ import annotations

import enum

from netns._record import Record
from netns.packets import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment
from netns.sendbuffer import SendBuffer

_MASK = 0xFFFFFFFF
MIN_RTO = 0.2  # Linux's floor; RFC 6298's 1 s is meant for the open Internet
MAX_RTO = 60.0
INITIAL_RTO = 1.0
CLOCK_GRANULARITY = 0.001
DEFAULT_PEER_MSS = 536  # RFC 9293: assumed when the SYN has no MSS option
MIN_MSS = 48
MAX_WINDOW_SCALE = 14
SYN_RETRIES = 5
DATA_RETRIES = 12
MAX_OUT_OF_ORDER = 64  # segments held ahead of a hole


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed number."""
    return ((a - b + 0x80000000) & _MASK) - 0x80000000


class State(enum.Enum):
    CONNECTING = "connecting"  # SYN received, host socket being connected
    SYN_RECEIVED = "syn-received"
    ESTABLISHED = "established"
    CLOSE_WAIT = "close-wait"
    FIN_WAIT_1 = "fin-wait-1"
    FIN_WAIT_2 = "fin-wait-2"
    CLOSING = "closing"
    LAST_ACK = "last-ack"
    TIME_WAIT = "time-wait"
    CLOSED = "closed"


_RECEIVING = (State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2)
_SENDING = (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK)


class Transmit(Record):
    __slots__ = ("segment",)

    def __init__(self, segment: TcpSegment) -> None:
        self.segment = segment


class DeliverToHost(Record):
    """`data` may be a memoryview into a frame the container sent (netns.fastpath)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data


class HostEOF(Record):
    __slots__ = ()


class Closed(Record):
    __slots__ = ("reset",)

    def __init__(self, reset: bool) -> None:
        self.reset = reset  # True: aborted (RST either way or retransmissions exhausted)


TcpAction = Transmit | DeliverToHost | HostEOF | Closed


class TcpConnection:
    def __init__(
        self,
        syn: TcpSegment,
        now: float,
        *,
        iss: int,
        mtu: int = 1500,
        receive_buffer: int = 1 << 20,
        send_buffer: int = 1 << 20,
        time_wait: float = 30.0,
        min_rto: float = MIN_RTO,
    ) -> None:
        self.local_port = syn.dst_port
        self.remote_port = syn.src_port
        self.state = State.CONNECTING
        self.receive_buffer = receive_buffer
        self.send_buffer_limit = send_buffer
        self.time_wait = time_wait
        self.min_rto = min_rto
        self.created = now

        options = syn.options
        self.our_mss = max(MIN_MSS, min(mtu - 40, 0xFFFF))
        self.send_mss = max(MIN_MSS, min(options.mss or DEFAULT_PEER_MSS, self.our_mss))
        if options.window_scale is not None:
            self.snd_wscale = min(options.window_scale, MAX_WINDOW_SCALE)
            self.rcv_wscale = 0
            while receive_buffer >> self.rcv_wscale > 0xFFFF and self.rcv_wscale < 14:
                self.rcv_wscale += 1
            self._window_scaling = True
        else:
            self.snd_wscale = self.rcv_wscale = 0
            self._window_scaling = False

        # Receive side.
        self.irs = syn.seq
        self.rcv_nxt = (syn.seq + 1) & _MASK
        self.undelivered = 0  # bytes handed to the driver but not yet written to the host
        self._out_of_order: list[tuple[int, bytes]] = []  # (seq, data) ahead of a hole
        self._held_bytes = 0
        self._fin_seq: int | None = None  # where the container's FIN is, once seen
        self._last_advertised = 0
        # Set by the stack while it handles a batch of frames: pure ACKs (for data in order, and
        # window updates) are then owed (`ack_owed`) rather than sent, and `flush_ack` sends one
        # for the whole batch. Any segment sent meanwhile carries the ACK and settles the debt.
        self.defer_acks = False
        self.ack_owed = False

        # Send side. The buffer holds unacknowledged and unsent bytes; its first byte has
        # sequence number _buffer_seq.
        self.iss = iss & _MASK
        self.snd_una = self.snd_nxt = self.snd_max = self.iss
        self.snd_wnd = syn.window  # never scaled in a SYN
        self.snd_wl1 = syn.seq
        self.snd_wl2 = self.iss
        # The host's bytes as they came (netns.sendbuffer): segments carry views into them, so
        # a payload is not copied between the host socket and the TAP device.
        self._buffer = SendBuffer()
        self._buffer_seq = (self.iss + 1) & _MASK
        self._fin_queued = False
        self.cwnd = 10 * self.send_mss
        self.ssthresh = 1 << 30
        self._dupacks = 0

        # Timers.
        self.rto = INITIAL_RTO
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rtt_seq: int | None = None  # timing the segment ending at this sequence number
        self._rtt_start = 0.0
        self._retries = 0
        self._rto_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._persist_interval = 0.0
        self._time_wait_deadline: float | None = None
        self._closed_reported = False

    # --- driver API -------------------------------------------------------------------------------

    @property
    def send_space(self) -> int:
        """How many more bytes `send` accepts now."""
        if self._fin_queued or self.state not in (
            State.SYN_RECEIVED,
            State.ESTABLISHED,
            State.CLOSE_WAIT,
        ):
            return 0
        return max(0, self.send_buffer_limit - self._queued())

    @property
    def buffered(self) -> int:
        """Bytes this connection holds in memory (unacknowledged or unsent, plus undelivered)."""
        return self._queued() + self.undelivered + self._held_bytes

    def host_connected(self, now: float) -> list[TcpAction]:
        if self.state is not State.CONNECTING:
            return []
        self.state = State.SYN_RECEIVED
        actions: list[TcpAction] = []
        self._output(now, actions)
        return actions

    def host_connect_failed(self, now: float) -> list[TcpAction]:
        return self.abort(now)

    def send(self, data: bytes | memoryview, now: float) -> list[TcpAction]:
        if len(data) > self.send_space:
            raise ValueError("send() beyond send_space")
        self._buffer.append(data)
        actions: list[TcpAction] = []
        self._output(now, actions)
        return actions

    def host_consumed(self, count: int, now: float) -> list[TcpAction]:
        self.undelivered = max(0, self.undelivered - count)
        actions: list[TcpAction] = []
        if self.state in _RECEIVING:
            gained = (self._window_field() << self.rcv_wscale) - self._last_advertised
            if gained >= min(self.receive_buffer // 2, 2 * self.our_mss):
                self._ack_now_or_later(actions)
        return actions

    def flush_ack(self) -> list[TcpAction]:
        """The ACK owed for a batch of frames, if any (see `defer_acks`)."""
        self.defer_acks = False
        if not self.ack_owed:
            return []
        self.ack_owed = False
        if self.state in (State.CLOSED, State.CONNECTING):
            return []
        return [self._ack()]

    def _ack_now_or_later(self, actions: list[TcpAction]) -> None:
        if self.defer_acks:
            self.ack_owed = True
        else:
            actions.append(self._ack())

    def close(self, now: float) -> list[TcpAction]:
        """The host side has no more data: send FIN once the buffer is drained."""
        if self.state is State.CONNECTING:
            return self.abort(now)
        if self._fin_queued or self.state not in (
            State.SYN_RECEIVED,
            State.ESTABLISHED,
            State.CLOSE_WAIT,
        ):
            return []
        self._fin_queued = True
        if self.state is State.ESTABLISHED:
            self.state = State.FIN_WAIT_1
        elif self.state is State.CLOSE_WAIT:
            self.state = State.LAST_ACK
        actions: list[TcpAction] = []
        self._output(now, actions)
        return actions

    def abort(self, now: float) -> list[TcpAction]:
        """Reset the connection (host socket failed or flow limits were hit)."""
        actions: list[TcpAction] = []
        if self.state is State.CONNECTING:
            actions.append(Transmit(self._segment(RST | ACK, 0, window=0)))
        elif self.state not in (State.CLOSED, State.TIME_WAIT):
            actions.append(Transmit(self._segment(RST, self.snd_nxt, with_ack=False, window=0)))
        self._enter_closed(actions, reset=True)
        return actions

    def next_timeout(self) -> float | None:
        deadlines = [
            d
            for d in (self._rto_deadline, self._persist_deadline, self._time_wait_deadline)
            if d is not None
        ]
        return min(deadlines, default=None)

    def timeout(self, now: float) -> list[TcpAction]:
        actions: list[TcpAction] = []
        if self._time_wait_deadline is not None and now >= self._time_wait_deadline:
            self._enter_closed(actions, reset=False)
            return actions
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._retransmit_timeout(now, actions)
        if self._persist_deadline is not None and now >= self._persist_deadline:
            self._probe_window(now, actions)
        return actions

    def receive_window(self) -> int:
        return max(0, self.receive_buffer - self.undelivered)

    # --- segment arrival --------------------------------------------------------------------------

    def receive_segment(self, seg: TcpSegment, now: float) -> list[TcpAction]:
        if self._predictable(seg):
            return self._predicted(seg)
        actions: list[TcpAction] = []
        state = self.state
        if state is State.CLOSED:
            return actions
        if state is State.CONNECTING:
            if seg.flags & RST and seg.seq == self.rcv_nxt:
                self._enter_closed(actions, reset=True)
            return actions  # retransmitted SYNs wait for the host connection
        if state is State.SYN_RECEIVED and seg.flags & SYN and seg.seq == self.irs:
            if not seg.flags & (ACK | RST):
                self.snd_nxt = self.iss  # the SYN-ACK was lost: send it again
                self._rtt_seq = None
                self._output(now, actions)
            return actions

        payload = seg.payload
        seq = seg.seq
        flags = seg.flags
        window = self.receive_window()
        seg_len = seg.sequence_length
        if not self._acceptable(seq, seg_len, window):
            if not flags & RST:
                if state is State.TIME_WAIT and flags & FIN:
                    self._time_wait_deadline = now + self.time_wait
                actions.append(self._ack())
            return actions
        # Trim to the window: drop bytes we already have, and those beyond the right edge.
        if flags & SYN:
            seq = (seq + 1) & _MASK
            flags &= ~SYN
        early = seq_diff(self.rcv_nxt, seq)
        if early > 0:
            payload = payload[early:]
            seq = self.rcv_nxt
        room = window - seq_diff(seq, self.rcv_nxt)
        if len(payload) > room:
            payload = payload[: max(room, 0)]
            flags &= ~FIN

        if flags & RST:
            if seg.seq == self.rcv_nxt:  # RFC 5961: only an exact match resets
                self._enter_closed(actions, reset=True)
            else:
                actions.append(self._ack())  # RFC 5961 challenge ACK
            return actions
        if seg.flags & SYN:
            actions.append(self._ack())  # RFC 5961: a SYN on a synchronized connection
            return actions
        if not flags & ACK:
            return actions

        if state is State.SYN_RECEIVED:
            if seg.ack != self.snd_max or self.snd_una == self.snd_max:
                actions.append(Transmit(self._segment(RST, seg.ack, with_ack=False, window=0)))
                return actions
            self.state = State.FIN_WAIT_1 if self._fin_queued else State.ESTABLISHED
            self.snd_wl1 = (seg.seq - 1) & _MASK  # force the window update below
        if not self._process_ack(seg, now, actions):
            return actions
        if self.state is State.CLOSED:
            return actions

        # Anything occupying sequence space is acknowledged, even when trimmed to nothing (a probe).
        need_ack = bool(seg.payload) or bool(seg.flags & FIN)
        in_order = True
        if self.state in _RECEIVING and (payload or flags & FIN):
            if flags & FIN:
                self._fin_seq = (seq + len(payload)) & _MASK
            if seq == self.rcv_nxt:
                self._deliver(payload, actions)
            elif payload:
                self._hold_out_of_order(seq, payload)  # and send a duplicate ACK
                in_order = False
            if self._fin_seq == self.rcv_nxt:
                self._receive_fin(now, actions)
        self._output(now, actions, need_ack=need_ack, may_defer=in_order and not self._out_of_order)
        return actions

    def _predictable(self, seg: TcpSegment) -> bool:
        """Header prediction (as BSD and Linux do it): the next data in order, acknowledging
        nothing new, the window unchanged, none of our data unsent, no hole to fill. An upload
        is made of such segments; `_predicted` does with one exactly what the general path in
        `receive_segment` would (its window update included: only wl1/wl2 move), without the
        checks that cannot fail for it."""
        payload = seg.payload
        return (
            self.state is State.ESTABLISHED
            and seg.seq == self.rcv_nxt
            and seg.flags & (SYN | FIN | RST | ACK) == ACK
            and seg.ack == self.snd_una
            and bool(payload)
            and seg.window << self.snd_wscale == self.snd_wnd
            and not self._out_of_order
            and len(payload) <= self.receive_window()
            and seq_diff(self.snd_nxt, self._buffer_seq) == self._queued()
        )

    def _predicted(self, seg: TcpSegment) -> list[TcpAction]:
        payload = seg.payload
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        if self.snd_wnd > 0:
            self._persist_deadline = None
        size = len(payload)
        self.rcv_nxt = (self.rcv_nxt + size) & _MASK
        self.undelivered += size
        actions: list[TcpAction] = [DeliverToHost(payload)]
        if self.defer_acks:
            self.ack_owed = True
        else:
            actions.append(self._ack())
        return actions

    def _deliver(self, payload: bytes | memoryview, actions: list[TcpAction]) -> None:
        """Deliver in-order bytes at rcv_nxt, and whatever held segments they make contiguous."""
        chunks = [payload] if payload else []
        self.rcv_nxt = (self.rcv_nxt + len(payload)) & _MASK
        held = self._out_of_order
        while held and seq_diff(held[0][0], self.rcv_nxt) <= 0:
            start, data = held.pop(0)
            self._held_bytes -= len(data)
            fresh = data[seq_diff(self.rcv_nxt, start) :]
            if fresh:
                chunks.append(fresh)
                self.rcv_nxt = (self.rcv_nxt + len(fresh)) & _MASK
        if chunks:
            delivered = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.undelivered += len(delivered)
            actions.append(DeliverToHost(delivered))

    def _hold_out_of_order(self, seq: int, payload: bytes | memoryview) -> None:
        """Keep a segment that arrived ahead of a hole (it lies within the advertised window, so
        the receive buffer covers it). Sorted by distance from rcv_nxt; bounded in count."""
        held = self._out_of_order
        if len(held) >= MAX_OUT_OF_ORDER:
            return
        offset = seq_diff(seq, self.rcv_nxt)
        index = 0
        while index < len(held) and seq_diff(held[index][0], self.rcv_nxt) < offset:
            index += 1
        if index < len(held) and held[index][0] == seq and len(held[index][1]) >= len(payload):
            return  # a retransmission of something already held
        # A copy: the payload may be a view into a frame (netns.fastpath) that is larger than it.
        held.insert(index, (seq, bytes(payload)))
        self._held_bytes += len(payload)

    def _acceptable(self, seq: int, seg_len: int, window: int) -> bool:
        offset = seq_diff(seq, self.rcv_nxt)
        if seg_len == 0:
            # Inclusive at the right edge, as Linux does: a sender that filled the window sends
            # its pure ACKs from exactly there, and ignoring them can deadlock both directions.
            return 0 <= offset <= window
        if window == 0:
            # RFC 9293: keep processing ACKs and RSTs of segments arriving at a closed window;
            # their data is trimmed away.
            return offset == 0
        end = offset + seg_len - 1
        return 0 <= offset < window or 0 <= end < window

    def _process_ack(self, seg: TcpSegment, now: float, actions: list[TcpAction]) -> bool:
        """Update the send side from seg.ack; False if the segment must be dropped."""
        ack = seg.ack
        if seq_diff(ack, self.snd_max) > 0:
            actions.append(self._ack())  # acknowledges something we never sent
            return False
        newly_acked = seq_diff(ack, self.snd_una)
        if newly_acked > 0:
            self._dupacks = 0
            self.snd_una = ack
            if seq_diff(ack, self.snd_nxt) > 0:
                self.snd_nxt = ack
            removed = min(seq_diff(ack, self._buffer_seq), self._queued())
            if removed > 0:
                self._forget_acked(removed)
            if self._rtt_seq is not None and seq_diff(ack, self._rtt_seq) >= 0:
                self._rtt_sample(now - self._rtt_start)
                self._rtt_seq = None
            self._retries = 0
            if self.cwnd < self.ssthresh:
                self.cwnd += min(newly_acked, self.send_mss)
            else:
                self.cwnd += max(1, self.send_mss * self.send_mss // self.cwnd)
            self.cwnd = min(self.cwnd, 1 << 30)
            self._rto_deadline = None if self.snd_una == self.snd_max else now + self.rto
        elif (
            newly_acked == 0
            and not seg.payload
            and not seg.flags & (SYN | FIN)
            and self.snd_una != self.snd_max
            and (seg.window << self.snd_wscale) == self.snd_wnd
        ):
            self._dupacks += 1
            if self._dupacks == 3:
                self._fast_retransmit(now, actions)
        # Window update, guarded against old segments (RFC 9293 3.10.7.4).
        if seq_diff(seg.seq, self.snd_wl1) > 0 or (
            seg.seq == self.snd_wl1 and seq_diff(ack, self.snd_wl2) >= 0
        ):
            self.snd_wnd = seg.window << self.snd_wscale
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            if self.snd_wnd > 0:
                self._persist_deadline = None

        if self._fin_queued and self.snd_una == self.snd_max and self._fin_sent():
            if self.state is State.FIN_WAIT_1:
                self.state = State.FIN_WAIT_2
            elif self.state is State.CLOSING:
                self._enter_time_wait(now, actions)
            elif self.state is State.LAST_ACK:
                self._enter_closed(actions, reset=False)
        return True

    def _receive_fin(self, now: float, actions: list[TcpAction]) -> None:
        self.rcv_nxt = (self.rcv_nxt + 1) & _MASK
        if self.state is State.ESTABLISHED:
            self.state = State.CLOSE_WAIT
            actions.append(HostEOF())
        elif self.state is State.FIN_WAIT_1:
            self.state = State.CLOSING
            actions.append(HostEOF())
        elif self.state is State.FIN_WAIT_2:
            actions.append(HostEOF())
            self._enter_time_wait(now, actions)

    # --- sending ----------------------------------------------------------------------------------

    def _fin_sent(self) -> bool:
        return seq_diff(self.snd_max, self._buffer_seq) == self._queued() + 1

    def _output(
        self,
        now: float,
        actions: list[TcpAction],
        *,
        need_ack: bool = False,
        may_defer: bool = False,
    ) -> None:
        """Send whatever the windows allow; a pure ACK if nothing else carries `need_ack` (owed
        instead, when `may_defer` and `defer_acks`; duplicate ACKs are never deferred)."""
        if self.state is State.SYN_RECEIVED:
            if self.snd_nxt == self.iss:
                self._send_syn_ack(now, actions)
            elif need_ack:
                actions.append(self._ack())
            return
        sent_any = False
        if self.state in _SENDING:
            while True:
                sent = seq_diff(self.snd_nxt, self._buffer_seq)
                unsent = self._queued() - sent
                in_flight = seq_diff(self.snd_nxt, self.snd_una)
                usable = min(self.snd_wnd, self.cwnd) - in_flight
                if unsent > 0 and usable > 0:
                    size = min(unsent, usable, self.send_mss)
                    if size < self.send_mss and size < unsent and in_flight > 0:
                        break  # sender-side silly window avoidance: wait for the window
                    fin = self._fin_queued and size == unsent
                    flags = ACK | (PSH if size == unsent else 0) | (FIN if fin else 0)
                    data = self._buffer.peek(sent, size)
                    self._transmit(self._segment(flags, self.snd_nxt, data), now, actions)
                elif unsent == 0 and self._fin_queued and not self._fin_in_flight_or_sent():
                    self._transmit(self._segment(ACK | FIN, self.snd_nxt), now, actions)
                else:
                    break
                sent_any = True
            unsent = self._queued() - seq_diff(self.snd_nxt, self._buffer_seq)
            if (
                unsent > 0
                and self.snd_wnd == 0
                and self.snd_nxt == self.snd_una
                and self._persist_deadline is None
            ):
                self._persist_interval = max(self.rto, self.min_rto)
                self._persist_deadline = now + self._persist_interval
        if need_ack and not sent_any:
            if may_defer:
                self._ack_now_or_later(actions)
            else:
                actions.append(self._ack())

    def _queued(self) -> int:
        """Bytes from the host not yet acknowledged by the container (sent or not)."""
        return len(self._buffer)

    def _forget_acked(self, count: int) -> None:
        self._buffer_seq = (self._buffer_seq + count) & _MASK
        self._buffer.drop(count)

    def _fin_in_flight_or_sent(self) -> bool:
        return seq_diff(self.snd_nxt, self._buffer_seq) > self._queued()

    def _transmit(self, segment: TcpSegment, now: float, actions: list[TcpAction]) -> None:
        length = segment.sequence_length
        end = (segment.seq + length) & _MASK
        fresh = seq_diff(end, self.snd_max) > 0
        if fresh and self._rtt_seq is None and segment.seq == self.snd_max:
            self._rtt_seq, self._rtt_start = end, now
        self.snd_nxt = end
        if fresh:
            self.snd_max = end
        if self._rto_deadline is None:
            self._rto_deadline = now + self.rto
        actions.append(Transmit(segment))

    def _send_syn_ack(self, now: float, actions: list[TcpAction]) -> None:
        options = TcpOptions(
            mss=self.our_mss, window_scale=self.rcv_wscale if self._window_scaling else None
        )
        window = min(self.receive_window(), 0xFFFF)
        segment = TcpSegment(
            self.local_port, self.remote_port, self.iss, self.rcv_nxt, SYN | ACK, window,
            options=options,
        )  # fmt: skip
        self._last_advertised = window
        self._transmit(segment, now, actions)

    def _segment(
        self,
        flags: int,
        seq: int,
        payload: bytes | memoryview = b"",
        *,
        with_ack: bool = True,
        window: int | None = None,
    ) -> TcpSegment:
        if with_ack:
            self.ack_owed = False
        if window is None:
            window = self._window_field()
            self._last_advertised = window << self.rcv_wscale
        return TcpSegment(
            self.local_port,
            self.remote_port,
            seq & _MASK,
            self.rcv_nxt if with_ack else 0,
            flags,
            window,
            payload,
        )

    def _window_field(self) -> int:
        """The receive window as the header's window field carries it (scaled, capped)."""
        return min(self.receive_window() >> self.rcv_wscale, 0xFFFF)

    def _ack(self) -> Transmit:
        return Transmit(self._segment(ACK, self.snd_nxt))

    # --- timers -----------------------------------------------------------------------------------

    def _rtt_sample(self, sample: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = sample, sample / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
            self._srtt = 0.875 * self._srtt + 0.125 * sample
        rto = self._srtt + max(CLOCK_GRANULARITY, 4 * self._rttvar)
        self.rto = min(MAX_RTO, max(self.min_rto, rto))

    def _retransmit_timeout(self, now: float, actions: list[TcpAction]) -> None:
        self._rto_deadline = None
        if self.snd_una == self.snd_max:
            return
        limit = SYN_RETRIES if self.state is State.SYN_RECEIVED else DATA_RETRIES
        if self._retries >= limit:
            actions.extend(self.abort(now))
            return
        self._retries += 1
        self.rto = min(MAX_RTO, self.rto * 2)
        in_flight = seq_diff(self.snd_max, self.snd_una)
        self.ssthresh = max(in_flight // 2, 2 * self.send_mss)
        self.cwnd = self.send_mss
        self._rtt_seq = None  # Karn: no samples from retransmitted segments
        self.snd_nxt = self.snd_una  # go back N; slow start limits the burst to one segment
        self._output(now, actions)

    def _fast_retransmit(self, now: float, actions: list[TcpAction]) -> None:
        in_flight = seq_diff(self.snd_max, self.snd_una)
        self.ssthresh = max(in_flight // 2, 2 * self.send_mss)
        self.cwnd = self.ssthresh
        self._rtt_seq = None
        offset = seq_diff(self.snd_una, self._buffer_seq)
        data = self._buffer.peek(offset, self.send_mss)
        if not data and not self._fin_queued:
            return
        fin = self._fin_queued and offset + len(data) == self._queued()
        flags = ACK | (FIN if fin else 0) | (PSH if data else 0)
        actions.append(Transmit(self._segment(flags, self.snd_una, data)))
        self._rto_deadline = now + self.rto

    def _probe_window(self, now: float, actions: list[TcpAction]) -> None:
        """Zero-window probe: an out-of-window ACK makes the peer repeat its current window."""
        self._persist_deadline = None
        if self.snd_wnd != 0 or self.state not in _SENDING:
            return
        actions.append(Transmit(self._segment(ACK, self.snd_una - 1)))
        self._persist_interval = min(MAX_RTO, self._persist_interval * 2)
        self._persist_deadline = now + self._persist_interval

    def _enter_time_wait(self, now: float, actions: list[TcpAction]) -> None:
        self.state = State.TIME_WAIT
        self._rto_deadline = self._persist_deadline = None
        self._time_wait_deadline = now + self.time_wait
        self._report_closed(actions, reset=False)

    def _enter_closed(self, actions: list[TcpAction], *, reset: bool) -> None:
        self.state = State.CLOSED
        self._rto_deadline = self._persist_deadline = self._time_wait_deadline = None
        self._buffer.clear()
        self._out_of_order.clear()
        self.undelivered = self._held_bytes = 0
        self._report_closed(actions, reset=reset)

    def _report_closed(self, actions: list[TcpAction], *, reset: bool) -> None:
        if not self._closed_reported:
            self._closed_reported = True
            actions.append(Closed(reset))
