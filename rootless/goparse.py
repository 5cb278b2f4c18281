"""Go text/template syntax: a lexer and a parser from template text to an AST (rootless.gotemplate
runs it). Errors are TemplateError (an RlError) with the line and column: `template: 1:8: …`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NoReturn

from rootless.errors import RlError
from rootless.goprintf import quote

# --- lexer ----------------------------------------------------------------------------------------

_SPACE = " \t\r\n"
_KEYWORDS = frozenset(
    ["if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"]
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # text open close space ident keyword field var dot string char number bool nil
    #            pipe lparen rparen declare assign comma other eof, and error (a lexing failure)
    text: str  # the source text (for text tokens: the text after trimming)
    pos: int


class TemplateError(RlError):
    """A template that does not parse or cannot be executed on the data."""


def fail_at(src: str, pos: int, message: str) -> NoReturn:
    line = src.count("\n", 0, pos) + 1
    column = pos - (src.rfind("\n", 0, pos) + 1) + 1
    raise TemplateError(f"template: {line}:{column}: {message}")


def is_word_char(c: str) -> bool:
    return c == "_" or c.isalnum()


def lex(src: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(src)
    trim_next = False
    while True:
        start = src.find("{{", i)
        end = n if start < 0 else start
        text = src[i:end]
        if trim_next:
            text = text.lstrip(_SPACE)
        left_trim = start >= 0 and src[start + 2 : start + 4] in ("- ", "-\t", "-\r", "-\n")
        if left_trim:
            text = text.rstrip(_SPACE)
        if text:
            tokens.append(Token("text", text, i))
        if start < 0:
            break
        i = start + (4 if left_trim else 2)
        if src.startswith("/*", i):
            i, trim_next = _lex_comment(src, i)
            continue
        tokens.append(Token("open", "{{", start))
        try:
            i, trim_next = _lex_action(src, i, tokens, start)
        except TemplateError as error:
            # Reported when the parser reaches it, so earlier mistakes are named first, as in Go.
            tokens.append(Token("error", str(error), i))
            return tokens
    tokens.append(Token("eof", "", n))
    return tokens


def _at_close(src: str, i: int) -> int:
    """Length of the closing delimiter at i: 2 for `}}`, 4 for ` -}}`, else 0."""
    if src.startswith("}}", i):
        return 2
    if src[i : i + 1] in {" ", "\t", "\r", "\n"} and src.startswith("-}}", i + 1):
        return 4
    return 0


def _lex_comment(src: str, i: int) -> tuple[int, bool]:
    end = src.find("*/", i + 2)
    if end < 0:
        fail_at(src, i, "unclosed comment")
    close = _at_close(src, end + 2)
    if not close:
        fail_at(src, end, "comment ends before closing delimiter")
    return end + 2 + close, close == 4


def _lex_action(src: str, i: int, tokens: list[Token], start: int) -> tuple[int, bool]:
    """Tokens of one action from i (after `{{` at `start`) to its `}}`."""
    n = len(src)
    depth = 0

    def add(kind: str, start: int, stop: int) -> int:
        tokens.append(Token(kind, src[start:stop], start))
        return stop

    while True:
        if i >= n:
            fail_at(src, start, "unclosed action")
        close = _at_close(src, i)
        if close:
            if depth:
                fail_at(src, i, "unclosed left paren")
            tokens.append(Token("close", "}}", i))
            return i + close, close == 4
        c = src[i]
        nxt = src[i + 1 : i + 2]
        if c in _SPACE:
            j = i
            while j < n and src[j] in _SPACE and not _at_close(src, j):
                j += 1
            i = add("space", i, j) if j > i else i
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                if src[j] == "\n" or (src[j] == "\\" and src[j + 1 : j + 2] in {"", "\n"}):
                    fail_at(src, i, "unterminated quoted string")
                j += 2 if src[j] == "\\" else 1
            if j >= n:
                fail_at(src, i, "unterminated quoted string")
            i = add("string", i, j + 1)
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                fail_at(src, i, "unterminated raw quoted string")
            i = add("rawstring", i, j + 1)
        elif c == "'":
            j = i + 1
            while j < n and src[j] != "'":
                if src[j] == "\n":
                    break
                j += 2 if src[j] == "\\" else 1
            if j >= n or src[j] != "'":
                fail_at(src, i, "unterminated character constant")
            i = add("char", i, j + 1)
        elif c == "$":
            j = i + 1
            while j < n and is_word_char(src[j]):
                j += 1
            i = add("var", i, j)
        elif c == "." and nxt.isdigit():
            i = add("number", i, _scan_number(src, i))
        elif c == ".":
            j = i + 1
            while j < n and is_word_char(src[j]):
                j += 1
            i = add("field" if j > i + 1 else "dot", i, j)
        elif c in "+-" or c.isdigit():
            i = add("number", i, _scan_number(src, i))
        elif c.isalpha() or c == "_":
            j = i
            while j < n and is_word_char(src[j]):
                j += 1
            word = src[i:j]
            kind = "keyword" if word in _KEYWORDS else "ident"
            kind = {"true": "bool", "false": "bool", "nil": "nil"}.get(word, kind)
            i = add(kind, i, j)
        elif c == ":" and nxt == "=":
            i = add("declare", i, i + 2)
        elif c in "=|,()":
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    fail_at(src, i, "unexpected right paren")
            kinds = {"=": "assign", "|": "pipe", ",": "comma", "(": "lparen", ")": "rparen"}
            i = add(kinds[c], i, i + 1)
        else:
            i = add("other", i, i + 1)


_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]+)?"
    r"|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?)"
)


def _scan_number(src: str, i: int) -> int:
    match = _NUMBER.match(src, i)
    end = match.end() if match else i
    if end == i or (end - i == 1 and src[i] in "+-") or (end < len(src) and is_word_char(src[end])):
        stop = end
        while stop < len(src) and (is_word_char(src[stop]) or src[stop] in "+-."):
            stop += 1
        fail_at(src, i, f"bad number syntax: {src[i : max(stop, i + 1)]!r}")
    return end


def _number_value(src: str, token: Token) -> int | float:
    text = token.text.replace("_", "")
    body = text.lstrip("+-")
    negative = text.startswith("-")
    try:
        if body[:2].lower() == "0x" and any(c in body for c in ".pP"):
            value: int | float = float.fromhex(body)
        elif body[:2].lower() in ("0x", "0o", "0b"):
            value = int(body, 0)
        elif any(c in body for c in ".eE"):
            value = float(body)
        elif len(body) > 1 and body.startswith("0"):
            value = int(body, 8)  # Go: a leading 0 means octal
        else:
            value = int(body)
    except ValueError:
        fail_at(src, token.pos, f"bad number syntax: {token.text!r}")
    return -value if negative else value


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def _unquote(src: str, token: Token) -> str:
    """The value of a Go string literal ("…" with escapes, `…` raw) or rune literal body."""
    if token.text.startswith("`"):
        return token.text[1:-1].replace("\r", "")
    quote_char = token.text[0]
    body = token.text[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        e = body[i + 1 : i + 2]
        if e in _SIMPLE_ESCAPES or e == quote_char:
            out += _SIMPLE_ESCAPES.get(e, e).encode()
            i += 2
        elif e and e in "xuU01234567":
            size = {"x": 2, "u": 4, "U": 8}.get(e, 3)
            digits = body[i + 2 : i + 2 + size] if e in "xuU" else body[i + 1 : i + 4]
            base = 8 if e not in "xuU" else 16
            try:
                code = int(digits, base) if len(digits) == size else -1
            except ValueError:
                code = -1
            if code < 0 or (e in "uU" and (code > 0x10FFFF or 0xD800 <= code <= 0xDFFF)):
                fail_at(src, token.pos, f"invalid syntax in {token.text}")
            if e in "uU":
                out += chr(code).encode()
            elif code > 255:
                fail_at(src, token.pos, f"invalid syntax in {token.text}")
            else:
                out.append(code)
            i += (2 if e in "xuU" else 1) + size
        else:
            fail_at(src, token.pos, f"invalid syntax in {token.text}")
    return out.decode("utf-8", "replace")


# --- AST ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    pos: int
    source: str  # the source text, for error messages


@dataclass(frozen=True, slots=True)
class Text(Node):
    text: str


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any  # str, int, float or bool


@dataclass(frozen=True, slots=True)
class Nil(Node):
    pass


@dataclass(frozen=True, slots=True)
class Dot(Node):
    pass


@dataclass(frozen=True, slots=True)
class Field(Node):
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Variable(Node):
    name: str
    names: tuple[str, ...]  # fields after the variable: $x.A.B


@dataclass(frozen=True, slots=True)
class Function(Node):
    name: str


@dataclass(frozen=True, slots=True)
class Chain(Node):
    node: Node  # a parenthesised pipeline, then fields: (…).A.B
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Command(Node):
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Pipeline(Node):
    decl: tuple[str, ...]
    is_assign: bool
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Action(Node):
    pipeline: Pipeline


@dataclass(frozen=True, slots=True)
class Control(Node):
    keyword: str  # if, with or range
    pipeline: Pipeline
    body: tuple[Node, ...]
    else_body: tuple[Node, ...] | None


@dataclass(frozen=True, slots=True)
class Break(Node):
    pass


@dataclass(frozen=True, slots=True)
class Continue(Node):
    pass


_TERM_STARTS = frozenset(
    [
        "ident",
        "dot",
        "nil",
        "var",
        "field",
        "bool",
        "char",
        "number",
        "string",
        "rawstring",
        "lparen",
    ]
)


# --- parser ---------------------------------------------------------------------------------------


def _describe(token: Token) -> str:
    return {"eof": "EOF", "close": "}}", "open": "{{", "space": "space"}.get(
        token.kind, repr(token.text).replace("'", '"') if token.kind != "text" else "text"
    )


class _Parser:
    def __init__(self, src: str, functions: Collection[str]) -> None:
        self.src = src
        self.tokens = lex(src)
        self.index = 0
        self.variables = ["$"]
        self.range_depth = 0
        self.functions = functions

    # token helpers
    def peek(self) -> Token:
        token = self.tokens[self.index]
        if token.kind == "error":
            raise TemplateError(token.text)
        return token

    def next(self) -> Token:
        token = self.peek()
        if token.kind != "eof":
            self.index += 1
        return token

    def skip_space(self) -> None:
        while self.peek().kind == "space":
            self.index += 1

    def peek_non_space(self) -> Token:
        self.skip_space()
        return self.peek()

    def next_non_space(self) -> Token:
        self.skip_space()
        return self.next()

    def fail(self, token: Token, message: str) -> NoReturn:
        fail_at(self.src, token.pos, message)

    def unexpected(self, token: Token, context: str) -> NoReturn:
        if token.kind == "eof":
            self.fail(token, f"unexpected EOF in {context}")
        self.fail(token, f"unexpected {_describe(token)} in {context}")

    def expect_close(self, context: str) -> None:
        token = self.next_non_space()
        if token.kind != "close":
            self.unexpected(token, context)

    def source(self, start: Token) -> str:
        end = self.tokens[self.index - 1]
        return self.src[start.pos : end.pos + len(end.text)].strip()

    # grammar
    def parse(self) -> tuple[Node, ...]:
        nodes, stop = self.parse_list()
        if stop is not None:
            self.fail(stop, f"unexpected {{{{{stop.text}}}}}")
        return nodes

    def parse_list(self) -> tuple[tuple[Node, ...], Token | None]:
        """Nodes up to EOF (stop None) or an `{{end}}`/`{{else` (stop is that keyword)."""
        nodes: list[Node] = []
        while True:
            token = self.next()
            if token.kind == "eof":
                return tuple(nodes), None
            if token.kind == "text":
                nodes.append(Text(token.pos, token.text, token.text))
                continue
            keyword = self.peek_non_space()
            if keyword.kind == "keyword":
                self.next()
                if keyword.text == "end":
                    self.expect_close("end")
                    return tuple(nodes), keyword
                if keyword.text == "else":
                    return tuple(nodes), keyword
                nodes.append(self.parse_keyword(keyword))
            else:
                pipeline = self.parse_pipeline("command", keyword, "close")
                nodes.append(Action(token.pos, pipeline.source, pipeline))

    def parse_keyword(self, keyword: Token) -> Node:
        if keyword.text in ("break", "continue"):
            if not self.range_depth:
                self.fail(keyword, f"{{{{{keyword.text}}}}} outside {{{{range}}}}")
            self.expect_close(keyword.text)
            node_type = Break if keyword.text == "break" else Continue
            return node_type(keyword.pos, keyword.text)
        if keyword.text in ("if", "with", "range"):
            return self.parse_control(keyword)
        self.fail(keyword, f"{{{{{keyword.text}}}}} is not supported in rl's templates")

    def parse_control(self, keyword: Token) -> Control:
        mark = len(self.variables)
        pipeline = self.parse_pipeline(keyword.text, keyword, "close")
        if keyword.text == "range":
            self.range_depth += 1
        body, stop = self.parse_list()
        if keyword.text == "range":
            self.range_depth -= 1
        if stop is None:
            self.fail(self.peek(), f"unexpected EOF: {{{{{keyword.text}}}}} has no {{{{end}}}}")
        else_body: tuple[Node, ...] | None = None
        if stop.text == "else":
            chained = self.peek_non_space()
            if keyword.text in ("if", "with") and chained.text == keyword.text:
                self.next()  # `{{else if …}}`: a nested control that shares our {{end}}
                else_body = (self.parse_control(chained),)
            else:
                self.expect_close("else")
                else_body, stop = self.parse_list()
                if stop is None:
                    self.fail(
                        self.peek(), f"unexpected EOF: {{{{{keyword.text}}}}} has no {{{{end}}}}"
                    )
                if stop.text != "end":
                    self.fail(stop, "expected end; found {{else}}")
        del self.variables[mark:]
        return Control(keyword.pos, keyword.text, keyword.text, pipeline, body, else_body)

    def parse_pipeline(self, context: str, start: Token, end: str) -> Pipeline:
        decl: list[str] = []
        is_assign = False
        first = self.peek_non_space()
        if first.kind == "var":
            saved = self.index
            self.next()
            after = self.peek_non_space()
            if after.kind in ("declare", "assign"):
                decl.append(first.text)
            elif after.kind == "comma" and context == "range":
                self.next()
                second = self.next_non_space()
                if second.kind != "var":
                    self.unexpected(second, "range declaration")
                decl += [first.text, second.text]
                after = self.peek_non_space()
                if after.kind not in ("declare", "assign"):
                    self.unexpected(after, "range declaration")
            if decl:
                self.next()
                is_assign = after.kind == "assign"
            else:
                self.index = saved
        if is_assign:
            for name in decl:
                self.check_variable(first, name)
        else:
            self.variables.extend(decl)
        commands: list[Command] = []
        while True:
            token = self.peek_non_space()
            if token.kind == end:
                self.next()
                break
            if token.kind == "eof":
                self.fail(start, "unclosed action")
            commands.append(self.parse_command(end))
            if self.peek().kind == "pipe":
                self.next()
                if self.peek_non_space().kind == end:
                    self.fail(self.peek(), f"missing command after | in {context}")
        if not commands:
            self.fail(start, f"missing value for {context}")
        for stage, command in enumerate(commands[1:], start=2):
            if isinstance(command.args[0], (Literal, Nil, Dot)):
                fail_at(self.src, command.pos, f"non executable command in pipeline stage {stage}")
        return Pipeline(start.pos, self.source(start), tuple(decl), is_assign, tuple(commands))

    def check_variable(self, token: Token, name: str) -> None:
        if name not in self.variables:
            self.fail(token, f"undefined variable {name!r}".replace("'", '"'))

    def parse_command(self, end: str) -> Command:
        start = self.peek()
        args: list[Node] = []
        while True:
            self.skip_space()
            operand = self.parse_operand()
            if operand is not None:
                args.append(operand)
            token = self.peek()
            if token.kind == "space":
                continue
            if token.kind in (end, "pipe"):
                break
            self.unexpected(token, "operand")
        if not args:
            self.fail(start, "empty command")
        return Command(start.pos, self.source(start), tuple(args))

    def parse_operand(self) -> Node | None:
        start = self.peek()
        term = self.parse_term()
        if term is None or self.peek().kind != "field":
            return term
        names: list[str] = []
        while self.peek().kind == "field":
            names.append(self.next().text[1:])
        if isinstance(term, Field):
            return Field(term.pos, self.source(start), term.names + tuple(names))
        if isinstance(term, Variable):
            return Variable(term.pos, self.source(start), term.name, term.names + tuple(names))
        if isinstance(term, (Literal, Nil, Dot)):
            self.fail(start, f"unexpected . after term {quote(term.source)}")
        return Chain(term.pos, self.source(start), term, tuple(names))

    def parse_term(self) -> Node | None:
        token = self.peek()
        kind = token.kind
        if kind not in _TERM_STARTS:
            return None
        self.next()
        if kind == "ident":
            if token.text not in self.functions:
                self.fail(token, f'function "{token.text}" not defined')
            return Function(token.pos, token.text, token.text)
        if kind == "dot":
            return Dot(token.pos, ".")
        if kind == "nil":
            return Nil(token.pos, "nil")
        if kind == "var":
            self.check_variable(token, token.text)
            return Variable(token.pos, token.text, token.text, ())
        if kind == "field":
            return Field(token.pos, token.text, (token.text[1:],))
        if kind == "bool":
            return Literal(token.pos, token.text, token.text == "true")
        if kind == "char":
            text = _unquote(self.src, token)
            if len(text) != 1:
                self.fail(token, f"malformed character constant: {token.text}")
            return Literal(token.pos, token.text, ord(text))
        if kind == "number":
            return Literal(token.pos, token.text, _number_value(self.src, token))
        if kind in ("string", "rawstring"):
            return Literal(token.pos, token.text, _unquote(self.src, token))
        pipeline = self.parse_pipeline("parenthesized pipeline", token, "rparen")
        return Chain(token.pos, self.source(token), pipeline, ())


def parse(src: str, functions: Collection[str]) -> tuple[Node, ...]:
    """The template's AST; TemplateError when it does not parse. `functions`: the names
    templates may call."""
    return _Parser(src, functions).parse()
