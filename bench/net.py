"""Container <-> host TCP throughput: rl's user-mode stack (netns) vs slirp4netns, in one run.

    sudo /opt/rl/venv/bin/python bench/net.py [--mib 1024] [--reps 3] [--seconds 5]

Runs as the unprivileged test user (tests/harness.py). Each run makes a user+net namespace with
`unshare -Urn`, gives it a network (netns: `open_tap_in` + `NetDriver` in a process of its own;
slirp4netns: `slirp4netns --configure --mtu=65520`), and inside it a Python client connects to
a sink/source process on the host's 127.0.0.1 through 10.0.2.2 and moves --mib MiB one way
(`out`: container -> host, `in`: host -> container). Prints the median Gbit/s per tool and
direction, and the PSS of the process carrying the network at the end of the transfer. No iperf3
on these hosts, so both ends are Python (each well above 10 Gbit/s on loopback alone).

The script copies itself and this tree's `netns` to a directory the user can read, so it measures
this source whatever the installed rl holds. Not a test: nothing asserts on speed.

Published port (when iperf3 is installed): an `iperf3 -s` in a user+net namespace, published on
127.0.0.1 by `netns.ports.PortPublisher` (its own process; PSS = it + its namespace helper), and
an `iperf3 -c` on the host for --seconds each way (`-R`: container -> host); and, for
comparison, podman's own (`podman --runtime runc run -p ... --rootfs DIR iperf3 -s`, DIR holding
only the host's iperf3 and its libraries: rootlessport + slirp4netns) and, when `pasta` is
installed (`apt-get install passt`), pasta attached to such a namespace (`pasta -t`).

The machine is shared and small: run it a few times, note `uptime`, compare the ratios of one run
rather than absolute numbers of different runs.
"""

from __future__ import annotations

import argparse
import json
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


PUBLISHER = """
import os, selectors, sys, time
from netns.ports import PortPublisher, parse_publish

def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

pid = int(sys.argv[1])
publisher = PortPublisher([parse_publish("127.0.0.1::5201")], pid=pid)
print(publisher.bound[0].host_port, flush=True)
peak, last = 0, 0.0
with selectors.DefaultSelector() as selector:
    publisher.register(selector)
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        for key, mask in selector.select(0.2):
            key.data(mask)
        if time.monotonic() - last > 0.2:
            last = time.monotonic()
            peak = max(peak, pss_kib(os.getpid()) + pss_kib(publisher.dialer.pid))
    publisher.close()
print(peak, flush=True)
"""


