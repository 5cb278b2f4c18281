"""`rl pull`: registry -> image store.

The order of work: resolve the name (short names through registries.conf), choose where to
pull from (mirrors, then the registry), fetch the manifest (and from an index the one for the
wanted platform), then the config, then the layers the store lacks, at most
`CONCURRENT_LAYERS` at a time (the largest first), into a private staging directory under the
store's `tmp/`. Every blob is verified (size and sha256) as it is written there. A layer the
store has not unpacked is unpacked while it downloads: each chunk also goes through a pipe to a
worker in the user namespace (`NamespaceWorkers`, one namespace for the whole pull), which
decompresses, checks the diff-id and unpacks into the staging directory; it counts only when
both the blob and the diff-id check out. Then the store commits the image in one step, in the
same namespace. Any failure leaves the store as it was.

Where the time goes (issue 5): this process's imports (trio, httpx) are most of a small pull,
and nothing can use the network before them. So what else it can, runs on the other core: the
namespace helper forks before those imports, imports the unpacking and store code itself,
opens the store (`StoreView`) and forks the commit's worker ahead of time; this process never
loads tarfile, sqlite3 or the archive code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from rootless.errors import RlError
from rootless.registry.auth import Credentials, repository_scope
from rootless.registry.manifests import (
    ACCEPT,
    Descriptor,
    ImageIndex,
    Manifest,
    Platform,
    parse_manifest,
    select_platform,
    verify_digest,
)
from rootless.registry.reference import Reference
from rootless.registry.shortnames import is_insecure_registry

if TYPE_CHECKING:
    from rootless.images.unpacked import Unpacked
    from rootless.images.workers import NamespaceWorkers
    from rootless.registry.auth import Scope
    from rootless.registry.client import BlobTarget, RegistryClient
    from rootless.registry.progress import Board
    from rootless.registry.shortnames import RegistriesConfig, Resolution

CONCURRENT_LAYERS = 4
PIPE_SIZE = 1 << 20  # the most an unprivileged process may ask for (fs.pipe-max-size)
CONFIG_SIZE_LIMIT = 8 << 20


# --- pure planning --------------------------------------------------------------------------


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class LayerPlan(NamedTuple):
    descriptor: Descriptor
    diff_id: str
    fetch: bool  # False: the store already has the blob (or an earlier layer fetches it)


def short_digest(digest: str, length: int = 12) -> str:
    """What podman prints: `Copying blob 3f4d90098f5b`, `Copying config 9c7a54a9a4`."""
    return digest.partition(":")[2][:length]


def config_diff_ids(config: Any, source: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise RlError(f"{source}: the image config has no rootfs.diff_ids list")
    return list(diff_ids)


def plan_layers(
    manifest: Manifest,
    diff_ids: list[str],
    have_blobs: set[str],
    *,
    source: str,
    zstd_available: bool,
) -> list[LayerPlan]:
    """Which layer blobs to download: those the store lacks, each once even when the manifest
    lists it twice. A layer the store has unpacked under the same diff-id but from another blob
    (the same content compressed differently) is still downloaded, so that `rl save` and
    `rl push` find every blob of the image; the store does not unpack it again."""
    if not manifest.is_container_image:
        raise RlError(
            f"{source}: not a container image (config media type "
            f"{manifest.config.media_type!r}); rl pulls images only"
        )
    if len(diff_ids) != len(manifest.layers):
        raise RlError(
            f"{source}: the manifest lists {len(manifest.layers)} layers but the config "
            f"{len(diff_ids)} diff-ids"
        )
    plans: list[LayerPlan] = []
    planned: set[str] = set()
    for descriptor, diff_id in zip(manifest.layers, diff_ids, strict=True):
        if descriptor.compression == "zstd" and not zstd_available:
            raise RlError(
                f"{source}: layer {descriptor.digest} is zstd-compressed and the Python "
                "module `zstandard` is not installed (pip install zstandard)"
            )
        if not descriptor.digest.startswith("sha256:"):
            raise RlError(f"{source}: layer digest {descriptor.digest} is not sha256")
        present = descriptor.digest in have_blobs or descriptor.digest in planned
        plans.append(LayerPlan(descriptor, diff_id, fetch=not present))
        planned.add(descriptor.digest)
    return plans


def image_name(ref: Reference) -> str:
    """The name the pulled image gets: `host/repo:tag`, or `host/repo@digest` by digest."""
    if ref.digest is not None:
        return f"{ref.name}@{ref.digest}"
    return str(ref.with_default_tag())


def zstd_available() -> bool:
    return importlib.util.find_spec("zstandard") is not None


# --- options and output -----------------------------------------------------------------------


class PullOptions(NamedTuple):
    platform: Platform | None = None
    verify_tls: bool | None = None  # None: registries.conf decides
    authfile: str | None = None
    credentials: Credentials | None = None
    quiet: bool = False
    cert_dir: Path | None = None


def _stderr_raw(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _terminal_width(stream: TextIO | None = None) -> int:
    import os
    import shutil

    try:
        return os.get_terminal_size((stream or sys.stderr).fileno()).columns
    except (OSError, ValueError):
        return shutil.get_terminal_size().columns


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr)


class Progress:
    """podman's progress lines on stderr (nothing with -q). On a pipe podman names each blob
    by its full digest as the copy starts; on a terminal each blob gets a progress bar (size,
    speed, ETA; `bars`) that ends as `Copying blob 3f4d90098f5b done`. (A plain class, like
    the two below: a dataclass would cost ~1 ms to create at import.)"""

    def __init__(
        self,
        quiet: bool = False,
        tty: bool | None = None,  # None: whether stderr is a terminal
        write: Callable[[str], None] = _stderr_line,
        bars: bool = False,  # draw bars with `raw_write` (a terminal's stderr)
        raw_write: Callable[[str], None] = _stderr_raw,
        board: Board | None = None,
    ) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.write = write
        self.bars = bars
        self.raw_write = raw_write
        self.board = board

    @classmethod
    def for_stderr(cls, quiet: bool) -> Progress:
        tty = sys.stderr.isatty()
        return cls(quiet, tty, bars=tty and not quiet)

    def line(self, text: str) -> None:
        self.close_bars()  # lines after the bars go below them
        if not self.quiet:
            self.write(text)

    def close_bars(self) -> None:
        """End the bars (a failed pull's error message then starts on a line of its own)."""
        if self.board is not None:
            self.board.close()
            self.board = None

    def start_blob(self, digest: str, size: int) -> Callable[[int], None] | None:
        """A bar for a blob download; returns what to call with the bytes received so far."""
        if not self.bars:
            return None
        if self.board is None:
            from rootless.registry.progress import Board

            self.board = Board(self.raw_write, _terminal_width)
        board = self.board
        board.add(digest, f"Copying blob {short_digest(digest)}", size)
        return lambda done: board.update(digest, done)

    def copying(self, kind: str, digest: str, *, skipped: bool = False) -> None:
        """`kind` is "blob" or "config"."""
        if not self.tty:
            self.line(f"Copying {kind} {digest}")
            return
        short = short_digest(digest, 12 if kind == "blob" else 10)
        text = f"Copying {kind} {short} {'skipped: already exists' if skipped else 'done'}"
        if kind == "blob" and self.bars and not self.quiet:
            if self.board is None:
                from rootless.registry.progress import Board

                self.board = Board(self.raw_write, _terminal_width)
            self.board.finish(digest, text)
            return
        self.line(text)

    def done(self) -> None:
        self.line("Writing manifest to image destination")
        self.line("Storing signatures")


class Fetched(NamedTuple):
    """What the async part hands the store: all blobs staged and verified."""

    name: str
    manifest_bytes: bytes
    manifest_type: str
    config_bytes: bytes
    layers: list[LayerPlan]
    staged: dict[str, Path]  # blob digest -> staged file


# --- the I/O shell ----------------------------------------------------------------------------


def pull(text: str, options: PullOptions) -> str:
    """Pull `text` into the store; returns the image ID."""
    from rootless import paths
    from rootless.registry.reference import parse
    from rootless.registry.shortnames import load_registries_config, resolve_short_name

    progress = Progress.for_stderr(options.quiet)
    config = load_registries_config()
    resolution = resolve_short_name(parse(text), config, tty=prompt_available())
    if resolution.rationale == "alias":
        progress.line(f'Resolved "{resolution.short_name}" as an alias ({resolution.origin})')
    candidates = _chosen(resolution)
    root = paths.data_dir()
    try:
        errors: list[RlError] = []
        for candidate in candidates:
            try:
                image_id = _pull_candidate(root, candidate, config, options, progress)
            except StoreUnavailable:
                raise  # (no other candidate can do better)
            except RlError as exc:
                errors.append(exc)
                continue
            if resolution.needs_prompt:
                _remember_choice(resolution.short_name, candidate)
            return image_id
        if len(errors) == 1:
            raise errors[0]
        raise RlError("; ".join(e.message for e in errors))
    finally:
        progress.close_bars()


def pull_all_tags(text: str, options: PullOptions) -> list[str]:
    """`rl pull --all-tags REPO`: every tag of the repository; returns the image IDs."""
    import rootless.registry.quickimport  # noqa: F401  # isort: skip  (before trio)
    import trio

    from rootless.registry.authfile import lookup_credentials
    from rootless.registry.client import RegistryClient
    from rootless.registry.reference import parse
    from rootless.registry.shortnames import load_registries_config

    ref = parse(text)
    if ref.tag is not None or ref.digest is not None:
        raise RlError("tag can't be used with --all-tags/-a")
    config = load_registries_config()
    [qualified, *_] = resolve_candidates(ref, config)
    repository = qualified._replace(tag=None, digest=None)
    insecure = (
        is_insecure_registry(repository.domain, config)
        if options.verify_tls is None
        else not options.verify_tls
    )

    async def list_tags() -> list[str]:
        credentials = options.credentials or lookup_credentials(repository.name, options.authfile)
        async with RegistryClient(
            repository.domain, credentials=credentials, insecure=insecure, cert_dir=options.cert_dir
        ) as client:
            await client.ping()
            return await client.list_tags(repository.path, [repository_scope(repository.path)])

    tags = trio.run(list_tags)
    if not tags:
        raise RlError(f"{repository}: the repository has no tags")
    return [pull(str(repository.with_tag(tag)), options) for tag in tags]


def prompt_available() -> bool:
    from rootless.registry.prompt import interactive

    return interactive()


def resolve_candidates(ref: Reference, config: RegistriesConfig) -> tuple[Reference, ...]:
    """The references to try for `ref`, in order; on a terminal, an ambiguous short name in
    enforcing mode is put to the user (podman's prompt)."""
    from rootless.registry.shortnames import resolve_short_name

    return _chosen(resolve_short_name(ref, config, tty=prompt_available()))


def _chosen(resolution: Resolution) -> tuple[Reference, ...]:
    if not resolution.needs_prompt:
        return resolution.candidates
    from rootless.registry.prompt import ask

    shown = [str(candidate) for candidate in resolution.candidates]
    choice = ask(shown)
    if choice is None:
        raise RlError(f'short-name resolution: no image selected for "{resolution.short_name}"')
    return (resolution.candidates[shown.index(choice)],)


def _remember_choice(short_name: str, target: Reference) -> None:
    """Record the user's answer in the alias cache, as podman does after a successful pull."""
    import os

    from rootless.registry.shortnames import alias_cache_path, record_alias

    home = Path(os.environ.get("HOME") or os.path.expanduser("~"))
    path = alias_cache_path(os.environ, home, os.getuid())
    try:
        old = path.read_text() if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(record_alias(old, short_name, target))
        partial.replace(path)
    except (OSError, ValueError) as exc:
        from rootless.log import logger

        logger().warning("cannot record the alias %s in %s: %s", short_name, path, exc)


class StoreUnavailable(RlError):
    """The image store cannot be opened (or a staging directory made in it)."""


class StoreView(NamedTuple):
    """What a pull needs to know of the image store, read by a worker as the pull starts
    (`rootless.images.store.prepare_pull`): a pull only adds, and the commit copes with
    whatever another rl added meanwhile."""

    root: Path
    staging_dir: Path  # private to this pull, under the store's tmp/
    image_ids: frozenset[str]
    unpacked: frozenset[str]  # diff-ids of the layers the store has unpacked

    def has_image(self, config_digest: str) -> bool:
        return config_digest.removeprefix("sha256:") in self.image_ids

    def blob_digests(self, digests: list[str]) -> set[str]:
        """Those of `digests` whose blob the store holds."""
        blobs = self.root / "blobs" / "sha256"
        return {d for d in digests if (blobs / d.removeprefix("sha256:")).is_file()}

    def unpacked_diff_ids(self, diff_ids: set[str]) -> set[str]:
        return diff_ids & self.unpacked


def _open_store(root: Path, workers: NamespaceWorkers, job: int) -> StoreView:
    """The outcome of the `prepare_pull` job read from `job` (its result fd, closed here)."""
    from rootless.images.workers import outcome
    from rootless.outcome import read_all

    try:
        workers.ready()  # (a namespace that failed is the error, not the job's lost outcome)
        data = read_all(job)
    finally:
        os.close(job)
    try:
        staging_dir, image_ids, diff_ids = outcome(data)
    except RlError as exc:
        raise StoreUnavailable(exc.message) from None
    return StoreView(root, staging_dir, frozenset(image_ids), frozenset(diff_ids))


def _pull_candidate(
    root: Path,
    ref: Reference,
    config: RegistriesConfig,
    options: PullOptions,
    progress: Progress,
) -> str:
    # dataclasses and logging: needed on both sides of the fork below (trio and httpx import
    # them here, the unpacking code in the helper): imported once, now (~10 ms of CPU).
    import dataclasses  # noqa: F401
    import logging  # noqa: F401

    from rootless.images.workers import PULL_JOB_MODULES, NamespaceWorkers
    from rootless.registry.shortnames import registry_for

    progress.line(f"Trying to pull {ref}...")
    # The helper forks now, before the network stack is imported: it and its workers stay
    # small and quick to fork. It shares what this process has imported so far (json,
    # hashlib, pathlib, ...), and imports the rest of what its jobs need itself, on the other
    # core, while this process imports trio.
    workers = NamespaceWorkers(preload=PULL_JOB_MODULES)
    store: StoreView | None = None
    commit: _Commit | None = None
    try:
        # The helper opens the store while this process imports the network stack.
        job = workers.submit("rootless.images.store:prepare_pull", root, os.getpid(), early=True)
        import rootless.registry.quickimport  # noqa: F401  # isort: skip  (before trio)
        import trio

        # newuidmap/newgidmap wrote the helper's id maps during those imports; a failure there
        # is reported before any network error (_open_store waits for them first).
        store = _open_store(root, workers, job)
        commit = _Commit(workers, root, store.staging_dir)
        unpacked: dict[str, Unpacked] = {}  # by diff-id, in staging (kept across mirrors)
        failures: list[RlError] = []
        for source in registry_for(ref, config).pull_sources():  # mirrors first
            insecure = source.insecure if options.verify_tls is None else not options.verify_tls
            try:
                fetched = trio.run(
                    _fetch,
                    store,
                    source.reference,
                    image_name(ref),
                    options,
                    insecure,
                    Staging(store.staging_dir, workers, unpacked),
                    progress,
                )
                break
            except RlError as exc:
                failures.append(exc)
        else:
            raise failures[-1]  # the registry's own answer, after any mirrors
        progress.done()
        image_id = commit.run(
            fetched.name,
            fetched.manifest_bytes,
            fetched.manifest_type,
            fetched.config_bytes,
            [
                (
                    p.descriptor.digest,
                    p.diff_id,
                    p.descriptor.media_type,
                    fetched.staged.get(p.descriptor.digest),
                )
                for p in fetched.layers
            ],
            # (a mirror that failed may have brought layers of another manifest)
            {p.diff_id: unpacked[p.diff_id] for p in fetched.layers if p.diff_id in unpacked},
        )
        return image_id
    finally:
        if commit is not None:
            commit.cancel()  # (it has run, or the pull failed: nothing to commit)
        workers.close()  # waits for every worker: nothing writes to staging any more
        if store is not None and store.staging_dir.exists():  # (the commit consumes it)
            from rootless.images.store import discard_staging_dir

            discard_staging_dir(store.staging_dir)


class _Commit:
    """The store's commit of a pull, in a worker forked as the download starts (on the other
    core, while this one waits for the registry): when the pull has what to commit, the
    worker is there to do it."""

    def __init__(self, workers: NamespaceWorkers, root: Path, staging_dir: Path) -> None:
        read_end, self._told = os.pipe2(os.O_CLOEXEC)
        try:
            self._result = workers.submit(
                "rootless.images.store:commit_pulled_when_told", root, staging_dir, fds=[read_end]
            )
        except BaseException:
            os.close(self._told)
            raise
        finally:
            os.close(read_end)

    def run(self, *args: object) -> str:
        """Commit (the arguments of store.commit_pulled after the staging directory); returns
        the image ID."""
        import pickle

        from rootless.images.workers import outcome
        from rootless.outcome import read_all, write_all

        told, self._told = self._told, -1
        try:
            write_all(told, pickle.dumps(args))
        except BrokenPipeError:
            pass  # the worker is gone: its outcome says why
        finally:
            os.close(told)
        result, self._result = self._result, -1
        try:
            image_id: str = outcome(read_all(result))
        finally:
            os.close(result)
        return image_id

    def cancel(self) -> None:
        """Let the worker go without committing (when `run` has not)."""
        for fd in (self._told, self._result):
            if fd >= 0:
                os.close(fd)
        self._told = self._result = -1


class Staging(NamedTuple):
    """Where a pull puts what it fetched, and who unpacks it (`unpacked` is filled in)."""

    directory: Path
    workers: NamespaceWorkers
    unpacked: dict[str, Unpacked]  # diff-id -> a layer unpacked in `directory`, verified


async def _fetch(
    store: StoreView,
    ref: Reference,
    name: str,
    options: PullOptions,
    insecure: bool,
    staging: Staging,
    progress: Progress,
) -> Fetched:
    import trio

    from rootless.registry.authfile import lookup_credentials
    from rootless.registry.client import BlobTarget, RegistryClient

    credentials = options.credentials or lookup_credentials(ref.name, options.authfile)
    scopes = [repository_scope(ref.path, "pull")]
    shown = str(ref)
    async with RegistryClient(
        ref.domain, credentials=credentials, insecure=insecure, cert_dir=options.cert_dir
    ) as client:
        await client.ping()
        wanted = ref.digest or ref.tag or "latest"
        got = await client.get_manifest(ref.path, wanted, scopes, ACCEPT)
        if got is None:
            raise RlError(
                f"{shown}: reading manifest {wanted} in {ref.domain}/{ref.path}: "
                "manifest unknown (no such image or tag in the registry)"
            )
        body, content_type, served_digest = got
        _check_manifest_digest(body, ref.digest or served_digest, shown)
        parsed = parse_manifest(body, content_type, source=shown)
        if isinstance(parsed, ImageIndex):
            choice = select_platform(parsed, options.platform)
            got = await client.get_manifest(ref.path, choice.digest, scopes, ACCEPT)
            if got is None:
                raise RlError(
                    f"{shown}: the manifest for {choice.platform} ({choice.digest}) is missing "
                    "from the registry"
                )
            body, content_type, _ = got
            verify_digest(body, choice.digest, what=f"{shown} manifest for {choice.platform}")
            parsed = parse_manifest(body, content_type, source=shown)
            if isinstance(parsed, ImageIndex):
                raise RlError(f"{shown}: an index inside an index is not supported")
        manifest: Manifest = parsed
        progress.line("Getting image source signatures")
        config_bytes = await client.fetch_blob_bytes(
            ref.path,
            BlobTarget(manifest.config.digest, manifest.config.size),
            scopes,
            limit=CONFIG_SIZE_LIMIT,
        )
        try:
            config = json.loads(config_bytes)
        except ValueError as exc:
            raise RlError(f"{shown}: the image config is not JSON: {exc}") from None
        layer_digests = [d.digest for d in manifest.layers]
        # The same image (by config digest) may be in the store already, loaded from an
        # archive with its layers compressed differently: then it needs no blob at all.
        have = (
            set(layer_digests)
            if store.has_image(manifest.config.digest)
            else store.blob_digests(layer_digests)
        )
        plans = plan_layers(
            manifest,
            config_diff_ids(config, shown),
            have,
            source=shown,
            zstd_available=zstd_available(),
        )
        staged: dict[str, Path] = {}
        limiter = trio.CapacityLimiter(CONCURRENT_LAYERS)
        # Layers to unpack on the way in: those neither the store nor an earlier attempt (from
        # a mirror) has unpacked, each once.
        diff_ids = {p.diff_id for p in plans}
        unpack = diff_ids - store.unpacked_diff_ids(diff_ids) - staging.unpacked.keys()

        async def download(plan: LayerPlan, number: int) -> None:
            async with limiter:
                digest = plan.descriptor.digest
                dest = staging.directory / f"blob-{short_digest(digest, 64)}"
                target = BlobTarget(digest, plan.descriptor.size)
                on_progress = progress.start_blob(digest, plan.descriptor.size)
                if plan.diff_id in unpack:
                    unpack.discard(plan.diff_id)
                    label = f"{number} ({digest}) of {name}"
                    staging.unpacked[plan.diff_id] = await _fetch_and_unpack(
                        client,
                        ref.path,
                        target,
                        dest,
                        scopes,
                        on_progress,
                        staging,
                        plan,
                        label,
                    )
                else:
                    await client.fetch_blob(ref.path, target, dest, scopes, on_progress=on_progress)
                staged[digest] = dest
                progress.copying("blob", digest)

        numbered = sorted(
            ((plan, number) for number, plan in enumerate(plans, 1) if plan.fetch),
            key=lambda item: -item[0].descriptor.size,  # the longest work first
        )
        for plan in plans:
            if not plan.fetch:
                progress.copying("blob", plan.descriptor.digest, skipped=True)
        async with first_error(), trio.open_nursery() as nursery:
            for plan, number in numbered:
                nursery.start_soon(download, plan, number)
        progress.copying("config", manifest.config.digest)
        return Fetched(name, body, manifest.media_type, config_bytes, plans, staged)


async def _fetch_and_unpack(
    client: RegistryClient,
    repository: str,
    target: BlobTarget,
    dest: Path,
    scopes: list[Scope],
    on_progress: Callable[[int], None] | None,
    staging: Staging,
    plan: LayerPlan,
    layer_ref: str,
) -> Unpacked:
    """Download a blob into `dest` and, through a pipe, into a worker that unpacks it into the
    staging directory. The download's error wins (a corrupt blob is reported as such); then the
    worker's (a bad diff-id, a refused entry)."""
    import fcntl
    import os

    import trio

    from rootless.images.unpacked import layer_dir
    from rootless.images.workers import outcome

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a bigger pipe means fewer wake-ups
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    try:
        result_fd = staging.workers.submit(
            "rootless.images.unpack:unpack_fd",  # by name: this process never loads tarfile
            layer_dir(staging.directory, plan.diff_id),
            plan.diff_id,
            layer_ref,
            fds=[read_end],
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    pipe = trio.lowlevel.FdStream(write_end)
    fed = 0  # bytes the worker has been given
    worker_alive = True

    async def feed(offset: int, chunk: bytes) -> None:
        nonlocal fed, worker_alive
        # A download that starts over repeats what the worker already has: it gets the rest.
        # (What it unpacks is checked against the diff-id, whichever response it came from.)
        if not worker_alive or offset + len(chunk) <= fed:
            return
        piece = chunk[fed - offset :] if offset < fed else chunk
        try:
            await pipe.send_all(piece)
        except trio.BrokenResourceError:
            worker_alive = False  # it stopped early: its outcome says why
        fed += len(piece)

    try:
        try:
            await client.fetch_blob(
                repository, target, dest, scopes, on_progress=on_progress, on_data=feed
            )
        finally:
            with trio.CancelScope(shield=True):
                await pipe.aclose()  # the end of the stream: the worker finishes or gives up
    finally:
        with trio.CancelScope(shield=True):  # its directory must be settled before we go on
            result = await _read_all(result_fd)
    unpacked: Unpacked = outcome(result)
    return unpacked


async def _read_all(fd: int) -> bytes:
    import trio

    chunks: list[bytes] = []
    async with trio.lowlevel.FdStream(fd) as stream:
        while chunk := await stream.receive_some():
            chunks.append(chunk)
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def first_error() -> AsyncIterator[None]:
    """A nursery's failure as the one RlError behind it (trio groups task errors)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        for leaf in leaves:
            if isinstance(leaf, RlError):
                raise leaf from None
        raise leaves[0] from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _check_manifest_digest(body: bytes, expected: str | None, shown: str) -> None:
    """By digest the manifest must hash to it; by tag to what the registry says it is."""
    if expected is None:
        return
    if expected.partition(":")[0] not in ("sha256", "sha384", "sha512"):
        return
    verify_digest(body, expected, what=f"{shown} manifest")
