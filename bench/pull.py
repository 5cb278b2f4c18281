"""`rl pull` against `podman pull` (and `skopeo copy`, fetch only) from a registry on loopback.

    /opt/rl/venv/bin/python bench/pull.py [--reps 5] [--sizes small,large] [--podman-driver overlay]
                                          [--tls] [--floor]

Two multi-layer images with gzip layers, built offline: "small" (~5 MB of files from /usr, 3
layers) and "large" (the ~50 MB Debian rootfs of bench/load.py, or /usr files without
mmdebstrap; 4 layers). They are pushed once to Debian's docker-registry on 127.0.0.1 (the
end-to-end tests' fixture). Every timed run pulls into a new, empty store as the test user:
rl with `--root`, podman with `--root`/`--runroot`, skopeo into a fresh OCI directory (it only
fetches: no unpacking, the floor for any puller). The order alternates between rounds; the
first round is a warm-up. Prints medians (wall time, and CPU time: the machine is shared) and
the ratios. `--floor` adds a row for what no pull by rl can go below: its interpreter importing
the modules the pull needs before its first request (trio and httpx are most of it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    RESULTS,
    BenchError,
    Samples,
    bench_user,
    fresh_dir,
    installed_tool,
    ratio_line,
    rl_binary,
    timed,
)
from bench.load import debian_rootfs, split_layers, synthetic_rootfs
from tests.e2e.registry_fixture import Registry, running_registry
from tests.images import BuiltImage, image_from_tars

SMALL_BYTES = 5 * 1024 * 1024
SIZES = ("small", "large")


def bench_image(size: str) -> tuple[BuiltImage, str]:
    """The image for `size` (gzip layers) and where its files came from."""
    if size == "small":
        rootfs, origin, layers = synthetic_rootfs(budget=SMALL_BYTES), "files copied from /usr", 3
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        found = debian_rootfs(RESULTS / "debian-rootfs.tar")
        origin = "Debian bookworm (mmdebstrap, essential)"
        if found is None:
            found, origin = synthetic_rootfs(), "files copied from /usr"
        rootfs, layers = found, 4
    image = image_from_tars(
        split_layers(rootfs, layers),
        config={"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        compression="gzip",
    )
    return image, origin


def push(registry: Registry, repository: str, image: BuiltImage) -> None:
    """The image's blobs and manifest, straight over the registry API (no tool involved)."""
    for built in image.layers:
        registry.push_blob(repository, built.blob)
    registry.push_blob(repository, image.config_bytes)
    registry.push_manifest(
        repository, "latest", json.loads(image.manifest_bytes), image.manifest_bytes
    )


def tool_commands(
    rl: str, ref: str, podman_driver: str, *, skopeo: bool, tls: bool = False
) -> dict[str, Callable[[Path], list[str]]]:
    """Each tool's command line, given a fresh directory for its store. `tls`: the registry
    speaks TLS and its CA is in the user's certs.d, so every tool verifies."""
    insecure = [] if tls else ["--tls-verify=false"]
    tools: dict[str, Callable[[Path], list[str]]] = {
        "rl pull": lambda store: [rl, "--root", str(store / "rl"), "pull", *insecure, ref],
        "podman pull": lambda store: [
            "podman", "--root", str(store / "root"), "--runroot", str(store / "run"),
            "--storage-driver", podman_driver, "pull", *insecure, ref,
        ],
    }  # fmt: skip
    if skopeo:
        src_insecure = [] if tls else ["--src-tls-verify=false"]
        tools["skopeo copy"] = lambda store: [
            "skopeo", "copy", "--quiet", *src_insecure,
            f"docker://{ref}", f"oci:{store / 'oci'}:latest",
        ]  # fmt: skip
    return tools


FLOOR = "rl imports"


def floor_command() -> list[str]:
    """rl's interpreter importing the modules `rl pull` has loaded when it sends its first
    request (the CLI, the pull, the registry client with trio and httpx), then exiting: what
    any pull costs before it fetches a byte."""
    modules = "rootless.cli.main, rootless.registry.pull, rootless.registry.client"
    return [installed_tool("python"), "-c", f"import {modules}"]


def children_cpu() -> float:
    """User + system seconds of the waited-for processes so far (a tool and what it waited for;
    not a process left running, such as rootless podman's pause process)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5, help="timed runs per tool (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument(
        "--sizes", default=",".join(SIZES), help="images to pull: small,large (default both)"
    )
    parser.add_argument(
        "--podman-driver",
        default="overlay",
        help="podman's storage driver (default overlay: native rootless overlay, like rl)",
    )
    parser.add_argument("--no-skopeo", action="store_true", help="leave out skopeo copy")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time rl's Python floor: the interpreter importing what `rl pull` loads "
        "before its first request (trio, httpx, rl's registry code), and nothing else",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="a TLS registry (its CA in the user's certs.d): every tool verifies the chain",
    )
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    if unknown := set(sizes) - set(SIZES):
        parser.error(f"unknown sizes {sorted(unknown)}: use {', '.join(SIZES)}")

    user = bench_user()
    rl = rl_binary()
    use_skopeo = not args.no_skopeo and shutil.which("skopeo") is not None
    print(f"as user {user.name}; rl = {rl}; podman --storage-driver {args.podman_driver}")
    with running_registry(user, tls=args.tls) as registry:
        if args.tls:
            registry.install_ca()
            print(f"TLS registry; its CA in {registry.certs_dir()}")
        for size in sizes:
            image, origin = bench_image(size)
            repository = f"rl-bench/pull-{size}"
            push(registry, repository, image)
            ref = f"{registry.host}/{repository}:latest"
            blob_mb = sum(len(built.blob) for built in image.layers) / 1e6
            content_mb = image.size / 1e6
            print(
                f"\n{size}: {origin}; {len(image.layers)} gzip layers, {blob_mb:.1f} MB "
                f"compressed, {content_mb:.1f} MB of tar"
            )
            tools = tool_commands(rl, ref, args.podman_driver, skopeo=use_skopeo, tls=args.tls)
            if args.floor:
                tools[FLOOR] = lambda store: floor_command()
            samples = {name: Samples(name) for name in tools}
            cpu: dict[str, list[float]] = {name: [] for name in tools}
            for round_number in range(args.warmup + args.reps):
                order = list(tools) if round_number % 2 == 0 else list(reversed(tools))
                for name in order:
                    with fresh_dir(user, "rl-bench-pull-") as store:
                        before = children_cpu()
                        seconds = timed(user, tools[name](store))
                        cpu_seconds = children_cpu() - before
                    os.sync()  # the next run should not pay for writing back this one's pages
                    if round_number >= args.warmup:
                        samples[name].seconds.append(seconds)
                        cpu[name].append(cpu_seconds)
            for name in tools:
                print(samples[name].row())
            for name in tools:  # the machine is shared: CPU time is steadier than wall time
                print(f"{name:<14} CPU median {statistics.median(cpu[name]):7.3f} s (user+sys)")
            # The machine is shared: medians only compare within a run, at this load.
            print("load average (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            print(ratio_line(samples["rl pull"], samples["podman pull"]))
            if use_skopeo:
                print(ratio_line(samples["rl pull"], samples["skopeo copy"]))
            if args.floor:
                print(ratio_line(samples[FLOOR], samples["podman pull"]))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as err:
        print(f"benchmark failed: {err}")
        raise SystemExit(1) from None
