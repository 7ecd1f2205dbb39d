"""Go's ``text/template``, as consul-template runs it, for existing ``.ctmpl`` files.

Operators migrating from consul-template bring templates whose exact output (whitespace,
``{{-``/``-}}`` trimming, ``<no value>``, ``[a b]``, sorted map ranges) is already what their
nginx/HAProxy/keepalived configs expect, so this is a faithful interpreter rather than a
translation to Jinja: lexer → parser (with Go's parse-time checks: undefined variables and
functions, misplaced ``{{end}}``) → executor with Go's truthiness, comparison,
``index``/``slice``/``len`` and ``printf`` rules. The tree is compiled once into nested closures,
because a template is parsed once and rendered on every Consul change (about 1 ms for the
shared upstream fixture over 1,000 instances, see ``bench/template_render.py``).

Supported: actions with custom delimiters, trim markers, comments, ``if``/``else if``/``else``,
``range`` (lists, maps in key order, ints, channels; ``$i, $e :=``; ``else``; ``break``/
``continue``), ``with``/``else with``/``else``, variables (``:=`` and ``=``, ``$``), pipelines,
parenthesised arguments, field/method chains (on dicts, dataclasses and Go-method objects),
string/raw/char/number/bool/nil literals, the builtins ``and or not eq ne lt le gt ge len index
slice print printf println html js urlquery call``, ``define``/``template``/``block`` and
``executeTemplate``.

Known differences: values are Python objects, so nested pointers print as ``{...}`` instead of
an address; a field read through ``nil`` yields ``<no value>`` instead of Go's "nil pointer
evaluating" error (consul-template's first, data-less pass is never written anyway); template
nesting is capped at 200 levels (Go: 100,000).
"""

from __future__ import annotations

import dataclasses
import html as _html
import inspect
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .errors import FunctionError, TemplateExecError, TemplateSyntaxError
from .gofmt import format_v, go_type_name, print_action, quote, sorted_items, sprint, sprintf, sprintln

__all__ = ["GoTemplate", "BUILTINS", "parse", "go_truth"]

_SPACE = " \t\r\n"
_KEYWORDS = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)

# --------------------------------------------------------------------------------------------
# Lexer

T_TEXT = "text"
T_LEFT = "{{"
T_RIGHT = "}}"
T_SPACE = "space"
T_EOF = "EOF"
T_IDENT = "identifier"
T_FIELD = "field"
T_VAR = "variable"
T_DOT = "."
T_NIL = "nil"
T_BOOL = "bool"
T_NUMBER = "number"
T_CHAR_CONST = "char constant"
T_STRING = "string"
T_RAW = "raw string"
T_PIPE = "|"
T_ASSIGN = "="
T_DECLARE = ":="
T_LPAREN = "("
T_RPAREN = ")"
T_CHAR = "char"
T_KEYWORD = "keyword"


@dataclass(slots=True)
class Token:
    """One lexical item; ``pos`` is the character offset into the source."""

    typ: str
    val: str
    pos: int
    line: int

    def describe(self) -> str:
        """How Go's parser names a token in "unexpected ..." errors."""
        if self.typ == T_EOF:
            return "EOF"
        if self.typ == T_KEYWORD:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return quote(self.val[:10]) + "..."
        return quote(self.val)


class _LexError(Exception):
    def __init__(self, msg: str, line: int) -> None:
        super().__init__(msg)
        self.line = line


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdigit()


def lex(text: str, left: str = "{{", right: str = "}}") -> list[Token]:
    """Split template text into tokens, applying trim markers and dropping comments."""
    toks: list[Token] = []
    n = len(text)
    pos = 0
    line = 1

    def line_at(p: int) -> int:
        return line + text.count("\n", pos, p)

    while True:
        i = text.find(left, pos)
        if i < 0:
            if pos < n:
                toks.append(Token(T_TEXT, text[pos:], pos, line))
            toks.append(Token(T_EOF, "", n, line + text.count("\n", pos, n)))
            return toks
        after = i + len(left)
        trim_left = after + 1 < n and text[after] == "-" and text[after + 1] in _SPACE
        chunk = text[pos:i]
        if trim_left:
            chunk = chunk.rstrip(_SPACE)
        if chunk:
            toks.append(Token(T_TEXT, chunk, pos, line))
        line = line_at(i)
        pos = i
        k = after + (2 if trim_left else 0)
        if text.startswith("/*", k):
            end = text.find("*/", k + 2)
            if end < 0:
                raise _LexError("unclosed comment", line)
            k = end + 2
            trim_right = (
                k + 1 < n and text[k] in _SPACE and text[k + 1] == "-" and text.startswith(right, k + 2)
            )
            if trim_right:
                k += 2
            elif not text.startswith(right, k):
                raise _LexError("comment ends before closing delimiter", line)
            k += len(right)
            if trim_right:
                while k < n and text[k] in _SPACE:
                    k += 1
            line = line_at(k)
            pos = k
            continue
        toks.append(Token(T_LEFT, left, i, line))
        depth = 0
        while True:
            if k + 1 < n and text[k] in _SPACE and text[k + 1] == "-" and text.startswith(right, k + 2):
                if depth:
                    raise _LexError("unclosed left paren", line_at(k))
                toks.append(Token(T_RIGHT, right, k, line_at(k)))
                k += 2 + len(right)
                while k < n and text[k] in _SPACE:
                    k += 1
                break
            if text.startswith(right, k):
                if depth:
                    raise _LexError("unclosed left paren", line_at(k))
                toks.append(Token(T_RIGHT, right, k, line_at(k)))
                k += len(right)
                break
            if k >= n:
                raise _LexError("unclosed action", line_at(k))
            c = text[k]
            start = k
            if c in _SPACE:
                while k < n and text[k] in _SPACE:
                    if k + 1 < n and text[k + 1] == "-" and text.startswith(right, k + 2):
                        break  # this space belongs to the " -}}" trim marker
                    k += 1
                if k > start:
                    toks.append(Token(T_SPACE, text[start:k], start, line_at(start)))
                continue
            if c == "=":
                toks.append(Token(T_ASSIGN, "=", k, line_at(k)))
                k += 1
            elif c == ":":
                if k + 1 >= n or text[k + 1] != "=":
                    raise _LexError("expected :=", line_at(k))
                toks.append(Token(T_DECLARE, ":=", k, line_at(k)))
                k += 2
            elif c == "|":
                toks.append(Token(T_PIPE, "|", k, line_at(k)))
                k += 1
            elif c == '"':
                k += 1
                while True:
                    if k >= n or text[k] == "\n":
                        raise _LexError("unterminated quoted string", line_at(start))
                    if text[k] == "\\":
                        k += 2
                        continue
                    if text[k] == '"':
                        k += 1
                        break
                    k += 1
                toks.append(Token(T_STRING, text[start:k], start, line_at(start)))
            elif c == "`":
                end = text.find("`", k + 1)
                if end < 0:
                    raise _LexError("unterminated raw quoted string", line_at(start))
                k = end + 1
                toks.append(Token(T_RAW, text[start:k], start, line_at(start)))
            elif c == "'":
                k += 1
                while True:
                    if k >= n or text[k] == "\n":
                        raise _LexError("unterminated character constant", line_at(start))
                    if text[k] == "\\":
                        k += 2
                        continue
                    if text[k] == "'":
                        k += 1
                        break
                    k += 1
                toks.append(Token(T_CHAR_CONST, text[start:k], start, line_at(start)))
            elif c == "$":
                k += 1
                while k < n and _is_alnum(text[k]):
                    k += 1
                _check_terminator(text, k, right, line_at(k))
                toks.append(Token(T_VAR, text[start:k], start, line_at(start)))
            elif c == "." and not (k + 1 < n and text[k + 1].isdigit()):
                k += 1
                while k < n and _is_alnum(text[k]):
                    k += 1
                _check_terminator(text, k, right, line_at(k))
                if k == start + 1:
                    toks.append(Token(T_DOT, ".", start, line_at(start)))
                else:
                    toks.append(Token(T_FIELD, text[start:k], start, line_at(start)))
            elif c in "+-." or c.isdigit():
                k = _scan_number(text, k)
                if k < n and _is_alnum(text[k]):
                    k += 1
                    raise _LexError(f"bad number syntax: {quote(text[start:k])}", line_at(start))
                num = text[start:k]
                toks.append(Token(T_NUMBER, num, start, line_at(start)))
            elif _is_alnum(c):
                while k < n and _is_alnum(text[k]):
                    k += 1
                word = text[start:k]
                _check_terminator(text, k, right, line_at(k))
                if word in _KEYWORDS:
                    toks.append(Token(T_KEYWORD, word, start, line_at(start)))
                elif word in ("true", "false"):
                    toks.append(Token(T_BOOL, word, start, line_at(start)))
                elif word == "nil":
                    toks.append(Token(T_NIL, word, start, line_at(start)))
                else:
                    toks.append(Token(T_IDENT, word, start, line_at(start)))
            elif c == "(":
                depth += 1
                toks.append(Token(T_LPAREN, "(", k, line_at(k)))
                k += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise _LexError("unexpected right paren", line_at(k))
                toks.append(Token(T_RPAREN, ")", k, line_at(k)))
                k += 1
            elif ord(c) < 0x80 and c.isprintable():
                toks.append(Token(T_CHAR, c, k, line_at(k)))
                k += 1
            else:
                raise _LexError(f"unrecognized character in action: U+{ord(c):04X} {c!r}", line_at(k))
        line = line_at(k)
        pos = k


