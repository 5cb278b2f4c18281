"""Fixtures shared by every test: the unprivileged user and an `rl` bound to a fresh store."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.harness import Result, User, ensure_user, rl_binary
from tests.images import ArchiveSet, build_test_archives


@pytest.fixture(scope="session")
def user() -> User:
    return ensure_user()


@pytest.fixture(scope="session")
def image_archives(user: User) -> Iterator[ArchiveSet]:
    """The busybox test images of tests/images.py, built once, readable by the test user."""
    path = user.make_dir("rl-images-")
    yield build_test_archives(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_archive(image_archives: ArchiveSet) -> Path:
    """docker-archive of localhost/rl-test/busybox:latest (3 layers: whiteouts, xattrs, ...)."""
    return image_archives.docker_archive


@pytest.fixture(scope="session")
def busybox_oci_archive(image_archives: ArchiveSet) -> Path:
    return image_archives.oci_archive


class Rl:
    """Runs the installed `rl` as the test user against one store (`--root`)."""

    def __init__(self, user: User, root: Path) -> None:
        self.user = user
        self.root = root

    def __call__(
        self,
        *args: str,
        input: bytes | str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> Result:
        return self.user.run(
            [rl_binary(), "--root", str(self.root), *args], input=input, timeout=timeout, env=env
        )

    def ok(self, *args: str, input: bytes | str | None = None, timeout: float = 120) -> Result:
        """Run and require exit 0, showing rl's output when it is not."""
        result = self(*args, input=input, timeout=timeout)
        assert result.returncode == 0, f"rl {' '.join(args)} failed: {result}"
        return result


@pytest.fixture
def workdir(user: User) -> Iterator[Path]:
    """A directory the test user owns, for archives, stores and bind mounts."""
    path = user.make_dir()
    yield path
    _remove(path)


@pytest.fixture
def rl(user: User, workdir: Path) -> Rl:
    """rl with a store of its own, so tests do not see each other's images."""
    root = workdir / "store"
    return Rl(user, root)


@contextmanager
def loaded_store(
    user: User,
    archive: Path,
    prefix: str,
    make: Callable[[User, Path], Rl] = Rl,
) -> Iterator[Rl]:
    """An rl (built by `make`, on DIR/store) with `archive` loaded, in a fresh directory DIR
    named by `prefix`; for a test module's `rlm` fixture.

    On exit every container goes (so no monitor outlives the module) and then DIR, whatever
    the tests left behind.
    """
    path = user.make_dir(prefix)
    rl = make(user, path / "store")
    try:
        rl.ok("load", "-i", str(archive))
        yield rl
    finally:
        # Its exit status does not matter (an empty store is fine); a hang must not keep the
        # directory: _remove still takes it, and a stuck container shows as a leftover process.
        with suppress(subprocess.TimeoutExpired):
            rl("rm", "-a", "-f", "-t", "0")
        _remove(path)


def _remove(path: Path) -> None:
    # Stores hold files owned by subordinate ids. Root removes them directly; an ordinary
    # user does it inside its user namespace.
    import os

    if os.getuid() == 0:
        shutil.rmtree(path, ignore_errors=True)
        return
    from rootless.userns import run_in_userns

    run_in_userns(shutil.rmtree, str(path), True)
