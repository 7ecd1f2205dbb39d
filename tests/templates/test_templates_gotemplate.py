"""Go text/template semantics, case by case from Go's documentation and consul-template's usage."""

from __future__ import annotations

from typing import Any

import pytest

from templates.dependencies import HealthService, ServiceTags, StrMap
from templates.errors import TemplateExecError, TemplateSyntaxError
from templates.gotemplate import GoTemplate, go_truth


def run(text: str, data: Any = None, **kw: Any) -> str:
    left = kw.pop("left", "{{")
    right = kw.pop("right", "}}")
    funcs = kw.pop("funcs", None)
    tmpl = GoTemplate(text, "t", left_delim=left, right_delim=right, func_names=list(funcs or ()))
    return tmpl.execute(data, funcs, **kw)


WEB = [
    HealthService(Node="n1", Address="10.0.0.1", Port=80, Name="web", ID="web1", Tags=ServiceTags(["a"])),
    HealthService(Node="n2", Address="10.0.0.2", Port=81, Name="web", ID="web2", Tags=ServiceTags([])),
]

CASES: list[tuple[str, str, Any, str]] = [
    # text, trimming, comments
    ("plain", "no actions\n", None, "no actions\n"),
    ("trim-doc-example", "{{23 -}} < {{- 45}}", None, "23<45"),
    ("trim-newlines", "a\n\n  {{- 1 -}}  \n\tb", None, "a1b"),
    ("trim-left-only", "a  {{- 1 }}  b", None, "a1  b"),
    ("negative-not-trim", "{{-3}}", None, "-3"),
    ("comment", "a{{/* hidden */}}b", None, "ab"),
    ("comment-trim", "a \n{{- /* hidden */ -}}\n b", None, "ab"),
    ("comment-multiline", "a{{/* one\ntwo */}}b", None, "ab"),
    # literals
    ("string-escapes", r'{{ "tab\there\u00e9\x41\101" }}', None, "tab\thereéAA"),
    ("raw-string", r"{{ `raw\n` }}", None, r"raw\n"),
    ("char-constant", "{{ 'a' }}", None, "97"),
    ("hex-int", "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 017 }} {{ 1_000 }}", None, "31 15 5 15 1000"),
    ("float-print", "{{ 1.5 }} {{ 1.0 }} {{ 1e3 }} {{ 1e6 }} {{ 0.00001 }}", None, "1.5 1 1000 1e+06 1e-05"),
    ("bools", "{{ true }} {{ false }}", None, "true false"),
    ("print-nil", "{{ print nil }}", None, "<nil>"),
    # printing values like fmt
    ("list", "{{ . }}", ["a", "b"], "[a b]"),
    ("empty-list", "{{ . }}", [], "[]"),
    ("map-sorted", "{{ . }}", {"b": 2, "a": [1, 2]}, "map[a:[1 2] b:2]"),
    ("nil-dot", "{{ . }}", None, "<no value>"),
    ("missing-key", "{{ .nope }}", {}, "<no value>"),
    ("missing-typed-key", '{{ .nope }}|{{ index . "nope" }}', StrMap(), "|"),
    ("struct", "{{ .Weights }}", WEB[0], "{1 1}"),
    ("nested-fields", "{{ .a.b.c }}", {"a": {"b": {"c": "deep"}}}, "deep"),
    ("field-through-nil", "{{ .a.b }}", {"a": None}, "<no value>"),
    # variables
    ("declare", "{{ $x := 1 }}{{ $x }}", None, "1"),
    ("assign", "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", None, "2"),
    ("assign-in-range", "{{ $x := 0 }}{{ range . }}{{ $x = . }}{{ end }}{{ $x }}", [1, 2, 3], "3"),
    (
        "root-in-range",
        "{{ range .items }}{{ $.name }}{{ . }} {{ end }}",
        {"name": "n", "items": [1, 2]},
        "n1 n2 ",
    ),
    ("with-decl", "{{ with $x := .a }}{{ $x }}{{ end }}", {"a": "A"}, "A"),
    ("var-fields", "{{ $s := index . 0 }}{{ $s.Address }}:{{ $s.Port }}", WEB, "10.0.0.1:80"),
    ("decl-prints-nothing", "{{ $x := 5 }}", None, ""),
    # range
    ("range-list", "{{ range . }}<{{ . }}>{{ end }}", ["a", "b"], "<a><b>"),
    ("range-index", "{{ range $i, $e := . }}{{ $i }}={{ $e }} {{ end }}", ["a", "b"], "0=a 1=b "),
    (
        "range-separator",
        "{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ $e }}{{ end }}",
        ["a", "b", "c"],
        "a, b, c",
    ),
    (
        "range-map-sorted",
        "{{ range $k, $v := . }}{{ $k }}={{ $v }};{{ end }}",
        {"z": 1, "a": 2, "m": 3},
        "a=2;m=3;z=1;",
    ),
    ("range-map-one-var", "{{ range $v := . }}{{ $v }}{{ end }}", {"b": 1, "a": 2}, "21"),
    ("range-else", "{{ range . }}x{{ else }}empty{{ end }}", [], "empty"),
    ("range-nil-else", "{{ range .nope }}x{{ else }}none{{ end }}", {}, "none"),
    ("range-int", "{{ range 3 }}{{ . }}{{ end }}", None, "012"),
    (
        "range-break-continue",
        "{{ range . }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}",
        [0, 1, 2, 3, 4],
        "02",
    ),
    (
        "range-structs",
        "{{ range . }}{{ .Node }} {{ .Address }}:{{ .Port }}\n{{ end }}",
        WEB,
        "n1 10.0.0.1:80\nn2 10.0.0.2:81\n",
    ),
    (
        "nested-range-dollar",
        "{{ range $a := .x }}{{ range $.y }}{{ $a }}{{ . }} {{ end }}{{ end }}",
        {"x": [1, 2], "y": ["a", "b"]},
        "1a 1b 2a 2b ",
    ),
    # if / with
    ("if-else-if", "{{ if eq . 1 }}one{{ else if eq . 2 }}two{{ else }}many{{ end }}", 2, "two"),
    ("if-else", "{{ if . }}yes{{ else }}no{{ end }}", "", "no"),
    ("with-dot", "{{ with .a }}{{ . }}{{ end }}", {"a": "A"}, "A"),
    ("with-else", "{{ with .a }}{{ . }}{{ else }}none{{ end }}", {"a": []}, "none"),
    (
        "with-else-with",
        "{{ with .a }}a{{ else with .b }}{{ . }}{{ else }}none{{ end }}",
        {"a": 0, "b": "B"},
        "B",
    ),
    ("if-struct-true", "{{ if . }}yes{{ end }}", WEB[0], "yes"),
    # pipelines and parentheses
    ("pipe-last-arg", '{{ "abc" | printf "%s-%s" "x" }}', None, "x-abc"),
    ("pipe-chain", '{{ . | len | printf "%03d" }}', [1, 2], "002"),
    ("parens", '{{ printf "%d items" (len .) }}', [1, 2, 3], "3 items"),
    ("paren-field", "{{ (index . 1).Address }}", WEB, "10.0.0.2"),
    ("method-on-tags", '{{ range . }}{{ .Tags.Contains "a" }} {{ end }}', WEB, "true false "),
    # builtins
    ("and-short-circuit", "{{ and 0 (index . 99) }}", [1], "0"),
    ("or-short-circuit", "{{ or 1 (index . 99) }}", [1], "1"),
    ("and-last", '{{ and 1 "x" }}', None, "x"),
    ("or-default", '{{ or .nope "fallback" }}', {}, "fallback"),
    ("or-piped", '{{ "" | or "" }}|{{ "p" | or "" }}', None, "|p"),
    ("not", "{{ not 0 }} {{ not . }}", [1], "true false"),
    ("eq-multi", "{{ eq 3 1 2 3 }} {{ eq 4 1 2 3 }}", None, "true false"),
    ("eq-strings", '{{ eq .a "x" }} {{ ne .a "x" }}', {"a": "x"}, "true false"),
    ("eq-missing-is-false", '{{ eq .nope "x" }}', {}, "false"),
    ("compare", '{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1.5 2.5 }}', None, "true true true false"),
    ("len-bytes", '{{ len "héllo" }} {{ len . }}', {"a": 1, "b": 2}, "6 2"),
    ("index-list-map", '{{ index . "a" 1 }}', {"a": [10, 20]}, "20"),
    ("index-string-byte", '{{ index "abc" 1 }}', None, "98"),
    ("index-missing-map", '{{ index . "nope" }}', {}, "<no value>"),
    ("slice", '{{ slice "abcdef" 1 3 }} {{ slice . 1 }} {{ slice . 0 1 }}', [1, 2, 3], "bc [2 3] [1]"),
    ("print", '{{ print 1 2 "a" "b" 3 }}', None, "1 2ab3"),
    ("println", '{{ println 1 "a" }}', None, "1 a\n"),
    ("printf", '{{ printf "%5.2f|%-4d|%q|%v|%x" 3.14159 7 "s" . 255 }}', ["a"], ' 3.14|7   |"s"|[a]|ff'),
    ("printf-bad-verb", '{{ printf "%d" "x" }}', None, "%!d(string=x)"),
    ("html", """{{ html "<a href='x'>&\\"" }}""", None, "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"),
    ("urlquery", '{{ urlquery "a b&c" }}', None, "a+b%26c"),
    ("js", """{{ js "it's <b>" }}""", None, "it\\'s \\u003Cb\\u003E"),
    ("call", "{{ call .f 2 3 }}", {"f": lambda a, b: a * b}, "6"),
    # nested templates
    (
        "define-template",
        '{{ define "row" }}[{{ . }}]{{ end }}{{ template "row" 1 }}{{ template "row" "x" }}',
        None,
        "[1][x]",
    ),
    ("template-nil-dot", '{{ define "d" }}{{ . }}{{ end }}{{ template "d" }}', 5, "<no value>"),
    ("block", '{{ block "b" . }}<{{ . }}>{{ end }}!', 7, "<7>!"),
    ("define-after-use", '{{ template "later" . }}{{ define "later" }}L{{ . }}{{ end }}', 1, "L1"),
    (
        "define-own-vars",
        '{{ $x := 1 }}{{ define "d" }}{{ $ }}{{ end }}{{ template "d" 2 }}{{ $x }}',
        None,
        "21",
    ),
    (
        "recursive-template",
        '{{ define "tree" }}({{ .n }}{{ range .kids }}{{ template "tree" . }}{{ end }}){{ end }}{{ template "tree" . }}',
        {"n": 1, "kids": [{"n": 2, "kids": []}, {"n": 3, "kids": [{"n": 4, "kids": []}]}]},
        "(1(2)(3(4)))",
    ),
    (
        "executeTemplate",
        '{{ define "c" }}my {{ . }}{{ end }}{{ executeTemplate "c" 42 }}/{{ $v := executeTemplate "c" }}{{ $v }}',
        None,
        "my 42/my <no value>",
    ),
]


