"""`rl manifest inspect`'s rendering: Go's json.Indent over the registry's bytes."""

from __future__ import annotations

import json

import pytest

from rootless.errors import RlError
from rootless.registry.remote import indent_json, render_manifest


def test_indent_like_go() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"digest": "sha256:ab", "size": 401, "platform": {"os": "linux"}}],
    }
    compact = json.dumps(doc, separators=(",", ":"))
    assert indent_json(compact) == json.dumps(doc, indent=4)
    assert indent_json(json.dumps(doc)) == json.dumps(doc, indent=4)  # ", " and ": " input


def test_empty_containers_stay_on_one_line() -> None:
    assert indent_json('{"a":[],"b":{},"c":[ ]}') == '{\n    "a": [],\n    "b": {},\n    "c": []\n}'
    assert indent_json("[]") == "[]"


def test_strings_and_numbers_are_kept_byte_for_byte() -> None:
    text = '{"k":"a, {b}: [c] \\" \\u003c","n":1.0e3,"z":-0}'
    assert (
        indent_json(text)
        == '{\n    "k": "a, {b}: [c] \\" \\u003c",\n    "n": 1.0e3,\n    "z": -0\n}'
    )


def test_leading_whitespace_dropped_key_order_kept() -> None:
    assert indent_json('\n  {"z":1,"a":2}') == '{\n    "z": 1,\n    "a": 2\n}'


def test_render_refuses_what_is_not_json() -> None:
    with pytest.raises(RlError, match="not JSON"):
        render_manifest(b"<html>", "example.com/a:b")
    assert render_manifest(b'{"a":1}', "x") == '{\n    "a": 1\n}'
