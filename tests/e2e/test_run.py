"""`rl run` end to end, as the unprivileged user, with real namespaces and the real store.

One store with the rich test image (tests/images.py) is loaded per module; each test runs
containers in it. Expected values come from podman 4.3 run rootless on the same machine.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.harness import User, child_pids, rl_binary

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"
SUBID_START = 100000  # /etc/subuid of the test user (tests/harness.py creates rltest so)


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    """rl with the test image loaded once for the whole module."""
    with loaded_store(user, busybox_archive, "rl-run-") as rl:
        yield rl


def subid_start(user: User) -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _count = line.split(":")
        if name in (user.name, str(user.uid)):
            return int(start)
    raise AssertionError("the test user has no subordinate ids")


def run(rl: Rl, *args: str, **kw: object) -> tuple[int, str, str]:
    result = rl("run", "--rm", *args, **kw)  # type: ignore[arg-type]
    return result.returncode, result.stdout, result.stderr


def sh(rl: Rl, script: str, *flags: str) -> str:
    code, out, err = run(rl, *flags, IMAGE, "sh", "-c", script)
    assert code == 0, f"exit {code}\nstdout: {out}\nstderr: {err}"
    return out


# --- identity, namespaces -------------------------------------------------------------


def test_id_maps_pid1_and_hostname(rlm: Rl, user: User) -> None:
    out = sh(
        rlm,
        "cat /proc/self/uid_map /proc/self/gid_map; echo $$; hostname; "
        "cat /etc/hostname; echo; grep myhost /etc/hosts",
        "--hostname",
        "myhost",
    )
    lines = out.splitlines()
    start = subid_start(user)
    assert lines[0].split() == ["0", str(user.uid), "1"]
    assert lines[1].split() == ["1", str(start), "65536"]
    assert lines[2].split() == ["0", str(user.gid), "1"]
    assert lines[4] == "1"
    assert lines[5:7] == ["myhost", "myhost"]
    assert lines[7].split()[:2] == ["10.0.2.100", "myhost"]  # slirp4netns, as podman


def test_default_hostname_is_short_id(rlm: Rl) -> None:
    out = sh(rlm, 'hostname; echo "$HOSTNAME"')
    name, env_name = out.split()
    assert len(name) == 12 and name == env_name


def test_image_file_ownership_inside_and_on_host(rlm: Rl, user: User) -> None:
    out = sh(rlm, "stat -c %u:%g /home/tester/secret.txt")
    assert out.strip() == "1000:1000"
    on_host = list((rlm.root / "layers").glob("*/home/tester/secret.txt"))
    assert on_host and on_host[0].stat().st_uid == subid_start(user) + 999


def test_whiteouts_and_opaque_dirs_hidden(rlm: Rl) -> None:
    out = sh(
        rlm, "ls /etc/to-be-deleted /data/dir-to-be-deleted 2>&1; ls /data/opaque; cat /etc/motd"
    )
    assert "No such file" in out
    assert out.splitlines()[-2:] == ["new", "layer 3"]


def test_no_host_process_visible(rlm: Rl) -> None:
    out = sh(rlm, "ls /proc | grep -c '^[0-9]'")
    assert int(out) <= 3  # sh, and ls/grep


# --- users, env, workdir --------------------------------------------------------------


def test_user_resolution(rlm: Rl) -> None:
    assert sh(rlm, 'id; echo "$HOME"', "-u", "tester").split() == [
        "uid=1000(tester)",
        "gid=1000(tester)",
        "groups=1000(tester),2000(extra)",
        "/home/tester",
    ]
    assert sh(rlm, "id -u; id -g", "-u", "1000:2000").split() == ["1000", "2000"]
    assert sh(rlm, 'id -u; echo "$HOME"', "-u", "4242").split() == ["4242", "/"]


def test_unknown_user_is_podmans_error(rlm: Rl) -> None:
    code, _out, err = run(rlm, "-u", "nobody2", IMAGE, "id")
    assert code == 126
    assert "Error: unable to find user nobody2: no matching entries in passwd file" in err


def test_env_and_workdir(rlm: Rl, workdir: Path, user: User) -> None:
    env_file = workdir / "env"
    env_file.write_text("# comment\nFROM_FILE=1\nGREETING=from file\n")
    os.chmod(env_file, 0o644)
    out = sh(rlm, "pwd; env", "-e", "EXTRA=x", "--env-file", str(env_file), "-e", "FROM_FILE=2")
    lines = out.splitlines()
    env = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    assert lines[0] == "/data"  # the image's WorkingDir
    assert env["RL_TEST"] == "yes"  # image Env
    assert env["GREETING"] == "from file"
    assert env["FROM_FILE"] == "2" and env["EXTRA"] == "x"
    assert env["container"] == "podman" and env["TERM"] == "xterm" and env["HOME"] == "/root"
    assert sh(rlm, "pwd", "-w", "/tmp").strip() == "/tmp"


def test_missing_workdir_flag_is_podmans_error(rlm: Rl) -> None:
    code, _out, err = run(rlm, "-w", "/no/such/dir", IMAGE, "pwd")
    assert code == 126
    assert 'workdir "/no/such/dir" does not exist on container' in err


def test_missing_image_workdir_is_created_for_the_user(rlm: Rl, workdir: Path) -> None:
    """An image WorkingDir its layers lack is created, owned by the container user (podman)."""
    from dataclasses import replace

    from tests.images import build_image, minimal_spec, write_docker_archive

    spec = minimal_spec("localhost/rl-test/no-workdir:latest")
    spec = replace(spec, config={**spec.config, "WorkingDir": "/made/by/rl"})
    archive = write_docker_archive(workdir / "no-workdir.tar", [build_image(spec)])
    os.chmod(archive, 0o644)
    rlm.ok("load", "-i", str(archive))
    out = rlm.ok(
        "run",
        "--rm",
        "-u",
        "65534:65534",
        "localhost/rl-test/no-workdir",
        "sh",
        "-c",
        "pwd; stat -c %u:%g .",
    ).stdout.split()
    assert out == ["/made/by/rl", "65534:65534"]


def test_entrypoint_override(rlm: Rl) -> None:
    assert rlm("run", "--rm", "--entrypoint", '["echo","a"]', IMAGE, "b").stdout == "a b\n"
    assert rlm("run", "--rm", "--entrypoint", "", IMAGE, "echo", "hi").stdout == "hi\n"
    # no command: the image's Cmd runs
    assert rlm("run", "--rm", IMAGE).stdout == "hello from the rl test image\n"


# --- exit codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["true"], 0), (["sh", "-c", "exit 42"], 42), (["/etc/passwd"], 126), (["nosuch"], 127)],
)
def test_exit_codes(rlm: Rl, argv: list[str], code: int) -> None:
    assert rlm("run", "--rm", IMAGE, *argv).returncode == code


def test_killed_by_signal_is_128_plus_n(rlm: Rl) -> None:
    # pid 1 ignores signals it has no handler for, so the shell runs under --init here
    assert rlm("run", "--rm", "--init", IMAGE, "sh", "-c", "kill -9 $$").returncode == 137


def test_unknown_image(rlm: Rl) -> None:
    result = rlm("run", "--rm", "--pull=never", "nosuch:latest", "true")
    assert result.returncode == 125
    assert result.stderr.strip() == "Error: nosuch:latest: image not known"


def test_detach_prints_the_id(rlm: Rl) -> None:
    # The rest of -d is in test_lifecycle.py.
    cid = rlm.ok("run", "-d", "--rm", IMAGE, "true").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)


# --- security -------------------------------------------------------------------------


def test_capabilities_and_seccomp_like_podman(rlm: Rl) -> None:
    status = dict(
        line.split(":\t", 1)
        for line in sh(rlm, "cat /proc/self/status").splitlines()
        if ":\t" in line
    )
    assert status["CapEff"] == "00000000800405fb"
    assert status["CapBnd"] == "00000000800405fb"
    assert status["Seccomp"] == "2"


def test_masked_paths_unreadable(rlm: Rl) -> None:
    out = sh(
        rlm,
        "cat /proc/kcore >/dev/null 2>&1 && echo kcore-readable; "
        "ls /sys/firmware | wc -l; cat /proc/keys | wc -c; echo x > /proc/sys/kernel/hostname "
        "2>/dev/null && echo sys-writable; echo done",
    )
    assert "readable" not in out and "writable" not in out
    assert out.split() == ["0", "0", "done"]


def test_read_only_root(rlm: Rl) -> None:
    out = sh(
        rlm,
        "touch /x 2>/dev/null && echo root-writable; touch /tmp/x /run/x /var/tmp/x && echo tmp-ok",
        "--read-only",
    )
    assert out.split() == ["tmp-ok"]


# --- mounts and volumes ---------------------------------------------------------------


def test_bind_mounts_rw_ro_and_ownership(rlm: Rl, workdir: Path, user: User) -> None:
    shared = workdir / "shared"
    shared.mkdir()
    os.chown(shared, user.uid, user.gid)
    out = sh(
        rlm,
        "echo hi > /rw/by-root; touch /ro/nope 2>/dev/null || echo ro-refused",
        "-v",
        f"{shared}:/rw",
        "-v",
        f"{shared}:/ro:ro",
    )
    assert out.strip() == "ro-refused"
    created = shared / "by-root"
    assert created.read_text() == "hi\n"
    assert (created.stat().st_uid, created.stat().st_gid) == (user.uid, user.gid)


def test_keep_id(rlm: Rl, workdir: Path, user: User) -> None:
    shared = workdir / "keep"
    shared.mkdir()
    os.chown(shared, user.uid, user.gid)
    out = sh(rlm, "id -u; id -g; touch /m/mine", "--userns=keep-id", "-v", f"{shared}:/m")
    assert out.split() == [str(user.uid), str(user.gid)]
    assert (shared / "mine").stat().st_uid == user.uid
    out = sh(
        rlm, "id -u; cat /proc/self/uid_map", "--userns=keep-id:uid=1000,gid=1000", "-u", "1000"
    )
    assert out.split()[0] == "1000"


def test_named_volume_persists(rlm: Rl) -> None:
    sh(rlm, "echo kept > /vol/file", "-v", "f3a-test-vol:/vol")
    assert sh(rlm, "cat /vol/file", "-v", "f3a-test-vol:/vol").strip() == "kept"
    rlm.ok("volume", "rm", "f3a-test-vol")


def test_volume_in_use_cannot_be_removed(rlm: Rl) -> None:
    rlm.ok("run", "--name", "uses-vol", "-v", "busy-vol:/data", IMAGE, "true")
    refused = rlm("volume", "rm", "busy-vol")
    assert refused.returncode == 2, refused
    assert "is being used" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    rlm.ok("rm", "uses-vol")
    rlm.ok("volume", "rm", "busy-vol")


def test_rm_removes_anonymous_volumes_only(rlm: Rl) -> None:
    before = set(rlm.ok("volume", "ls", "-q").stdout.split())
    sh(rlm, "touch /anon/x /named/x", "-v", "/anon", "-v", "f3a-kept:/named")
    assert set(rlm.ok("volume", "ls", "-q").stdout.split()) - before == {"f3a-kept"}
    rlm.ok("volume", "rm", "f3a-kept")


# --- terminal and signals -------------------------------------------------------------


def _rl_pid(popen: subprocess.Popen[bytes]) -> int:
    """runuser's child is `env`, which execs rl: that process."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = child_pids(popen.pid)
        if kids:
            return kids[0]
        time.sleep(0.02)
    raise AssertionError("rl did not start")


