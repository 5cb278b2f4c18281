"""`rl doctor`: judge the host facts and say exactly what to fix.

`diagnose(facts)` is pure: one Finding per check, in a fixed order, each with the command that
repairs it. Statuses: "ok"; "warning" (rl works, with less: no resource limits, slower storage,
no user-mode networking); "error" (containers fail or are wrong); "skip" (the check does not
apply here, or cannot be judged because an earlier check failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rootless.hostfacts import HostFacts, MapHelper, PathFacts, kernel_version

Status = Literal["ok", "warning", "error", "skip"]
SUBID_COUNT = 65536  # what images expect: ids 0..65535
WANTED_CONTROLLERS = ("cpu", "memory", "pids")
OVERLAY_USERNS_KERNEL = (5, 11)


@dataclass(frozen=True)
class Finding:
    check: str  # short stable name: "subuid", "userns", …
    title: str  # what a reader sees: "subordinate uids"
    status: Status
    message: str  # what is (or is wrong)
    fix: str = ""  # the command(s) that repair it, one per line

    def as_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "title": self.title,
            "status": self.status,
            "message": self.message,
            "fix": self.fix,
        }


def diagnose(facts: HostFacts) -> list[Finding]:
    return [
        check_rootless(facts),
        check_kernel(facts),
        check_subids(facts, "uid"),
        check_subids(facts, "gid"),
        check_map_helper(facts, "newuidmap"),
        check_map_helper(facts, "newgidmap"),
        check_userns(facts),
        check_idmap(facts),
        check_overlay(facts),
        check_runtime_dir(facts),
        check_store(facts),
        check_device(facts, "fuse"),
        check_device(facts, "tun"),
        check_cgroups(facts),
        check_linger(facts),
    ]


def exit_code(findings: list[Finding]) -> int:
    """0 when nothing is an error (warnings allowed), 1 otherwise."""
    return 1 if any(f.status == "error" for f in findings) else 0


# ---------------------------------------------------------------------------------------------
# Checks


def check_rootless(facts: HostFacts) -> Finding:
    if facts.uid == 0:
        return Finding(
            "rootless",
            "rootless",
            "warning",
            "running as root: containers get real root privileges on the host",
            "run rl as an ordinary user",
        )
    return Finding("rootless", "rootless", "ok", f"running as {facts.user} (uid {facts.uid})")


def check_kernel(facts: HostFacts) -> Finding:
    return Finding("kernel", "kernel", "ok", f"Linux {facts.kernel}")


def check_subids(facts: HostFacts, kind: Literal["uid", "gid"]) -> Finding:
    check = f"sub{kind}"
    title = f"subordinate {kind}s"
    ranges = facts.subuids if kind == "uid" else facts.subgids
    path = facts.subuid_file if kind == "uid" else facts.subgid_file
    if facts.uid == 0:
        return Finding(check, title, "skip", "not needed as root")
    start = facts.next_free_subid
    fix = f"sudo usermod --add-sub{kind}s {start}-{start + SUBID_COUNT - 1} {facts.user}"
    if not ranges:
        return Finding(
            check,
            title,
            "error",
            f"{path} has no range for {facts.user}: containers get a single {kind} (0 = you), "
            f"and images with files owned by other users fail",
            fix,
        )
    total = sum(count for _, count in ranges)
    described = ", ".join(f"{s}:{c}" for s, c in ranges)
    if total < SUBID_COUNT - 1:
        return Finding(
            check,
            title,
            "warning",
            f"{path} gives {facts.user} only {total} {kind}s ({described}): images that use "
            f"{kind}s above {total} fail",
            fix,
        )
    return Finding(check, title, "ok", f"{facts.user} {described} in {path}")


def check_map_helper(facts: HostFacts, name: Literal["newuidmap", "newgidmap"]) -> Finding:
    helper: MapHelper | None = facts.newuidmap if name == "newuidmap" else facts.newgidmap
    ranges = facts.subuids if name == "newuidmap" else facts.subgids
    if facts.uid == 0:
        return Finding(name, name, "skip", "not needed as root")
    # Without subordinate ids rl writes a one-id map itself and never runs the helper.
    severity: Status = "error" if ranges else "warning"
    if helper is None:
        return Finding(
            name,
            name,
            severity,
            f"{name} is not installed: rl cannot map the subordinate ids",
            install_command("uidmap", facts),
        )
    if not helper.privileged:
        cap = "cap_setuid" if name == "newuidmap" else "cap_setgid"
        return Finding(
            name,
            name,
            severity,
            f"{helper.path} is neither setuid root nor has {cap}: it cannot write id maps",
            f"sudo chown root:root {helper.path} && sudo chmod u+s {helper.path}",
        )
    how = "setuid root" if helper.setuid_root else "file capability"
    return Finding(name, name, "ok", f"{helper.path} ({how})")


def check_userns(facts: HostFacts) -> Finding:
    title = "user namespaces"
    sysctls = facts.sysctls
    if facts.userns.failed:
        if sysctls.get("kernel.unprivileged_userns_clone") == "0":
            fix = persistent_sysctl("kernel.unprivileged_userns_clone", "1")
        elif sysctls.get("user.max_user_namespaces") == "0":
            fix = persistent_sysctl("user.max_user_namespaces", "28633")
        else:
            fix = (
                "sysctl user.max_user_namespaces kernel.unprivileged_userns_clone  "
                "# both must be > 0; inside a container, allow unshare in its seccomp profile"
            )
        return Finding(
            "userns",
            title,
            "error",
            f"cannot create a user namespace ({facts.userns.detail}): rl cannot run containers",
            fix,
        )
    if facts.mount_in_userns.failed:
        if sysctls.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
            why = "AppArmor restricts unprivileged user namespaces"
            fix = persistent_sysctl("kernel.apparmor_restrict_unprivileged_userns", "0")
        else:
            why = "a security module (AppArmor, SELinux) or seccomp policy denies it"
            fix = "check the kernel log (sudo dmesg | tail) for the denial and allow rl"
        return Finding(
            "userns",
            title,
            "error",
            f"user namespaces are created but give no privileges: mount failed "
            f"({facts.mount_in_userns.detail}); {why}",
            fix,
        )
    if facts.userns.ok:
        return Finding("userns", title, "ok", "unprivileged user namespaces work")
    return Finding("userns", title, "skip", "not probed")


def check_idmap(facts: HostFacts) -> Finding:
    title = "id mapping"
    mapping = facts.uid_map.strip().replace("\n", ", ")
    if not facts.userns.ok:
        return Finding("idmap", title, "skip", "needs working user namespaces")
    if facts.idmap.failed:
        return Finding(
            "idmap",
            title,
            "error",
            f"applying the uid map ({mapping}) failed: {facts.idmap.detail}",
            "fix the subordinate id and newuidmap/newgidmap findings above; the ranges in "
            f"{facts.subuid_file} and {facts.subgid_file} must not overlap other users'",
        )
    if facts.idmap.ok:
        return Finding("idmap", title, "ok", f"uid map {mapping} applied")
    return Finding("idmap", title, "skip", "not probed")


def check_overlay(facts: HostFacts) -> Finding:
    title = "overlay in user namespace"
    probe = facts.overlay_in_userns
    if probe.ok:
        return Finding("overlay", title, "ok", "kernel overlayfs works (native, fastest storage)")
    if not probe.failed:
        return Finding(
            "overlay", title, "skip", "needs working user namespaces, id mapping and mounts"
        )
    old = kernel_version(facts.kernel) < OVERLAY_USERNS_KERNEL
    why = f"Linux {facts.kernel} is older than 5.11" if old else probe.detail
    return Finding(
        "overlay",
        title,
        "warning",
        f"kernel overlayfs cannot be mounted in a user namespace ({why}): "
        "rl falls back to its FUSE overlay or to copies (vfs), which are slower",
        "upgrade to Linux 5.11 or newer" if old else "",
    )


def check_runtime_dir(facts: HostFacts) -> Finding:
    check, title = "runtime_dir", "XDG_RUNTIME_DIR"
    uid, user = facts.uid, facts.user
    login = facts.login_runtime
    usable_login = login.kind == "dir" and login.owner == uid and login.usable
    # rootless.paths.runtime_dir's choice without a usable variable
    fallback = f"{login.path}/rl" if usable_login else f"/tmp/rl-{uid}"
    export = f"export XDG_RUNTIME_DIR={login.path}"
    value, target = facts.xdg_runtime_dir, facts.xdg_runtime
    if value is None or target is None:
        return Finding(
            check,
            title,
            "warning",
            f"XDG_RUNTIME_DIR is not set: rl keeps its sockets and locks in {fallback}",
            export
            if usable_login
            else f"log in through a session that sets it, e.g. "
            f"machinectl shell {user}@ or ssh (sudo and su do not)",
        )
    if not target.exists:
        problem = "does not exist"
    elif target.kind != "dir":
        problem = "is not a directory"
    elif target.owner != uid:
        problem = (
            f"belongs to uid {target.owner}, not to {user} (uid {uid}); it was probably "
            "inherited through su or sudo"
        )
    elif not target.usable:
        return Finding(
            check,
            title,
            "error",
            f"XDG_RUNTIME_DIR={value} is not writable by {user} (mode {target.mode:04o})",
            f"chmod 0700 {value}",
        )
    else:
        problem = ""
    if problem:
        return Finding(
            check,
            title,
            "error",
            f"XDG_RUNTIME_DIR={value} {problem}: rl ignores it and uses {fallback}, "
            "and other tools (systemctl --user, podman) fail",
            export if usable_login else f"unset XDG_RUNTIME_DIR  # rl then uses {fallback}",
        )
    if target.mode & 0o077:
        return Finding(
            check,
            title,
            "warning",
            f"XDG_RUNTIME_DIR={value} is open to other users (mode {target.mode:04o})",
            f"chmod 0700 {value}",
        )
    return Finding(check, title, "ok", f"{value} (mode {target.mode:04o})")


def check_store(facts: HostFacts) -> Finding:
    store, user = facts.store, facts.user
    if store.kind == "dir" and store.usable:
        return Finding("store", "store", "ok", store.path)
    if store.exists and store.kind != "dir":
        return Finding(
            "store", "store", "error", f"{store.path} is not a directory", f"rm {store.path}"
        )
    if store.exists:
        return Finding(
            "store",
            "store",
            "error",
            f"{store.path} is not writable by {user} (owner uid {store.owner}, "
            f"mode {store.mode:04o})",
            # Only the top directory: below it are files of subordinate ids, kept as they are.
            f"sudo chown {user} {store.path} && chmod u+rwx {store.path}",
        )
    parent = facts.store_ancestor
    if parent is not None and parent.kind == "dir" and parent.usable:
        return Finding("store", "store", "ok", f"{store.path} (created on first use)")
    return Finding(
        "store",
        "store",
        "error",
        f"{store.path} does not exist and {user} cannot create it",
        f"sudo mkdir -p {store.path} && sudo chown {user} {store.path}  "
        "# or choose another with --root",
    )


DEVICES = {
    # name: (facts attribute, title, kernel module, char major:minor, what it is for)
    "fuse": ("dev_fuse", "/dev/fuse", "fuse", "10 229", "the FUSE overlay storage fallback"),
    "tun": ("dev_tun", "/dev/net/tun", "tun", "10 200", "user-mode networking"),
}


def check_device(facts: HostFacts, name: Literal["fuse", "tun"]) -> Finding:
    attribute, title, module, numbers, purpose = DEVICES[name]
    dev: PathFacts = getattr(facts, attribute)
    path = dev.path
    if not dev.exists:
        return Finding(
            name,
            title,
            "warning",
            f"{path} does not exist: {purpose} is unavailable",
            f"sudo modprobe {module}",
        )
    if dev.kind != "chardev":
        return Finding(
            name,
            title,
            "warning",
            f"{path} is not a character device: {purpose} is unavailable",
            f"sudo rm {path} && sudo mknod -m 0666 {path} c {numbers}",
        )
    if not dev.usable:
        return Finding(
            name,
            title,
            "warning",
            f"{path} is not readable and writable by {facts.user} (mode {dev.mode:04o}, "
            f"owner uid {dev.owner}): {purpose} is unavailable",
            f"sudo chmod 0666 {path}",
        )
    return Finding(name, title, "ok", f"{path} (mode {dev.mode:04o})")


def check_cgroups(facts: HostFacts) -> Finding:
    cg = facts.cgroups
    title = "cgroups"
    limits = "--memory, --cpus, --pids-limit and the other limit flags fail (exit 125)"
    if cg.version in ("v1", "hybrid"):
        layout = (
            f"hybrid (v1 controllers, cgroup v2 at {cg.v2_mount} holds none)"
            if cg.version == "hybrid"
            else "v1"
        )
        return Finding(
            "cgroups",
            title,
            "warning",
            f"cgroups {layout}: rootless containers cannot be limited; {limits}",
            "sudo sed -i 's/^GRUB_CMDLINE_LINUX=\"/&systemd.unified_cgroup_hierarchy=1 /' "
            "/etc/default/grub && sudo update-grub && sudo reboot",
        )
    if cg.version == "none":
        return Finding("cgroups", title, "warning", f"no cgroup filesystem is mounted: {limits}")
    missing = [c for c in WANTED_CONTROLLERS if c not in cg.delegated]
    if not missing:
        return Finding("cgroups", title, "ok", f"cgroup v2, delegated: {' '.join(cg.delegated)}")
    if facts.systemd:
        fix = (
            "sudo mkdir -p /etc/systemd/system/user@.service.d && printf "
            "'[Service]\\nDelegate=cpu cpuset io memory pids\\n' | sudo tee "
            "/etc/systemd/system/user@.service.d/delegate.conf && sudo systemctl daemon-reload"
            "  # then log out and in"
        )
    else:
        group = f"{cg.v2_mount}/rl-{facts.user}"
        fix = (
            f"sudo mkdir {group} && echo '+cpu +memory +pids' | sudo tee "
            f"{cg.v2_mount}/cgroup.subtree_control && sudo chown -R {facts.user} {group}"
        )
    have = " ".join(cg.delegated) or "none"
    return Finding(
        "cgroups",
        title,
        "warning",
        f"cgroup v2 without delegated {' '.join(missing)} (delegated: {have}): "
        "the flags that need them fail (exit 125)",
        fix,
    )


def check_linger(facts: HostFacts) -> Finding:
    if not facts.systemd:
        return Finding("linger", "linger", "skip", "systemd is not running")
    if facts.uid == 0 or facts.linger:
        return Finding("linger", "linger", "ok", f"enabled for {facts.user}")
    return Finding(
        "linger",
        "linger",
        "warning",
        f"lingering is off for {facts.user}: detached containers and user units stop at logout",
        f"loginctl enable-linger {facts.user}",
    )


# ---------------------------------------------------------------------------------------------
# Fix commands


def persistent_sysctl(name: str, value: str) -> str:
    conf = "/etc/sysctl.d/90-rl-userns.conf"
    return f"sudo sysctl -w {name}={value} && echo '{name}={value}' | sudo tee -a {conf}"


INSTALL_COMMANDS = {
    # distribution family: (command, package names by our name)
    "debian": ("sudo apt-get install", {"uidmap": "uidmap"}),
    "ubuntu": ("sudo apt-get install", {"uidmap": "uidmap"}),
    "fedora": ("sudo dnf install", {"uidmap": "shadow-utils"}),
    "rhel": ("sudo dnf install", {"uidmap": "shadow-utils"}),
    "suse": ("sudo zypper install", {"uidmap": "shadow"}),
    "arch": ("sudo pacman -S", {"uidmap": "shadow"}),
    "alpine": ("sudo apk add", {"uidmap": "shadow-uidmap"}),
}


def install_command(package: str, facts: HostFacts) -> str:
    for family in (facts.distro_id, *facts.distro_like):
        if family in INSTALL_COMMANDS:
            command, names = INSTALL_COMMANDS[family]
            return f"{command} {names.get(package, package)}"
    return f"install newuidmap and newgidmap (the {package} or shadow package)"


# ---------------------------------------------------------------------------------------------
# Output

MARKS = {"ok": "[ OK ]", "warning": "[WARN]", "error": "[FAIL]", "skip": "[SKIP]"}


def render(findings: list[Finding]) -> str:
    """One line per check, the fix indented under each problem, then a summary line."""
    width = max(len(f.title) for f in findings)
    lines = []
    for f in findings:
        lines.append(f"{MARKS[f.status]} {f.title.ljust(width)}  {f.message}")
        if f.fix and f.status in ("warning", "error"):
            lines.extend(f"       fix: {line}" for line in f.fix.splitlines())
    errors = sum(f.status == "error" for f in findings)
    warnings = sum(f.status == "warning" for f in findings)
    if errors:
        summary = f"{_count(errors, 'error')}, {_count(warnings, 'warning')}: fix the errors above"
    elif warnings:
        summary = f"{_count(warnings, 'warning')}: rl works, with the limits above"
    else:
        summary = "all checks passed"
    lines.append("")
    lines.append(summary)
    return "\n".join(lines) + "\n"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