def _check_terminator(text: str, k: int, right: str, line: int) -> None:
    if k >= len(text):
        return
    c = text[k]
    if c in _SPACE or c in ".,|:)(" or text.startswith(right, k):
        return
    raise _LexError(f"bad character U+{ord(c):04X} {c!r}", line)


def _scan_number(text: str, k: int) -> int:
    n = len(text)
    if k < n and text[k] in "+-":
        k += 1
    digits = "0123456789_"
    if k < n and text[k] == "0" and k + 1 < n and text[k + 1] in "xXoObB":
        digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[text[k + 1].lower()]
        k += 2
    while k < n and text[k] in digits:
        k += 1
    if k < n and text[k] == ".":
        k += 1
        while k < n and text[k] in digits:
            k += 1
    if len(digits) == 11 and k < n and text[k] in "eE":
        k += 1
        if k < n and text[k] in "+-":
            k += 1
        while k < n and text[k] in "0123456789_":
            k += 1
    if len(digits) == 23 and k < n and text[k] in "pP":
        k += 1
        if k < n and text[k] in "+-":
            k += 1
        while k < n and text[k] in "0123456789_":
            k += 1
    if k < n and text[k] == "i":
        k += 1
    return k


# --------------------------------------------------------------------------------------------
# Literals

_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(lit: str) -> str:
    """Go's ``strconv.Unquote`` for "..." (Go escapes), `...` (raw, CRs dropped) and '.'."""
    if lit.startswith("`"):
        return lit[1:-1].replace("\r", "")
    quote = lit[0]
    body = lit[1:-1]
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("invalid syntax")
        e = body[i + 1]
        if e in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[e])
            i += 2
        elif e == quote:
            out.append(e)
            i += 2
        elif e == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        elif e == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif e == "U":
            out.append(chr(int(body[i + 2 : i + 10], 16)))
            i += 10
        elif e in "01234567":
            v = int(body[i + 1 : i + 4], 8)
            if v > 255:
                raise ValueError("invalid syntax")
            out.append(chr(v))
            i += 4
        else:
            raise ValueError("invalid syntax")
    return "".join(out)


def _parse_number(text: str) -> int | float:
    """A Go number literal as ``idealConstant`` would type it: ``1`` int, ``1.0``/``1e3`` float."""
    if text.endswith("i"):
        raise ValueError("complex numbers are not supported")
    clean = text.replace("_", "")
    body = clean.lstrip("+-")
    neg = clean.startswith("-")
    is_hex = body[:2] in ("0x", "0X")
    if is_hex and any(ch in body for ch in ".pP"):
        v = float.fromhex(("-" if neg else "") + body)
        return v
    if not is_hex and any(ch in body for ch in ".eE"):
        return float(clean)
    if re.fullmatch(r"0[0-7]+", body):
        iv = int(body, 8)
    else:
        iv = int(body, 0)
    iv = -iv if neg else iv
    if not -(2**63) <= iv < 2**63:
        raise ValueError(f"{text} overflows int")
    return iv


# --------------------------------------------------------------------------------------------
# Parse tree


@dataclass(slots=True)
class Node:
    """Base of all parse-tree nodes; ``pos`` is the character offset in the template text."""

    pos: int


@dataclass(slots=True)
class TextNode(Node):
    text: str


@dataclass(slots=True)
class ListNode(Node):
    nodes: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class DotNode(Node):
    def __str__(self) -> str:
        return "."


@dataclass(slots=True)
class NilNode(Node):
    def __str__(self) -> str:
        return "nil"


@dataclass(slots=True)
class BoolNode(Node):
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(slots=True)
class NumberNode(Node):
    value: int | float
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class StringNode(Node):
    value: str
    quoted: str

    def __str__(self) -> str:
        return self.quoted


@dataclass(slots=True)
class FieldNode(Node):
    idents: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


