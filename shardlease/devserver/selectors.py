"""Label and field selectors with apimachinery's grammar and matching rules.

Selectors are parsed once per request into small tuples of requirements; matching is a plain loop,
which matters because every watch event is matched against every watcher's selector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .status import bad_request
from .validation import label_value_problems, qualified_name_problems

_OPERATOR_CHARS = frozenset("!=<>(),")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        value = labels.get(self.key)
        if op == "=" or op == "in":
            return value is not None and value in self.values
        if op == "!=" or op == "notin":
            return value is None or value not in self.values
        if value is None:
            return False
        try:
            have, want = int(value), int(next(iter(self.values)))
        except ValueError:
            return False
        return have > want if op == "gt" else have < want


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if not self.requirements:
            return True
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = LabelSelector()


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _OPERATOR_CHARS:
            two = text[i:i + 2]
            if two in ("==", "!="):
                tokens.append(two)
                i += 2
            else:
                tokens.append(ch)
                i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _OPERATOR_CHARS:
                i += 1
            tokens.append(text[start:i])
    return tokens


def _is_identifier(token: str | None) -> bool:
    return token is not None and token not in ("==", "!=") and token[0] not in _OPERATOR_CHARS


def parse_label_selector(text: str) -> LabelSelector:
    """Parse ``a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3``; raises a 400 ApiError when malformed."""
    if not text.strip():
        return EVERYTHING
    try:
        return LabelSelector(tuple(_parse_requirements(_tokenize(text))))
    except ValueError as exc:
        raise bad_request(f'unable to parse requirement: {exc}') from None


def _parse_requirements(tokens: list[str]) -> list[Requirement]:
    requirements: list[Requirement] = []
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    while True:
        negate = peek() == "!"
        if negate:
            pos += 1
        key = peek()
        if not _is_identifier(key) or key in ("in", "notin"):
            raise ValueError(f"found '{key or ''}', expected: identifier")
        assert key is not None
        _check_key(key)
        pos += 1
        op = peek()
        if negate or op in (None, ","):
            requirements.append(Requirement(key, "!" if negate else "exists"))
        elif op in ("=", "==", "!=", ">", "<"):
            pos += 1
            value = peek()
            if value is None or value == ",":
                value = ""  # "a=" selects the empty value, as in apimachinery
            elif not _is_identifier(value):
                raise ValueError(f"found '{value}', expected: identifier")
            else:
                pos += 1
            if op in (">", "<"):
                if not value.lstrip("-").isdigit():
                    raise ValueError(f"for 'gt', 'lt' operators, exactly one value is required: {value!r}")
                requirements.append(Requirement(key, "gt" if op == ">" else "lt", frozenset([value])))
            else:
                _check_value(value)
                requirements.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
        elif op in ("in", "notin"):
            pos += 1
            if peek() != "(":
                raise ValueError(f"found '{peek() or ''}', expected: '('")
            pos += 1
            values: list[str] = []
            while True:
                token = peek()
                if token is None:
                    raise ValueError("found '', expected: ')'")
                if token in (",", ")"):
                    value = ""  # "in (a,)" holds the empty value, as in apimachinery
                elif _is_identifier(token):
                    value = token
                    pos += 1
                else:
                    raise ValueError(f"found '{token}', expected: ',', ')' or identifier")
                if value or token == ",":
                    _check_value(value)
                    values.append(value)
                closer = peek()
                pos += 1
                if closer == ")":
                    break
                if closer != ",":
                    raise ValueError(f"found '{closer or ''}', expected: ',' or ')'")
            if not values:
                raise ValueError("for 'in', 'notin' operators, values set can't be empty")
            requirements.append(Requirement(key, op, frozenset(values)))
        else:
            raise ValueError(f"found '{op}', expected: '=', '!=', '==', 'in', notin'")
        token = peek()
        if token is None:
            return requirements
        if token != ",":
            raise ValueError(f"found '{token}', expected: ','")
        pos += 1


def _check_key(key: str) -> None:
    problems = qualified_name_problems(key)
    if problems:
        raise ValueError(f'key: Invalid value: "{key}": {problems[0]}')


def _check_value(value: str) -> None:
    problems = label_value_problems(value)
    if problems:
        raise ValueError(f'values[0][{value}]: Invalid value: "{value}": {problems[0]}')


# --------------------------------------------------------------------------- field selectors

FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class FieldSelector:
    """Only ``metadata.name`` and ``metadata.namespace`` are selectable on Leases and ConfigMaps."""

    requirements: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    def matches(self, namespace: str, name: str) -> bool:
        for field, equal, value in self.requirements:
            actual = name if field == "metadata.name" else namespace
            if (actual == value) != equal:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.requirements

    def only_name(self) -> str | None:
        """The single name an ``metadata.name=x`` selector pins, letting lists skip a full scan."""
        for field, equal, value in self.requirements:
            if field == "metadata.name" and equal:
                return value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return value.replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\")


def parse_field_selector(text: str, known: tuple[str, ...] | None = FIELDS) -> FieldSelector:
    """Parse ``metadata.name=x,metadata.namespace!=y``. ``known=None`` accepts any field name."""
    if not text.strip():
        return FieldSelector()
    requirements: list[tuple[str, bool, str]] = []
    for part in _split_unescaped(text, ","):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            field, found, value = part.partition(op)
            if found:
                break
        else:
            raise bad_request(f'invalid selector: \'{text}\'; can\'t understand \'{part}\'')
        field = field.strip()
        if known is not None and field not in known:
            raise bad_request(f'"{field}" is not a known field selector: only "metadata.name", '
                              f'"metadata.namespace"')
        requirements.append((field, op != "!=", _unescape(value.strip())))
    return FieldSelector(tuple(requirements))

