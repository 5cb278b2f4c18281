"""Boot the test guest under QEMU (software emulation, TCG) and run commands in it.

The guest's disk is the cached image, opened with -snapshot (writes are thrown away); the rl
checkout, the venv and a share directory are exported read-only over virtio-9p and mounted in
the guest at the same paths (the editable install points at the checkout). Commands go to the
agent (tests/vm/agent.py) over a virtio serial port, one JSON line each way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class GuestResult:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


class Guest:
    def __init__(self, image: Path, share: Path, *, memory: str = "1536", cpus: int = 2) -> None:
        self.image = image
        self.share = share
        self.tmp = Path(tempfile.mkdtemp(prefix="rl-vm-"))
        self.sock_path = self.tmp / "agent.sock"
        self.console = self.tmp / "console.log"
        self.venv = Path(sys.prefix)
        append = " ".join(
            [
                "console=ttyS0",
                "root=/dev/vda",
                "rw",
                "quiet",
                "systemd.unified_cgroup_hierarchy=1",
                f"rl.src={REPO}",
                f"rl.venv={self.venv}",
                f"rl.share={share}",
            ]
        )

        def fs(tag: str, path: Path) -> list[str]:
            return [
                "-fsdev", f"local,id={tag},path={path},security_model=none,readonly=on",
                "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}",
            ]  # fmt: skip

        self.argv = [
            "qemu-system-x86_64",
            "-machine", "q35,accel=tcg",
            "-cpu", os.environ.get("RL_TEST_VM_CPU", "qemu64"),
            "-smp", str(cpus),
            "-m", memory,
            "-nographic", "-nodefaults", "-no-reboot",
            "-serial", f"file:{self.console}",
            "-kernel", str(image / "vmlinuz"),
            "-initrd", str(image / "initrd.img"),
            "-append", append,
            "-drive", f"file={image / 'disk.img'},format=raw,if=virtio,snapshot=on",
            "-nic", "none",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=agent,path={self.sock_path},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=rl.agent",
            *fs("rlsrc", REPO),
            *fs("rlvenv", self.venv),
            *fs("rlshare", share),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.next_id = 0
        self.boot_seconds = 0.0

    def boot(self, timeout: float = 300) -> None:
        start = time.monotonic()
        with open(self.tmp / "qemu.err", "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = start + timeout
        while not self.sock_path.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("qemu did not create its agent socket")
            time.sleep(0.05)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self.sock_path))
        # The agent answers once the guest has booted far enough.
        while True:
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the guest did not answer in {timeout}s: {self.tail()}")
            try:
                reply = self._request({"ping": True}, timeout=5)
            except TimeoutError:
                continue
            if reply.get("stdout") == "pong":
                break
        self.boot_seconds = time.monotonic() - start

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            err = (self.tmp / "qemu.err").read_text(errors="replace")
            raise RuntimeError(f"qemu exited ({self.proc.returncode}): {err} {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _request(self, request: dict[str, object], timeout: float) -> dict[str, object]:
        assert self.sock is not None
        self.next_id += 1
        request = dict(request, id=self.next_id)
        self.sock.sendall((json.dumps(request) + "\n").encode())
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                reply: dict[str, object] = json.loads(line)
                if reply.get("id") == self.next_id:
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:
                raise RuntimeError(f"agent connection: {exc}") from exc
            if not chunk:
                raise RuntimeError(f"the agent closed the connection: {self.tail()}")
            self.buffer += chunk

    def run(
        self, *argv: str, user: str = "rlvm", timeout: float = 120, input: str = ""
    ) -> GuestResult:
        reply = self._request(
            {"argv": list(argv), "user": user, "timeout": timeout, "input": input},
            timeout=timeout + 30,
        )
        return GuestResult(int(reply["rc"]), str(reply["stdout"]), str(reply["stderr"]))  # type: ignore[call-overload]

    def shutdown(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
