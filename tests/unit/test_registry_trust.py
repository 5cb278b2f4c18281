"""The system CAs a registry's TLS certificate is checked against (client.system_trust_context).

Real TLS handshakes on loopback, with a CA and a server certificate made by openssl (as the
registry fixture makes them): what is trusted must be what OpenSSL's defaults trust, only read
later.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from rootless.registry import client
from tests.e2e.registry_fixture import make_tls_files


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    made = tmp_path / "made"
    made.mkdir()
    return make_tls_files(made)


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA that signed nothing the tests' server presents."""
    other = tmp_path / "other"
    other.mkdir()
    return make_tls_files(other)[0]


def _hashed_dir(directory: Path, *certs: Path) -> Path:
    """`directory` with `certs` under their OpenSSL subject-hash names, as c_rehash makes."""
    directory.mkdir()
    for cert in certs:
        subject_hash = subprocess.run(
            ["openssl", "x509", "-hash", "-noout", "-in", str(cert)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        shutil.copyfile(cert, directory / f"{subject_hash}.0")
    return directory


def _handshake(context: ssl.SSLContext, server_cert: Path, server_key: Path) -> None:
    """A TLS handshake with a server on 127.0.0.1 presenting `server_cert`."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(server_cert), str(server_key))
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client refused us: its side says why

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            port = listener.getsockname()[1]
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                pass
        finally:
            thread.join(timeout=10)


def test_hash_links_are_what_marks_a_ca_directory(tmp_path: Path) -> None:
    assert not client._has_hash_links(str(tmp_path / "missing"))
    assert not client._has_hash_links(None)
    (tmp_path / "ca-bundle.crt").write_text("")
    (tmp_path / "1a2b3c4g.0").write_text("")  # not hexadecimal
    (tmp_path / "1a2b3c4d.pem").write_text("")
    assert not client._has_hash_links(str(tmp_path))
    (tmp_path / "1a2b3c4d.1").write_text("")
    assert client._has_hash_links(str(tmp_path))


def test_a_hashed_ca_directory_is_read_when_a_chain_needs_it(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, server_cert, server_key = tls_files
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_dir(tmp_path / "certs", ca)))
    context = client.system_trust_context()
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing read yet
    _handshake(context, server_cert, server_key)
    assert context.cert_store_stats()["x509_ca"] == 1  # the one CA the chain named


def test_a_ca_missing_from_the_directory_is_not_trusted(
    tmp_path: Path,
    tls_files: tuple[Path, Path, Path],
    other_ca: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server_cert, server_key = tls_files
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_dir(tmp_path / "certs", other_ca)))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(client.system_trust_context(), server_cert, server_key)


def test_a_bundle_named_by_ssl_cert_file_is_loaded_as_asked(
    tmp_path: Path,
    tls_files: tuple[Path, Path, Path],
    other_ca: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca, server_cert, server_key = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    # A hashed directory that lacks our CA: the bundle must be read too.
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_dir(tmp_path / "certs", other_ca)))
    context = client.system_trust_context()
    assert context.cert_store_stats()["x509_ca"] == 1  # loaded up front
    _handshake(context, server_cert, server_key)


def test_the_verification_settings_are_the_default_contexts() -> None:
    context = client.system_trust_context()
    default = ssl.create_default_context()
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.minimum_version == default.minimum_version
    assert context.options == default.options
