"""Go's fmt printing for JSON-like Python values: what `{{.X}}`, `print` and `printf` write.

Python values stand for the Go values podman's templates see: None is a nil interface, int is
int, float is float64, str is string, a list is []interface {} and a dict is a map (printed
`map[k:v]` with sorted keys, as fmt does since Go 1.12). Wrong verbs print Go's inline
complaints (`%!d(string=x)`), never raise: that is what Go does.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

_FLAGS = "+-# 0"


def type_name(value: Any) -> str:
    """The Go type `%T` names for a value decoded from JSON."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def sprint(*args: Any) -> str:
    """fmt.Sprint: a space between two operands only when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(format_value(arg))
    return "".join(out)


def sprintln(*args: Any) -> str:
    return " ".join(format_value(a) for a in args) + "\n"


def format_value(value: Any) -> str:
    """`%v`."""
    return _format(value, _Spec("v"))


class _Spec:
    """One parsed `%` directive: flags, width, precision and verb."""

    __slots__ = ("minus", "plus", "precision", "sharp", "space", "verb", "width", "zero")

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.minus = self.plus = self.sharp = self.space = self.zero = False
        self.width: int | None = None
        self.precision: int | None = None


def sprintf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf for the verbs templates use: v s q d b o O x X c U e E f F g G t T %."""
    out: list[str] = []
    arg_index = 0
    i, n = 0, len(fmt)
    while i < n:
        percent = fmt.find("%", i)
        if percent < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:percent])
        i = percent + 1
        spec = _Spec("")
        while i < n and fmt[i] in _FLAGS:
            flag = fmt[i]
            spec.minus |= flag == "-"
            spec.plus |= flag == "+"
            spec.sharp |= flag == "#"
            spec.space |= flag == " "
            spec.zero |= flag == "0"
            i += 1
        spec.width, i, arg_index, bad = _number(fmt, i, args, arg_index)
        if bad:
            out.append("%!(BADWIDTH)")
        if spec.width is not None and spec.width < 0:  # Go: a negative `*` width means `-`
            spec.minus, spec.width = True, -spec.width
        if i < n and fmt[i] == ".":
            i += 1
            spec.precision, i, arg_index, bad = _number(fmt, i, args, arg_index)
            if bad or (spec.precision is not None and spec.precision < 0):
                out.append("%!(BADPREC)")
                spec.precision = None
            elif spec.precision is None:
                spec.precision = 0
        if i >= n:
            out.append("%!(NOVERB)")
            break
        spec.verb = fmt[i]
        i += 1
        if spec.verb == "%":
            out.append("%")
        elif arg_index >= len(args):
            out.append(f"%!{spec.verb}(MISSING)")
        else:
            out.append(_format(args[arg_index], spec))
            arg_index += 1
    if arg_index < len(args):
        extra = ", ".join(_bad_operand(a) for a in args[arg_index:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _number(
    fmt: str, i: int, args: tuple[Any, ...], arg_index: int
) -> tuple[int | None, int, int, bool]:
    """A width or precision: digits, or `*` taking an int argument. Returns (value, i, arg, bad)."""
    if i < len(fmt) and fmt[i] == "*":
        if arg_index < len(args):
            arg = args[arg_index]
            if isinstance(arg, int) and not isinstance(arg, bool):
                return arg, i + 1, arg_index + 1, False
        return None, i + 1, arg_index + 1, True
    start = i
    while i < len(fmt) and fmt[i].isdigit():
        i += 1
    return (int(fmt[start:i]) if i > start else None), i, arg_index, False


def _bad_operand(value: Any) -> str:
    return "<nil>" if value is None else f"{type_name(value)}={format_value(value)}"


def _bad_verb(value: Any, spec: _Spec) -> str:
    return f"%!{spec.verb}({_bad_operand(value)})"


def _format(value: Any, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "T":
        return _pad(type_name(value), spec)
    if value is None:
        return _pad("<nil>", spec) if verb == "v" else _bad_verb(value, spec)
    if isinstance(value, bool):
        if verb in "vt":
            return _pad("true" if value else "false", spec)
        return _bad_verb(value, spec)
    if isinstance(value, int):
        return _format_int(value, spec)
    if isinstance(value, float):
        return _format_float(value, spec)
    if isinstance(value, str):
        return _format_str(value, spec)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_element(v, spec) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _sort_key(kv[0]))
        return "map[" + " ".join(f"{_element(k, spec)}:{_element(v, spec)}" for k, v in items) + "]"
    return _pad(str(value), spec)


def _element(value: Any, spec: _Spec) -> str:
    # A nil inside a slice or map prints <nil> whatever the verb.
    return "<nil>" if value is None else _format(value, spec)


def _sort_key(key: Any) -> tuple[int, Any]:
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        return (0, key)
    return (1, str(key))


def _pad(text: str, spec: _Spec, *, numeric: bool = False) -> str:
    width = spec.width
    if width is None or len(text) >= width:
        return text
    if spec.minus:
        return text + " " * (width - len(text))
    if spec.zero:
        if numeric and text[:1] in "+- ":
            return text[0] + "0" * (width - len(text)) + text[1:]
        return "0" * (width - len(text)) + text
    return " " * (width - len(text)) + text


def _sign(negative: bool, spec: _Spec) -> str:
    if negative:
        return "-"
    return "+" if spec.plus else " " if spec.space else ""


def _format_int(value: int, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "c":
        return _pad(_rune(value), spec)
    if verb == "q":
        return _pad(_quote_rune(value), spec)
    if verb == "U":
        text = f"U+{value:04X}"
        if spec.sharp and 0 <= value <= 0x10FFFF and _rune(value).isprintable():
            text += f" '{_rune(value)}'"
        return _pad(text, spec)
    bases = {"d": "d", "v": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}
    if verb not in bases:
        return _bad_verb(value, spec)
    digits = format(abs(value), bases[verb])
    if spec.precision is not None:
        digits = digits.zfill(spec.precision) if spec.precision else digits.lstrip("0")
    prefix = ""
    if verb == "O" or (spec.sharp and verb == "o" and not digits.startswith("0")):
        prefix = "0o" if verb == "O" else "0"
    elif spec.sharp and verb in "bxX":
        prefix = {"b": "0b", "x": "0x", "X": "0X"}[verb]
    text = _sign(value < 0, spec) + prefix + digits
    if spec.precision is not None:  # Go: a precision turns off zero padding
        spec = _copy(spec, zero=False)
    return _pad(text, spec, numeric=True)


def _copy(spec: _Spec, *, zero: bool) -> _Spec:
    new = _Spec(spec.verb)
    for name in _Spec.__slots__:
        setattr(new, name, getattr(spec, name))
    new.zero = zero
    return new


def _rune(value: int) -> str:
    return chr(value) if 0 <= value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF else "\ufffd"


def _format_float(value: float, spec: _Spec) -> str:
    verb = spec.verb
    if verb not in "veEfFgG":
        return _bad_verb(value, spec)
    if math.isinf(value) or math.isnan(value):
        text = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        if value > 0 and not spec.plus:
            text = " Inf" if spec.space else "Inf"
        return _pad(text, _copy(spec, zero=False))
    negative = math.copysign(1.0, value) < 0
    magnitude = abs(value)
    if verb in "vgG" and spec.precision is None:
        body = shortest_float(magnitude, upper=verb == "G", sharp=spec.sharp)
    else:
        py_verb = "f" if verb == "F" else ("g" if verb == "v" else verb)
        precision = 6 if spec.precision is None else spec.precision
        body = format(magnitude, f"{'#' if spec.sharp else ''}.{precision}{py_verb}")
    return _pad(_sign(negative, spec) + body, spec, numeric=True)


def shortest_float(value: float, *, upper: bool = False, sharp: bool = False) -> str:
    """Go's `%v`/`%g` for a float64: the fewest digits that read back, `e` notation when the
    exponent is below -4 or at least 6 (1e+06, 100000, 1.5e-05)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0:
        return sign + "0"
    digits_tuple = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    assert isinstance(digits_tuple.exponent, int)
    exponent = digits_tuple.exponent + len(digits) - 1
    if sharp and len(digits) < 6:
        digits = digits.ljust(6, "0")
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = "E" if upper else "e"
        return f"{sign}{mantissa}{e}{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    whole, fraction = digits[: exponent + 1].ljust(exponent + 1, "0"), digits[exponent + 1 :]
    return sign + whole + ("." + fraction if fraction else "")


def _format_str(value: str, spec: _Spec) -> str:
    verb = spec.verb
    if spec.precision is not None and verb in "svqxX":
        value = value[: spec.precision]
    if verb in "sv":
        return _pad(value, spec)
    if verb == "q":
        if spec.sharp and "`" not in value and all(c == "\t" or c.isprintable() for c in value):
            return _pad(f"`{value}`", spec)
        return _pad(quote(value, ascii_only=spec.plus), spec)
    if verb in "xX":
        hex_bytes = [format(b, "02x" if verb == "x" else "02X") for b in value.encode()]
        prefix = ("0x" if verb == "x" else "0X") if spec.sharp else ""
        if spec.space:
            return _pad(" ".join(prefix + h for h in hex_bytes), spec)
        return _pad(prefix + "".join(hex_bytes), spec)
    return _bad_verb(value, spec)


_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _escape_rune(c: str, quote_char: str, ascii_only: bool) -> str:
    if c == quote_char or c == "\\":
        return "\\" + c
    if c.isprintable() and not (ascii_only and ord(c) > 0x7E):
        return c
    if c in _ESCAPES:
        return _ESCAPES[c]
    code = ord(c)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def quote(text: str, *, ascii_only: bool = False) -> str:
    """strconv.Quote: a double-quoted Go string literal."""
    return '"' + "".join(_escape_rune(c, '"', ascii_only) for c in text) + '"'


def _quote_rune(value: int) -> str:
    return "'" + _escape_rune(_rune(value), "'", False) + "'"