def _rl_argv(rl: Rl, *args: str) -> list[str]:
    # global_args: the storage driver the parametrised copies (test_fuse_driver.py) run with
    flags = getattr(rl, "global_args", ())
    return rl.user.argv([rl_binary(), "--root", str(rl.root), *flags, *args], rl.user.env())


def _read_until(fd: int, marker: bytes, timeout: float = 20) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_tty_has_the_terminal_size(rlm: Rl, user: User) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 31, 101, 0, 0))
    os.chown(os.ttyname(slave), user.uid, -1)
    proc = subprocess.Popen(
        _rl_argv(rlm, "run", "--rm", "-t", IMAGE, "sh", "-c", "test -t 0 && stty size; echo end"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=str(user.home),
        start_new_session=True,
    )
    os.close(slave)
    out = _read_until(master, b"end")
    assert proc.wait(timeout=30) == 0
    os.close(master)
    assert b"31 101" in out


def test_sigterm_reaches_the_container(rlm: Rl, user: User) -> None:
    script = 'trap "echo got-term; exit 3" TERM; echo ready; while :; do sleep 0.1; done'
    proc = subprocess.Popen(
        _rl_argv(rlm, "run", "--rm", IMAGE, "sh", "-c", script),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(user.home),
    )
    assert proc.stdout is not None
    assert _read_until(proc.stdout.fileno(), b"ready") == b"ready\n"
    os.kill(_rl_pid(proc), signal.SIGTERM)
    out, _err = proc.communicate(timeout=30)
    assert out == b"got-term\n"
    assert proc.returncode == 3
    assert rlm.ok("ps", "-a", "-q").stdout == ""


# --- records and cleanup --------------------------------------------------------------


def _host_mounts_under(path: Path) -> list[str]:
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line
    ]


