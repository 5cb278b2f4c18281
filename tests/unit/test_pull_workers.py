"""What `rl pull` hands to its namespace workers so that its own process stays small (issue 5):
jobs named "module:function" and submitted before the helper is ready, modules the helper
preloads, the store's pull jobs (prepare_pull, commit_pulled) and the view of the store they
give, and gzip inflating with zlib or ISA-L. Runs as root or as a user with subordinate ids."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.images import store as store_module
from rootless.images import unpack
from rootless.images.store import ImageStore
from rootless.images.unpacked import Unpacked, layer_dir
from rootless.images.workers import NamespaceWorkers, outcome
from rootless.outcome import read_all
from rootless.registry import pull
from tests.images import file, layer_tar, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def loaded(module: str) -> bool:
    return module in sys.modules


def test_a_job_by_name_runs_in_a_worker_that_has_the_preloaded_modules() -> None:
    with NamespaceWorkers(preload=["json", "no.such.module"]) as workers:
        # (a module that cannot be imported is left to the job that needs it)
        assert workers.call(f"{__name__}:loaded", "json") is True
        with pytest.raises(ModuleNotFoundError):
            workers.call("no.such.module:function")


def test_an_early_job_waits_for_the_maps_and_a_failed_namespace_is_the_error() -> None:
    from rootless.userns import IdMapping, IdRange

    with NamespaceWorkers() as workers:
        fd = workers.submit("os:getuid", early=True)
        workers.ready()
        assert outcome(read_all(fd)) == 0
        os.close(fd)
    # Maps the kernel refuses: the early job is lost with the helper, and ready() says why.
    overlapping = (IdRange(0, os.getuid(), 1), IdRange(0, os.getuid(), 1))
    workers = NamespaceWorkers(IdMapping(overlapping, overlapping))
    try:
        try:
            fd = workers.submit("os:getuid", early=True)
        except RlError:
            return  # (the helper was gone already: submit asked ready() why)
        with pytest.raises(RlError) as raised:
            workers.ready()
        assert "worker" not in raised.value.message
        os.close(fd)
    finally:
        workers.close()


def test_the_pull_process_does_not_load_what_only_the_workers_need() -> None:
    code = (
        "import sys, rootless.cli.registry, rootless.registry.pull, rootless.images.workers, "
        "rootless.images.unpacked\n"
        "print(sorted(m for m in ('tarfile', 'sqlite3', 'rootless.images.store', "
        "'rootless.images.unpack', 'rootless.images.archive') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"


def test_prepare_pull_then_commit_pulled(tmp_path: Path) -> None:
    root = tmp_path / "store"
    staging_dir, image_ids, diff_ids = store_module.prepare_pull(root, os.getpid())
    assert staging_dir.parent == root / "tmp" and staging_dir.is_dir()
    assert f"pull-{os.getpid()}-" in staging_dir.name  # (stale once this process is gone)
    assert (image_ids, diff_ids) == ([], [])

    tar = layer_tar([file("etc/hello", "hello\n")])
    blob = gzip.compress(tar)
    diff_id, blob_digest = sha256(tar), sha256(blob)
    staged = staging_dir / "blob"
    staged.write_bytes(blob)
    found = unpack.unpack_file(staged, layer_dir(staging_dir, diff_id), diff_id=diff_id,
                               layer_ref="1")  # fmt: skip
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = b'{"schemaVersion": 2}'
    media_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    image_id = store_module.commit_pulled(
        root, staging_dir, "example.com/a:latest", manifest, OCI_MANIFEST, config,
        [(blob_digest, diff_id, media_type, staged)], {diff_id: found},
    )  # fmt: skip
    assert image_id == sha256(config).removeprefix("sha256:")
    assert not staging_dir.exists()  # consumed

    # The next pull's view of the store.
    staging_dir, image_ids, diff_ids = store_module.prepare_pull(root, os.getpid())
    view = pull.StoreView(root, staging_dir, frozenset(image_ids), frozenset(diff_ids))
    assert view.has_image(sha256(config)) and not view.has_image(sha256(b"other"))
    assert view.blob_digests([blob_digest, sha256(b"other")]) == {blob_digest}
    assert view.unpacked_diff_ids({diff_id, sha256(b"x")}) == {diff_id}
    store = ImageStore.open(root)
    try:
        image = store.resolve("example.com/a:latest")
        assert image.diff_ids == [diff_id]
        assert (store.layer_path(diff_id) / "etc/hello").read_text() == "hello\n"
    finally:
        store.close()


def test_an_unopenable_store_is_reported_as_such(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_text("not a directory")
    with NamespaceWorkers() as workers:
        job = workers.submit("rootless.images.store:prepare_pull", root, os.getpid(), early=True)
        with pytest.raises(pull.StoreUnavailable, match="cannot open the image store"):
            pull._open_store(root, workers, job)


# --- inflating ------------------------------------------------------------------------------


@pytest.fixture(params=["zlib", "isal"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "zlib":
        monkeypatch.setattr(unpack, "_inflater", lambda: (zlib.decompressobj, (zlib.error,)))
    else:
        pytest.importorskip("isal.isal_zlib")
    return str(request.param)


def gunzip(data: bytes) -> bytes:
    source = unpack._Prefixed(data[:6], io.BytesIO(data[6:]))
    return b"".join(unpack._gunzip(source))


def test_members_and_padding_inflate_alike(inflater: str) -> None:
    first, second = os.urandom(3 << 20) + b"a" * 100_000, b"second member"
    data = gzip.compress(first) + b"\0" * 10 + gzip.compress(second)
    assert gunzip(data) == first + second


def test_corrupt_or_cut_streams_are_zlib_errors(inflater: str) -> None:
    data = gzip.compress(b"x" * 100_000)
    with pytest.raises(zlib.error):
        gunzip(data[:10] + b"\xff" * 40 + data[50:])
    with pytest.raises(EOFError):
        gunzip(data[: len(data) // 2])


def test_the_worker_reports_layers_by_a_class_the_puller_can_load_cheaply() -> None:
    assert Unpacked.__module__ == "rootless.images.unpacked"
    assert unpack.Unpacked is Unpacked
