"""A journaling test handler and the checkers that read its journals back.

``shardlease run shardlease.harness.journal:handle ...`` makes a replica "work" on each shard it holds in
small units and write down, for every unit, when it began and when it ended. Afterwards the journals of
all replicas are merged and checked for the two properties shardlease promises:

* **mutual exclusion** -- no two replicas ever work on the same shard at the same time
  (:func:`find_overlaps`);
* **fencing** -- each new holder of a shard works with a larger fencing token than every holder
  before it, and nobody keeps working with an old token once a newer one has been used
  (:func:`check_tokens`).

When the group's shard count changes (resharding), a key moves to another shard id, so the same two
properties are also checked per *key* (:func:`find_key_overlaps`, :func:`check_key_fences`): every unit
records the count and generation it ran under, covers the keys ``shard_for_key(key, count) == shard``,
and its fence is ``(generation, token)``. :func:`generation_switches` measures each switch's pause.

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
    "KeyOverlap",
    "KeyFenceViolation",
    "Switch",
    "find_key_overlaps",
    "check_key_fences",
    "assert_no_key_overlaps",
    "assert_key_fences_increase",
    "generation_switches",
    "key_history",
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


def _generation_of(shard: object) -> dict[str, Any]:
    """The shard count and group generation the handler runs under, for the per-key checks: a key's
    shard id depends on the count, so a unit covers the keys ``shard_for_key(key, count) == id``."""
    count = getattr(shard, "count", None)
    generation = getattr(shard, "generation", None)
    return {"count": count if isinstance(count, int) else None,
            "generation": generation if isinstance(generation, int) else 1}


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
                  "work": work, **_generation_of(shard), **({} if heed else {"linger": True})})
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
    writer.write({"event": "handler_start", "shard": shard.id, "token": token, "t": time.monotonic(),
                  **_generation_of(shard)})
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

    ``count`` and ``generation`` are the group's shard count and generation the handler ran under
    (journals written before resharding have neither: ``count`` is then ``None`` and ``generation``
    1). Together with ``shard`` they say which keys the unit worked on, and ``(generation, token)``
    is its fence (see :func:`find_key_overlaps` and :func:`check_key_fences`).
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
    count: int | None = None
    generation: int = 1

    @property
    def fence(self) -> tuple[int, Any]:
        """``(generation, token)``: what a store compares once the count may change."""
        return (self.generation, _comparable(self.token))

    def describe(self) -> str:
        span = f"[{self.start:.3f}, {self.end:.3f}]" if self.kind == "work" else f"@{self.start:.3f}"
        flags = "" if self.complete else " (no end line: process died mid-unit)"
        if self.aborted:
            flags += " (aborted: shard became invalid)"
        if self.extra.get("linger"):
            flags += " (lingering after stop)"
        where = f"shard {self.shard}" if self.count is None else f"shard {self.shard}/{self.count}"
        return (
            f"{self.kind} {where} by {self.identity} (pid {self.pid}, generation {self.generation}, "
            f"token {self.token!r}) {span}{flags} <{self.source}>"
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
        common = _common_fields(rec)
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
                extra={"linger": True} if begin.get("linger") else {},
                **{**common, **_generation_fields(begin)},
            ))
        elif event in ("handler_start", "handler_stop"):
            t = float(rec["t"])
            entries.append(Entry(kind=event, start=t, end=t, source=f"{path.name}:{number}",
                                 extra=rec, **common, **_generation_fields(rec)))
    for number, rec in open_units.values():
        start = float(rec["t"])
        entries.append(Entry(
            kind="work", start=start, end=start + float(rec.get("work", DEFAULT_WORK)), complete=False,
            source=f"{path.name}:{number}", **_common_fields(rec), **_generation_fields(rec),
        ))
    return entries


def _common_fields(rec: dict[str, Any]) -> dict[str, Any]:
    return {"identity": str(rec.get("identity", "?")), "pid": int(rec.get("pid", 0)),
            "shard": int(rec.get("shard", -1)), "token": rec.get("token")}


def _generation_fields(rec: dict[str, Any]) -> dict[str, Any]:
    """Count and generation of a ``begin`` or ``handler_start`` line; older journals have neither."""
    count, generation = rec.get("count"), rec.get("generation")
    return {"count": int(count) if count is not None else None,
            "generation": int(generation) if generation is not None else 1}


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
        return _together(self.first, self.second)

    def __str__(self) -> str:
        return _overlap_text(f"shard {self.shard}", self.first, self.second)


def _together(a: Entry, b: Entry) -> float:
    """How long two units ran at the same time (negative: a gap between them)."""
    return min(a.end, b.end) - max(a.start, b.start)


def _overlap_text(what: str, a: Entry, b: Entry) -> str:
    return f"{what}: {_together(a, b) * 1000:.1f} ms of simultaneous work\n  {a.describe()}\n  {b.describe()}"


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

    * a different holder (identity or process) must use a fence strictly greater than every fence
      used before it on that shard (``token reused`` / ``token went backwards`` otherwise);
    * nobody may use a fence lower than the highest one already used (stale work after a newer
      holder began).

    The fence is ``(generation, token)``: a shard Lease deleted when the count shrank and created
    again when it grew starts its token over, under a larger generation. Journals without
    generations compare tokens alone. Missing tokens (``None``) are reported too: without a token
    nothing can be fenced.
    """
    by_shard: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind in ("work", "handler_start"):
            by_shard[e.shard].append(e)
    return [TokenViolation(shard, earlier, later, problem)
            for shard, events in sorted(by_shard.items())
            for earlier, later, problem in _fence_violations(events)]


