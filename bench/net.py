"""Container <-> host TCP throughput: rl's user-mode stack (netns) vs slirp4netns, in one run.

    sudo /opt/rl/venv/bin/python bench/net.py [--mib 1024] [--reps 3]

Runs as the unprivileged test user (tests/harness.py). Each run makes a user+net namespace with
`unshare -Urn`, gives it a network (netns: `open_tap_in` + `NetDriver` in a process of its own;
slirp4netns: `slirp4netns --configure --mtu=65520`), and inside it a Python client connects to
a sink/source process on the host's 127.0.0.1 through 10.0.2.2 and moves --mib MiB one way
(`out`: container -> host, `in`: host -> container). Prints the median Gbit/s per tool and
direction, and the PSS of the process carrying the network at the end of the transfer. No iperf3
on these hosts, so both ends are Python (each well above 10 Gbit/s on loopback alone).

The script copies itself and this tree's `netns` to a directory the user can read, so it measures
this source whatever the installed rl holds. Not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import socket, sys, time
direction, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.stdin.readline()
conn = socket.create_connection(("10.0.2.2", port), timeout=30)
start = time.monotonic()
if direction == "out":
    block = bytes(1 << 20)
    for _ in range(mib):
        conn.sendall(block)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)  # the host's FIN after it has read everything
else:
    total = 0
    while data := conn.recv(1 << 20):
        total += len(data)
    assert total == mib << 20, total
print(mib * 8 * 2**20 / (time.monotonic() - start) / 1e9, flush=True)
"""

# The netns side, in a process of its own importing no more than a monitor would: its PSS is what
# the network costs a monitor.
DRIVER = """
import os, sys, time
from netns.config import NetConfig
from netns.driver import NetDriver
from netns.tap import open_tap_in

def pss_kib():
    with open("/proc/self/smaps_rollup") as file:
        for line in file:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0

pid, size = int(sys.argv[1]), int(sys.argv[2]) << 10
tap = open_tap_in(pid)
config = NetConfig(allow_host_loopback=True, tcp_receive_buffer=size, tcp_send_buffer=size)
driver = NetDriver(tap, config)
idle = peak = pss_kib()
last = 0.0

def done():
    global peak, last
    now = time.monotonic()
    if now - last > 0.2:
        last = now
        peak = max(peak, pss_kib())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False

print("ready", flush=True)
driver.serve(until=done)
print(peak, idle, flush=True)
"""

SERVER = """
import socket, sys
direction, mib = sys.argv[1], int(sys.argv[2])
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
if direction == "out":
    total = 0
    while data := conn.recv(1 << 20):
        total += len(data)
    assert total == mib << 20, total
else:
    block = bytes(1 << 20)
    for _ in range(mib):
        conn.sendall(block)
conn.close()
"""


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def one_run(tool: str, direction: str, mib: int, buffer_kib: int) -> tuple[float, int, int]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, direction, str(mib)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    child = subprocess.Popen(
        ["unshare", "-Urn", sys.executable, "-c", CHILD, direction, port, str(mib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    time.sleep(0.2)  # unshare has made the namespaces by then
    helper: subprocess.Popen[str]
    if tool == "netns":
        helper = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(child.pid), str(buffer_kib)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),  # where the copy of netns is
        )
        assert helper.stdout is not None
        assert helper.stdout.readline().strip() == "ready"
    else:
        read_fd, write_fd = os.pipe()
        argv = ["slirp4netns", "--configure", "--mtu=65520", f"--ready-fd={write_fd}"]
        argv += [str(child.pid), "tap0"]
        helper = subprocess.Popen(
            argv,
            pass_fds=[write_fd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        os.close(write_fd)
        os.read(read_fd, 1)
        os.close(read_fd)
    child.stdin.write("go\n")
    child.stdin.flush()
    peak = idle = 0
    while child.poll() is None:
        if tool != "netns":
            peak = max(peak, pss_kib(helper.pid))
        time.sleep(0.2)
    rate = float(child.stdout.read().strip())
    server.wait(timeout=30)
    if tool == "netns":
        output, _ = helper.communicate(timeout=30)
        peak, idle = (int(word) for word in output.split()[-2:])
    else:
        helper.terminate()
        helper.wait(timeout=10)
    return rate, peak, idle


def user_main(mib: int, reps: int, buffer_kib: int) -> None:
    results: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    for _ in range(reps):
        for direction in ("out", "in"):
            for tool in ("netns", "slirp4netns"):
                run = one_run(tool, direction, mib, buffer_kib)
                results.setdefault((tool, direction), []).append(run)
    print(f"TCP through 10.0.2.2 to 127.0.0.1, {mib} MiB per run, {reps} runs, medians")
    print(f"netns: TCP buffers {buffer_kib} KiB per direction and connection")
    for direction, label in (("out", "container -> host"), ("in", "host -> container")):
        rates = {}
        for tool in ("netns", "slirp4netns"):
            runs = results[(tool, direction)]
            rates[tool] = statistics.median(run[0] for run in runs)
            peak = max(run[1] for run in runs) / 1024
            idle = max(run[2] for run in runs) / 1024
            at_rest = f" (before the transfer {idle:4.1f} MB)" if tool == "netns" else ""
            print(
                f"{label:<18} {tool:<12} {rates[tool]:6.2f} Gbit/s   peak PSS {peak:5.1f} MB"
                + at_rest
            )
        print(f"{label:<18} ratio netns / slirp4netns: {rates['netns'] / rates['slirp4netns']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--buffer", type=int, default=1024, help="netns TCP buffers, KiB")
    parser.add_argument("--as-user", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_user:
        user_main(args.mib, args.reps, args.buffer)
        return
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))
    from tests.harness import ensure_user, installed_tool

    user = ensure_user()
    copy = Path(tempfile.mkdtemp(prefix="rl-bench-net-", dir="/tmp"))
    try:
        shutil.copyfile(__file__, copy / "net.py")
        shutil.copytree(
            repo / "netns", copy / "netns", ignore=shutil.ignore_patterns("__pycache__")
        )
        for path in [copy, *copy.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        argv = [installed_tool("python"), str(copy / "net.py"), "--as-user"]
        argv += ["--mib", str(args.mib), "--reps", str(args.reps), "--buffer", str(args.buffer)]
        result = user.run(argv, timeout=3600)
        print(result.stdout, end="")
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            sys.exit(result.returncode)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    main()