@dataclass(slots=True)
class VariableNode(Node):
    idents: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.idents)


@dataclass(slots=True)
class IdentifierNode(Node):
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(slots=True)
class ChainNode(Node):
    node: Node
    fields: tuple[str, ...]

    def __str__(self) -> str:
        inner = str(self.node)
        if isinstance(self.node, PipeNode):
            inner = f"({inner})"
        return inner + "".join("." + f for f in self.fields)


@dataclass(slots=True)
class CommandNode(Node):
    args: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass(slots=True)
class PipeNode(Node):
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[CommandNode] = field(default_factory=list)

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


@dataclass(slots=True)
class ActionNode(Node):
    pipe: PipeNode


@dataclass(slots=True)
class IfNode(Node):
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None


@dataclass(slots=True)
class WithNode(Node):
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None


@dataclass(slots=True)
class RangeNode(Node):
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None


@dataclass(slots=True)
class TemplateNode(Node):
    name: str
    pipe: PipeNode | None

    def __str__(self) -> str:
        if self.pipe is None:
            return f"{{{{template {quote(self.name)}}}}}"
        return f"{{{{template {quote(self.name)} {self.pipe}}}}}"


@dataclass(slots=True)
class BreakNode(Node):
    pass


@dataclass(slots=True)
class ContinueNode(Node):
    pass


@dataclass(slots=True)
class _EndNode(Node):
    pass


@dataclass(slots=True)
class _ElseNode(Node):
    pass


