"""Kubernetes MicroTime: parse like Go's ``time.Parse`` with layout ``2006-01-02T15:04:05.000000Z07:00``.

kube-apiserver accepts exactly six fractional digits and either ``Z`` or a ``±HH:MM`` offset, and
always writes the value back in UTC with ``Z``. Python's ``datetime.isoformat()`` drops the fraction
when it is zero, a classic source of 400s against a real cluster, so this stand-in must reject the
same inputs -- with Go's wording, so that error messages seen in tests match production.
"""

from __future__ import annotations

import datetime as _dt
import re

LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z", re.ASCII)

# (layout element, kind, width). Kinds: "lit" = literal text, "num" = fixed-width digits,
# "frac" = dot + six digits, "tz" = Z or ±hh:mm.
_ELEMENTS: tuple[tuple[str, str, int], ...] = (
    ("2006", "num", 4), ("-", "lit", 1), ("01", "num", 2), ("-", "lit", 1), ("02", "num", 2),
    ("T", "lit", 1), ("15", "num", 2), (":", "lit", 1), ("04", "num", 2), (":", "lit", 1),
    ("05", "num", 2), (".000000", "frac", 7), ("Z07:00", "tz", 6),
)
_ELEMENT_TAILS: tuple[str, ...] = tuple(
    "".join(e[0] for e in _ELEMENTS[i:]) for i in range(len(_ELEMENTS))
)
_RANGES = {"01": ("month", 1, 12), "02": ("day", 1, 31), "15": ("hour", 0, 23),
            "04": ("minute", 0, 59), "05": ("second", 0, 59)}


class MicroTimeError(ValueError):
    """The Go ``time.ParseError`` text, e.g. ``parsing time "x" as "…": cannot parse "…" as "…"``."""


def _cannot(value: str, rest: str, index: int) -> MicroTimeError:
    elem = _ELEMENTS[index][0]
    if _ELEMENTS[index][1] == "lit":
        # Go reports a literal mismatch against the rest of the layout from that literal on.
        elem = _ELEMENT_TAILS[index]
    return MicroTimeError(f'parsing time "{value}" as "{LAYOUT}": cannot parse "{rest}" as "{elem}"')


def parse(value: str) -> _dt.datetime:
    """Return an aware UTC datetime or raise :class:`MicroTimeError`."""
    rest = value
    fields: dict[str, int] = {}
    micro = 0
    offset = 0
    for index, (elem, kind, width) in enumerate(_ELEMENTS):
        if kind == "lit":
            if not rest.startswith(elem):
                raise _cannot(value, rest, index)
            rest = rest[width:]
        elif kind == "num":
            chunk = rest[:width]
            if len(chunk) < width or not chunk.isascii() or not chunk.isdigit():
                raise _cannot(value, rest, index)
            fields[elem] = int(chunk)
            rest = rest[width:]
        elif kind == "frac":
            chunk = rest[1:7]
            if not rest.startswith(".") or len(chunk) < 6 or not chunk.isascii() or not chunk.isdigit():
                raise _cannot(value, rest, index)
            micro = int(chunk)
            rest = rest[7:]
        else:  # tz
            if rest.startswith("Z"):
                rest = rest[1:]
            else:
                sign, hh, colon, mm = rest[:1], rest[1:3], rest[3:4], rest[4:6]
                if (len(rest) < 6 or sign not in "+-" or colon != ":" or not (hh + mm).isascii()
                        or not (hh + mm).isdigit()):
                    raise _cannot(value, rest, index)
                offset = (int(hh) * 60 + int(mm)) * (1 if sign == "+" else -1)
                rest = rest[6:]
    if rest:
        raise MicroTimeError(f'parsing time "{value}": extra text: "{rest}"')
    for elem, (label, low, high) in _RANGES.items():
        if not low <= fields[elem] <= high:
            raise MicroTimeError(f'parsing time "{value}": {label} out of range')
    try:
        moment = _dt.datetime(fields["2006"], fields["01"], fields["02"], fields["15"], fields["04"],
                              fields["05"], micro, tzinfo=_dt.timezone(_dt.timedelta(minutes=offset)))
    except ValueError:
        raise MicroTimeError(f'parsing time "{value}": day out of range') from None
    return moment.astimezone(_dt.timezone.utc)


def normalize(value: str) -> str:
    """Parse and re-render in the server's canonical form (UTC, six digits, ``Z``)."""
    if _CANONICAL.match(value):
        # Fast path for the form every well-behaved client sends (it is on the renew hot path):
        # the C parser checks the ranges; anything it rejects takes the slow path for Go's message.
        try:
            _dt.datetime.fromisoformat(value[:-1])
            return value
        except ValueError:
            pass
    return format_time(parse(value))


def format_time(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    """``creationTimestamp`` precision: whole seconds."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
