"""ps, inspect, rename, container exists/prune, port and wait end to end, as the unprivileged
user. Expected outputs are podman 4.3's, run rootless on the same machine.

Exited containers come from foreground `rl run`; a running one from a foreground `rl run`
left running in the background of the test. The cases that need `rl run -d` are skipped while
it is not there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.harness import User, rl_binary

pytestmark = pytest.mark.e2e

IMAGE = "localhost/rl-test/busybox:latest"


@pytest.fixture(scope="module")
def rlm(user: User, busybox_archive: Path) -> Iterator[Rl]:
    with loaded_store(user, busybox_archive, "rl-ctrcmd-") as rl:
        yield rl


@pytest.fixture(scope="module")
def store_dir(rlm: Rl) -> Path:
    """The directory holding rlm's store, for bind-mount sources; it goes with the store."""
    return rlm.root.parent


@pytest.fixture(scope="module")
def exited(rlm: Rl, store_dir: Path) -> dict[str, str]:
    """Two exited containers: name -> full ID. `cq-three` exits 3 and has a label, a bind
    mount and a named volume."""
    bind = store_dir / "bind"
    bind.mkdir()
    os.chown(bind, rlm.user.uid, rlm.user.gid)
    assert rlm("run", "--name", "cq-zero", IMAGE, "true").returncode == 0
    three = rlm(
        "run",
        "--name",
        "cq-three",
        "-l",
        "tier=back",
        "-v",
        f"{bind}:/mnt:ro",
        "-v",
        "cqvol:/data",
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    )
    assert three.returncode == 3, three
    ids = {}
    for line in rlm.ok("ps", "-a", "--no-trunc", "--format", "{{.Names}} {{.ID}}").stdout.split(
        "\n"
    ):
        if line:
            name, cid = line.split()
            ids[name] = cid
    return ids


def _argv(rl: Rl, *args: str) -> list[str]:
    return rl.user.argv([rl_binary(), "--root", str(rl.root), *args], rl.user.env())


# --- ps -----------------------------------------------------------------------------------


def test_ps_table_status_and_quiet(rlm: Rl, exited: dict[str, str]) -> None:
    lines = rlm.ok("ps", "-a").stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    three = next(line for line in lines if line.endswith("cq-three"))
    assert three.startswith(exited["cq-three"][:12] + "  ")
    assert re.search(r"  sh -c exit 3  .*  Exited \(3\) .* ago  ", three)
    assert rlm.ok("ps").stdout.splitlines()[1:] == []  # nothing runs: header only
    assert rlm.ok("ps", "-q").stdout == ""
    quiet = rlm.ok("ps", "-a", "-q").stdout.split()
    assert sorted(quiet) == sorted(cid[:12] for cid in exited.values())
    assert rlm.ok("ps", "-a", "-q", "--no-trunc").stdout.split() == [
        exited["cq-zero"],
        exited["cq-three"],
    ]  # oldest first, as podman
    assert rlm.ok("ps", "-l", "-q").stdout.split() == [exited["cq-three"][:12]]
    assert rlm.ok("ps", "-n", "1", "--format", "{{.Names}}").stdout == "cq-three\n"
    both = rlm("ps", "-l", "-n", "2")
    assert both.returncode == 125 and "last and latest are mutually exclusive" in both.stderr
    sized = rlm.ok("ps", "-a", "-s").stdout.splitlines()
    assert sized[0].rstrip().endswith("SIZE") and "(virtual " in sized[1]


def test_ps_filters(rlm: Rl, exited: dict[str, str]) -> None:
    def names(*flags: str) -> list[str]:
        return rlm.ok("ps", *flags, "--format", "{{.Names}}").stdout.split()

    assert names("-a", "--filter", "exited=3") == ["cq-three"]
    assert names("--filter", "status=exited") == ["cq-zero", "cq-three"]  # status implies -a
    assert names("-a", "--filter", "label=tier=back") == ["cq-three"]
    assert names("-a", "--filter", "label=org.rl.test") == ["cq-zero", "cq-three"]  # image's
    assert names("-a", "--filter", "name=^cq-z") == ["cq-zero"]
    assert names("-a", "-f", "name=zero", "-f", "name=three") == ["cq-zero", "cq-three"]
    assert names("-a", "--filter", "name=cq", "--filter", "exited=0") == ["cq-zero"]
    assert names("-a", "--filter", f"id={exited['cq-three'][:8]}") == ["cq-three"]
    assert names("-a", "--filter", f"ancestor={IMAGE}") == ["cq-zero", "cq-three"]
    assert names("-a", "--filter", "ancestor=busybox") == []
    assert names("-a", "--filter", "status=running") == []
    for bad, message in (
        ("foo=bar", "foo is an invalid filter"),
        ("status=bogus", "unknown container state: bogus: invalid argument"),
        ("status", 'invalid filter "status"'),
    ):
        result = rlm("ps", "--filter", bad)
        assert result.returncode == 125 and f"Error: {message}" in result.stderr


