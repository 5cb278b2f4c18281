"""`-u user[:group]` against the image's /etc/passwd and /etc/group, as podman resolves it.

Pure: the caller reads the two files from the image (None when the image has none). Rules,
checked against podman 4.3:
- a name must exist in passwd (else podman's error, exit 126); a number need not, and then the
  primary group is 0 and HOME is "/";
- without an explicit group, the primary group comes from passwd and the supplementary groups
  are those of /etc/group that list the user's name; with one, only that group;
- --group-add adds groups by name or number;
- HOME is the passwd entry's home, else "/root" for uid 0 and "/" for anyone else.
"""

from __future__ import annotations

from typing import NamedTuple

from rootless.errors import EXIT_CANNOT_EXECUTE, RlError


class PasswdEntry(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str


class GroupEntry(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


# A NamedTuple rather than a dataclass: this module is on the path of every `rl run`, and a
# dataclass costs ~0.5 ms to create at import (start-up is issue 3's target).
class ResolvedUser(NamedTuple):
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str
    name: str | None = None


def parse_passwd(text: str | None) -> list[PasswdEntry]:
    entries = []
    for line in (text or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) < 7 or line.lstrip().startswith("#"):
            continue
        try:
            entries.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[5]))
        except ValueError:
            continue
    return entries


def parse_group(text: str | None) -> list[GroupEntry]:
    entries = []
    for line in (text or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) < 4 or line.lstrip().startswith("#"):
            continue
        try:
            members = tuple(m.strip() for m in parts[3].split(",") if m.strip())
            entries.append(GroupEntry(parts[0], int(parts[2]), members))
        except ValueError:
            continue
    return entries


def _is_id(text: str) -> bool:
    return text.isdigit()


def _find_group(spec: str, groups: list[GroupEntry]) -> int:
    if _is_id(spec):
        return int(spec)
    for group in groups:
        if group.name == spec:
            return group.gid
    raise RlError(
        f"unable to find group {spec}: no matching entries in group file", EXIT_CANNOT_EXECUTE
    )


def resolve_user(
    spec: str,
    passwd_text: str | None,
    group_text: str | None,
    group_add: tuple[str, ...] | list[str] = (),
) -> ResolvedUser:
    """The container process's identity for `-u spec` (or the image's User; "" is root)."""
    user_part, has_group, group_part = (spec or "0").partition(":")
    user_part = user_part or "0"
    users = parse_passwd(passwd_text)
    groups = parse_group(group_text)
    if _is_id(user_part):
        uid = int(user_part)
        entry = next((u for u in users if u.uid == uid), None)
    else:
        entry = next((u for u in users if u.name == user_part), None)
        if entry is None:
            raise RlError(
                f"unable to find user {user_part}: no matching entries in passwd file",
                EXIT_CANNOT_EXECUTE,
            )
        uid = entry.uid
    if has_group and group_part:
        gid = _find_group(group_part, groups)
        supplementary: list[int] = []
    else:
        gid = entry.gid if entry else 0
        name = entry.name if entry else None
        supplementary = [g.gid for g in groups if name is not None and name in g.members]
    added = [_find_group(g, groups) for g in group_add]
    additional: list[int] = []
    for g in [gid, *supplementary, *added]:
        if g not in additional:
            additional.append(g)
    home = entry.home if entry and entry.home else ("/root" if uid == 0 else "/")
    return ResolvedUser(uid, gid, tuple(additional), home, entry.name if entry else None)


def add_passwd_entry(
    passwd_text: str | None, name: str, uid: int, gid: int, home: str
) -> str | None:
    """passwd with an entry for `uid` appended when it has none (podman does so for keep-id),
    or None when nothing needs to change."""
    if any(u.uid == uid for u in parse_passwd(passwd_text)):
        return None
    text = passwd_text or ""
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{text}{name}:*:{uid}:{gid}::{home}:/bin/sh\n"


def add_group_entry(group_text: str | None, name: str, gid: int) -> str | None:
    """group with an entry for `gid` appended when it has none, or None."""
    if any(g.gid == gid for g in parse_group(group_text)):
        return None
    text = group_text or ""
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{text}{name}:x:{gid}:{name}\n"
