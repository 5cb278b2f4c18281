"""rootless.gotemplate (+ goparse, goprintf, tabwriter): Go text/template as podman's --format.

Expected outputs follow Go's documented semantics; the printf and builtin cases were also
checked against podman 4.3.1 (`podman info --format` on literals).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from rootless import goprintf
from rootless.errors import RlError
from rootless.goparse import TemplateError
from rootless.gotemplate import (
    camel_words,
    execute,
    header_name,
    is_template,
    render,
    render_rows,
    render_table,
    to_json,
)
from rootless.tabwriter import tabwrite

CONTAINER: dict[str, Any] = {
    "ID": "0123456789ab",
    "Names": ["web", "api"],
    "Image": "docker.io/library/nginx:latest",
    "Labels": {"tier": "db", "app": "shop"},
    "Ports": [],
    "Mounts": [{"Source": "/src", "Destination": "/dst", "RW": True}],
    "Pid": 4242,
    "Size": 1.5,
    "State": {"Running": True, "ExitCode": 0, "Health": None},
    "host": {"kernel": "6.1.0", "idMappings": {"uidmap": [{"size": 1}]}},
}


def run(template: str, data: Any = CONTAINER) -> str:
    return execute(template, data)


# --- compatibility of the two entry points callers already use ------------------------------------


def test_render_ends_with_one_newline_and_unescapes_tab_and_newline() -> None:
    assert render("{{.ID}}", CONTAINER) == "0123456789ab\n"
    assert render("{{.ID}}\n", CONTAINER) == "0123456789ab\n"
    assert render("{{.ID}}\\t{{.Pid}}", CONTAINER) == "0123456789ab\t4242\n"
    assert render("a\\nb", CONTAINER) == "a\nb\n"
    assert render("plain", CONTAINER) == "plain\n"
    # Only between actions: inside a Go string literal the escapes are Go's own.
    assert render('{{"x\\\\ty"}}', CONTAINER) == "x\\ty\n"


def test_is_template() -> None:
    assert is_template("{{.ID}}")
    assert not is_template("json")
    assert not is_template("table")


# --- fields ---------------------------------------------------------------------------------------


def test_fields_match_exactly_first_then_case_insensitively() -> None:
    data = {"name": "lower", "Name": "upper", "graphRoot": "/g"}
    assert run("{{.name}} {{.Name}} {{.NAME}} {{.GraphRoot}}", data) == "lower upper lower /g"
    assert run("{{.Host.Kernel}} {{.host.kernel}}") == "6.1.0 6.1.0"
    assert run("{{.Host.IDMappings.UIDMap}}") == "[map[size:1]]"


def test_dot_root_and_nested_fields() -> None:
    assert run("{{.State.Running}}") == "true"
    assert run("{{with .State}}{{.ExitCode}}/{{$.ID}}{{end}}") == "0/0123456789ab"
    assert run("{{$.Pid}}") == "4242"
    assert run("{{.}}", "just a string") == "just a string"


def test_missing_struct_field_is_an_error_naming_the_valid_fields() -> None:
    with pytest.raises(TemplateError) as caught:
        run("{{.State.Runnin}}")
    assert str(caught.value) == (
        'template: 1:3: at <.State.Runnin>: field "Runnin" not found; '
        "valid fields: Running, ExitCode, Health"
    )
    assert isinstance(caught.value, RlError)


def test_missing_map_keys_are_no_value_as_in_go() -> None:
    assert run("{{.Labels.tier}}|{{.Labels.nope}}") == "db|<no value>"
    # keys that are not Go identifiers mean the dict is a map, whatever its parent key
    assert run("{{.Info.zz}}", {"Info": {"Backing Filesystem": "extfs"}}) == "<no value>"
    assert run("{{if .Labels.nope}}yes{{else}}no{{end}}") == "no"


def test_field_errors() -> None:
    cases = {
        "{{.ID.X}}": "at <.ID.X>: can't evaluate field X in type string",
        "{{.Labels.nope.deeper}}": "nil pointer evaluating interface {}.deeper",
        "{{.Names.First}}": "can't evaluate field First in type []interface {}",
        "{{.ID 1}}": "ID has arguments but cannot be invoked as function",
        "{{.ID | .Pid}}": "at <.Pid>: Pid has arguments but cannot be invoked as function",
    }
    for template, message in cases.items():
        with pytest.raises(TemplateError, match=re.escape(message)):
            run(template)


def test_null_values_print_no_value_but_nil_in_print() -> None:
    assert run("{{.State.Health}}") == "<no value>"
    assert run("{{print .State.Health}}") == "<nil>"
    assert run("{{printf `%v` .State.Health}}") == "<nil>"


# --- printing values as Go does -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (["a", "b"], "[a b]"),
        ([], "[]"),
        ({"b": 2, "a": [1, None]}, "map[a:[1 <nil>] b:2]"),
        ({}, "map[]"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-7, "-7"),
        (3.0, "3"),
        (1.5, "1.5"),
        (1e6, "1e+06"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (None, "<no value>"),
        ("", ""),
        ([{"k": "v"}], "[map[k:v]]"),
    ],
)
def test_values_print_as_go_prints_them(value: Any, printed: str) -> None:
    assert run("{{.V}}", {"V": value}) == printed


# --- lexing and literals --------------------------------------------------------------------------


def test_literals() -> None:
    assert run("{{'a'}} {{'\\n'}} {{'\\x41'}} {{'é'}}") == "97 10 65 233"
    assert run("{{0x10}} {{0o17}} {{017}} {{0b101}} {{1_000}} {{-0x10}} {{+5}}") == (
        "16 15 15 5 1000 -16 5"
    )
    assert run("{{1.5e3}} {{.5}} {{1e3}} {{3.0}}") == "1500 0.5 1000 3"
    assert run('{{"\\u00e9\\x41\\101\\\\"}} {{`a\\nb`}}') == "éAA\\ a\\nb"
    assert run('{{"tab\\tq\\"x"}}') == 'tab\tq"x'
    assert run("{{true}} {{false}}") == "true false"


def test_trim_markers_and_comments() -> None:
    assert run('{{- "a" -}} {{"b"}} {{- "c"}}') == "abc"
    assert run('{{"a"}} {{"b" -}} \n {{"c"}}') == "a bc"
    assert run("x  \n {{- 1 -}} \n\t y") == "x1y"
    assert run("{{/* a comment */}}x{{- /* trimmed */ -}} z") == "xz"
    with pytest.raises(TemplateError, match="bad number syntax"):  # `{{-` + no space: no trim
        run("a {{-/* c */}}")
    assert run("{{-3}}") == "-3"  # a number, not a trim marker
    assert run("a{{/* multi\nline */}}b") == "ab"


def test_actions_may_span_lines_and_use_any_whitespace() -> None:
    assert run("{{ printf\n\t`%s-%s`\n .ID\n 1 }}") == "0123456789ab-%!s(int=1)"


# --- control structures ---------------------------------------------------------------------------


def test_if_else_if_else() -> None:
    template = "{{if .A}}a{{else if .B}}b{{else if .C}}c{{else}}none{{end}}"
    assert run(template, {"A": 1, "B": 1, "C": 1}) == "a"
    assert run(template, {"A": 0, "B": "x", "C": 1}) == "b"
    assert run(template, {"A": [], "B": "", "C": {"k": 1}}) == "c"
    assert run(template, {"A": None, "B": False, "C": {}}) == "none"
    assert run("{{if and .Ports (index .Ports 0)}}x{{else}}empty{{end}}") == "empty"


def test_with() -> None:
    assert run("{{with .State}}{{.Running}}{{end}}") == "true"
    assert run("{{with .Ports}}has{{else}}none{{end}}") == "none"
    assert run('{{with $x := "v"}}{{$x}}{{.}}{{end}}') == "vv"
    assert run("{{with 0}}a{{else with 1}}c{{end}}") == "c"


def test_range_over_lists_maps_and_integers() -> None:
    assert run("{{range .Names}}<{{.}}>{{end}}") == "<web><api>"
    assert run("{{range $i, $n := .Names}}{{$i}}={{$n}} {{end}}") == "0=web 1=api "
    assert run("{{range $n := .Names}}{{$n}},{{end}}") == "web,api,"
    assert run("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}") == "app=shop;tier=db;"
    assert run("{{range .Labels}}{{.}} {{end}}") == "shop db "
    assert run("{{range .Ports}}x{{else}}no ports{{end}}") == "no ports"
    assert run("{{range .Nothing}}x{{else}}nil{{end}}", {"Nothing": None}) == "nil"
    assert run("{{range 3}}{{.}}{{end}}") == "012"
    assert run("{{range .Mounts}}{{.Source}}:{{.Destination}}:{{.RW}}{{end}}") == "/src:/dst:true"


def test_range_break_continue_and_nesting() -> None:
    data = {"Rows": [[1, 2], [3, 4], [5, 6]], "Skip": 3}
    template = (
        "{{range $r := .Rows}}{{range .}}{{if eq . $.Skip}}{{continue}}{{end}}"
        "{{if eq . 5}}{{break}}{{end}}{{.}}{{end}};{{end}}"
    )
    assert run(template, data) == "12;4;;"
    assert run('{{range .Names}}{{if eq . "api"}}{{break}}{{end}}{{.}}{{end}}') == "web"


def test_range_errors() -> None:
    with pytest.raises(TemplateError, match="range can't iterate over web"):
        run("{{range .ID}}{{end}}", {"ID": "web"})
    with pytest.raises(TemplateError, match=r"\{\{break\}\} outside \{\{range\}\}"):
        run("{{break}}")


def test_variables_and_scope() -> None:
    assert run("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}") == "2"
    assert run("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}") == "21"
    assert run("{{$n := len .Names}}{{$n}}") == "2"
    assert run("{{range $i, $e := .Names}}{{$.Pid}}{{end}}") == "42424242"
    with pytest.raises(TemplateError, match='undefined variable "\\$y"'):
        run("{{if true}}{{$y := 1}}{{end}}{{$y}}")
    with pytest.raises(TemplateError, match='undefined variable "\\$z"'):
        run("{{$z = 1}}")


def test_pipelines_and_parentheses() -> None:
    assert run('{{.ID | printf "%.4s"}}') == "0123"
    assert run('{{"x" | printf "%s-%s" "y"}}') == "y-x"
    assert run("{{print 1 | print 2}}") == "21"
    assert run("{{(index .Mounts 0).Source}}") == "/src"
    assert run('{{(split "a.b" ".") | len}}') == "2"
    assert run("{{upper .Image | lower}}") == "docker.io/library/nginx:latest"
    assert run("{{$m := index .Mounts 0}}{{$m.Destination}}") == "/dst"


# --- functions ------------------------------------------------------------------------------------


def test_logic_functions_short_circuit() -> None:
    assert run('{{and 1 0 2}}|{{or 0 "" "x"}}|{{not 0}}|{{and 1 2}}|{{or 0 ""}}') == "0|x|true|2|"
    assert run("{{and 0 (index .Names 99)}}") == "0"  # index is never evaluated
    assert run("{{or 1 (index .Names 99)}}") == "1"


def test_len_index_slice() -> None:
    assert run("{{len .Names}} {{len .Labels}} {{len `héllo`}}") == "2 2 6"
    assert run("{{index .Names 1}} {{index .Labels `app`}} {{index .Mounts 0 `Source`}}") == (
        "api shop /src"
    )
    assert run("{{index .Labels `missing`}}|") == "|"  # the zero value of a string map
    assert run('{{index "abc" 1}}') == "98"
    assert run("{{slice .Names 1}} {{slice .Names 0 1}} {{slice `hello` 1 3}}") == "[api] [web] el"
    assert run("{{index .Names}}") == "[web api]"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{index .Names 5}}", "error calling index: index out of range: 5"),
        ("{{index .Names `a`}}", "error calling index: cannot index slice/array with type string"),
        ("{{index 5 1}}", "error calling index: can't index item of type int"),
        ("{{index .Labels 1}}", "error calling index: value has type int; should be string"),
        ("{{len 3}}", "error calling len: len of type int"),
        ("{{slice `hello` 3 1}}", "error calling slice: invalid slice index: 3 > 1"),
        ("{{slice `hello` 1 2 3}}", "error calling slice: cannot 3-index slice a string"),
        ("{{eq 1 1.0}}", "error calling eq: incompatible types for comparison"),
        ("{{lt true false}}", "error calling lt: invalid type for comparison"),
        ("{{eq .Names .Names}}", "error calling eq: non-comparable type"),
        ("{{lower 5}}", "wrong type for value; expected string; got int"),
        ("{{join .ID `,`}}", "wrong type for value; expected \\[\\]string; got string"),
        ("{{truncate .ID `3`}}", "wrong type for value; expected int; got string"),
        ("{{upper}}", "wrong number of args for upper: want 1 got 0"),
        ("{{eq}}", "wrong number of args for eq: want at least 1 got 0"),
        ("{{eq 1}}", "error calling eq: missing argument for comparison"),
        ("{{nil}}", "nil is not a command"),
        ('{{"a" 1}}', 'can\'t give argument to non-function "a"'),
        ("{{json (split `a` `b`) 1}}", "wrong number of args for json: want 1 got 2"),
    ],
)
def test_function_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        run(template)


def test_comparisons() -> None:
    assert (
        run('{{eq "a" "b" "a"}} {{eq 1 2}} {{ne 1 2}} {{eq .Pid 4242}}') == "true false true true"
    )
    assert run("{{lt 1 2}} {{lt `a` `b`}} {{le 2 2}} {{gt 3 2}} {{ge 1 2}}") == (
        "true true true true false"
    )
    assert run("{{eq .State.Health nil}} {{eq nil 1}} {{eq .State.Running true}}") == (
        "true false true"
    )


def test_print_functions() -> None:
    assert run('{{print "a" 1 2 "b" "c" true nil}}') == "a1 2bctrue <nil>"
    assert run('{{println 1 "a"}}') == "1 a\n"
    assert run("{{print .Names .Labels}}") == "[web api] map[app:shop tier:db]"


def test_escaping_functions() -> None:
    assert run("{{html `<a&b>\"x'`}}") == "&lt;a&amp;b&gt;&#34;x&#39;"
    assert run("{{js `a'b\"c<d>=é`}}") == "a\\'b\\\"c\\u003Cd\\u003E\\u003Dé"
    assert run("{{js `\n`}}") == "\\u000A"
    assert run("{{urlquery `a b&c/d?é~_.-`}}") == "a+b%26c%2Fd%3F%C3%A9~_.-"
    assert run("{{html 1 2 `a<`}}") == "1 2a&lt;"


def test_podman_functions() -> None:
    assert run('{{join .Names ","}}') == "web,api"
    assert run('{{join .Names ", "}}') == "web, api"
    assert run("{{upper .Names | printf `%v`}}", {"Names": "x"}) == "X"
    assert run("{{upper `abc`}} {{lower `ABC`}} {{title `hello wORLD foo_bar x-y 3ab`}}") == (
        "ABC abc Hello WORLD Foo_bar X-Y 3ab"
    )
    assert (
        run('{{split "a,b" ","}} {{split "ab" ""}} {{len (split .Image "/")}}') == "[a b] [a b] 3"
    )
    assert run("{{truncate .ID 5}} {{truncate `ab` 5}}") == "01234 ab"
    assert run("{{pad `x` 2 1}}|{{pad `` 2 1}}|") == "  x ||"
    assert run("{{json .Names}} {{json .Labels}} {{json .Pid}} {{json .Size}}") == (
        '["web","api"] {"app":"shop","tier":"db"} 4242 1.5'
    )
    assert run("{{json .State}}") == '{"Running":true,"ExitCode":0,"Health":null}'


def test_unknown_function() -> None:
    with pytest.raises(TemplateError, match='function "humanize" not defined'):
        run("{{humanize 10}}")


# --- printf ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "printed"),
    [
        ('{{printf "%s|%d|%v|%q" "a" 42 .Names "x"}}', 'a|42|[web api]|"x"'),
        ('{{printf "%-10s|%10s|%.2s" "ab" "ab" "abc"}}', "ab        |        ab|ab"),
        (
            '{{printf "%5.2f|%6.2f|%-8.3f|%08.3f" 3.14159 3.14159 2.5 3.14159}}',
            " 3.14|  3.14|2.500   |0003.142",
        ),
        (
            '{{printf "%v|%g|%e|%.3g|%v" 1e21 1e6 1234.5 100000.0 0.1}}',
            "1e+21|1e+06|1.234500e+03|1e+05|0.1",
        ),
        ('{{printf "%d %s" "x" 5}}', "%!d(string=x) %!s(int=5)"),
        (
            '{{printf "%d"}}|{{printf "%d" 1 2}}|{{printf "%z" 1}}',
            "%!d(MISSING)|1%!(EXTRA int=2)|%!z(int=1)",
        ),
        (
            '{{printf "%q|%x|%X|%c|%U|%o|%b" "a\\tb" "hi" 255 65 65 8 5}}',
            '"a\\tb"|6869|FF|A|U+0041|10|101',
        ),
        ('{{printf "%+d|% d|%-5d|%08d|%-08d" 3 3 3 -42 7}}', "+3| 3|3    |-0000042|7       "),
        (
            '{{printf "%x|%X|%#o|%O|%#x|% x" -255 3054 8 8 "hi" "hi"}}',
            "-ff|BEE|010|0o10|0x6869|68 69",
        ),
        (
            '{{printf "%T %T %T %T %T %T" 1 "a" 1.5 true nil .Names}}',
            "int string float64 bool <nil> []interface {}",
        ),
        (
            '{{printf "%s|%d|%f|%s" true 1.5 3 nil}}',
            "%!s(bool=true)|%!d(float64=1.5)|%!f(int=3)|%!s(<nil>)",
        ),
        ('{{printf "%q %q %+q %#q" "é\\x01" 120 "é" "ab"}}', '"é\\x01" \'x\' "\\u00e9" `ab`'),
        ('{{printf "%*d|%-*d|%.*f" 5 1 4 2 2 3.14159}}', "    1|2   |3.14"),
        ('{{printf "%c%c|%U|%#U" 72 105 128512 65}}', "Hi|U+1F600|U+0041 'A'"),
        ('{{printf "%5.1f%%" 99.44}}', " 99.4%"),
        ('{{printf "%g %G %e %E" 1e-7 1e-7 0.0 1e100}}', "1e-07 1E-07 0.000000e+00 1.000000E+100"),
        ('{{printf "%.0d|%.3d|%5.3d" 0 7 7}}', "|007|  007"),
        (
            '{{printf "%v %d" .Labels .Names}}',
            "map[app:shop tier:db] [%!d(string=web) %!d(string=api)]",
        ),
        ('{{printf "%t|%5t|%5v" true false nil}}', "true|false|<nil>"),
        ('{{printf "100%%"}}', "100%"),
        ('{{printf "%"}}', "%!(NOVERB)"),
    ],
)
def test_printf(template: str, printed: str) -> None:
    assert run(template) == printed


def test_printf_list_verbs_apply_to_elements() -> None:
    assert goprintf.sprintf("%q", ["a", "b"]) == '["a" "b"]'
    assert goprintf.sprintf("%d", [1, 2]) == "[1 2]"
    assert goprintf.sprintf("%d", ["a"]) == "[%!d(string=a)]"


def test_shortest_float() -> None:
    assert [goprintf.shortest_float(v) for v in (0.0, 2.5, 1e20, 1e-5, 100000.0, 1.0 / 3)] == [
        "0",
        "2.5",
        "1e+20",
        "1e-05",
        "100000",
        "0.3333333333333333",
    ]


# --- json -----------------------------------------------------------------------------------------


def test_json_is_compact_go_json() -> None:
    assert to_json({"b": 1, "a": [True, None, 1.0, "<&>"]}) == '{"b":1,"a":[true,null,1,"<&>"]}'
    assert to_json({"Labels": {"z": "1", "a": "2"}}) == '{"Labels":{"a":"2","z":"1"}}'  # a map
    assert to_json(1e21) == "1e+21"
    assert to_json(1e-7) == "1e-7"
    assert to_json(0.000001) == "0.000001"
    assert to_json("é\u2028") == '"é\\u2028"'
    with pytest.raises(TemplateError, match="unsupported value: NaN"):
        run("{{json .V}}", {"V": float("nan")})


# --- parse errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.ID}", 'template: 1:6: unexpected "}" in operand'),
        ("{{.ID", "template: 1:1: unclosed action"),
        ("a\nb {{.ID\n", "template: 2:3: unclosed action"),
        ("{{if}}x{{end}}", "template: 1:3: missing value for if"),
        ("{{range .Names}}", "template: 1:17: unexpected EOF: {{range}} has no {{end}}"),
        ("{{end}}", "template: 1:3: unexpected {{end}}"),
        ("{{else}}", "template: 1:3: unexpected {{else}}"),
        ("{{if 1}}a{{else}}b{{else}}c{{end}}", "template: 1:21: expected end; found {{else}}"),
        ('{{"abc}}', "template: 1:3: unterminated quoted string"),
        ("{{`abc}}", "template: 1:3: unterminated raw quoted string"),
        ("{{'ab'}}", "template: 1:3: malformed character constant: 'ab'"),
        ("{{(1}}", "template: 1:5: unclosed left paren"),
        ("{{)}}", "template: 1:3: unexpected right paren"),
        ("{{1 | 2}}", "template: 1:7: non executable command in pipeline stage 2"),
        ("{{print |}}", "template: 1:10: missing command after | in command"),
        ("{{3x}}", "template: 1:3: bad number syntax: '3x'"),
        ('{{.A "x}}', "template: 1:6: unterminated quoted string"),
        ("{{/* open", "template: 1:3: unclosed comment"),
        ("{{/* c */ x}}", "template: 1:8: comment ends before closing delimiter"),
        ('{{template "x"}}', "template: 1:3: {{template}} is not supported in rl's templates"),
        ("{{.ID.}}", 'template: 1:6: unexpected "." in operand'),
        ('{{"a".B}}', 'template: 1:3: unexpected . after term "\\"a\\""'),
        ("{{$x := }}", "template: 1:3: missing value for command"),
        ('{{"\\q"}}', 'template: 1:3: invalid syntax in "\\q"'),
        ("a\n{{.ID}}\n{{nope}}", 'template: 3:3: function "nope" not defined'),
    ],
)
def test_parse_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        run(template)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_the_first_mistake_is_reported() -> None:
    # a lexing problem later in the text does not hide an earlier parse error
    with pytest.raises(TemplateError, match='function "nope" not defined'):
        run('{{nope}}{{"unterminated}}')


# --- tables ---------------------------------------------------------------------------------------

IMAGES = [
    {"ID": "0123456789ab", "Repository": "docker.io/library/alpine", "Tag": "latest",
     "CreatedAt": "2024-01-01", "Names": ["a", "b"], "Labels": {"x": "1"}},
    {"ID": "ba9876543210", "Repository": "localhost/mine", "Tag": "v1",
     "CreatedAt": "2023-12-31", "Names": [], "Labels": {}},
]  # fmt: skip


def test_table_headers_from_field_names_and_overrides() -> None:
    out = render_table("table {{.ID}} {{.Repository}}\t{{.CreatedAt}}", IMAGES, {"ID": "IMAGE ID"})
    assert out == (
        "IMAGE ID      REPOSITORY                CREATED AT\n"
        "0123456789ab  docker.io/library/alpine  2024-01-01\n"
        "ba9876543210  localhost/mine            2023-12-31\n"
    )


def test_table_columns_are_at_least_twelve_wide_and_noheading() -> None:
    out = render_table("table {{.Tag}} {{.ID}}", IMAGES, heading=False)
    assert out == "latest      0123456789ab\nv1          ba9876543210\n"
    assert render_table("{{.Tag}}", IMAGES) == "TAG\nlatest\nv1\n"  # `table` prefix optional


def test_table_header_runs_the_same_template() -> None:
    out = render_table(
        "table {{upper .Tag}}|{{join .Names `,`}}|{{json .Labels}}|{{index .Labels `x`}}", IMAGES
    )
    assert out.splitlines() == [
        'TAG|NAMES|"LABELS"|X',
        'LATEST|a,b|{"x":"1"}|1',
        "V1||{}|",
    ]
    out = render_table("table {{range .Names}}{{.}}{{end}} {{.Labels.x}}", IMAGES)
    assert out.splitlines() == ["NAMES       X", "ab          1", "            <no value>"]


def test_table_with_no_rows_prints_the_header() -> None:
    assert render_table("table {{.ID}} {{.Tag}}", [], {"ID": "IMAGE ID"}) == "IMAGE ID    TAG\n"


def test_table_errors_name_the_field() -> None:
    with pytest.raises(TemplateError, match='field "Nope" not found; valid fields: ID, Repository'):
        render_table("table {{.Nope}}", IMAGES)


def test_header_names() -> None:
    assert camel_words("CreatedAt") == ["Created", "At"]
    assert camel_words("CIDFile") == ["CID", "File"]
    assert camel_words("PIDs") == ["PI", "Ds"]  # podman's own camel-case splitter does this
    assert camel_words("Port80") == ["Port", "80"]
    assert header_name("MountCount") == "MOUNT COUNT"
    assert header_name("ID", {"ID": "IMAGE ID"}) == "IMAGE ID"
    assert header_name("id", {"ID": "IMAGE ID"}) == "IMAGE ID"


def test_render_rows() -> None:
    assert render_rows("{{.Tag}}", IMAGES) == "latest\nv1\n"
    assert render_rows("{{range .}}{{.Tag}},{{end}}", IMAGES) == "latest,v1,\n"
    assert render_rows("{{.Tag}}", []) == ""
    with pytest.raises(TemplateError):
        render_rows("{{.Tag", [])


# --- tabwriter ------------------------------------------------------------------------------------


def test_tabwriter_matches_go_elastic_tabstops() -> None:
    assert tabwrite("a\tb\tc\nlonger cell\tx\ty\n") == (
        "a            b           c\nlonger cell  x           y\n"
    )
    # a line without a cell in a column ends that column's block
    assert tabwrite("aaaaaaaaaaaaaaaa\tb\nno tabs\nc\td\n") == (
        "aaaaaaaaaaaaaaaa  b\nno tabs\nc           d\n"
    )
    assert tabwrite("a\t\tc\n") == "a                       c\n"  # empty cells still pad
    assert tabwrite("x\t", minwidth=0, padding=1) == "x "
    assert tabwrite("") == ""