def test_ps_formats(rlm: Rl, exited: dict[str, str]) -> None:
    rows = json.loads(rlm.ok("ps", "-a", "--format", "json").stdout)
    three = next(r for r in rows if r["Names"] == ["cq-three"])
    assert three["Id"] == exited["cq-three"]
    assert three["ExitCode"] == 3 and three["Exited"] is True and three["State"] == "exited"
    assert three["Command"] == ["sh", "-c", "exit 3"]
    assert three["Labels"]["tier"] == "back" and three["Labels"]["org.rl.test"] == "yes"
    assert sorted(three["Mounts"]) == ["/data", "/mnt"]
    assert three["Status"].startswith("Exited (3) ") and three["Ports"] is None
    table = rlm.ok("ps", "-a", "--format", "table {{.ID}} {{.Names}}").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["CONTAINER ID", "NAMES"]
    assert len(table) == 3
    noheading = rlm.ok("ps", "-a", "--noheading", "--format", "table {{.Names}}").stdout
    assert noheading.split() == ["cq-zero", "cq-three"]
    fields = rlm.ok(
        "ps", "-a", "--filter", "name=three", "--format", "{{.State}}|{{.ExitCode}}|{{.Ports}}|"
    ).stdout
    assert re.fullmatch(r"Exited \(3\) .* ago\|3\|\|\n", fields)
    looped = rlm.ok("ps", "-a", "--format", "{{range .}}{{.Names}},{{end}}").stdout
    assert looped == "cq-zero,cq-three,\n"
    bad = rlm("ps", "-a", "--format", "{{.Foo}}")
    assert bad.returncode == 125 and "Foo" in bad.stderr


# --- inspect ------------------------------------------------------------------------------


def test_inspect_container_json(rlm: Rl, exited: dict[str, str], store_dir: Path) -> None:
    [info] = json.loads(rlm.ok("inspect", "cq-three").stdout)
    assert info["Id"] == exited["cq-three"] and info["Name"] == "cq-three"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", info["Created"])
    assert info["Path"] == "sh" and info["Args"] == ["-c", "exit 3"]
    state = info["State"]
    assert (state["Status"], state["Running"], state["ExitCode"], state["Pid"]) == (
        "exited",
        False,
        3,
        0,
    )
    assert state["Health"] == {"Status": "", "FailingStreak": 0, "Log": None}
    assert info["ImageName"] == IMAGE
    config = info["Config"]
    assert config["Cmd"] == ["sh", "-c", "exit 3"]
    assert config["Labels"]["tier"] == "back" and config["Labels"]["maintainer"] == "rl tests"
    assert "GREETING=hello world" in config["Env"]
    assert config["StopSignal"] == 15 and config["StopTimeout"] == 10
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/mnt"]["Type"] == "bind" and mounts["/mnt"]["RW"] is False
    assert mounts["/mnt"]["Source"] == str(store_dir / "bind")
    assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == "cqvol"
    assert mounts["/data"]["Options"] == ["nosuid", "nodev", "rbind"]
    host = info["HostConfig"]
    assert f"{store_dir / 'bind'}:/mnt:ro,rprivate,rbind" in host["Binds"]
    assert host["RestartPolicy"] == {"Name": "", "MaximumRetryCount": 0}
    assert host["LogConfig"]["Type"] == "k8s-file"
    assert host["LogConfig"]["Path"].endswith(f"{exited['cq-three']}/userdata/ctr.log")
    assert host["AutoRemove"] is False
    assert info["NetworkSettings"]["Ports"] == {"53/udp": None, "8080/tcp": None}


