"""The dialer's socket pool (netns.ports.NamespaceDialer, PoolPolicy).

The policy is sans-IO and tested directly. The dialer runs for real: short-lived maker processes
make sockets in a network namespace and hand them over. As root (what pytest runs as here) the
namespace is this process's own (the maker then has nothing to join) or a `unshare -n` child's;
ports_script.py (test_ports_publish.py) covers the unprivileged user joining a user namespace.
"""

from __future__ import annotations

import errno
import os
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from netns import ports
from netns.ports import LARGEST_BATCH, NamespaceDialer, PoolPolicy
from tests.harness import child_pids

# --- the policy (pure) -------------------------------------------------------------------------


def test_the_first_request_is_the_first_batch_and_a_full_pool_asks_nothing() -> None:
    policy = PoolPolicy(first=32, largest=256)
    assert policy.request(pooled=0, waiting=0) == 32
    assert policy.low_water == 8
    assert policy.request(pooled=9, waiting=0) == 0  # above the low watermark
    assert policy.request(pooled=8, waiting=0) == 32  # at it: refill, same size


def test_the_batch_doubles_while_dials_find_the_pool_empty_and_is_capped() -> None:
    policy = PoolPolicy(first=32, largest=256)
    policy.request(0, 0)
    sizes = []
    for _ in range(5):
        policy.found_empty()
        sizes.append(policy.request(pooled=0, waiting=1))
    assert sizes == [64, 128, 256, 256, 256]
    policy = PoolPolicy(first=32, largest=256)
    policy.request(0, 0)
    assert policy.request(pooled=0, waiting=1) == 64  # dials still waiting: a burst as well


def test_a_request_covers_the_waiting_dials_up_to_the_cap() -> None:
    policy = PoolPolicy(first=32, largest=256)
    policy.request(0, 0)
    policy.found_empty()
    assert policy.request(pooled=0, waiting=100) == 100 + policy.low_water
    policy.found_empty()
    assert policy.request(pooled=0, waiting=1000) == 256


def test_the_batch_shrinks_back_once_the_burst_is_over() -> None:
    policy = PoolPolicy(first=32, largest=256)
    policy.request(0, 0)
    for _ in range(3):
        policy.found_empty()
        policy.request(0, 1)
    assert policy.batch == 256
    sizes = [policy.request(pooled=policy.low_water, waiting=0) for _ in range(4)]
    assert sizes == [128, 64, 32, 32]


# --- the dialer, for real ----------------------------------------------------------------------


def children() -> list[int]:
    """This process's child processes (makers must not be left behind)."""
    return child_pids(os.getpid())


