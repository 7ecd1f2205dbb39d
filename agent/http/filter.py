"""Consul's ``?filter=`` expression language (hashicorp/go-bexpr), sans-IO.

``api-docs/features/filtering.mdx``: list endpoints take ``?filter=<expression>`` and return only the
entries it matches. An expression is parsed once, then *validated against the shape of the endpoint's
result* — as go-bexpr validates against the Go struct — so a misspelt selector or an operator the field
cannot take is a 400 rather than a filter that silently matches nothing; then it is evaluated against
each JSON-shaped result entry. Nothing here does I/O; the HTTP endpoints turn :class:`FilterError` into
``400 Failed to create boolean expression evaluator: <reason>``.

Grammar (whitespace is insignificant outside strings; keywords are lower case)::

    expression := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expression ")" | match
    match      := selector ("==" | "!=") value
                | selector ["not"] ("contains" | "matches") value
                | selector "is" ["not"] "empty"
                | value ["not"] "in" selector
    selector   := ident ("." ident | "." digits | "[" string "]")*     ident = [A-Za-z][A-Za-z0-9_]*
    value      := string | number | selector     (a bare selector is its own text: Status == passing)
    string     := "..." (Go escapes) | `...` (raw, no escapes)
    number     := -?(0|[1-9][0-9]*)(.[0-9]+)?

Semantics, as go-bexpr's typed evaluation has them:

- A value is text until the field's type is known: ``ServicePort == "8080"`` and ``ServicePort == 8080``
  are the same, numbers compare numerically, booleans take Go's ``true/t/1/false/f/0`` spellings.
- ``"x" in Sel`` / ``Sel contains "x"``: element of a list, key of a map, substring of a string.
- ``is empty``: a list, map or string of length 0; a null map or list is empty.
- ``matches``: an unanchored regular expression search on a string field.
- A map key that is not there makes ``==``, ``in``, ``matches`` and ``is not empty`` false and their
  negations true (``Meta.env != "prod"`` holds for an entry with no ``env``).
- A selector that passes through a list of objects (``Checks.Status``) holds when *any* element matches;
  an empty list matches nothing, negated operators included.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.regex import RegexError, compile_re2

__all__ = [
    "EVALUATOR_ERROR",
    "FilterError",
    "Kind",
    "Shape",
    "Op",
    "Match",
    "Not",
    "And",
    "Or",
    "Expr",
    "parse",
    "Filter",
    "compile_filter",
    "STRING",
    "INT",
    "FLOAT",
    "BOOL",
    "list_of",
    "map_of",
    "struct",
    "NODE",
    "AGENT_SERVICE",
    "CATALOG_SERVICE",
    "HEALTH_CHECK",
    "HEALTH_SERVICE_ENTRY",
    "MEMBER",
]

T = TypeVar("T")

EVALUATOR_ERROR = "Failed to create boolean expression evaluator"
"""Consul's prefix for every filter error in a 400 body (``<prefix>: <reason>``)."""

MAX_NESTING = 64
"""Parentheses/``not`` deeper than this are refused: a request must not exhaust the parser's stack."""


class FilterError(ValueError):
    """The expression is malformed, names a selector the result does not have, or misuses an operator."""


# ------------------------------------------------------------------------------------------- shapes

