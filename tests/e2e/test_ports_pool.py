"""A detached container's published port served from the dialer's socket pool (netns.ports).

No process stays in the container's namespaces for `-p`: short-lived makers fill a pool of
sockets that the monitor (its lean watcher, after the exec) connects. A burst of connections
larger than the first batch (32) must all be served, and no maker may be left behind.
"""

from __future__ import annotations

import os
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
from tests.harness import User

IMAGE = "localhost/rl-test/busybox:latest"
BURST = 150  # > netns.ports.FIRST_BATCH, and more than one grown batch


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-portpool-") as rl:
        yield rl


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if _parent(int(entry)) == pid:
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_a_burst_beyond_the_first_batch_through_a_detached_containers_port(rlm: Rl) -> None:
    port = _free_port()
    rlm.ok("run", "-d", "--name", "burst", "-p", f"127.0.0.1:{port}:8080",
           *_host_python_mounts(), IMAGE, "python3", "-c", TCP_ECHO_SERVER)  # fmt: skip
    conns: list[socket.socket] = []
    try:
        _wait_for_listener(rlm, "burst", 8080)
        pid1 = int(rlm.ok("inspect", "--format", "{{.State.Pid}}", "burst").stdout)
        monitor = _parent(pid1)
        deadline = time.monotonic() + 20
        while " --watch " not in _cmdline(monitor):  # the lean watcher serves the port
            assert time.monotonic() < deadline, _cmdline(monitor)
            time.sleep(0.1)
        conns = [_connect(port) for _ in range(BURST)]  # all open before any data moves
        for index, conn in enumerate(conns):
            conn.sendall(_payload(index))
            conn.shutdown(socket.SHUT_WR)
        for index, conn in enumerate(conns):
            assert _read_all(conn) == _payload(index), index
        # Only the container's pid 1 stays the monitor's child: the makers ended, were reaped.
        deadline = time.monotonic() + 20
        while _children(monitor) != [pid1]:
            assert time.monotonic() < deadline, [_cmdline(p) for p in _children(monitor)]
            time.sleep(0.1)
    finally:
        for conn in conns:
            conn.close()
        rlm("rm", "-f", "-t", "0", "burst")
