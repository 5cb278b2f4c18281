"""Go's text/template as podman's `--format` uses it: the evaluator and the entry points (the
syntax is rootless.goparse, Go's value printing rootless.goprintf, table alignment
rootless.tabwriter).

Entry points: render(fmt, obj) for one object; render_rows(fmt, rows) for a list command;
render_table(fmt, rows, headers) for `table …` formats; execute(template, data) runs a template
as is. Every failure is a TemplateError (an RlError): `template: 1:3: at <.Foo>: …`.

Supported: text and `{{actions}}`, trim markers `{{- ` and ` -}}`, comments `{{/* */}}`, `.`,
`$`, fields `.A.B` (also on variables and parenthesised results), variables (`$x := …`,
`$x = …`, `range $i, $e := …`), pipelines with `|`, literals (strings with Go escapes, raw
strings, runes, numbers, true/false/nil), `if`/`else if`/`else`, `range` (lists, maps in key
order, integers; `else`, `break`, `continue`), `with`/`else with`, Go's builtin functions (and
or not len index slice print printf println eq ne lt le gt ge html js urlquery) and the ones
podman adds (json lower upper title split join truncate pad). `define`/`template`/`block` and
`call` are not supported (podman's formats never need them).

rl's data are dicts with podman's JSON keys, so fields match keys exactly first, then
case-insensitively (`{{.Store.GraphRoot}}` finds `graphRoot`). A dict stands for a Go struct
unless it holds a Go map (labels, annotations, options… or keys that are not identifiers): a
missing field of a struct is an error naming the valid fields (podman: "can't evaluate field");
a missing map key prints `<no value>`, as Go does.

Values print as Go prints them: `[a b]`, `map[k:v]`, `<no value>`, `true`, `3`, `1e+06`. As
podman does, literal `\\t` and `\\n` in the format become a tab and a newline, and a `table `
prefix (render_table) makes tab-aligned columns under a header row.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from rootless import goprintf
from rootless.goparse import (
    Action,
    Break,
    Chain,
    Command,
    Continue,
    Control,
    Dot,
    Field,
    Function,
    Literal,
    Nil,
    Node,
    Pipeline,
    TemplateError,
    Text,
    Variable,
    fail_at,
    is_word_char,
    parse,
)
from rootless.tabwriter import tabwrite

# --- values ---------------------------------------------------------------------------------------

# Keys whose values are Go maps in podman's structs: missing keys there are <no value>.
_MAP_FIELDS = frozenset(
    ["labels", "annotations", "options", "status", "graphoptions", "graphstatus", "registries"]
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Map(dict[str, Any]):
    """A dict that holds a Go map (labels, options…) rather than a struct."""


class _Header(str):
    """A column header standing in for a field's value while render_table makes its header row."""


class _HeaderRow(dict[str, str]):
    """The header row's data: every field is its column header (podman's overrides first)."""


def _is_map(value: dict[Any, Any]) -> bool:
    if isinstance(value, _Map):
        return True
    return any(not (isinstance(k, str) and _IDENTIFIER.match(k)) for k in value)


def _child(key: str, value: Any) -> Any:
    if type(value) is dict and key.lower() in _MAP_FIELDS:
        return _Map(value)
    return value


def truth(value: Any) -> bool:
    """Go's notion of true in `if`, `with`, `and`, `or`, `not`: not the zero value, not empty."""
    return bool(value)


def print_value(value: Any) -> str:
    """What `{{pipeline}}` writes for a value."""
    return "<no value>" if value is None else goprintf.format_value(value)


def camel_words(name: str) -> list[str]:
    """A Go field name split into words as podman's headers do: CreatedAt -> Created At,
    CIDFile -> CID File."""
    runs: list[str] = []
    for char in name:
        kind = "l" if char.islower() else "u" if char.isupper() else "d" if char.isdigit() else "o"
        if runs and _run_kind(runs[-1]) == kind:
            runs[-1] += char
        else:
            runs.append(char)
    for i in range(len(runs) - 1):
        if _run_kind(runs[i]) == "u" and _run_kind(runs[i + 1]) == "l":
            runs[i + 1] = runs[i][-1] + runs[i + 1]
            runs[i] = runs[i][:-1]
    return [r for r in runs if r]


def _run_kind(run: str) -> str:
    c = run[-1]
    return "l" if c.islower() else "u" if c.isupper() else "d" if c.isdigit() else "o"


