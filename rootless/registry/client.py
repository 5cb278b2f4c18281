"""The HTTP shell of the registry client: httpx on trio around the sans-IO cores.

One `RegistryClient` talks to one registry host. It finds the scheme (`ping`), runs the auth
dance of `auth.RegistryAuth` on every request, retries 5xx/429 with back-off (honouring
Retry-After), streams blobs to a file while hashing them (resuming with Range when a
download breaks), and uploads blobs monolithically or in chunks. Every failure a user can
meet becomes one RlError that says what to do.

TLS trusts the system CAs plus containers' certs.d directories for the host
(`~/.config/containers/certs.d/HOST:PORT/` then `/etc/containers/certs.d/HOST:PORT/`):
`*.crt` are CAs, `*.cert` + `*.key` a client certificate. An insecure registry
(`--tls-verify=false` or `insecure = true` in registries.conf) is reached over HTTPS without
verification, or plain HTTP when it does not speak TLS; like podman, localhost gets no
exception.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

# isort: off
import rootless.registry.quickimport  # noqa: F401  (first: it makes the next two cheaper)
import httpx
import trio

# isort: on
from rootless.errors import RlError
from rootless.log import logger
from rootless.registry.auth import (
    Credentials,
    FetchToken,
    RegistryAuth,
    Scope,
    UseHeader,
    registry_error_message,
)

MAX_ATTEMPTS = 5  # for 5xx/429 and broken connections
MAX_RETRY_DELAY = 10.0  # seconds; a longer Retry-After is clipped
MAX_AUTH_ROUNDS = 4
READ_CHUNK = 1 << 20
USER_AGENT = "rl (rootless containers)"
USER_CERTS_D = "~/.config/containers/certs.d"
SYSTEM_CERTS_D = Path("/etc/containers/certs.d")
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
log = logger()


# --- pure helpers -----------------------------------------------------------------------------


def api_endpoint(host: str) -> str:
    """Where a registry's API lives: Docker Hub answers at registry-1.docker.io (certs.d,
    credentials and messages keep the name docker.io, as in containers/image)."""
    return "registry-1.docker.io" if host == "docker.io" else host


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 0).

    Retry-After in seconds wins when given (HTTP dates are treated as "soon"); otherwise
    exponential back-off from a quarter second. Both are clipped to MAX_RETRY_DELAY.
    """
    if retry_after is not None:
        text = retry_after.strip()
        if text.isdigit():
            return min(float(text), MAX_RETRY_DELAY)
    return min(0.25 * 2.0**attempt, MAX_RETRY_DELAY)


def certs_dirs(host: str, home: Path) -> list[Path]:
    """Where containers look for `host`'s certificates (`host` includes any `:port`)."""
    return [home / ".config/containers/certs.d" / host, SYSTEM_CERTS_D / host]


def user_certs_hint(host: str) -> str:
    return f"{USER_CERTS_D}/{host}/ca.crt"


def ssl_context(host: str, home: Path, cert_dir: Path | None = None) -> ssl.SSLContext:
    """System CAs plus the certs.d files for `host` (or those in `cert_dir`, --cert-dir)."""
    context = system_trust_context()
    for directory in [cert_dir] if cert_dir is not None else certs_dirs(host, home):
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.suffix == ".crt":
                    context.load_verify_locations(cafile=str(entry))
                elif entry.suffix == ".cert":
                    key = entry.with_suffix(".key")
                    if not key.exists():
                        raise RlError(f"{entry}: client certificate without {key.name} next to it")
                    context.load_cert_chain(str(entry), str(key))
            except ssl.SSLError as exc:
                raise RlError(f"{entry}: unusable certificate ({exc.reason or exc})") from None
    return context


def system_trust_context() -> ssl.SSLContext:
    """A verifying client context that trusts the system's CAs.

    OpenSSL's defaults load its whole CA bundle file up front: Debian's has ~145 CAs, which take
    20-40 ms of every TLS pull here. Where the same CAs are also in a hashed directory
    (`c_rehash` links; Debian's update-ca-certificates writes the bundle and the links
    together), the directory alone is trusted: OpenSSL then reads a CA only when a chain names
    it. A bundle chosen with SSL_CERT_FILE is loaded as asked, and so is the default one when
    the directory has no hash links (Fedora keeps only bundles there).
    """
    paths = ssl.get_default_verify_paths()
    if not os.environ.get(paths.openssl_cafile_env) and _has_hash_links(paths.capath):
        return ssl.create_default_context(capath=paths.capath)
    return ssl.create_default_context()