def test_inspect_format_type_and_errors(rlm: Rl, exited: dict[str, str]) -> None:
    out = rlm.ok(
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{range .Mounts}}{{.Destination}} {{end}}",
        "cq-three",
    ).stdout
    assert out == "exited 3 /data /mnt \n"
    assert rlm.ok("container", "inspect", "-f", "{{.Name}}", "cq-zero").stdout == "cq-zero\n"
    assert rlm.ok("inspect", "-l", "--format", "{{.Name}}").stdout == "cq-three\n"
    labels = json.loads(rlm.ok("inspect", "-f", "{{json .Config.Labels}}", "cq-three").stdout)
    assert labels["tier"] == "back"
    # Without --type: a container, then an image, then a volume, as podman.
    mixed = rlm.ok("inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", mixed)
    assert rlm.ok("inspect", "--format", "{{.Name}}", "cqvol").stdout == "cqvol\n"
    missing = rlm("inspect", "nosuch")
    assert missing.returncode == 125 and missing.stdout.strip() == "[]"
    assert 'Error: inspecting object: no such object: "nosuch"' in missing.stderr
    partial = rlm("inspect", "--format", "{{.Name}}", "cq-zero", "n1", "n2")
    assert partial.returncode == 125 and partial.stdout == "cq-zero\n"
    assert 'error inspecting object: no such object: "n2"' in partial.stderr
    assert 'Error: inspecting object: no such object: "n1"' in partial.stderr
    wrong = rlm("inspect", "--type", "image", "cq-zero")
    assert wrong.returncode == 125 and "cq-zero: image not known" in wrong.stderr
    only = rlm("container", "inspect", IMAGE)
    assert only.returncode == 125 and f"no such container {IMAGE}" in only.stderr
    bogus = rlm("inspect", "--type", "bogus", "cq-zero")
    assert bogus.returncode == 125 and 'invalid type "bogus"' in bogus.stderr
    field = rlm("inspect", "--format", "{{.Foo}}", "cq-zero")
    assert field.returncode == 125 and "Foo" in field.stderr
    assert rlm("inspect").returncode == 125


# --- rename / exists / wait ---------------------------------------------------------------


def test_rename_and_exists(rlm: Rl, exited: dict[str, str]) -> None:
    assert rlm.ok("rename", "cq-zero", "cq-renamed").stdout == ""
    try:
        assert rlm("container", "exists", "cq-zero").returncode == 1
        assert rlm("container", "exists", "cq-renamed").returncode == 0
        assert rlm("container", "exists", exited["cq-zero"][:10]).returncode == 0
        assert rlm.ok("inspect", "-f", "{{.Name}}", exited["cq-zero"]).stdout == "cq-renamed\n"
        taken = rlm("rename", "cq-renamed", "cq-three")
        assert taken.returncode == 125
        assert "name cq-three already in use" in taken.stderr
        bad = rlm("rename", "cq-renamed", "bad name")
        assert bad.returncode == 125 and "names must match" in bad.stderr
        assert rlm("rename", "nosuch", "x").returncode == 125
        assert rlm("rename", "cq-renamed", "cq-renamed").returncode == 0
    finally:
        rlm.ok("container", "rename", "cq-renamed", "cq-zero")
    assert rlm("container", "exists", "cq-zero").returncode == 0


def test_wait_on_exited_containers(rlm: Rl, exited: dict[str, str]) -> None:
    assert rlm.ok("wait", "cq-three", "cq-zero").stdout == "3\n0\n"
    assert rlm.ok("container", "wait", "-i", "100ms", "cq-three").stdout == "3\n"
    assert rlm.ok("wait", "--condition", "exited", "cq-zero").stdout == "0\n"
    missing = rlm("wait", "cq-zero", "nosuch")
    assert missing.returncode == 125 and missing.stdout == ""
    assert 'no container with name or ID "nosuch" found' in missing.stderr
    bogus = rlm("wait", "--condition", "bogus", "cq-zero")
    assert bogus.returncode == 125
    assert "unknown container state: bogus: invalid argument" in bogus.stderr
    assert rlm("wait").returncode == 125


def test_port_without_mappings(rlm: Rl, exited: dict[str, str]) -> None:
    assert rlm.ok("port", "cq-zero").stdout == ""
    assert rlm.ok("port", "-a").stdout == ""
    none = rlm("port")
    assert none.returncode == 125
    assert "you must supply a running container name or id" in none.stderr
    both = rlm("port", "-a", "cq-zero")
    assert both.returncode == 125 and "no arguments are needed with --all" in both.stderr


# --- prune (a store of its own) -----------------------------------------------------------