def run_until(
    selector: selectors.BaseSelector, done: Callable[[], bool], seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        for key, mask in selector.select(1.0):
            key.data(mask)


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as sock:
        yield sock


def test_a_burst_larger_than_the_first_batch_is_served_by_makers_that_end(
    server: socket.socket,
) -> None:
    port = server.getsockname()[1]
    before = children()
    dialer = NamespaceDialer(os.getpid(), ["tcp"])
    assert dialer.pid == 0 and len(dialer.pooled()["tcp"]) == 32  # the first batch, no process
    answers: list[tuple[socket.socket | None, int]] = []
    burst = 600  # > the first batch and > the largest batch
    with selectors.DefaultSelector() as selector:
        dialer.register(selector)
        for _ in range(burst):
            dialer.dial("tcp", port, lambda sock, code: answers.append((sock, code)))
        run_until(selector, lambda: len(answers) == burst and dialer.pid == 0)
        assert all(sock is not None for sock, _code in answers)
        assert all(code in (0, errno.EINPROGRESS) for _sock, code in answers)
        accepted = 0
        server.setblocking(False)
        while accepted < burst:  # every connection reached the server
            try:
                server.accept()[0].close()
                accepted += 1
            except BlockingIOError:
                time.sleep(0.05)
        # The batch grew under the burst: a few makers, not burst / first batch.
        assert dialer.makers <= 6, dialer.makers
        assert len(dialer.pooled().get("tcp", [])) <= LARGEST_BATCH + LARGEST_BATCH // 4
        for sock, _code in answers:
            assert sock is not None
            sock.close()
        dialer.close()
    assert children() == before


def test_dial_now_and_udp(server: socket.socket) -> None:
    dialer = NamespaceDialer(os.getpid(), ["tcp"])  # no UDP pooled: made on demand
    with dialer.dial_now("tcp", server.getsockname()[1]) as sock:
        conn, _ = server.accept()
        with conn:
            sock.sendall(b"hi")
            assert conn.recv(2) == b"hi"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with dialer.dial_now("udp", udp.getsockname()[1]) as sock:
            sock.send(b"datagram")
            assert udp.recv(64) == b"datagram"
    dialer.close()
    with pytest.raises(OSError):
        dialer.dial_now("tcp", 1)


def test_a_process_that_is_not_there_cannot_be_joined() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(OSError) as info:
        NamespaceDialer(child.pid)
    assert f"joining process {child.pid}'s network namespace" in str(info.value)
    assert info.value.errno == errno.ENOENT


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1)")
def test_once_the_container_is_gone_dials_fail_cleanly_and_no_maker_is_left() -> None:
    holder = subprocess.Popen(["unshare", "-n", "sleep", "1000"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline  # unshare execs sleep once it has its netns
            time.sleep(0.01)
        before = children()
        dialer = NamespaceDialer(holder.pid, ["tcp"])
    finally:
        holder.kill()
        holder.wait()
    answers: list[tuple[socket.socket | None, int]] = []
    count = 100  # beyond the pool: a maker is started, and cannot join any more
    with selectors.DefaultSelector() as selector:
        dialer.register(selector)
        for _ in range(count):
            dialer.dial("tcp", 80, lambda sock, code: answers.append((sock, code)))
        run_until(selector, lambda: len(answers) == count and dialer.pid == 0)
    # The dialer holds the namespaces open: sockets are still made there (by makers that end),
    # and their connects fail: nothing is there any more, its loopback is down.
    assert all(sock is None for sock, _code in answers)
    assert {code for _sock, code in answers} <= {errno.ENETUNREACH, errno.ECONNREFUSED}
    assert dialer.makers > 1
    dialer.close()
    assert [pid for pid in children() if pid != holder.pid] == [
        pid for pid in before if pid != holder.pid
    ]


def test_a_maker_that_hangs_is_killed_at_its_deadline_and_its_dials_fail(
    server: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A maker that never answers cannot be produced on demand (one stalls when the machine
    # does): its code is replaced by a sleep once the first batch was made for real.
    port = server.getsockname()[1]
    before = children()
    dialer = NamespaceDialer(os.getpid(), ["tcp"])
    monkeypatch.setattr(ports, "MAKER_CODE", "import time; time.sleep(600)")
    now = [0.0]
    dialer.clock = lambda: now[0]
    answers: list[tuple[socket.socket | None, int]] = []
    count = 40  # beyond the first batch of 32: the rest wait for the (hanging) maker
    with selectors.DefaultSelector() as selector:
        dialer.register(selector)
        for _ in range(count):
            dialer.dial("tcp", port, lambda sock, code: answers.append((sock, code)))
        assert dialer.pid != 0 and dialer.next_deadline() == dialer.maker_timeout
        dialer.expire(dialer.maker_timeout - 1)  # not yet
        assert dialer.pid != 0 and len(answers) == 32
        dialer.expire(dialer.maker_timeout)
    assert dialer.pid == 0 and dialer.next_deadline() is None
    assert [code for sock, code in answers[32:]] == [errno.ETIMEDOUT] * (count - 32)
    for sock, _code in answers:
        if sock is not None:
            sock.close()
    dialer.close()
    assert children() == before  # killed and reaped
