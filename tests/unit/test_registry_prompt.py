"""The short-name prompt's pure core: keys, drawing, redraw sequences."""

from __future__ import annotations

from rootless.registry.prompt import Selection, on_key, redraw, render, split_keys

ITEMS = ("a.example/app:latest", "b.example/app:latest", "c.example/app:latest")


def test_render_like_promptui() -> None:
    assert render(Selection(ITEMS)) == [
        "? Please select an image: ",
        "  ▸ a.example/app:latest",
        "    b.example/app:latest",
        "    c.example/app:latest",
    ]


def test_keys_move_choose_and_cancel() -> None:
    selection = Selection(ITEMS)
    for key in ["\x1b[B", "j", "\x1b[B"]:  # the last one stays at the bottom
        selection = on_key(selection, key)
    assert selection.cursor == 2
    selection = on_key(on_key(selection, "\x1b[A"), "x")
    assert selection.cursor == 1 and selection.state == "choosing"
    chosen = on_key(selection, "\r")
    assert chosen.state == "chosen" and chosen.choice == "b.example/app:latest"
    assert render(chosen) == ["✔ b.example/app:latest"]
    assert on_key(chosen, "\x1b[B") == chosen  # nothing after the choice
    assert on_key(Selection(ITEMS), "\x03").state == "cancelled"
    assert on_key(Selection(ITEMS), "k").cursor == 0


def test_split_keys() -> None:
    assert split_keys("\x1b[B\x1b[Bj\r") == ["\x1b[B", "\x1b[B", "j", "\r"]
    assert split_keys("\x1bOA") == ["\x1bOA"]
    assert split_keys("\x1b") == ["\x1b"]


def test_redraw() -> None:
    assert redraw(0, ["x", "y"]) == "x\r\ny"
    assert redraw(1, ["x"]) == "\r\x1b[Jx"
    assert redraw(4, ["✔ a"]) == "\r\x1b[3A\x1b[J✔ a"
