"""--restart policies (podman's and docker's names) as pure decisions."""

from __future__ import annotations

from typing import NamedTuple

from rootless.errors import RlError

POLICIES = ("no", "on-failure", "always", "unless-stopped")
# Docker's back-off: 100 ms doubling per restart, at most a minute. (podman restarts at once;
# the issue asks for back-off, and a crash loop should not eat a core.)
FIRST_DELAY = 0.1
MAX_DELAY = 60.0


class RestartPolicy(NamedTuple):
    name: str = "no"
    max_retries: int = 0  # on-failure:N; 0 means no limit

    def __str__(self) -> str:
        if self.name == "on-failure" and self.max_retries:
            return f"on-failure:{self.max_retries}"
        return self.name


def parse_restart(text: str) -> RestartPolicy:
    """`no`, `on-failure[:N]`, `always`, `unless-stopped` (empty means no)."""
    name, sep, count = (text or "no").partition(":")
    if name not in POLICIES:
        raise RlError(
            f'invalid restart policy "{text}": use no, on-failure[:max-retries], always or '
            "unless-stopped"
        )
    if not sep:
        return RestartPolicy(name)
    if name != "on-failure":
        raise RlError(f"restart policy {name} does not take a retry count: use on-failure:N")
    if not count.isdigit():
        raise RlError(f'invalid retry count "{count}" in restart policy: use a number, e.g. 3')
    return RestartPolicy(name, int(count))


def should_restart(
    policy: RestartPolicy, exit_code: int | None, restart_count: int, stopped_by_user: bool
) -> bool:
    """After the container exited with `exit_code` (None: unknown) and has been restarted
    `restart_count` times: start it again? Never after `rl stop` (or kill by the user)."""
    if stopped_by_user or policy.name == "no":
        return False
    if policy.name == "on-failure":
        if exit_code == 0:
            return False
        return not policy.max_retries or restart_count < policy.max_retries
    return True  # always, unless-stopped


def restart_delay(restart_count: int) -> float:
    return min(FIRST_DELAY * 2.0**restart_count, MAX_DELAY)
