"""A real OCI registry on loopback for the pull/push tests: Debian's `docker-registry`
(distribution 2.8) on 127.0.0.1 at a free port, with its own config and storage, optionally
with htpasswd (bcrypt) authentication and/or TLS from a CA the fixture makes with openssl.

The TLS variant installs the CA where rl (and podman) look for it:
`~test-user/.config/containers/certs.d/127.0.0.1:PORT/ca.crt`; `remove_ca()` takes it away.
Helpers push raw blobs and manifests with httpx, for images rl cannot make itself (indexes).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import User

REGISTRY_BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bcrypt_hash(password: str) -> str:
    """htpasswd's bcrypt entry, made with libcrypt (no bcrypt module or apache2-utils needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))
    assert hashed and hashed.startswith("$2"), "libcrypt has no bcrypt"
    return hashed


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) for 127.0.0.1, with openssl (EC keys: fast)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=rl test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


def make_client_cert(directory: Path) -> tuple[Path, Path]:
    """(client.cert, client.key) signed by the CA of make_tls_files."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = functools.partial(subprocess.run, check=True, capture_output=True, cwd=directory)
    run(["openssl", "req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=rl"])
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    run(
        ["openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "client.cert", "-days", "2", "-extfile", "client.ext"]
    )  # fmt: skip
    (directory / "client.key").chmod(0o644)  # the test user copies it into certs.d
    return directory / "client.cert", directory / "client.key"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    directory: Path
    process: subprocess.Popen[bytes]
    user: User
    credentials: tuple[str, str] | None = None
    ca: Path | None = None
    client_cert: tuple[Path, Path] | None = None  # required by the registry when set
    installed_ca: list[Path] = field(default_factory=list)

    @property
    def scheme(self) -> str:
        return "https" if self.ca is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def http(self) -> httpx.Client:
        """A raw client for test set-up (trusts the fixture's CA, sends its credentials)."""
        verify: ssl.SSLContext | bool = True
        if self.ca is not None:
            verify = ssl.create_default_context(cafile=str(self.ca))
            if self.client_cert is not None:
                verify.load_cert_chain(*map(str, self.client_cert))
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        return httpx.Client(base_url=self.url, verify=verify, auth=auth, timeout=30)

    # --- certs.d for the test user -------------------------------------------------------

    def certs_dir(self) -> Path:
        return self.user.home / ".config/containers/certs.d" / self.host

    def install_ca(self) -> None:
        assert self.ca is not None
        target = self.certs_dir() / "ca.crt"
        self.installed_ca.append(self.certs_dir())  # removed at teardown, even half made
        result = self.user.run(["install", "-D", "-m", "0644", str(self.ca), str(target)])
        assert result.returncode == 0, result

    def install_client_cert(self) -> None:
        assert self.client_cert is not None
        for source in self.client_cert:
            target = self.certs_dir() / source.name
            mode = "0600" if source.suffix == ".key" else "0644"
            result = self.user.run(["install", "-D", "-m", mode, str(source), str(target)])
            assert result.returncode == 0, result

    def remove_ca(self) -> None:
        shutil.rmtree(self.certs_dir(), ignore_errors=True)

    # --- raw pushes ----------------------------------------------------------------------

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self.http() as client:
            started = client.post(f"/v2/{repository}/blobs/uploads/")
            assert started.status_code == 202, started.text
            location = started.headers["location"]
            sep = "&" if "?" in location else "?"
            done = client.put(
                f"{location}{sep}digest={digest}",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert done.status_code == 201, done.text
        return digest

    def push_manifest(
        self, repository: str, reference: str, doc: dict[str, Any], data: bytes | None = None
    ) -> str:
        """PUT a manifest (`data`, its exact bytes, or `doc` serialized); returns its digest."""
        data = data if data is not None else json.dumps(doc).encode()
        with self.http() as client:
            response = client.put(
                f"/v2/{repository}/manifests/{reference}",
                content=data,
                headers={"Content-Type": doc["mediaType"]},
            )
            assert response.status_code == 201, response.text
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def tags(self, repository: str) -> list[str]:
        with self.http() as client:
            response = client.get(f"/v2/{repository}/tags/list")
            if response.status_code == 404:
                return []
            tags: list[str] = response.json().get("tags") or []
            return sorted(tags)


def _config(
    directory: Path,
    port: int,
    *,
    htpasswd: Path | None,
    tls: tuple[Path, Path] | None,
    client_ca: Path | None = None,
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {directory / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: rl-test-secret",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
        if client_ca is not None:
            lines += ["    clientcas:", f"      - {client_ca}"]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: rl-test", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not listen on {port}: {log.read_text()}")


@contextlib.contextmanager
def running_registry(
    user: User,
    *,
    credentials: tuple[str, str] | None = None,
    tls: bool = False,
    client_certs: bool = False,
) -> Iterator[Registry]:
    """Start a registry; stop it and delete its storage (and any installed CA) afterwards."""
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    directory = Path(tempfile.mkdtemp(prefix="rl-registry-"))
    directory.chmod(0o755)  # the test user reads the CA from here
    port = free_port()
    htpasswd = None
    if credentials is not None:
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(f"{credentials[0]}:{bcrypt_hash(credentials[1])}\n")
    ca = server = client = None
    if tls or client_certs:
        ca, cert, key = make_tls_files(directory)
        server = (cert, key)
    if client_certs:
        client = make_client_cert(directory)
    config = directory / "config.yml"
    client_ca = ca if client_certs else None
    config.write_text(_config(directory, port, htpasswd=htpasswd, tls=server, client_ca=client_ca))
    log = directory / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    registry = Registry(f"127.0.0.1:{port}", directory, process, user, credentials, ca, client)
    try:
        _wait_until_listening(port, process, log)
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for path in registry.installed_ca:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)


def basic_auth_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture(scope="module", name="registry")
def registry_fixture(user: User) -> Iterator[Registry]:
    """A plain-HTTP registry without authentication, shared by a test module."""
    with running_registry(user) as reg:
        yield reg


@pytest.fixture(name="auth_registry")
def auth_registry_fixture(user: User) -> Iterator[Registry]:
    with running_registry(user, credentials=("rluser", "s3cret-pw")) as reg:
        yield reg


@pytest.fixture(name="tls_registry")
def tls_registry_fixture(user: User) -> Iterator[Registry]:
    with running_registry(user, tls=True) as reg:
        yield reg


# --- a small fake registry: bearer tokens and injected faults -----------------------------------
# docker-registry's token auth needs JWTs signed by a certificate chain; a fake registry is
# simpler and also lets a test break downloads on purpose (503, a cut connection, bad bytes).


@dataclass
class FakeRegistry:
    host: str
    username: str
    password: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # "repo:ref"
    # digest -> faults, one per request: "503", "429" (with Retry-After), "cut", "corrupt"
    faults: dict[str, list[str]] = field(default_factory=dict)
    honour_range: bool = True
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)

    def add_image(self, repository: str, tag: str, image: Any) -> None:
        """A tests.images.BuiltImage under `repository:tag`."""
        for built in image.layers:
            self.blobs[built.digest] = built.blob
        self.blobs[image.config_digest] = image.config_bytes
        manifest = (image.manifest_bytes, "application/vnd.oci.image.manifest.v1+json")
        self.manifests[f"{repository}:{tag}"] = manifest
        self.manifests[f"{repository}:{image.manifest_digest}"] = manifest


def _fake_handler(fake: FakeRegistry) -> type:
    import re
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            for key, value in {**(headers or {}), "Content-Type": "application/json"}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            fake.log.append((self.command, self.path, dict(self.headers)))
            if self.path.startswith("/token"):
                return self.token()
            auth = self.headers.get("Authorization", "")
            if auth.removeprefix("Bearer ") not in fake.tokens:
                match = re.match(r"/v2/(.+)/(manifests|blobs)/", self.path)
                scope = f',scope="repository:{match.group(1)}:pull"' if match else ""
                challenge = f'Bearer realm="http://{fake.host}/token",service="fake"{scope}'
                errors = {
                    "errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]
                }
                return self.send_json(401, errors, {"WWW-Authenticate": challenge})
            if self.path == "/v2/":
                return self.send_json(200, {})
            match = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", self.path)
            if match:
                found = fake.manifests.get(f"{match.group(1)}:{match.group(2)}")
                if found is None:
                    unknown = {
                        "errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]
                    }
                    return self.send_json(404, unknown)
                return self.send_body(found[0], found[1], fault=None)
            match = re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", self.path)
            if match and match.group(2) in fake.blobs:
                queue = fake.faults.get(match.group(2)) or []
                fault = queue.pop(0) if queue else None
                return self.send_body(fake.blobs[match.group(2)], "application/octet-stream", fault)
            return self.send_json(404, {"errors": [{"code": "BLOB_UNKNOWN", "message": "unknown"}]})

        def token(self) -> None:
            expected = basic_auth_header(fake.username, fake.password)
            if self.headers.get("Authorization") != expected:
                return self.send_json(401, {"details": "incorrect username or password"})
            token = f"token-{len(fake.tokens)}"
            fake.tokens.add(token)
            self.send_json(200, {"token": token, "expires_in": 300})

        def send_body(self, data: bytes, media_type: str, fault: str | None) -> None:
            if fault in ("503", "429"):
                return self.send_json(int(fault), {"errors": []}, {"Retry-After": "0"})
            if fault == "corrupt":
                data = bytes(len(data))
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            ranged = ranged if fake.honour_range else None
            if ranged:
                start = int(ranged.group(1))
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Type", media_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault == "cut":  # half the body, then the connection drops
                self.wfile.write(data[start : start + (len(data) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data[start:])

    return Handler


@pytest.fixture(name="mtls_registry")
def mtls_registry_fixture(user: User) -> Iterator[Registry]:
    """TLS with client certificates required (certs.d `*.cert`/`*.key`)."""
    with running_registry(user, client_certs=True) as reg:
        yield reg


@pytest.fixture(name="fake_registry")
def fake_registry_fixture() -> Iterator[FakeRegistry]:
    import threading
    from http.server import ThreadingHTTPServer

    fake = FakeRegistry("", "tokenuser", "tokenpass")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _fake_handler(fake))
    fake.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
