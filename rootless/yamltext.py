"""Nested dicts and lists as block YAML, in the shape `podman info` prints (keys sorted).

Hand-written so `rl info` does not pay for importing a YAML library. Strings that YAML would
read as something else (numbers, booleans, null, or text with YAML syntax in it) are written
double-quoted, so the output always reads back as the same data.
"""

from __future__ import annotations

import re
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z0-9_/.][A-Za-z0-9_/.,@+()=-]*(?: [A-Za-z0-9_/.,@+()=-]+)*$")
_NOT_PLAIN = re.compile(
    r"^(?:~|null|true|false|yes|no|on|off|y|n"  # words YAML 1.1 reads as null or booleans
    r"|[-+]?(?:\d[\d_]*)?(?:\.[\d_]*)?(?:e[-+]?\d+)?"  # anything number-like
    r"|[-+]?\.(?:inf|nan)|0x[0-9a-f_]+|0o?[0-7_]+|[-+]?[\d_]+(?::[0-5]?\d)+(?:\.\d*)?"
    r"|\d{4}-\d\d?-\d\d?.*|<<|=)$",
    re.IGNORECASE,
)


def dump(data: dict[str, Any]) -> str:
    lines: list[str] = []
    _mapping(data, 0, lines)
    return "".join(line + "\n" for line in lines)


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and not _NOT_PLAIN.fullmatch(text):
        return text
    return _quoted(text)


def _float(value: float) -> str:
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" in text and "." not in text:  # YAML 1.1 floats need a dot: 1e+20 -> 1.0e+20
        mantissa, _, exponent = text.partition("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _quoted(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch.isprintable() and ch not in "\u2028\u2029\ufeff":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _mapping(data: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key in sorted(data, key=str):
        value = data[key]
        name = scalar(str(key))
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{name}:")
            _mapping(value, indent + 2, lines)
        elif isinstance(value, (list, tuple)) and value:
            lines.append(f"{pad}{name}:")
            _sequence(list(value), indent, lines)  # block lists sit at the key's indent
        else:
            lines.append(f"{pad}{name}: {_leaf(value)}")


def _sequence(items: list[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if isinstance(item, dict) and item:
            nested: list[str] = []
            _mapping(item, indent + 2, nested)
            first, rest = nested[0], nested[1:]
            lines.append(f"{pad}- {first[indent + 2 :]}")
            lines.extend(rest)
        elif isinstance(item, (list, tuple)) and item:
            nested = []
            _sequence(list(item), indent + 2, nested)
            lines.append(f"{pad}- {nested[0][indent + 2 :]}")
            lines.extend(nested[1:])
        else:
            lines.append(f"{pad}- {_leaf(item)}")


def _leaf(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return scalar(value)
