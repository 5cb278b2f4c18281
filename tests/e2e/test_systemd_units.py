"""Per-user systemd units without systemd: `rl generate systemd`, Quadlet files and
--sdnotify end to end, as the unprivileged user.

These hosts run no systemd, so the tests play its part: they run a unit's Exec lines as it
would (specifiers expanded, NOTIFY_SOCKET set for Type=notify), read PIDFile=, and listen on
a notify socket of their own. `systemd-analyze verify` checks the units where it is
installed. The real systemd lane (a VM) is tests/vm/.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.systemd.quadlet import parse_unit_file, split_words
from tests.conftest import Rl, loaded_store
from tests.harness import User, installed_tool, rl_binary

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"
REPO = Path(__file__).resolve().parents[2]
# pid 1 of a shell ignores SIGTERM unless it traps it: stop quickly, as a service would.
SERVICE = ["sh", "-c", "echo A=$A; trap 'exit 0' TERM; while true; do sleep 1; done"]


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-systemd-") as rl:
        yield rl


@pytest.fixture
def notify_socket(user: User) -> Iterator[tuple[socket.socket, str]]:
    """A socket like systemd's notify socket, which the test user can send to."""
    directory = user.make_dir("rl-notify-")
    path = str(directory / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    os.chmod(path, 0o777)
    yield sock, path
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def _messages(sock: socket.socket, timeout: float = 5.0) -> list[tuple[dict[str, str], int]]:
    """The notifications queued (waiting up to `timeout` for the first): fields, sender pid."""
    found: list[tuple[dict[str, str], int]] = []
    sock.settimeout(timeout)
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return found
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        found.append((fields, pid))
        sock.settimeout(0.3)


def _unit_exec(text: str, key: str, unit_name: str, user: User) -> list[list[str]]:
    """The command lines of an Exec key as systemd runs them (specifiers expanded, a leading
    "-" dropped)."""
    commands = []
    unit = parse_unit_file(text)
    specifiers = {
        "n": unit_name,
        "N": unit_name.rsplit(".", 1)[0],
        "t": str(user.runtime_dir),
        "h": str(user.home),
        "%": "%",
    }
    for value in unit.values("Service", key):
        expanded = []
        i = 0
        while i < len(value):
            if value[i] == "%" and i + 1 < len(value):
                expanded.append(specifiers[value[i + 1]])
                i += 2
            elif value.startswith("$$", i):
                expanded.append("$")
                i += 2
            else:
                expanded.append(value[i])
                i += 1
        words = split_words("".join(expanded))
        words[0] = words[0].lstrip("-")
        commands.append(words)
    return commands


def _run_exec(user: User, argv: list[str], env: dict[str, str] | None = None) -> None:
    result = user.run(argv, env=env, timeout=120)
    assert result.returncode == 0, f"{argv}: {result}"


def _field(rl: Rl, name: str, template: str) -> str:
    return rl.ok("inspect", "--format", template, name).stdout.strip()


def _alive(pid: int) -> bool:
    """Running (an exited process that its new parent has not reaped yet is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _verify(user: User, paths: list[Path]) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return  # the checks above still ran; the VM lane verifies too
    result = user.run([tool, "--user", "verify", *map(str, paths)])
    assert result.returncode == 0, result
    assert result.stderr.strip() == "", result  # warnings are failures too


# --- rl generate systemd ------------------------------------------------------------------


def test_unit_for_an_existing_container_starts_it_forking_and_stops_it(
    rlm: Rl, user: User, workdir: Path
) -> None:
    rlm.ok("create", "--name", "svc1", "--stop-timeout", "7", IMAGE, *SERVICE)
    out = rlm.ok("generate", "systemd", "--name", "--files", "svc1", input="")
    path = Path(out.stdout.strip())
    assert path == user.home / "container-svc1.service"
    text = path.read_text()
    path.unlink()
    unit = parse_unit_file(text)
    assert unit.last("Service", "Type") == "forking"
    assert unit.last("Service", "TimeoutStopSec") == "67"
    pidfile = Path(unit.last("Service", "PIDFile") or "")

    (start,) = _unit_exec(text, "ExecStart", "container-svc1.service", user)
    assert start == [rl_binary(), "--root", str(rlm.root), "start", "svc1"]
    _run_exec(user, start)
    # What systemd reads once ExecStart returned: the monitor, alive, the container's runner.
    pid = int(pidfile.read_text())
    assert pid == int(_field(rlm, "svc1", "{{.State.ConmonPid}}"))
    assert _alive(pid)
    assert _field(rlm, "svc1", "{{.State.Status}}") == "running"

    (stop,) = _unit_exec(text, "ExecStop", "container-svc1.service", user)
    assert stop[-3:] == ["-t", "7", "svc1"]
    _run_exec(user, stop)
    assert _field(rlm, "svc1", "{{.State.Status}}") == "exited"
    assert not _alive(pid)
    rlm.ok("rm", "svc1")


def test_new_unit_runs_a_fresh_container_and_notifies_ready(
    rlm: Rl, user: User, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, socket_path = notify_socket
    first = rlm.ok("run", "-d", "--name", "svc2", "-e", "A=from unit", IMAGE, *SERVICE)
    text = rlm.ok("generate", "systemd", "--new", "--name", "svc2").stdout
    rlm.ok("rm", "-f", "svc2")
    unit = parse_unit_file(text)
    assert unit.last("Service", "Type") == "notify"
    assert unit.last("Service", "NotifyAccess") == "all"
    name = "container-svc2.service"
    (start,) = _unit_exec(text, "ExecStart", name, user)
    assert "--sdnotify=conmon" in start and "--replace" in start

    env = {"NOTIFY_SOCKET": socket_path}
    _run_exec(user, start, env)
    messages = _messages(sock)
    monitor = int(_field(rlm, "svc2", "{{.State.ConmonPid}}"))
    # one message, from the monitor, naming itself: systemd follows it from now on
    assert messages == [({"MAINPID": str(monitor), "READY": "1"}, monitor)]
    cid = _field(rlm, "svc2", "{{.Id}}")
    assert cid != first.stdout.strip()
    assert "A=from unit" in rlm.ok("logs", "svc2").stdout

    # systemd restarts the unit while the container still runs: --replace takes over
    _run_exec(user, start, env)
    assert _field(rlm, "svc2", "{{.Id}}") != cid
    assert _messages(sock)[0][0]["READY"] == "1"

    for key in ("ExecStop", "ExecStopPost"):
        for argv in _unit_exec(text, key, name, user):
            _run_exec(user, argv)
    assert rlm("inspect", "svc2").returncode != 0  # --rm: gone
    assert not _alive(monitor)


def test_generated_units_pass_systemd_analyze_verify(rlm: Rl, user: User, workdir: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    rlm.ok("create", "--name", "svc3", "-e", "X=%h $HOME", IMAGE, "echo", "100%")
    rlm.user.run(
        [rl_binary(), "--root", str(rlm.root), "generate", "systemd", "-n", "-f", "svc3"],
        cwd=workdir,
    )
    rlm.user.run(
        [rl_binary(), "--root", str(rlm.root), "generate", "systemd", "-n", "-f", "--new",
         "--container-prefix", "new", "--restart-policy", "always", "--restart-sec", "3", "svc3"],
        cwd=workdir,
    )  # fmt: skip
    files = sorted(workdir.glob("*.service"))
    assert [f.name for f in files] == ["container-svc3.service", "new-svc3.service"]
    _verify(user, files)
    rlm.ok("rm", "svc3")


def test_generate_errors(rlm: Rl) -> None:
    missing = rlm("generate", "systemd", "nosuch")
    assert missing.returncode == 125
    assert missing.stderr.startswith("Error: nosuch does not refer to a container")
    rlm.ok("create", "--name", "svc4", IMAGE, "true")
    bad = rlm("generate", "systemd", "--restart-policy", "sometimes", "svc4")
    assert (bad.returncode, bad.stderr) == (125, "Error: sometimes is not a valid restart policy\n")
    rlm.ok("rm", "svc4")


# --- --sdnotify, --replace ----------------------------------------------------------------


def test_sdnotify_container_mode_sends_only_mainpid(
    rlm: Rl, user: User, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, socket_path = notify_socket
    rlm.user.run(
        [rl_binary(), "--root", str(rlm.root), "run", "-d", "--name", "sd1", IMAGE, *SERVICE],
        env={"NOTIFY_SOCKET": socket_path},
    )
    monitor = int(_field(rlm, "sd1", "{{.State.ConmonPid}}"))
    assert _messages(sock) == [({"MAINPID": str(monitor)}, monitor)]
    rlm.ok("rm", "-f", "sd1")


def test_sdnotify_ignore_sends_nothing(
    rlm: Rl, user: User, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, socket_path = notify_socket
    result = rlm.user.run(
        [rl_binary(), "--root", str(rlm.root), "run", "-d", "--sdnotify=ignore", "--name", "sd2",
         IMAGE, *SERVICE],
        env={"NOTIFY_SOCKET": socket_path},
    )  # fmt: skip
    assert result.returncode == 0, result
    assert _messages(sock, timeout=1.0) == []
    rlm.ok("rm", "-f", "sd2")


def test_sdnotify_foreground_run_conmon_and_container(
    rlm: Rl, user: User, notify_socket: tuple[socket.socket, str]
) -> None:
    """A foreground `rl run` is its own runner: it sends READY with its own pid (conmon),
    or passes the socket into the container (container, the default)."""
    sock, socket_path = notify_socket
    rl = [rl_binary(), "--root", str(rlm.root), "run", "--rm"]
    env = {"NOTIFY_SOCKET": socket_path}
    done = user.run([*rl, "--sdnotify=conmon", IMAGE, "sh", "-c", "echo $NOTIFY_SOCKET"], env=env)
    assert (done.returncode, done.stdout) == (0, "\n"), done
    ((fields, sender),) = _messages(sock)
    assert fields == {"MAINPID": str(sender), "READY": "1"}
    script = "echo $NOTIFY_SOCKET; test -S $NOTIFY_SOCKET && echo socket"
    done = user.run([*rl, IMAGE, "sh", "-c", script], env=env)
    assert (done.returncode, done.stdout) == (0, "/run/notify/notify.sock\nsocket\n"), done
    ((fields, sender),) = _messages(sock)
    assert fields == {"MAINPID": str(sender)}  # READY is the container's to send


def test_sdnotify_bad_value_and_replace_without_name(rlm: Rl) -> None:
    bad = rlm("run", "--sdnotify=systemd", IMAGE, "true")
    assert bad.returncode == 125 and "--sdnotify" in bad.stderr
    replace = rlm("run", "--replace", IMAGE, "true")
    assert replace.returncode == 125
    assert replace.stderr == "Error: cannot replace container without --name being set\n"


def test_replace_removes_a_stopped_container_of_that_name(rlm: Rl) -> None:
    old = rlm.ok("create", "--name", "rep", IMAGE, "true").stdout.strip()
    new = rlm.ok("create", "--replace", "--name", "rep", IMAGE, "true").stdout.strip()
    assert new != old
    assert _field(rlm, "rep", "{{.Id}}") == new
    assert rlm("inspect", old).returncode != 0
    rlm.ok("rm", "rep")


# --- Quadlet ------------------------------------------------------------------------------


def test_quadlet_generator_from_packaging_turns_files_into_working_units(
    rlm: Rl, user: User, workdir: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, socket_path = notify_socket
    source = workdir / "quadlet"
    output = workdir / "generated"
    for directory in (source, output):
        directory.mkdir()
        os.chown(directory, user.uid, user.gid)
    (source / "qweb.container").write_text(
        f"""\
[Unit]
Description=A Quadlet container

[Container]
Image={IMAGE}
Exec=sh -c "echo A=$A; ls -d /data; trap 'exit 0' TERM; while true; do sleep 1; done"
Environment=A=quadlet
Volume=qdata.volume:/data
Label=from=quadlet

[Service]
Restart=always

[Install]
WantedBy=default.target
"""
    )
    (source / "qdata.volume").write_text("[Volume]\nLabel=from=quadlet\n")
    (source / "broken.container").write_text("[Container]\nExec=true\n")
    for path in source.iterdir():
        path.chmod(0o644)

    # The generator as packaging/install.sh installs it, for this venv.
    venv = Path(installed_tool("python")).parent.parent
    generator = workdir / "rl-user-generator"
    script = (REPO / "packaging" / "systemd" / "rl-user-generator").read_text()
    generator.write_text(script.replace("@RL_VENV@", str(venv)))
    generator.chmod(0o755)
    done = user.run(
        [str(generator), str(output), str(workdir / "early"), str(workdir / "late")],
        env={"QUADLET_UNIT_DIRS": str(source)},
    )
    assert done.returncode == 1, done  # one file skipped
    assert "broken.container" in done.stderr and "no Image key specified" in done.stderr
    assert sorted(p.name for p in output.iterdir()) == [
        "default.target.wants",
        "qdata-volume.service",
        "qweb.service",
    ]
    assert os.readlink(output / "default.target.wants" / "qweb.service") == "../qweb.service"
    _verify(user, [output / "qweb.service", output / "qdata-volume.service"])

    # Play systemd: the volume's unit, then the container's (Type=notify).
    store_env = {"RL_ROOT": str(rlm.root)}
    volume_text = (output / "qdata-volume.service").read_text()
    for argv in _unit_exec(volume_text, "ExecStart", "qdata-volume.service", user):
        _run_exec(user, argv, store_env)
        _run_exec(user, argv, store_env)  # a second start: --ignore
    assert rlm.ok("volume", "inspect", "--format", "{{.Labels}}", "systemd-qdata").stdout.strip()
    text = (output / "qweb.service").read_text()
    (start,) = _unit_exec(text, "ExecStart", "qweb.service", user)
    _run_exec(user, start, {**store_env, "NOTIFY_SOCKET": socket_path})
    monitor = int(_field(rlm, "systemd-qweb", "{{.State.ConmonPid}}"))
    assert _messages(sock) == [({"MAINPID": str(monitor), "READY": "1"}, monitor)]
    logs = rlm.ok("logs", "systemd-qweb").stdout
    assert "A=quadlet" in logs and "/data" in logs
    assert _field(rlm, "systemd-qweb", "{{.Config.Labels}}").find("from:quadlet") >= 0
    for key in ("ExecStop", "ExecStopPost"):
        for argv in _unit_exec(text, key, "qweb.service", user):
            _run_exec(user, argv, store_env)
    assert rlm("inspect", "systemd-qweb").returncode != 0
    assert not _alive(monitor)
    rlm.ok("volume", "rm", "systemd-qdata")


def test_install_script_installs_the_generator_for_root_only() -> None:
    script = (REPO / "packaging" / "install.sh").read_text()
    assert "/usr/lib/systemd/user-generators" in script
    assert 'sed "s|@RL_VENV@|$venv|g" "$repo/packaging/systemd/rl-user-generator"' in script
    generator = REPO / "packaging" / "systemd" / "rl-user-generator"
    assert os.access(generator, os.X_OK)
    assert subprocess.run(["sh", "-n", str(generator)], check=False).returncode == 0


# --- against podman's own units -----------------------------------------------------------


def _keys(text: str) -> dict[str, set[str]]:
    return {s.name: {k for k, _ in s.entries} for s in parse_unit_file(text).sections}


@pytest.mark.slow
def test_units_have_the_keys_of_podmans_for_the_same_container(
    rlm: Rl, user: User, workdir: Path, busybox_archive: Path
) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    podman = ["podman", "--root", str(workdir / "p"), "--runroot", str(workdir / "p.run"),
              "--storage-driver", "vfs"]  # fmt: skip
    loaded = user.run([*podman, "load", "-i", str(busybox_archive)], timeout=300)
    if loaded.returncode != 0:
        pytest.skip(f"podman cannot load images here: {loaded.stderr}")
    create = ["create", "--name", "cmp", "--stop-timeout", "15", "-e", "A=b", IMAGE, "sleep", "9"]
    assert user.run([*podman, *create]).returncode == 0
    rlm.ok(*create)
    for flags in ([], ["--new"], ["--new", "--restart-policy", "always", "--no-header"]):
        theirs = user.run([*podman, "generate", "systemd", "--name", *flags, "cmp"])
        assert theirs.returncode == 0, theirs
        ours = rlm.ok("generate", "systemd", "--name", *flags, "cmp").stdout
        mine, podmans = _keys(ours), _keys(theirs.stdout)
        assert list(mine) == list(podmans), flags
        for section in podmans:
            # No man page to point at; ExecStartPre only removes podman's --cidfile (rl's
            # --new units find the container by name); KillMode, Delegate are rl's (units.py).
            assert podmans[section] - {"Documentation", "ExecStartPre"} <= mine[section]
            assert mine[section] - podmans[section] <= {"KillMode", "Delegate"}
        # the same first line, restart policy and stop timeout
        assert ours.splitlines()[0] == theirs.stdout.splitlines()[0]
        for key in ("Restart", "TimeoutStopSec", "Type", "NotifyAccess"):
            assert parse_unit_file(ours).last("Service", key) == parse_unit_file(
                theirs.stdout
            ).last("Service", key), key
    rlm.ok("rm", "cmp")
    user.run([*podman, "rm", "cmp"])
