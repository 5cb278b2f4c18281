"""A foreground run's log: which log (rootless.containers.foreground_log) and the copy of the
container's pipes to rl's stdio and the log (rootless.runtime.tee), on real pipes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from rootless.containers.foreground_log import log_settings, open_log
from rootless.errors import RlError
from rootless.monitor.logfile import parse_lines
from rootless.runtime.tee import copy_outputs


class Recorder:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []

    def write(self, stream: str, data: bytes) -> None:
        self.chunks.append((stream, data))

    def stream(self, name: str) -> bytes:
        return b"".join(data for stream, data in self.chunks if stream == name)


def test_log_settings_follow_the_driver_and_options() -> None:
    assert log_settings({}, "/u") == ("/u/ctr.log", None)
    assert log_settings({"log_driver": "k8s-file"}, "/u") == ("/u/ctr.log", None)
    assert log_settings({"log_driver": "none"}, "/u") is None
    assert log_settings({"log_driver": "passthrough"}, "/u") is None
    opts = {"path": "/elsewhere.log", "max-size": "1k"}
    assert log_settings({"log_opts": opts}, "/u") == ("/elsewhere.log", 1000)


def test_open_log_writes_k8s_file(tmp_path: Path) -> None:
    log = open_log({}, str(tmp_path))
    assert log is not None
    log.write("stderr", b"oops\n")
    log.close()
    [entry] = parse_lines((tmp_path / "ctr.log").read_bytes())
    assert (entry.stream, entry.partial, entry.text) == ("stderr", False, b"oops")
    assert open_log({"log_driver": "none"}, str(tmp_path / "missing")) is None


def test_open_log_fails_like_a_detached_start(tmp_path: Path) -> None:
    with pytest.raises(RlError, match="cannot open the container's log file"):
        open_log({}, str(tmp_path / "no" / "such" / "dir"))


def test_copies_each_stream_to_its_destination_and_the_log() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    dest_out_r, dest_out_w = os.pipe()
    dest_err_r, dest_err_w = os.pipe()
    exit_r, exit_w = os.pipe()  # stands in for the keeper's pidfd (never readable here)
    payload = os.urandom(300_000)  # more than the pipes hold: back-pressure both ways
    received: dict[int, bytes] = {}

    def produce() -> None:
        os.write(err_w, b"warning\n")
        view = memoryview(payload)
        while view:
            view = view[os.write(out_w, view[:10_000]) :]
        os.close(out_w)
        os.close(err_w)

    def consume(fd: int) -> None:
        chunks = []
        while data := os.read(fd, 65536):
            chunks.append(data)
        received[fd] = b"".join(chunks)

    threads = [
        threading.Thread(target=produce),
        threading.Thread(target=consume, args=(dest_out_r,)),
        threading.Thread(target=consume, args=(dest_err_r,)),
    ]
    for thread in threads:
        thread.start()
    log = Recorder()
    copy_outputs([(out_r, dest_out_w, "stdout"), (err_r, dest_err_w, "stderr")], exit_r, log)
    os.close(dest_out_w)
    os.close(dest_err_w)
    for thread in threads:
        thread.join()
    assert received[dest_out_r] == payload and log.stream("stdout") == payload
    assert received[dest_err_r] == b"warning\n" and log.stream("stderr") == b"warning\n"
    for fd in (dest_out_r, dest_err_r, exit_r, exit_w):
        os.close(fd)
    with pytest.raises(OSError):
        os.fstat(out_r)  # copy_outputs closed its sources


def test_a_gone_reader_closes_the_source() -> None:
    """EPIPE on rl's side: the writer then gets EPIPE itself, as if it wrote there directly."""
    src_r, src_w = os.pipe()
    dest_r, dest_w = os.pipe()
    exit_r, exit_w = os.pipe()
    os.close(dest_r)
    os.write(src_w, b"y\n")
    log = Recorder()
    copy_outputs([(src_r, dest_w, "stdout")], exit_r, log)
    with pytest.raises(BrokenPipeError):
        os.write(src_w, b"y\n")
    assert log.stream("stdout") == b"y\n"  # what was read is logged all the same
    for fd in (src_w, dest_w, exit_r, exit_w):
        os.close(fd)


def test_after_the_exit_what_is_left_is_drained_and_copying_stops() -> None:
    """A write end still open elsewhere does not keep rl copying once the container ended."""
    src_r, src_w = os.pipe()
    dest_r, dest_w = os.pipe()
    exit_r, exit_w = os.pipe()
    os.write(src_w, b"last words\n")
    os.write(exit_w, b"x")  # the container ended
    copy_outputs([(src_r, dest_w, "stdout")], exit_r, None)
    assert os.read(dest_r, 100) == b"last words\n"
    for fd in (src_w, dest_r, dest_w, exit_r, exit_w):
        os.close(fd)
