"""Runs in the test guest (standard library only): executes the host's commands.

The host (tests/vm/qemu.py) writes one JSON request per line on a virtio serial port:
{"id": N, "argv": [...], "user": "rlvm"|"root", "timeout": S, "input": "..."}; the agent answers
{"id": N, "rc": R, "stdout": "...", "stderr": "..."}. As "rlvm" the command runs in a login
session (`runuser -l`: pam_systemd, XDG_RUNTIME_DIR), like a user who logged in.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys
import time


def run(request: dict[str, object]) -> dict[str, object]:
    argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
    if request.get("user", "rlvm") != "root":
        argv = ["runuser", "-l", str(request.get("user", "rlvm")), "-c", shlex.join(argv)]
    timeout = float(request.get("timeout") or 120)  # type: ignore[arg-type]
    try:
        done = subprocess.run(
            argv,
            input=str(request.get("input") or "").encode(),
            capture_output=True,
            timeout=timeout,
        )
        return {
            "rc": done.returncode,
            "stdout": done.stdout.decode(errors="replace"),
            "stderr": done.stderr.decode(errors="replace"),
        }
    except subprocess.TimeoutExpired as exc:
        return {
            "rc": -1,
            "stdout": (exc.stdout or b"").decode(errors="replace"),
            "stderr": f"agent: timed out after {timeout}s",
        }
    except OSError as exc:
        return {"rc": -2, "stdout": "", "stderr": f"agent: {exc}"}


def main() -> None:
    port = sys.argv[1] if len(sys.argv) > 1 else ""
    for _ in range(100):
        if port and os.path.exists(port):
            break
        found = glob.glob("/dev/virtio-ports/rl.agent") + glob.glob("/dev/vport*p1")
        if found:
            port = found[0]
            break
        time.sleep(0.1)
    fd = os.open(port, os.O_RDWR)
    buffer = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            time.sleep(0.1)  # the host is not connected
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            request = json.loads(line)
            reply = {"id": request.get("id")} | (
                {"rc": 0, "stdout": "pong", "stderr": ""} if request.get("ping") else run(request)
            )
            data = (json.dumps(reply) + "\n").encode()
            while data:
                data = data[os.write(fd, data) :]


if __name__ == "__main__":
    main()