class Kind(enum.Enum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    LIST = "list"
    MAP = "map"
    STRUCT = "struct"


_PRIMITIVES = (Kind.STRING, Kind.INT, Kind.FLOAT, Kind.BOOL)


@dataclass(frozen=True, eq=False)
class Shape:
    """The type of one field of a result, mirroring the Go struct field go-bexpr would reflect on.

    ``elem`` is the element type of a LIST or the value type of a MAP (keys are always strings);
    ``fields`` are a STRUCT's members by JSON name. Identity-hashed: shapes are module constants.
    """

    kind: Kind
    elem: Shape | None = None
    fields: Mapping[str, Shape] = field(default_factory=dict)


STRING = Shape(Kind.STRING)
INT = Shape(Kind.INT)
FLOAT = Shape(Kind.FLOAT)
BOOL = Shape(Kind.BOOL)


def list_of(elem: Shape) -> Shape:
    return Shape(Kind.LIST, elem=elem)


def map_of(elem: Shape) -> Shape:
    return Shape(Kind.MAP, elem=elem)


def struct(**fields: Shape) -> Shape:
    return Shape(Kind.STRUCT, fields=fields)


# The result shapes of the filterable endpoints: the fields ctk's JSON carries, plus the Connect/proxy
# selectors Consul documents (zero-valued here, since ctk has no service mesh).
_WEIGHTS = struct(Passing=INT, Warning=INT)
_SERVICE_ADDRESS = struct(Address=STRING, Port=INT)
_MESH_GATEWAY = struct(Mode=STRING)
_UPSTREAM = struct(
    DestinationType=STRING, DestinationNamespace=STRING, DestinationName=STRING, Datacenter=STRING,
    LocalBindAddress=STRING, LocalBindPort=INT, MeshGateway=_MESH_GATEWAY,
)
_PROXY = struct(
    DestinationServiceName=STRING, DestinationServiceID=STRING, LocalServiceAddress=STRING,
    LocalServicePort=INT, Mode=STRING, TransparentProxy=struct(OutboundListenerPort=INT),
    MeshGateway=_MESH_GATEWAY, Upstreams=list_of(_UPSTREAM),
    Expose=struct(Checks=BOOL, Paths=list_of(struct(ListenerPort=INT, Path=STRING, LocalPathPort=INT,
                                                   Protocol=STRING))),
)
_CONNECT = struct(Native=BOOL)

NODE = struct(
    ID=STRING, Node=STRING, Address=STRING, Datacenter=STRING, TaggedAddresses=map_of(STRING),
    Meta=map_of(STRING), CreateIndex=INT, ModifyIndex=INT,
)
"""``/v1/catalog/nodes`` entries; ``Node`` of a ``/v1/health/service`` entry."""

AGENT_SERVICE = struct(
    Kind=STRING, ID=STRING, Service=STRING, Tags=list_of(STRING), Meta=map_of(STRING), Port=INT,
    Address=STRING, TaggedAddresses=map_of(_SERVICE_ADDRESS), Weights=_WEIGHTS, EnableTagOverride=BOOL,
    CreateIndex=INT, ModifyIndex=INT, ContentHash=STRING, Datacenter=STRING, Proxy=_PROXY, Connect=_CONNECT,
)
"""``/v1/agent/services`` values, ``/v1/catalog/node(-services)/:node`` services, health ``Service``."""

CATALOG_SERVICE = struct(
    ID=STRING, Node=STRING, Address=STRING, Datacenter=STRING, TaggedAddresses=map_of(STRING),
    NodeMeta=map_of(STRING), ServiceKind=STRING, ServiceID=STRING, ServiceName=STRING,
    ServiceTags=list_of(STRING), ServiceAddress=STRING, ServiceTaggedAddresses=map_of(_SERVICE_ADDRESS),
    ServiceWeights=_WEIGHTS, ServiceMeta=map_of(STRING), ServicePort=INT, ServiceEnableTagOverride=BOOL,
    ServiceProxy=_PROXY, ServiceConnect=_CONNECT, CreateIndex=INT, ModifyIndex=INT,
)
"""``/v1/catalog/service/:service`` entries; the instances ``/v1/catalog/services`` filters."""

_CHECK_DEFINITION = struct(
    HTTP=STRING, Header=map_of(list_of(STRING)), Method=STRING, Body=STRING, TLSServerName=STRING,
    TLSSkipVerify=BOOL, TCP=STRING, TCPUseTLS=BOOL, UDP=STRING, GRPC=STRING, GRPCUseTLS=BOOL,
    OSService=STRING, Interval=STRING, Timeout=STRING, DeregisterCriticalServiceAfter=STRING,
)

HEALTH_CHECK = struct(
    Node=STRING, CheckID=STRING, Name=STRING, Status=STRING, Notes=STRING, Output=STRING,
    ServiceID=STRING, ServiceName=STRING, ServiceTags=list_of(STRING), Type=STRING, Interval=STRING,
    Timeout=STRING, ExposedPort=INT, Definition=_CHECK_DEFINITION, CreateIndex=INT, ModifyIndex=INT,
)
"""``/v1/health/{node,checks,state}`` entries and ``/v1/agent/checks`` values."""

HEALTH_SERVICE_ENTRY = struct(Node=NODE, Service=AGENT_SERVICE, Checks=list_of(HEALTH_CHECK))
"""``/v1/health/service/:service`` entries."""

MEMBER = struct(
    Name=STRING, Addr=STRING, Port=INT, Tags=map_of(STRING), Status=INT, ProtocolMin=INT, ProtocolMax=INT,
    ProtocolCur=INT, DelegateMin=INT, DelegateMax=INT, DelegateCur=INT,
)
"""``/v1/agent/members`` entries."""


# ---------------------------------------------------------------------------------------------- AST

class Op(enum.Enum):
    """A match operator in its positive form; ``contains`` is ``in`` with the operands swapped."""

    EQUAL = "=="
    IN = "in"
    IS_EMPTY = "is empty"
    MATCHES = "matches"


@dataclass(frozen=True, slots=True)
class Match:
    selector: tuple[str, ...]
    op: Op
    negate: bool  # !=, not in, not contains, is not empty, not matches
    value: str | None  # raw text, typed only once the selector's field is known; None for is [not] empty
    spelling: str  # the operator as written, for error messages


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]


