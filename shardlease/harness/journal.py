"""A journaling test handler and the checkers that read its journals back.

``shardlease run shardlease.harness.journal:handle ...`` makes a replica "work" on each shard it holds in
small units and write down, for every unit, when it began and when it ended. Afterwards the journals of
all replicas are merged and checked for the two properties shardlease promises:

* **mutual exclusion** -- no two replicas ever work on the same shard at the same time
  (:func:`find_overlaps`);
* **fencing** -- each new holder of a shard works with a larger fencing token than every holder
  before it, and nobody keeps working with an old token once a newer one has been used
  (:func:`check_tokens`).

Clock assumption. Every timestamp is ``time.monotonic()``. On Linux that is ``CLOCK_MONOTONIC``, one
clock for the whole machine (not per process), so intervals written by different processes on the
same machine can be compared directly. The checks are therefore only meaningful for replicas that ran
on one machine, which is how the integration tests, the benchmark and the chaos suite run them.
Journals from different machines must not be merged.

File format. Each process appends JSON lines to its own file
``$SHARDLEASE_JOURNAL_DIR/<identity>.<pid>.jsonl`` (one file per process, so there is never a writer
race between processes; threads of one process share a lock). A unit is written as a ``begin`` line
before the work and an ``end`` line after it, each flushed at once, so a unit cut short by SIGKILL
still leaves its ``begin`` behind and is not silently lost. A SIGKILL can also tear the last line in
half; the reader skips an unparseable *last* line and reports any other unparseable line.

Configuration (environment, read each time a handler starts):

* ``SHARDLEASE_JOURNAL_DIR`` -- where to write (required; the handler refuses to run without it,
  since a test whose journal silently went nowhere would pass vacuously);
* ``SHARDLEASE_JOURNAL_WORK`` -- seconds per unit of work, default ``0.05``;
* ``SHARDLEASE_JOURNAL_LINGER`` -- seconds a stopped handler keeps working before it returns,
  default ``0`` (see :func:`handle`);
* ``SHARDLEASE_JOURNAL_IDENTITY`` / ``SHARDLEASE_IDENTITY`` -- the replica identity to write, if the
  shard object does not carry one; falls back to ``<hostname>-<pid>``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ENV_DIR",
    "ENV_WORK",
    "ENV_LINGER",
    "ENV_IDENTITY",
    "Entry",
    "Overlap",
    "TokenViolation",
    "JournalError",
    "handle",
    "load_journal",
    "find_overlaps",
    "check_tokens",
    "assert_no_overlaps",
    "assert_tokens_increase",
    "work_intervals",
    "handler_starts",
    "last_work_end",
    "running_handlers",
    "shard_history",
    "takeovers",
]

ENV_DIR = "SHARDLEASE_JOURNAL_DIR"
ENV_WORK = "SHARDLEASE_JOURNAL_WORK"
ENV_LINGER = "SHARDLEASE_JOURNAL_LINGER"
ENV_IDENTITY = "SHARDLEASE_JOURNAL_IDENTITY"
DEFAULT_WORK = 0.05

# A unit is done in slices so that an invalidated shard stops work within one slice, not one unit.
_SLICE = 0.01


class _ShardLike(Protocol):
    """What the handler needs from the runtime's ``Shard`` (kept structural so tests can fake it)."""

    id: int
    token: Any
    stopped: threading.Event

    def valid(self) -> bool: ...


class JournalError(ValueError):
    """A journal file is damaged somewhere other than its last line (which SIGKILL may tear)."""


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


class _Writer:
    """One append-only JSON-lines file per process, shared by all shard threads of that process."""

    def __init__(self, directory: Path, identity: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity)
        self.identity = identity
        self.pid = os.getpid()
        self.path = directory / f"{safe}.{os.getpid()}.jsonl"
        # buffering=1 -> line buffered; "a" -> O_APPEND, so a line is never written over.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self._seq = itertools.count()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            record = {"seq": next(self._seq), "pid": os.getpid(), "identity": self.identity, **record}
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()


