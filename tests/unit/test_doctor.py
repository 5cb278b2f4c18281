"""`rl doctor`'s judgement on made-up hosts: every problem it claims to find, found."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from rootless import doctor
from rootless.doctor import Finding, diagnose
from rootless.hostfacts import CgroupFacts, HostFacts, MapHelper, PathFacts, Probe

OK = Probe("ok")


def healthy() -> HostFacts:
    """A host where everything works: cgroup v2 with delegation, systemd, lingering."""
    return HostFacts(
        uid=1000,
        gid=1000,
        user="alice",
        kernel="6.1.0-13-amd64",
        distro_id="debian",
        subuids=((100000, 65536),),
        subgids=((100000, 65536),),
        next_free_subid=165536,
        newuidmap=MapHelper("/usr/bin/newuidmap", setuid_root=True, file_capability=False),
        newgidmap=MapHelper("/usr/bin/newgidmap", setuid_root=True, file_capability=False),
        sysctls={"user.max_user_namespaces": "15000"},
        userns=OK,
        idmap=OK,
        uid_map="0 1000 1\n1 100000 65536\n",
        mount_in_userns=OK,
        overlay_in_userns=OK,
        xdg_runtime_dir="/run/user/1000",
        xdg_runtime=PathFacts("/run/user/1000", "dir", 1000, 0o700, True),
        login_runtime=PathFacts("/run/user/1000", "dir", 1000, 0o700, True),
        store=PathFacts("/home/alice/.local/share/rl", "dir", 1000, 0o700, True),
        dev_fuse=PathFacts("/dev/fuse", "chardev", 0, 0o666, True),
        dev_tun=PathFacts("/dev/net/tun", "chardev", 0, 0o666, True),
        cgroups=CgroupFacts(
            "v2",
            "/sys/fs/cgroup",
            "/user.slice/user-1000.slice/session-2.scope",
            False,
            ("cpuset", "cpu", "io", "memory", "pids"),
        ),
        systemd=True,
        linger=True,
    )


def changed(facts: HostFacts, **changes: Any) -> HostFacts:
    """`replace` with field names chosen at run time."""
    return replace(facts, **changes)


def finding(facts: HostFacts, check: str) -> Finding:
    (match,) = [f for f in diagnose(facts) if f.check == check]
    return match


def test_a_healthy_host_passes_every_check() -> None:
    findings = diagnose(healthy())
    assert [f.status for f in findings] == ["ok"] * len(findings), findings
    assert doctor.exit_code(findings) == 0
    assert doctor.render(findings).endswith("all checks passed\n")


def test_every_check_has_a_stable_unique_name() -> None:
    names = [f.check for f in diagnose(healthy())]
    assert len(names) == len(set(names))
    assert {"subuid", "subgid", "newuidmap", "userns", "runtime_dir", "fuse", "cgroups"} <= set(
        names
    )


# --- subordinate ids --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uid", "gid"])
def test_missing_subordinate_range_is_an_error_with_a_usermod_fix(kind: str) -> None:
    facts = changed(healthy(), **{f"sub{kind}s": ()}, next_free_subid=300000)
    f = finding(facts, f"sub{kind}")
    assert f.status == "error"
    assert f"/etc/sub{kind} has no range for alice" in f.message
    assert f.fix == f"sudo usermod --add-sub{kind}s 300000-365535 alice"
    assert doctor.exit_code(diagnose(facts)) == 1


def test_small_subordinate_range_is_a_warning() -> None:
    f = finding(replace(healthy(), subuids=((100000, 1000),)), "subuid")
    assert f.status == "warning"
    assert "only 1000 uids" in f.message


def test_several_ranges_adding_up_are_fine() -> None:
    f = finding(replace(healthy(), subuids=((100000, 30000), (200000, 40000))), "subuid")
    assert f.status == "ok"


def test_the_override_file_is_named_in_the_message() -> None:
    f = finding(replace(healthy(), subgids=(), subgid_file="/tmp/x/subgid"), "subgid")
    assert "/tmp/x/subgid has no range" in f.message


# --- newuidmap / newgidmap ----------------------------------------------------------------------


def test_missing_map_helper_is_an_error_with_the_distributions_install_command() -> None:
    f = finding(replace(healthy(), newuidmap=None), "newuidmap")
    assert f.status == "error"
    assert f.fix == "sudo apt-get install uidmap"
    fedora = replace(healthy(), newgidmap=None, distro_id="fedora")
    assert finding(fedora, "newgidmap").fix == "sudo dnf install shadow-utils"
    derived = replace(healthy(), newgidmap=None, distro_id="pop", distro_like=("ubuntu", "debian"))
    assert finding(derived, "newgidmap").fix == "sudo apt-get install uidmap"


def test_missing_map_helper_is_only_a_warning_without_subordinate_ids() -> None:
    facts = replace(healthy(), newuidmap=None, subuids=())
    assert finding(facts, "newuidmap").status == "warning"


def test_unprivileged_map_helper_is_an_error() -> None:
    plain = MapHelper("/usr/local/bin/newuidmap", setuid_root=False, file_capability=False)
    f = finding(replace(healthy(), newuidmap=plain), "newuidmap")
    assert f.status == "error"
    assert "neither setuid root nor has cap_setuid" in f.message
    assert f.fix.endswith("sudo chmod u+s /usr/local/bin/newuidmap")


def test_map_helper_with_file_capability_is_fine() -> None:
    capable = MapHelper("/usr/bin/newgidmap", setuid_root=False, file_capability=True)
    f = finding(replace(healthy(), newgidmap=capable), "newgidmap")
    assert f.status == "ok"
    assert "file capability" in f.message


# --- user namespaces ----------------------------------------------------------------------------

DENIED = Probe("failed", "unshare(CLONE_NEWUSER): Operation not permitted")


@pytest.mark.parametrize(
    ("sysctls", "expected_fix"),
    [
        ({"kernel.unprivileged_userns_clone": "0"}, "sysctl -w kernel.unprivileged_userns_clone=1"),
        ({"user.max_user_namespaces": "0"}, "sysctl -w user.max_user_namespaces=28633"),
        ({"user.max_user_namespaces": "100"}, "sysctl user.max_user_namespaces"),
    ],
)
def test_user_namespace_denied_names_the_knob(
    sysctls: dict[str, str | None], expected_fix: str
) -> None:
    facts = replace(healthy(), userns=DENIED, sysctls=sysctls)
    f = finding(facts, "userns")
    assert f.status == "error"
    assert "Operation not permitted" in f.message
    assert expected_fix in f.fix
    # What depends on a namespace is not judged on a host that has none.
    not_tried = Probe("not-tried")
    facts = replace(facts, idmap=not_tried, mount_in_userns=not_tried, overlay_in_userns=not_tried)
    assert finding(facts, "idmap").status == "skip"
    assert finding(facts, "overlay").status == "skip"


def test_namespace_without_privileges_points_at_apparmor() -> None:
    facts = replace(
        healthy(),
        mount_in_userns=Probe("failed", "mount tmpfs on /tmp: Permission denied"),
        overlay_in_userns=Probe("not-tried"),
        sysctls={"kernel.apparmor_restrict_unprivileged_userns": "1"},
    )
    f = finding(facts, "userns")
    assert f.status == "error"
    assert "AppArmor" in f.message
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in f.fix
    other_lsm = replace(facts, sysctls={})
    assert "dmesg" in finding(other_lsm, "userns").fix


def test_failing_id_mapping_is_an_error() -> None:
    facts = replace(healthy(), idmap=Probe("failed", "newuidmap 42: write to uid_map failed"))
    f = finding(facts, "idmap")
    assert f.status == "error"
    assert "write to uid_map failed" in f.message
    assert "0 1000 1, 1 100000 65536" in f.message


def test_overlay_failure_is_a_warning_and_blames_an_old_kernel() -> None:
    failed = Probe("failed", "mount overlay: Operation not permitted")
    f = finding(replace(healthy(), overlay_in_userns=failed), "overlay")
    assert f.status == "warning"
    assert "Operation not permitted" in f.message
    old = finding(replace(healthy(), overlay_in_userns=failed, kernel="5.10.0-26-amd64"), "overlay")
    assert "older than 5.11" in old.message
    assert "5.11" in old.fix


# --- XDG_RUNTIME_DIR ------------------------------------------------------------------------


def test_unset_runtime_dir_is_a_warning_with_an_export() -> None:
    f = finding(replace(healthy(), xdg_runtime_dir=None, xdg_runtime=None), "runtime_dir")
    assert f.status == "warning"
    assert f.message.endswith("in /run/user/1000/rl")  # where podman goes too
    assert f.fix == "export XDG_RUNTIME_DIR=/run/user/1000"
    no_session = replace(
        healthy(), xdg_runtime_dir=None, xdg_runtime=None, login_runtime=PathFacts("/run/user/1000")
    )
    assert finding(no_session, "runtime_dir").message.endswith("in /tmp/rl-1000")
    assert "machinectl shell alice@" in finding(no_session, "runtime_dir").fix


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (PathFacts("/run/user/0", "dir", 0, 0o700, False), "belongs to uid 0, not to alice"),
        (PathFacts("/run/user/0"), "does not exist"),
        (PathFacts("/run/user/0", "file", 1000, 0o600, False), "is not a directory"),
    ],
)
def test_wrong_runtime_dir_is_an_error(target: PathFacts, problem: str) -> None:
    facts = replace(healthy(), xdg_runtime_dir="/run/user/0", xdg_runtime=target)
    f = finding(facts, "runtime_dir")
    assert f.status == "error"
    assert problem in f.message
    assert f.fix == "export XDG_RUNTIME_DIR=/run/user/1000"
    without_login = replace(facts, login_runtime=PathFacts("/run/user/1000"))
    assert finding(without_login, "runtime_dir").fix.startswith("unset XDG_RUNTIME_DIR")


def test_unwritable_runtime_dir_is_an_error() -> None:
    target = PathFacts("/run/user/1000", "dir", 1000, 0o500, False)
    f = finding(replace(healthy(), xdg_runtime=target), "runtime_dir")
    assert f.status == "error"
    assert f.fix == "chmod 0700 /run/user/1000"


def test_runtime_dir_open_to_others_is_a_warning() -> None:
    target = PathFacts("/run/user/1000", "dir", 1000, 0o755, True)
    f = finding(replace(healthy(), xdg_runtime=target), "runtime_dir")
    assert f.status == "warning"
    assert "0755" in f.message


# --- store ----------------------------------------------------------------------------------


def test_store_that_will_be_created_is_fine() -> None:
    facts = replace(
        healthy(),
        store=PathFacts("/home/alice/.local/share/rl"),
        store_ancestor=PathFacts("/home/alice/.local/share", "dir", 1000, 0o755, True),
    )
    assert finding(facts, "store").status == "ok"


def test_store_that_cannot_be_created_is_an_error() -> None:
    facts = replace(
        healthy(),
        store=PathFacts("/srv/rl/store"),
        store_ancestor=PathFacts("/srv", "dir", 0, 0o755, False),
    )
    f = finding(facts, "store")
    assert f.status == "error"
    assert "cannot create it" in f.message
    assert f.fix.startswith("sudo mkdir -p /srv/rl/store && sudo chown alice /srv/rl/store")


def test_store_of_someone_else_is_an_error() -> None:
    facts = replace(healthy(), store=PathFacts("/srv/rl", "dir", 0, 0o755, False))
    f = finding(facts, "store")
    assert f.status == "error"
    assert "not writable by alice (owner uid 0, mode 0755)" in f.message
    assert f.fix.startswith("sudo chown alice /srv/rl")
    not_dir = replace(healthy(), store=PathFacts("/srv/rl", "file", 1000, 0o644, True))
    assert "is not a directory" in finding(not_dir, "store").message


# --- devices --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attribute", "path", "module"),
    [("fuse", "dev_fuse", "/dev/fuse", "fuse"), ("tun", "dev_tun", "/dev/net/tun", "tun")],
)
def test_device_problems(name: str, attribute: str, path: str, module: str) -> None:
    missing = finding(changed(healthy(), **{attribute: PathFacts(path)}), name)
    assert (missing.status, missing.fix) == ("warning", f"sudo modprobe {module}")
    closed = PathFacts(path, "chardev", 0, 0o600, False)
    f = finding(changed(healthy(), **{attribute: closed}), name)
    assert f.status == "warning"
    assert "not readable and writable by alice (mode 0600" in f.message
    assert f.fix == f"sudo chmod 0666 {path}"
    regular = PathFacts(path, "file", 0, 0o666, True)
    f = finding(changed(healthy(), **{attribute: regular}), name)
    assert f.status == "warning"
    assert "not a character device" in f.message
    assert "mknod -m 0666" in f.fix


# --- cgroups and linger ---------------------------------------------------------------------


def test_cgroup_v1_and_hybrid_warn_that_limits_are_ignored() -> None:
    for layout in ("v1", "hybrid"):
        facts = changed(healthy(), cgroups=CgroupFacts(layout, "/sys/fs/cgroup/unified"))
        f = finding(facts, "cgroups")
        assert f.status == "warning"
        assert "--memory" in f.message
        assert "systemd.unified_cgroup_hierarchy=1" in f.fix
    none = finding(replace(healthy(), cgroups=CgroupFacts("none")), "cgroups")
    assert none.status == "warning"


def test_cgroup_v2_without_delegation_warns_with_the_systemd_drop_in() -> None:
    cgroups = CgroupFacts("v2", "/sys/fs/cgroup", "/user.slice", False, ("memory",))
    f = finding(replace(healthy(), cgroups=cgroups), "cgroups")
    assert f.status == "warning"
    assert "without delegated cpu pids" in f.message
    assert "Delegate=cpu cpuset io memory pids" in f.fix
    no_systemd = finding(replace(healthy(), cgroups=cgroups, systemd=False), "cgroups")
    assert "sudo chown -R alice /sys/fs/cgroup/rl-alice" in no_systemd.fix


def test_linger() -> None:
    off = finding(replace(healthy(), linger=False), "linger")
    assert (off.status, off.fix) == ("warning", "loginctl enable-linger alice")
    assert finding(replace(healthy(), systemd=False, linger=False), "linger").status == "skip"


def test_running_as_root_warns_and_skips_what_only_users_need() -> None:
    facts = replace(healthy(), uid=0, gid=0, user="root", subuids=(), newuidmap=None)
    assert finding(facts, "rootless").status == "warning"
    assert finding(facts, "subuid").status == "skip"
    assert finding(facts, "newuidmap").status == "skip"


# --- output ---------------------------------------------------------------------------------


def test_render_puts_the_fix_under_each_problem_and_counts() -> None:
    facts = replace(healthy(), subuids=(), linger=False)
    text = doctor.render(diagnose(facts))
    lines = text.splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("[FAIL] subordinate uids"))
    assert lines[fail + 1].strip().startswith("fix: sudo usermod --add-subuids")
    assert any(line.startswith("[WARN] linger") for line in lines)
    assert any(line.startswith("[ OK ] kernel") for line in lines)
    assert lines[-1] == "1 error, 1 warning: fix the errors above"


def test_json_shape() -> None:
    (first, *_) = [f.as_dict() for f in diagnose(healthy())]
    assert set(first) == {"check", "title", "status", "message", "fix"}
