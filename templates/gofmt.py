"""Go's ``fmt`` output rules, for the Go-syntax template dialect.

Existing ``.ctmpl`` files print values with ``{{ . }}``, ``printf`` and ``print``; operators diff
the output against what consul-template wrote, so ``[a b]``, ``map[k:v]``, ``<no value>``,
``1e+06`` and ``%!d(string=x)`` have to come out exactly as Go's ``fmt`` writes them.

Python values stand in for Go values: ``str`` = string, ``int`` = int, ``float`` = float64,
``bool`` = bool, ``None`` = nil, ``list``/``tuple`` = slice, ``dict`` = map (keys printed sorted,
as ``fmt`` does since Go 1.12), dataclasses = structs (fields in declaration order). A dataclass
whose class sets ``_go_pointer = True`` stands for a pointer to a struct: ``printf "%v"`` shows
``&{...}`` at the top level, like Go. Go prints nested pointers as addresses (``0xc000...``);
there is nothing useful to match there, so nested structs print as ``{...}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = [
    "NO_VALUE",
    "go_type_name",
    "format_float_shortest",
    "format_float_json",
    "quote",
    "sprint",
    "sprintln",
    "sprintf",
    "print_action",
    "is_struct",
    "struct_fields",
]

NO_VALUE = "<no value>"
_NIL = "<nil>"


# --------------------------------------------------------------------------------------------
# Type names


def is_struct(v: Any) -> bool:
    """True for values that stand for Go structs (dataclass instances)."""
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def struct_fields(v: Any) -> list[tuple[str, Any]]:
    """The exported fields of a struct-like value, in declaration order."""
    return [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v) if not f.name.startswith("_")]


def go_type_name(v: Any) -> str:
    """The Go type name ``%T`` and error messages would show for ``v``."""
    if v is None:
        return _NIL
    explicit = getattr(type(v), "_go_type", None)
    if isinstance(explicit, str):
        return explicit
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bytes):
        return "[]uint8"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if callable(v):
        return "func(...interface {}) (interface {}, error)"
    return type(v).__name__


# --------------------------------------------------------------------------------------------
# Floats


def _decimal_digits(f: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``abs(f)`` and the decimal point position.

    ``abs(f) == 0.d1d2d3... * 10**dp``; Python's ``repr`` and Go's ``strconv`` both produce the
    shortest digit string that round-trips, so the digits are the same as Go's.
    """
    d = Decimal(repr(abs(f)))
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    text = "".join(str(x) for x in digits).lstrip("0")
    if not text:
        return "0", 1
    stripped = text.rstrip("0")
    exp += len(text) - len(stripped)
    return stripped, len(stripped) + exp


def _special_float(f: float, plus_sign: bool = True) -> str | None:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 and plus_sign else ("Inf" if f > 0 else "-Inf")
    return None


def _exp_form(digits: str, dp: int, upper: bool = False, min_exp_digits: int = 2) -> str:
    exp = dp - 1
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if exp < 0 else "+"
    e = "E" if upper else "e"
    return f"{mant}{e}{sign}{abs(exp):0{min_exp_digits}d}"


def _fixed_form(digits: str, dp: int) -> str:
    if digits == "0":
        return "0"
    if dp <= 0:
        return "0." + "0" * (-dp) + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def format_float_shortest(f: float, upper: bool = False) -> str:
    """Go's ``%v`` / ``%g`` (no precision) for a float64: shortest digits, ``1e+06`` style.

    strconv's rule for the shortest form: exponent notation when the decimal exponent is
    below -4 or at least 6 (21 is the JSON rule, not fmt's).
    """
    special = _special_float(f)
    if special is not None:
        return special
    digits, dp = _decimal_digits(f)
    neg = "-" if math.copysign(1.0, f) < 0 else ""
    exp = dp - 1
    if digits != "0" and (exp < -4 or exp >= 6):
        body = _exp_form(digits, dp, upper)
    else:
        body = _fixed_form(digits, dp)
    return neg + body