def header_name(field_name: str, overrides: Mapping[str, str] | None = None) -> str:
    """The column header podman prints for a field: its override, else its words upper-cased."""
    if overrides:
        if field_name in overrides:
            return overrides[field_name]
        for key, value in overrides.items():
            if key.lower() == field_name.lower():
                return value
    return " ".join(camel_words(field_name)).upper()


def to_json(value: Any) -> str:
    """podman's `json`: Go's json.Marshal without HTML escaping; maps sorted, structs in order."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, str):
        text = json.dumps(str(value), ensure_ascii=False)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, dict):
        items = list(value.items())
        if _is_map(value):
            items.sort(key=lambda kv: str(kv[0]))
        return (
            "{"
            + ",".join(f"{to_json(str(k))}:{to_json(_child(str(k), v))}" for k, v in items)
            + "}"
        )
    return to_json(str(value))


def _json_float(value: float) -> str:
    if not math.isfinite(value):
        raise _CallError(f"json: unsupported value: {goprintf.format_value(value)}")
    from decimal import Decimal

    digits = Decimal(repr(value))
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return format(digits.normalize(), "e").replace("E", "e")
    text = format(digits, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# --- functions ------------------------------------------------------------------------------------


class _CallError(Exception):
    """A function's own failure: reported as `error calling NAME: …`, as Go does."""


@dataclass(frozen=True, slots=True)
class _Func:
    call: Callable[..., Any]
    params: tuple[str, ...]  # per parameter: any, string, int or list
    variadic: str | None = None  # the type of any further arguments


_GO_TYPES = {"string": "string", "int": "int", "list": "[]string"}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "list":
        return isinstance(value, (list, tuple))
    return True


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("string", str)):
        if isinstance(value, types):
            return kind
    return "other"


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise _CallError("missing argument for comparison")
    for other in others:
        kinds = (_kind(first), _kind(other))
        if "nil" in kinds:
            if kinds == ("nil", "nil"):
                return True
            continue
        if "other" in kinds:
            raise _CallError(f"non-comparable type {goprintf.type_name(first)}")
        if kinds[0] != kinds[1]:
            raise _CallError("incompatible types for comparison")
        if first == other:
            return True
    return False


def _lt(first: Any, second: Any) -> bool:
    kinds = (_kind(first), _kind(second))
    if any(k in ("nil", "bool", "other") for k in kinds):
        raise _CallError("invalid type for comparison")
    if kinds[0] != kinds[1]:
        raise _CallError("incompatible types for comparison")
    return bool(first < second)


