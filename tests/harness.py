"""The rootless test harness: an unprivileged user that runs the real, installed `rl`.

Rootless is the product, so end-to-end tests never run rl as root. When the suite runs as root
(CI does), it creates the user `rltest` with /etc/subuid and /etc/subgid ranges, its own HOME
and XDG_RUNTIME_DIR, and runs commands as that user through `runuser`. Run by an ordinary user,
the suite uses that user as it is.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TEST_USER = os.environ.get("RL_TEST_USER", "rltest")
SUBID_START = 200000
SUBID_COUNT = 65536


def rl_binary() -> str:
    """The installed rl (what users run), not the source tree."""
    explicit = os.environ.get("RL_BIN")
    if explicit:
        return explicit
    for candidate in ("/opt/rl/venv/bin/rl", shutil.which("rl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("rl is not installed: run `packaging/install.sh --test` first")


def installed_tool(name: str) -> str:
    """A program of the venv rl is installed in (`python`, `fuseoverlay`), so tests use the
    same installation as `rl`, readable by the test user."""
    return str(Path(rl_binary()).parent / name)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = field(repr=False, default=b"")

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    runtime_dir: Path

    @property
    def as_root(self) -> bool:
        return os.getuid() == 0 and self.uid != 0

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": f"{Path(rl_binary()).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "LANG": "C.UTF-8",
        }
        env.update(extra or {})
        return env

    def argv(self, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """`argv` wrapped so it runs as this user with exactly `env`."""
        envs = [f"{k}={v}" for k, v in env.items()]
        if self.as_root:
            return ["runuser", "-u", self.name, "--", "env", "-i", *envs, *argv]
        return ["env", "-i", *envs, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 120,
    ) -> Result:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            self.argv(argv, self.env(env)),
            input=data,
            capture_output=True,
            cwd=cwd or self.home,
            timeout=timeout,
            check=False,
        )
        return Result(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
            proc.stdout,
        )

    def run_script(self, script: Path, *args: str, timeout: float = 240) -> Result:
        """Run a helper script of the test suite as this user, with the installed python.

        The script is copied out of the repository first: CI may clone it where the test user
        cannot read. Such scripts import only the standard library and the installed rl.
        """
        copy_dir = Path(tempfile.mkdtemp(prefix="rl-script-", dir="/tmp"))
        try:
            os.chmod(copy_dir, 0o755)
            copy = copy_dir / script.name
            shutil.copyfile(script, copy)
            os.chmod(copy, 0o644)
            return self.run([installed_tool("python"), str(copy), *args], timeout=timeout)
        finally:
            shutil.rmtree(copy_dir, ignore_errors=True)

    def make_dir(self, prefix: str = "rl-test-") -> Path:
        """A fresh directory this user owns (tmp_path is private to root when root runs pytest)."""
        path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chmod(path, 0o755)
        if self.as_root:
            os.chown(path, self.uid, self.gid)
        return path


def _ensure_subids(name: str) -> None:
    for path, flag in (
        (Path("/etc/subuid"), "--add-subuids"),
        (Path("/etc/subgid"), "--add-subgids"),
    ):
        text = path.read_text() if path.exists() else ""
        if any(line.split(":")[0] == name for line in text.splitlines()):
            continue
        span = f"{SUBID_START}-{SUBID_START + SUBID_COUNT - 1}"
        subprocess.run(["usermod", flag, span, name], check=True)


def _make_devices_usable() -> None:
    # Stock distributions ship these 0666; some fresh VMs have 0600, which breaks rootless
    # FUSE and TAP (MACHINE-NOTES.md).
    for dev in ("/dev/fuse", "/dev/net/tun"):
        if os.path.exists(dev):
            os.chmod(dev, 0o666)


def ensure_user() -> User:
    """Create (as root) or describe (as anyone else) the user the e2e tests run as."""
    if os.getuid() != 0:
        pw = pwd.getpwuid(os.getuid())
        own_runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/rl-test-runtime-{pw.pw_uid}")
        own_runtime.mkdir(mode=0o700, exist_ok=True)
        return User(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir), own_runtime)
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER], check=True)
        pw = pwd.getpwnam(TEST_USER)
    _ensure_subids(TEST_USER)
    _make_devices_usable()
    runtime = Path(f"/run/user/{pw.pw_uid}")
    runtime.mkdir(parents=True, exist_ok=True)
    os.chown(runtime, pw.pw_uid, pw.pw_gid)
    os.chmod(runtime, 0o700)
    return User(TEST_USER, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir), runtime)


# --- processes, from /proc (tests check what runs and that nothing is left behind) -------------


def parent_pid(pid: int) -> int:
    """`pid`'s parent; OSError once `pid` is gone."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (zombies included: they are not reaped yet)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if parent_pid(int(entry)) == pid:
                found.append(int(entry))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> str:
    """`pid`'s argv joined with spaces; "" once it is gone (or reaped: no zombie either)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return ""