def format_float_json(f: float) -> str:
    """``encoding/json``'s float64 form: fixed unless < 1e-6 or >= 1e21; ``e-7`` not ``e-07``."""
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"json: unsupported value: {format_float_shortest(f)}")
    digits, dp = _decimal_digits(f)
    neg = "-" if f < 0 else ""
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        body = _exp_form(digits, dp)
        # Go trims "e-07" to "e-7" (but keeps "e+21").
        if body[-4] == "e" and body[-3] == "-" and body[-2] == "0":
            body = body[:-2] + body[-1]
        return neg + body
    return neg + _fixed_form(digits, dp)


# --------------------------------------------------------------------------------------------
# Quoting


_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
}


def _escape_rune(ch: str, quote_char: str, ascii_only: bool) -> str:
    if ch == quote_char:
        return "\\" + ch
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    o = ord(ch)
    if o < 0x80 and ch.isprintable():
        return ch
    if not ascii_only and ch.isprintable():
        return ch
    if o < 0x20 or o == 0x7F:
        return f"\\x{o:02x}"
    if 0xD800 <= o <= 0xDFFF:
        return "\\ufffd"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def quote(s: str, ascii_only: bool = False) -> str:
    """Go's ``strconv.Quote`` (``%q``): double quotes, Go escapes for non-printable runes."""
    return '"' + "".join(_escape_rune(c, '"', ascii_only) for c in s) + '"'


def quote_rune(r: int, ascii_only: bool = False) -> str:
    """Go's ``strconv.QuoteRune`` (``%q`` of an integer)."""
    if r < 0 or r > 0x10FFFF or 0xD800 <= r <= 0xDFFF:
        r = 0xFFFD
    return "'" + _escape_rune(chr(r), "'", ascii_only) + "'"


def _can_backquote(s: str) -> bool:
    return all(c != "`" and c != "\ufeff" and (c == "\t" or ord(c) >= 0x20) and c != "\x7f" for c in s)


# --------------------------------------------------------------------------------------------
# Printf machinery


@dataclasses.dataclass
class _Spec:
    """One ``%`` directive's flags, as Go's ``fmt.fmt`` struct holds them."""

    verb: str = "v"
    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    prec: int | None = None
    plus_v: bool = False
    sharp_v: bool = False


_DEFAULT_V = _Spec()


def _pad(s: str, spec: _Spec, zero_ok: bool = False) -> str:
    if spec.width is None or len(s) >= spec.width:
        return s
    fill = spec.width - len(s)
    if spec.minus:
        return s + " " * fill
    if spec.zero and zero_ok:
        return "0" * fill + s
    return " " * fill + s


def _bad_verb(v: Any, spec: _Spec, depth: int) -> str:
    if v is None:
        return f"%!{spec.verb}({_NIL})"
    inner = dataclasses.replace(spec, verb="v", plus_v=False, sharp_v=False)
    return f"%!{spec.verb}({go_type_name(v)}={_format(v, inner, depth)})"


