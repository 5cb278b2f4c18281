"""The pure parts of pull/push and the registry client: layer planning, names, retries,
upload chunks, push destinations, manifest conversion, certs.d and error wording."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from rootless.errors import RlError
from rootless.registry import client, push
from rootless.registry import manifests as mt
from rootless.registry.pull import (
    Progress,
    config_diff_ids,
    image_name,
    plan_layers,
    short_digest,
)
from rootless.registry.reference import parse

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")
DIFF1, DIFF2, DIFF3 = ("sha256:" + c * 64 for c in "def")


def manifest(*layers: tuple[str, str], config_type: str = mt.OCI_CONFIG) -> mt.Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": "sha256:" + "9" * 64, "size": 10},
        "layers": [{"mediaType": t, "digest": d, "size": 1} for d, t in layers],
    }
    parsed = mt.parse_manifest(json.dumps(doc).encode())
    assert isinstance(parsed, mt.Manifest)
    return parsed


def plan(
    m: mt.Manifest, diffs: list[str], blobs: frozenset[str] = frozenset(), zstd: bool = False
) -> list[bool]:
    plans = plan_layers(m, diffs, set(blobs), source="x", zstd_available=zstd)
    return [p.fetch for p in plans]


def test_plan_skips_blobs_the_store_has_and_duplicates() -> None:
    m = manifest((D1, mt.OCI_LAYER_GZIP), (D2, mt.OCI_LAYER), (D3, mt.OCI_LAYER_GZIP))
    assert plan(m, [DIFF1, DIFF2, DIFF3]) == [True, True, True]
    assert plan(m, [DIFF1, DIFF2, DIFF3], blobs=frozenset({D3})) == [True, True, False]
    twice = manifest((D1, mt.OCI_LAYER_GZIP), (D1, mt.OCI_LAYER_GZIP))
    assert plan(twice, [DIFF1, DIFF1]) == [True, False]


def test_plan_refuses_bad_images() -> None:
    m = manifest((D1, mt.OCI_LAYER_GZIP))
    with pytest.raises(RlError, match="1 layers but the config 2 diff-ids"):
        plan(m, [DIFF1, DIFF2])
    zstd = manifest((D1, mt.OCI_LAYER_ZSTD))
    with pytest.raises(RlError, match="zstandard"):
        plan(zstd, [DIFF1])
    assert plan(zstd, [DIFF1], zstd=True) == [True]
    artifact = manifest((D1, mt.OCI_LAYER), config_type="application/vnd.cncf.helm.config+json")
    with pytest.raises(RlError, match="not a container image"):
        plan(artifact, [DIFF1])


def test_config_diff_ids() -> None:
    assert config_diff_ids({"rootfs": {"diff_ids": [DIFF1]}}, "x") == [DIFF1]
    bad: object
    for bad in ({}, {"rootfs": {}}, {"rootfs": {"diff_ids": [1]}}, []):
        with pytest.raises(RlError, match=r"rootfs\.diff_ids"):
            config_diff_ids(bad, "x")


def test_names_and_short_digests() -> None:
    assert image_name(parse("example.com/a/b")) == "example.com/a/b:latest"
    assert image_name(parse(f"example.com/a/b:1@{D1}")) == f"example.com/a/b@{D1}"
    assert short_digest(D1) == "a" * 12
    assert short_digest(D1, 10) == "a" * 10


def test_progress_lines() -> None:
    digest = "sha256:" + "ab" * 32
    lines: list[str] = []
    pipe = Progress(tty=False, write=lines.append)
    pipe.copying("blob", digest, skipped=True)
    pipe.copying("config", digest)
    pipe.done()
    assert lines == [
        f"Copying blob {digest}",
        f"Copying config {digest}",
        "Writing manifest to image destination",
        "Storing signatures",
    ]
    lines.clear()
    terminal = Progress(tty=True, write=lines.append)
    terminal.copying("blob", digest)
    terminal.copying("blob", digest, skipped=True)
    terminal.copying("config", digest)
    assert lines == [
        "Copying blob abababababab done",
        "Copying blob abababababab skipped: already exists",
        "Copying config ababababab done",
    ]
    lines.clear()
    Progress(quiet=True, tty=True, write=lines.append).copying("blob", digest)
    assert lines == []


def test_retry_delay() -> None:
    assert client.retry_delay(0, None) == 0.25
    assert client.retry_delay(2, None) == 1.0
    assert client.retry_delay(10, None) == client.MAX_RETRY_DELAY
    assert client.retry_delay(0, "3") == 3.0
    assert client.retry_delay(0, "0") == 0.0
    assert client.retry_delay(0, "3600") == client.MAX_RETRY_DELAY
    assert client.retry_delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.5


def test_api_endpoint() -> None:
    assert client.api_endpoint("docker.io") == "registry-1.docker.io"
    assert client.api_endpoint("quay.io") == "quay.io"
    assert client.api_endpoint("127.0.0.1:5000") == "127.0.0.1:5000"


def test_next_link() -> None:
    assert client.next_link(None) is None
    assert client.next_link('</v2/a/tags/list?last=x&n=2>; rel="next"') == (
        "/v2/a/tags/list?last=x&n=2"
    )
    assert client.next_link('<https://r/a>; rel="prev", <https://r/b>; rel="next"') == (
        "https://r/b"
    )
    assert client.next_link('<https://r/a>; rel="prev"') is None


def test_upload_chunks() -> None:
    assert client.upload_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert client.upload_chunks(8, 4) == [(0, 4), (4, 8)]
    assert client.upload_chunks(0, 4) == []
    with pytest.raises(ValueError):
        client.upload_chunks(10, 0)


def test_certs_dirs_and_context(tmp_path: Path) -> None:
    assert client.certs_dirs("r.io:5000", tmp_path) == [
        tmp_path / ".config/containers/certs.d/r.io:5000",
        Path("/etc/containers/certs.d/r.io:5000"),
    ]
    assert isinstance(client.ssl_context("r.io:5000", tmp_path), ssl.SSLContext)
    bad = tmp_path / ".config/containers/certs.d/r.io:5000"
    bad.mkdir(parents=True)
    (bad / "ca.crt").write_text("not a certificate")
    with pytest.raises(RlError, match=r"ca\.crt: unusable certificate"):
        client.ssl_context("r.io:5000", tmp_path)
    (bad / "ca.crt").unlink()
    (bad / "client.cert").write_text("x")
    with pytest.raises(RlError, match=r"without client\.key"):
        client.ssl_context("r.io:5000", tmp_path)


def _wrapped(cause: BaseException) -> httpx.ConnectError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise httpx.ConnectError("failed") from inner
    except httpx.ConnectError as outer:
        return outer


def test_connection_error_wording() -> None:
    refused = client.connection_error("h:1", _wrapped(ConnectionRefusedError(111, "x")), tls=True)
    assert "connection refused" in refused.message
    unknown = client.connection_error(
        "nohost:1", _wrapped(socket.gaierror(-2, "Name or service not known")), tls=True
    )
    assert unknown.message.startswith("nohost:1: unknown host")
    grouped = client.connection_error(
        "h:1", _wrapped(ExceptionGroup("all failed", [ConnectionRefusedError(111, "x")])), tls=True
    )
    assert "connection refused" in grouped.message
    verify = ssl.SSLCertVerificationError("certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    tls = client.connection_error("h:1", _wrapped(verify), tls=True)
    assert "~/.config/containers/certs.d/h:1/ca.crt" in tls.message
    assert "unable to get local issuer certificate" in tls.message
    plain = client.connection_error(
        "h:1", _wrapped(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")),
        tls=True,
    )  # fmt: skip
    assert "--tls-verify=false" in plain.message


def test_push_destination() -> None:
    names = ["localhost/rl-test/busybox:latest", "r.io/x:1"]
    assert str(push.destination("r.io:5000/a/b", None, names)) == "r.io:5000/a/b:latest"
    assert str(push.destination("docker://r.io/a:1", None, names)) == "r.io/a:1"
    assert str(push.destination(None, "r.io/x:1", names)) == "r.io/x:1"
    assert str(push.destination(None, None, names)) == names[0]  # IMAGE was an ID
    assert str(push.destination("team/app", None, [])) == "docker.io/team/app:latest"
    with pytest.raises(RlError, match="only docker://"):
        push.destination("oci-archive:/tmp/x.tar", None, names)
    with pytest.raises(RlError, match="not a digest"):
        push.destination(f"r.io/a@{D1}", None, names)
    with pytest.raises(RlError, match="has no name"):
        push.destination(None, None, [])


def test_convert_manifest() -> None:
    stored: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 1},
        "layers": [
            {"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 1},
            {"mediaType": mt.OCI_LAYER, "digest": D3, "size": 1},
        ],
        "annotations": {"a": "b"},
    }
    assert push.convert_manifest(stored, mt.OCI_MANIFEST, None) == (mt.OCI_MANIFEST, None)
    assert push.convert_manifest(stored, mt.OCI_MANIFEST, "oci") == (mt.OCI_MANIFEST, None)
    media_type, doc = push.convert_manifest(stored, mt.OCI_MANIFEST, "v2s2")
    assert media_type == mt.DOCKER_MANIFEST and doc is not None
    assert doc["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert [layer["mediaType"] for layer in doc["layers"]] == [mt.DOCKER_LAYER_GZIP, mt.OCI_LAYER]
    assert "annotations" not in doc
    assert stored["layers"][0]["mediaType"] == mt.OCI_LAYER_GZIP  # the input is untouched
    back_type, back = push.convert_manifest(doc, mt.DOCKER_MANIFEST, "oci")
    assert back_type == mt.OCI_MANIFEST and back is not None
    assert back["layers"][0]["mediaType"] == mt.OCI_LAYER_GZIP
    zstd: dict[str, Any] = {
        **stored,
        "layers": [{"mediaType": mt.OCI_LAYER_ZSTD, "digest": D2, "size": 1}],
    }
    with pytest.raises(RlError, match="--format oci"):
        push.convert_manifest(zstd, mt.OCI_MANIFEST, "v2s2")
