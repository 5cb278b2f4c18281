"""The container executor (rootless.runtime.executor) run as the unprivileged user on bundles
written by hand: namespaces, ids, mounts, capabilities, exit codes, terminal, signals, cleanup.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.oci_bundle import (
    executor_argv,
    id_mappings,
    make_rootfs,
    make_spec,
    run_executor,
    write_bundle,
)
from tests.harness import Result, User

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rootfs(user: User) -> Iterator[Path]:
    base = user.make_dir("rl-executor-rootfs-")
    yield make_rootfs(base / "rootfs", user)
    shutil.rmtree(base, ignore_errors=True)


def run(
    user: User,
    workdir: Path,
    rootfs: Path,
    args: list[str],
    *flags: str,
    input: bytes | str | None = None,
    **spec_args: Any,
) -> Result:
    spec = make_spec(user, args, root=rootfs, **spec_args)
    bundle = write_bundle(workdir / "bundle", spec, user)
    return run_executor(user, bundle, *flags, input=input)


def sh(user: User, workdir: Path, rootfs: Path, script: str, *flags: str, **kw: Any) -> Result:
    return run(user, workdir, rootfs, ["sh", "-c", script], *flags, **kw)


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


def test_user_namespace_maps_pid_and_hostname(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(
        user,
        workdir,
        rootfs,
        "cat /proc/self/uid_map /proc/self/gid_map; echo pid=$$; hostname; id",
    )
    assert result.returncode == 0, result
    uids, gids = id_mappings(user)
    maps = [line.split() for line in result.stdout.splitlines()[:4]]
    assert maps == [[str(m["containerID"]), str(m["hostID"]), str(m["size"])] for m in uids + gids]
    assert "pid=1" in result.stdout
    assert "\ntesthost\n" in result.stdout
    assert "uid=0(root) gid=0(root)" in result.stdout


def test_masked_and_readonly_paths(user: User, workdir: Path, rootfs: Path) -> None:
    script = (
        "echo keys=$(wc -c < /proc/keys); echo acpi=$(ls -A /proc/acpi | wc -l);"
        "echo firmware=$(ls -A /sys/firmware | wc -l);"
        "echo 1 > /proc/sys/kernel/ns_last_pid && echo sys-writable;"
        "touch /sys/x 2>/dev/null && echo sysfs-writable; echo done"
    )
    result = sh(user, workdir, rootfs, script)
    assert result.returncode == 0, result
    assert "keys=0" in result.stdout
    assert "acpi=0" in result.stdout
    assert "firmware=0" in result.stdout
    assert "writable" not in result.stdout
    assert "Read-only file system" in result.stderr


def test_no_host_process_visible(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(user, workdir, rootfs, "ls /proc | grep -c '^[0-9]'; ps -o pid,args")
    assert result.returncode == 0, result
    # sh (pid 1) and ls/grep: nothing from the host.
    assert int(result.stdout.splitlines()[0]) <= 3
    assert "ps -o pid,args" in result.stdout
    assert "pytest" not in result.stdout and "systemd" not in result.stdout


def test_read_only_root_and_writable_tmpfs(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(user, workdir, rootfs, "touch /etc/x || echo refused; touch /tmp/x && echo tmp-ok")
    assert "refused" in result.stdout
    assert "tmp-ok" in result.stdout
    assert not (rootfs / "etc" / "x").exists()


def test_bind_mounts_rw_and_ro(user: User, workdir: Path, rootfs: Path) -> None:
    data = user.make_dir("rl-executor-bind-")
    (data / "hello").write_text("from the host\n")
    os.chmod(data / "hello", 0o644)
    mounts = [
        {"destination": "/rw", "type": "bind", "source": str(data), "options": ["rbind", "rw"]},
        {
            "destination": "/ro",
            "type": "bind",
            "source": str(data),
            "options": ["rbind", "ro", "nosuid"],
        },
        {"destination": "/etc/hostname", "type": "bind", "source": str(data / "hello")},
    ]
    try:
        result = sh(
            user,
            workdir,
            rootfs,
            "cat /ro/hello /etc/hostname; echo w >/rw/new && echo rw-ok; echo >/ro/x || echo ro-no",
            extra_mounts=mounts,
        )
        assert result.returncode == 0, result
        assert result.stdout.count("from the host") == 2
        assert "rw-ok" in result.stdout and "ro-no" in result.stdout
        assert (data / "new").read_text() == "w\n"
        assert not (data / "x").exists()
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["true"], 0, ""),
        (["sh", "-c", "exit 42"], 42, ""),
        (["/etc/passwd"], 126, "permission denied"),
        (["nosuch"], 127, "executable file `nosuch` not found in $PATH: No such file or directory"),
        (["/nosuch"], 127, "executable file `/nosuch` not found"),
    ],
)
def test_exit_codes(
    user: User, workdir: Path, rootfs: Path, args: list[str], code: int, message: str
) -> None:
    result = run(user, workdir, rootfs, args)
    assert result.returncode == code, result
    if message:
        assert result.stderr.startswith("Error: "), result
        assert message.lower() in result.stderr.lower()
        assert len(result.stderr.strip().splitlines()) == 1


def test_killed_by_signal_is_128_plus_n_with_init(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(user, workdir, rootfs, "kill -9 $$", "--init")
    assert result.returncode == 137, result


def test_init_is_pid_1_and_reaps(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(
        user, workdir, rootfs, "cat /proc/1/comm; echo me=$$; (sleep 0.1 &) ; exit 3", "--init"
    )
    assert result.returncode == 3, result
    assert result.stdout.splitlines()[0] == "rl-init"
    assert "me=1" not in result.stdout


def test_setup_failure_is_one_line(user: User, workdir: Path, rootfs: Path) -> None:
    mounts = [
        {"destination": "/x", "type": "bind", "source": "/nonexistent-src", "options": ["rbind"]}
    ]
    result = run(user, workdir, rootfs, ["true"], extra_mounts=mounts)
    assert result.returncode == 125, result
    assert result.stderr.startswith("Error: container setup failed: mount /x (bind)"), result
    assert len(result.stderr.strip().splitlines()) == 1


def test_env_cwd_and_user(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(
        user,
        workdir,
        rootfs,
        "id; pwd; echo FOO=$FOO; umask",
        uid=1000,
        gid=1000,
        additional_gids=[5],
        cwd="/home/app",
        env=["PATH=/bin", "FOO=bar baz"],
    )
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith("uid=1000(app) gid=1000(app) groups=5(tty)"), lines[0]
    assert lines[1] == "/home/app"
    assert lines[2] == "FOO=bar baz"


def test_output_is_byte_exact(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(user, workdir, rootfs, r"printf 'a\000b\377\r\nend'; printf err >&2")
    assert result.stdout_bytes == b"a\x00b\xff\r\nend"
    assert result.stderr == "err"


def test_capabilities_for_root(user: User, workdir: Path, rootfs: Path) -> None:
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]
    result = sh(user, workdir, rootfs, "cat /proc/self/status", caps=caps)
    expected = f"{(1 << 0) | (1 << 5) | (1 << 13):016x}"
    for name in ("CapEff", "CapPrm", "CapBnd"):
        assert status_field(result.stdout, name) == expected, name
    assert status_field(result.stdout, "CapInh") == "0" * 16
    assert status_field(result.stdout, "CapAmb") == "0" * 16
    assert status_field(result.stdout, "NoNewPrivs") == "1"


def test_ambient_capabilities_for_a_user(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(
        user,
        workdir,
        rootfs,
        "cat /proc/self/status",
        uid=1000,
        gid=1000,
        caps=["CAP_NET_BIND_SERVICE"],
        ambient=["CAP_NET_BIND_SERVICE"],
    )
    assert result.returncode == 0, result
    assert status_field(result.stdout, "CapAmb") == f"{1 << 10:016x}"
    assert status_field(result.stdout, "CapEff") == f"{1 << 10:016x}"


def test_host_network_uses_host_sysfs(user: User, workdir: Path, rootfs: Path) -> None:
    host_links = sorted(os.listdir("/sys/class/net"))
    result = sh(
        user,
        workdir,
        rootfs,
        "ls /sys/class/net",
        namespaces=("pid", "ipc", "uts", "mount", "user"),
    )
    assert result.returncode == 0, result
    assert sorted(result.stdout.split()) == host_links


def test_own_network_has_only_loopback_up(user: User, workdir: Path, rootfs: Path) -> None:
    result = sh(user, workdir, rootfs, "ls /sys/class/net; ip link show lo")
    assert result.returncode == 0, result
    assert result.stdout.split()[0] == "lo"
    assert "UP" in result.stdout


def test_stdin_eof_with_interactive(user: User, workdir: Path, rootfs: Path) -> None:
    result = run(user, workdir, rootfs, ["sh", "-c", "cat; echo after-eof"], input=b"line one\n")
    assert result.returncode == 0, result
    assert result.stdout == "line one\nafter-eof\n"
    detached = run(
        user,
        workdir,
        rootfs,
        ["sh", "-c", "cat; echo after-eof"],
        "--no-stdin",
        input=b"not for the container\n",
    )
    assert detached.stdout == "after-eof\n"


def test_no_mounts_left_on_host(user: User, workdir: Path, rootfs: Path) -> None:
    result = run(user, workdir, rootfs, ["true"])
    assert result.returncode == 0, result
    assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()


def _terminal_run(user: User, bundle: Path, rows: int, cols: int, keys: bytes) -> tuple[bytes, int]:
    argv = user.argv(executor_argv(bundle), user.env())
    pid, master = pty.fork()
    if pid == 0:  # the child: its terminal is the pty slave
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.chdir("/")
        os.execvp(argv[0], argv)
    out = b""
    sent = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            if not sent and b"ready" in out:
                os.write(master, keys)
                sent = True
            continue
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return out, os.waitstatus_to_exitcode(status)


def test_terminal_size_and_input(user: User, workdir: Path, rootfs: Path) -> None:
    spec = make_spec(
        user,
        ["sh", "-c", "stty size; tty; echo ready; read x; echo got=$x"],
        root=rootfs,
        terminal=True,
    )
    bundle = write_bundle(workdir / "bundle", spec, user)
    out, code = _terminal_run(user, bundle, 33, 111, b"hello\r")
    assert code == 0, out
    assert b"33 111\r\n" in out
    assert b"/dev/pts/0" in out
    assert b"got=hello" in out


def test_terminal_stdin_eof_sends_eof(user: User, workdir: Path, rootfs: Path) -> None:
    spec = make_spec(user, ["sh", "-c", "cat; echo cat-done"], root=rootfs, terminal=True)
    bundle = write_bundle(workdir / "bundle", spec, user)
    argv = user.argv(executor_argv(bundle), user.env())
    proc = subprocess.run(argv, input=b"typed\n", capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc
    assert b"typed" in proc.stdout and b"cat-done" in proc.stdout


def _start(
    user: User, workdir: Path, rootfs: Path, script: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a container in the background; return it and rl's pid once it printed `ready`."""
    bundle = write_bundle(
        workdir / "bundle", make_spec(user, ["sh", "-c", script], root=rootfs), user
    )
    proc = subprocess.Popen(
        user.argv(executor_argv(bundle), user.env()),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    found = subprocess.run(
        ["pgrep", "-o", "-u", str(user.uid), "-f", f"executor {bundle}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc, int(found.stdout.split()[0])


def test_sigterm_reaches_the_container(user: User, workdir: Path, rootfs: Path) -> None:
    proc, rl_pid = _start(
        user, workdir, rootfs, 'trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    )
    os.kill(rl_pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 7


def test_container_killed_from_outside_is_137(user: User, workdir: Path, rootfs: Path) -> None:
    proc, _ = _start(user, workdir, rootfs, "echo ready; exec sleep 4321")
    found = subprocess.run(
        ["pgrep", "-u", str(user.uid), "-f", "^sleep 4321"],
        capture_output=True,
        text=True,
        check=True,
    )
    os.kill(int(found.stdout.split()[0]), signal.SIGKILL)
    assert proc.wait(timeout=20) == 137


def test_sigkill_of_rl_leaves_no_process(user: User, workdir: Path, rootfs: Path) -> None:
    proc, rl_pid = _start(user, workdir, rootfs, "echo ready; sleep 5678 & exec sleep 8765")
    os.kill(rl_pid, signal.SIGKILL)
    proc.wait(timeout=20)
    deadline = time.monotonic() + 10
    left = ""
    while time.monotonic() < deadline:
        pattern = f"sleep (5678|8765)|executor {workdir / 'bundle'}"
        left = subprocess.run(
            ["pgrep", "-a", "-f", pattern], capture_output=True, text=True, check=False
        ).stdout
        if not left:
            break
        time.sleep(0.1)
    assert left == ""


def test_oom_score_adj(user: User, workdir: Path, rootfs: Path) -> None:
    spec = make_spec(user, ["cat", "/proc/self/oom_score_adj"], root=rootfs)
    spec["process"]["oomScoreAdj"] = 500
    result = run_executor(user, write_bundle(workdir / "bundle", spec, user))
    assert result.returncode == 0, result
    assert result.stdout == "500\n"
