"""Go ``fmt`` output (printf verbs, %v of collections and floats, error forms)."""

from __future__ import annotations

from typing import Any

import pytest

from templates.dependencies import KeyPair, Weights
from templates.gofmt import format_float_json, print_action, quote, sprint, sprintf, sprintln

CASES: list[tuple[str, tuple[Any, ...], str]] = [
    ("%d", (5,), "5"),
    ("%5d|%-5d|%05d", (42, 42, -42), "   42|42   |-0042"),
    ("%+d % d", (5, 5), "+5  5"),
    ("%x %X %#x %o %#o %O %b", (255, 255, 255, 8, 8, 8, 5), "ff FF 0xff 10 010 0o10 101"),
    ("%#08x", (255,), "0x000000ff"),
    ("%.0d|%.3d", (0, 7), "|007"),
    ("%c %q %U", (65, 65, 0x1F600), "A 'A' U+1F600"),
    ("%f %.2f %5.2f %08.3f", (3.14159, 3.14159, 3.14159, -3.14159), "3.141590 3.14  3.14 -003.142"),
    ("%e %E %g", (1234.5678, 1234.5678, 1234.5678), "1.234568e+03 1.234568E+03 1234.5678"),
    ("%g %g %.3g", (1e21, 100000.0, 1234567.0), "1e+21 100000 1.23e+06"),
    ("%v %v %v %v %v", (1e6, 123456789.0, 0.0001, 0.00001, -0.0), "1e+06 1.23456789e+08 0.0001 1e-05 -0"),
    ("%v %f %v", (float("inf"), float("-inf"), float("nan")), "+Inf -Inf NaN"),
    ("%s|%10s|%-10s|%.2s", ("go", "go", "go", "golang"), "go|        go|go        |go"),
    ("%q", ('a"b\n\x01é',), '"a\\"b\\n\\x01é"'),
    ("%x % x", ("hi", "hi"), "6869 68 69"),
    ("%t %v", (True, False), "true false"),
    ("%v", ([1, "a", None],), "[1 a <nil>]"),
    ("%d", ([1, 2],), "[1 2]"),
    ("%s", (["a", "b"],), "[a b]"),
    ("%q", (["a", "b"],), '["a" "b"]'),
    ("%v", ({"b": 1, "a": {"c": [2]}},), "map[a:map[c:[2]] b:1]"),
    ("%v %+v", (Weights(), Weights()), "{1 1} {Passing:1 Warning:1}"),
    ("%v", (KeyPair(Key="k", Value="v"),), "&{ k v 0 0 0 0 }"),
    ("%T %T %T %T %T", (1, 1.5, "s", [1], Weights()), "int float64 string []interface {} api.AgentWeights"),
    ("100%%", (), "100%"),
    # Go's error forms
    ("%d", ("x",), "%!d(string=x)"),
    ("%s", (5,), "%!s(int=5)"),
    ("%s", (None,), "%!s(<nil>)"),
    ("%z", (1,), "%!z(int=1)"),
    ("%d %d", (1,), "1 %!d(MISSING)"),
    ("%d", (1, "x", None), "1%!(EXTRA string=x, <nil>)"),
    ("%", (), "%!(NOVERB)"),
    ("%[2]d %[1]d", (1, 2), "2 1"),
    ("%*d|%-*d", (4, 1, 4, 1), "   1|1   "),
]


@pytest.mark.parametrize(("fmt", "args", "want"), CASES, ids=[c[0] for c in CASES])
def test_sprintf(fmt: str, args: tuple[Any, ...], want: str) -> None:
    assert sprintf(fmt, *args) == want


def test_sprint_spacing_rules() -> None:
    assert sprint("a", 1, 2, "b", "c", 3) == "a1 2bc3"
    assert sprint() == ""
    assert sprintln("a", 1, "b") == "a 1 b\n"


def test_print_action() -> None:
    assert print_action(None) == "<no value>"
    assert print_action("s") == "s"
    assert print_action(2.0) == "2"
    assert print_action(KeyPair(Key="k")) == "{ k  0 0 0 0 }"  # no "&" when printed by an action


def test_quote() -> None:
    assert quote("tab\there") == '"tab\\there"'
    assert quote("\u2028") == '"\\u2028"'


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (1.0, "1"),
        (0.5, "0.5"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (-2.5, "-2.5"),
    ],
)
def test_json_floats(value: float, want: str) -> None:
    assert format_float_json(value) == want


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="%-+# 0123456789.*[]vdsqxXfFeEgGtcobTUp!az", max_size=12), st.lists(_VALUES, max_size=4)
)
def test_sprintf_never_raises(fmt: str, args: list[Any]) -> None:
    assert isinstance(sprintf(fmt, *args), str)
