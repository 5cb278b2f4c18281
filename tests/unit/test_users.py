"""`-u user[:group]` against an image's /etc/passwd and /etc/group (podman 4.3's rules)."""

from __future__ import annotations

import pytest

from rootless.errors import RlError
from rootless.runtime.users import (
    add_group_entry,
    add_passwd_entry,
    parse_group,
    parse_passwd,
    resolve_user,
)

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
# a comment
broken line
bad:x:notanumber:1::/:/bin/sh
tester:x:1000:1000:Test User:/home/tester:/bin/sh
nohome:x:1500:1500:::/bin/sh
"""
GROUP = """\
root:x:0:
tester:x:1000:
extra:x:2000:tester
more:x:3000:daemon, tester
other:x:4000:daemon
"""


def test_default_is_root_with_roots_home() -> None:
    user = resolve_user("", PASSWD, GROUP)
    assert (user.uid, user.gid, user.additional_gids, user.home) == (0, 0, (0,), "/root")


def test_root_without_passwd_file_still_gets_root_home() -> None:
    assert resolve_user("", None, None).home == "/root"
    assert resolve_user("0", None, None).home == "/root"


def test_name_gets_primary_and_member_groups_and_home() -> None:
    user = resolve_user("tester", PASSWD, GROUP)
    assert user.uid == 1000 and user.gid == 1000
    assert user.additional_gids == (1000, 2000, 3000)
    assert user.home == "/home/tester"
    assert user.name == "tester"


def test_numeric_uid_in_passwd_is_looked_up() -> None:
    user = resolve_user("1000", PASSWD, GROUP)
    assert (user.gid, user.home) == (1000, "/home/tester")
    assert 2000 in user.additional_gids


def test_numeric_uid_and_gid_skip_supplementary_groups() -> None:
    user = resolve_user("1000:2000", PASSWD, GROUP)
    assert (user.uid, user.gid, user.additional_gids) == (1000, 2000, (2000,))
    assert user.home == "/home/tester"


def test_user_and_group_names() -> None:
    user = resolve_user("tester:extra", PASSWD, GROUP)
    assert (user.uid, user.gid, user.additional_gids) == (1000, 2000, (2000,))


def test_unknown_numeric_uid_gets_gid_0_and_slash_home() -> None:
    user = resolve_user("4242", PASSWD, GROUP)
    assert (user.uid, user.gid, user.home) == (4242, 0, "/")


def test_root_with_explicit_group() -> None:
    user = resolve_user("0:1000", PASSWD, GROUP)
    assert (user.uid, user.gid, user.additional_gids) == (0, 1000, (1000,))


def test_unknown_user_is_podmans_error_with_exit_126() -> None:
    with pytest.raises(RlError) as err:
        resolve_user("nobody2", PASSWD, GROUP)
    assert err.value.message == "unable to find user nobody2: no matching entries in passwd file"
    assert err.value.exit_code == 126


def test_unknown_group_is_podmans_error() -> None:
    with pytest.raises(RlError) as err:
        resolve_user("tester:nosuch", PASSWD, GROUP)
    assert err.value.message == "unable to find group nosuch: no matching entries in group file"
    assert err.value.exit_code == 126


def test_name_without_passwd_file_fails() -> None:
    with pytest.raises(RlError, match="unable to find user tester"):
        resolve_user("tester", None, None)


def test_group_add_by_name_and_number_deduplicated() -> None:
    user = resolve_user("tester", PASSWD, GROUP, ["other", "777", "extra"])
    assert user.additional_gids == (1000, 2000, 3000, 4000, 777)


def test_group_add_unknown_name_fails() -> None:
    with pytest.raises(RlError, match="unable to find group nosuch"):
        resolve_user("", PASSWD, GROUP, ["nosuch"])


def test_empty_home_field_falls_back_to_slash() -> None:
    assert resolve_user("nohome", PASSWD, GROUP).home == "/"


def test_parsers_skip_malformed_lines() -> None:
    assert [u.name for u in parse_passwd(PASSWD)] == ["root", "daemon", "tester", "nohome"]
    more = next(g for g in parse_group(GROUP) if g.name == "more")
    assert more.members == ("daemon", "tester")


def test_add_passwd_entry_only_when_missing() -> None:
    assert add_passwd_entry(PASSWD, "tester", 1000, 1000, "/") is None
    text = add_passwd_entry("root:x:0:0::/root:/bin/sh", "me", 1001, 1001, "/")
    assert text == "root:x:0:0::/root:/bin/sh\nme:*:1001:1001::/:/bin/sh\n"
    assert add_passwd_entry(None, "me", 5, 6, "/") == "me:*:5:6::/:/bin/sh\n"


def test_add_group_entry_only_when_missing() -> None:
    assert add_group_entry(GROUP, "tester", 1000) is None
    assert add_group_entry("root:x:0:\n", "me", 1001) == "root:x:0:\nme:x:1001:me\n"