_writer: _Writer | None = None
_writer_lock = threading.Lock()
_unit_ids = itertools.count()


def _identity_of(shard: object) -> str:
    for attr in ("identity", "holder"):
        value = getattr(shard, attr, None)
        if isinstance(value, str) and value:
            return value
    for var in (ENV_IDENTITY, "SHARDLEASE_IDENTITY"):
        value = os.environ.get(var)
        if value:
            return value
    return f"{socket.gethostname()}-{os.getpid()}"


def _get_writer(shard: object) -> _Writer:
    global _writer
    with _writer_lock:
        # A forked child must not append to its parent's file: the pid is part of the file's name.
        if _writer is None or _writer.pid != os.getpid():
            directory = os.environ.get(ENV_DIR)
            if not directory:
                raise RuntimeError(f"shardlease.harness.journal needs {ENV_DIR} to name a directory")
            _writer = _Writer(Path(directory), _identity_of(shard))
        return _writer


def _seconds_from_env(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    value = float(raw)
    if not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum:g}, got {raw!r}")
    return value


def _work_seconds() -> float:
    return _seconds_from_env(ENV_WORK, DEFAULT_WORK, 1e-6)


def _token(shard: object) -> Any:
    token = getattr(shard, "token", None)
    # Tokens go into JSON; anything exotic is written as text rather than crashing the handler.
    return token if isinstance(token, (int, str)) or token is None else str(token)


def _stopped(shard: _ShardLike) -> bool:
    return shard.stopped.is_set()


def _unit(writer: _Writer, shard: _ShardLike, token: Any, work: float, heed: bool) -> None:
    """One unit of work, journaled as a ``begin`` and an ``end`` line.

    With ``heed`` the unit is abandoned as soon as the shard is stopped or invalid (checked every
    10 ms slice), so the recorded end is never earlier than the last moment of work.
    """
    unit = next(_unit_ids)
    begin = time.monotonic()
    writer.write({"event": "begin", "unit": unit, "shard": shard.id, "token": token, "t": begin,
                  "work": work, **({} if heed else {"linger": True})})
    deadline = begin + work
    aborted = False
    while (now := time.monotonic()) < deadline:
        if heed and (_stopped(shard) or not shard.valid()):
            aborted = True
            break
        time.sleep(min(_SLICE, deadline - now))
    writer.write({"event": "end", "unit": unit, "shard": shard.id, "token": token,
                  "t": time.monotonic(), "aborted": aborted})


