"""The container environment: podman 4.3's defaults and precedence."""

from __future__ import annotations

import pytest

from rootless.errors import RlError
from rootless.runtime.env import DEFAULT_PATH, expand_env_flag, merge_env, parse_env_file

HOST = {"FOO": "hostfoo", "HOME": "/home/me", "PRE_A": "1", "PRE_B": "2", "PATH": "/host/bin"}


def as_dict(env: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in env)


def test_defaults() -> None:
    env = as_dict(merge_env([], home="/root", hostname="abc"))
    assert env == {
        "PATH": DEFAULT_PATH,
        "TERM": "xterm",
        "container": "podman",
        "HOME": "/root",
        "HOSTNAME": "abc",
    }


def test_image_env_overrides_defaults() -> None:
    env = as_dict(merge_env(["PATH=/img", "A=1", "TERM=vt100"], home="/"))
    assert env["PATH"] == "/img" and env["A"] == "1" and env["TERM"] == "vt100"


def test_flags_override_image_and_files_in_order() -> None:
    env = as_dict(
        merge_env(
            ["A=image", "B=image", "C=image"],
            env_files=[{"A": "file1", "B": "file1"}, {"B": "file2"}],
            env_flags=["A=flag"],
            host_env=HOST,
        )
    )
    assert (env["A"], env["B"], env["C"]) == ("flag", "file2", "image")


def test_home_and_hostname_only_when_unset() -> None:
    env = as_dict(
        merge_env(["HOME=/img"], env_flags=["HOSTNAME=mine"], home="/root", hostname="abc")
    )
    assert env["HOME"] == "/img" and env["HOSTNAME"] == "mine"
    assert as_dict(merge_env([], env_flags=["HOME=/custom"], home="/root"))["HOME"] == "/custom"


def test_env_host_is_below_the_image() -> None:
    env = as_dict(merge_env(["PATH=/img"], env_host=True, host_env=HOST))
    assert env["FOO"] == "hostfoo" and env["PATH"] == "/img"
    assert "FOO" not in as_dict(merge_env([], host_env=HOST))


def test_env_flag_forms() -> None:
    assert expand_env_flag("K=V=W", HOST) == {"K": "V=W"}
    assert expand_env_flag("K=", HOST) == {"K": ""}
    assert expand_env_flag("FOO", HOST) == {"FOO": "hostfoo"}
    assert expand_env_flag("UNSET", HOST) == {}
    assert expand_env_flag("PRE_*", HOST) == {"PRE_A": "1", "PRE_B": "2"}
    with pytest.raises(RlError):
        expand_env_flag("=x", HOST)


def test_env_file_like_podman() -> None:
    text = '# comment\nA=1\nB\n  C=with space  \nFOO\nD="quoted"\n\nEMPTY=\n'
    assert parse_env_file(text, HOST) == {
        "A": "1",
        "C": "with space  ",
        "FOO": "hostfoo",
        "D": '"quoted"',
        "EMPTY": "",
    }


def test_env_file_bad_name() -> None:
    with pytest.raises(RlError, match="line 1"):
        parse_env_file("BAD NAME=1\n", HOST, source="f")


def test_unset_flag_reference_does_not_remove_image_value() -> None:
    env = as_dict(merge_env(["A=image"], env_flags=["A"], host_env={}))
    assert env["A"] == "image"
