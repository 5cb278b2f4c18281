"""The part of Go's text/template that `--format` users write: `{{.Host.Kernel}}`, `{{json .}}`.

Field names match the data's keys case-insensitively, so the Go-style `{{.Store.GraphRoot}}`
finds the JSON key `graphRoot`, as it does with podman. Literal `\\t` and `\\n` in the format
become a tab and a newline, as podman's report package does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rootless.errors import RlError

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_FIELD = re.compile(r"^\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?$")


def is_template(fmt: str) -> bool:
    return "{{" in fmt


def render(fmt: str, data: Any) -> str:
    """`fmt` filled from `data`; one line, ending in a newline as podman prints it."""
    out: list[str] = []
    position = 0
    for match in _ACTION.finditer(fmt):
        out.append(_unescape(fmt[position : match.start()]))
        out.append(_action(match.group(1), data, fmt))
        position = match.end()
    out.append(_unescape(fmt[position:]))
    text = "".join(out)
    return text if text.endswith("\n") else text + "\n"


def _action(action: str, data: Any, fmt: str) -> str:
    words = action.split()
    if len(words) == 2 and words[0] == "json" and _FIELD.match(words[1]):
        return json.dumps(lookup(words[1], data, fmt), ensure_ascii=False)
    if len(words) == 1 and _FIELD.match(words[0]):
        return format_value(lookup(words[0], data, fmt))
    raise RlError(
        f"template: {fmt!r}: unsupported action {{{{{action}}}}}: "
        "use {{.Field.Subfield}} or {{json .Field}}"
    )


def lookup(path: str, data: Any, fmt: str = "") -> Any:
    value = data
    for name in [p for p in path.split(".") if p]:
        if not isinstance(value, dict):
            raise RlError(f"template: {fmt or path!r}: can't evaluate field {name}")
        if name in value:
            value = value[name]
            continue
        matches = [k for k in value if isinstance(k, str) and k.lower() == name.lower()]
        if not matches:
            raise RlError(f"template: {fmt or path!r}: can't evaluate field {name}")
        value = value[matches[0]]
    return value


def format_value(value: Any) -> str:
    """Scalars as Go prints them; maps and lists as compact JSON (unambiguous to parse)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _unescape(text: str) -> str:
    return text.replace("\\t", "\t").replace("\\n", "\n")
