"""`rl info` and `rl doctor` as the unprivileged user, on this host and on simulated broken ones.

Broken hosts are simulated with the test hooks hostfacts documents (RL_SUBUID_FILE,
RL_DEV_FUSE, RL_DEV_NET_TUN), with ordinary environment (XDG_RUNTIME_DIR, PATH), and with a
user namespace whose user.max_user_namespaces is 0 — never by changing the host.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from rootless.userns import parse_subids
from tests.conftest import Rl
from tests.harness import Result, User, rl_binary
from tests.images import build_image, minimal_spec, write_docker_archive

pytestmark = pytest.mark.e2e


def expected_uidmap(user: User) -> list[dict[str, int]]:
    (start, count), *_ = parse_subids(Path("/etc/subuid").read_text(), user.name, user.uid)
    return [
        {"container_id": 0, "host_id": user.uid, "size": 1},
        {"container_id": 1, "host_id": start, "size": count},
    ]


def checks(result: Result) -> dict[str, dict[str, str]]:
    return {f["check"]: f for f in json.loads(result.stdout)}


# --- rl info ----------------------------------------------------------------------------------


def test_info_yaml_describes_host_store_and_id_mappings(rl: Rl, user: User) -> None:
    data = yaml.safe_load(rl.ok("info").stdout)
    host, store = data["host"], data["store"]
    assert host["idMappings"]["uidmap"] == expected_uidmap(user)
    assert host["idMappings"]["gidmap"][0] == {"container_id": 0, "host_id": user.gid, "size": 1}
    assert host["kernel"] == platform.release()
    assert host["security"]["rootless"] is True
    assert host["cpus"] >= 1
    assert store["graphRoot"] == str(rl.root)
    assert store["runRoot"] == f"{user.runtime_dir}/rl"
    assert store["graphDriverName"] in ("overlay", "fuse", "vfs")
    assert store["graphStatus"]["reason"]
    assert store["imageStore"]["number"] == 0
    assert data["plugins"]["network"] == ["slirp4netns", "none", "host"]
    assert data["plugins"]["defaultNetwork"] == "slirp4netns"


def test_info_json_matches_yaml(rl: Rl, user: User) -> None:
    data = json.loads(rl.ok("info", "--format", "json").stdout)
    assert data["host"]["idMappings"]["uidmap"] == expected_uidmap(user)
    assert data["version"]["Version"]
    assert set(data) == set(yaml.safe_load(rl.ok("info").stdout))


def test_info_go_template(rl: Rl) -> None:
    out = rl.ok("info", "--format", "{{.Host.Kernel}} {{.Store.GraphRoot}}").stdout
    assert out == f"{platform.release()} {rl.root}\n"
    assert rl.ok("system", "info", "-f", "{{.Host.Security.Rootless}}").stdout == "true\n"


def test_info_counts_images(rl: Rl, workdir: Path) -> None:
    archive = write_docker_archive(workdir / "minimal.tar", [build_image(minimal_spec())])
    rl.ok("load", "-i", str(archive))
    assert rl.ok("info", "--format", "{{.Store.ImageStore.Number}}").stdout == "1\n"


def test_info_bad_template_is_one_line_error(rl: Rl) -> None:
    result = rl("info", "--format", "{{.Host.NoSuchField}}")
    assert result.returncode == 125
    assert result.stderr.startswith("Error: ")
    assert "NoSuchField" in result.stderr
    assert len(result.stderr.splitlines()) == 1


# --- rl doctor on this host -----------------------------------------------------------------


def test_doctor_is_healthy_here(rl: Rl) -> None:
    result = rl("doctor")
    assert result.returncode == 0, result
    assert "[FAIL]" not in result.stdout
    for title in ("user namespaces", "id mapping", "subordinate uids", "XDG_RUNTIME_DIR"):
        assert any(
            line.startswith("[ OK ]") and title in line for line in result.stdout.splitlines()
        ), (title, result.stdout)


def test_system_check_json_here(rl: Rl) -> None:
    result = rl("system", "check", "--format", "json")
    assert result.returncode == 0, result
    found = checks(result)
    assert found["userns"]["status"] == "ok"
    assert found["idmap"]["status"] == "ok"
    assert all(f["status"] != "error" for f in found.values()), found
    # These hosts have hybrid cgroups (MACHINE-NOTES.md): limits cannot be enforced.
    if Path("/sys/fs/cgroup/unified").is_dir():
        assert found["cgroups"]["status"] == "warning"
        assert "systemd.unified_cgroup_hierarchy=1" in found["cgroups"]["fix"]


# --- rl doctor on simulated broken hosts ----------------------------------------------------


def doctor(rl: Rl, env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    result = rl("doctor", "--format", "json", env=env)
    assert result.returncode in (0, 1), result
    return result.returncode, checks(result)


def test_missing_subuid_range(rl: Rl, user: User, workdir: Path) -> None:
    subuid = workdir / "subuid"
    subuid.write_text("someoneelse:100000:65536\n")
    code, found = doctor(rl, {"RL_SUBUID_FILE": str(subuid)})
    assert code == 1
    assert found["subuid"]["status"] == "error"
    assert f"{subuid} has no range for {user.name}" in found["subuid"]["message"]
    assert found["subuid"]["fix"] == f"sudo usermod --add-subuids 165536-231071 {user.name}"
    assert found["subgid"]["status"] == "ok"
    # The human form shows the fix under the failure.
    text = rl("doctor", env={"RL_SUBUID_FILE": str(subuid)})
    assert text.returncode == 1
    assert "fix: sudo usermod --add-subuids" in text.stdout


def test_small_subuid_range(rl: Rl, user: User, workdir: Path) -> None:
    subuid = workdir / "subuid"
    start, _ = parse_subids(Path("/etc/subuid").read_text(), user.name, user.uid)[0]
    subuid.write_text(f"{user.name}:{start}:1000\n")
    code, found = doctor(rl, {"RL_SUBUID_FILE": str(subuid)})
    assert code == 0
    assert found["subuid"]["status"] == "warning"
    assert found["idmap"]["status"] == "ok"  # a smaller map still applies


def test_unset_runtime_dir(rl: Rl, user: User) -> None:
    code, found = doctor(rl, {"XDG_RUNTIME_DIR": ""})
    assert code == 0
    assert found["runtime_dir"]["status"] == "warning"
    assert found["runtime_dir"]["fix"] == f"export XDG_RUNTIME_DIR=/run/user/{user.uid}"


def test_runtime_dir_of_another_user(rl: Rl, user: User, workdir: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a directory the test user does not own")
    foreign = workdir / "root-runtime"
    foreign.mkdir(mode=0o700)  # owned by root, who runs the tests
    code, found = doctor(rl, {"XDG_RUNTIME_DIR": str(foreign)})
    assert code == 1
    f = found["runtime_dir"]
    assert f["status"] == "error"
    assert f"belongs to uid 0, not to {user.name}" in f["message"]
    assert f["fix"] == f"export XDG_RUNTIME_DIR=/run/user/{user.uid}"
    code, found = doctor(rl, {"XDG_RUNTIME_DIR": str(workdir / "missing")})
    assert (code, found["runtime_dir"]["status"]) == (1, "error")
    assert "does not exist" in found["runtime_dir"]["message"]


@pytest.mark.parametrize(
    ("hook", "check", "numbers"),
    [("RL_DEV_FUSE", "fuse", (10, 229)), ("RL_DEV_NET_TUN", "tun", (10, 200))],
)
def test_inaccessible_device(
    rl: Rl, workdir: Path, hook: str, check: str, numbers: tuple[int, int]
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to create a device node the test user cannot open")
    device = workdir / check
    os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(*numbers))
    code, found = doctor(rl, {hook: str(device)})
    assert code == 0  # rl works without them, with less
    assert found[check]["status"] == "warning"
    assert "not readable and writable" in found[check]["message"]
    assert found[check]["fix"] == f"sudo chmod 0666 {device}"
    _, found = doctor(rl, {hook: str(workdir / "absent")})
    assert found[check]["status"] == "warning"
    assert "does not exist" in found[check]["message"]


def test_store_the_user_cannot_write(user: User, workdir: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a store the test user does not own")
    store = workdir / "root-store"
    store.mkdir(mode=0o755)
    result = user.run([rl_binary(), "--root", str(store), "doctor", "--format", "json"])
    assert result.returncode == 1, result
    found = checks(result)
    assert found["store"]["status"] == "error"
    assert found["store"]["fix"].startswith(f"sudo chown {user.name} {store}")
    # rl info still answers, naming the problem instead of a driver.
    info = user.run([rl_binary(), "--root", str(store), "info", "--format", "json"])
    assert info.returncode == 0, info
    assert json.loads(info.stdout)["store"]["graphRoot"] == str(store)


def test_map_helper_that_is_not_setuid(rl: Rl, workdir: Path) -> None:
    # A copy of newuidmap first on PATH, as a broken package or a `cp` would leave it:
    # rl's user-namespace code finds it the same way and fails for real.
    bindir = workdir / "bin"
    bindir.mkdir()
    original = shutil.which("newuidmap") or "/usr/bin/newuidmap"
    shutil.copy(original, bindir / "newuidmap")
    os.chmod(bindir / "newuidmap", 0o755)
    path = f"{bindir}:/usr/local/bin:/usr/bin:/bin"
    code, found = doctor(rl, {"PATH": path})
    assert code == 1
    assert found["newuidmap"]["status"] == "error"
    assert "neither setuid root" in found["newuidmap"]["message"]
    assert found["newuidmap"]["fix"].endswith(f"sudo chmod u+s {bindir}/newuidmap")
    assert found["idmap"]["status"] == "error"  # and mapping really fails
    assert found["newgidmap"]["status"] == "ok"


NO_USERNS = textwrap.dedent(
    """
    # Become root of a user namespace only to set its user.max_user_namespaces to 0, then
    # run the rest as the same user inside it: creating any further namespace then fails.
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    open("/proc/self/setgroups", "w").write("deny")
    open("/proc/self/uid_map", "w").write(f"{uid} {uid} 1\\n")
    open("/proc/self/gid_map", "w").write(f"{gid} {gid} 1\\n")
    open("/proc/sys/user/max_user_namespaces", "w").write("0\\n")
    os.execv(sys.argv[1], sys.argv[1:])
    """
)


def test_user_namespaces_disabled(rl: Rl, user: User, workdir: Path) -> None:
    script = workdir / "no_userns.py"
    script.write_text(NO_USERNS)
    argv = ["/usr/bin/python3", str(script), rl_binary(), "--root", str(rl.root)]
    result = user.run([*argv, "doctor", "--format", "json"])
    assert result.returncode == 1, result
    found: dict[str, Any] = checks(result)
    assert found["userns"]["status"] == "error"
    assert "cannot create a user namespace" in found["userns"]["message"]
    assert "sysctl -w user.max_user_namespaces=" in found["userns"]["fix"]
    assert found["idmap"]["status"] == "skip"
    # `rl info` still answers.
    info = json.loads(user.run([*argv, "info", "--format", "json"]).stdout)
    assert info["host"]["security"]["rootless"] is True