def _fmt_integer(n: int, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "c":
        try:
            return _pad(chr(n), spec)
        except (ValueError, OverflowError):
            return _pad("\ufffd", spec)
    if verb == "q":
        return _pad(quote_rune(n, ascii_only=spec.plus), spec)
    if verb == "U":
        body = f"U+{n:04X}" if n >= 0 else f"U+{n & 0xFFFFFFFFFFFFFFFF:04X}"
        if spec.sharp and 0 <= n <= 0x10FFFF and chr(n).isprintable():
            body += f" '{chr(n)}'"
        return _pad(body, spec)
    base = {"d": 10, "v": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}[verb]
    neg = n < 0
    u = -n if neg else n
    if base == 10:
        digits = str(u)
    elif base == 2:
        digits = format(u, "b")
    elif base == 8:
        digits = format(u, "o")
    else:
        digits = format(u, "x" if verb == "x" else "X")
    prec = 0
    if spec.prec is not None:
        prec = spec.prec
        if prec == 0 and u == 0:
            return _pad("", dataclasses.replace(spec, zero=False))
    elif spec.zero and not spec.minus and spec.width is not None:
        prec = spec.width
        if neg or spec.plus or spec.space:
            prec -= 1
    if len(digits) < prec:
        digits = "0" * (prec - len(digits)) + digits
    prefix = ""
    if spec.sharp:
        if base == 2:
            prefix = "0b"
        elif base == 8 and verb == "o" and not digits.startswith("0"):
            prefix = "0"
        elif base == 16:
            prefix = "0x" if verb == "x" else "0X"
    if verb == "O":
        prefix = "0o"
    sign = "-" if neg else ("+" if spec.plus else (" " if spec.space else ""))
    return _pad(sign + prefix + digits, dataclasses.replace(spec, zero=False))


def _fmt_float(f: float, spec: _Spec) -> str:
    verb = "g" if spec.verb == "v" else spec.verb
    nan, inf = math.isnan(f), math.isinf(f)
    a = abs(f)
    if nan:
        body = "NaN"
    elif inf:
        body = "Inf"
    elif verb in "gG" and spec.prec is None:
        body = format_float_shortest(a, upper=verb == "G")
    elif verb in "eEfFgG":
        prec = 6 if spec.prec is None else spec.prec
        body = ("%." + str(prec) + ("f" if verb == "F" else verb)) % a
    elif verb in "xX":
        body = float.hex(a)
        if verb == "X":
            body = body.upper()
    else:  # %b: decimalless mantissa and binary exponent
        m, e = math.frexp(a)
        body = f"{int(m * (1 << 53))}p{e - 53:+d}"
    sign = "-" if (not nan and math.copysign(1.0, f) < 0) else "+"
    if spec.space and sign == "+" and not spec.plus:
        sign = " "
    nozero = dataclasses.replace(spec, zero=False)
    if nan or inf:
        num = body if (nan and not spec.space and not spec.plus) else sign + body
        return _pad(num, nozero)
    if spec.sharp and verb not in "xXb" and "." not in body:
        if "e" in body or "E" in body:
            mant, e_char, rest = body.partition("e" if "e" in body else "E")
            body = mant + "." + e_char + rest
        else:
            body += "."
    if spec.plus or sign != "+":
        num = sign + body
        if spec.zero and not spec.minus and spec.width is not None and spec.width > len(num):
            return sign + "0" * (spec.width - len(num)) + body
        return _pad(num, nozero)
    return _pad(body, spec, zero_ok=True)


def _fmt_string(s: str, spec: _Spec) -> str:
    verb = spec.verb
    if verb in "vs":
        if spec.prec is not None:
            s = s[: spec.prec]
        return _pad(s, spec, zero_ok=True)
    if verb == "q":
        if spec.prec is not None:
            s = s[: spec.prec]
        if spec.sharp and _can_backquote(s):
            return _pad("`" + s + "`", spec)
        return _pad(quote(s, ascii_only=spec.plus), spec)
    if verb in "xX":
        data = s.encode("utf-8", "surrogateescape")
        if spec.prec is not None:
            data = data[: spec.prec]
        hexdigits = "0123456789abcdef" if verb == "x" else "0123456789ABCDEF"
        parts: list[str] = []
        for i, b in enumerate(data):
            if spec.space and i > 0:
                parts.append(" ")
            if spec.sharp and (spec.space or i == 0):
                parts.append("0x" if verb == "x" else "0X")
            parts.append(hexdigits[b >> 4] + hexdigits[b & 0xF])
        return _pad("".join(parts), spec)
    return ""


def _format(v: Any, spec: _Spec, depth: int) -> str:
    """Format one operand the way ``fmt``'s ``printArg``/``printValue`` would."""
    verb = spec.verb
    if verb == "T":
        return _pad(go_type_name(v), spec)
    if v is None:
        if verb == "v":
            return _pad(_NIL, spec)
        return _bad_verb(v, spec, depth)
    if isinstance(v, bool):
        if verb in "tv":
            return _pad("true" if v else "false", spec)
        return _bad_verb(v, spec, depth)
    if isinstance(v, int):
        if verb in "bcdoOqxXUv":
            return _fmt_integer(v, spec)
        return _bad_verb(v, spec, depth)
    if isinstance(v, float):
        if verb in "beEfFgGxXv":
            return _fmt_float(v, spec)
        return _bad_verb(v, spec, depth)
    if isinstance(v, str):
        if verb in "vsqxX":
            return _fmt_string(v, spec)
        return _bad_verb(v, spec, depth)
    if isinstance(v, bytes):
        if verb in "sqxX":
            return _fmt_string(v.decode("utf-8", "surrogateescape"), spec)
        return _format(list(v), spec, depth)
    if isinstance(v, Mapping):
        if spec.sharp_v:
            items = ", ".join(
                f"{_format(k, spec, depth + 1)}:{_format(val, spec, depth + 1)}"
                for k, val in _sorted_items(v)
            )
            return f"{go_type_name(v)}{{{items}}}"
        items = " ".join(
            f"{_format(k, spec, depth + 1)}:{_format(val, spec, depth + 1)}" for k, val in _sorted_items(v)
        )
        return f"map[{items}]"
    if isinstance(v, (list, tuple)):
        if spec.sharp_v:
            return f"{go_type_name(v)}{{" + ", ".join(_format(x, spec, depth + 1) for x in v) + "}"
        return "[" + " ".join(_format(x, spec, depth + 1) for x in v) + "]"
    if is_struct(v):
        amp = "&" if depth == 0 and getattr(type(v), "_go_pointer", False) else ""
        fields = struct_fields(v)
        if spec.sharp_v:
            name = go_type_name(v).lstrip("*")
            body = ", ".join(f"{k}:{_format(x, spec, depth + 1)}" for k, x in fields)
            return f"{amp}{name}{{{body}}}"
        if spec.plus_v:
            body = " ".join(f"{k}:{_format(x, spec, depth + 1)}" for k, x in fields)
        else:
            body = " ".join(_format(x, spec, depth + 1) for _, x in fields)
        return f"{amp}{{{body}}}"
    stringer = getattr(v, "go_string", None)
    if callable(stringer):
        return _pad(str(stringer()), spec)
    if callable(v):
        return _pad("0x0", spec)
    return _pad(str(v), spec)


def _sort_key(k: Any) -> tuple[int, Any]:
    if isinstance(k, bool):
        return (0, int(k))
    if isinstance(k, (int, float)):
        return (1, k)
    if isinstance(k, str):
        return (2, k)
    return (3, str(k))


def _sorted_items(m: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """Map entries in ``fmtsort`` order (Go sorts keys when printing or ranging)."""
    try:
        return sorted(m.items(), key=lambda kv: _sort_key(kv[0]))
    except TypeError:
        return sorted(m.items(), key=lambda kv: str(kv[0]))


sorted_items = _sorted_items


# --------------------------------------------------------------------------------------------
# Public printing entry points


def _sprint_one(v: Any) -> str:
    if isinstance(v, str):
        return v
    return _format(v, _DEFAULT_V, 0)


def sprint(*args: Any) -> str:
    """``fmt.Sprint``: spaces between operands when neither side is a string."""
    out: list[str] = []
    prev_string = False
    for i, a in enumerate(args):
        is_string = isinstance(a, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(_sprint_one(a))
        prev_string = is_string
    return "".join(out)


def sprintln(*args: Any) -> str:
    """``fmt.Sprintln``: always a space between operands, newline at the end."""
    return " ".join(_sprint_one(a) for a in args) + "\n"


def print_action(v: Any) -> str:
    """What ``{{ pipeline }}`` writes: text/template's ``printValue`` then ``fmt.Fprint``."""
    if v is None:
        return NO_VALUE
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    # printableValue dereferences a top-level pointer, so no "&" here.
    return _format(v, _DEFAULT_V, 1)


def _parse_num(fmt: str, i: int) -> tuple[int | None, int]:
    start = i
    while i < len(fmt) and fmt[i].isdigit():
        i += 1
    if i == start:
        return None, i
    return int(fmt[start:i]), i


def sprintf(fmt: str, *args: Any) -> str:
    """``fmt.Sprintf`` with Go's verbs, flags, ``*`` widths, ``[n]`` indexes and error forms."""
    out: list[str] = []
    n = len(fmt)
    i = 0
    argnum = 0
    reordered = False
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        spec = _Spec()
        while i < n and fmt[i] in "#0+- ":
            c = fmt[i]
            if c == "#":
                spec.sharp = True
            elif c == "0":
                spec.zero = True
            elif c == "+":
                spec.plus = True
            elif c == "-":
                spec.minus = True
            else:
                spec.space = True
            i += 1
        bad_index = False

        def arg_index(pos: int) -> int:
            nonlocal reordered, bad_index
            if pos < n and fmt[pos] == "[":
                reordered = True
                close = fmt.find("]", pos)
                num = fmt[pos + 1 : close] if close > 0 else ""
                if close < 0 or not num.isdigit() or not (1 <= int(num) <= len(args)):
                    bad_index = True
                    return (close + 1) if close > 0 else n
                nonlocal argnum
                argnum = int(num) - 1
                return close + 1
            return pos

        i = arg_index(i)
        if i < n and fmt[i] == "*":
            i += 1
            if argnum < len(args) and isinstance(args[argnum], int) and not isinstance(args[argnum], bool):
                w = args[argnum]
                argnum += 1
                if w < 0:
                    spec.minus = True
                    w = -w
                spec.width = w
            else:
                argnum += 1
                out.append("%!(BADWIDTH)")
        else:
            spec.width, i = _parse_num(fmt, i)
        if i < n and fmt[i] == ".":
            i += 1
            i = arg_index(i)
            if i < n and fmt[i] == "*":
                i += 1
                if (
                    argnum < len(args)
                    and isinstance(args[argnum], int)
                    and not isinstance(args[argnum], bool)
                ):
                    p = args[argnum]
                    argnum += 1
                    spec.prec = p if p >= 0 else None
                else:
                    argnum += 1
                    out.append("%!(BADPREC)")
            else:
                p, i = _parse_num(fmt, i)
                spec.prec = p if p is not None else 0
        i = arg_index(i)
        if spec.minus:
            spec.zero = False
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if bad_index:
            out.append(f"%!{verb}(BADINDEX)")
            continue
        if argnum >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argnum]
        argnum += 1
        if verb == "v":
            spec.sharp_v, spec.sharp = spec.sharp, False
            spec.plus_v, spec.plus = spec.plus, False
        spec.verb = verb
        if verb == "w":
            spec.verb = "v"
        if not (verb.isalpha() and verb in "vTtbcdoOqxXUeEfFgGsp") and verb != "w":
            out.append(_bad_verb(arg, spec, 0))
            continue
        if verb == "p":
            out.append(_bad_verb(arg, spec, 0))
            continue
        out.append(_format(arg, spec, 0))
    if not reordered and argnum < len(args):
        extras = []
        for a in args[argnum:]:
            extras.append(_NIL if a is None else f"{go_type_name(a)}={_format(a, _DEFAULT_V, 0)}")
        out.append("%!(EXTRA " + ", ".join(extras) + ")")
    return "".join(out)


# Convenience for callers that need Go's %v of one value inside error messages.
def format_v(v: Any) -> str:
    """``fmt.Sprintf("%v", v)``."""
    return _format(v, _DEFAULT_V, 0)
