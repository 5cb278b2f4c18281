"""The fuse storage driver end to end: `rl run --storage-driver fuse` as the unprivileged user.

The storage-sensitive part of tests/e2e/test_run.py (image files, workdirs, entrypoints, users
from the image's passwd, volumes, the read-only root, id mappings, container records, and cleanup
on every exit path: detached, signalled, killed) runs again with the fuse driver (the same test
functions, with `rlm` bound to `--storage-driver fuse`); writes and deletes of image files run
with both drivers; then what only the fuse driver has: the helper process's lifetime on every
exit path, its death mid-run, keep-id without a chowned copy, and podman running fuseoverlay as
its mount program.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rl, loaded_store
from tests.e2e.test_run import (
    IMAGE,
    _descendants,
    _host_mounts_under,
    _read_until,
    _rl_argv,
    _rl_pid,
    sh,
    subid_start,
)
from tests.e2e.test_run import (
    test_bind_mounts_rw_ro_and_ownership as test_bind_mounts_rw_ro_and_ownership,
)
from tests.e2e.test_run import test_detach_prints_the_id as test_detach_prints_the_id
from tests.e2e.test_run import test_entrypoint_override as test_entrypoint_override
from tests.e2e.test_run import test_env_and_workdir as test_env_and_workdir
from tests.e2e.test_run import test_exit_codes as test_exit_codes
from tests.e2e.test_run import test_id_maps_pid1_and_hostname as test_id_maps_pid1_and_hostname
from tests.e2e.test_run import (
    test_image_file_ownership_inside_and_on_host as test_image_file_ownership_inside_and_on_host,
)
from tests.e2e.test_run import test_keep_id as test_keep_id
from tests.e2e.test_run import (
    test_killed_by_signal_is_128_plus_n as test_killed_by_signal_is_128_plus_n,
)
from tests.e2e.test_run import (
    test_missing_image_workdir_is_created_for_the_user as test_missing_image_workdir_is_created_for_the_user,  # noqa: E501
)
from tests.e2e.test_run import (
    test_missing_workdir_flag_is_podmans_error as test_missing_workdir_flag_is_podmans_error,
)
from tests.e2e.test_run import (
    test_named_container_record_ps_and_rm as test_named_container_record_ps_and_rm,
)
from tests.e2e.test_run import test_named_volume_persists as test_named_volume_persists
from tests.e2e.test_run import (
    test_privileged_containerenv_and_caps as test_privileged_containerenv_and_caps,
)
from tests.e2e.test_run import test_read_only_root as test_read_only_root
from tests.e2e.test_run import test_rm_leaves_nothing as test_rm_leaves_nothing
from tests.e2e.test_run import (
    test_rm_of_running_container_needs_force as test_rm_of_running_container_needs_force,
)
from tests.e2e.test_run import (
    test_rm_removes_anonymous_volumes_only as test_rm_removes_anonymous_volumes_only,
)
from tests.e2e.test_run import (
    test_sigkill_of_rl_leaves_no_process_or_mount as test_sigkill_of_rl_leaves_no_process_or_mount,
)
from tests.e2e.test_run import (
    test_sigkilled_rm_container_is_cleaned_by_ps as test_sigkilled_rm_container_is_cleaned_by_ps,
)
from tests.e2e.test_run import (
    test_sigterm_reaches_the_container as test_sigterm_reaches_the_container,
)
from tests.e2e.test_run import (
    test_uidmap_uses_intermediate_ids as test_uidmap_uses_intermediate_ids,
)
from tests.e2e.test_run import (
    test_unknown_user_is_podmans_error as test_unknown_user_is_podmans_error,
)
from tests.e2e.test_run import test_user_resolution as test_user_resolution
from tests.e2e.test_run import (
    test_volume_in_use_cannot_be_removed as test_volume_in_use_cannot_be_removed,
)
from tests.e2e.test_run import (
    test_whiteouts_and_opaque_dirs_hidden as test_whiteouts_and_opaque_dirs_hidden,
)
from tests.harness import Result, User, cmdline, installed_tool

pytestmark = pytest.mark.e2e

HELPER = "rootless.storage.fuse"  # in the helper's command line


class DriverRl(Rl):
    """rl with `--storage-driver DRIVER` after the command word, as a podman user writes it."""

    def __init__(self, user: User, root: Path, driver: str) -> None:
        super().__init__(user, root)
        self.driver = driver
        self.global_args = ("--storage-driver", driver)  # for test_run._rl_argv

    def __call__(
        self,
        *args: str,
        input: bytes | str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> Result:
        if args and args[0] == "run":
            args = ("run", "--storage-driver", self.driver, *args[1:])
        return super().__call__(*args, input=input, timeout=timeout, env=env)


@pytest.fixture(scope="module", params=["fuse"])
def rlm(request: pytest.FixtureRequest, user: User, busybox_archive: Path) -> Iterator[Rl]:
    """The run tests' `rlm`, bound to a storage driver (the test ids name it)."""
    make = functools.partial(DriverRl, driver=request.param)
    with loaded_store(user, busybox_archive, "rl-fuse-", make) as rl:
        yield rl


