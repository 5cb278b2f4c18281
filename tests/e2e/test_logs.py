"""`rl logs` end to end, as the unprivileged user, on containers run with `rl run -d`.

Expected output and errors come from podman 4.3 (k8s-file driver, conmon 2.1.6) run rootless
on the same machine: stdout entries go to stdout and stderr entries to stderr, a partial line
is continued by the next entry, several containers get a short-ID (or, with -n, name) prefix.
"""

from __future__ import annotations

import calendar
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.harness import User, installed_tool, rl_binary

IMAGE = "localhost/rl-test/busybox:latest"


pytestmark = pytest.mark.e2e

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-logs-") as rl:
        yield rl


def _argv(rl: Rl, *args: str) -> list[str]:
    return rl.user.argv([rl_binary(), "--root", str(rl.root), *args], rl.user.env())


def run_detached(rl: Rl, name: str, script: str, *flags: str) -> str:
    """`rl run -d --name NAME … IMAGE sh -c SCRIPT`; the container's ID."""
    result = rl.ok("run", "-d", "--name", name, *flags, IMAGE, "sh", "-c", script)
    container_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", container_id), result
    return container_id


def wait_exited(rl: Rl, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listing = rl.ok("ps", "-a").stdout.splitlines()
        row = [line for line in listing if line.split() and line.split()[-1] == name]
        assert row, f"{name} is not listed: {listing}"
        if "Exited" in row[0]:
            return
        assert time.monotonic() < deadline, f"{name} did not exit: {row[0]}"
        time.sleep(0.2)


def parse_go_time(text: str) -> float:
    """An RFC3339Nano time as `rl logs -t` prints it -> Unix time."""
    match = TIMESTAMP.fullmatch(text)
    assert match, text
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    fraction = float("0" + (match.group(1) or ""))
    zone = match.group(2)
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds + fraction - (offset if zone[:1] == "+" else -offset)


FINISHED = "logs-done"


@pytest.fixture(scope="module")
def finished(rlm: Rl) -> str:
    """A container that wrote to both streams, with a pause in the middle, and exited; its ID."""
    container_id = run_detached(rlm, FINISHED, "echo a; echo b >&2; sleep 1; echo c")
    wait_exited(rlm, FINISHED)
    return container_id


def test_logs_after_exit(rlm: Rl, finished: str) -> None:
    result = rlm.ok("logs", FINISHED)
    assert result.stdout == "a\nc\n"
    assert result.stderr == "b\n"
    assert rlm.ok("container", "logs", finished).stdout == "a\nc\n"


def test_logs_by_id_and_latest(rlm: Rl, finished: str) -> None:
    container_id = run_detached(rlm, "logs-latest", "echo newest")
    wait_exited(rlm, "logs-latest")
    assert rlm.ok("logs", container_id[:12]).stdout == "newest\n"
    assert rlm.ok("logs", "-l").stdout == "newest\n"


def test_partial_lines_are_continued(rlm: Rl) -> None:
    run_detached(rlm, "logs-partial", "printf abc; sleep 0.5; echo def; printf tail")
    wait_exited(rlm, "logs-partial")
    assert rlm.ok("logs", "logs-partial").stdout == "abcdef\ntail"


def test_follow_ends_when_the_container_exits(rlm: Rl) -> None:
    run_detached(rlm, "logs-follow", "echo start; sleep 2; echo middle >&2; sleep 1; echo end")
    result = rlm("logs", "-f", "logs-follow", timeout=60)
    assert result.returncode == 0, result
    # "end" came 3 s after `run -d` returned: only a follow that waited for it has it.
    assert result.stdout == "start\nend\n"
    assert result.stderr == "middle\n"
    wait_exited(rlm, "logs-follow", timeout=5)


def test_follow_ends_when_the_container_is_removed(rlm: Rl) -> None:
    run_detached(rlm, "logs-removed", "echo hello; exec sleep 1000")
    proc = subprocess.Popen(
        _argv(rlm, "logs", "-f", "logs-removed"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"hello\n"
        assert proc.poll() is None  # still following
        rlm.ok("rm", "-f", "logs-removed")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tail(rlm: Rl) -> None:
    run_detached(rlm, "logs-tail", "for i in 1 2 3 4 5; do echo $i; done")
    wait_exited(rlm, "logs-tail")
    assert rlm.ok("logs", "--tail", "2", "logs-tail").stdout == "4\n5\n"
    assert rlm.ok("logs", "--tail=1", "logs-tail").stdout == "5\n"
    assert rlm.ok("logs", "--tail", "0", "logs-tail").stdout == ""
    assert rlm.ok("logs", "--tail", "-1", "logs-tail").stdout == "1\n2\n3\n4\n5\n"
    assert rlm.ok("logs", "--tail", "50", "logs-tail").stdout == "1\n2\n3\n4\n5\n"
    bad = rlm("logs", "--tail", "x", "logs-tail")
    assert bad.returncode == 125
    assert 'invalid argument "x" for "--tail" flag' in bad.stderr


def test_timestamps(rlm: Rl, finished: str) -> None:
    result = rlm.ok("logs", "-t", FINISHED)
    lines = result.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["a", "c"]
    first, last = (parse_go_time(line.split(" ", 1)[0]) for line in lines)
    assert 0.5 < last - first < 30  # `sleep 1` between them
    assert abs(time.time() - last) < 3600
    stamp, text = result.stderr.rstrip("\n").split(" ", 1)
    assert text == "b" and first <= parse_go_time(stamp) <= last


def test_since_and_until(rlm: Rl) -> None:
    run_detached(rlm, "logs-window", "echo early; sleep 2; echo late")
    wait_exited(rlm, "logs-window")
    listing = rlm.ok("logs", "-t", "logs-window").stdout.splitlines()
    stamps = [line.split(" ", 1)[0] for line in listing]
    assert len(stamps) == 2

    def logs(*flags: str) -> str:
        return rlm.ok("logs", *flags, "logs-window").stdout

    # podman's bounds are strict: since the first entry's own time leaves it out.
    assert logs("--since", stamps[0]) == "late\n"
    assert logs("--until", stamps[1]) == "early\n"
    assert logs("--since", stamps[0], "--until", stamps[1]) == ""
    middle = (parse_go_time(stamps[0]) + parse_go_time(stamps[1])) / 2
    assert logs("--since", f"{middle:.3f}") == "late\n"  # a Unix time
    assert logs("--until", f"{middle:.3f}") == "early\n"
    assert logs("--since", "1h") == "early\nlate\n"  # a duration before now
    assert logs("--until", "1h") == "early\nlate\n"  # a duration after now
    assert logs("--since", "2099-01-01") == ""
    assert logs("--since", "2000-01-01T00:00:00Z") == "early\nlate\n"
    bad = rlm("logs", "--since", "xyz", "logs-window")
    assert bad.returncode == 125
    assert bad.stderr == 'Error: parsing --since "xyz": unable to interpret time value\n'


def test_two_containers(rlm: Rl, finished: str) -> None:
    other_id = run_detached(rlm, "logs-other", "echo one; echo two")
    wait_exited(rlm, "logs-other")
    mine, other = finished[:12], other_id[:12]
    result = rlm.ok("logs", FINISHED, "logs-other")
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted([f"{mine} a", f"{mine} c", f"{other} one", f"{other} two"])
    # Each container's own lines stay in order.
    assert [line for line in lines if line.startswith(other)] == [f"{other} one", f"{other} two"]
    assert [line for line in lines if line.startswith(mine)] == [f"{mine} a", f"{mine} c"]
    assert result.stderr == f"{mine} b\n"
    named = rlm.ok("logs", "-n", FINISHED, "logs-other").stdout.splitlines()
    assert sorted(named) == ["logs-done a", "logs-done c", "logs-other one", "logs-other two"]
    # -n alone does not prefix a single container's lines (podman).
    assert rlm.ok("logs", "-n", "logs-other").stdout == "one\ntwo\n"


def test_errors_like_podman(rlm: Rl, finished: str) -> None:
    missing = rlm("logs", "nope")
    assert (missing.returncode, missing.stderr) == (
        125,
        'Error: no container with name or ID "nope" found: no such container\n',
    )
    # Nothing is printed when one of several containers is missing.
    partly = rlm("logs", FINISHED, "nope")
    assert partly.returncode == 125 and partly.stdout == ""
    none_given = rlm("logs")
    assert none_given.returncode == 125
    assert none_given.stderr == "Error: specify at least one container name or ID to log\n"
    both = rlm("logs", "-l", FINISHED)
    assert both.returncode == 125
    assert both.stderr == "Error: --latest and containers cannot be used together\n"


def test_none_log_driver(rlm: Rl) -> None:
    run_detached(rlm, "logs-none", "echo hidden", "--log-driver", "none")
    wait_exited(rlm, "logs-none")
    result = rlm("logs", "logs-none")
    assert result.returncode == 125
    assert result.stderr == (
        "Error: this container is using the 'none' log driver, cannot read logs: "
        "this container is not logging output\n"
    )


def test_log_file_is_k8s_file(rlm: Rl, finished: str) -> None:
    log = rlm.root / "containers" / finished / "userdata" / "ctr.log"
    lines = log.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["stdout F a", "stderr F b", "stdout F c"]
    for line in lines:
        stamp = line.split(" ", 1)[0]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d", stamp), line


def test_max_size_rotation(rlm: Rl) -> None:
    # podman: 7 entries of 51 bytes with max-size=200 leave line7 alone in the file.
    script = "for i in 1 2 3 4 5 6 7; do echo line$i; sleep 0.1; done"
    run_detached(rlm, "logs-rotate", script, "--log-opt", "max-size=200")
    wait_exited(rlm, "logs-rotate")
    assert rlm.ok("logs", "logs-rotate").stdout == "line7\n"


WRITER = """
import sys, time
from pathlib import Path
from rootless.containers.store import ContainerStore
from rootless.monitor.logfile import LogWriter

store = ContainerStore.open(Path(sys.argv[1]))
record = store.create(name=sys.argv[2], image_id="0" * 64, image_name="none", command=["none"])
store.mark_running(record.id)
writer = LogWriter(str(store.userdata(record.id) / "ctr.log"), int(sys.argv[3]))
print(record.id, flush=True)
sys.stdin.readline()  # the test follows the log now
for i in range(300):
    writer.write("stdout" if i % 2 else "stderr", b"line%03d\\n" % i)
    time.sleep(0.01)
writer.close()
store.mark_exited(record.id, 0)
"""


def test_follow_across_rotations(rl: Rl, workdir: Path) -> None:
    """-f reads on across max-size rotations, without the monitor: a stand-in process writes
    the log through LogWriter (~55 entries per 3000-byte file, 0.5 s per file)."""
    script = workdir / "writer.py"
    script.write_text(WRITER)
    script.chmod(0o644)
    writer = subprocess.Popen(
        rl.user.argv(
            [installed_tool("python"), str(script), str(rl.root), "rotating", "3000"],
            rl.user.env(),
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd="/",
    )
    follow: subprocess.Popen[bytes] | None = None
    try:
        assert writer.stdin is not None and writer.stdout is not None
        assert re.fullmatch(rb"[0-9a-f]{64}\n", writer.stdout.readline())
        follow = subprocess.Popen(
            _argv(rl, "logs", "-f", "rotating"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        writer.stdin.write(b"go\n")
        writer.stdin.flush()
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        assert writer.wait(timeout=30) == 0
    finally:
        for proc in (writer, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    odd = [int(line[4:]) for line in out.decode().split()]
    even = [int(line[4:]) for line in err.decode().split()]
    assert all(n % 2 for n in odd) and not any(n % 2 for n in even)
    # In order, each line once; the first and last files are complete. (A file written and
    # rotated away between two polls would be lost, as with podman; at 0.5 s per file and
    # 0.1 s polls that takes a badly stalled machine.)
    for numbers in (odd, even):
        assert numbers == sorted(set(numbers))
    assert even[0] == 0 and odd[-1] == 299
    assert len(odd) + len(even) > 150
    # What is left in the file is the end of the stream.
    assert rl.ok("logs", "rotating").stdout.splitlines()[-1] == "line299"


# --- foreground runs (no -d): logged like detached ones, as podman's conmon logs them --------


def log_entries(rl: Rl, name: str) -> list[tuple[str, str, str]]:
    """(stream, F|P, text) of each entry of the container's ctr.log, in file order."""
    container_id = rl.ok("inspect", "--format", "{{.Id}}", name).stdout.strip()
    log = rl.root / "containers" / container_id / "userdata" / "ctr.log"
    entries = []
    for line in log.read_bytes().decode().split("\n")[:-1]:
        _stamp, stream, kind, text = line.split(" ", 3)
        entries.append((stream, kind, text))
    return entries


def test_foreground_run_is_logged(rlm: Rl) -> None:
    script = "echo out1; echo err1 >&2; echo out2; printf tail; exit 3"
    run = rlm("run", "--name", "fg-log", IMAGE, "sh", "-c", script)
    # The run itself is unchanged: each stream to its own, the exit code passed on.
    assert (run.returncode, run.stdout, run.stderr) == (3, "out1\nout2\ntail", "err1\n")
    entries = log_entries(rlm, "fg-log")
    # Two pipes: the order between the streams is the reader's (podman's too), each stream's
    # own order is kept.
    assert [e for e in entries if e[0] == "stdout"] == [
        ("stdout", "F", "out1"),
        ("stdout", "F", "out2"),
        ("stdout", "P", "tail"),
    ]
    assert [e for e in entries if e[0] == "stderr"] == [("stderr", "F", "err1")]
    logs = rlm.ok("logs", "fg-log")
    assert (logs.stdout, logs.stderr) == ("out1\nout2\ntail", "err1\n")


def test_foreground_stdin_is_passed_and_logged(rlm: Rl) -> None:
    run = rlm("run", "-i", "--name", "fg-stdin", IMAGE, "cat", input="typed\n")
    assert (run.returncode, run.stdout) == (0, "typed\n")
    assert rlm.ok("logs", "fg-stdin").stdout == "typed\n"


@pytest.mark.parametrize("driver", ["none", "passthrough"])
def test_foreground_without_log(rlm: Rl, driver: str) -> None:
    name = f"fg-{driver}"
    script = "echo x; echo y >&2"
    run = rlm("run", "--name", name, "--log-driver", driver, IMAGE, "sh", "-c", script)
    assert (run.returncode, run.stdout, run.stderr) == (0, "x\n", "y\n")
    container_id = rlm.ok("inspect", "--format", "{{.Id}}", name).stdout.strip()
    assert not (rlm.root / "containers" / container_id / "userdata" / "ctr.log").exists()
    result = rlm("logs", name)
    assert result.returncode == 125
    assert result.stderr == (
        f"Error: this container is using the '{driver}' log driver, cannot read logs: "
        "this container is not logging output\n"
    )


def test_foreground_max_size(rlm: Rl) -> None:
    script = "for i in 1 2 3 4 5 6 7; do echo line$i; done"
    run = rlm("run", "--name", "fg-rotate", "--log-opt", "max-size=200", IMAGE, "sh", "-c", script)
    assert run.stdout == "".join(f"line{i}\n" for i in range(1, 8))
    # What rotation left (podman: entries of 51 bytes, so at most 3 in 200 bytes) is the end.
    logged = rlm.ok("logs", "fg-rotate").stdout.splitlines()
    assert 1 <= len(logged) <= 3 and logged[-1] == "line7"


def test_foreground_epipe_ends_the_container(rlm: Rl) -> None:
    """`rl run IMG yes | head -1`: once head is gone the container must end, as it did when
    it wrote to the pipe itself (a hang here fails on the timeout)."""
    import shlex

    command = shlex.join(_argv(rlm, "run", "--name", "fg-yes", IMAGE, "yes")) + " | head -1"
    result = subprocess.run(
        ["sh", "-c", command], capture_output=True, timeout=60, cwd="/", check=False
    )
    assert result.stdout == b"y\n"
    assert rlm.ok("inspect", "--format", "{{.State.Status}}", "fg-yes").stdout == "exited\n"


def test_foreground_binary_output_intact(rlm: Rl) -> None:
    """20 MB of random bytes through rl's copy to a pipe, and back out of the log."""
    import hashlib

    script = (
        "head -c 20000000 /dev/urandom > /tmp/data && sha256sum < /tmp/data >&2 && cat /tmp/data"
    )
    run = subprocess.run(
        _argv(rlm, "run", "--name", "fg-binary", IMAGE, "sh", "-c", script),
        capture_output=True,
        timeout=300,
        cwd="/",
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    expected = run.stderr.split()[0].decode()
    assert len(run.stdout) == 20_000_000
    assert hashlib.sha256(run.stdout).hexdigest() == expected
    # rl logs gives the bytes back: F entries end with the newline, P entries do not.
    logs = subprocess.run(
        _argv(rlm, "logs", "fg-binary"), capture_output=True, timeout=300, cwd="/", check=False
    )
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert hashlib.sha256(logs.stdout).hexdigest() == expected


def test_foreground_tty_is_logged_as_stdout(rlm: Rl) -> None:
    run = rlm("run", "-t", "--name", "fg-tty", IMAGE, "sh", "-c", "echo ttyout; echo ttyerr >&2")
    assert (run.returncode, run.stdout) == (0, "ttyout\r\nttyerr\r\n")
    # A terminal has one stream: podman logs it as stdout, "\r" and all.
    assert log_entries(rlm, "fg-tty") == [
        ("stdout", "F", "ttyout\r"),
        ("stdout", "F", "ttyerr\r"),
    ]
    assert rlm.ok("logs", "fg-tty").stdout == "ttyout\r\nttyerr\r\n"


def test_follow_a_foreground_run(rlm: Rl) -> None:
    """`rl logs -f` on a container running in the foreground elsewhere prints what it wrote
    and ends with it."""
    script = "echo one; read x; echo two"
    run = subprocess.Popen(
        _argv(rlm, "run", "-i", "--name", "fg-follow", IMAGE, "sh", "-c", script),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
    )
    follow: subprocess.Popen[bytes] | None = None
    try:
        assert run.stdin is not None and run.stdout is not None
        assert run.stdout.readline() == b"one\n"  # running, and "one" is logged by now
        follow = subprocess.Popen(
            _argv(rlm, "logs", "-f", "fg-follow"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        assert follow.stdout is not None
        assert follow.stdout.readline() == b"one\n"
        run.stdin.write(b"go\n")
        run.stdin.close()
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        assert out == b"two\n"
        assert run.wait(timeout=60) == 0
    finally:
        for proc in (run, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