# --------------------------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive descent over the token list, mirroring text/template/parse."""

    def __init__(self, name: str, text: str, tokens: list[Token], funcs: frozenset[str]) -> None:
        self.name = name
        self.text = text
        self.toks = tokens
        self.i = 0
        self.funcs = funcs
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.trees: dict[str, ListNode] = {}

    # token helpers
    def next(self) -> Token:
        t = self.toks[self.i]
        if self.i < len(self.toks) - 1:
            self.i += 1
        return t

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> Token:
        return self.toks[self.i]

    def next_non_space(self) -> Token:
        t = self.next()
        while t.typ == T_SPACE:
            t = self.next()
        return t

    def peek_non_space(self) -> Token:
        t = self.next_non_space()
        self.backup()
        return t

    def error(self, msg: str, tok: Token | None = None) -> NoReturn:
        line = (tok or self.toks[max(self.i - 1, 0)]).line
        raise TemplateSyntaxError(f"template: {self.name}:{line}: {msg}")

    def unexpected(self, tok: Token, context: str) -> NoReturn:
        if tok.typ == T_EOF:
            self.error(f"unexpected EOF in {context}", tok)
        self.error(f"unexpected {tok.describe()} in {context}", tok)

    def expect(self, typ: str, context: str) -> Token:
        t = self.next_non_space()
        if t.typ != typ:
            self.unexpected(t, context)
        return t

    # top level
    def parse(self) -> ListNode:
        root = ListNode(0)
        while self.peek().typ != T_EOF:
            t = self.peek()
            if t.typ == T_LEFT:
                save = self.i
                self.next()
                nxt = self.next_non_space()
                if nxt.typ == T_KEYWORD and nxt.val == "define":
                    self.parse_definition(nxt)
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, _EndNode):
                self.error("unexpected {{end}}")
            if isinstance(node, _ElseNode):
                self.error("unexpected {{else}}")
            root.nodes.append(node)
        return root

    def parse_definition(self, tok: Token) -> None:
        name_tok = self.next_non_space()
        if name_tok.typ not in (T_STRING, T_RAW):
            self.unexpected(name_tok, "define clause")
        name = unquote(name_tok.val)
        self.expect(T_RIGHT, "define clause")
        saved = self.vars
        self.vars = ["$"]
        body, end = self.item_list()
        if not isinstance(end, _EndNode):
            self.unexpected(self.toks[self.i - 1], "define clause")
        self.vars = saved
        self.add_tree(name, body)

    def add_tree(self, name: str, body: ListNode) -> None:
        """Go's rule: an empty redefinition does not replace a non-empty template."""
        if name in self.trees and _is_empty_tree(body):
            return
        self.trees[name] = body

    def item_list(self) -> tuple[ListNode, Node]:
        lst = ListNode(self.peek().pos)
        while self.peek_non_space().typ != T_EOF:
            n = self.text_or_action()
            if isinstance(n, (_EndNode, _ElseNode)):
                return lst, n
            lst.nodes.append(n)
        self.error("unexpected EOF")

    def text_or_action(self) -> Node:
        t = self.next()
        if t.typ == T_TEXT:
            return TextNode(t.pos, t.val)
        if t.typ == T_LEFT:
            return self.action()
        self.unexpected(t, "input")

    def action(self) -> Node:
        t = self.next_non_space()
        if t.typ == T_KEYWORD:
            kw = t.val
            if kw == "block":
                return self.block_control(t)
            if kw == "break":
                return self.break_control(t, "break")
            if kw == "continue":
                return self.break_control(t, "continue")
            if kw == "else":
                return self.else_control(t)
            if kw == "end":
                self.expect(T_RIGHT, "end")
                return _EndNode(t.pos)
            if kw == "if":
                return self.if_control(t)
            if kw == "range":
                return self.range_control(t)
            if kw == "template":
                return self.template_control(t)
            if kw == "with":
                return self.with_control(t)
            self.unexpected(t, "command")
        self.backup()
        pipe = self.pipeline("command", T_RIGHT)
        return ActionNode(t.pos, pipe)

    def break_control(self, t: Token, kw: str) -> Node:
        tok = self.next_non_space()
        if tok.typ != T_RIGHT:
            self.unexpected(tok, f"{{{{{kw}}}}}")
        if self.range_depth == 0:
            self.error(f"{{{{{kw}}}}} outside {{{{range}}}}", t)
        return BreakNode(t.pos) if kw == "break" else ContinueNode(t.pos)

    def else_control(self, t: Token) -> Node:
        peek = self.peek_non_space()
        if peek.typ == T_KEYWORD and peek.val in ("if", "with"):
            return _ElseNode(t.pos)  # "else if"/"else with": leave the keyword pending
        self.expect(T_RIGHT, "else")
        return _ElseNode(t.pos)

    def parse_control(self, t: Token, context: str) -> tuple[PipeNode, ListNode, ListNode | None]:
        mark = len(self.vars)
        try:
            pipe = self.pipeline(context, T_RIGHT)
            if context == "range":
                self.range_depth += 1
            body, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list: ListNode | None = None
            if isinstance(nxt, _ElseNode):
                peek = self.peek_non_space()
                if context == "if" and peek.typ == T_KEYWORD and peek.val == "if":
                    kw = self.next_non_space()
                    else_list = ListNode(nxt.pos, [self.if_control(kw)])
                elif context == "with" and peek.typ == T_KEYWORD and peek.val == "with":
                    kw = self.next_non_space()
                    else_list = ListNode(nxt.pos, [self.with_control(kw)])
                else:
                    else_list, end = self.item_list()
                    if not isinstance(end, _EndNode):
                        self.error("expected end; found {{else}}")
            return pipe, body, else_list
        finally:
            del self.vars[mark:]

    def if_control(self, t: Token) -> IfNode:
        pipe, body, else_list = self.parse_control(t, "if")
        return IfNode(t.pos, pipe, body, else_list)

    def with_control(self, t: Token) -> WithNode:
        pipe, body, else_list = self.parse_control(t, "with")
        return WithNode(t.pos, pipe, body, else_list)

    def range_control(self, t: Token) -> RangeNode:
        pipe, body, else_list = self.parse_control(t, "range")
        return RangeNode(t.pos, pipe, body, else_list)

    def template_control(self, t: Token) -> TemplateNode:
        tok = self.next_non_space()
        if tok.typ not in (T_STRING, T_RAW):
            self.unexpected(tok, "template clause")
        name = unquote(tok.val)
        pipe: PipeNode | None = None
        if self.next_non_space().typ != T_RIGHT:
            self.backup()
            pipe = self.pipeline("template clause", T_RIGHT)
        return TemplateNode(t.pos, name, pipe)

    def block_control(self, t: Token) -> TemplateNode:
        tok = self.next_non_space()
        if tok.typ not in (T_STRING, T_RAW):
            self.unexpected(tok, "block clause")
        name = unquote(tok.val)
        pipe = self.pipeline("block clause", T_RIGHT)
        saved = self.vars
        self.vars = ["$"]
        body, end = self.item_list()
        self.vars = saved
        if not isinstance(end, _EndNode):
            self.error("unexpected {{else}} in block clause")
        self.add_tree(name, body)
        return TemplateNode(t.pos, name, pipe)

    def pipeline(self, context: str, end: str) -> PipeNode:
        pipe = PipeNode(self.peek_non_space().pos)
        while True:  # declarations: "$x :=", "$x =", and in range "$i, $e :="
            v = self.peek_non_space()
            if v.typ != T_VAR:
                break
            save = self.i
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.typ in (T_ASSIGN, T_DECLARE):
                pipe.is_assign = nxt.typ == T_ASSIGN
                self.next_non_space()
                pipe.decl.append(v.val)
                self.vars.append(v.val)
                break
            if nxt.typ == T_CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(v.val)
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T_VAR, T_RIGHT, T_RPAREN):
                        continue
                    self.error("range can only initialize variables", nxt)
                self.error(f"too many declarations in {context}", nxt)
            self.i = save  # "$x" is an argument, not a declaration
            break
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.typ in (
                T_BOOL, T_CHAR_CONST, T_DOT, T_FIELD, T_IDENT, T_NUMBER, T_NIL, T_RAW, T_STRING, T_VAR, T_LPAREN,
            ):  # fmt: skip
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(tok, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.error(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                self.error(f"non executable command in pipeline stage {i + 2}")

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == T_SPACE:
                continue
            if tok.typ in (T_RIGHT, T_RPAREN):
                self.backup()
            elif tok.typ == T_PIPE:
                pass
            else:
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.error("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == T_FIELD:
            fields: list[str] = []
            while self.peek().typ == T_FIELD:
                fields.append(self.next().val[1:])
            if isinstance(node, FieldNode):
                return FieldNode(node.pos, node.idents + tuple(fields))
            if isinstance(node, VariableNode):
                return VariableNode(node.pos, node.idents + tuple(fields))
            if isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
                self.error(f"unexpected . after term {quote(str(node))}")
            return ChainNode(node.pos, node, tuple(fields))
        return node

    def term(self) -> Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == T_IDENT:
            if tok.val not in self.funcs:
                self.error(f'function "{tok.val}" not defined', tok)
            return IdentifierNode(tok.pos, tok.val)
        if typ == T_DOT:
            return DotNode(tok.pos)
        if typ == T_NIL:
            return NilNode(tok.pos)
        if typ == T_VAR:
            if tok.val not in self.vars:
                self.error(f'undefined variable "{tok.val}"', tok)
            return VariableNode(tok.pos, (tok.val,))
        if typ == T_FIELD:
            return FieldNode(tok.pos, (tok.val[1:],))
        if typ == T_BOOL:
            return BoolNode(tok.pos, tok.val == "true")
        if typ == T_CHAR_CONST:
            try:
                s = unquote(tok.val)
            except (ValueError, IndexError):
                self.error(f"malformed character constant: {tok.val}", tok)
            if len(s) != 1:
                self.error(f"malformed character constant: {tok.val}", tok)
            return NumberNode(tok.pos, ord(s), tok.val)
        if typ == T_NUMBER:
            try:
                return NumberNode(tok.pos, _parse_number(tok.val), tok.val)
            except ValueError as e:
                msg = (
                    str(e)
                    if "overflow" in str(e) or "complex" in str(e)
                    else f'illegal number syntax: "{tok.val}"'
                )
                self.error(msg, tok)
        if typ == T_LPAREN:
            pipe = self.pipeline("parenthesized pipeline", T_RPAREN)
            return pipe
        if typ in (T_STRING, T_RAW):
            try:
                return StringNode(tok.pos, unquote(tok.val), tok.val)
            except (ValueError, IndexError):
                self.error(f"invalid syntax: {tok.val}", tok)
        self.backup()
        return None


def _is_empty_tree(n: Node) -> bool:
    if isinstance(n, ListNode):
        return all(_is_empty_tree(x) for x in n.nodes)
    if isinstance(n, TextNode):
        return n.text.strip() == ""
    return False


# --------------------------------------------------------------------------------------------
# Builtins


class _Missing:
    """Marker for "no value piped into this command" (Go's ``missingVal``)."""

    __slots__ = ()


_NO_FINAL: Any = _Missing()


def go_truth(v: Any) -> bool:
    """Go's ``template.IsTrue``: empty strings/collections, zero numbers, false and nil are false."""
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, bytes, list, tuple, dict)):
        return len(v) > 0
    if isinstance(v, Mapping):
        return len(v) > 0
    return True  # structs, pointers, channels, functions


def _kind(v: Any) -> str:
    if v is None:
        return "invalid"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "other"


def _b_eq(arg1: Any, *rest: Any) -> bool:
    if not rest:
        raise FunctionError("missing argument for comparison")
    k1 = _kind(arg1)
    for a in rest:
        k2 = _kind(a)
        if k1 != k2:
            if k1 != "invalid" and k2 != "invalid":
                raise FunctionError("incompatible types for comparison")
            continue
        if k1 == "other":
            if isinstance(arg1, (list, tuple, dict)) or isinstance(a, (list, tuple, dict)):
                bad = arg1 if isinstance(arg1, (list, tuple, dict)) else a
                raise FunctionError(f"non-comparable type {format_v(bad)}: {go_type_name(bad)}")
            if getattr(type(arg1), "_go_pointer", False) or getattr(type(a), "_go_pointer", False):
                truth = arg1 is a
            else:
                truth = bool(arg1 == a)
        elif k1 == "invalid":
            truth = True
        else:
            truth = arg1 == a
        if truth:
            return True
    return False


def _b_ne(a: Any, b: Any) -> bool:
    return not _b_eq(a, b)


def _b_lt(a: Any, b: Any) -> bool:
    k1, k2 = _kind(a), _kind(b)
    if k1 in ("invalid", "other", "bool") or k2 in ("invalid", "other", "bool"):
        raise FunctionError("invalid type for comparison")
    if k1 != k2:
        raise FunctionError("incompatible types for comparison")
    return bool(a < b)


def _b_le(a: Any, b: Any) -> bool:
    return _b_lt(a, b) or _b_eq(a, b)


def _b_gt(a: Any, b: Any) -> bool:
    return not _b_le(a, b)


def _b_ge(a: Any, b: Any) -> bool:
    return not _b_lt(a, b)


def _b_not(a: Any) -> bool:
    return not go_truth(a)


def _b_len(a: Any) -> int:
    if a is None:
        raise FunctionError("len of nil pointer")
    if isinstance(a, str):
        return len(a.encode("utf-8", "surrogatepass"))
    if isinstance(a, (list, tuple, bytes, Mapping)):
        return len(a)
    if hasattr(a, "__len__") and not dataclasses.is_dataclass(a):
        return len(a)
    raise FunctionError(f"len of type {go_type_name(a)}")


def _index_arg(i: Any, cap: int) -> int:
    if i is None:
        raise FunctionError("cannot index slice/array with nil")
    if isinstance(i, bool) or not isinstance(i, int):
        raise FunctionError(f"cannot index slice/array with type {go_type_name(i)}")
    if i < 0 or i > cap:
        raise FunctionError(f"index out of range: {i}")
    return i


def _b_index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FunctionError("index of untyped nil")
    for n, idx in enumerate(indexes):
        if item is None and n > 0:
            raise FunctionError("index of nil pointer")
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogatepass")
            x = _index_arg(idx, len(data))
            if x == len(data):
                raise FunctionError(f"index out of range: {x}")
            item = data[x]
        elif isinstance(item, (list, tuple)):
            x = _index_arg(idx, len(item))
            if x == len(item):
                raise FunctionError(f"index out of range: {x}")
            item = item[x]
        elif isinstance(item, Mapping):
            if idx is None:
                raise FunctionError("value is nil; should be of type string")
            if idx in item:
                item = item[idx]
            else:
                item = getattr(type(item), "go_zero", None)
        else:
            raise FunctionError(f"can't index item of type {go_type_name(item).lstrip('*')}")
    return item


def _b_slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FunctionError("slice of untyped nil")
    if len(indexes) > 3:
        raise FunctionError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FunctionError("cannot 3-index slice a string")
        data = item.encode("utf-8", "surrogatepass")
        seq: Any = data
    elif isinstance(item, (list, tuple)):
        seq = item
    else:
        raise FunctionError(f"can't slice item of type {go_type_name(item)}")
    idx = [0, len(seq), len(seq)]
    for i, x in enumerate(indexes):
        idx[i] = _index_arg(x, len(seq))
    if idx[0] > idx[1]:
        raise FunctionError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise FunctionError(f"invalid slice index: {idx[1]} > {idx[2]}")
    out = seq[idx[0] : idx[1]]
    if isinstance(item, str):
        return out.decode("utf-8", "surrogateescape")
    return list(out)


def _eval_args_str(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(*args)


def _b_html(*args: Any) -> str:
    s = _eval_args_str(args)
    return _html.escape(s, quote=False).replace('"', "&#34;").replace("'", "&#39;").replace("\x00", "\ufffd")


def _b_js(*args: Any) -> str:
    s = _eval_args_str(args)
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == '"':
            out.append('\\"')
        elif ch in "<>&=":
            out.append(f"\\u{ord(ch):04X}")
        elif ord(ch) < 0x20 or not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _b_urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args_str(args), safe="")


def _b_call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise FunctionError("call of nil")
    if not callable(fn):
        raise FunctionError(f"non-function of type {go_type_name(fn)}")
    return fn(*args)


def _b_printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise FunctionError(f"wrong type for value; expected string; got {go_type_name(fmt)}")
    return sprintf(fmt, *args)


BUILTINS: dict[str, Callable[..., Any]] = {
    "eq": _b_eq,
    "ne": _b_ne,
    "lt": _b_lt,
    "le": _b_le,
    "gt": _b_gt,
    "ge": _b_ge,
    "not": _b_not,
    "len": _b_len,
    "index": _b_index,
    "slice": _b_slice,
    "print": sprint,
    "printf": _b_printf,
    "println": sprintln,
    "html": _b_html,
    "js": _b_js,
    "urlquery": _b_urlquery,
    "call": _b_call,
}
"""text/template's predefined functions (``and``/``or`` are special-cased: they short-circuit)."""

_BUILTIN_ARITY: dict[str, tuple[int, int | None]] = {
    "and": (1, None),
    "or": (1, None),
    "eq": (1, None),
    "ne": (2, 2),
    "lt": (2, 2),
    "le": (2, 2),
    "gt": (2, 2),
    "ge": (2, 2),
    "not": (1, 1),
    "len": (1, 1),
    "index": (1, None),
    "slice": (1, None),
    "print": (0, None),
    "printf": (1, None),
    "println": (0, None),
    "html": (0, None),
    "js": (0, None),
    "urlquery": (0, None),
    "call": (1, None),
    "executeTemplate": (1, 2),
}

_BUILTIN_NAMES = frozenset(BUILTINS) | {"and", "or"}


# --------------------------------------------------------------------------------------------
# Executor


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_FIELDS: dict[type, frozenset[str] | None] = {}
_METHOD_ARITY: dict[tuple[type, str], tuple[int, int | None]] = {}
_MAX_DEPTH = 200


def _struct_fields(cls: type) -> frozenset[str] | None:
    """Public dataclass fields of ``cls`` (cached; ``None`` for non-structs)."""
    try:
        return _FIELDS[cls]
    except KeyError:
        pass
    dc = getattr(cls, "__dataclass_fields__", None)
    f = None if dc is None else frozenset(k for k in dc if not k.startswith("_"))
    _FIELDS[cls] = f
    return f


def _arity_of(fn: Callable[..., Any]) -> tuple[int, int | None]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return (0, None)
    fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in fixed if p.default is p.empty]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return (len(required), None)
    if len(required) != len(fixed):
        return (len(required), len(fixed))
    return (len(fixed), len(fixed))


