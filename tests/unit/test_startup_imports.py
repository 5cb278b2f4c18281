"""What `rl run` imports. Start-up time is a benchmark target (issue 3, bench/startup.py), and
most of it is importing: this pins the module set of the foreground `rl run` path so that a
heavy import creeping onto it fails here rather than only in a benchmark.

A fresh interpreter imports what `rl run --rm --network=none IMAGE true` imports (its parser
and every module of the path up to the executor) and reports sys.modules.
"""

from __future__ import annotations

import json
import subprocess
import sys

# The modules `rl run` reaches before its container runs (rootless.cli.run imports them
# inside its functions, so importing them here stands in for running it).
RUN_PATH = (
    "rootless.cgroups.container",
    "rootless.cgroups.flags",
    "rootless.cgroups.fs",
    "rootless.containers.create",
    "rootless.containers.store",
    "rootless.images.store",
    "rootless.monitor.health",
    "rootless.monitor.restart",
    "rootless.runtime.executor",
    "rootless.runtime.options",
    "rootless.runtime.seccomp",
    "rootless.storage.overlay",
    "rootless.storage.probe",
    "rootless.systemd.notify",
)

# Each costs milliseconds and the path needs none of them: dataclasses (with inspect, ~5 ms,
# and ~0.5 ms per class), logging (~3 ms; see rootless.log), the network and registry stacks,
# the other command modules.
FORBIDDEN = (
    "dataclasses",
    "inspect",
    "logging",
    "socket",
    "tempfile",
    "trio",
    "httpx",
    "yaml",
    "netns",
    "rootless.images.archive",
    "rootless.registry.reference",
    "rootless.cli.images",
    "rootless.cli.containers",
    "rootless.cli.tools",
    "rootless.cli.lifecycle",
    "rootless.cli.cgroups",
)

SCRIPT = f"""
import importlib, json, sys
from rootless.cli.main import build_parser
parser, _ = build_parser(only="run")
parser.parse_args(["run", "--rm", "--network=none", "img", "true"])
for name in {RUN_PATH!r}:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def test_run_path_imports_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    modules = set(json.loads(out))
    assert set(RUN_PATH) <= modules  # the script did import the path
    assert sorted(modules & set(FORBIDDEN)) == []
