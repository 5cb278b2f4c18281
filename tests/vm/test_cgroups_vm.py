"""Resource limits enforced for real: rl in a cgroup v2 + systemd guest (see conftest.py).

Each test runs one shell script as the guest's unprivileged user (`rl` is a shell function for
the installed rl); rl moves itself into a delegated systemd scope, makes the container's cgroup
and writes the limits. Values are checked in the container's cgroup as the container sees it
(its own cgroup namespace: /sys/fs/cgroup is its cgroup) and from the host side.
"""

from __future__ import annotations

import re

import pytest

from tests.vm.conftest import IMAGE, RL
from tests.vm.qemu import Guest, GuestResult

pytestmark = [pytest.mark.slow]

PRELUDE = f'RLBIN={RL}\nrl() {{ "$RLBIN" "$@"; }}\nIMAGE={IMAGE}\n'


def script(guest: Guest, text: str, timeout: float = 300) -> GuestResult:
    return guest.run("sh", "-c", PRELUDE + text, timeout=timeout)


def test_limits_land_in_the_containers_cgroup(guest: Guest) -> None:
    result = script(
        guest,
        "rl run --rm --memory 64m --pids-limit 50 --cpus 0.5 --cpu-shares 1024 $IMAGE "
        "sh -c 'cd /sys/fs/cgroup; cat memory.max memory.swap.max pids.max cpu.max "
        "cpu.weight /proc/self/cgroup'",
    )
    assert result.returncode == 0, result
    assert result.stdout.split("\n")[:7] == [
        str(64 << 20), str(64 << 20), "50", "50000 100000", "39", "0::/", "",
    ], result  # fmt: skip


def test_oom_kill_is_exit_137_and_oomkilled(guest: Guest) -> None:
    result = script(
        guest,
        "rl run --name oom --memory 32m $IMAGE tail /dev/zero; echo rc=$?\n"
        "rl inspect --format '{{.State.OOMKilled}} {{.State.ExitCode}}' oom\n"
        "rl rm oom >/dev/null",
    )
    assert "rc=137\n" in result.stdout, result
    assert "true 137\n" in result.stdout, result


def test_pids_limit_stops_a_fork_bomb(guest: Guest) -> None:
    result = script(
        guest,
        "rl run --rm --pids-limit 20 $IMAGE sh -c "
        "'i=0; while [ $i -lt 40 ]; do sleep 60 & i=$((i+1)); done; echo forked all'; "
        "echo rc=$?",
    )
    assert "can't fork" in result.stderr, result
    assert "forked all" not in result.stdout, result
    assert "rc=0" not in result.stdout, result


def test_running_container_stats_update_pause_exec(guest: Guest) -> None:
    result = script(
        guest,
        """
set -u
setsid "$RLBIN" run --name busy --cpus 0.5 --memory 64m $IMAGE sh -c 'while :; do :; done' \
    >/dev/null 2>&1 </dev/null &
for i in $(seq 120); do
    [ "$(rl inspect --format '{{.State.Pid}}' busy 2>/dev/null || echo 0)" -gt 0 ] && break
    sleep 1
done
pid=$(rl inspect --format '{{.State.Pid}}' busy)
cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$pid/cgroup)
echo "cgroup=$cg"
sleep 3
echo "stats=$(rl stats --no-stream --format '{{.CPUPerc}} {{.PIDs}} {{.MemUsage}}' busy)"
rl update --memory 48m busy >/dev/null && echo "updated=$(cat $cg/memory.max)"
echo "exec=$(rl exec busy cat /proc/self/cgroup)"
rl exec -d busy sleep 77 >/dev/null
rl top busy pid args | sed 's/^/top: /'
rl pause busy >/dev/null && echo "paused=$(sed -n 's/^frozen //p' $cg/cgroup.events)"
echo "state=$(rl inspect --format '{{.State.Status}}' busy)"
rl unpause busy >/dev/null && echo "unpaused=$(sed -n 's/^frozen //p' $cg/cgroup.events)"
rl rm -f busy >/dev/null
for i in $(seq 30); do [ -d $cg ] || break; sleep 1; done
[ -d $cg ] && echo "left=$cg" || echo "removed"
""",
    )
    out = result.stdout
    assert re.search(r"^cgroup=/sys/fs/cgroup/user\.slice/.*/rl-[0-9a-f]{64}$", out, re.M), result
    stats = re.search(r"^stats=([\d.]+)% (\d+) (\S+) / (\S+)$", out, re.M)
    assert stats, result
    # --cpus 0.5: a busy loop gets about half a CPU (unlimited it would take a whole one).
    assert 5.0 < float(stats.group(1)) < 75.0, result
    assert stats.group(2) == "1" and stats.group(4) == "67.11MB", result
    assert f"updated={48 << 20}\n" in out, result
    assert "exec=0::/\n" in out, result  # the exec session joined the container's cgroup
    # rl top lists the container's cgroup: pid 1 and the exec session in it.
    assert re.search(r"^top: +1 +sh -c while", out, re.M), result
    assert re.search(r"^top: +\d+ +sleep 77\s*$", out, re.M), result
    assert "rootless exec" not in out, result  # rl's exec joiner is not the container's
    assert "paused=1\n" in out and "unpaused=0\n" in out, result
    assert "state=paused\n" in out, result
    assert "removed\n" in out, result


def test_info_shows_cgroup_v2_and_delegation(guest: Guest) -> None:
    result = script(guest, "rl info | grep -A6 cgroup")
    assert "cgroupVersion: v2" in result.stdout, result
    assert "cgroupManager: systemd" in result.stdout, result
    for controller in ("cpu", "io", "memory", "pids"):
        assert f"- {controller}\n" in result.stdout, result
