"""NamespaceWorkers returns before the id maps are written (the helper has them written by a
child of its own): `ready` or the first job waits, reports a failure as one RlError, and a
helper that is closed unused goes away. Runs as root or as a user with subordinate ids."""

from __future__ import annotations

import os

import pytest

from rootless.errors import RlError
from rootless.images.workers import NamespaceWorkers
from rootless.userns import IdMapping, IdRange


def ids() -> tuple[int, int]:
    return os.getuid(), os.getgid()


def test_ready_then_jobs_run_as_root_of_the_namespace() -> None:
    with NamespaceWorkers() as workers:
        workers.ready()
        workers.ready()  # a second call returns at once
        assert workers.call(ids) == (0, 0)


def test_the_first_job_waits_for_the_maps_without_ready() -> None:
    with NamespaceWorkers() as workers:
        assert workers.call(ids) == (0, 0)


def test_closed_unused_the_helper_is_gone() -> None:
    workers = NamespaceWorkers()
    pid = workers._pid
    assert pid is not None
    workers.close()
    with pytest.raises(ChildProcessError):  # reaped: close() waited for it
        os.waitpid(pid, os.WNOHANG)


def test_maps_the_kernel_refuses_are_an_error_from_ready() -> None:
    # Two ranges for the same ids inside: the kernel refuses the map (EINVAL), whoever
    # writes it (root writes it directly, a user through newuidmap, which fails).
    overlapping = (IdRange(0, os.getuid(), 1), IdRange(0, os.getuid(), 1))
    workers = NamespaceWorkers(IdMapping(overlapping, overlapping))
    try:
        with pytest.raises(RlError) as raised:
            workers.ready()
        assert "\n" not in raised.value.message.strip()
        with pytest.raises(RlError):  # the helper is gone: no job runs
            workers.call(ids)
    finally:
        workers.close()
