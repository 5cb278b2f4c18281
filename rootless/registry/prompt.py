"""The short-name prompt: choose one of several registries for an unqualified image name.

podman (containers/image with promptui) asks on a terminal when short-name-mode is enforcing
and the search registries give several candidates:

    ? Please select an image:
      ▸ registry.fedoraproject.org/fedora:latest
        docker.io/library/fedora:latest

Arrow keys (or j/k, Ctrl-N/Ctrl-P) move, Enter picks, Ctrl-C gives up; the answer is then
shown as `✔ docker.io/library/fedora:latest`. The key handling and the drawing are pure
(`Selection`, `on_key`, `render`); `ask` is the terminal shell around them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Literal, NamedTuple

LABEL = "Please select an image"
UP_KEYS = frozenset({"\x1b[A", "\x1bOA", "k", "\x10"})
DOWN_KEYS = frozenset({"\x1b[B", "\x1bOB", "j", "\x0e"})
ENTER_KEYS = frozenset({"\r", "\n"})
CANCEL_KEYS = frozenset({"\x03", "\x04"})  # Ctrl-C, Ctrl-D
CLEAR_BELOW = "\x1b[J"

State = Literal["choosing", "chosen", "cancelled"]


# NamedTuples rather than dataclasses: `rl pull` imports this module, and creating a
# dataclass costs ~0.5-1 ms on Python 3.11 (issue 5); `x._replace()` is dataclasses.replace.
class Selection(NamedTuple):
    items: tuple[str, ...]
    cursor: int = 0
    state: State = "choosing"

    @property
    def choice(self) -> str:
        return self.items[self.cursor]


def on_key(selection: Selection, key: str) -> Selection:
    """The selection after one key (an escape sequence counts as one key)."""
    if selection.state != "choosing":
        return selection
    if key in UP_KEYS:
        return selection._replace(cursor=max(0, selection.cursor - 1))
    if key in DOWN_KEYS:
        return selection._replace(cursor=min(len(selection.items) - 1, selection.cursor + 1))
    if key in ENTER_KEYS:
        return selection._replace(state="chosen")
    if key in CANCEL_KEYS:
        return selection._replace(state="cancelled")
    return selection


def render(selection: Selection, label: str = LABEL) -> list[str]:
    """The lines on the screen: while choosing, the label and the list; then the answer."""
    if selection.state == "chosen":
        return [f"✔ {selection.choice}"]
    if selection.state == "cancelled":
        return [f"✗ {label}: ^C"]
    lines = [f"? {label}: "]
    for index, item in enumerate(selection.items):
        lines.append(f"  ▸ {item}" if index == selection.cursor else f"    {item}")
    return lines


def split_keys(data: str) -> list[str]:
    """Keys in what one read returned: `\\x1b[A` and `\\x1bOA` are one key each."""
    keys: list[str] = []
    index = 0
    while index < len(data):
        if data.startswith(("\x1b[", "\x1bO"), index) and index + 2 < len(data):
            keys.append(data[index : index + 3])
            index += 3
        else:
            keys.append(data[index])
            index += 1
    return keys


def redraw(previous: int, lines: Sequence[str]) -> str:
    """Terminal output that replaces the `previous` lines drawn last time with `lines`
    (the cursor is at the end of the last of them)."""
    start = ""
    if previous:
        start = "\r" + (f"\x1b[{previous - 1}A" if previous > 1 else "") + CLEAR_BELOW
    return start + "\r\n".join(lines)


def interactive() -> bool:
    """containers/image prompts only when both standard input and output are terminals."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def ask(items: Sequence[str], label: str = LABEL) -> str | None:
    """Let the user pick one of `items` on the terminal; None when they give up."""
    import termios
    import tty

    selection = Selection(tuple(items))
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    out = sys.stdout
    drawn = 0
    try:
        tty.setraw(fd)
        out.write("\x1b[?25l")  # hide the cursor while choosing
        while True:
            lines = render(selection, label)
            out.write(redraw(drawn, lines))
            out.flush()
            drawn = len(lines)
            if selection.state != "choosing":
                break
            data = os.read(fd, 64)
            if not data:
                selection = selection._replace(state="cancelled")
                continue
            for key in split_keys(data.decode(errors="replace")):
                selection = on_key(selection, key)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write("\x1b[?25h\r\n")
        out.flush()
    return selection.choice if selection.state == "chosen" else None
