"""rootless.systemd.quadlet: unit file syntax, .container/.volume conversion (as podman's
Quadlet does it, with rl's commands), the search directories, and the generator's output."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from rootless.systemd import quadlet
from rootless.systemd.quadlet import QuadletError, parse_unit_file, split_words

RL = "/usr/bin/rl"


def _convert(text: str, name: str = "web.container", **kwargs: object) -> quadlet.Generated:
    unit = parse_unit_file(text)
    if name.endswith(".volume"):
        return quadlet.convert_volume(unit, name, rl=RL, **kwargs)  # type: ignore[arg-type]
    return quadlet.convert_container(unit, name, rl=RL, **kwargs)  # type: ignore[arg-type]


def _service(generated: quadlet.Generated) -> list[tuple[str, str]]:
    section = parse_unit_file(generated.text).section("Service")
    assert section is not None
    return section.entries


def _last(generated: quadlet.Generated, section: str, key: str) -> str | None:
    return parse_unit_file(generated.text).last(section, key)


def _start(generated: quadlet.Generated) -> list[str]:
    value = _last(generated, "Service", "ExecStart")
    assert value is not None
    return split_words(value)


def _run_args(generated: quadlet.Generated) -> list[str]:
    """ExecStart's words after the fixed prefix `rl run --name=… --replace --rm
    --sdnotify=… -d`."""
    argv = _start(generated)
    assert argv[:2] == [RL, "run"]
    assert argv[3:5] == ["--replace", "--rm"] and argv[6] == "-d"
    return argv[7:]


# --- unit file syntax ---------------------------------------------------------------------


def test_parse_sections_comments_and_continuations() -> None:
    unit = parse_unit_file(
        "# comment\n; also a comment\n\n[Unit]\nDescription = spaced  \n"
        "[Container]\nImage=img\nExec=sh -c \\\n# skipped inside a continuation\n  'echo hi'\n"
        "[Unit]\nAfter=x.service\n"
    )
    assert [s.name for s in unit.sections] == ["Unit", "Container"]
    assert unit.values("Unit", "Description") == ["spaced"]
    assert unit.values("Unit", "After") == ["x.service"]  # the same section twice: merged
    assert unit.last("Container", "Exec") == "sh -c  'echo hi'"


def test_parse_keeps_repeated_keys_in_order() -> None:
    unit = parse_unit_file("[Container]\nVolume=a:/a\nVolume=b:/b\nImage=x\n")
    assert unit.values("Container", "Volume") == ["a:/a", "b:/b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Image=x\n", "outside of a section"),
        ("[Container]\njust words\n", "expected Key=Value"),
        ("[Container\nImage=x\n", "invalid section header"),
        ("[]\n", "invalid section header"),
        ("[Container]\n=value\n", "expected Key=Value"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(QuadletError, match=message):
        parse_unit_file(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b  c", ["a", "b", "c"]),
        ('"two words" x', ["two words", "x"]),
        ("'single quoted' \"dq\"", ["single quoted", "dq"]),
        ('A="x y"', ["A=x y"]),
        (r"a\ b", ["a b"]),
        (r'"say \"hi\""', ['say "hi"']),
        (r"tab\there", ["tab\there"]),
        (r"\x41", ["A"]),
        ('""', [""]),
        ("", []),
    ],
)
def test_split_words(text: str, words: list[str]) -> None:
    assert split_words(text) == words


@pytest.mark.parametrize("text", ['"open', "'open", "trailing\\"])
def test_split_words_errors(text: str) -> None:
    with pytest.raises(QuadletError):
        split_words(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("yes", True), ("1", True), ("On", True), ("no", False), ("false", False), ("0", False)],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert quadlet.parse_bool(text, "K") is value


def test_parse_bool_error() -> None:
    with pytest.raises(QuadletError, match="invalid boolean 'maybe' for key ReadOnly"):
        quadlet.parse_bool("maybe", "ReadOnly")


# --- .container ---------------------------------------------------------------------------


def test_minimal_container_is_quadlets_service() -> None:
    generated = _convert("[Container]\nImage=docker.io/library/nginx\n")
    assert generated.name == "web.service"
    assert _start(generated) == [
        RL, "run", "--name=systemd-%N", "--replace", "--rm", "--sdnotify=conmon", "-d",
        "docker.io/library/nginx",
    ]  # fmt: skip
    service = dict(_service(generated))
    assert service["Type"] == "notify" and service["NotifyAccess"] == "all"
    assert service["KillMode"] == "mixed"
    assert service["Delegate"] == "yes"
    assert service["SyslogIdentifier"] == "%N"
    assert service["Environment"] == "PODMAN_SYSTEMD_UNIT=%n"
    assert split_words(service["ExecStop"]) == [RL, "stop", "--ignore", "-t", "10", "systemd-%N"]
    assert split_words(service["ExecStopPost"]) == ["-" + RL, "rm", "-f", "--ignore", "systemd-%N"]
    assert service["TimeoutStopSec"] == "70"
    assert generated.text.startswith("# Automatically generated by rl-user-generator\n")


def test_the_container_section_is_kept_as_x_container() -> None:
    text = _convert("[Container]\nImage=img\nLabel=a=b\n").text
    unit = parse_unit_file(text)
    assert unit.section("Container") is None
    assert unit.values("X-Container", "Label") == ["a=b"]


def test_common_keys_become_rl_flags() -> None:
    generated = _convert(
        """\
[Container]
Image=localhost/app:1
ContainerName=app
Exec=/bin/server --port "8080"
Environment=A=1 "B=two words"
Environment=C=3
EnvironmentFile=/etc/app.env
PublishPort=8080:80
PublishPort=127.0.0.1:9090:90/udp
Volume=/srv/data:/data:Z
Volume=%h/conf:/conf:ro
Network=host
Pull=newer
Label=app=web tier=front
HealthCmd=curl -f http://localhost/ || exit 1
HealthInterval=30s
HealthTimeout=5s
HealthRetries=3
HealthStartPeriod=1m
HealthOnFailure=kill
User=1000
Group=1000
AddCapability=CAP_NET_ADMIN CAP_SYS_TIME
DropCapability=CAP_CHOWN
ReadOnly=yes
RunInit=true
NoNewPrivileges=true
Timezone=UTC
Tmpfs=/run
HostName=box
WorkingDir=/srv
StopTimeout=20
SeccompProfile=/etc/seccomp.json
Ulimit=nofile=1024:2048
PodmanArgs=--shm-size 128m --privileged
"""
    )
    argv = _start(generated)
    assert argv[2] == "--name=app"
    args = _run_args(generated)
    pairs = list(itertools.pairwise(args))
    for expected in [
        ("--env", "A=1"),
        ("--env", "B=two words"),
        ("--env", "C=3"),
        ("--env-file", "/etc/app.env"),
        ("--publish", "8080:80"),
        ("--publish", "127.0.0.1:9090:90/udp"),
        ("--volume", "/srv/data:/data:Z"),
        ("--volume", "%h/conf:/conf:ro"),
        ("--network", "host"),
        ("--pull", "newer"),
        ("--label", "app=web"),
        ("--label", "tier=front"),
        ("--health-cmd", "curl -f http://localhost/ || exit 1"),
        ("--health-interval", "30s"),
        ("--health-timeout", "5s"),
        ("--health-retries", "3"),
        ("--health-start-period", "1m"),
        ("--health-on-failure", "kill"),
        ("--user", "1000:1000"),
        ("--cap-add", "CAP_NET_ADMIN"),
        ("--cap-add", "CAP_SYS_TIME"),
        ("--cap-drop", "CAP_CHOWN"),
        ("--security-opt", "no-new-privileges"),
        ("--tz", "UTC"),
        ("--tmpfs", "/run"),
        ("--hostname", "box"),
        ("--workdir", "/srv"),
        ("--stop-timeout", "20"),
        ("--security-opt", "seccomp=/etc/seccomp.json"),
        ("--ulimit", "nofile=1024:2048"),
        ("--shm-size", "128m"),
    ]:
        assert expected in pairs, expected
    for flag in ("--read-only", "--init", "--privileged"):
        assert flag in args
    # the image, then Exec's words, last
    assert args[-3:] == ["localhost/app:1", "/bin/server", "--port", "8080"][-3:]
    assert args[-4:] == ["localhost/app:1", "/bin/server", "--port", "8080"]
    service = dict(_service(generated))
    assert split_words(service["ExecStop"])[-3:] == ["-t", "20", "app"]
    assert service["TimeoutStopSec"] == "80"


def test_false_booleans_add_nothing() -> None:
    args = _run_args(_convert("[Container]\nImage=i\nReadOnly=no\nRunInit=false\n"))
    assert args == ["i"]


def test_notify_yes_lets_the_container_notify() -> None:
    assert "--sdnotify=container" in _start(_convert("[Container]\nImage=i\nNotify=yes\n"))
    assert "--sdnotify=conmon" in _start(_convert("[Container]\nImage=i\nNotify=no\n"))


def test_volume_unit_reference_becomes_a_named_volume_and_a_dependency() -> None:
    generated = _convert(
        "[Container]\nImage=i\nVolume=data.volume:/data:ro\nVolume=named:/n\n",
        volume_names={"data.volume": "systemd-data"},
    )
    args = _run_args(generated)
    assert args[0:2] == ["--volume", "systemd-data:/data:ro"]
    assert args[2:4] == ["--volume", "named:/n"]
    unit = parse_unit_file(generated.text)
    assert unit.values("Unit", "Requires") == ["data-volume.service"]
    assert "data-volume.service" in unit.values("Unit", "After")


def test_volume_reference_uses_the_volume_files_volume_name() -> None:
    generated = _convert(
        "[Container]\nImage=i\nVolume=data.volume:/d\n", volume_names={"data.volume": "mydata"}
    )
    assert _run_args(generated)[:2] == ["--volume", "mydata:/d"]


def test_unit_service_and_install_sections_pass_through() -> None:
    generated = _convert(
        """\
[Unit]
Description=My web
After=local-fs.target

[Container]
Image=i

[Service]
Restart=always
TimeoutStartSec=900
ExecStartPre=/bin/true

[Install]
WantedBy=default.target multi-user.target
RequiredBy=x.target
""",
        source_path="/home/u/.config/containers/systemd/web.container",
        requires_mounts=["/run/user/1000/rl", "/home/u/.local/share/rl"],
    )
    unit = parse_unit_file(generated.text)
    assert [s.name for s in unit.sections] == ["Unit", "X-Container", "Service", "Install"]
    assert unit.last("Unit", "Description") == "My web"
    assert unit.last("Unit", "SourcePath") == "/home/u/.config/containers/systemd/web.container"
    assert unit.last("Unit", "RequiresMountsFor") == "/run/user/1000/rl /home/u/.local/share/rl"
    assert unit.last("Service", "Restart") == "always"
    assert unit.last("Service", "TimeoutStartSec") == "900"
    assert unit.values("Service", "ExecStartPre") == ["/bin/true"]
    assert unit.values("Install", "WantedBy") == ["default.target multi-user.target"]
    assert generated.wanted_by == ("default.target", "multi-user.target")
    assert generated.required_by == ("x.target",)


def test_the_authors_service_settings_come_last_so_they_win() -> None:
    entries = _service(_convert("[Container]\nImage=i\n[Service]\nKillMode=control-group\n"))
    kill_modes = [v for k, v in entries if k == "KillMode"]
    assert kill_modes == ["mixed", "control-group"]  # systemd: the last assignment wins


def test_the_authors_timeout_stop_sec_is_not_doubled() -> None:
    entries = _service(_convert("[Container]\nImage=i\n[Service]\nTimeoutStopSec=5\n"))
    assert [v for k, v in entries if k == "TimeoutStopSec"] == ["5"]


def test_selinux_keys_are_accepted_and_ignored() -> None:
    text = "[Container]\nImage=i\nSecurityLabelDisable=true\nSecurityLabelType=spc_t\n"
    assert _run_args(_convert(text)) == ["i"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Unit]\nDescription=x\n", r"no \[Container\] section"),
        ("[Container]\nExec=true\n", "no Image key specified"),
        ("[Container]\nImage=i\nFrobnicate=1\n", "unsupported key 'Frobnicate' in group"),
        ("[Container]\nImage=i\nSecret=token\n", "'Secret' .* not supported by rl"),
        ("[Container]\nImage=i\nRemapUsers=auto\n", "'RemapUsers' .* not supported by rl"),
        ("[Container]\nImage=i\nReadOnly=perhaps\n", "invalid boolean"),
        ("[Container]\nImage=i\nGroup=10\n", "Group set without User"),
        ("[Container]\nImage=i\nStopTimeout=soon\n", "invalid StopTimeout"),
        ("[Container]\nImage=i\nNetwork=net.network\n", r"\.network units are not supported"),
        ("[Container]\nImage=i\n[Service]\nKillMode=none\n", "invalid KillMode 'none'"),
        ("[Container]\nImage=i\nExec=echo 'unbalanced\n", "unbalanced quotes"),
    ],
)
def test_container_errors(text: str, message: str) -> None:
    with pytest.raises(QuadletError, match=message):
        _convert(text)


def test_service_names() -> None:
    assert quadlet.service_name("/x/web.container") == "web.service"
    assert quadlet.service_name("data.volume") == "data-volume.service"
    with pytest.raises(QuadletError, match="unsupported unit type"):
        quadlet.service_name("pod.kube")


# --- .volume ------------------------------------------------------------------------------


def test_volume_unit_creates_the_volume_once() -> None:
    generated = _convert(
        "[Volume]\nLabel=app=web tier=db\nUser=1000\nGroup=1000\nOptions=size=1g\n",
        name="data.volume",
    )
    assert generated.name == "data-volume.service"
    service = dict(_service(generated))
    assert split_words(service["ExecStart"]) == [
        RL, "volume", "create", "--ignore", "--opt", "o=uid=1000,gid=1000,size=1g",
        "--label", "app=web", "--label", "tier=db", "systemd-data",
    ]  # fmt: skip
    assert service["Type"] == "oneshot"
    assert service["RemainAfterExit"] == "yes"


def test_volume_name_device_type() -> None:
    generated = _convert(
        "[Volume]\nVolumeName=shared\nType=tmpfs\nDevice=tmpfs\n", name="data.volume"
    )
    assert split_words(dict(_service(generated))["ExecStart"])[4:] == [
        "--opt", "type=tmpfs", "--opt", "device=tmpfs", "shared",
    ]  # fmt: skip


def test_empty_volume_file_is_a_plain_named_volume() -> None:
    generated = _convert("", name="cache.volume")
    assert split_words(dict(_service(generated))["ExecStart"]) == [
        RL, "volume", "create", "--ignore", "systemd-cache",
    ]  # fmt: skip


def test_volume_unknown_key_is_an_error() -> None:
    with pytest.raises(QuadletError, match="unsupported key 'Copy'"):
        _convert("[Volume]\nCopy=yes\n", name="d.volume")


# --- the generator ------------------------------------------------------------------------


def test_search_dirs_user_first_then_etc() -> None:
    dirs = quadlet.search_dirs({"XDG_CONFIG_HOME": "/cfg"}, 1000, "/home/u")
    assert dirs == [
        Path("/cfg/containers/systemd"),
        Path("/home/u/.config/containers/systemd"),
        Path("/etc/containers/systemd/users/1000"),
        Path("/etc/containers/systemd/users"),
    ]
    dirs = quadlet.search_dirs({"XDG_CONFIG_HOME": "/home/u/.config"}, 1000, "/home/u")
    assert dirs[0] == Path("/home/u/.config/containers/systemd") and len(dirs) == 3


def test_search_dirs_from_quadlet_unit_dirs() -> None:
    assert quadlet.search_dirs({"QUADLET_UNIT_DIRS": "/a::/b"}, 1, "/h") == [Path("/a"), Path("/b")]


def test_find_unit_files_first_directory_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "user", tmp_path / "etc"
    for directory in (first, second):
        directory.mkdir()
        (directory / "web.container").write_text(f"[Container]\nImage={directory.name}\n")
    (second / "db.volume").write_text("")
    (second / "notes.txt").write_text("")
    (second / "pod.kube").write_text("")
    found = quadlet.find_unit_files([first, tmp_path / "missing", second])
    assert found == {"web.container": first / "web.container", "db.volume": second / "db.volume"}


def test_generate_converts_good_files_and_reports_bad_ones(tmp_path: Path) -> None:
    (tmp_path / "good.container").write_text(
        "[Container]\nImage=i\nVolume=data.volume:/d\n[Install]\nWantedBy=default.target\n"
    )
    (tmp_path / "data.volume").write_text("[Volume]\nVolumeName=shared\n")
    (tmp_path / "bad.container").write_text("[Container]\nExec=true\n")
    (tmp_path / "ugly.container").write_text("[Container\n")
    files = quadlet.find_unit_files([tmp_path])
    units, errors = quadlet.generate(files, rl=RL)
    assert sorted(u.name for u in units) == ["data-volume.service", "good.service"]
    assert len(errors) == 2
    assert any("bad.container" in e and "no Image key" in e for e in errors)
    assert any("ugly.container" in e and "ignoring" in e for e in errors)
    good = next(u for u in units if u.name == "good.service")
    assert "--volume" in _start(good) and "shared:/d" in _start(good)


def test_write_units_links_install_targets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    generated = quadlet.Generated("web.service", "[Service]\n", ("default.target",), ("x.target",))
    quadlet.write_units([generated], out)
    quadlet.write_units([generated], out)  # again (daemon-reload): replaces, no error
    assert (out / "web.service").read_text() == "[Service]\n"
    link = out / "default.target.wants" / "web.service"
    assert link.is_symlink() and os.readlink(link) == "../web.service"
    assert (out / "x.target.requires" / "web.service").resolve() == (out / "web.service")


def test_main_writes_units_and_returns_1_when_a_file_was_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "web.container").write_text("[Container]\nImage=i\n")
    (source / "bad.container").write_text("[Container]\n")
    monkeypatch.setenv("QUADLET_UNIT_DIRS", str(source))
    out = tmp_path / "normal"
    code = quadlet.main(
        ["-user", "--rl", RL, str(out), str(tmp_path / "early"), str(tmp_path / "late")]
    )
    assert code == 1
    assert sorted(os.listdir(out)) == ["web.service"]
    err = capsys.readouterr().err
    assert err.startswith("rl-user-generator: error converting ")
    assert "bad.container" in err


def test_main_dryrun_prints_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "web.container").write_text("[Container]\nImage=i\n")
    monkeypatch.setenv("QUADLET_UNIT_DIRS", str(tmp_path))
    assert quadlet.main(["-dryrun", "--rl", RL]) == 0
    out = capsys.readouterr().out
    assert out.startswith("---web.service---\n# Automatically generated by rl-user-generator\n")


def test_main_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert quadlet.main([]) == 2
    assert quadlet.main(["--bogus", "/x"]) == 2
    assert "usage:" in capsys.readouterr().err