def _helpers_of(user: User) -> list[int]:
    """The test user's fuse helper processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            owner = entry.stat().st_uid
        except OSError:
            continue
        if owner == user.uid and HELPER in cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def _container_id(rl: Rl, name: str) -> str:
    rows = rl.ok("ps", "-a", "--no-trunc").stdout.splitlines()
    return next(row.split()[0] for row in rows if row.split()[-1] == name)


# --- both drivers --------------------------------------------------------------------------

IMAGE_CHANGES = (
    "echo more >> /etc/motd; cat /etc/motd; rm /home/tester/secret.txt; ls -A /home/tester; "
    "rm -r /data; ls /data 2>&1; mkdir /data && echo new > /data/f && cat /data/f; "
    "chmod 600 /etc/motd; mv /etc/motd /etc/motd2; stat -c %a /etc/motd2; ls /etc/motd 2>&1; "
    "ln /etc/passwd /etc/passwd2; stat -c %h /etc/passwd; truncate -s 4 /etc/group; "
    "cat /etc/group; echo; touch -d @1000000000 /etc/group; stat -c %Y /etc/group"
)
IMAGE_CHANGES_SEEN = [
    "layer 3", "more", "shared", "ls: /data: No such file or directory", "new", "600",
    "ls: /etc/motd: No such file or directory", "2", "root", "1000000000",
]  # fmt: skip


@pytest.mark.parametrize("driver", ["overlay", "fuse"])
def test_image_files_written_and_deleted(rlm: Rl, driver: str) -> None:
    """Changes to image files and directories in one container; the next sees the image."""
    rl = DriverRl(rlm.user, rlm.root, driver)
    assert sh(rl, IMAGE_CHANGES).splitlines() == IMAGE_CHANGES_SEEN
    fresh = "cat /etc/motd /home/tester/secret.txt; ls /data | wc -l; stat -c %h /etc/passwd"
    fresh += "; head -c 5 /etc/group"
    assert sh(rl, fresh).splitlines() == ["layer 3", "tester's secret", "9", "1", "root:"]


# --- what only the fuse driver does -----------------------------------------------------


def test_root_is_fuseoverlay_and_no_helper_remains(rlm: Rl, user: User) -> None:
    before = _helpers_of(user)
    out = sh(rlm, "grep ' / / ' /proc/self/mountinfo")
    assert " - fuse.fuseoverlay fuseoverlay " in out
    assert "default_permissions" in out and "allow_other" in out
    assert _wait_gone([p for p in _helpers_of(user) if p not in before]) == []


def test_new_files_land_in_the_upper_dir_with_store_ids(rlm: Rl, user: User) -> None:
    script = "echo root > /by-root; echo t > /by-tester; chown 1000:1000 /by-tester; rm /etc/motd"
    rlm.ok("run", "--name", "fuse-upper", IMAGE, "sh", "-c", script)
    try:
        upper = rlm.root / "containers" / _container_id(rlm, "fuse-upper") / "diff"
        assert (upper / "by-root").read_text() == "root\n"
        assert (upper / "by-root").stat().st_uid == user.uid  # container root = the user
        assert (upper / "by-tester").stat().st_uid == subid_start(user) + 999
        whiteout = os.lstat(upper / "etc" / "motd")  # the lower file, hidden by a whiteout
        assert whiteout.st_rdev == 0 and (whiteout.st_mode & 0o170000) == 0o020000
    finally:
        rlm.ok("rm", "fuse-upper")


def test_keep_id_shows_the_image_owners(rlm: Rl, user: User) -> None:
    """No chowned copy: the helper shifts ids, so keep-id sees the image's owners (the kernel
    overlay driver shows them shifted by the keep-id permutation)."""
    out = sh(rlm, "id -u; stat -c %u:%g / /bin/busybox /home/tester/secret.txt",
             "--userns=keep-id")  # fmt: skip
    assert out.split() == [str(user.uid), "0:0", "0:0", "1000:1000"]
    out = sh(rlm, "touch /tmp/mine && stat -c %u:%g /tmp/mine", "--userns=keep-id")
    assert out.split() == [f"{user.uid}:{user.gid}"]


def test_helper_is_outside_the_container_pid_namespace(rlm: Rl, user: User) -> None:
    proc = subprocess.Popen(
        _rl_argv(rlm, "run", "--rm", "-i", "--storage-driver", "fuse", IMAGE, "sh", "-c",
                 "ls /proc | grep -c '^[0-9]'; echo ready; read x"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=str(user.home),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    seen = _read_until(proc.stdout.fileno(), b"ready").split()
    assert seen[1:] == [b"ready"] and int(seen[0]) <= 3  # sh, ls, grep: no helper inside
    rl_pid = _rl_pid(proc)
    helpers = [p for p in _descendants(rl_pid) if p in _helpers_of(user)]
    assert len(helpers) == 1  # one helper per container, a child of rl
    [helper] = helpers
    assert os.readlink(f"/proc/{helper}/ns/pid") == os.readlink(f"/proc/{rl_pid}/ns/pid")
    proc.communicate(b"go\n", timeout=30)
    assert proc.returncode == 0
    assert _wait_gone([helper]) == []


def test_killed_helper_means_io_errors_and_one_line(rlm: Rl, user: User) -> None:
    proc = subprocess.Popen(
        _rl_argv(rlm, "run", "-i", "--name", "fuse-killed", "--storage-driver", "fuse", IMAGE,
                 "sh", "-c", "echo completed > /done; sync; echo ready; read x; cat /etc/motd"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=str(user.home),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    assert _read_until(proc.stdout.fileno(), b"ready") == b"ready\n"
    rl_pid = _rl_pid(proc)
    [helper] = [p for p in _descendants(rl_pid) if p in _helpers_of(user)]
    os.kill(helper, signal.SIGKILL)
    out, err = proc.communicate(b"go\n", timeout=30)
    assert proc.returncode != 0, out
    assert b"layer 3" not in out  # the read failed
    lines = err.decode().splitlines()
    reports = [line for line in lines if "fuseoverlay helper" in line]
    assert reports == [
        "WARN[0000] the fuseoverlay helper of this container died (killed by SIGKILL): "
        "from then on its file system failed with I/O errors"
    ]
    try:
        # the write completed before the helper died is in the upper dir, whole
        upper = rlm.root / "containers" / _container_id(rlm, "fuse-killed") / "diff"
        assert (upper / "done").read_text() == "completed\n"
        assert _host_mounts_under(rlm.root) == []
    finally:
        rlm.ok("rm", "fuse-killed")
    assert not (rlm.root / "containers").exists() or list((rlm.root / "containers").iterdir()) == []


def test_failed_setup_leaves_no_helper(rlm: Rl, user: User) -> None:
    before = _helpers_of(user)
    result = rlm("run", "--rm", "-u", "nosuch", IMAGE, "true")
    assert result.returncode == 126
    result = rlm("run", "--rm", "-w", "/no/such", IMAGE, "true")
    assert result.returncode == 126
    assert _wait_gone([p for p in _helpers_of(user) if p not in before]) == []


def test_info_reports_the_choice(rlm: Rl) -> None:
    auto = rlm.ok("info").stdout
    driver = next(line.split()[1] for line in auto.splitlines() if "graphDriverName:" in line)
    assert driver in ("overlay", "fuse", "vfs")
    assert "reason:" in auto
    explicit = rlm.ok("--storage-driver", "fuse", "info").stdout
    assert "graphDriverName: fuse" in explicit and "chosen explicitly" in explicit


def test_fuse_probe_works_here_and_cleans_up(user: User, workdir: Path) -> None:
    runtime = workdir / "runtime"
    runtime.mkdir(mode=0o700)
    os.chown(runtime, user.uid, user.gid)
    code = (
        "import json\n"
        "from rootless.storage.probe import fuse_support\n"
        "fresh = fuse_support(refresh=True)\n"
        "print(json.dumps([fresh.works, fresh.reason, fuse_support().works]))\n"
    )
    before = _helpers_of(user)
    env = {"RL_ROOT": str(workdir / "store"), "XDG_RUNTIME_DIR": str(runtime)}
    result = user.run([installed_tool("python"), "-c", code], env=env)
    assert result.returncode == 0, str(result)
    works, reason, cached = json.loads(result.stdout)
    assert works is True, reason
    assert cached is True
    assert json.loads((runtime / "rl" / "storage-probe-fuse.json").read_text())["works"] is True
    assert list((workdir / "store").iterdir()) == []  # the probe's scratch dir is gone
    assert _wait_gone([p for p in _helpers_of(user) if p not in before]) == []


def test_auto_falls_back_to_fuse_when_overlay_does_not_work(rlm: Rl, workdir: Path) -> None:
    """The overlay probe's cached answer says no (as on a kernel without overlay in user
    namespaces): auto takes fuse, says why, and runs containers with it."""
    runtime = workdir / "runtime"
    (runtime / "rl").mkdir(parents=True, mode=0o700)
    key = f"{os.uname().release} dev={os.stat(rlm.root).st_dev}"
    (runtime / "rl" / "storage-probe.json").write_text(
        json.dumps({"key": key, "works": False, "reason": "mount: Operation not permitted"})
    )
    subprocess.run(["chown", "-R", f"{rlm.user.uid}:{rlm.user.gid}", str(runtime)], check=True)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    info = rlm("info", env=env)
    assert info.returncode == 0, info
    assert "graphDriverName: fuse" in info.stdout
    assert (
        "kernel overlayfs does not work in a user namespace here (mount: Operation not "
        "permitted); fuseoverlay does" in info.stdout
    )
    ran = Rl(rlm.user, rlm.root)("run", "--rm", IMAGE, "grep", " / / ", "/proc/self/mountinfo",
                                 env=env)  # fmt: skip
    assert ran.returncode == 0, ran
    assert " - fuse.fuseoverlay fuseoverlay " in ran.stdout


# --- podman with fuseoverlay as its mount program -----------------------------------------


@pytest.mark.slow
def test_podman_runs_with_fuseoverlay_as_mount_program(
    user: User, workdir: Path, busybox_archive: Path
) -> None:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.skip("podman and runc are needed")
    fuseoverlay = installed_tool("fuseoverlay")

    def podman(root: str, *storage: str) -> list[str]:
        return ["podman", "--root", str(workdir / root), "--runroot", str(workdir / f"{root}.run"),
                *storage, "--runtime", "runc"]  # fmt: skip

    # Can podman run a container here at all (vfs needs nothing from the kernel)?
    plain = podman("plain", "--storage-driver", "vfs")
    loaded = user.run([*plain, "load", "-i", str(busybox_archive)], timeout=300)
    baseline = user.run([*plain, "run", "--rm", "--network", "none", IMAGE, "true"], timeout=120)
    if loaded.returncode != 0 or baseline.returncode != 0:
        pytest.skip(f"podman cannot run containers here: {loaded.stderr}{baseline.stderr}".strip())
    fuse = podman("fuse", "--storage-driver", "overlay",
                  "--storage-opt", f"overlay.mount_program={fuseoverlay}")  # fmt: skip
    assert user.run([*fuse, "load", "-i", str(busybox_archive)], timeout=300).returncode == 0
    ran = user.run(
        [*fuse, "run", "--rm", "--network", "none", IMAGE, "sh", "-c",
         "grep ' / / ' /proc/self/mountinfo; stat -c %u:%g /home/tester/secret.txt; "
         "ls /etc/to-be-deleted 2>/dev/null; cat /etc/motd; echo x > /y && cat /y"],
        timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran
    lines = ran.stdout.splitlines()
    assert " - fuse.fuseoverlay fuseoverlay " in lines[0]
    assert lines[1:] == ["1000:1000", "layer 3", "x"]
    # podman unmounted, and so the fuseoverlay process it started has ended
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _mount_programs(workdir):
        time.sleep(0.05)
    assert _mount_programs(workdir) == []


def _mount_programs(workdir: Path) -> list[str]:
    return [
        p.name for p in Path("/proc").iterdir()
        if p.name.isdigit() and "fuseoverlay" in (c := cmdline(int(p.name))) and str(workdir) in c
    ]  # fmt: skip
