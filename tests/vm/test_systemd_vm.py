"""Per-user systemd units for real: `rl generate systemd` units and Quadlet files under the
guest's `systemctl --user` (see conftest.py). systemd itself checks what the host tests can
only imitate: Type=notify waits for the monitor's READY=1, MainPID follows the monitor,
stopping the unit stops the container, Restart= brings a crashed one back, and the generator
that packaging installs turns .container/.volume files into units.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.vm.conftest import IMAGE, RL
from tests.vm.qemu import Guest, GuestResult

pytestmark = [pytest.mark.slow]

PRELUDE = f'rl() {{ {RL} "$@"; }}\nIMAGE={IMAGE}\nset -u\n'
SERVICE = "sh -c \"echo A=\\$A; trap 'exit 0' TERM; while :; do sleep 1; done\""
UNIT_DIR = "$HOME/.config/systemd/user"
QUADLET_DIR = "$HOME/.config/containers/systemd"


def script(guest: Guest, text: str, timeout: float = 300) -> GuestResult:
    return guest.run("sh", "-c", PRELUDE + text, timeout=timeout)


def values(result: GuestResult) -> dict[str, str]:
    """The `key=value` lines a script printed."""
    found = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key] = value
    return found


STATUS = """\
echo active=$(systemctl --user is-active {unit})
echo mainpid=$(systemctl --user show -p MainPID --value {unit})
echo conmon=$(rl inspect --format '{{{{.State.ConmonPid}}}}' {name} 2>/dev/null)
echo status=$(rl inspect --format '{{{{.State.Status}}}}' {name} 2>/dev/null)
"""


def status(guest: Guest, unit: str, name: str) -> dict[str, str]:
    return values(script(guest, STATUS.format(unit=unit, name=name)))


def wait_for_restart(guest: Guest, unit: str, name: str, old_pid: str) -> dict[str, str]:
    text = (
        "for i in $(seq 1 120); do\n"
        f"  pid=$(systemctl --user show -p MainPID --value {unit})\n"
        f'  if [ "$pid" != 0 ] && [ "$pid" != {old_pid} ] && '
        f'[ "$(systemctl --user is-active {unit})" = active ]; then break; fi\n'
        "  sleep 0.5\n"
        "done\n" + STATUS.format(unit=unit, name=name)
    )
    return values(script(guest, text))


def test_new_unit_under_systemctl_user(guest: Guest) -> None:
    unit = "container-gsvc.service"
    made = script(
        guest,
        f"set -e\nrl create --name gsvc -e A=unit $IMAGE {SERVICE} >/dev/null\n"
        f"mkdir -p {UNIT_DIR}; cd {UNIT_DIR}\n"
        "rl generate systemd --new --name --files --restart-policy always gsvc >/dev/null\n"
        "rl rm gsvc >/dev/null\n"
        f"systemd-analyze --user verify {unit}\n"
        "systemctl --user daemon-reload\n"
        f"systemctl --user start {unit}\n",
    )
    assert made.returncode == 0, made
    assert made.stderr == "", made  # systemd-analyze verify: no warnings
    # Type=notify: `start` returned, so READY=1 arrived; MainPID is the monitor (MAINPID=)
    running = status(guest, unit, "gsvc")
    assert running["active"] == "active", running
    assert running["status"] == "running", running
    assert running["mainpid"] == running["conmon"] != "0", running
    assert "A=unit" in script(guest, "rl logs gsvc").stdout

    # A crash: Restart=always brings a fresh container (rl run --replace) back.
    crashed = script(guest, "rl kill gsvc")
    assert crashed.returncode == 0, crashed
    again = wait_for_restart(guest, unit, "gsvc", running["mainpid"])
    assert again["active"] == "active", again
    assert again["mainpid"] == again["conmon"] != running["mainpid"], again

    stopped = script(
        guest,
        f"systemctl --user stop {unit}\n"
        f"echo active=$(systemctl --user is-active {unit})\n"
        "echo left=$(rl ps -a --format '{{.Names}}' | grep -c gsvc)\n"
        f"rm {UNIT_DIR}/{unit}; systemctl --user daemon-reload\n",
    )
    assert values(stopped) == {"active": "inactive", "left": "0"}, stopped


def test_on_failure_unit_restarts_a_crashed_container(guest: Guest) -> None:
    unit = "container-fsvc.service"
    made = script(
        guest,
        f"set -e\nrl create --name fsvc $IMAGE {SERVICE} >/dev/null\n"
        f"mkdir -p {UNIT_DIR}; cd {UNIT_DIR}\n"
        "rl generate systemd --new --name --files fsvc >/dev/null\n"
        "rl rm fsvc >/dev/null\n"
        f"systemctl --user daemon-reload; systemctl --user start {unit}\n",
    )
    assert made.returncode == 0, made
    before = status(guest, unit, "fsvc")
    try:
        script(guest, "rl kill fsvc")
        after = wait_for_restart(guest, unit, "fsvc", before["mainpid"])
        assert after["active"] == "active", after
    finally:
        script(guest, f"systemctl --user stop {unit}; rm {UNIT_DIR}/{unit}; rl rm -f fsvc")


def test_unit_for_an_existing_container_is_forking_with_the_monitors_pid(guest: Guest) -> None:
    unit = "container-xsvc.service"
    made = script(
        guest,
        f"set -e\nrl create --name xsvc $IMAGE {SERVICE} >/dev/null\n"
        f"mkdir -p {UNIT_DIR}; cd {UNIT_DIR}\n"
        "rl generate systemd --name --files xsvc >/dev/null\n"
        f"systemd-analyze --user verify {unit}\n"
        f"systemctl --user daemon-reload; systemctl --user start {unit}\n",
    )
    assert made.returncode == 0 and made.stderr == "", made
    running = status(guest, unit, "xsvc")
    assert running["active"] == "active" and running["status"] == "running", running
    assert running["mainpid"] == running["conmon"] != "0", running  # PIDFile=
    stopped = script(
        guest,
        f"systemctl --user stop {unit}\n" + STATUS.format(unit=unit, name="xsvc") + "rl rm xsvc\n",
    )
    assert values(stopped)["active"] == "inactive", stopped
    assert values(stopped)["status"] == "exited", stopped


def test_quadlet_files_become_user_units(guest: Guest) -> None:
    venv = Path(sys.prefix)
    generator = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "rl-user-generator"
    target = "/usr/lib/systemd/user-generators/rl-user-generator"
    installed = guest.run(
        "sh",
        "-c",
        f"sed 's|@RL_VENV@|{venv}|g' {generator} > {target} && chmod 755 {target}",
        user="root",
    )
    assert installed.returncode == 0, installed
    container = (
        "[Unit]\nDescription=Quadlet web\n\n[Container]\n"
        f"Image={IMAGE}\n"
        "Exec=sh -c \"echo A=$A; ls -d /data; trap 'exit 0' TERM; while :; do sleep 1; done\"\n"
        "Environment=A=quadlet\nVolume=qdata.volume:/data\nLabel=from=quadlet\n\n"
        "[Service]\nRestart=always\n\n[Install]\nWantedBy=default.target\n"
    )
    made = script(
        guest,
        f"set -e\nmkdir -p {QUADLET_DIR}\n"
        f"cat > {QUADLET_DIR}/qweb.container <<'EOF'\n{container}EOF\n"
        f"printf '[Volume]\\nLabel=from=quadlet\\n' > {QUADLET_DIR}/qdata.volume\n"
        f"printf '[Container]\\nExec=true\\n' > {QUADLET_DIR}/broken.container\n"
        "systemctl --user daemon-reload\n"
        "systemctl --user cat qweb.service | grep -q '^SourcePath=.*/qweb.container$'\n"
        "systemctl --user list-dependencies default.target | grep -q qweb.service\n"
        "systemctl --user start qweb.service\n",
    )
    assert made.returncode == 0, made
    running = status(guest, "qweb.service", "systemd-qweb")
    assert running["active"] == "active" and running["status"] == "running", running
    assert running["mainpid"] == running["conmon"] != "0", running
    logs = script(guest, "rl logs systemd-qweb").stdout
    assert "A=quadlet" in logs and "/data" in logs
    assert script(guest, "systemctl --user is-active qdata-volume.service").stdout == "active\n"
    # the broken file was skipped, not fatal
    assert script(guest, "systemctl --user cat broken.service").returncode != 0

    stopped = script(
        guest,
        "systemctl --user stop qweb.service\n"
        "echo active=$(systemctl --user is-active qweb.service)\n"
        "echo left=$(rl ps -a --format '{{.Names}}' | grep -c systemd-qweb)\n"
        "echo volume=$(rl volume ls --format '{{.Name}}' | grep -c systemd-qdata)\n"
        f"rm -f {QUADLET_DIR}/*; systemctl --user daemon-reload\n",
    )
    assert values(stopped) == {"active": "inactive", "left": "0", "volume": "1"}, stopped
