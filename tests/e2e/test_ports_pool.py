"""A detached container's published port served from the dialer's socket pool (netns.ports).

No process stays in the container's namespaces for `-p`: short-lived makers fill a pool of
sockets that the monitor (its lean watcher, after the exec) connects. A burst of connections
larger than the first batch (32) must all be served, and no maker may be left behind.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.e2e.test_network_load import (
    TCP_ECHO_SERVER,
    _connect,
    _free_port,
    _host_python_mounts,
    _payload,
    _read_all,
    _wait_for_listener,
)
from tests.harness import User, child_pids, cmdline, parent_pid

IMAGE = "localhost/rl-test/busybox:latest"
BURST = 150  # > netns.ports.FIRST_BATCH, and more than one grown batch


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-portpool-") as rl:
        yield rl


def test_a_burst_beyond_the_first_batch_through_a_detached_containers_port(rlm: Rl) -> None:
    port = _free_port()
    rlm.ok("run", "-d", "--name", "burst", "-p", f"127.0.0.1:{port}:8080",
           *_host_python_mounts(), IMAGE, "python3", "-c", TCP_ECHO_SERVER)  # fmt: skip
    conns: list[socket.socket] = []
    try:
        _wait_for_listener(rlm, "burst", 8080)
        pid1 = int(rlm.ok("inspect", "--format", "{{.State.Pid}}", "burst").stdout)
        monitor = parent_pid(pid1)
        deadline = time.monotonic() + 20
        while " --watch " not in cmdline(monitor):  # the lean watcher serves the port
            assert time.monotonic() < deadline, cmdline(monitor)
            time.sleep(0.1)
        conns = [_connect(port) for _ in range(BURST)]  # all open before any data moves
        for index, conn in enumerate(conns):
            conn.sendall(_payload(index))
            conn.shutdown(socket.SHUT_WR)
        for index, conn in enumerate(conns):
            assert _read_all(conn) == _payload(index), index
        # Only the container's pid 1 stays the monitor's child: the makers ended, were reaped.
        deadline = time.monotonic() + 20
        while child_pids(monitor) != [pid1]:
            assert time.monotonic() < deadline, [cmdline(p) for p in child_pids(monitor)]
            time.sleep(0.1)
    finally:
        for conn in conns:
            conn.close()
        rlm("rm", "-f", "-t", "0", "burst")