Expr = Match | Not | And | Or


# ---------------------------------------------------------------------------------------- tokenizer

class _T(enum.Enum):
    STRING = "string"
    NUMBER = "number"
    SELECTOR = "selector"
    KEYWORD = "keyword"
    LPAREN = "("
    RPAREN = ")"
    EQ = "=="
    NE = "!="
    EOF = "end of input"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _T
    text: str  # source text (for messages), or the decoded string
    pos: int
    path: tuple[str, ...] = ()  # SELECTOR/KEYWORD segments


_KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "is", "empty", "matches"})
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_WHITESPACE = " \t\r\n"
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}


def _q(text: str) -> str:
    """Quote like Go's ``%q``, so messages read the same as Consul's."""
    return json.dumps(text, ensure_ascii=False)


def _where(text: str, pos: int) -> str:
    """pigeon's ``line:col (offset)`` prefix, the form Consul's parse errors carry."""
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col} ({pos})"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, pos: int, message: str) -> FilterError:
        return FilterError(f"{_where(self.text, pos)}: {message}")

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos >= len(text):
                out.append(_Token(_T.EOF, "end of input", self.pos))
                return out
            start, ch = self.pos, text[self.pos]
            if ch == "(":
                self.pos += 1
                out.append(_Token(_T.LPAREN, "(", start))
            elif ch == ")":
                self.pos += 1
                out.append(_Token(_T.RPAREN, ")", start))
            elif text.startswith("==", start) or text.startswith("!=", start):
                self.pos += 2
                out.append(_Token(_T.EQ if ch == "=" else _T.NE, text[start:start + 2], start))
            elif ch in "\"`":
                out.append(_Token(_T.STRING, self._string(), start))
            elif ch.isdigit() or (ch == "-" and text[start + 1:start + 2].isdigit()):
                out.append(self._number())
            elif _IDENT.match(text, start):
                out.append(self._selector())
            else:
                raise self.error(start, f"unexpected character {_q(ch)}")

    def _number(self) -> _Token:
        start = self.pos
        m = _NUMBER.match(self.text, start)
        end = m.end() if m else start
        # go-bexpr: a number must be followed by whitespace, ")" or the end ("1abc" is not a number).
        if m is None or (end < len(self.text) and self.text[end] not in _WHITESPACE + ")"):
            raise self.error(start, "Invalid number literal")
        self.pos = end
        return _Token(_T.NUMBER, m.group(), start)

    def _string(self) -> str:
        text, start = self.text, self.pos
        quote = text[start]
        if quote == "`":
            end = text.find("`", start + 1)
            if end < 0:
                raise self.error(start, "Unterminated string literal")
            self.pos = end + 1
            return text[start + 1:end].replace("\r", "")  # Go drops CRs from raw strings
        buf = bytearray()
        i = start + 1
        while True:
            if i >= len(text):
                raise self.error(start, "Unterminated string literal")
            c = text[i]
            if c == '"':
                self.pos = i + 1
                return buf.decode("utf-8", errors="replace")
            if c == "\n":
                raise self.error(i, "newline in string literal")
            if c != "\\":
                buf += c.encode()
                i += 1
                continue
            i = self._escape(i, buf)

    def _escape(self, i: int, buf: bytearray) -> int:
        """Decode one Go escape sequence starting at the backslash ``text[i]``; return the next index."""
        text = self.text
        e = text[i + 1] if i + 1 < len(text) else ""
        if e in _SIMPLE_ESCAPES:
            buf += _SIMPLE_ESCAPES[e].encode()
            return i + 2
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width is not None:
            digits = text[i + 2:i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.error(i, f"invalid escape sequence \\{e}{digits}")
            value = int(digits, 16)
            if e == "x":
                buf.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise self.error(i, f"invalid Unicode code point \\{e}{digits}")
            else:
                buf += chr(value).encode()
            return i + 2 + width
        octal = text[i + 1:i + 4]
        if len(octal) == 3 and all(d in "01234567" for d in octal) and int(octal, 8) < 256:
            buf.append(int(octal, 8))
            return i + 4
        raise self.error(i, f"invalid escape sequence \\{e}")

    def _selector(self) -> _Token:
        text, start = self.text, self.pos
        m = _IDENT.match(text, start)
        assert m is not None
        path = [m.group()]
        self.pos = m.end()
        bracketed = False
        while self.pos < len(text):
            c = text[self.pos]
            if c == ".":
                seg = _IDENT.match(text, self.pos + 1) or _DIGITS.match(text, self.pos + 1)
                if seg is None:
                    raise self.error(self.pos, "Invalid selector: expected a name after '.'")
                path.append(seg.group())
                self.pos = seg.end()
            elif c == "[":
                path.append(self._index())
                bracketed = True
            else:
                break
        kind = _T.KEYWORD if len(path) == 1 and not bracketed and path[0] in _KEYWORDS else _T.SELECTOR
        return _Token(kind, text[start:self.pos], start, tuple(path))

    def _index(self) -> str:
        """``["map key"]`` after a selector, for keys that are not identifiers."""
        text, open_pos = self.text, self.pos
        self.pos += 1
        while self.pos < len(text) and text[self.pos] in _WHITESPACE:
            self.pos += 1
        if self.pos >= len(text) or text[self.pos] not in "\"`":
            raise self.error(open_pos, "Invalid index: expected a quoted string after '['")
        key = self._string()
        while self.pos < len(text) and text[self.pos] in _WHITESPACE:
            self.pos += 1
        if self.pos >= len(text) or text[self.pos] != "]":
            raise self.error(open_pos, "Unclosed index expression")
        self.pos += 1
        return key


# ------------------------------------------------------------------------------------------- parser

_OPERATORS = "==, !=, in, not in, contains, not contains, matches, not matches, is empty, is not empty"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _Lexer(text).tokens()
        self.i = 0
        self.depth = 0

    def error(self, tok: _Token, message: str) -> FilterError:
        return FilterError(f"{_where(self.text, tok.pos)}: {message}")

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> _Token:
        tok = self.peek()
        self.i += 1
        return tok

    def at_keyword(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind is _T.KEYWORD and tok.text == word

    def parse(self) -> Expr:
        expr = self.expression()
        tok = self.peek()
        if tok.kind is not _T.EOF:
            raise self.error(tok, f'expected "and", "or" or end of input, found {_describe(tok)}')
        return expr

    def expression(self) -> Expr:
        operands = [self.and_expr()]
        while self.at_keyword("or"):
            self.i += 1
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Expr:
        operands = [self.not_expr()]
        while self.at_keyword("and"):
            self.i += 1
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expr(self) -> Expr:
        negations = 0
        while self.at_keyword("not"):
            self.i += 1
            negations += 1
            if negations > MAX_NESTING:
                raise self.error(self.peek(), "expression nests too deeply")
        operand = self.primary()
        if negations % 2 == 0:
            return operand  # "not not X" is X, as in go-bexpr (which also sees through parentheses)
        return operand.operand if isinstance(operand, Not) else Not(operand)

    def primary(self) -> Expr:
        tok = self.peek()
        if tok.kind is not _T.LPAREN:
            return self.match()
        self.i += 1
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(tok, "expression nests too deeply")
        expr = self.expression()
        self.depth -= 1
        if self.peek().kind is not _T.RPAREN:
            raise self.error(tok, f'Unmatched parentheses: found {_describe(self.peek())} before ")"')
        self.i += 1
        return expr

    def match(self) -> Expr:
        first = self.next()
        if first.kind not in (_T.SELECTOR, _T.KEYWORD, _T.STRING, _T.NUMBER):
            raise self.error(first, f"expected a selector or a value, found {_describe(first)}")
        op_tok = self.peek()
        if op_tok.kind in (_T.EQ, _T.NE):
            self.i += 1
            return Match(self.selector_of(first, op_tok), Op.EQUAL, op_tok.kind is _T.NE,
                         self.value(op_tok), op_tok.text)
        negate = self.at_keyword("not")
        word_tok = self.peek(1 if negate else 0)
        word = word_tok.text if word_tok.kind is _T.KEYWORD else ""
        spelling = ("not " if negate else "") + word
        if word in ("contains", "matches"):
            self.i += 2 if negate else 1
            op = Op.IN if word == "contains" else Op.MATCHES
            return Match(self.selector_of(first, word_tok), op, negate, self.value(word_tok), spelling)
        if word == "in":
            self.i += 2 if negate else 1
            sel = self.next()
            if sel.kind not in (_T.SELECTOR, _T.KEYWORD):
                raise self.error(sel, f'Invalid selector: expected a selector after "{spelling}", '
                                      f"found {_describe(sel)}")
            return Match(sel.path, Op.IN, negate, _raw(first), spelling)
        if self.at_keyword("is") and not negate:
            self.i += 1
            negate = self.at_keyword("not")
            if negate:
                self.i += 1
            if not self.at_keyword("empty"):
                raise self.error(self.peek(), f'expected "empty" after "is{" not" if negate else ""}", '
                                              f"found {_describe(self.peek())}")
            self.i += 1
            spelling = "is not empty" if negate else "is empty"
            return Match(self.selector_of(first, op_tok), Op.IS_EMPTY, negate, None, spelling)
        raise self.error(op_tok, f"expected an operator ({_OPERATORS}) after {_describe(first)}, "
                                 f"found {_describe(op_tok)}")

    def selector_of(self, tok: _Token, op_tok: _Token) -> tuple[str, ...]:
        if tok.kind in (_T.SELECTOR, _T.KEYWORD):
            return tok.path
        raise self.error(tok, f"expected a selector before {_q(op_tok.text)}, found {_describe(tok)} "
                              f'(only "in" / "not in" take the value first)')

    def value(self, op_tok: _Token) -> str:
        tok = self.next()
        if tok.kind not in (_T.SELECTOR, _T.KEYWORD, _T.STRING, _T.NUMBER):
            raise self.error(tok, f"expected a value after {_q(op_tok.text)}, found {_describe(tok)}")
        return _raw(tok)


def _raw(tok: _Token) -> str:
    """A value's raw text: a string's contents, a number's digits, a bare selector's dotted path."""
    if tok.kind in (_T.SELECTOR, _T.KEYWORD):
        return ".".join(tok.path)
    return tok.text


def _describe(tok: _Token) -> str:
    if tok.kind is _T.EOF:
        return "end of input"
    if tok.kind is _T.STRING:
        return f"string {_q(tok.text)}"
    return _q(tok.text)


def parse(expression: str) -> Expr:
    """Parse an expression to its AST, with no knowledge of what it will be run against."""
    return _Parser(expression).parse()


# ----------------------------------------------------------------------------- validation + compile

_OPS_BY_KIND: dict[Kind, frozenset[Op]] = {
    # go-bexpr's field configurations, plus "is empty" on strings (see the README's deliberate differences).
    Kind.STRING: frozenset({Op.EQUAL, Op.IN, Op.MATCHES, Op.IS_EMPTY}),
    Kind.INT: frozenset({Op.EQUAL}),
    Kind.FLOAT: frozenset({Op.EQUAL}),
    Kind.BOOL: frozenset({Op.EQUAL}),
    Kind.MAP: frozenset({Op.IN, Op.IS_EMPTY}),
    Kind.STRUCT: frozenset(),
}
_GO_OCTAL = re.compile(r"[+-]?0[0-7_]+")
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
# Perl constructs Go's RE2 rejects; Python's re would accept them and so speak a different language.


def _ops_for(shape: Shape) -> frozenset[Op]:
    if shape.kind is Kind.LIST:
        assert shape.elem is not None
        return frozenset({Op.IN, Op.IS_EMPTY}) if shape.elem.kind in _PRIMITIVES else frozenset({Op.IS_EMPTY})
    return _OPS_BY_KIND[shape.kind]


def _coerce(raw: str, shape: Shape, selector: str) -> Any:
    """The expression's text as the field's type, as go-bexpr coerces before evaluating."""
    try:
        if shape.kind is Kind.INT:  # Go's ParseInt(raw, 0, 64): 0x.., 0o.., 0b.., and 017 is octal
            return int(raw, 8) if _GO_OCTAL.fullmatch(raw) else int(raw, 0)
        if shape.kind is Kind.FLOAT:
            return float(raw)
    except ValueError:
        kind = "an integer" if shape.kind is Kind.INT else "a number"
        raise FilterError(f'Failed to coerce value "{raw}" for selector "{selector}": not {kind}') from None
    if shape.kind is Kind.BOOL:
        if raw in _GO_TRUE:
            return True
        if raw in _GO_FALSE:
            return False
        raise FilterError(f'Failed to coerce value "{raw}" for selector "{selector}": not a boolean')
    return raw


def _compile_regex(raw: str) -> Any:
    """Compile a ``matches`` pattern with RE2, Go's regexp engine: the same syntax as Consul, and
    linear-time matching, so no pattern sent in ``?filter=`` can stall the agent (``re`` can take
    exponential time on patterns like ``(a+)+$``)."""
    try:
        return compile_re2(raw)
    except RegexError as err:
        raise FilterError(f"Failed to compile regular expression {_q(raw)}: {err}") from None


@dataclass(frozen=True, slots=True)
class _Test:
    """A validated match: its path, the field it ends on, and the operand already in that field's type."""

    path: tuple[str, ...]
    shape: Shape  # the shape evaluation starts from (the whole result entry)
    leaf: Shape
    op: Op
    negate: bool
    operand: Any  # typed value, compiled pattern, or None


@dataclass(frozen=True, slots=True)
class _Negation:
    operand: _Compiled


@dataclass(frozen=True, slots=True)
class _All:
    operands: tuple[_Compiled, ...]


@dataclass(frozen=True, slots=True)
class _Any:
    operands: tuple[_Compiled, ...]


_Compiled = _Test | _Negation | _All | _Any


def _validate(expr: Expr, root: Shape) -> _Compiled:
    """Check every selector and operator against ``root`` and type every operand: all a filter's
    errors surface here, before any data is read, so evaluation itself cannot fail."""
    if isinstance(expr, Not):
        return _Negation(_validate(expr.operand, root))
    if isinstance(expr, And):
        return _All(tuple(_validate(e, root) for e in expr.operands))
    if isinstance(expr, Or):
        return _Any(tuple(_validate(e, root) for e in expr.operands))
    shape = root
    for n, name in enumerate(expr.selector):
        sub = _subfield(shape, name)
        if sub is None:
            raise FilterError(f'Selector "{".".join(expr.selector[:n + 1])}" is not valid')
        shape = sub
    selector = ".".join(expr.selector)
    if expr.op not in _ops_for(shape):
        raise FilterError(f'Invalid match operator "{expr.spelling}" for selector "{selector}"')
    operand: Any = None
    if expr.value is not None:
        if expr.op is Op.MATCHES:
            operand = _compile_regex(expr.value)
        elif shape.kind is Kind.LIST:
            assert shape.elem is not None
            operand = _coerce(expr.value, shape.elem, selector)
        elif expr.op is Op.EQUAL:
            operand = _coerce(expr.value, shape, selector)
        else:
            operand = expr.value  # substring of a string, key of a map
    return _Test(expr.selector, root, shape, expr.op, expr.negate, operand)


def _subfield(shape: Shape, name: str) -> Shape | None:
    """What ``shape.name`` selects: a struct member, any map key's value, or a member of a list's objects."""
    if shape.kind is Kind.LIST:
        assert shape.elem is not None
        shape = shape.elem
        if shape.kind is not Kind.STRUCT:
            return None
    if shape.kind is Kind.STRUCT:
        return shape.fields.get(name)
    if shape.kind is Kind.MAP:
        return shape.elem
    return None


# --------------------------------------------------------------------------------------- evaluation

_ZERO: dict[Kind, Any] = {Kind.STRING: "", Kind.INT: 0, Kind.FLOAT: 0.0, Kind.BOOL: False,
                          Kind.LIST: (), Kind.MAP: {}}


def _evaluate(node: _Compiled, datum: Any) -> bool:
    if isinstance(node, _Test):
        return _walk(node, 0, datum, node.shape)
    if isinstance(node, _Negation):
        return not _evaluate(node.operand, datum)
    if isinstance(node, _All):
        return all(_evaluate(e, datum) for e in node.operands)
    return any(_evaluate(e, datum) for e in node.operands)


def _walk(test: _Test, i: int, value: Any, shape: Shape) -> bool:
    """Follow ``test.path`` from ``value`` (of ``shape``) and apply the operator at its end."""
    while i < len(test.path):
        if shape.kind is Kind.LIST:  # a list of objects on the path: does any element match?
            assert shape.elem is not None
            items = value if isinstance(value, list) else ()
            return any(_walk(test, i, item, shape.elem) for item in items)
        name = test.path[i]
        if shape.kind is Kind.MAP:
            if not isinstance(value, dict) or name not in value:
                # go-bexpr: nothing is equal to, in, or matched by a missing key; it is empty.
                return (test.op is Op.IS_EMPTY) != test.negate
            value, sub = value[name], shape.elem
        else:  # a struct member; absent from the JSON (omitempty) means its zero value
            value, sub = (value.get(name) if isinstance(value, dict) else None), shape.fields[name]
        assert sub is not None
        shape = sub
        i += 1
    if value is None:
        value = _ZERO.get(shape.kind)
    return _apply(test, value, shape) != test.negate


def _apply(test: _Test, value: Any, shape: Shape) -> bool:
    op = test.op
    if op is Op.EQUAL:
        return _equal(value, test.operand)
    if op is Op.IS_EMPTY:
        return len(value) == 0 if isinstance(value, str | list | tuple | dict) else False
    if op is Op.MATCHES:
        return isinstance(value, str) and test.operand.search(value) is not None
    if shape.kind is Kind.LIST:  # Op.IN
        return isinstance(value, list | tuple) and any(_equal(item, test.operand) for item in value)
    return isinstance(value, str | dict) and test.operand in value  # substring / map key


def _equal(value: Any, operand: Any) -> bool:
    if isinstance(operand, bool) or isinstance(value, bool):
        return value is operand
    if isinstance(operand, int | float):
        return isinstance(value, int | float) and value == operand
    return isinstance(value, str) and value == operand


# ----------------------------------------------------------------------------------------- the API

class Filter:
    """An expression bound to one result shape: parsed and validated once, then applied to entries.

    Immutable, so one compiled filter serves every request (and every blocking-query wake-up) that
    carries the same ``?filter=``.
    """

    __slots__ = ("expression", "shape", "_root")

    def __init__(self, expression: str, shape: Shape) -> None:
        self.expression = expression
        self.shape = shape
        self._root: _Compiled | None = _validate(parse(expression), shape) if expression else None

    @property
    def matches_everything(self) -> bool:
        """True for the empty expression: Consul treats ``?filter=`` with no value as no filter."""
        return self._root is None

    def matches(self, datum: Any) -> bool:
        return self._root is None or _evaluate(self._root, datum)

    def select(self, items: Iterable[T]) -> list[T]:
        """The entries of a list result that match, in order."""
        return list(items) if self._root is None else [e for e in items if self.matches(e)]

    def select_values(self, items: Mapping[str, T]) -> dict[str, T]:
        """The entries of a map result (``/v1/agent/services``) whose *value* matches."""
        return dict(items) if self._root is None else {k: v for k, v in items.items() if self.matches(v)}

    def __repr__(self) -> str:
        return f"Filter({self.expression!r})"


@functools.lru_cache(maxsize=256)
def compile_filter(expression: str, shape: Shape) -> Filter:
    """A (cached) :class:`Filter`; raises :class:`FilterError` with the reason a client should see."""
    return Filter(expression, shape)
