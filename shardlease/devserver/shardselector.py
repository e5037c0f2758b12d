"""KEP-5866 sharded LIST and WATCH: the ``shardSelector`` query parameter, behind a feature gate.

kube-apiserver 1.36 (gate ``ShardedListAndWatch``, alpha, off by default) lets a client ask for the
objects whose FNV-1a-64 hash of ``metadata.uid`` (or ``metadata.namespace``) falls in one of a few
half-open ranges::

    shardSelector=shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')
                  || shardRange(object.metadata.uid, '0xc000000000000000', '0x10000000000000000')

The selector is CEL: kube-apiserver parses it with the CEL parser (no macros) and walks the syntax
tree, accepting only ``shardRange(field, 'start', 'end')`` calls joined by ``||``. So anything the
CEL grammar allows around those calls is accepted (whitespace, ``//`` comments, parentheses, double,
raw and triple-quoted strings, escapes, even the receiver form ``x.shardRange(...)``), and anything
else valid CEL is refused by the tree walk with its own message. This module carries a small CEL
parser (enough of the grammar to build the same tree for every expression a client plausibly sends)
so the dev-server accepts and refuses the same selectors, with the same messages. CEL *syntax*
errors keep kube's ``CEL parse error: Syntax error:`` prefix, but the rest of their text (ANTLR's
wording) is only approximated; see docs/fidelity.md.

A bad selector is answered with HTTP 500 and a Status without a reason: kube-apiserver wraps the
parse error in a plain Go error, which its error handler turns into an internal error. The hash is
implemented here (not imported from ``shardlease.core``) because this package shares nothing with
the rest of shardlease but the wire format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .status import ApiError

#: The gate that turns ``shardSelector`` on, named as kube-apiserver names it.
SHARDED_LIST_AND_WATCH = "ShardedListAndWatch"
#: Gates DevServer accepts (kube-apiserver refuses to start with an unknown gate name), and defaults.
KNOWN_GATES: Mapping[str, bool] = {SHARDED_LIST_AND_WATCH: False}

FIELDS = ("object.metadata.uid", "object.metadata.namespace")
#: 2**64 written as the one 17-digit bound kube accepts: the exclusive end of the whole hash space.
TOP = "0x10000000000000000"

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    """64-bit FNV-1a, the hash kube-apiserver applies to the selected field (Go's hash/fnv New64a)."""
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & _MASK
    return value


def check_feature_gates(gates: Mapping[str, bool] | None) -> dict[str, bool]:
    """The effective gates (known defaults overridden by ``gates``); ``ValueError`` naming a gate this
    server does not know or a value that is not a bool, since a typo must not silently do nothing."""
    effective = dict(KNOWN_GATES)
    for name, value in (gates or {}).items():
        if name not in KNOWN_GATES:
            raise ValueError(f"feature_gates: unknown feature gate {name!r}; the dev-server knows: "
                             f"{', '.join(sorted(KNOWN_GATES))}")
        if not isinstance(value, bool):
            raise ValueError(f"feature_gates[{name!r}]: expected True or False, got {value!r}")
        effective[name] = value
    return effective


class ShardSelectorError(ValueError):
    """A ``shardSelector`` kube-apiserver would refuse; the message is kube's, without its prefix."""


@dataclass(frozen=True)
class ShardRange:
    """``[start, end)`` over the hash of ``field``; bounds kept as the client wrote them (canonical)."""

    field: str
    start: str
    end: str

    def __str__(self) -> str:
        return f"shardRange({self.field}, '{self.start}', '{self.end}')"


@dataclass(frozen=True)
class ShardSelector:
    """One or more ranges over the same field; an object matches if its hash is in any of them."""

    ranges: tuple[ShardRange, ...]

    def __str__(self) -> str:
        """The canonical form kube-apiserver echoes in ``metadata.shardInfo.selector``."""
        return " || ".join(str(r) for r in self.ranges)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        value = meta.get("uid" if self.ranges[0].field == FIELDS[0] else "namespace") or ""
        hashed = fnv1a_64(str(value).encode())
        return any(int(r.start, 16) <= hashed < int(r.end, 16) for r in self.ranges)


class _HasObject(Protocol):
    @property
    def obj(self) -> dict[str, Any]: ...


_Item = TypeVar("_Item", bound=_HasObject)


def page(scanned: Sequence[_Item], shard: ShardSelector, limit: int,
         keep: Callable[[_Item], bool]) -> tuple[list[_Item], bool, int | None]:
    """One list page from ``scanned`` (every object from the page's start, in key order, unfiltered):
    (selected, whether a continue token is due, remainingItemCount).

    This is kube-apiserver's watch-cache paging, measured on 1.36: the page closes at the ``limit``-th
    match, "more" means any object at all follows that match, and the count is the number of objects
    scanned from the page's start (matching or not) less the limit. So the count is only an upper
    bound, and a page can promise more while the next one is empty.
    """
    selected: list[_Item] = []
    for index, item in enumerate(scanned):
        if shard.matches(item.obj) and keep(item):
            selected.append(item)
            if limit and len(selected) >= limit:
                more = index < len(scanned) - 1
                return selected, more, len(scanned) - limit if more else None
    return selected, False, None


def invalid(error: ShardSelectorError) -> ApiError:
    """kube's answer to a bad selector: 500 with a Status that has no reason (see module doc)."""
    return ApiError(500, f"invalid shard selector: {error}", None)


def from_query(query: Mapping[str, str], gates: Mapping[str, bool]) -> ShardSelector | None:
    """The request's selector, or None when the gate is off or the parameter absent (both ignored,
    as on kube-apiserver); a malformed one raises the 500 :class:`ApiError`."""
    text = query.get("shardSelector")
    if not gates.get(SHARDED_LIST_AND_WATCH) or not text:
        return None
    try:
        return parse(text)
    except ShardSelectorError as exc:
        raise invalid(exc) from None


def parse(text: str) -> ShardSelector:
    """Parse a selector as kube-apiserver does: CEL first, then only ``shardRange`` and ``||``."""
    text = text.strip()
    if not text:
        raise ShardSelectorError("empty shard selector is not allowed; omit the parameter for "
                                 "unfiltered lists")
    tree = _Parser(text).parse()
    ranges = _walk(tree)
    for other in ranges[1:]:
        if other.field != ranges[0].field:
            raise ShardSelectorError(f'all shard ranges must use the same field, got "{ranges[0].field}" '
                                     f'and "{other.field}"')
    return ShardSelector(tuple(ranges))


# ---------------------------------------------------------------------------------- the syntax tree
# Node kinds numbered as cel-go's ast.ExprKind, because kube prints the number in some messages.
CALL, IDENT, LIST, LITERAL, MAP, SELECT, STRUCT = 1, 3, 4, 5, 6, 7, 8


@dataclass(frozen=True)
class _Node:
    kind: int
    name: str = ""  # function name, identifier, or selected field
    args: tuple[_Node, ...] = ()  # call arguments (without the receiver); the select operand
    value: object = None  # literal value
    go_type: str = ""  # the Go type of a literal's value, as kube's messages print it


def _walk(node: _Node) -> list[ShardRange]:
    if node.kind != CALL:
        raise ShardSelectorError(f"unexpected expression kind {node.kind}; expected shardRange() call "
                                 f"or || operator")
    if node.name == "_||_":
        return _walk(node.args[0]) + _walk(node.args[1])
    if node.name != "shardRange":
        raise ShardSelectorError(f'unsupported function "{node.name}"; only shardRange() and || are '
                                 f"allowed")
    if len(node.args) != 3:
        raise ShardSelectorError(f"shardRange() requires exactly 3 arguments, got {len(node.args)}")
    field = _field_path(node.args[0])
    if field not in FIELDS:
        raise ShardSelectorError(f'unsupported field path "{field}"; supported: {", ".join(FIELDS)}')
    start = _hex(node.args[1], "hexStart")
    end = _hex(node.args[2], "hexEnd")
    if not _hex_less(start, end):
        raise ShardSelectorError(f"shard range start {start} must be less than end {end}")
    return [ShardRange(field, start, end)]


def _field_path(node: _Node) -> str:
    if node.kind == IDENT:
        return node.name
    if node.kind == SELECT:
        return _field_path(node.args[0]) + "." + node.name
    raise ShardSelectorError(f"shardRange() first argument: expected field path (e.g. object.metadata.uid), "
                             f"got expression kind {node.kind}")


def _hex(node: _Node, name: str) -> str:
    if node.kind != LITERAL:
        raise ShardSelectorError(f"{name} must be a string literal (e.g. '0xff'), got expression kind "
                                 f"{node.kind}")
    if not isinstance(node.value, str):
        raise ShardSelectorError(f"{name} must be a string literal, got {node.go_type}")
    text = node.value
    if not text.startswith("0x"):
        raise ShardSelectorError(f"{name} must have '0x' prefix, got {_go_quote(text)}")
    digits = text[2:]
    if not digits:
        raise ShardSelectorError(f"{name}: hex value is required after '0x'")
    if len(digits) > 17:
        raise ShardSelectorError(f"{name}: hex value too long ({len(digits)} chars, max 17): {_go_quote(digits)}")
    for char in digits:
        if char not in "0123456789abcdef":
            raise ShardSelectorError(f"{name}: invalid hex character {_go_quote(char)} in {_go_quote(text)}")
    if len(digits) == 17 and text != TOP:
        raise ShardSelectorError(f"{name}: 17-digit hex value must be '{TOP}' (2^64), got {_go_quote(text)}")
    if len(digits) < 16:
        padded = "0x" + digits.rjust(16, "0")
        raise ShardSelectorError(f"{name} must be a 0x-prefixed 16-digit hex value, got {_go_quote(text)} "
                                 f"(did you mean {_go_quote(padded)}?)")
    return text


def _hex_less(a: str, b: str) -> bool:
    return (len(a), a) < (len(b), b)


def _go_quote(text: str) -> str:
    """Go's %q for the printable ASCII these messages quote."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------- CEL subset parser
_RESERVED = frozenset(("as", "break", "const", "continue", "else", "for", "function", "if", "import",
                       "let", "loop", "package", "namespace", "return", "var", "void", "while"))
_KEYWORDS = frozenset(("in", "true", "false", "null"))
_PUNCT = ("||", "&&", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", "{", "}", ".", ",",
          "?", ":", "+", "-", "*", "/", "%")
_RELATIONS = {"==": "_==_", "!=": "_!=_", "<": "_<_", "<=": "_<=_", ">": "_>_", ">=": "_>=_", "in": "@in"}
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?"}
_EOF = "<EOF>"


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "keyword", "punct", "string", "bytes", "int", "uint", "float", "eof"
    text: str
    value: object = None


def _syntax(message: str) -> ShardSelectorError:
    return ShardSelectorError(f"CEL parse error: Syntax error: {message}")


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in " \t\n\r\f":
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif char.isascii() and (char.isalpha() or char == "_"):
            j = i
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            prefix = word.lower()
            if j < n and text[j] in "'\"" and prefix in ("r", "b", "rb", "br"):
                token, i = _string(text, j, raw="r" in prefix, is_bytes="b" in prefix)
                out.append(token)
                continue
            out.append(_Token("keyword" if word in _KEYWORDS else "ident", word))
            i = j
        elif char in "'\"":
            token, i = _string(text, i, raw=False, is_bytes=False)
            out.append(token)
        elif char.isdigit() or (char == "." and i + 1 < n and text[i + 1].isdigit()):
            token, i = _number(text, i)
            out.append(token)
        else:
            for punct in _PUNCT:
                if text.startswith(punct, i):
                    out.append(_Token("punct", punct))
                    i += len(punct)
                    break
            else:
                raise _syntax(f"token recognition error at: '{text[i:i + 2] if char == '|' else char}'")
    out.append(_Token("eof", _EOF))
    return out


def _string(text: str, i: int, *, raw: bool, is_bytes: bool) -> tuple[_Token, int]:
    quote = text[i] * 3 if text.startswith(text[i] * 3, i) else text[i]
    j = i + len(quote)
    chars: list[str] = []
    while True:
        if j >= len(text) or (len(quote) == 1 and text[j] == "\n"):
            raise _syntax(f"token recognition error at: '{text[i:j]}'")
        if text.startswith(quote, j):
            j += len(quote)
            break
        if text[j] == "\\" and not raw:
            char, j = _escape(text, j, i)
            chars.append(char)
        else:
            chars.append(text[j])
            j += 1
    value = "".join(chars)
    if is_bytes:
        return _Token("bytes", text[i:j], value.encode("utf-8", "surrogateescape")), j
    return _Token("string", text[i:j], value), j


def _escape(text: str, j: int, start: int) -> tuple[str, int]:
    """One backslash escape at ``text[j]``, as CEL defines them; returns (character, next index)."""
    code = text[j + 1:j + 2]
    if code in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[code], j + 2
    width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(code)
    digits = text[j + 2:j + 2 + width] if width else text[j + 1:j + 4]
    base = 16 if width else 8
    try:
        if len(digits) != (width or 3):
            raise ValueError(digits)
        return chr(int(digits, base)), j + 1 + (width + 1 if width else 3)
    except ValueError:
        raise _syntax(f"token recognition error at: '{text[start:j + 2]}'") from None


def _number(text: str, i: int) -> tuple[_Token, int]:
    j = i
    if text.startswith(("0x", "0X"), i):
        j = i + 2
        while j < len(text) and text[j] in "0123456789abcdefABCDEF":
            j += 1
        value: object = int(text[i + 2:j], 16)
        is_float = False
    else:
        while j < len(text) and (text[j].isdigit() or text[j] in ".eE" or
                                 (text[j] in "+-" and text[j - 1] in "eE")):
            j += 1
        literal = text[i:j]
        is_float = any(c in literal for c in ".eE")
        try:
            value = float(literal) if is_float else int(literal)
        except ValueError:
            raise _syntax(f"token recognition error at: '{literal}'") from None
    if is_float:
        return _Token("float", text[i:j], value), j
    if j < len(text) and text[j] in "uU":
        return _Token("uint", text[i:j + 1], value), j + 1
    return _Token("int", text[i:j], value), j


class _Parser:
    """Recursive descent over CEL's grammar (cel-go's CEL.g4, without macros), building the same tree
    cel-go builds for the parts kube's walk looks at."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def parse(self) -> _Node:
        node = self.expr()
        if self.peek().kind != "eof":
            raise _syntax(f"extraneous input '{self.peek().text}' expecting <EOF>")
        return node

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self, punct: str | None = None) -> bool:
        token = self.peek()
        if punct is None or (token.kind in ("punct", "keyword") and token.text == punct):
            self.at += 1
            return True
        return False

    def expect(self, punct: str) -> None:
        if not self.take(punct):
            token = self.peek()
            if token.kind == "eof":
                raise _syntax(f"missing '{punct}' at '{_EOF}'")
            raise _syntax(f"mismatched input '{token.text}' expecting '{punct}'")

    def expr(self) -> _Node:
        condition = self.binary_chain("||", "_||_", self.conditional_and)
        if self.take("?"):
            then = self.binary_chain("||", "_||_", self.conditional_and)
            self.expect(":")
            return _Node(CALL, "_?_:_", (condition, then, self.expr()))
        return condition

    def binary_chain(self, punct: str, name: str, operand: Any) -> _Node:
        node: _Node = operand()
        while self.take(punct):
            node = _Node(CALL, name, (node, operand()))
        return node

    def conditional_and(self) -> _Node:
        return self.binary_chain("&&", "_&&_", self.relation)

    def relation(self) -> _Node:
        node = self.calc()
        while self.peek().text in _RELATIONS and self.peek().kind in ("punct", "keyword"):
            name = _RELATIONS[self.peek().text]
            self.take()
            node = _Node(CALL, name, (node, self.calc()))
        return node

    def calc(self) -> _Node:
        node = self.product()
        while self.peek().kind == "punct" and self.peek().text in "+-":
            name = f"_{self.peek().text}_"
            self.take()
            node = _Node(CALL, name, (node, self.product()))
        return node

    def product(self) -> _Node:
        node = self.unary()
        while self.peek().kind == "punct" and self.peek().text in ("*", "/", "%"):
            name = f"_{self.peek().text}_"
            self.take()
            node = _Node(CALL, name, (node, self.unary()))
        return node

    def unary(self) -> _Node:
        if self.take("!"):
            return _Node(CALL, "!_", (self.unary(),))
        if self.take("-"):
            operand = self.unary()
            if operand.kind == LITERAL and operand.go_type in ("int64", "float64"):
                return _Node(LITERAL, value=-operand.value, go_type=operand.go_type)  # type: ignore[operator]
            return _Node(CALL, "-_", (operand,))
        return self.member()

    def member(self) -> _Node:
        node = self.primary()
        while True:
            if self.take("."):
                token = self.peek()
                if token.kind != "ident":
                    raise _syntax(f"no viable alternative at input '.{token.text}'")
                self.take()
                if self.take("("):
                    node = _Node(CALL, token.text, self.arguments())  # receiver call: target dropped
                else:
                    node = _Node(SELECT, token.text, (node,))
            elif self.take("["):
                node = _Node(CALL, "_[_]", (node, self.expr()))
                self.expect("]")
            else:
                return node

    def arguments(self) -> tuple[_Node, ...]:
        args: list[_Node] = []
        if self.take(")"):
            return ()
        while True:
            args.append(self.expr())
            if self.take(")"):
                return tuple(args)
            self.expect("," if self.peek().kind != "eof" else ")")

    def primary(self) -> _Node:
        token = self.peek()
        self.take()
        if token.kind == "ident" or (token.kind == "punct" and token.text == "."):
            name = token.text
            if name == ".":
                following = self.peek()
                if following.kind != "ident":
                    raise _syntax(f"no viable alternative at input '.{following.text}'")
                self.take()
                name = "." + following.text
            if self.take("("):
                return _Node(CALL, name, self.arguments())
            if name in _RESERVED:
                raise ShardSelectorError(f"CEL parse error: reserved identifier: {name}")
            if self.take("{"):
                self.skip_until("}")
                return _Node(STRUCT, name)
            return _Node(IDENT, name)
        if token.kind == "punct" and token.text == "(":
            node = self.expr()
            self.expect(")")
            return node
        if token.kind == "punct" and token.text == "[":
            self.skip_until("]")
            return _Node(LIST)
        if token.kind == "punct" and token.text == "{":
            self.skip_until("}")
            return _Node(MAP)
        literal = _LITERALS.get(token.kind) or _LITERALS.get(token.text if token.kind == "keyword" else "")
        if literal is not None:
            go_type, value = literal
            return _Node(LITERAL, value=token.value if value is _FROM_TOKEN else value, go_type=go_type)
        raise _syntax(f"mismatched input '{token.text}' expecting {{'[', '{{', '(', '.', '-', '!', 'true', "
                      f"'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}}")

    def skip_until(self, closing: str) -> None:
        """Consume a list, map or message body (its contents do not matter to the walk)."""
        depth = 1
        while depth:
            token = self.peek()
            if token.kind == "eof":
                raise _syntax(f"missing '{closing}' at '{_EOF}'")
            self.take()
            if token.kind == "punct" and token.text in "([{":
                depth += 1
            elif token.kind == "punct" and token.text in ")]}":
                depth -= 1


_FROM_TOKEN = object()
#: token kind (or keyword) -> (the Go type of the literal's value, the value or _FROM_TOKEN)
_LITERALS: dict[str, tuple[str, object]] = {
    "string": ("string", _FROM_TOKEN), "bytes": ("[]uint8", _FROM_TOKEN), "int": ("int64", _FROM_TOKEN),
    "uint": ("uint64", _FROM_TOKEN), "float": ("float64", _FROM_TOKEN), "true": ("bool", True),
    "false": ("bool", False), "null": ("structpb.NullValue", None),
}