Stmt = Callable[["_Exec", Any], None]
Expr = Callable[["_Exec", Any], Any]
Cmd = Callable[["_Exec", Any, Any], Any]
_BREAK = _Break()
_CONTINUE = _Continue()


class _Exec:
    """One execution: output buffer, variable stack, function map and options.

    The tree itself is compiled once into closures (:class:`_Compiler`); this object is the
    mutable state those closures share during one ``execute`` call.
    """

    __slots__ = ("tmpl", "funcs", "arity", "out", "vars", "depth", "missingkey_error", "name")

    def __init__(
        self,
        tmpl: GoTemplate,
        funcs: Mapping[str, Callable[..., Any]],
        arity: dict[str, tuple[int, int | None]],
        missingkey_error: bool,
        name: str,
    ) -> None:
        self.tmpl = tmpl
        self.funcs = funcs
        self.arity = arity
        self.out: list[str] = []
        self.vars: list[list[Any]] = []
        self.depth = 0
        self.missingkey_error = missingkey_error
        self.name = name

    def fail(self, node: Node, msg: str) -> NoReturn:
        line, col = self.tmpl.location(node.pos)
        raise TemplateExecError(
            f'template: {self.tmpl.name}:{line}:{col}: executing "{self.name}" at <{_node_str(node)}>: {msg}'
        )

    def var_value(self, node: Node, name: str) -> Any:
        vs = self.vars
        for i in range(len(vs) - 1, -1, -1):
            if vs[i][0] == name:
                return vs[i][1]
        self.fail(node, f"undefined variable: {name}")

    def set_var(self, node: Node, name: str, value: Any) -> None:
        vs = self.vars
        for i in range(len(vs) - 1, -1, -1):
            if vs[i][0] == name:
                vs[i][1] = value
                return
        self.fail(node, f"undefined variable: {name}")

    def run_tree(self, node: Node, name: str, dot: Any) -> None:
        """``{{ template "name" dot }}``: fresh variables (``$`` = dot), same output."""
        if self.depth >= _MAX_DEPTH:
            self.fail(node, f"exceeded maximum template depth ({_MAX_DEPTH})")
        body = self.tmpl.compiled(name)
        if body is None:
            self.fail(node, f'template "{name}" not defined')
        saved_vars, saved_name = self.vars, self.name
        self.vars = [["$", dot]]
        self.name = name
        self.depth += 1
        try:
            body(self, dot)
        finally:
            self.depth -= 1
            self.vars, self.name = saved_vars, saved_name

    def field_chain(
        self,
        dot: Any,
        receiver: Any,
        node: Node,
        idents: tuple[str, ...],
        arg_fns: tuple[Expr, ...],
        final: Any,
    ) -> Any:
        last = len(idents) - 1
        for i in range(last):
            receiver = self.field(dot, idents[i], node, (), _NO_FINAL, receiver)
        return self.field(dot, idents[last], node, arg_fns, final, receiver)

    def field(
        self, dot: Any, name: str, node: Node, arg_fns: tuple[Expr, ...], final: Any, receiver: Any
    ) -> Any:
        """``.name`` on ``receiver``: struct field, Go method, or map key (consul-template's rules)."""
        if receiver is None:
            if self.missingkey_error:
                self.fail(node, f'nil data; no entry for key "{name}"')
            return None
        cls = type(receiver)
        has_args = bool(arg_fns) or final is not _NO_FINAL
        fields = _FIELDS.get(cls, _UNKNOWN)
        if fields is _UNKNOWN:
            fields = _struct_fields(cls)
        if fields is not None and name in fields:
            if has_args:
                self.fail(node, f"{name} has arguments but cannot be invoked as function")
            return getattr(receiver, name)
        methods = getattr(cls, "_go_methods", None)
        if methods is not None and name in methods:
            return self.call(dot, node, name, getattr(receiver, name), arg_fns, final, (cls, name))
        if isinstance(receiver, Mapping):
            if has_args:
                self.fail(node, f"{name} is not a method but has arguments")
            try:
                return receiver[name]
            except KeyError:
                if self.missingkey_error:
                    self.fail(node, f'map has no entry for key "{name}"')
                return getattr(cls, "go_zero", None)
        self.fail(node, f"can't evaluate field {name} in type {go_type_name(receiver)}")

    def function(self, dot: Any, node: Node, name: str, arg_fns: tuple[Expr, ...], final: Any) -> Any:
        fn = self.funcs.get(name)
        if fn is None:
            if name == "and" or name == "or":
                return self.and_or(dot, node, name, arg_fns, final)
            fn = BUILTINS.get(name)
            if fn is None:
                self.fail(node, f'"{name}" is not a defined function')
        return self.call(dot, node, name, fn, arg_fns, final, name)

    def and_or(self, dot: Any, node: Node, name: str, arg_fns: tuple[Expr, ...], final: Any) -> Any:
        """Go 1.18+: ``and``/``or`` stop at the first falsy/truthy argument and return it."""
        if not arg_fns and final is _NO_FINAL:
            self.fail(node, f"wrong number of args for {name}: want at least 1 got 0")
        want = name == "or"
        v: Any = None
        for f in arg_fns:
            v = f(self, dot)
            if go_truth(v) == want:
                return v
        if final is not _NO_FINAL:
            v = final
        return v

    def call(
        self,
        dot: Any,
        node: Node,
        name: str,
        fn: Callable[..., Any],
        arg_fns: tuple[Expr, ...],
        final: Any,
        arity_key: Any,
    ) -> Any:
        argv = [f(self, dot) for f in arg_fns]
        if final is not _NO_FINAL:
            argv.append(final)
        if type(arity_key) is str:
            arity = self.arity.get(arity_key) or _BUILTIN_ARITY.get(arity_key)
            if arity is None:
                arity = self.arity[arity_key] = _arity_of(fn)
        else:
            arity = _METHOD_ARITY.get(arity_key)
            if arity is None:
                arity = _METHOD_ARITY[arity_key] = _arity_of(fn)
        fixed, most = arity
        n = len(argv)
        if most is None:
            if n < fixed:
                self.fail(node, f"wrong number of args for {name}: want at least {fixed} got {n}")
        elif not fixed <= n <= most:
            want = fixed if fixed == most else f"{fixed} to {most}"
            self.fail(node, f"wrong number of args for {name}: want {want} got {n}")
        try:
            return fn(*argv)
        except (_Break, _Continue):
            raise
        except Exception as e:  # Go recovers panics in calls the same way
            self.fail(node, f"error calling {name}: {e}")


