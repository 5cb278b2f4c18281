"""The same OCI bundle run by rl's executor and by a reference runtime must look the same from
inside: id maps, capability sets, NoNewPrivs, seccomp mode, hostname, environment, working
directory and the shape of the mount table (mount points, filesystem types, ro/rw).

The reference is Debian's crun when it can run here, else runc. On these hosts crun cannot:
cgroups are hybrid (v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified) and
Debian's crun refuses that layout outright ("cgroups in hybrid mode not supported, drop all
controllers from cgroupv2"), even with `--cgroup-manager=disabled` (MACHINE-NOTES.md). runc
(`apt-get install runc`) runs the bundle rootless as the test user, so it is the comparison
runtime here; on a cgroup v2 host the test uses crun.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.oci_bundle import (
    DEFAULT_CAPS,
    default_seccomp,
    make_rootfs,
    make_spec,
    run_executor,
    write_bundle,
)
from tests.harness import User

pytestmark = pytest.mark.e2e

PROBE = r"""
echo '== maps'; cat /proc/self/uid_map /proc/self/gid_map
echo '== status'; grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status
echo '== hostname'; hostname
echo '== env'; env | sort
echo '== cwd'; pwd
echo '== id'; id
echo '== mounts'; cat /proc/self/mountinfo
"""


@pytest.fixture(scope="module")
def rootfs(user: User) -> Iterator[Path]:
    base = user.make_dir("rl-differential-rootfs-")
    yield make_rootfs(base / "rootfs", user)
    shutil.rmtree(base, ignore_errors=True)


def reference_runtime(user: User, bundle: Path, state: Path, name: str) -> tuple[str, str]:
    """(runtime name, output) from crun if it works on this host, else runc."""
    tried = []
    for runtime, extra in (("crun", ["--cgroup-manager=disabled"]), ("runc", [])):
        if not shutil.which(runtime):
            tried.append(f"{runtime}: not installed")
            continue
        argv = [
            runtime,
            "--root",
            str(state / runtime),
            *extra,
            "run",
            "--bundle",
            str(bundle),
            name,
        ]
        proc = subprocess.run(
            user.argv(argv, user.env()),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode == 0:
            return runtime, proc.stdout
        tried.append(f"{runtime}: {proc.stderr.strip()[-200:]}")
    pytest.skip("no reference runtime runs here: " + "; ".join(tried))


def sections(output: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith("== "):
            current = line[3:]
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def mount_shape(mountinfo: list[str]) -> list[tuple[str, str, str]]:
    """(mount point, fs type, ro|rw) per mount, sorted: ids, devices, sources and the order
    in which runtimes create mounts differ without mattering."""
    shape = []
    for line in mountinfo:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        shape.append((fields[4], tail.split()[0], fields[5].split(",")[0]))
    return sorted(shape)


def normalized(output: str) -> dict[str, Any]:
    parts = sections(output)
    return {
        "maps": [re.sub(r"\s+", " ", line.strip()) for line in parts["maps"]],
        "status": parts["status"],
        "hostname": parts["hostname"],
        "env": parts["env"],
        "cwd": parts["cwd"],
        # runc adds the primary gid as a supplementary group when additionalGids is empty,
        # crun (podman's runtime, and rl) sets exactly additionalGids: compare uid and gid.
        "id": [line.split(" groups=")[0] for line in parts["id"]],
        "mounts": mount_shape(parts["mounts"]),
    }


@pytest.mark.parametrize(
    "spec_args",
    [
        pytest.param({}, id="root-default-caps"),
        pytest.param(
            {
                "uid": 1000,
                "gid": 1000,
                "cwd": "/home/app",
                "caps": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                "ambient": ["CAP_NET_BIND_SERVICE"],
                "readonly": False,
                "hostname": "other",
                "no_new_privileges": False,
                "env": ["PATH=/bin:/usr/bin", "A=1", "B=two words"],
            },
            id="user-ambient-rw-root",
        ),
        pytest.param({"namespaces": ("pid", "ipc", "uts", "mount", "user")}, id="host-network"),
        pytest.param({"seccomp": "default"}, id="seccomp-default-profile"),
        pytest.param(
            {"seccomp": "default", "no_new_privileges": False, "uid": 1000, "gid": 1000},
            id="seccomp-without-no-new-privs-as-user",
        ),
    ],
)
def test_same_view_as_reference_runtime(
    user: User, workdir: Path, rootfs: Path, spec_args: dict[str, Any]
) -> None:
    if spec_args.get("seccomp") == "default":
        spec_args = {**spec_args, "seccomp": default_seccomp()}
    spec = make_spec(user, ["sh", "-c", PROBE], root=rootfs, **spec_args)
    bundle = write_bundle(workdir / "bundle", spec, user)
    ours = run_executor(user, bundle, "--no-stdin")
    assert ours.returncode == 0, ours
    runtime, theirs = reference_runtime(user, bundle, workdir, f"rl-diff-{workdir.name}")
    mine, reference = normalized(ours.stdout), normalized(theirs)
    for key in reference:
        assert mine[key] == reference[key], f"{key} differs from {runtime}"
    # The probe really saw something: the comparison cannot pass on empty output.
    assert len(mine["mounts"]) > 15
    assert any(line.startswith("CapBnd:") for line in mine["status"])


def test_default_caps_match_podman_mask(user: User, workdir: Path, rootfs: Path) -> None:
    """The default set is podman's: CapEff 00000000800405fb, as runc also reports it."""
    spec = make_spec(user, ["grep", "CapEff", "/proc/self/status"], root=rootfs, caps=DEFAULT_CAPS)
    bundle = write_bundle(workdir / "bundle", spec, user)
    result = run_executor(user, bundle)
    assert result.stdout.split() == ["CapEff:", "00000000800405fb"]