def iperf3_client(port: int, seconds: int, reverse: bool) -> float:
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"]
    result = subprocess.run(
        argv + (["-R"] if reverse else []), capture_output=True, text=True, check=False
    )
    report = json.loads(result.stdout)
    if "error" in report:
        raise RuntimeError(f"iperf3: {report['error']}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def network_processes_pss() -> int:
    """PSS of this user's rootlessport and slirp4netns processes (podman's per-container
    network), KiB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as file:
                name = file.read().strip()
            if (
                name.startswith(("rootlessport", "slirp4netns"))
                and os.stat(f"/proc/{entry}").st_uid == os.getuid()
            ):
                total += pss_kib(int(entry))
        except OSError:
            continue
    return total


def published_run(tool: str, reverse: bool, seconds: int, rootfs: str) -> tuple[float, int]:
    """Gbit/s through a published port (reverse: container -> host), and the peak PSS (KiB)
    of what publishes it."""
    if tool == "pasta":
        return pasta_run(reverse, seconds)
    if tool == "netns":
        server = subprocess.Popen(
            ["unshare", "-Urn", "sh", "-c", "ip link set lo up && exec iperf3 -s -1 -p 5201"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        publisher = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(server.pid)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        assert publisher.stdout is not None
        port = int(publisher.stdout.readline())
        time.sleep(0.3)
        try:
            rate = iperf3_client(port, seconds, reverse)
        finally:
            server.wait(timeout=30)
        peak = int(publisher.communicate(timeout=30)[0].split()[-1])
        return rate, peak
    port = 15201
    name = "rl-bench-published"
    argv = ["podman", "--runtime", "runc", "run", "--rm", "-d", "--name", name]
    argv += ["-p", f"127.0.0.1:{port}:5201", "--rootfs", rootfs, "/bin/iperf3", "-s", "-1"]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        time.sleep(1.0)
        peak = network_processes_pss()
        rate = iperf3_client(port, seconds, reverse)
        peak = max(peak, network_processes_pss())
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
    return rate, peak


def pasta_run(reverse: bool, seconds: int) -> tuple[float, int]:
    """The same through pasta (passt's namespace mode: podman >= 4.4's other rootless network;
    Debian's podman 4.3 predates it, so pasta is attached to the namespace by hand). From the
    host's loopback pasta splices between sockets in both namespaces, as the publisher does."""
    server = subprocess.Popen(
        ["unshare", "-Urn", "sh", "-c", "ip link set lo up && exec iperf3 -s -1 -p 5201"],
        stdout=subprocess.DEVNULL,
    )
    port = 15202
    time.sleep(0.3)
    argv = ["pasta", "--foreground", "--quiet", "-t", f"127.0.0.1/{port}:5201"]
    argv += ["-T", "none", "-u", "none", "-U", "none", str(server.pid)]
    pasta = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        if pasta.poll() is not None:
            raise RuntimeError(
                f"pasta: {pasta.stderr.read().decode().strip() if pasta.stderr else ''}"
            )
        rate = iperf3_client(port, seconds, reverse)
        peak = 0  # pasta makes itself undumpable: its smaps cannot be read
    finally:
        pasta.terminate()
        pasta.wait(timeout=10)
        server.kill()
        server.wait(timeout=10)
    return rate, peak


def published_main(reps: int, seconds: int, rootfs: str) -> None:
    print(f"Published port 127.0.0.1 -> container, iperf3 {seconds} s, {reps} runs, medians")
    tools = ("netns", "podman") + (("pasta",) if shutil.which("pasta") else ())
    for reverse, label in ((False, "host -> container"), (True, "container -> host")):
        runs: dict[str, list[tuple[float, int]]] = {tool: [] for tool in tools}
        failed: dict[str, str] = {}
        for _ in range(reps):  # interleaved: the load on a shared machine varies
            for tool in tools:
                if tool in failed:
                    continue
                try:
                    runs[tool].append(published_run(tool, reverse, seconds, rootfs))
                except (OSError, RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
                    failed[tool] = str(exc)
        rates: dict[str, float] = {}
        for tool in tools:
            if tool in failed:
                print(f"{label:<18} {tool:<12} failed: {failed[tool]}")
                continue
            rates[tool] = statistics.median(run[0] for run in runs[tool])
            peak = max(run[1] for run in runs[tool]) / 1024
            what = {"netns": "publisher + helper", "pasta": "pasta"}.get(
                tool, "rootlessport + slirp4netns"
            )
            memory = f"peak PSS {peak:5.1f} MB ({what})" if peak else ""
            print(f"{label:<18} {tool:<12} {rates[tool]:6.2f} Gbit/s   {memory}".rstrip())
        for other in ("podman", "pasta"):
            if "netns" in rates and other in rates:
                ratio = rates["netns"] / rates[other]
                print(f"{label:<18} ratio netns / {other}: {ratio:.2f}")


def iperf3_rootfs(directory: Path) -> None:
    """A root filesystem holding only the host's iperf3 and the libraries it links."""
    (directory / "bin").mkdir(parents=True)
    for name in ("tmp", "run", "etc"):
        (directory / name).mkdir()
    shutil.copy2("/usr/bin/iperf3", directory / "bin" / "iperf3")
    ldd = subprocess.run(["ldd", "/usr/bin/iperf3"], capture_output=True, text=True, check=True)
    for word in ldd.stdout.split():
        if word.startswith("/"):
            target = directory / word.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(word), target)


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


def user_main(mib: int, reps: int, buffer_kib: int, seconds: int, rootfs: str) -> None:
    if seconds <= 0:
        pass
    elif shutil.which("iperf3"):
        published_main(reps, seconds, rootfs)
    else:
        print("Published port: skipped (no iperf3: apt-get install iperf3)")
    if mib == 0:
        return
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
    parser.add_argument(
        "--seconds", type=int, default=5, help="iperf3 run length (0: no published-port runs)"
    )
    parser.add_argument("--rootfs", default="", help=argparse.SUPPRESS)
    parser.add_argument("--as-user", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_user:
        user_main(args.mib, args.reps, args.buffer, args.seconds, args.rootfs)
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
        rootfs = copy / "iperf3-rootfs"
        if shutil.which("iperf3"):
            iperf3_rootfs(rootfs)
            for path in [rootfs, *rootfs.rglob("*")]:
                os.lchown(path, user.uid, user.gid)
        argv = [installed_tool("python"), str(copy / "net.py"), "--as-user"]
        argv += ["--mib", str(args.mib), "--reps", str(args.reps), "--buffer", str(args.buffer)]
        argv += ["--seconds", str(args.seconds), "--rootfs", str(rootfs)]
        result = user.run(argv, timeout=3600)
        print(result.stdout, end="")
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            sys.exit(result.returncode)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    main()