_UNKNOWN: Any = object()


class _Compiler:
    """Turns a parse tree into nested closures, once per template."""

    def stmt_list(self, lst: ListNode) -> Stmt:
        stmts = [self.stmt(n) for n in lst.nodes]
        if not stmts:
            return _noop
        if len(stmts) == 1:
            return stmts[0]
        stmts_t = tuple(stmts)

        def run_list(ex: _Exec, dot: Any) -> None:
            for s in stmts_t:
                s(ex, dot)

        return run_list

    def stmt(self, node: Node) -> Stmt:
        if isinstance(node, TextNode):
            text = node.text

            def run_text(ex: _Exec, dot: Any) -> None:
                ex.out.append(text)

            return run_text
        if isinstance(node, ActionNode):
            pipe = self.pipe(node.pipe)
            if node.pipe.decl:

                def run_decl(ex: _Exec, dot: Any) -> None:
                    pipe(ex, dot)

                return run_decl

            def run_action(ex: _Exec, dot: Any) -> None:
                ex.out.append(print_action(pipe(ex, dot)))

            return run_action
        if isinstance(node, (IfNode, WithNode)):
            return self.if_with(node)
        if isinstance(node, RangeNode):
            return self.range(node)
        if isinstance(node, TemplateNode):
            return self.template(node)
        if isinstance(node, BreakNode):

            def run_break(ex: _Exec, dot: Any) -> None:
                raise _BREAK

            return run_break
        if isinstance(node, ContinueNode):

            def run_continue(ex: _Exec, dot: Any) -> None:
                raise _CONTINUE

            return run_continue
        if isinstance(node, ListNode):
            return self.stmt_list(node)
        raise TemplateExecError(f"internal error: cannot compile {type(node).__name__}")

    def if_with(self, node: IfNode | WithNode) -> Stmt:
        pipe = self.pipe(node.pipe)
        body = self.stmt_list(node.list)
        els = self.stmt_list(node.else_list) if node.else_list is not None else None
        is_with = isinstance(node, WithNode)

        def run_if(ex: _Exec, dot: Any) -> None:
            mark = len(ex.vars)
            val = pipe(ex, dot)
            if go_truth(val):
                body(ex, val if is_with else dot)
            elif els is not None:
                els(ex, dot)
            del ex.vars[mark:]

        return run_if

    def range(self, node: RangeNode) -> Stmt:
        pipe = self.pipe(node.pipe)
        body = self.stmt_list(node.list)
        els = self.stmt_list(node.else_list) if node.else_list is not None else None
        decl = tuple(node.pipe.decl)
        assign = node.pipe.is_assign
        two = len(decl) > 1

        def iterate(ex: _Exec, items: Iterable[tuple[Any, Any]], mark: int) -> bool:
            ran = False
            vs = ex.vars
            for index, elem in items:
                ran = True
                if decl:
                    if assign:
                        ex.set_var(node, decl[0], index if two else elem)
                        if two:
                            ex.set_var(node, decl[1], elem)
                    else:
                        vs[-1][1] = elem
                        if two:
                            vs[-2][1] = index
                try:
                    body(ex, elem)
                except _Continue:
                    pass
                except _Break:
                    del vs[mark:]
                    break
                del vs[mark:]
            return ran

        def run_range(ex: _Exec, dot: Any) -> None:
            outer = len(ex.vars)
            val = pipe(ex, dot)
            mark = len(ex.vars)
            ran = False
            if val is None:
                pass
            elif isinstance(val, (list, tuple)):
                ran = iterate(ex, enumerate(val), mark)
            elif isinstance(val, Mapping):
                ran = iterate(ex, sorted_items(val), mark)
            elif isinstance(val, (bool, str, float)):
                ex.fail(node, f"range can't iterate over {format_v(val)}")
            elif isinstance(val, int):
                if two:
                    ex.fail(node, f"can't use {val} to iterate over more than one variable")
                ran = iterate(ex, ((i, i) for i in range(val)), mark)
            elif isinstance(val, Iterable) and _struct_fields(type(val)) is None:
                if two:
                    ex.fail(node, f"can't use {format_v(val)} to iterate over more than one variable")
                ran = iterate(ex, ((None, e) for e in val), mark)
            else:
                ex.fail(node, f"range can't iterate over {format_v(val)}")
            if not ran and els is not None:
                els(ex, dot)
            del ex.vars[outer:]

        return run_range

    def template(self, node: TemplateNode) -> Stmt:
        pipe = self.pipe(node.pipe) if node.pipe is not None else None
        name = node.name

        def run_template(ex: _Exec, dot: Any) -> None:
            ex.run_tree(node, name, pipe(ex, dot) if pipe is not None else None)

        return run_template

    def pipe(self, pipe: PipeNode) -> Expr:
        cmds = tuple(self.cmd(c) for c in pipe.cmds)
        decl = tuple(pipe.decl)
        if not decl and len(cmds) == 1:
            only = cmds[0]

            def run_single(ex: _Exec, dot: Any) -> Any:
                return only(ex, dot, _NO_FINAL)

            return run_single
        is_assign = pipe.is_assign

        def run_pipe(ex: _Exec, dot: Any) -> Any:
            v: Any = _NO_FINAL
            for c in cmds:
                v = c(ex, dot, v)
            for name in decl:
                if is_assign:
                    ex.set_var(pipe, name, v)
                else:
                    ex.vars.append([name, v])
            return v

        return run_pipe

    def cmd(self, cmd: CommandNode) -> Cmd:
        first = cmd.args[0]
        arg_fns = tuple(self.arg(a) for a in cmd.args[1:])
        has_extra = len(cmd.args) > 1
        if isinstance(first, FieldNode):
            idents = first.idents
            if len(idents) == 1 and not arg_fns:
                name = idents[0]

                def run_field1(ex: _Exec, dot: Any, final: Any) -> Any:
                    return ex.field(dot, name, first, (), final, dot)

                return run_field1

            def run_field(ex: _Exec, dot: Any, final: Any) -> Any:
                return ex.field_chain(dot, dot, first, idents, arg_fns, final)

            return run_field
        if isinstance(first, IdentifierNode):
            fname = first.name

            def run_func(ex: _Exec, dot: Any, final: Any) -> Any:
                return ex.function(dot, first, fname, arg_fns, final)

            return run_func
        if isinstance(first, VariableNode):
            vname, rest = first.idents[0], first.idents[1:]

            def run_var(ex: _Exec, dot: Any, final: Any) -> Any:
                value = ex.var_value(first, vname)
                if not rest:
                    if has_extra or final is not _NO_FINAL:
                        ex.fail(first, f"can't give argument to non-function {_node_str(first)}")
                    return value
                return ex.field_chain(dot, value, first, rest, arg_fns, final)

            return run_var
        if isinstance(first, ChainNode):
            recv = self.arg(first.node)
            fields = first.fields
            is_nil = isinstance(first.node, NilNode)

            def run_chain(ex: _Exec, dot: Any, final: Any) -> Any:
                if is_nil:
                    ex.fail(first, f"indirection through explicit nil in {first}")
                return ex.field_chain(dot, recv(ex, dot), first, fields, arg_fns, final)

            return run_chain
        value_fn = self.arg(first)
        is_nil = isinstance(first, NilNode)

        def run_value(ex: _Exec, dot: Any, final: Any) -> Any:
            if has_extra or final is not _NO_FINAL:
                ex.fail(first, f"can't give argument to non-function {_node_str(first)}")
            if is_nil:
                ex.fail(first, "nil is not a command")
            return value_fn(ex, dot)

        return run_value

    def arg(self, node: Node) -> Expr:
        if isinstance(node, DotNode):
            return _dot
        if isinstance(node, NilNode):
            return _nil
        if isinstance(node, (BoolNode, NumberNode, StringNode)):
            value = node.value

            def const(ex: _Exec, dot: Any) -> Any:
                return value

            return const
        if isinstance(node, FieldNode):
            idents = node.idents
            if len(idents) == 1:
                name = idents[0]

                def field1(ex: _Exec, dot: Any) -> Any:
                    return ex.field(dot, name, node, (), _NO_FINAL, dot)

                return field1

            def field(ex: _Exec, dot: Any) -> Any:
                return ex.field_chain(dot, dot, node, idents, (), _NO_FINAL)

            return field
        if isinstance(node, VariableNode):
            vname, rest = node.idents[0], node.idents[1:]

            def var(ex: _Exec, dot: Any) -> Any:
                value = ex.var_value(node, vname)
                return ex.field_chain(dot, value, node, rest, (), _NO_FINAL) if rest else value

            return var
        if isinstance(node, PipeNode):
            return self.pipe(node)
        if isinstance(node, IdentifierNode):
            fname = node.name

            def func(ex: _Exec, dot: Any) -> Any:
                return ex.function(dot, node, fname, (), _NO_FINAL)

            return func
        if isinstance(node, ChainNode):
            recv = self.arg(node.node)
            fields = node.fields
            is_nil = isinstance(node.node, NilNode)

            def chain(ex: _Exec, dot: Any) -> Any:
                if is_nil:
                    ex.fail(node, f"indirection through explicit nil in {node}")
                return ex.field_chain(dot, recv(ex, dot), node, fields, (), _NO_FINAL)

            return chain
        raise TemplateExecError(f"internal error: cannot compile argument {type(node).__name__}")