def handle(shard: _ShardLike) -> None:
    """Work on ``shard`` in units of ``SHARDLEASE_JOURNAL_WORK`` seconds until the runtime stops it.

    A unit starts only while ``shard.valid()`` and is abandoned as soon as the shard is stopped or
    no longer valid. While the shard is not valid (but not yet stopped) no unit starts.

    ``SHARDLEASE_JOURNAL_LINGER`` (seconds, default 0) models a handler that is slow to honour a
    stop: once stopped it keeps working, ignoring ``valid()``, for that long before returning. The
    runtime must then keep the Lease until the handler has returned (or its process is gone), so
    the journal must still show no overlap; it is a way to test exactly that.
    """
    writer = _get_writer(shard)
    work = _work_seconds()
    linger = _seconds_from_env(ENV_LINGER, 0.0, 0.0)
    token = _token(shard)
    writer.write({"event": "handler_start", "shard": shard.id, "token": token, "t": time.monotonic()})
    units = 0
    reason = "stopped"
    try:
        while not _stopped(shard):
            if not shard.valid():
                time.sleep(_SLICE)
                continue
            _unit(writer, shard, token, work, heed=True)
            units += 1
        linger_until = time.monotonic() + linger
        while time.monotonic() < linger_until:
            _unit(writer, shard, token, min(work, linger_until - time.monotonic()), heed=False)
            units += 1
    except BaseException as exc:  # recorded, then re-raised: the runtime decides what a crash means
        reason = f"error: {type(exc).__name__}: {exc}"
        raise
    finally:
        writer.write(
            {"event": "handler_stop", "shard": shard.id, "token": token, "t": time.monotonic(),
             "units": units, "reason": reason}
        )


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal fact: a unit of work (``kind="work"``) or a handler start/stop (``start == end``).

    ``complete`` is False for a unit whose ``end`` line never came (the process died mid-unit); its
    ``end`` is then the latest moment the unit could have run to (``start + work``), the cautious
    choice for overlap checks. ``source`` names the file and line for evidence.
    """

    kind: str
    identity: str
    pid: int
    shard: int
    token: Any
    start: float
    end: float
    complete: bool = True
    aborted: bool = False
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> str:
        span = f"[{self.start:.3f}, {self.end:.3f}]" if self.kind == "work" else f"@{self.start:.3f}"
        flags = "" if self.complete else " (no end line: process died mid-unit)"
        if self.aborted:
            flags += " (aborted: shard became invalid)"
        if self.extra.get("linger"):
            flags += " (lingering after stop)"
        return (
            f"{self.kind} shard {self.shard} by {self.identity} (pid {self.pid}, token {self.token!r}) "
            f"{span}{flags} <{self.source}>"
        )


def _read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    # A file that ends with "\n" splits into a trailing "", which is not a line.
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                return  # torn by SIGKILL while writing: tolerated
            raise JournalError(f"{path}:{number}: unreadable journal line ({exc}): {line[:120]!r}") from None
        if not isinstance(record, dict):
            raise JournalError(f"{path}:{number}: not a JSON object: {line[:120]!r}")
        yield number, record


def _entries_of_file(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    open_units: dict[int, tuple[int, dict[str, Any]]] = {}
    for number, rec in _read_lines(path):
        event = rec.get("event")
        common: dict[str, Any] = {
            "identity": str(rec.get("identity", "?")),
            "pid": int(rec.get("pid", 0)),
            "shard": int(rec.get("shard", -1)),
            "token": rec.get("token"),
        }
        if event == "begin":
            open_units[int(rec["unit"])] = (number, rec)
        elif event == "end":
            begun = open_units.pop(int(rec["unit"]), None)
            if begun is None:
                raise JournalError(f"{path}:{number}: end of unit {rec['unit']} that never began")
            begin_line, begin = begun
            entries.append(Entry(
                kind="work", start=float(begin["t"]), end=float(rec["t"]),
                aborted=bool(rec.get("aborted")), source=f"{path.name}:{begin_line}-{number}",
                extra={"linger": True} if begin.get("linger") else {}, **common,
            ))
        elif event in ("handler_start", "handler_stop"):
            t = float(rec["t"])
            entries.append(Entry(kind=event, start=t, end=t, source=f"{path.name}:{number}",
                                 extra=rec, **common))
    for number, rec in open_units.values():
        start = float(rec["t"])
        entries.append(Entry(
            kind="work", identity=str(rec.get("identity", "?")), pid=int(rec.get("pid", 0)),
            shard=int(rec.get("shard", -1)), token=rec.get("token"), start=start,
            end=start + float(rec.get("work", DEFAULT_WORK)), complete=False,
            source=f"{path.name}:{number}",
        ))
    return entries


def load_journal(directory: str | os.PathLike[str]) -> list[Entry]:
    """Read every ``*.jsonl`` journal in ``directory`` into one list sorted by start time."""
    entries: list[Entry] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        entries.extend(_entries_of_file(path))
    entries.sort(key=lambda e: (e.start, e.end, e.identity))
    return entries


def work_intervals(entries: Iterable[Entry], shard: int | None = None) -> list[Entry]:
    """The units of work (optionally of one shard), by start time."""
    return sorted(
        (e for e in entries if e.kind == "work" and (shard is None or e.shard == shard)),
        key=lambda e: e.start,
    )


def handler_starts(entries: Iterable[Entry]) -> Counter[tuple[int, str]]:
    """How many times each (shard, identity) handler was started -- a restart shows up as 2."""
    return Counter((e.shard, e.identity) for e in entries if e.kind == "handler_start")


def running_handlers(entries: Iterable[Entry]) -> dict[int, set[tuple[str, int]]]:
    """Per shard, the (identity, pid) whose handler has started and not stopped, as journaled.

    A process killed with SIGKILL never writes its stop, so callers should drop pids that are gone.
    """
    running: dict[int, set[tuple[str, int]]] = defaultdict(set)
    for e in sorted(entries, key=lambda e: e.start):
        if e.kind == "handler_start":
            running[e.shard].add((e.identity, e.pid))
        elif e.kind == "handler_stop":
            running[e.shard].discard((e.identity, e.pid))
    return {shard: who for shard, who in running.items() if who}


def takeovers(entries: Iterable[Entry], shards: Iterable[int], *, previous: str,
              after: float) -> dict[int, Entry | None]:
    """For each shard, the first handler start by someone other than ``previous`` at or after
    ``after`` (``None`` if none yet): when the next holder began, for handoff/failover figures."""
    wanted = set(shards)
    found: dict[int, Entry | None] = dict.fromkeys(sorted(wanted))
    for e in sorted(entries, key=lambda e: e.start):
        if (e.kind == "handler_start" and e.shard in wanted and found[e.shard] is None
                and e.identity != previous and e.start >= after):
            found[e.shard] = e
    return found


def last_work_end(entries: Iterable[Entry], shard: int, identity: str) -> float | None:
    """When ``identity`` last stopped working on ``shard`` (``None`` if it never worked on it)."""
    ends = [e.end for e in entries if e.kind == "work" and e.shard == shard and e.identity == identity]
    return max(ends) if ends else None


# --------------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two replicas worked on one shard at the same time: the evidence for a broken exclusion."""

    shard: int
    first: Entry
    second: Entry

    @property
    def seconds(self) -> float:
        return min(self.first.end, self.second.end) - max(self.first.start, self.second.start)

    def __str__(self) -> str:
        return (
            f"shard {self.shard}: {self.seconds * 1000:.1f} ms of simultaneous work\n"
            f"  {self.first.describe()}\n  {self.second.describe()}"
        )


