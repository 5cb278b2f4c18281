"""`--init`: a pid 1 that forwards signals to the command and reaps orphans (podman's catatonit).

The image has no Python and rl does not ship a binary, so the container's pid 1 (rl's own
process B, already in memory with everything imported before pivot_root) plays catatonit: it
forks the command, stays pid 1 under the name `rl-init` (PR_SET_NAME), forwards every signal it
receives to the command, reaps every child, and exits with the command's code (128+N when a
signal N killed it). It already runs with the container's user, capabilities and seccomp filter,
as catatonit would.
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

from rootless import syscalls as sc

INIT_NAME = "rl-init"
# Job-control stops make no sense for pid 1; SIGCHLD is ours; KILL/STOP cannot be caught.
_NOT_FORWARDED = {
    signal.SIGCHLD,
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
}


def forwarded_signals() -> list[int]:
    return [
        int(s) for s in signal.valid_signals() if s not in _NOT_FORWARDED and s < signal.SIGRTMIN
    ]


def exit_code(wait_status: int) -> int:
    """The code podman reports for a wait status: the exit code, or 128+N after signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def run_init(child: int) -> NoReturn:
    """Be pid 1 until `child` ends. Call with all signals blocked (since before the fork)."""
    try:
        sc.set_process_name(INIT_NAME)
    except OSError:
        pass

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass

    for sig in forwarded_signals():
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os._exit(exit_code(status))
