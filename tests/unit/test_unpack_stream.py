"""Unpacking a layer from a stream (a pipe a download is written into), the user-namespace
workers that do it, and the pull's tee from the download into them (with a fake client)."""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from rootless.errors import RlError
from rootless.images import store as store_module
from rootless.images.unpack import unpack_stream
from rootless.images.unpacked import Unpacked, layer_dir
from rootless.images.workers import NamespaceWorkers
from rootless.registry import pull
from rootless.registry.client import BlobTarget, RegistryClient
from rootless.registry.manifests import Descriptor
from tests.images import file, layer_tar, sha256

TAR = layer_tar([file("etc/hello", "hello\n"), file("bin/tool", os.urandom(300_000), mode=0o755)])


def compressed(kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(TAR)
    if kind == "zstd":
        zstandard = pytest.importorskip("zstandard")
        return bytes(zstandard.ZstdCompressor().compress(TAR))
    return TAR


def write_slowly(fd: int, data: bytes, piece: int) -> threading.Thread:
    """Write `data` into a pipe in small pieces (so every read is short), then close it."""

    def run() -> None:
        with open(fd, "wb", buffering=0) as out:
            for start in range(0, len(data), piece):
                out.write(data[start : start + piece])

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_unpack_from_a_pipe_with_short_reads(tmp_path: Path, kind: str) -> None:
    read_end, write_end = os.pipe()
    writer = write_slowly(write_end, compressed(kind), 3)  # shorter than any magic number
    with open(read_end, "rb", buffering=0) as raw:
        found = unpack_stream(raw, tmp_path / "layer", diff_id=sha256(TAR), layer_ref="t")
    writer.join()
    assert found == Unpacked(300_006, len(TAR), kind)
    assert (tmp_path / "layer/etc/hello").read_text() == "hello\n"
    assert os.stat(tmp_path / "layer/bin/tool").st_mode & 0o777 == 0o755


def test_a_stream_cut_short_is_refused_and_cleaned_up(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    writer = write_slowly(write_end, gzip.compress(TAR)[:-5000], 4096)
    with open(read_end, "rb", buffering=0) as raw, pytest.raises(RlError, match="layer t"):
        unpack_stream(raw, tmp_path / "layer", diff_id=sha256(TAR), layer_ref="t")
    writer.join()
    assert not (tmp_path / "layer").exists()


def identity() -> tuple[int, int]:
    return os.getuid(), os.getgid()


def fail() -> None:
    raise RlError("refused on purpose")


def read_fd(prefix: bytes, fd: int) -> bytes:
    with open(fd, "rb") as f:
        return prefix + f.read()


def test_namespace_workers_run_jobs_as_root_of_one_namespace() -> None:
    with NamespaceWorkers() as workers:
        assert workers.call(identity) == (0, 0)
        with pytest.raises(RlError, match="refused on purpose"):
            workers.call(fail)
        read_end, write_end = os.pipe()
        result = workers.submit(read_fd, b">", fds=[read_end])
        os.close(read_end)
        os.write(write_end, b"data")
        os.close(write_end)
        with open(result, "rb") as f:
            from rootless.images.workers import outcome

            assert outcome(f.read()) == b">data"


def square(number: int) -> int:
    if number == 3:
        raise RlError("three")
    return number * number


def test_run_parallel_keeps_order_and_raises_the_error() -> None:
    import functools

    calls = [functools.partial(square, n) for n in (1, 2, 4, 5)]
    assert store_module._run_parallel(calls) == [1, 4, 16, 25]
    with pytest.raises(RlError, match="three"):
        store_module._run_parallel([functools.partial(square, n) for n in (1, 3, 4)])


# --- the pull's tee -------------------------------------------------------------------------


class FakeClient:
    """fetch_blob as the real one calls back: chunks at offsets; a start-over repeats them."""

    def __init__(self, blob: bytes, *, start_over: bool = False, error: str | None = None):
        self.blob = blob
        self.start_over = start_over
        self.error = error

    async def fetch_blob(self, repository: str, target: BlobTarget, dest: Path, scopes: Any,
                         *, on_progress: Any = None, on_data: Any = None) -> None:  # fmt: skip
        assert on_data is not None
        pieces = [self.blob[i : i + 7000] for i in range(0, len(self.blob), 7000)]
        half = len(pieces) // 2
        offset = 0
        for piece in pieces[:half]:
            await on_data(offset, piece)
            offset += len(piece)
        if self.start_over:  # the server ignored Range: everything again from 0
            offset = 0
            for piece in pieces[:half]:
                await on_data(offset, piece)
                offset += len(piece)
        for piece in pieces[half:]:
            await on_data(offset, piece)
            offset += len(piece)
        if self.error:
            raise RlError(self.error)
        dest.write_bytes(self.blob)


def fetch_and_unpack(tmp_path: Path, client: FakeClient, diff_id: str) -> Unpacked:
    blob = client.blob
    plan = pull.LayerPlan(Descriptor("x", sha256(blob), len(blob)), diff_id, fetch=True)
    with NamespaceWorkers() as workers:
        staging = pull.Staging(tmp_path, workers, {})
        return trio.run(
            pull._fetch_and_unpack,
            cast(RegistryClient, client),
            "repo",
            BlobTarget(sha256(blob), len(blob)),
            tmp_path / "blob",
            [],
            None,
            staging,
            plan,
            "1 of test",
        )


@pytest.mark.parametrize("start_over", [False, True])
def test_a_layer_unpacks_while_it_downloads(tmp_path: Path, start_over: bool) -> None:
    client = FakeClient(gzip.compress(TAR), start_over=start_over)
    found = fetch_and_unpack(tmp_path, client, sha256(TAR))
    assert found.tar_bytes == len(TAR)
    directory = layer_dir(tmp_path, sha256(TAR))
    assert (directory / "etc/hello").read_text() == "hello\n"


def test_the_download_error_wins_and_the_layer_is_discarded(tmp_path: Path) -> None:
    client = FakeClient(os.urandom(50_000), error="blob x: digest mismatch")
    with pytest.raises(RlError, match="digest mismatch"):
        fetch_and_unpack(tmp_path, client, sha256(TAR))
    assert not layer_dir(tmp_path, sha256(TAR)).exists()


def test_a_wrong_diff_id_is_the_workers_error(tmp_path: Path) -> None:
    client = FakeClient(gzip.compress(TAR))
    with pytest.raises(RlError, match="does not belong to this image"):
        fetch_and_unpack(tmp_path, client, sha256(b"another tar"))
    assert not layer_dir(tmp_path, sha256(b"another tar")).exists()


def top_directory_flag(path: Path) -> bool:
    import array
    import fcntl

    from rootless.images import unpack

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, unpack.FS_IOC_GETFLAGS, flags, True)
    finally:
        os.close(fd)
    return bool(flags[0] & unpack.FS_TOPDIR_FL)


def test_a_layer_directory_is_marked_as_a_top_directory(tmp_path: Path) -> None:
    """ext4 spreads its subdirectories over block groups (`chattr +T`); other filesystems
    refuse the flag, and the test is skipped there."""
    import array
    import fcntl

    from rootless.images import unpack

    probe = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(probe, unpack.FS_IOC_GETFLAGS, flags, True)
        fcntl.ioctl(probe, unpack.FS_IOC_SETFLAGS, flags, True)  # the filesystem has flags
        supported = True
    except OSError:
        supported = False
    finally:
        os.close(probe)
    if not supported:
        pytest.skip("the filesystem has no top-directory flag")
    (tmp_path / "blob").write_bytes(gzip.compress(TAR))
    unpack.unpack_layer(tmp_path / "blob", tmp_path / "layer", diff_id=sha256(TAR), layer_ref="t")
    assert top_directory_flag(tmp_path / "layer")
    assert not top_directory_flag(tmp_path)
