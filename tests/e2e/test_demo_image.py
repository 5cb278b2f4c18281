"""`rl image create-demo` as the unprivileged user."""

from __future__ import annotations

import pytest

from tests.conftest import Rl

pytestmark = pytest.mark.e2e


def test_create_demo_is_idempotent_and_listed(rl: Rl) -> None:
    first = rl.ok("image", "create-demo").stdout.strip()
    second = rl.ok("image", "create-demo").stdout.strip()
    assert len(first) == 64 and first == second
    listed = rl.ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.split("\n")
    assert f"localhost/rl-demo:latest {first[:12]}" in listed


def test_create_demo_takes_a_name(rl: Rl) -> None:
    image_id = rl.ok("image", "create-demo", "mydemo:v1").stdout.strip()
    assert (
        rl.ok("image", "inspect", "--format", "{{.Id}}", "localhost/mydemo:v1").stdout.strip()
        == image_id
    )


def test_create_demo_refuses_a_bad_name(rl: Rl) -> None:
    result = rl("image", "create-demo", "Bad Name!")
    assert result.returncode == 125
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