def test_rm_leaves_nothing(rlm: Rl) -> None:
    assert rlm("run", "--rm", IMAGE, "true").returncode == 0
    assert rlm("run", "--rm", IMAGE, "sh", "-c", "exit 3").returncode == 3
    assert rlm("run", "--rm", IMAGE, "nosuch").returncode == 127
    assert rlm("run", "--rm", "-u", "nosuch", IMAGE, "true").returncode == 126
    assert rlm.ok("ps", "-a", "-q").stdout == ""
    containers = rlm.root / "containers"
    assert not containers.exists() or list(containers.iterdir()) == []
    assert _host_mounts_under(rlm.root) == []
    assert list((rlm.root / "tmp").iterdir()) == [] if (rlm.root / "tmp").exists() else True


def test_named_container_record_ps_and_rm(rlm: Rl) -> None:
    assert rlm("run", "--name", "f3a-named", IMAGE, "sh", "-c", "exit 7").returncode == 7
    again = rlm("run", "--name", "f3a-named", IMAGE, "true")
    assert again.returncode == 125
    assert 'the container name "f3a-named" is already in use by' in again.stderr
    listing = rlm.ok("ps", "-a").stdout.splitlines()
    assert listing[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
    row = next(line for line in listing if line.endswith("f3a-named"))
    assert "Exited (7)" in row and IMAGE in row
    assert rlm.ok("ps", "-q").stdout == ""  # not running
    assert rlm.ok("rm", "f3a-named").stdout == "f3a-named\n"
    missing = rlm("rm", "f3a-named")
    assert missing.returncode == 1
    assert 'no container with name or ID "f3a-named" found: no such container' in missing.stderr
    assert rlm("rm", "-f", "f3a-named").returncode == 0


def test_sigkill_of_rl_leaves_no_process_or_mount(rlm: Rl, user: User) -> None:
    proc = subprocess.Popen(
        _rl_argv(rlm, "run", "--name", "f3a-killed", IMAGE, "sh", "-c", "echo ready; sleep 1000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(user.home),
    )
    assert proc.stdout is not None
    assert _read_until(proc.stdout.fileno(), b"ready") == b"ready\n"
    rl_pid = _rl_pid(proc)
    descendants = _descendants(rl_pid)
    assert descendants
    os.kill(rl_pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in descendants):
        time.sleep(0.05)
    assert not [p for p in descendants if Path(f"/proc/{p}").exists()]
    assert _host_mounts_under(rlm.root) == []
    row = next(line for line in rlm.ok("ps", "-a").stdout.splitlines() if "f3a-killed" in line)
    assert "Exited" in row
    rlm.ok("rm", "f3a-killed")
    assert not (rlm.root / "containers").exists() or list((rlm.root / "containers").iterdir()) == []


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


# --- more flags -----------------------------------------------------------------------


def test_stdin_only_with_interactive(rlm: Rl) -> None:
    assert rlm("run", "--rm", "-i", IMAGE, "cat", input="piped\n").stdout == "piped\n"
    assert rlm("run", "--rm", IMAGE, "cat", input="piped\n").stdout == ""


def test_privileged_containerenv_and_caps(rlm: Rl) -> None:
    assert sh(rlm, "cat /run/.containerenv") == ""
    out = sh(rlm, "cat /run/.containerenv; grep -E 'CapEff|Seccomp:' /proc/self/status",
             "--privileged", "--name", "f3a-priv")  # fmt: skip
    assert 'name="f3a-priv"' in out and "rootless=1" in out
    assert f'image="{IMAGE}"' in out
    assert "Seccomp:\t0" in out


def test_print_spec_creates_nothing(rlm: Rl) -> None:
    import json

    out = rlm.ok("run", "--print-spec", "-u", "tester", "--read-only", IMAGE, "true").stdout
    spec = json.loads(out)
    assert spec["process"]["args"] == ["true"]
    assert spec["process"]["user"]["uid"] == 1000
    assert spec["root"]["readonly"] is True
    assert rlm.ok("ps", "-a", "-q").stdout == ""


def test_rootfs_directory(rlm: Rl, workdir: Path, user: User) -> None:
    rootfs = workdir / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    os.chmod(rootfs / "bin" / "busybox", 0o755)
    (rootfs / "bin" / "sh").symlink_to("busybox")
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(rootfs)], check=True)
    out = rlm("run", "--rm", "--rootfs", str(rootfs), "/bin/busybox", "sh", "-c", "echo in-rootfs")
    assert out.returncode == 0, out
    assert out.stdout == "in-rootfs\n"