@dataclass(frozen=True, slots=True)
class TokenViolation:
    """Work with a fencing token that is not larger than one already used on the shard by another."""

    shard: int
    earlier: Entry
    later: Entry
    problem: str

    def __str__(self) -> str:
        return (
            f"shard {self.shard}: {self.problem}\n"
            f"  earlier: {self.earlier.describe()}\n  later:   {self.later.describe()}"
        )


def find_overlaps(entries: Iterable[Entry]) -> list[Overlap]:
    """Pairs of work units of one shard, by different replicas (processes), that overlap in time.

    Two units of the same process never count: one process holds a shard once. Touching intervals
    (one ends exactly when the other starts) are not an overlap.
    """
    by_shard: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind == "work":
            by_shard[e.shard].append(e)
    overlaps: list[Overlap] = []
    for shard, units in sorted(by_shard.items()):
        units.sort(key=lambda e: e.start)
        # Sweep: keep the units still running at each start; few at a time, so a list is enough.
        running: list[Entry] = []
        for unit in units:
            running = [r for r in running if r.end > unit.start]
            for other in running:
                if (other.identity, other.pid) != (unit.identity, unit.pid):
                    overlaps.append(Overlap(shard, other, unit))
            running.append(unit)
    return overlaps


def _comparable(token: Any) -> Any:
    if isinstance(token, str) and token.isdigit():
        return int(token)
    return token


