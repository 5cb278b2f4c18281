"""`rl commit`: a container's changes become a new image on top of the container's image.

The new layer is the container's upper dir (or, with the vfs driver, the difference between
its copy and the image) as an OCI layer tar, written as root of the user namespace
(rootless.containers.changes). The config is the image's with what the container ran with, as
podman 4.3 does it (checked here): Env is the container's environment without HOME and
HOSTNAME, Cmd/Entrypoint/User/WorkingDir are the run's, labels gain the run's, `--change`
instructions apply last, and one history entry records the commit.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from rootless.errors import RlError

# Added by the runtime for the process, not part of what the container was configured with.
_RUNTIME_ENV = ("HOME", "HOSTNAME")


class CommitRequest(NamedTuple):
    container_ref: str
    image_name: str | None
    changes: tuple[str, ...] = ()
    message: str = ""
    author: str | None = None
    include_volumes: bool = False


def commit_config(
    image_config: Mapping[str, Any],
    run_options: Mapping[str, Any],
    process: Mapping[str, Any],
    *,
    created: str,
    image_name: str,
    changes: Sequence[str] = (),
    message: str = "",
    author: str | None = None,
) -> dict[str, Any]:
    """The new image's config (without rootfs, which the store fills in). Pure.

    `run_options` is the container record's config (the run's options), `process` the
    spec's process section."""
    from rootless.images.changes import apply_changes

    result: dict[str, Any] = copy.deepcopy(dict(image_config))
    result.pop("rootfs", None)
    settings: dict[str, Any] = dict(result.get("config") or {})
    env = [item for item in process.get("env") or () if item.partition("=")[0] not in _RUNTIME_ENV]
    if env:
        settings["Env"] = env
    entrypoint = run_options.get("entrypoint")
    command = list(run_options.get("command") or ())
    if entrypoint is not None:
        settings["Entrypoint"] = list(entrypoint)
        settings["Cmd"] = command
    elif command:
        settings["Cmd"] = command
    for key in ("Entrypoint", "Cmd"):
        if key in settings and not settings[key]:
            del settings[key]
    if run_options.get("user"):
        settings["User"] = run_options["user"]
    if process.get("cwd"):
        settings["WorkingDir"] = process["cwd"]
    labels = dict(settings.get("Labels") or {})
    labels.update(run_options.get("labels") or {})
    if labels:
        settings["Labels"] = labels
    result["config"] = settings
    result["created"] = created
    if author is not None:
        result["author"] = author
    if message:
        result["comment"] = message
    history = list(result.get("history") or [])
    entry: dict[str, Any] = {"created": created, "created_by": "/bin/sh"}
    if result.get("author"):
        entry["author"] = result["author"]
    entry["comment"] = message or f"FROM {image_name}"
    history.append(entry)
    result["history"] = history
    result = apply_changes(result, changes)
    if not result["config"]:
        del result["config"]
    return result


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_layer(root: str, lowers: list[str], is_copy: bool, out: str) -> str:
    """In the user namespace: scan and write the layer tar; returns its diff-id."""
    from rootless.containers import changes

    scan = changes.scan_copy(root, lowers) if is_copy else changes.scan_upper(root, lowers)
    return changes.write_layer(root, scan, out).diff_id


def commit(request: CommitRequest) -> str:
    """Make the image; returns its ID."""
    from rootless.containers.storageview import container_storage
    from rootless.containers.store import ContainerStore
    from rootless.images.store import ImageStore
    from rootless.userns import run_in_userns

    containers = ContainerStore.open()
    try:
        record = containers.get(request.container_ref)
        spec_path = containers.userdata(record.id) / "config.json"
        container_dir = containers.container_dir(record.id)
    finally:
        containers.close()
    import json

    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:
        raise RlError(f"cannot read the container's runtime spec {spec_path}: {exc}") from exc
    images = ImageStore.open()
    try:
        if not record.image_id:
            raise RlError(
                f"container {record.id} runs a --rootfs directory, not an image: nothing to commit "
                "on top of"
            )
        base = images.resolve(record.image_id)
        view = container_storage(container_dir, images, base)
        staging = images.new_staging_dir("commit")
        try:
            layer = staging / "layer.tar"
            run_in_userns(
                functools.partial(
                    _write_layer,
                    os.fspath(view.root),
                    [os.fspath(p) for p in view.lowers],
                    view.is_copy,
                    os.fspath(layer),
                )
            )
            config = commit_config(
                base.config,
                record.config,
                spec.get("process") or {},
                created=now_rfc3339(),
                image_name=record.image_name,
                changes=request.changes,
                message=request.message,
                author=request.author,
            )
            return images.add_layer_image(
                staging, Path(layer), base=base, config=config, name=request.image_name
            )
        finally:
            images.discard_staging_dir(staging)
    finally:
        images.close()