def test_single_id_mapping_warns_and_runs(
    user: User, workdir: Path, image_archives: object
) -> None:
    from tests.images import build_image, minimal_spec, write_docker_archive

    rl = Rl(user, workdir / "single")
    env = {"RL_SUBUID_FILE": "/dev/null", "RL_SUBGID_FILE": "/dev/null"}
    archive = write_docker_archive(workdir / "minimal.tar", [build_image(minimal_spec())])
    os.chmod(archive, 0o644)
    assert rl("load", "-i", str(archive), env=env).returncode == 0
    result = rl("run", "--rm", "localhost/rl-test/minimal", "cat", "/proc/self/uid_map", env=env)
    assert result.returncode == 0, result
    assert result.stdout.split() == ["0", str(user.uid), "1"]
    assert "WARN[0000] Using rootless single mapping into the namespace" in result.stderr


@pytest.mark.slow
def test_matches_podman(rlm: Rl, user: User, busybox_archive: Path) -> None:
    """Same image, same probes, podman 4.3 (with runc: crun refuses hybrid cgroups here)."""
    import shutil

    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc are needed for the comparison")
    if user.run(["podman", "load", "-i", str(busybox_archive)], timeout=300).returncode != 0:
        pytest.skip("podman cannot load images here")
    probe = (
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; "
        "env | grep -v HOSTNAME | sort; id; pwd; "
        "cut -d' ' -f5 /proc/self/mountinfo | sort | grep -v '^/proc/\\|^/sys/fs/cgroup/'"
    )
    podman = user.run(
        ["podman", "run", "--rm", "--runtime", "runc", "--network", "none", "-u", "tester",
         IMAGE, "sh", "-c", probe], timeout=120,
    )  # fmt: skip
    if podman.returncode != 0:
        pytest.skip(f"podman cannot run containers here: {podman.stderr}")
    ours = sh(rlm, probe, "-u", "tester", "--network", "none")
    assert ours == podman.stdout
    root_probe = "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; ulimit -n; ulimit -u"
    podman_root = user.run(
        ["podman", "run", "--rm", "--runtime", "runc", "--network", "none", IMAGE, "sh", "-c",
         root_probe], timeout=120,
    )  # fmt: skip
    assert sh(rlm, root_probe, "--network", "none") == podman_root.stdout


