"""The rtnetlink requests tap.py sends (checked field by field against the kernel's layout)."""

from __future__ import annotations

import socket
import struct

import pytest

from netns import tap
from netns.tap import TapSettings


def attrs(data: bytes) -> dict[int, bytes]:
    found = {}
    offset = 0
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        assert length >= 4
        found[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    assert offset == len(data)
    return found


def header(message: bytes) -> tuple[int, int, int, int]:
    length, kind, flags, sequence, port = struct.unpack_from("=IHHII", message)
    assert length == len(message) and port == 0
    return kind, flags, sequence, length


def test_rtattr_is_padded() -> None:
    assert tap.rtattr(1, b"abcde") == struct.pack("=HH", 9, 1) + b"abcde\0\0\0"
    assert tap.rtattr(4, b"\1\2\3\4") == struct.pack("=HH", 8, 4) + b"\1\2\3\4"


def test_link_up_with_mtu_and_mac() -> None:
    mac = bytes.fromhex("02a0b0c0d0e0")
    message = tap.link_up_message(7, 2, mtu=65520, mac=mac)
    kind, flags, sequence, _ = header(message)
    assert (kind, flags, sequence) == (tap.RTM_NEWLINK, tap.NLM_F_REQUEST | tap.NLM_F_ACK, 2)
    family, _type, index, ifi_flags, change = struct.unpack_from("=BxHiII", message, 16)
    assert (family, index, ifi_flags, change) == (socket.AF_UNSPEC, 7, tap.IFF_UP, tap.IFF_UP)
    assert attrs(message[32:]) == {
        tap.IFLA_MTU: struct.pack("=I", 65520),
        tap.IFLA_ADDRESS: mac,
    }


def test_address_with_broadcast() -> None:
    message = tap.add_address_message(3, "10.0.2.100", 24, 5)
    kind, flags, sequence, _ = header(message)
    assert kind == tap.RTM_NEWADDR and sequence == 5
    assert flags & tap.NLM_F_CREATE and flags & tap.NLM_F_EXCL and flags & tap.NLM_F_ACK
    assert struct.unpack_from("=BBBBI", message, 16) == (socket.AF_INET, 24, 0, 0, 3)
    assert attrs(message[24:]) == {
        tap.IFA_LOCAL: bytes([10, 0, 2, 100]),
        tap.IFA_ADDRESS: bytes([10, 0, 2, 100]),
        tap.IFA_BROADCAST: bytes([10, 0, 2, 255]),
    }


def test_default_route() -> None:
    message = tap.default_route_message(3, "10.0.2.2", 9)
    kind, _flags, sequence, _ = header(message)
    assert kind == tap.RTM_NEWROUTE and sequence == 9
    family, dst_len, src_len, _tos, table, protocol, scope, rtype, _f = struct.unpack_from(
        "=BBBBBBBBI", message, 16
    )
    assert (family, dst_len, src_len) == (socket.AF_INET, 0, 0)
    assert (table, protocol, scope, rtype) == (tap.RT_TABLE_MAIN, tap.RTPROT_BOOT, 0, 1)
    assert attrs(message[28:]) == {
        tap.RTA_GATEWAY: bytes([10, 0, 2, 2]),
        tap.RTA_OIF: struct.pack("=i", 3),
    }


def test_configure_sequence_matches_slirp() -> None:
    steps = tap.configure_messages(2, 1, TapSettings())
    assert [what for what, _ in steps] == [
        "set lo up",
        "set tap0 mtu 65520 up",
        "add 10.0.2.100/24 to tap0",
        "add default route via 10.0.2.2",
    ]
    sequences = [header(message)[2] for _, message in steps]
    assert len(set(sequences)) == len(steps)


def nlmsgerr(sequence: int, error: int) -> bytes:
    original = struct.pack("=IHHII", 16, tap.RTM_NEWLINK, 0, sequence, 0)
    body = struct.pack("=i", error) + original
    return struct.pack("=IHHII", 16 + len(body), tap.NLMSG_ERROR, 0, sequence, 0) + body


def test_ack_errors() -> None:
    reply = nlmsgerr(1, 0) + nlmsgerr(2, -17)
    assert tap.ack_errors(reply) == {1: 0, 2: 17}
    assert tap.ack_errors(reply[:-3]) == {1: 0}  # a truncated message is ignored
    assert tap.ack_errors(b"") == {}
    other = struct.pack("=IHHII", 20, 16, 0, 3, 0) + bytes(4)  # not an error message
    assert tap.ack_errors(other + nlmsgerr(3, -1)) == {3: 1}


def test_bad_interface_name() -> None:
    with pytest.raises(ValueError):
        tap.create_tap(TapSettings(name="x" * 16))