def _fence_violations(events: list[Entry]) -> list[tuple[Entry, Entry, str]]:
    """Walk one history (one shard's, or one key's) in time order; see :func:`check_tokens`.
    Returns (earlier, later, problem) triples."""
    events.sort(key=lambda e: (e.start, e.kind != "handler_start"))
    found: list[tuple[Entry, Entry, str]] = []
    highest: Entry | None = None
    for e in events:
        if e.token is None:
            found.append((e, e, "no fencing token"))
            continue
        if highest is None:
            highest = e
            continue
        mine, top = e.fence, highest.fence
        try:
            newer, same = mine > top, mine == top
        except TypeError:
            found.append((highest, e, "tokens of different types"))
            continue
        same_holder = (e.identity, e.pid) == (highest.identity, highest.pid)
        if newer:
            highest = e
        elif same and not same_holder:
            found.append((highest, e, f"token {e.token!r} reused by a different holder"
                          + (f" in generation {e.generation}" if e.generation != 1 else "")))
        elif not same:
            what = (f"{e.token!r} used after {highest.token!r}" if e.generation == highest.generation
                    else f"fence {e.fence!r} used after {highest.fence!r}")
            found.append((highest, e, f"token went backwards: {what}"))
    return found


# ---------------------------------------------------------------- per key, across shard counts


@dataclass(frozen=True, slots=True)
class KeyOverlap:
    """Two replicas worked on units covering the same keys at the same time (possibly under
    different shard ids, when the units belong to different counts)."""

    keys: tuple[str, ...]
    first: Entry
    second: Entry

    @property
    def seconds(self) -> float:
        return _together(self.first, self.second)

    def __str__(self) -> str:
        return _overlap_text(_some_keys(self.keys), self.first, self.second)


def _some_keys(keys: Sequence[str]) -> str:
    return f"{len(keys)} key(s) [" + ", ".join(repr(k) for k in keys[:5]) + (" ...]" if len(keys) > 5 else "]")


@dataclass(frozen=True, slots=True)
class KeyFenceViolation:
    """A later holder of some keys worked with a fence not larger than an earlier one's."""

    keys: tuple[str, ...]
    earlier: Entry
    later: Entry
    problem: str

    def __str__(self) -> str:
        return (
            f"{_some_keys(self.keys)}: {self.problem}\n"
            f"  earlier: {self.earlier.describe()}\n  later:   {self.later.describe()}"
        )


class _KeyIndex:
    """The keys each (count, shard) covers, computed once per count: a few thousand units then
    share a handful of key lists instead of hashing every key for every unit."""

    def __init__(self, keys: Iterable[str], default_count: int | None) -> None:
        self.keys = list(dict.fromkeys(keys))
        self.default_count = default_count
        self._by_count: dict[int, dict[int, tuple[str, ...]]] = {}
        self._shared: dict[tuple[int, int, int, int], bool] = {}

    def count_of(self, e: Entry) -> int:
        count = e.count if e.count is not None else self.default_count
        if count is None:
            raise ValueError(f"{e.describe()} records no shard count (a journal written before "
                             f"resharding): pass count= for such units")
        return count

    def covered(self, e: Entry) -> tuple[str, ...]:
        count = self.count_of(e)
        table = self._by_count.get(count)
        if table is None:
            from shardlease.core.keys import shard_for_key

            grouped: dict[int, list[str]] = defaultdict(list)
            for key in self.keys:
                grouped[shard_for_key(key, count)].append(key)
            table = self._by_count[count] = {shard: tuple(ks) for shard, ks in grouped.items()}
        return table.get(e.shard, ())

    def share_keys(self, a: Entry, b: Entry) -> bool:
        ca, cb = self.count_of(a), self.count_of(b)
        pair = (ca, a.shard, cb, b.shard)
        shared = self._shared.get(pair)
        if shared is None:
            shared = self._shared[pair] = self._shared[(cb, b.shard, ca, a.shard)] = (
                (ca, a.shard) == (cb, b.shard) or not set(self.covered(a)).isdisjoint(self.covered(b)))
        return shared

    def common(self, a: Entry, b: Entry) -> tuple[str, ...]:
        theirs = set(self.covered(b))
        return tuple(k for k in self.covered(a) if k in theirs)


