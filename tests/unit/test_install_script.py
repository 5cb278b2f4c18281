"""packaging/install.sh and .ci/run: POSIX sh, and the options they promise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "packaging" / "install.sh"
CI_RUN = REPO / ".ci" / "run"


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash (a strict POSIX sh) is missing")
@pytest.mark.parametrize("script", [INSTALL, CI_RUN])
def test_scripts_parse_as_posix_sh(script: Path) -> None:
    assert subprocess.run(["dash", "-n", str(script)], check=False).returncode == 0


def test_unknown_option_is_refused_before_doing_anything() -> None:
    done = subprocess.run([str(INSTALL), "--bogus"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: unknown option: --bogus")
    assert "==>" not in done.stdout


def test_help_names_the_test_option() -> None:
    done = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--test" in done.stdout


def test_ci_runs_the_readme_command() -> None:
    assert "./packaging/install.sh --test" in CI_RUN.read_text()
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.strip().split("\n")[1:]]
    assert commands == [
        "./packaging/install.sh",
        "./packaging/install.sh --test",
    ]
