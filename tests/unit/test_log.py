"""rootless.log: the "rl" logger, configured on first use in podman's format."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _stderr(code: str) -> str:
    # A fresh interpreter: pytest has set logging up in this one.
    return subprocess.run(
        [sys.executable, "-c", f"from rootless import log\n{code}"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr


def test_first_use_sets_up_podmans_format_at_the_configured_level() -> None:
    out = _stderr("log.configure('warn')\nl = log.logger()\nl.info('hidden')\nl.warning('shown')")
    assert out == "WARN[0000] shown\n"


@pytest.mark.parametrize(("level", "expected"), [("debug", "DEBU[0000] d\n"), ("error", "")])
def test_other_levels(level: str, expected: str) -> None:
    assert _stderr(f"log.configure({level!r})\nlog.logger().debug('d')") == expected


def test_the_default_level_imports_nothing_until_used() -> None:
    out = _stderr(
        "import sys\nlog.configure('warn')\nprint('logging' in sys.modules, file=sys.stderr)"
    )
    assert out == "False\n"
