"""Container start-up time: `rl run` vs `podman run` vs a bare OCI runtime, in one run.

    sudo /opt/rl/venv/bin/python bench/startup.py [-n 20] [--profile]

Runs as the unprivileged test user (created like the e2e tests do when started as root; the
current user otherwise). The same minimal busybox image (tests/images.py) is loaded into a
fresh rl store and into the user's podman storage; the bare runtime (crun, or runc where crun
refuses this host's hybrid cgroups) runs a bundle made from the same files. Each command runs
`true` N times; the script prints medians and ratios, and with --profile where rl's time goes
(the slowest imports and the functions with the most cumulative time).

Target: rl <= 0.5x podman. Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import User, ensure_user, rl_binary
from tests.images import build_image, minimal_spec, write_docker_archive

IMAGE = "localhost/rl-bench/busybox:latest"


def timed(user: User, argv: Sequence[str], n: int, cwd: Path) -> list[float]:
    wrapped = user.argv(list(argv), user.env())
    times = []
    for _ in range(n):
        start = time.perf_counter()
        # /dev/null rather than pipes: runc fchowns its stdio, which it cannot do to pipes
        # that root (running this script) made.
        proc = subprocess.run(
            wrapped,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return times


def runs_ok(user: User, argv: Sequence[str], cwd: Path) -> bool:
    try:
        timed(user, argv, 1, cwd)
    except SystemExit as exc:
        print(exc)
        return False
    return True


def make_bundle(user: User, work: Path, layer_tar: bytes, runtime: str) -> Path:
    bundle = work / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    archive = work / "layer.tar"
    archive.write_bytes(layer_tar)
    with tarfile.open(archive) as tar:
        tar.extractall(rootfs)  # our own archive, built above
    user.run([runtime, "spec", "--rootless"], cwd=bundle)
    if not (bundle / "config.json").exists():
        subprocess.run([runtime, "spec", "--rootless"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["linux"].pop("resources", None)
    spec["linux"].pop("cgroupsPath", None)
    # `spec --rootless` run by root maps root; the runtime runs as the user.
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": user.uid, "size": 1}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": user.gid, "size": 1}]
    (bundle / "config.json").write_text(json.dumps(spec))
    if os.getuid() == 0 and user.uid != 0:
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(work)], check=True)
    return bundle


def profile(user: User, rl: list[str], cwd: Path) -> None:
    python = str(Path(rl_binary()).resolve().parent / "python")
    run = [python, "-X", "importtime", "-m", "rootless.cli.main", *rl[1:]]
    proc = user.run(run, cwd=cwd)
    rows = []
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if line.startswith("import time:") and len(parts) == 3 and parts[0].isdigit():
            rows.append((int(parts[1]), int(parts[0]), parts[2]))
    rows.sort(reverse=True)
    print("\nslowest imports on the `rl run` path (cumulative µs, self µs):")
    for cumulative, self_us, name in rows[:15]:
        print(f"  {cumulative:8d} {self_us:8d}  {name}")
    heavy = [name for _, _, name in rows if name.strip() in ("trio", "httpx", "yaml")]
    print(f"heavy modules imported: {heavy or 'none'}")
    proc = user.run(
        [python, "-m", "cProfile", "-s", "cumtime", "-m", "rootless.cli.main", *rl[1:]], cwd=cwd
    )
    print("\ncProfile, top by cumulative time:")
    print("\n".join(proc.stdout.splitlines()[:40]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20, help="runs per command (default 20)")
    parser.add_argument("--profile", action="store_true", help="also show where rl's time goes")
    args = parser.parse_args()

    user = ensure_user()
    work = Path(tempfile.mkdtemp(prefix="rl-bench-startup-"))
    os.chmod(work, 0o755)
    if os.getuid() == 0 and user.uid != 0:
        os.chown(work, user.uid, user.gid)
    # Bytecode caches must be current, or every run of rl recompiles (the user cannot write
    # them into a tree root owns).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "rootless"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        check=False,
    )
    commands: dict[str, list[str]] = {}
    try:
        image = build_image(minimal_spec(IMAGE))
        archive = write_docker_archive(work / "image.tar", [image])
        os.chmod(archive, 0o644)
        store = work / "store"
        rl = [rl_binary(), "--root", str(store)]
        load = user.run([*rl, "load", "-i", str(archive)], cwd=work)
        if load.returncode != 0:
            load = user.run([*rl, "load", "-i", str(archive)], cwd=work)
        if load.returncode != 0:
            raise SystemExit(f"rl load failed: {load.stderr}")
        commands = {
            "rl": [*rl, "run", "--rm", "--network=none", IMAGE, "true"],
        }
        if shutil.which("podman"):
            user.run(["podman", "load", "-i", str(archive)], cwd=work, timeout=300)
            podman = ["podman", "run", "--rm", "--network=none", IMAGE, "true"]
            if not runs_ok(user, podman, work):
                podman = [
                    "podman",
                    "run",
                    "--runtime",
                    "runc",
                    "--rm",
                    "--network=none",
                    IMAGE,
                    "true",
                ]
            if runs_ok(user, podman, work):
                commands["podman"] = podman
            else:
                print("podman cannot run containers here; skipped")
        for runtime in ("crun", "runc"):
            if not shutil.which(runtime):
                continue
            bundle = make_bundle(user, work / runtime, image.layers[0].tar, runtime)
            state = user.runtime_dir / f"rl-bench-{runtime}"
            argv = [
                runtime,
                "--root",
                str(state),
                "run",
                "--bundle",
                str(bundle),
                f"rl-bench-{os.getpid()}",
            ]
            if runs_ok(user, argv, work):
                commands[runtime] = argv
                break
            print(f"{runtime} cannot run the bundle here; trying the next runtime")

        for argv in commands.values():  # warm caches
            timed(user, argv, 2, work)
        medians = {}
        for name, argv in commands.items():
            times = timed(user, argv, args.n, work)
            medians[name] = statistics.median(times)
            print(f"{name:7s} median {medians[name] * 1000:7.1f} ms  (min {min(times) * 1000:.1f}, "
                  f"max {max(times) * 1000:.1f}, n={args.n})  {' '.join(argv)}")  # fmt: skip
        if "podman" in medians:
            ratio = medians["rl"] / medians["podman"]
            print(f"rl / podman = {ratio:.2f}x (target <= 0.5x)")
        for runtime in ("crun", "runc"):
            if runtime in medians:
                print(f"rl / {runtime} = {medians['rl'] / medians[runtime]:.2f}x")
        if args.profile:
            profile(user, commands["rl"], work)
    finally:
        if "podman" in commands:
            user.run(["podman", "rmi", "-f", IMAGE], cwd=work)
        for runtime in ("crun", "runc"):
            shutil.rmtree(user.runtime_dir / f"rl-bench-{runtime}", ignore_errors=True)
        from tests.conftest import _remove

        _remove(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