@pytest.mark.parametrize(("text", "data", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_go_semantics(text: str, data: Any, want: str) -> None:
    assert run(text, data) == want


def test_custom_delimiters_with_trim_and_comments() -> None:
    text = "x <%- .a -%>  y <%/* c */%>[[{{ not an action }}]]"
    assert run(text, {"a": 1}, left="<%", right="%>") == "x1y [[{{ not an action }}]]"


def test_same_delimiters_left_and_right() -> None:
    assert run("a || .x || b", {"x": 1}, left="||", right="||") == "a 1 b"


def test_actions_may_span_lines() -> None:
    assert run('{{ printf\n  "%s-%s"\n  "a"\n  "b" }}') == "a-b"


@pytest.mark.parametrize(
    ("value", "truth"),
    [(None, False), (False, False), (0, False), (0.0, False), ("", False), ([], False), ({}, False),
     (True, True), (1, True), (-1.5, True), ("0", True), ([0], True), ({"a": 0}, True), (WEB[0], True)],
)  # fmt: skip
def test_truthiness(value: Any, truth: bool) -> None:
    assert go_truth(value) is truth
    assert run("{{ if . }}T{{ else }}F{{ end }}", value) == ("T" if truth else "F")


def test_missingkey_error() -> None:
    with pytest.raises(TemplateExecError, match='map has no entry for key "nope"'):
        run("{{ .nope }}", {}, missingkey_error=True)
    with pytest.raises(TemplateExecError, match='nil data; no entry for key "x"'):
        run("{{ .x }}", None, missingkey_error=True)


# --------------------------------------------------------------------------------------------
# errors carry Go's wording


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ .x", "template: t:1: unclosed action"),
        ("{{ end }}", "template: t:1: unexpected {{end}}"),
        ("{{ else }}", "template: t:1: unexpected {{else}}"),
        ("a\n{{ if . }}", "template: t:2: unexpected EOF"),
        ("{{ nope }}", 'template: t:1: function "nope" not defined'),
        ("{{ $y }}", 'template: t:1: undefined variable "$y"'),
        ("{{ if 1 }}{{ $y := 1 }}{{ end }}{{ $y }}", 'undefined variable "$y"'),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ('{{ "a" | "b" }}', "non executable command in pipeline stage 2"),
        ("{{ $a, $b := . }}", "too many declarations in command"),
        ("{{ if }}{{ end }}", "missing value for if"),
        ('{{ "unterminated }}', "unterminated quoted string"),
        ("{{ 3x }}", 'bad number syntax: "3x"'),
        ("{{ .a!b }}", "bad character U+0021"),
        ("{{/* x */ y }}", "comment ends before closing delimiter"),
        ("{{ (1 }}", "unclosed left paren"),
        ('{{ define "a" }}{{ define "b" }}{{ end }}{{ end }}', "unexpected <define> in command"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError) as e:
        GoTemplate(text, "t")
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("text", "data", "message"),
    [
        ("{{ .Foo }}", 1, "can't evaluate field Foo in type int"),
        ("{{ .Meta }}", WEB[0], "can't evaluate field Meta in type *dependency.HealthService"),
        ("{{ len 1 2 }}", None, "wrong number of args for len: want 1 got 2"),
        ("{{ index . 5 }}", [1], "error calling index: index out of range: 5"),
        ("{{ index nil 1 }}", None, "error calling index: index of untyped nil"),
        ("{{ eq 1 1.0 }}", None, "error calling eq: incompatible types for comparison"),
        ("{{ lt true false }}", None, "invalid type for comparison"),
        ("{{ eq . . }}", [1], "non-comparable type"),
        ("{{ range . }}{{ end }}", "abc", "range can't iterate over abc"),
        ("{{ range $i, $e := 3 }}{{ end }}", None, "can't use 3 to iterate over more than one variable"),
        ('{{ template "nope" }}', None, 'template "nope" not defined'),
        ("{{ nil }}", None, "nil is not a command"),
        ("{{ .a 1 }}", {"a": 1}, "a is not a method but has arguments"),
        ("{{ 1 2 }}", None, "can't give argument to non-function 1"),
        ("{{ len nil }}", None, "len of nil pointer"),
    ],
)
def test_exec_errors(text: str, data: Any, message: str) -> None:
    with pytest.raises(TemplateExecError) as e:
        run(text, data)
    assert message in str(e.value)


def test_exec_error_location() -> None:
    with pytest.raises(TemplateExecError) as e:
        run("line one\n  {{ index . 3 }}", [1])
    assert str(e.value).startswith('template: t:2:5: executing "t" at <index>: error calling index')


def test_function_error_is_wrapped() -> None:
    def boom(x: Any) -> Any:
        raise ValueError("bad input")

    with pytest.raises(TemplateExecError, match="error calling boom: bad input"):
        run("{{ boom 1 }}", None, funcs={"boom": boom})


def test_self_recursion_is_bounded() -> None:
    with pytest.raises(TemplateExecError, match="exceeded maximum template depth"):
        run('{{ define "loop" }}{{ template "loop" }}{{ end }}{{ template "loop" }}')


def test_parsed_once_executed_many() -> None:
    tmpl = GoTemplate("{{ range . }}{{ . }}{{ end }}", "t")
    assert [tmpl.execute(d) for d in ([1], [2, 3], [])] == ["1", "23", ""]


# --------------------------------------------------------------------------------------------
# bad input: a clear template error, never a Python traceback

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = [
    "{{", "}}", "{{-", "-}}", " ", "\n", ".", ".a", ".Address", "$", "$x", ":=", "=", "|", "(", ")", ",",
    "range", "if", "else", "end", "with", "define", "template", "block", "break", "continue", "nil",
    '"s"', "`r`", "'c'", "1", "-2", "3.5", "0x1F", "true", "/*", "*/", "index", "len", "printf", "eq",
    "and", "or", "not", "slice", "print", "text", "\\", "%d", "x",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=25))
def test_fuzz_only_template_errors(pieces: list[str]) -> None:
    text = "".join(pieces)
    try:
        tmpl = GoTemplate(text, "t")
    except TemplateSyntaxError:
        return
    for data in (None, {"a": [1, "b"], "Address": "x"}, [1, 2], WEB[0]):
        try:
            tmpl.execute(data)
        except TemplateExecError:
            pass