def _len(item: Any) -> int:
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, dict)):
        return len(item)
    if item is None:
        raise _CallError("len of nil pointer")
    raise _CallError(f"len of type {goprintf.type_name(item)}")


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, _Header):
            item = _Header(str(key).upper()) if isinstance(key, str) else item
        elif isinstance(item, (list, tuple, str)):
            if _kind(key) != "int":
                raise _CallError(f"cannot index slice/array with type {goprintf.type_name(key)}")
            sequence = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(sequence):
                raise _CallError(f"index out of range: {key}")
            item = sequence[key]
        elif isinstance(item, dict):
            if not isinstance(key, str):
                raise _CallError(f"value has type {goprintf.type_name(key)}; should be string")
            if key in item:
                item = _child(key, item[key])
            else:  # the zero value: "" in a map of strings such as labels, else nil
                item = "" if all(isinstance(v, str) for v in item.values()) else None
        elif item is None:
            raise _CallError("index of untyped nil")
        else:
            raise _CallError(f"can't index item of type {goprintf.type_name(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    if len(indexes) > 3:
        raise _CallError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _CallError("cannot 3-index slice a string")
        sequence: bytes | list[Any] = item.encode()
    elif isinstance(item, (list, tuple)):
        sequence = list(item)
    elif item is None:
        raise _CallError("slice of untyped nil")
    else:
        raise _CallError(f"can't slice item of type {goprintf.type_name(item)}")
    bounds: list[int] = []
    for index in indexes:
        if _kind(index) != "int":
            raise _CallError(f"cannot index slice/array with type {goprintf.type_name(index)}")
        if not 0 <= index <= len(sequence):
            raise _CallError(f"index out of range: {index}")
        bounds.append(index)
    for low, high in itertools.pairwise(bounds):
        if low > high:
            raise _CallError(f"invalid slice index: {low} > {high}")
    low = bounds[0] if bounds else 0
    high = bounds[1] if len(bounds) > 1 else len(sequence)
    result = sequence[low:high]
    return result.decode("utf-8", "replace") if isinstance(result, bytes) else result


def _escaper_text(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return goprintf.sprint(*args)


def _html(*args: Any) -> str:
    text = _escaper_text(args)
    for plain, escaped in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(plain, escaped)
    return text.replace('"', "&#34;").replace("\0", "\ufffd")


_JS_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E"}
_JS_ESCAPES |= {"&": "\\u0026", "=": "\\u003D"}


def _js(*args: Any) -> str:
    out: list[str] = []
    for c in _escaper_text(args):
        if c in _JS_ESCAPES:
            out.append(_JS_ESCAPES[c])
        elif ord(c) < 0x20 or not c.isprintable():
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_escaper_text(args), safe="")


def _title(text: str) -> str:
    """strings.Title: upper-case each letter that follows a separator (space, punctuation)."""
    out: list[str] = []
    previous = " "
    for c in text:
        separator = not (is_word_char(previous)) if previous.isascii() else previous.isspace()
        upper = c.upper()
        out.append(upper if separator and len(upper) == 1 else c)
        previous = c
    return "".join(out)


def _split(text: str, separator: str) -> list[str]:
    return list(text) if separator == "" else text.split(separator)


def _join(items: Sequence[Any], separator: str) -> str:
    return separator.join(i if isinstance(i, str) else goprintf.format_value(i) for i in items)


def _truncate(text: str, length: int) -> str:
    if length < 0:
        raise _CallError(f"negative length {length}")
    data = text.encode()
    return text if len(data) < length else data[:length].decode("utf-8", "replace")


def _pad(text: str, prefix: int, suffix: int) -> str:
    if prefix < 0 or suffix < 0:
        raise _CallError("negative padding")
    return text and " " * prefix + text + " " * suffix


_FUNCTIONS: dict[str, _Func] = {
    "and": _Func(lambda *a: a, ("any",), "any"),  # evaluated lazily by the executor
    "or": _Func(lambda *a: a, ("any",), "any"),
    "not": _Func(lambda v: not truth(v), ("any",)),
    "len": _Func(_len, ("any",)),
    "index": _Func(_index, ("any",), "any"),
    "slice": _Func(_slice, ("any",), "any"),
    "print": _Func(goprintf.sprint, (), "any"),
    "printf": _Func(goprintf.sprintf, ("string",), "any"),
    "println": _Func(goprintf.sprintln, (), "any"),
    "eq": _Func(_eq, ("any",), "any"),
    "ne": _Func(lambda a, b: not _eq(a, b), ("any", "any")),
    "lt": _Func(_lt, ("any", "any")),
    "le": _Func(lambda a, b: _lt(a, b) or _eq(a, b), ("any", "any")),
    "gt": _Func(lambda a, b: not (_lt(a, b) or _eq(a, b)), ("any", "any")),
    "ge": _Func(lambda a, b: not _lt(a, b), ("any", "any")),
    "html": _Func(_html, (), "any"),
    "js": _Func(_js, (), "any"),
    "urlquery": _Func(_urlquery, (), "any"),
    # podman's additions (containers/common report.DefaultFuncs)
    "json": _Func(to_json, ("any",)),
    "lower": _Func(str.lower, ("string",)),
    "upper": _Func(str.upper, ("string",)),
    "title": _Func(_title, ("string",)),
    "split": _Func(_split, ("string", "string")),
    "join": _Func(_join, ("list", "string")),
    "truncate": _Func(_truncate, ("string", "int")),
    "pad": _Func(_pad, ("string", "int", "int")),
}

# In the header row these return the header itself: their real work needs a row's value.
_HEADER_PASSTHROUGH = frozenset(["join", "len", "slice"])


# --- evaluator ------------------------------------------------------------------------------------

_MISSING: Any = object()  # no value piped in from a previous command


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Executor:
    def __init__(self, src: str, data: Any) -> None:
        self.src = src
        self.variables: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []

    def fail(self, node: Node, message: str) -> NoReturn:
        fail_at(self.src, node.pos, f"at <{node.source}>: {message}")

    def walk(self, dot: Any, nodes: Sequence[Node]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipeline(dot, node.pipeline)
                if not node.pipeline.decl:
                    self.out.append(print_value(value))
            elif isinstance(node, Control):
                mark = len(self.variables)
                try:
                    if node.keyword == "range":
                        self.range(dot, node)
                    else:
                        value = self.pipeline(dot, node.pipeline)
                        if truth(value):
                            self.walk(value if node.keyword == "with" else dot, node.body)
                        elif node.else_body is not None:
                            self.walk(dot, node.else_body)
                finally:
                    del self.variables[mark:]
            elif isinstance(node, Break):
                raise _Break
            elif isinstance(node, Continue):
                raise _Continue

    def range(self, dot: Any, node: Control) -> None:
        value = self.pipeline(dot, node.pipeline)
        items: list[tuple[Any, Any]]
        if isinstance(value, _Header):
            items = [(0, value)]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif isinstance(value, dict):
            items = [(k, _child(str(k), value[k])) for k in sorted(value, key=str)]
        elif _kind(value) == "int":
            items = [(i, i) for i in range(value)]
        elif value is None:
            items = []
        else:
            self.fail(node.pipeline, f"range can't iterate over {print_value(value)}")
        if not items:
            if node.else_body is not None:
                self.walk(dot, node.else_body)
            return
        decl = node.pipeline.decl
        mark = len(self.variables)
        for key, element in items:
            values = (key, element) if len(decl) == 2 else (element,)
            for name, val in zip(decl, values[-len(decl) :] if decl else (), strict=True):
                self.set_variable(node.pipeline, name, val)
            try:
                self.walk(element, node.body)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                del self.variables[mark:]

    def set_variable(self, node: Node, name: str, value: Any) -> None:
        """Assign to the innermost variable of that name."""
        for i in range(len(self.variables) - 1, -1, -1):
            if self.variables[i][0] == name:
                self.variables[i] = (name, value)
                return
        self.fail(node, f'undefined variable "{name}"')  # the parser makes this unreachable

    def variable(self, node: Variable) -> Any:
        for name, value in reversed(self.variables):
            if name == node.name:
                return value
        self.fail(node, f'undefined variable "{node.name}"')

    def pipeline(self, dot: Any, pipeline: Pipeline) -> Any:
        value = _MISSING
        for command in pipeline.commands:
            value = self.command(dot, command, value)
        for name in pipeline.decl:
            if pipeline.is_assign:
                self.set_variable(pipeline, name, value)
            else:
                self.variables.append((name, value))
        return value

    def command(self, dot: Any, command: Command, final: Any) -> Any:
        first = command.args[0]
        if isinstance(first, Function):
            return self.call(dot, first, command.args[1:], final, command)
        has_args = len(command.args) > 1 or final is not _MISSING
        if isinstance(first, Nil):
            self.fail(first, "nil is not a command")
        if has_args:
            if isinstance(first, (Field, Variable)) and first.names:
                self.fail(
                    first, f"{first.names[-1]} has arguments but cannot be invoked as function"
                )
            self.fail(first, f"can't give argument to non-function {first.source}")
        return self.argument(dot, first)

    def argument(self, dot: Any, node: Node) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Nil):
            return None
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Field):
            return self.fields(node, dot, node.names)
        if isinstance(node, Variable):
            return self.fields(node, self.variable(node), node.names)
        if isinstance(node, Chain):
            return self.fields(node, self.argument(dot, node.node), node.names)
        if isinstance(node, Pipeline):
            return self.pipeline(dot, node)
        if isinstance(node, Function):
            return self.call(dot, node, (), _MISSING, node)
        self.fail(node, "cannot evaluate")

    def fields(self, node: Node, value: Any, names: Sequence[str]) -> Any:
        for name in names:
            value = self.field(node, value, name)
        return value

    def field(self, node: Node, receiver: Any, name: str) -> Any:
        if isinstance(receiver, _HeaderRow):
            return _Header(header_name(name, receiver))
        if isinstance(receiver, _Header):
            return _Header(header_name(name))
        if isinstance(receiver, dict):
            if name in receiver:
                return _child(name, receiver[name])
            folded = name.lower()
            for key in receiver:
                if isinstance(key, str) and key.lower() == folded:
                    return _child(key, receiver[key])
            if _is_map(receiver):
                return None
            valid = ", ".join(str(k) for k in receiver) or "none"
            self.fail(node, f'field "{name}" not found; valid fields: {valid}')
        if receiver is None:
            self.fail(node, f"nil pointer evaluating interface {{}}.{name}")
        self.fail(node, f"can't evaluate field {name} in type {goprintf.type_name(receiver)}")

    def call(
        self, dot: Any, function: Function, arg_nodes: Sequence[Node], final: Any, context: Node
    ) -> Any:
        name = function.name
        spec = _FUNCTIONS[name]
        count = len(arg_nodes) + (final is not _MISSING)
        need = len(spec.params)
        if count < need or (spec.variadic is None and count > need):
            at_least = "at least " if spec.variadic else ""
            self.fail(
                context, f"wrong number of args for {name}: want {at_least}{need} got {count}"
            )
        if name in ("and", "or"):  # short-circuit: later arguments are not evaluated
            value: Any = None
            for i in range(count):
                value = final if i == len(arg_nodes) else self.argument(dot, arg_nodes[i])
                if truth(value) != (name == "and"):
                    return value
            return value
        args = [self.argument(dot, node) for node in arg_nodes]
        if final is not _MISSING:
            args.append(final)
        if name in _HEADER_PASSTHROUGH:
            for arg in args:
                if isinstance(arg, _Header):
                    return arg
        for i, arg in enumerate(args):
            kind = spec.params[i] if i < need else spec.variadic or "any"
            if not _type_ok(kind, arg):
                where = arg_nodes[i] if i < len(arg_nodes) else context
                self.fail(
                    where,
                    f"wrong type for value; expected {_GO_TYPES[kind]}; "
                    f"got {goprintf.type_name(arg)}",
                )
        try:
            return spec.call(*args)
        except _CallError as error:
            self.fail(context, f"error calling {name}: {error}")