_HASH_NAME = re.compile(r"[0-9a-fA-F]{8}\.[0-9]+")  # OpenSSL's subject-hash name: 1a2b3c4d.0


def _has_hash_links(directory: str | None) -> bool:
    """Whether `directory` holds OpenSSL's subject-hash names."""
    if not directory:
        return False
    try:
        with os.scandir(directory) as entries:
            return any(_HASH_NAME.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class BlobTarget(NamedTuple):
    """What a downloaded blob must hash to."""

    digest: str
    size: int


# --- errors -----------------------------------------------------------------------------------


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception (through causes, and into trio's groups of connect errors)."""
    seen = exc
    for _ in range(32):
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
        elif seen.__cause__ is not None or seen.__context__ is not None:
            nxt = seen.__cause__ or seen.__context__
            assert nxt is not None
            seen = nxt
        else:
            break
    return seen


def connection_error(host: str, exc: Exception, *, tls: bool) -> RlError:
    """One line for a request that never got an HTTP answer."""
    cause = _root_cause(exc)
    text = str(cause) or str(exc) or type(exc).__name__
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or text
        return RlError(
            f"{host}: TLS certificate verification failed ({reason}); put the registry's CA "
            f"certificate in {user_certs_hint(host)}, or use --tls-verify=false"
        )
    if "CERTIFICATE_REQUIRED" in text.upper() or "BAD_CERTIFICATE" in text.upper():
        return RlError(
            f"{host}: the registry requires a client certificate ({text}); put client.cert "
            f"and client.key in {USER_CERTS_D}/{host}/"
        )
    if isinstance(cause, ssl.SSLError) or "WRONG_VERSION_NUMBER" in text:
        return RlError(
            f"{host}: TLS handshake failed ({cause}): the server may speak plain HTTP; "
            "use --tls-verify=false (or insecure = true in registries.conf) for such a registry"
        )
    lowered = text.lower()
    if (
        "name or service not known" in lowered
        or "nodename nor servname" in lowered
        or ("name resolution" in lowered)
    ):
        return RlError(f"{host}: unknown host: check the registry name and your DNS")
    if "connection refused" in lowered or isinstance(cause, ConnectionRefusedError):
        return RlError(f"{host}: connection refused: is the registry running on that port?")
    if isinstance(exc, httpx.TimeoutException):
        return RlError(f"{host}: the registry did not answer in time ({type(exc).__name__})")
    scheme = "https" if tls else "http"
    return RlError(f"{host}: cannot reach the registry over {scheme}: {text}")


def http_error(what: str, response: httpx.Response, registry: str, body: bytes) -> RlError:
    """One line for an HTTP error answer to `what` (e.g. "reading manifest latest in x/y")."""
    detail = registry_error_message(body)
    status = response.status_code
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        return RlError(f"{what}: not authorized ({status}{suffix}) — try `rl login {registry}`")
    return RlError(f"{what}: the registry answered {status} {response.reason_phrase}{suffix}")


# --- the client -------------------------------------------------------------------------------

BodyFactory = Callable[[], AsyncIterator[bytes] | bytes]


class RegistryClient:
    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        cert_dir: Path | None = None,
        home: Path | None = None,
    ) -> None:
        """`insecure`: plain HTTP and unverified TLS allowed (--tls-verify=false)."""
        self.host = host
        self.insecure = insecure
        self.auth = RegistryAuth(host, credentials)
        home = home or Path(os.environ.get("HOME") or os.path.expanduser("~"))
        verify: ssl.SSLContext | bool = False if insecure else ssl_context(host, home, cert_dir)
        self.endpoint = api_endpoint(host)
        self.base_url = f"https://{self.endpoint}"
        self.http = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(60.0, connect=15.0),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=8),
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    # --- plumbing ---------------------------------------------------------------------------

    async def ping(self) -> None:
        """Find how to talk to the registry: HTTPS, or HTTP when insecure and TLS fails.
        An insecure registry is asked both ways at once (one round trip, not two after a
        failed TLS handshake); HTTPS still wins when both answer."""
        schemes = ("https", "http") if self.insecure else ("https",)
        outcomes: dict[str, RlError | None] = {}

        async def probe(scheme: str) -> None:
            try:
                response = await self.http.get(f"{scheme}://{self.endpoint}/v2/")
            except httpx.HTTPError as exc:
                outcomes[scheme] = connection_error(self.host, exc, tls=scheme == "https")
                return
            outcomes[scheme] = (
                None  # 200, or 401 with the challenge
                if response.status_code < 500
                else RlError(f"{self.host}: the registry answered {response.status_code} to /v2/")
            )

        if len(schemes) == 1:
            await probe(schemes[0])
        else:
            from rootless.registry.pull import first_error  # (trio groups task errors)

            async with first_error(), trio.open_nursery() as nursery:
                for scheme in schemes:
                    nursery.start_soon(probe, scheme)
        for scheme in schemes:
            if outcomes[scheme] is None:
                self.base_url = f"{scheme}://{self.endpoint}"
                return
        error = outcomes[schemes[0]]  # HTTPS's answer, as a failed sequential try gave
        assert error is not None
        raise error

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    async def _authorization(self, action: UseHeader | FetchToken | None) -> str | None:
        if action is None:
            return None
        if isinstance(action, UseHeader):
            return action.authorization
        headers = {"Authorization": action.authorization} if action.authorization else {}
        try:
            if action.form is not None:
                response = await self.http.post(action.url, data=dict(action.form))
            else:
                response = await self.http.get(action.url, headers=headers)
        except httpx.HTTPError as exc:
            raise connection_error(
                action.realm, exc, tls=action.realm.startswith("https")
            ) from None
        if response.status_code != 200:
            raise self.auth.token_failure(response.status_code, response.content)
        return self.auth.on_token(response.content, action, time.time()).authorization

    async def request(
        self,
        method: str,
        path: str,
        scopes: Sequence[Scope],
        *,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """Send with authentication; retry 401 (the auth dance), 5xx/429 and broken
        connections. The response is returned unread when `stream` (the caller closes it)."""
        authorization = await self._authorization(self.auth.before_request(scopes, time.time()))
        auth_rounds = 0
        attempt = 0
        while True:
            sent = dict(headers or {})
            if authorization is not None:  # upload URLs elsewhere get it too, as in podman
                sent["Authorization"] = authorization
            content = body() if body is not None else None
            request = self.http.build_request(method, self.url(path), headers=sent, content=content)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                if retry and attempt + 1 < MAX_ATTEMPTS and not isinstance(exc, httpx.ConnectError):
                    await trio.sleep(retry_delay(attempt, None))
                    attempt += 1
                    continue
                raise connection_error(
                    self.host, exc, tls=self.base_url.startswith("https")
                ) from None
            if response.status_code == 401 and auth_rounds < MAX_AUTH_ROUNDS:
                challenge = response.headers.get_list("www-authenticate")
                await response.aclose()
                auth_rounds += 1
                action = self.auth.on_unauthorized(
                    challenge, scopes, sent_authorization=authorization, now=time.time()
                )
                authorization = await self._authorization(action)
                continue
            if response.status_code in RETRYABLE_STATUS and retry and attempt + 1 < MAX_ATTEMPTS:
                delay = retry_delay(attempt, response.headers.get("retry-after"))
                await response.aclose()
                await trio.sleep(delay)
                attempt += 1
                continue
            if response.status_code < 400:
                self.auth.on_success(scopes)
            if not stream:
                await response.aread()
                await response.aclose()
            return response

    async def _fail(self, what: str, response: httpx.Response) -> RlError:
        body = await response.aread()
        await response.aclose()
        return http_error(what, response, self.host, body)

    # --- manifests --------------------------------------------------------------------------

    async def get_manifest(
        self, repository: str, reference: str, scopes: Sequence[Scope], accept: Sequence[str]
    ) -> tuple[bytes, str, str | None] | None:
        """(body, content type, Docker-Content-Digest) or None when the registry has no such
        manifest (404)."""
        response = await self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scopes,
            headers={"Accept": ", ".join(accept)},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise http_error(
                f"reading manifest {reference} in {self.host}/{repository}",
                response,
                self.host,
                response.content,
            )
        return (
            response.content,
            response.headers.get("content-type", ""),
            response.headers.get("docker-content-digest"),
        )

    async def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str, scopes: Sequence[Scope]
    ) -> str | None:
        response = await self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scopes,
            headers={"Content-Type": media_type},
            body=lambda: data,
        )
        if response.status_code not in (200, 201, 202):
            raise http_error(
                f"writing manifest {reference} to {self.host}/{repository}",
                response,
                self.host,
                response.content,
            )
        digest: str | None = response.headers.get("docker-content-digest")
        return digest

    async def list_tags(self, repository: str, scopes: Sequence[Scope]) -> list[str]:
        """Every tag of a repository, following the registry's `Link: <…>; rel="next"` pages."""
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list"
        while path is not None:
            response = await self.request("GET", path, scopes)
            if response.status_code != 200:
                raise http_error(
                    f"listing the tags of {self.host}/{repository}",
                    response,
                    self.host,
                    response.content,
                )
            try:
                page = response.json().get("tags") or []
            except (ValueError, AttributeError):
                raise RlError(f"{self.host}/{repository}: the tag list is not JSON") from None
            tags += [t for t in page if isinstance(t, str)]
            path = next_link(response.headers.get("link"))
        return tags

    # --- blobs ------------------------------------------------------------------------------

    async def fetch_blob_bytes(
        self, repository: str, target: BlobTarget, scopes: Sequence[Scope], *, limit: int
    ) -> bytes:
        """A small blob (a config) in memory, verified."""
        if target.size > limit:
            raise RlError(f"blob {target.digest} is {target.size} bytes, more than {limit}")
        response = await self.request("GET", f"/v2/{repository}/blobs/{target.digest}", scopes)
        if response.status_code != 200:
            raise http_error(
                f"reading blob {target.digest} from {self.host}/{repository}",
                response,
                self.host,
                response.content,
            )
        data = response.content
        _check_blob(target, len(data), "sha256:" + hashlib.sha256(data).hexdigest())
        return data

    async def fetch_blob(
        self,
        repository: str,
        target: BlobTarget,
        dest: Path,
        scopes: Sequence[Scope],
        *,
        on_progress: Callable[[int], None] | None = None,
        on_data: Callable[[int, bytes], Awaitable[None]] | None = None,
    ) -> None:
        """Stream a blob into `dest`, hashing as it comes; resume with Range after a broken
        connection when the server allows it. `dest` holds exactly the verified blob on
        return, and is removed on failure. `on_progress` hears the bytes received so far.
        `on_data(offset, chunk)` gets every chunk as it is written (e.g. to unpack the blob
        while it downloads); when a server ignores Range the blob starts over at offset 0,
        so it may hear the same offsets again."""
        hasher = hashlib.sha256()
        received = 0
        attempt = 0
        path = f"/v2/{repository}/blobs/{target.digest}"
        what = f"reading blob {target.digest} from {self.host}/{repository}"
        try:
            with open(dest, "wb") as out:
                while True:
                    headers = {"Range": f"bytes={received}-"} if received else {}
                    response = await self.request("GET", path, scopes, headers=headers, stream=True)
                    try:
                        if response.status_code not in (200, 206):
                            raise await self._fail(what, response)
                        if received and not _resumes_at(response, received):
                            # The server ignored Range (or sent another range): start over.
                            out.seek(0)
                            out.truncate()
                            hasher, received = hashlib.sha256(), 0
                            if response.status_code == 206:
                                continue
                        async for chunk in response.aiter_raw():
                            out.write(chunk)
                            hasher.update(chunk)
                            if on_data is not None:
                                await on_data(received, chunk)
                            received += len(chunk)
                            if on_progress is not None:
                                on_progress(received)
                            if received > target.size:
                                raise RlError(
                                    f"{what}: more data than the {target.size} bytes the "
                                    "manifest declares"
                                )
                        break
                    except (httpx.TransportError, httpx.StreamError) as exc:
                        attempt += 1
                        if attempt >= MAX_ATTEMPTS:
                            raise connection_error(self.host, exc, tls=True) from None
                        await trio.sleep(retry_delay(attempt - 1, None))
                    finally:
                        await response.aclose()
            _check_blob(target, received, "sha256:" + hasher.hexdigest())
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    async def blob_exists(self, repository: str, digest: str, scopes: Sequence[Scope]) -> bool:
        response = await self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes)
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise http_error(
            f"checking blob {digest} in {self.host}/{repository}", response, self.host, b""
        )

    async def mount_blob(
        self, repository: str, digest: str, source: str, scopes: Sequence[Scope]
    ) -> bool:
        """Cross-repository mount (no data sent); False when the registry declines."""
        response = await self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}",
            scopes,
            body=lambda: b"",
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202:  # declined: it opened an upload we don't use
            location = response.headers.get("location")
            if location:
                await self.request("DELETE", self._upload_url(location), scopes, retry=False)
            return False
        return False

    def _upload_url(self, location: str) -> str:
        if location.startswith("/"):
            return self.base_url + location
        return location

    async def upload_blob(
        self,
        repository: str,
        source: Path,
        target: BlobTarget,
        scopes: Sequence[Scope],
        *,
        chunk_size: int = 0,
    ) -> None:
        """Upload a local blob: one PUT, or PATCH chunks of `chunk_size` then a closing PUT."""
        what = f"uploading blob {target.digest} to {self.host}/{repository}"
        response = await self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", scopes, body=lambda: b""
        )
        if response.status_code != 202 or "location" not in response.headers:
            raise http_error(what, response, self.host, response.content)
        location = self._upload_url(response.headers["location"])
        if chunk_size and target.size > chunk_size:
            offset = 0
            chunks = upload_chunks(target.size, chunk_size)
            log.debug("uploading %s in %d chunks", target.digest, len(chunks))
            for start, end in chunks:
                response = await self.request(
                    "PATCH",
                    location,
                    scopes,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{start}-{end - 1}",
                        "Content-Length": str(end - start),
                    },
                    body=_file_body(source, start, end - start),
                    retry=False,
                )
                if response.status_code != 202:
                    raise http_error(what, response, self.host, response.content)
                location = self._upload_url(response.headers.get("location", location))
                offset = end
            assert offset == target.size
            put_body: BodyFactory = lambda: b""  # noqa: E731
            put_headers = {"Content-Length": "0"}
        else:
            put_body = _file_body(source, 0, target.size)
            put_headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(target.size),
            }
        separator = "&" if "?" in location else "?"
        response = await self.request(
            "PUT",
            f"{location}{separator}digest={target.digest}",
            scopes,
            headers=put_headers,
            body=put_body,
            retry=False,
        )
        if response.status_code not in (201, 204):
            raise http_error(what, response, self.host, response.content)


