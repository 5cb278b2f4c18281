"""The log of a foreground `rl run`: the same k8s-file, at the same path, as the monitor of a
detached container writes (podman's conmon logs every container, attached or not).

Which log a container keeps follows from its record's config (`--log-driver`, `--log-opt`);
the copying itself is rootless.runtime.tee (pipes) and rootless.runtime.terminal (-t).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.monitor.logwriter import LogWriter


def log_settings(config: Mapping[str, Any], userdata: str) -> tuple[str, int | None] | None:
    """(path, max size in bytes or None) of the k8s-file log `config` asks for; None when the
    container keeps no log (`--log-driver none` or `passthrough`: its stdio is rl's own).
    Detached containers (rootless.monitor.main) use the same rules."""
    driver = config.get("log_driver") or "k8s-file"
    if driver != "k8s-file":
        return None
    opts = config.get("log_opts") or {}
    path = opts.get("path") or os.path.join(userdata, "ctr.log")
    max_size = None
    if opts.get("max-size"):
        from rootless.runtime.options import parse_human_size

        max_size = parse_human_size(opts["max-size"], "--log-opt max-size")
    return str(path), max_size


def open_log(config: Mapping[str, Any], userdata: str) -> LogWriter | None:
    """The container's log, opened for appending; None without one. RlError when it cannot
    be opened (as a detached start fails)."""
    settings = log_settings(config, userdata)
    if settings is None:
        return None
    from rootless.monitor.logwriter import LogWriter

    log = LogWriter(*settings)
    if log.last_error is not None:
        from rootless.errors import RlError

        raise RlError(f"cannot open the container's log file {settings[0]}: {log.last_error}")
    return log