def test_rm_of_running_container_needs_force(rlm: Rl, user: User) -> None:
    proc = subprocess.Popen(
        _rl_argv(rlm, "run", "--name", "f3a-running", IMAGE, "sh", "-c", "echo ready; sleep 1000"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(user.home),
    )  # fmt: skip
    assert proc.stdout is not None
    assert _read_until(proc.stdout.fileno(), b"ready") == b"ready\n"
    assert "f3a-running" in rlm.ok("ps").stdout
    refused = rlm("rm", "f3a-running")
    assert refused.returncode == 2
    assert "as it is running - running or paused containers cannot be removed" in refused.stderr
    assert rlm.ok("rm", "-f", "f3a-running").stdout == "f3a-running\n"
    assert proc.wait(timeout=30) == 137
    assert rlm.ok("ps", "-a", "-q").stdout == ""


def test_sigkilled_rm_container_is_cleaned_by_ps(rlm: Rl, user: User) -> None:
    proc = subprocess.Popen(
        _rl_argv(rlm, "run", "--rm", "--name", "f3a-rm-killed", IMAGE, "sh", "-c",
                 "echo ready; sleep 1000"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(user.home),
    )  # fmt: skip
    assert proc.stdout is not None
    assert _read_until(proc.stdout.fileno(), b"ready") == b"ready\n"
    os.kill(_rl_pid(proc), signal.SIGKILL)
    proc.wait(timeout=30)
    assert rlm.ok("ps", "-a", "-q").stdout == ""
    containers = rlm.root / "containers"
    assert not containers.exists() or list(containers.iterdir()) == []


def test_uidmap_uses_intermediate_ids(rlm: Rl, user: User) -> None:
    out = sh(rlm, "cat /proc/self/uid_map /proc/self/gid_map; id -u",
             "--uidmap", "0:1:1000", "--uidmap", "1000:0:1")  # fmt: skip
    start = subid_start(user)
    maps = ["0", str(start), "1000", "1000", str(user.uid), "1"]
    assert out.split() == [*maps, *maps, "0"]