# --- entry points ---------------------------------------------------------------------------------


def execute(template: str, data: Any) -> str:
    """The template run on `data`, exactly (no escapes, no newline added)."""
    return _run(template, parse(template, _FUNCTIONS), data)


def _run(template: str, nodes: Sequence[Node], data: Any) -> str:
    executor = _Executor(template, data)
    try:
        executor.walk(data, nodes)
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    return "".join(executor.out)


def is_template(fmt: str) -> bool:
    return "{{" in fmt


_ACTION_OR_TEXT = re.compile(r"(\{\{.*?\}\})", re.DOTALL)


def _unescape(text: str, *, spaces_to_tabs: bool = False) -> str:
    """podman's rewriting of the text between actions: the two-character sequences \\t and \\n
    become a tab and a newline; for tables, spaces become tabs (column separators)."""
    parts = _ACTION_OR_TEXT.split(text)
    for i in range(0, len(parts), 2):  # the even parts are the text between actions
        parts[i] = parts[i].replace("\\t", "\t").replace("\\n", "\n")
        if spaces_to_tabs:
            parts[i] = parts[i].replace(" ", "\t")
    return "".join(parts)


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def render(fmt: str, data: Any) -> str:
    """`fmt` (podman's `--format`) run on one object, ending in a newline as podman prints it."""
    return execute(_with_newline(_unescape(fmt)), data)


