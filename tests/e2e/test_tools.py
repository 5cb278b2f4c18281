"""exec, top, cp, diff, commit, unshare and mount end to end, as the unprivileged user.

One store with the rich test image (tests/images.py) per module, and one container running
`sleep 1000` in the foreground (`rl run` in the background of the test), entered by the exec,
top and cp tests. Expected values come from podman 4.3 run rootless on the same machine.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, _remove, loaded_store
from tests.e2e.test_run import subid_start
from tests.harness import User, rl_binary

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"
RUNNING = "tools-running"
NOT_RUNNING = "can only create exec sessions on running containers: container state improper"


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-tools-") as rl:
        yield rl


def _argv(rl: Rl, *args: str) -> list[str]:
    return rl.user.argv([rl_binary(), "--root", str(rl.root), *args], rl.user.env())


@pytest.fixture(scope="module")
def running(rlm: Rl) -> Iterator[str]:
    """A container running `sleep 1000` under a foreground `rl run`; its name."""
    proc = subprocess.Popen(
        _argv(rlm, "run", "--name", RUNNING, IMAGE, "sleep", "1000"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        deadline = time.monotonic() + 20
        while rlm("exec", RUNNING, "true").returncode != 0:
            assert proc.poll() is None, "rl run ended early"
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.1)
        yield RUNNING
    finally:
        rlm("rm", "-f", RUNNING)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stopped(rlm: Rl) -> str:
    """A container that made changes and exited (kept, not --rm)."""
    script = (
        "touch /newfile; rm /etc/motd; echo more >> /home/tester/secret.txt; mkdir -p /a/b; "
        "rm -rf /data/opaque; mkdir /data/opaque; touch /data/opaque/n"
    )
    rlm.ok("run", "--name", "tools-stopped", IMAGE, "sh", "-c", script)
    return "tools-stopped"


# --- exec -------------------------------------------------------------------------------


def test_exec_environment_workdir_and_user(rlm: Rl, running: str) -> None:
    out = rlm.ok("exec", "-e", "EXTRA=1", running, "sh", "-c", "env; pwd; id").stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["GREETING"] == "hello world"  # the image's
    assert env["EXTRA"] == "1"
    assert env["HOME"] == "/root"
    assert "HOSTNAME" not in env  # podman's exec sessions have none
    assert "\n/data\n" in out  # the image's WorkingDir
    assert "uid=0(root) gid=0(root)" in out
    as_tester = rlm.ok(
        "exec", "-u", "tester", "-w", "/tmp", running, "sh", "-c", "id; echo $HOME; pwd"
    )
    lines = as_tester.stdout.splitlines()
    assert lines[0].startswith("uid=1000(tester) gid=1000(tester)")
    assert lines[1:] == ["/home/tester", "/tmp"]
    assert rlm.ok("exec", "-u", "1000:2000", running, "id", "-g").stdout == "2000\n"


def test_exec_exit_codes_and_messages(rlm: Rl, running: str) -> None:
    assert rlm("exec", running, "true").returncode == 0
    assert rlm("exec", running, "sh", "-c", "exit 3").returncode == 3
    result = rlm("exec", running, "/etc")
    assert result.returncode == 126
    assert "OCI permission denied" in result.stderr
    result = rlm("exec", running, "no-such-command")
    assert result.returncode == 127
    assert "executable file `no-such-command` not found in $PATH" in result.stderr
    result = rlm("exec", "-w", "/nonexistent", running, "pwd")
    assert result.returncode == 127
    assert 'chdir to cwd ("/nonexistent")' in result.stderr
    result = rlm("exec", "-u", "nobody-here", running, "true")
    assert result.stderr == (
        "Error: unable to find user nobody-here: no matching entries in passwd file\n"
    )
    assert result.returncode == 255  # podman 4.3's code


def test_exec_into_a_stopped_container_fails_like_podman(rlm: Rl, stopped: str) -> None:
    result = rlm("exec", stopped, "true")
    assert result.stderr == f"Error: {NOT_RUNNING}\n"
    assert result.returncode == 255  # podman 4.3 exits 255 here, not 125 (measured)
    result = rlm("exec", "no-such-container", "true")
    assert result.returncode == 125
    assert "no such container" in result.stderr


def test_exec_has_the_container_capabilities(rlm: Rl, running: str) -> None:
    script = "grep ^Cap /proc/self/status; echo --; grep ^Cap /proc/1/status"
    mine, _, pid1 = rlm.ok("exec", running, "sh", "-c", script).stdout.partition("--\n")
    assert mine == pid1
    assert "CapEff:\t00000000800405fb" in mine
    privileged = rlm.ok("exec", "--privileged", running, "grep", "CapEff", "/proc/self/status")
    assert privileged.stdout.split()[1].endswith("ffffffffff")
    tester = rlm.ok("exec", "-u", "tester", running, "grep", "^Cap", "/proc/self/status").stdout
    assert "CapEff:\t0000000000000000" in tester
    assert "CapBnd:\t00000000800405fb" in tester
    seccomp = rlm.ok("exec", running, "grep", "^Seccomp:", "/proc/self/status").stdout
    assert seccomp.split() == ["Seccomp:", "2"]
    nnp = rlm.ok("exec", running, "grep", "^NoNewPrivs:", "/proc/self/status").stdout
    assert nnp.split()[1] == "0"  # as the container's process (podman's default)


def test_exec_joins_the_pid_namespace(rlm: Rl, running: str) -> None:
    out = rlm.ok("exec", running, "ps", "-o", "pid,args").stdout
    assert re.search(r"^\s*1\s+sleep 1000$", out, re.M), out


def test_exec_tty_gets_a_terminal(rlm: Rl, user: User, running: str) -> None:
    master, slave = pty.openpty()
    os.chown(os.ttyname(slave), user.uid, -1)
    proc = subprocess.Popen(
        _argv(rlm, "exec", "-it", running, "sh", "-c", "tty; test -t 0 && echo is-a-tty"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        cwd="/",
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 20
    while b"is-a-tty" not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    assert proc.wait(timeout=20) == 0
    os.close(master)
    assert re.search(rb"/dev/pts/\d+", out), out
    assert b"is-a-tty" in out


def test_exec_interactive_and_detached(rlm: Rl, running: str) -> None:
    assert rlm.ok("exec", "-i", running, "cat", input="piped in\n").stdout == "piped in\n"
    assert rlm.ok("exec", running, "cat", input="not passed\n").stdout == ""  # no -i
    session = rlm.ok("exec", "-d", running, "sleep", "37").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", session)
    assert "sleep 37" in rlm.ok("top", running).stdout


# --- top --------------------------------------------------------------------------------


def test_top_lists_the_processes_as_the_container_sees_them(rlm: Rl, running: str) -> None:
    out = rlm.ok("top", running).stdout.splitlines()
    assert out[0].split() == ["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"]
    first = out[1].split()
    assert first[:3] == ["root", "1", "0"]
    assert re.fullmatch(r"\d+\.\d{3}", first[3])  # %CPU as podman prints it
    assert first[5] == "?" and first[7:] == ["sleep", "1000"]
    out = rlm.ok("top", running, "pid,huser", "user").stdout.splitlines()
    assert out[0].split() == ["PID", "HUSER", "USER"]
    assert out[1].split() == ["1", rlm.user.name, "root"]
    result = rlm("top", running, "no-such-descriptor")
    assert result.returncode == 125 and "unknown descriptor" in result.stderr


def test_top_of_a_stopped_container(rlm: Rl, stopped: str) -> None:
    result = rlm("top", stopped)
    assert (result.returncode, result.stderr) == (
        125,
        "Error: top can only be used on running containers\n",
    )


# --- cp ---------------------------------------------------------------------------------


def test_cp_out_keeps_modes_and_owners(rlm: Rl, user: User, running: str) -> None:
    out = user.make_dir("rl-cp-")
    try:
        rlm.ok("cp", f"{running}:/home/tester/secret.txt", str(out))
        copied = out / "secret.txt"
        st = copied.stat()
        start = subid_start(user)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (start + 999, start + 999, 0o640)
        assert copied.read_text() == "tester's secret\n"
        rlm.ok("cp", f"{running}:/home/tester", str(out / "home"))
        shared = (out / "home" / "shared").stat()
        assert (shared.st_gid, stat.S_IMODE(shared.st_mode)) == (start + 1999, 0o2775)
        assert (out / "home" / "secret.txt").stat().st_uid == start + 999
    finally:
        _remove(out)


def test_cp_in_keeps_modes_and_owners(rlm: Rl, user: User, running: str) -> None:
    src = user.make_dir("rl-cp-")
    try:
        script = src / "tool.sh"
        script.write_text("#!/bin/sh\necho copied in\n")
        script.chmod(0o751)
        os.chown(script, user.uid, user.gid)
        rlm.ok("cp", str(script), f"{running}:/usr/local/bin/")
        rlm.ok("cp", str(script), f"{running}:/tmp/renamed.sh")
        out = rlm.ok(
            "exec", running, "sh", "-c", "stat -c '%a %u %g' /usr/local/bin/tool.sh; tool.sh"
        )
        assert out.stdout.splitlines() == ["751 0 0", "copied in"]
        assert rlm.ok("exec", running, "/tmp/renamed.sh").stdout == "copied in\n"
        # A file of container uid 1000 on the host (made as its subordinate id) stays 1000.
        rlm.ok("cp", f"{running}:/home/tester/secret.txt", str(src / "back"))
        rlm.ok("cp", str(src / "back"), f"{running}:/tmp/back")
        owner = rlm.ok("exec", running, "stat", "-c", "%u:%g %a", "/tmp/back").stdout
        assert owner == "1000:1000 640\n"
        result = rlm("cp", str(src / "missing"), f"{running}:/tmp/")
        assert result.returncode == 125 and "could not be found" in result.stderr
    finally:
        _remove(src)


def test_cp_tar_streams(rlm: Rl, running: str) -> None:
    data = rlm.ok("cp", f"{running}:/home/tester", "-").stdout_bytes
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["tester/secret.txt"].uid == 1000
    assert members["tester/secret.txt"].mode == 0o640
    assert members["tester/shared"].isdir() and members["tester/shared"].gid == 2000
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("streamed/file")
        payload = b"from a tar stream\n"
        info.size, info.uid, info.gid, info.mode = len(payload), 1000, 2000, 0o604
        tar.addfile(info, io.BytesIO(payload))
    rlm.ok("cp", "-", f"{running}:/tmp", input=buffer.getvalue())
    out = rlm.ok(
        "exec", running, "sh", "-c", "stat -c '%u:%g %a' /tmp/streamed/file; cat /tmp/streamed/file"
    )
    assert out.stdout == "1000:2000 604\nfrom a tar stream\n"


def test_cp_with_a_stopped_container(rlm: Rl, user: User, stopped: str) -> None:
    out = user.make_dir("rl-cp-")
    try:
        rlm.ok("cp", f"{stopped}:/home/tester/secret.txt", str(out / "s"))
        assert (out / "s").read_text() == "tester's secret\nmore\n"
        assert (out / "s").stat().st_uid == subid_start(user) + 999
        (out / "in").write_text("into a stopped container\n")
        os.chown(out / "in", user.uid, user.gid)
        rlm.ok("cp", str(out / "in"), f"{stopped}:/in")
        data = rlm.ok("cp", f"{stopped}:/in", "-").stdout_bytes
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.getmember("in")
            assert member.uid == 0
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == b"into a stopped container\n"
    finally:
        _remove(out)


# --- diff and commit --------------------------------------------------------------------


def test_diff_shows_added_changed_deleted(rlm: Rl, stopped: str) -> None:
    lines = set(rlm.ok("diff", stopped).stdout.splitlines())
    expected = {
        "A /a",
        "A /a/b",
        "A /newfile",
        "A /data/opaque/n",
        "C /data",
        "C /data/opaque",
        "C /etc",
        "C /home",
        "C /home/tester",
        "C /home/tester/secret.txt",
        "D /etc/motd",
        "D /data/opaque/new",
    }
    assert expected <= lines, lines
    assert not {line for line in lines if "/etc/hosts" in line or ".containerenv" in line}
    grouped = json.loads(rlm.ok("diff", "--format", "json", stopped).stdout)
    assert set(grouped) == {"changed", "added", "deleted"}
    assert "/etc/motd" in grouped["deleted"] and "/newfile" in grouped["added"]


def test_commit_makes_an_image_with_the_changes(rlm: Rl, stopped: str) -> None:
    image_id = rlm.ok(
        "commit", "-c", 'CMD ["cat", "/newfile"]', "--author", "me", stopped, "committed"
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", image_id)
    script = (
        "cat /home/tester/secret.txt; stat -c '%u:%g %a' /home/tester/secret.txt; ls /a; "
        "ls /data/opaque; test -e /etc/motd && echo motd-is-back; test -f /newfile && echo new"
    )
    out = rlm.ok("run", "--rm", "committed", "sh", "-c", script).stdout
    assert out == "tester's secret\nmore\n1000:1000 640\nb\nn\nnew\n"
    assert rlm.ok("run", "--rm", "committed").stdout == ""  # CMD from --change: cat /newfile
    info = json.loads(rlm.ok("image", "inspect", "committed").stdout)[0]
    assert info["Author"] == "me"
    assert info["Config"]["Cmd"] == ["cat", "/newfile"]
    assert "HOSTNAME" not in " ".join(info["Config"]["Env"])
    assert len(info["RootFS"]["Layers"]) == 4  # the image's 3 + the container's
    result = rlm("commit", "-m", "msg", stopped, "x")
    assert result.returncode == 125 and "docker image format" in result.stderr


# --- unshare and mount ------------------------------------------------------------------


def test_unshare_is_root_with_the_full_mapping(rlm: Rl, user: User) -> None:
    out = rlm.ok("unshare", "sh", "-c", "id -u; cat /proc/self/uid_map; echo $CONTAINERS_GRAPHROOT")
    lines = out.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(user.uid), "1"]
    assert lines[2].split() == ["1", str(subid_start(user)), "65536"]
    assert lines[3] == str(rlm.root)
    assert rlm("unshare", "sh", "-c", "exit 7").returncode == 7
    result = rlm("unshare", "no-such-command")
    assert result.returncode == 127 and "executable file not found" in result.stderr


def test_mount_needs_unshare_and_then_shows_the_rootfs(rlm: Rl, stopped: str) -> None:
    result = rlm("mount", stopped)
    assert result.returncode == 125
    assert "must execute `rl unshare` first" in result.stderr
    rl = f"{rl_binary()} --root {rlm.root}"
    script = f'p=$({rl} mount {stopped}) && ls "$p/a" && {rl} mount && {rl} unmount {stopped}'
    out = rlm.ok("unshare", "sh", "-c", script).stdout.splitlines()
    assert out[0] == "b"
    assert out[1].endswith("/rootfs") and out[2] == stopped
