"""Where the time of one `rl pull` goes: a wall-clock timeline of every process it runs.

    /opt/rl/venv/bin/python bench/pull_timeline.py [--size small|large] [--runs 3]

Pushes bench/pull.py's image to the loopback registry, then pulls it as the test user with
rl's entry point wrapped by a tracer (TRACER below): it wraps the pull's functions when their
modules load (so it imports nothing rl would not) and prints, for each, when it starts and
ends (ms since the interpreter ran its first line) with the process's CPU time, in rl itself,
the namespace helper and its workers. The fastest of `--runs` pulls is shown. The tracer costs
a few ms; what matters is where the critical path waits and on what. Run on an idle machine.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_user, fresh_dir, installed_tool
from bench.pull import bench_image, push
from tests.e2e.registry_fixture import running_registry

TRACER = r"""
import builtins, importlib, os, resource, sys, time

T0 = time.monotonic()


def mark(what):
    r = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r.ru_utime + r.ru_stime) * 1000
    line = f"@{(time.monotonic() - T0) * 1000:7.1f} [{os.getpid()}] cpu {cpu:5.0f}  {what}\n"
    os.write(2, line.encode())


WATCH = {"rootless.registry.quickimport", "trio", "httpx"}
PATCHES = {
    "rootless.registry.pull": [
        (None, "pull"), (None, "_pull_candidate"), (None, "_open_store"), (None, "_fetch"),
        ("_Commit", "run"),
    ],
    "rootless.registry.client": [
        ("RegistryClient", name)
        for name in ("ping", "get_manifest", "fetch_blob_bytes", "fetch_blob")
    ],
    "rootless.images.workers": [
        ("NamespaceWorkers", "__init__"), ("NamespaceWorkers", "close"), (None, "_preload"),
        (None, "_serve_jobs"),
    ],
    "rootless.images.unpack": [(None, "unpack_fd")],
    "rootless.images.store": [(None, "prepare_pull"), (None, "commit_pulled")],
}
seen, patched = set(sys.modules), set()


def wrap(owner, attr, label):
    f = getattr(owner, attr, None)
    if f is None or getattr(f, "_traced", False):
        return
    import inspect

    if inspect.iscoroutinefunction(f):
        async def w(*a, **k):
            mark(f"> {label}")
            try:
                return await f(*a, **k)
            finally:
                mark(f"< {label}")
    else:
        def w(*a, **k):
            mark(f"> {label}")
            try:
                return f(*a, **k)
            finally:
                mark(f"< {label}")
    w.__module__, w.__qualname__, w.__name__ = f.__module__, f.__qualname__, f.__name__
    w._traced = True
    setattr(owner, attr, w)


def check():
    if len(sys.modules) != len(seen):
        for name in list(sys.modules):
            if name not in seen:
                seen.add(name)
                if name in WATCH:
                    mark(f"importing {name}")
    if len(patched) == len(PATCHES):
        return
    for module, items in PATCHES.items():
        loaded = sys.modules.get(module)
        if loaded is None or module in patched or not hasattr(loaded, items[-1][0] or items[-1][1]):
            continue
        patched.add(module)
        for cls, attr in items:
            label = ".".join([module.rsplit(".", 1)[1], *([cls] if cls else []), attr])
            wrap(getattr(loaded, cls) if cls else loaded, attr, label)


real_import, real_import_module = builtins.__import__, importlib.import_module


def traced_import(*args, **kwargs):
    module = real_import(*args, **kwargs)
    check()
    return module


def traced_import_module(*args, **kwargs):
    module = real_import_module(*args, **kwargs)
    check()
    return module


builtins.__import__, importlib.import_module = traced_import, traced_import_module
mark("interpreter ready")
import rootless.cli.quickexit as quickexit

real_leave = quickexit.leave


def leave(code):
    mark("exit")
    real_leave(code)


quickexit.leave = leave
import rootless.cli.main

sys.argv[0] = "rl"
rootless.cli.main.main()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", choices=["small", "large"], default="small")
    parser.add_argument("--runs", type=int, default=3, help="pulls to run; the fastest is shown")
    args = parser.parse_args()
    user = bench_user()
    python = installed_tool("python")
    with running_registry(user) as registry, tempfile.TemporaryDirectory() as scratch:
        tracer = Path(scratch) / "rl_pull_tracer.py"
        tracer.write_text(TRACER)
        Path(scratch).chmod(0o755)
        tracer.chmod(0o644)
        image, _ = bench_image(args.size)
        repository = f"rl-bench/pull-{args.size}"
        push(registry, repository, image)
        ref = f"{registry.host}/{repository}:latest"
        best: tuple[float, str] | None = None
        for _ in range(args.runs):
            with fresh_dir(user, "rl-bench-timeline-") as store:
                argv = [python, str(tracer), "--root", str(store / "rl"), "pull", "-q",
                        "--tls-verify=false", ref]  # fmt: skip
                result = user.run(argv)
            if result.returncode != 0:
                print(f"rl pull failed:\n{result}")
                return 1
            marks = [line for line in result.stderr.splitlines() if line.startswith("@")]
            end = float(re.findall(r"@\s*([\d.]+)", marks[-1])[0]) if marks else 0.0
            if best is None or end < best[0]:
                best = (end, "\n".join(marks))
        assert best is not None
        print(f"{args.size} image, fastest of {args.runs}: exit at {best[0]:.1f} ms after the")
        print("interpreter's first line (add Python's start-up: `python -c pass`)\n")
        print(best[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