def test_container_prune(rl: Rl, busybox_archive: Path) -> None:
    rl.ok("load", "-i", str(busybox_archive))
    rl.ok("run", "--name", "keep", "-l", "keep=yes", IMAGE, "true")
    rl.ok("run", "--name", "gone", IMAGE, "true")
    declined = rl("container", "prune", input="n\n")
    assert declined.returncode == 0
    assert declined.stdout == (
        "WARNING! This will remove all non running containers.\n"
        "Are you sure you want to continue? [y/N] "
    )
    assert rl.ok("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["keep", "gone"]
    gone_id = rl.ok("inspect", "-f", "{{.Id}}", "gone").stdout.strip()
    pruned = rl.ok("container", "prune", "-f", "--filter", "label!=keep")
    assert pruned.stdout == f"{gone_id}\n"
    assert rl.ok("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["keep"]
    bad = rl("container", "prune", "-f", "--filter", "bogus=1")
    assert bad.returncode == 125 and "bogus is an invalid filter" in bad.stderr
    keep_id = rl.ok("inspect", "-f", "{{.Id}}", "keep").stdout.strip()
    assert rl.ok("container", "prune", input="y\n").stdout.endswith(f"[y/N] {keep_id}\n")
    assert rl.ok("ps", "-a", "-q").stdout == ""


# --- a running container ------------------------------------------------------------------


@pytest.fixture
def running(rlm: Rl) -> Iterator[subprocess.Popen[bytes]]:
    """`cq-run` running `sleep 1000` under a foreground `rl run` in the background."""
    proc = subprocess.Popen(
        _argv(rlm, "run", "--name", "cq-run", IMAGE, "sleep", "1000"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        deadline = time.monotonic() + 30
        # Running (and listed) from before its process starts: wait for its pid.
        while rlm.ok("ps", "--filter", "name=cq-run", "--format", "{{.Pid}}").stdout in ("", "0\n"):
            assert proc.poll() is None, "rl run ended early"
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.1)
        yield proc
    finally:
        rlm("rm", "-f", "cq-run")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_running_container_in_ps_inspect_wait_prune(
    rlm: Rl, exited: dict[str, str], running: subprocess.Popen[bytes]
) -> None:
    row = rlm.ok("ps", "--filter", "name=cq-run", "--format", "{{.Status}}|{{.Pid}}").stdout
    status, pid = row.strip().split("|")
    assert re.fullmatch(r"Up .* ago", status) and int(pid) > 0
    assert rlm.ok("ps", "--format", "{{.Names}}").stdout == "cq-run\n"
    assert rlm.ok("ps", "-a", "--filter", "status=running", "-q").stdout.strip() != ""
    [info] = json.loads(rlm.ok("inspect", "cq-run").stdout)
    assert info["State"]["Running"] is True and info["State"]["Status"] == "running"
    assert info["State"]["Pid"] == int(pid) and info["State"]["ExitCode"] == 0
    assert info["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"
    assert rlm.ok("wait", "--condition", "running", "cq-run").stdout == "-1\n"
    assert rlm.ok("port", "cq-run").stdout == ""
    pruned = rlm.ok("container", "prune", "-f", "--filter", "label=nosuch").stdout
    assert pruned == ""
    # `rl wait` blocks until the container ends, then prints its exit code.
    waiter = subprocess.Popen(
        _argv(rlm, "wait", "cq-run"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
    )
    time.sleep(0.5)
    assert waiter.poll() is None, "wait returned while the container runs"
    os.kill(int(pid), signal.SIGKILL)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out == b"137\n"
    running.wait(timeout=30)
    after = rlm.ok("ps", "-a", "--filter", "name=cq-run", "--format", "{{.Status}}").stdout
    assert after.startswith("Exited (137) ")


def test_detached_container_listing(rlm: Rl) -> None:
    cid = rlm.ok("run", "-d", "--name", "cq-detached", IMAGE, "sleep", "1000").stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while rlm.ok("inspect", "-f", "{{.State.Pid}}", cid).stdout == "0\n":
            assert time.monotonic() < deadline, "the detached container did not start"
            time.sleep(0.1)
        assert cid in rlm.ok("ps", "-q", "--no-trunc").stdout.split()
        assert rlm.ok("wait", "--condition", "running", "cq-detached").stdout == "-1\n"
        state = json.loads(rlm.ok("inspect", "-f", "{{json .State}}", "cq-detached").stdout)
        assert state["Running"] is True and state["Pid"] > 0 and state["ConmonPid"] > 0
    finally:
        rlm("rm", "-f", "cq-detached")