_RANGE_OVER_ALL = re.compile(r"\s*\{\{-?\s*range\s+\.\s*-?\}\}")


def render_rows(fmt: str, rows: Sequence[Any]) -> str:
    """`--format` for a list command: once per row, or once over the whole list when the format
    starts with `{{range .}}` (podman's rule)."""
    template = _with_newline(_unescape(fmt))
    if _RANGE_OVER_ALL.match(template):
        return execute(template, list(rows))
    nodes = parse(template, _FUNCTIONS)  # once; a bad template fails even with no rows
    return "".join(_run(template, nodes, row) for row in rows)


def render_table(
    fmt: str,
    rows: Sequence[Any],
    headers: Mapping[str, str] | None = None,
    *,
    heading: bool = True,
) -> str:
    """podman's `table …` format: the rest of `fmt` run on a header row and on every row, in
    columns aligned like Go's tabwriter (spaces between actions separate columns, as in podman).

    The header row runs the same template on data where every field is its column header:
    `headers` (podman's names, e.g. {"ID": "IMAGE ID"}) or the field's words upper-cased
    (CreatedAt -> CREATED AT).
    """
    body = fmt[len("table") :].removeprefix(" ") if fmt.startswith("table") else fmt
    template = _with_newline(_unescape(body, spaces_to_tabs=True))
    nodes = parse(template, _FUNCTIONS)
    data: list[Any] = ([_HeaderRow(headers or {})] if heading else []) + list(rows)
    return tabwrite("".join(_run(template, nodes, item) for item in data))
