"""The cgroup v2 + systemd lane: one Debian guest under QEMU (TCG) per test session.

The guest image is built once with mmdebstrap and cached (tests/vm/image.py); it boots with
`-snapshot`, so every session starts from the same state. Tests run commands as the guest's
unprivileged user `rlvm` (a login session, lingering, all controllers delegated).

Skips, with the reason, only where the lane cannot run: no qemu-system-x86_64, or no cached
image and no way to build one (mmdebstrap missing, not root).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm import image as vm_image
from tests.vm.qemu import Guest

IMAGE = "localhost/rl-test/busybox:latest"
RL = str(Path(sys.prefix) / "bin" / "rl")  # the guest mounts this venv at the same path
TIMINGS: dict[str, float] = {}
_START: list[float] = []


def why_no_vm() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    if vm_image.cached_image() is not None:
        return None
    if shutil.which("mmdebstrap") is None:
        return "no cached guest image and mmdebstrap is not installed (apt-get install mmdebstrap)"
    if os.getuid() != 0:
        return "no cached guest image, and building one (mmdebstrap) needs root"
    return None


@pytest.fixture(scope="session")
def guest() -> Iterator[Guest]:
    reason = why_no_vm()
    if reason is not None:
        pytest.skip(reason)
    started = time.monotonic()
    _START.append(started)
    cached = vm_image.cached_image() is not None
    build_log = Path(tempfile.gettempdir()) / "rl-test-vm-build.log"
    try:
        image = vm_image.build(log=build_log)
    except Exception as exc:  # no guest, no lane: say why (the mirror, the disk, …)
        pytest.skip(f"the guest image could not be built ({exc}); see {build_log}")
    TIMINGS["image build" + (" (cached)" if cached else "")] = time.monotonic() - started
    share = Path(tempfile.mkdtemp(prefix="rl-vm-share-"))
    share.chmod(0o755)
    from tests.images import build_image, rich_busybox_spec, write_docker_archive

    archive = write_docker_archive(share / "busybox.tar", [build_image(rich_busybox_spec())])
    archive.chmod(0o644)
    machine = Guest(image, share)
    try:
        try:
            machine.boot()
        except Exception as exc:
            pytest.skip(f"the guest did not boot under QEMU ({exc})")
        TIMINGS["boot"] = machine.boot_seconds
        loaded = machine.run(RL, "load", "-i", str(archive))
        TIMINGS["boot + image load"] = time.monotonic() - started - TIMINGS[next(iter(TIMINGS))]
        if loaded.returncode != 0:
            raise RuntimeError(f"rl load in the guest failed: {loaded}")
        yield machine
    finally:
        machine.shutdown()
        shutil.rmtree(share, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    TIMINGS["lane total"] = time.monotonic() - _START[0]
    parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in TIMINGS.items())
    terminalreporter.write_line(f"cgroup v2 VM lane: {parts}")