def _tenure(e: Entry) -> tuple[str, int, int, int, Any]:
    return (e.identity, e.pid, e.generation, e.shard, e.token)


def find_key_overlaps(entries: Iterable[Entry], keys: Iterable[str], *,
                      count: int | None = None) -> list[KeyOverlap]:
    """Pairs of work units that overlap in time and cover at least one common key, a unit covering
    the keys with ``shard_for_key(key, unit.count) == unit.shard``, unless both belong to one tenure
    (same identity, process, generation, shard and token: one handler's units follow each other).
    Two replicas count, and so do two handlers of one process (e.g. its old-generation handler still
    running when its new-generation one on another shard id began).

    Unlike :func:`find_overlaps` this compares units across shard counts: shard 3 of 8 and shard 11
    of 16 share keys, shard 3 of 8 and shard 3 of 5 may not. That is the promise resharding makes
    (no key handled under two generations at once), which a per-shard-id check cannot see.
    ``count`` is the count to assume for units that record none (old journals). Touching intervals
    are not an overlap. Each pair is reported once, with all the keys it shares.
    """
    index = _KeyIndex(keys, count)
    units = sorted((e for e in entries if e.kind == "work"), key=lambda e: e.start)
    for e in units:
        index.count_of(e)  # a unit without a count is an error even when nothing overlaps it
    overlaps: list[KeyOverlap] = []
    running: list[Entry] = []
    for unit in units:
        # Sweep over all units: at any moment only the shards being worked on are running.
        running = [r for r in running if r.end > unit.start]
        for other in running:
            if _tenure(other) != _tenure(unit) and index.share_keys(other, unit):
                common = index.common(other, unit)
                if common:
                    overlaps.append(KeyOverlap(common, other, unit))
        running.append(unit)
    return overlaps


def check_key_fences(entries: Iterable[Entry], keys: Iterable[str], *,
                     count: int | None = None) -> list[KeyFenceViolation]:
    """Fencing violations per key: along the history of every key (the work units and handler
    starts that cover it, by time), the fence ``(generation, token)`` of each new holder must be
    larger than every fence used on the key before, and nobody may go on with a smaller one (the
    rules of :func:`check_tokens`, applied to keys instead of shard ids). Each (earlier, later, problem)
    is reported once, with all the keys it concerns. ``count`` as in :func:`find_key_overlaps`.
    """
    index = _KeyIndex(keys, count)
    by_key: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind in ("work", "handler_start"):
            for key in index.covered(e):
                by_key[key].append(e)
    grouped: dict[tuple[int, int, str], tuple[Entry, Entry, list[str]]] = {}
    for key in index.keys:
        for earlier, later, problem in _fence_violations(by_key.get(key, [])):
            slot = grouped.setdefault((id(earlier), id(later), problem), (earlier, later, []))
            slot[2].append(key)
    return [KeyFenceViolation(tuple(ks), earlier, later, problem)
            for (_a, _b, problem), (earlier, later, ks) in grouped.items()]


def key_history(entries: Iterable[Entry], key: str, *, count: int | None = None, limit: int = 40) -> str:
    """A readable timeline of one key: which shard of which count held it, by whom, with which fence."""
    index = _KeyIndex([key], count)
    tenures: list[list[Any]] = []  # [identity, pid, generation, count, shard, token, start, end, units]
    for e in sorted((e for e in entries if e.kind == "work" and index.covered(e)), key=lambda e: e.start):
        holder = [e.identity, e.pid, e.generation, e.count, e.shard, e.token]
        if tenures and tenures[-1][:6] == holder:
            tenures[-1][7] = max(tenures[-1][7], e.end)
            tenures[-1][8] += 1
        else:
            tenures.append([*holder, e.start, e.end, 1])
    lines = [f"key {key!r} history ({len(tenures)} tenures):"]
    for identity, pid, generation, n, shard, token, start, end, units in tenures[-limit:]:
        lines.append(f"  {start:.3f} .. {end:.3f}  shard {shard}/{n} generation {generation}: {identity} "
                     f"(pid {pid}) token {token!r}, {units} units")
    return "\n".join(lines)


def assert_no_key_overlaps(entries: Sequence[Entry], keys: Sequence[str], *,
                           count: int | None = None) -> None:
    """Raise ``AssertionError`` with the overlapping units and the keys' timelines, if any."""
    overlaps = find_key_overlaps(entries, keys, count=count)
    if overlaps:
        raise AssertionError(_report("work overlapping on keys", overlaps,
                                     _key_histories(entries, (o.keys[0] for o in overlaps), count)))