def _noop(ex: _Exec, dot: Any) -> None:
    return None


def _dot(ex: _Exec, dot: Any) -> Any:
    return dot


def _nil(ex: _Exec, dot: Any) -> Any:
    return None


def _node_str(node: Node) -> str:
    if isinstance(node, PipeNode):
        return f"({node})"
    return str(node)


# --------------------------------------------------------------------------------------------
# Public API


class GoTemplate:
    """A parsed template set (the main template plus its ``define``/``block`` templates).

    Parse once, execute many times; execution state lives in a per-call ``_Exec``.
    """

    def __init__(
        self,
        text: str,
        name: str = "template",
        *,
        left_delim: str = "{{",
        right_delim: str = "}}",
        func_names: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.text = text
        self.left_delim = left_delim or "{{"
        self.right_delim = right_delim or "}}"
        known = frozenset(func_names) | _BUILTIN_NAMES | {"executeTemplate"}
        try:
            tokens = lex(text, self.left_delim, self.right_delim)
        except _LexError as e:
            raise TemplateSyntaxError(f"template: {name}:{e.line}: {e}") from None
        parser = _Parser(name, text, tokens, known)
        root = parser.parse()
        self.trees: dict[str, ListNode] = dict(parser.trees)
        if name not in self.trees or not _is_empty_tree(root):
            self.trees[name] = root
        self._compiled: dict[str, Stmt] = {}

    def location(self, pos: int) -> tuple[int, int]:
        """(line, column) of a character offset, as Go's ErrorContext reports them."""
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1)
        return line, col

    def execute(
        self,
        data: Any = None,
        funcs: Mapping[str, Callable[..., Any]] | None = None,
        *,
        arity: Mapping[str, tuple[int, int | None]] | None = None,
        missingkey_error: bool = False,
        name: str | None = None,
    ) -> str:
        """Run the template (or the named ``define``) with ``data`` as dot and ``$``."""
        target = name or self.name
        body = self.compiled(target)
        if body is None:
            raise TemplateExecError(
                f'template: no template "{target}" associated with template "{self.name}"'
            )
        fmap: dict[str, Callable[..., Any]] = dict(funcs or {})
        ex = _Exec(self, fmap, dict(arity or {}), missingkey_error, target)
        call_site = IdentifierNode(0, "executeTemplate")

        def execute_template(tname: Any, *dot: Any) -> str:
            if len(dot) > 1:
                raise FunctionError(
                    f"executeTemplate: wrong number of arguments, expected 1 or 2, but got {len(dot) + 1}"
                )
            if str(tname) not in self.trees:
                raise FunctionError(f'template: no template "{tname}" associated with template "{self.name}"')
            saved_out = ex.out
            ex.out = []
            try:
                ex.run_tree(call_site, str(tname), dot[0] if dot else None)
                return "".join(ex.out)
            finally:
                ex.out = saved_out

        fmap.setdefault("executeTemplate", execute_template)
        ex.vars = [["$", data]]
        try:
            body(ex, data)
        except RecursionError:
            raise TemplateExecError(f"template: {self.name}: exceeded maximum template depth") from None
        return "".join(ex.out)

    def compiled(self, name: str) -> Stmt | None:
        """The closure for template ``name`` (compiled on first use, then reused)."""
        fn = self._compiled.get(name)
        if fn is None:
            tree = self.trees.get(name)
            if tree is None:
                return None
            fn = self._compiled[name] = _Compiler().stmt_list(tree)
        return fn


def parse(
    text: str,
    name: str = "template",
    *,
    left_delim: str = "{{",
    right_delim: str = "}}",
    func_names: Iterable[str] = (),
) -> GoTemplate:
    """Parse ``text`` (raises :class:`TemplateSyntaxError` with Go's message format)."""
    return GoTemplate(text, name, left_delim=left_delim, right_delim=right_delim, func_names=func_names)