def check_tokens(entries: Iterable[Entry]) -> list[TokenViolation]:
    """Fencing-token violations: along each shard's history (work and handler starts, by time),

    * a different holder (identity or process) must use a token strictly greater than every token
      used before it on that shard (``token reused`` / ``token went backwards`` otherwise);
    * nobody may use a token lower than the highest one already used (stale work after a newer
      holder began).

    Missing tokens (``None``) are reported too: without a token nothing can be fenced.
    """
    by_shard: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind in ("work", "handler_start"):
            by_shard[e.shard].append(e)
    violations: list[TokenViolation] = []
    for shard, events in sorted(by_shard.items()):
        events.sort(key=lambda e: (e.start, e.kind != "handler_start"))
        highest: Entry | None = None
        for e in events:
            if e.token is None:
                violations.append(TokenViolation(shard, e, e, "no fencing token"))
                continue
            if highest is None:
                highest = e
                continue
            mine, top = _comparable(e.token), _comparable(highest.token)
            try:
                newer, same = mine > top, mine == top
            except TypeError:
                violations.append(TokenViolation(shard, highest, e, "tokens of different types"))
                continue
            same_holder = (e.identity, e.pid) == (highest.identity, highest.pid)
            if newer:
                highest = e
            elif same and not same_holder:
                violations.append(TokenViolation(
                    shard, highest, e, f"token {e.token!r} reused by a different holder"))
            elif not same:
                violations.append(TokenViolation(
                    shard, highest, e,
                    f"token went backwards: {e.token!r} used after {highest.token!r}"))
    return violations


def shard_history(entries: Iterable[Entry], shard: int, limit: int = 40) -> str:
    """A readable timeline of one shard: who held it with which token, from when to when."""
    tenures: list[list[Any]] = []  # [identity, pid, token, first start, last end, units]
    for e in sorted((e for e in entries if e.shard == shard and e.kind == "work"),
                    key=lambda e: e.start):
        if tenures and tenures[-1][:3] == [e.identity, e.pid, e.token]:
            tenures[-1][4] = max(tenures[-1][4], e.end)
            tenures[-1][5] += 1
        else:
            tenures.append([e.identity, e.pid, e.token, e.start, e.end, 1])
    lines = [f"shard {shard} history ({len(tenures)} tenures):"]
    for identity, pid, token, start, end, units in tenures[-limit:]:
        lines.append(f"  {start:.3f} .. {end:.3f}  {identity} (pid {pid}) token {token!r}, {units} units")
    return "\n".join(lines)


def _report(title: str, problems: Sequence[object], entries: Sequence[Entry],
            shards: Iterable[int]) -> str:
    text = [f"{title}: {len(problems)} found"]
    text.extend(str(p) for p in problems[:10])
    if len(problems) > 10:
        text.append(f"... and {len(problems) - 10} more")
    for shard in sorted(set(shards))[:3]:
        text.append(shard_history(entries, shard))
    return "\n".join(text)


def assert_no_overlaps(entries: Sequence[Entry],
                       excuse: Callable[[Overlap], bool] | None = None) -> None:
    """Raise ``AssertionError`` with the overlapping units and the shards' timelines, if any.

    ``excuse`` lets a scenario accept overlaps it causes on purpose and can explain (e.g. a unit
    in flight when its process was frozen by SIGSTOP), while every other overlap still fails.
    """
    overlaps = [o for o in find_overlaps(entries) if excuse is None or not excuse(o)]
    if overlaps:
        raise AssertionError(_report("overlapping work", overlaps, entries,
                                     (o.shard for o in overlaps)))


def assert_tokens_increase(entries: Sequence[Entry]) -> None:
    """Raise ``AssertionError`` with the offending pairs and the shards' timelines, if any."""
    violations = check_tokens(entries)
    if violations:
        raise AssertionError(_report("fencing token violations", violations, entries,
                                     (v.shard for v in violations)))