def assert_key_fences_increase(entries: Sequence[Entry], keys: Sequence[str], *,
                               count: int | None = None) -> None:
    """Raise ``AssertionError`` with the offending pairs and the keys' timelines, if any."""
    violations = check_key_fences(entries, keys, count=count)
    if violations:
        raise AssertionError(_report("fence violations on keys", violations,
                                     _key_histories(entries, (v.keys[0] for v in violations), count)))


def _key_histories(entries: Sequence[Entry], keys: Iterable[str], count: int | None) -> list[str]:
    return [key_history(entries, key, count=count) for key in list(dict.fromkeys(keys))[:3]]


@dataclass(frozen=True, slots=True)
class Switch:
    """How one generation took over from the ones before it, as the journal shows it.

    ``last_old_end`` is when the last unit of an older generation ended, ``first_new_begin`` when
    the first unit of this one began, ``all_begun`` when the last of its shards had its first unit
    (``None`` while some shard never worked); ``shards`` is how many of its ``count`` shards did.
    """

    generation: int
    count: int | None
    last_old_end: float
    first_new_begin: float
    all_begun: float | None
    shards: int

    @property
    def pause(self) -> float:
        """Time no key was worked on during the switch (negative: the generations overlapped)."""
        return self.first_new_begin - self.last_old_end

    @property
    def until_all(self) -> float | None:
        """From the last old unit's end until every shard of the new count had a unit."""
        return None if self.all_begun is None else self.all_begun - self.last_old_end


def generation_switches(entries: Iterable[Entry]) -> list[Switch]:
    """One :class:`Switch` per generation after the first that has work in the journal."""
    units = [e for e in entries if e.kind == "work"]
    switches: list[Switch] = []
    for generation in sorted({e.generation for e in units}):
        older = [e.end for e in units if e.generation < generation]
        mine = [e for e in units if e.generation == generation]
        if not older or not mine:
            continue
        first: dict[int, float] = {}
        for e in mine:
            first[e.shard] = min(first.get(e.shard, e.start), e.start)
        counts = {e.count for e in mine}
        count = counts.pop() if len(counts) == 1 else None
        complete = count is not None and set(first) == set(range(count))
        switches.append(Switch(generation, count, max(older), min(first.values()),
                               max(first.values()) if complete else None, len(first)))
    return switches


def shard_history(entries: Iterable[Entry], shard: int, limit: int = 40) -> str:
    """A readable timeline of one shard: who held it with which token, from when to when."""
    tenures: list[list[Any]] = []  # [identity, pid, token, generation, first start, last end, units]
    for e in sorted((e for e in entries if e.shard == shard and e.kind == "work"),
                    key=lambda e: e.start):
        if tenures and tenures[-1][:4] == [e.identity, e.pid, e.token, e.generation]:
            tenures[-1][5] = max(tenures[-1][5], e.end)
            tenures[-1][6] += 1
        else:
            tenures.append([e.identity, e.pid, e.token, e.generation, e.start, e.end, 1])
    lines = [f"shard {shard} history ({len(tenures)} tenures):"]
    for identity, pid, token, generation, start, end, units in tenures[-limit:]:
        where = "" if generation == 1 else f" generation {generation}"
        lines.append(f"  {start:.3f} .. {end:.3f}  {identity} (pid {pid}){where} token {token!r}, {units} units")
    return "\n".join(lines)


def _report(title: str, problems: Sequence[object], histories: Iterable[str]) -> str:
    text = [f"{title}: {len(problems)} found"]
    text.extend(str(p) for p in problems[:10])
    if len(problems) > 10:
        text.append(f"... and {len(problems) - 10} more")
    text.extend(histories)
    return "\n".join(text)


def _shard_histories(entries: Sequence[Entry], shards: Iterable[int]) -> list[str]:
    return [shard_history(entries, shard) for shard in sorted(set(shards))[:3]]


def assert_no_overlaps(entries: Sequence[Entry],
                       excuse: Callable[[Overlap], bool] | None = None) -> None:
    """Raise ``AssertionError`` with the overlapping units and the shards' timelines, if any.

    ``excuse`` lets a scenario accept overlaps it causes on purpose and can explain (e.g. a unit
    in flight when its process was frozen by SIGSTOP), while every other overlap still fails.
    """
    overlaps = [o for o in find_overlaps(entries) if excuse is None or not excuse(o)]
    if overlaps:
        raise AssertionError(_report("overlapping work", overlaps,
                                     _shard_histories(entries, (o.shard for o in overlaps))))


def assert_tokens_increase(entries: Sequence[Entry]) -> None:
    """Raise ``AssertionError`` with the offending pairs and the shards' timelines, if any."""
    violations = check_tokens(entries)
    if violations:
        raise AssertionError(_report("fencing token violations", violations,
                                     _shard_histories(entries, (v.shard for v in violations))))