def next_link(header: str | None) -> str | None:
    """The target of a `Link: </v2/x/tags/list?last=a&n=50>; rel="next"` header, if any."""
    for part in (header or "").split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if 'rel="next"' in params.replace(" ", "") and target.startswith("<"):
            return target.strip("<>")
    return None


def upload_chunks(size: int, chunk_size: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering `size` bytes in pieces of at most `chunk_size`."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    return [(start, min(start + chunk_size, size)) for start in range(0, size, chunk_size)]


def _file_body(path: Path, offset: int, length: int) -> BodyFactory:
    """A fresh async reader of `length` bytes at `offset` per call (retries resend)."""

    async def chunks() -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            f.seek(offset)
            left = length
            while left > 0:
                data = f.read(min(READ_CHUNK, left))
                if not data:
                    raise RlError(f"{path}: the file shrank while it was being uploaded")
                left -= len(data)
                yield data
                await trio.lowlevel.checkpoint()

    return chunks


def _resumes_at(response: httpx.Response, offset: int) -> bool:
    """Is this a 206 whose Content-Range starts at `offset`?"""
    if response.status_code != 206:
        return False
    content_range: str = response.headers.get("content-range", "")
    unit, _, rest = content_range.partition(" ")
    return unit == "bytes" and rest.partition("-")[0] == str(offset)


def _check_blob(target: BlobTarget, size: int, digest: str) -> None:
    if size != target.size:
        raise RlError(
            f"blob {target.digest}: received {size} bytes, the manifest declares {target.size}"
        )
    if digest != target.digest:
        raise RlError(f"blob {target.digest}: digest mismatch, received content hashes to {digest}")
