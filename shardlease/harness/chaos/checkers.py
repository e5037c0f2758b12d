"""The checks that judge a chaos run from what it left behind: journals, fault log, replica logs.

Everything here is pure or reads files only, so it can judge synthetic entries in a table test as
well as a finished run's work directory.

The one subtle rule is what counts as *overlapping work*. A replica frozen by SIGSTOP in the middle of
a unit of work resumes after a peer already took the shard; its journal then shows the unit ending
after the peer's work began, and no replica can prevent that from inside (it is not running). That is
precisely the case fencing tokens exist for, so such an overlap is recorded as *fenced* -- not as a
violation -- only when all of these hold:

1. the stale unit's token is strictly lower than the other unit's (a store that remembers the highest
   token would reject the stale write);
2. every instant of the simultaneous work lies inside a SIGSTOP window of the stale replica's process,
   extended by ``resume_tolerance`` after the SIGCONT (the time a resumed process needs to run its
   next ``shard.valid()`` check and write down that it stopped).

Any other overlap fails. The same rule applies to the token check: an entry with a lower token than
one already used on the shard is fenced only if its process was resumed at most ``resume_tolerance``
before it and it ended within that tolerance (the handler checked ``valid()`` before the freeze and the
timestamp was taken after it).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shardlease.harness.journal import (
    Entry,
    check_tokens,
    find_key_overlaps,
    find_overlaps,
    load_journal,
)
from shardlease.harness.objectjournal import (
    check_placement,
    check_reconciled,
    check_write_fences,
    classify_write_overlaps,
    find_write_overlaps,
    load_object_journal,
)


@dataclass(frozen=True)
class PauseWindow:
    """A SIGSTOP of one process, ended by SIGCONT (or by SIGKILL while frozen)."""

    identity: str
    pid: int
    stopped: float
    resumed: float
    ended_by: str


class SignalledProcess(Protocol):
    """A replica process and the signals the harness sent it: a live
    :class:`~shardlease.harness.localcluster.Replica`, or one read back from a work directory."""

    @property
    def identity(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def signals(self) -> Sequence[tuple[float, str]]: ...


def pause_windows(replicas: Iterable[SignalledProcess], until: float | None = None) -> list[PauseWindow]:
    """The SIGSTOP windows of every replica process, from the signals the cluster sent (monotonic
    time, signal name)."""
    windows: list[PauseWindow] = []
    for replica in replicas:
        stopped: float | None = None
        for at, name in replica.signals:
            if name == "SIGSTOP" and stopped is None:
                stopped = at
            elif name in ("SIGCONT", "SIGKILL") and stopped is not None:
                windows.append(PauseWindow(replica.identity, replica.pid, stopped, at, name))
                stopped = None
        if stopped is not None:  # never resumed: frozen until the end of the observation
            windows.append(PauseWindow(replica.identity, replica.pid, stopped,
                                       until if until is not None else math.inf, "end"))
    return windows


@dataclass(frozen=True)
class FencedEvent:
    """Stale work of a frozen replica that overlapped or followed a newer holder's: excused only
    because its token is lower (a fencing store rejects it) and it happened inside the freeze."""

    shard: int
    stale: Entry
    newer: Entry
    pause: PauseWindow
    residual: float
    """How long the stale entry lasted after the SIGCONT (0 if it ended while frozen)."""

    def describe(self) -> str:
        return (f"shard {self.shard}: fenced -- {self.stale.describe()} vs newer "
                f"{self.newer.describe()}; frozen {self.pause.stopped:.3f}..{self.pause.resumed:.3f} "
                f"({self.pause.ended_by}), {self.residual * 1000:.0f} ms after resuming")


@dataclass(frozen=True)
class Violation:
    """A broken safety property, with the entries that show it."""

    kind: str  # "overlap" | "token"
    shard: int
    entries: tuple[Entry, ...]
    detail: str

    @property
    def start(self) -> float:
        return min(e.start for e in self.entries)

    @property
    def end(self) -> float:
        return max(e.end for e in self.entries)


#: Keys whose histories a run that resharded is checked over (their shard depends on the count).
RESHARD_KEYS = tuple(f"key-{i}" for i in range(256))


def _fence(entry: Entry) -> tuple[int, Any] | None:
    """The entry's fence (the journal's ``(generation, token)``), when its token is a number."""
    return entry.fence if _int_token(entry.token) is not None else None


def _int_token(token: Any) -> int | None:
    if isinstance(token, int) and not isinstance(token, bool):
        return token
    if isinstance(token, str) and token.isdigit():
        return int(token)
    return None


def _pause_covering(windows: Sequence[PauseWindow], entry: Entry, start: float, end: float,
                    tolerance: float) -> PauseWindow | None:
    """A freeze of ``entry``'s process such that ``[start, end]`` lies within [stop, resume + tol]."""
    for w in windows:
        if w.pid == entry.pid and w.identity == entry.identity and start >= w.stopped \
                and end <= w.resumed + tolerance:
            return w
    return None


def analyse_journal(entries: Sequence[Entry], pauses: Sequence[PauseWindow],
                    resume_tolerance: float, keys: Sequence[str] = (),
                    operator_acts: Mapping[int, Sequence[tuple[float, float]]] | None = None,
                    renew_deadline: float = 0.0) -> tuple[list[Violation], list[FencedEvent]]:
    """Mutual exclusion and fencing over a merged journal, with the SIGSTOP rule of the module
    docstring. Returns (violations, fenced events); the first must be empty.

    Fences compare as ``(generation, token)``. With ``keys`` (a run that resharded), also no key may
    be worked on under two generations at once: shard ids of different counts share keys, which the
    per-shard check cannot see (:func:`~shardlease.harness.journal.find_key_overlaps`)."""
    violations: list[Violation] = []
    fenced: list[FencedEvent] = []
    seen_stale: set[tuple[str, int, float]] = set()
    pairs: list[tuple[int, Entry, Entry, str]] = [(o.shard, o.first, o.second, "") for o in find_overlaps(entries)]
    if keys:
        pairs += [(o.first.shard, o.first, o.second, f" on keys {', '.join(o.keys[:3])}"
                   f"{' ...' if len(o.keys) > 3 else ''} (shard {o.first.shard}/{o.first.count} and "
                   f"{o.second.shard}/{o.second.count})")
                  for o in find_key_overlaps(entries, keys) if o.first.generation != o.second.generation]
    for shard, a, b, where in pairs:
        fa, fb = _fence(a), _fence(b)
        start, end = max(a.start, b.start), min(a.end, b.end)
        if fa is not None and fb is not None and fa != fb:
            stale, newer = (a, b) if fa < fb else (b, a)
            window = _pause_covering(pauses, stale, start, end, resume_tolerance)
            if window is not None:
                key = (stale.identity, stale.pid, stale.start)
                if key not in seen_stale:  # one event per stale unit, with the first newer one
                    seen_stale.add(key)
                    fenced.append(FencedEvent(shard, stale, newer, window,
                                              max(0.0, stale.end - window.resumed)))
                continue
        violations.append(Violation(
            "overlap", shard, (a, b),
            f"{(end - start) * 1000:.1f} ms of simultaneous work{where} by {a.identity} (pid {a.pid}, "
            f"fence {a.fence!r}) and {b.identity} (pid {b.pid}, fence {b.fence!r})"))
    for v in check_tokens(entries):
        later, earlier = v.later, v.earlier
        lt, et = _fence(later), _fence(earlier)
        if "backwards" in v.problem and lt is not None and et is not None and lt < et:
            window = _pause_covering(pauses, later, later.start, later.end, resume_tolerance)
            if window is not None and later.start >= window.resumed:
                fenced.append(FencedEvent(v.shard, later, earlier, window,
                                          max(0.0, later.end - window.resumed)))
                continue
            # An operator deleted or overwrote the shard's Lease: its holder, cut off from the watch
            # that would tell it, may still start a handler under its old (lower) fence for up to a
            # renew deadline, while the Lease's new holder starts above it (the per-object rule).
            act = next(((sent, answered) for sent, answered in (operator_acts or {}).get(v.shard, ())
                        if sent <= earlier.start and later.start <= answered + renew_deadline), None)
            if act is not None:
                fenced.append(FencedEvent(v.shard, later, earlier, PauseWindow(
                    "operator", later.pid, act[0], act[1], "operator"), max(0.0, later.start - act[1])))
                continue
        violations.append(Violation("token", v.shard, (earlier, later), v.problem))
    return violations, fenced


def live_handlers(entries: Iterable[Entry], live_pids: Iterable[int]) -> dict[int, set[str]]:
    """Per shard, identities of *running* processes whose handler started and has not stopped (a
    killed process never writes its ``handler_stop``, so dead pids are ignored)."""
    alive = set(live_pids)
    running: dict[tuple[int, str, int], int] = defaultdict(int)
    for e in sorted(entries, key=lambda e: e.start):
        key = (e.shard, e.identity, e.pid)
        if e.kind == "handler_start":
            running[key] += 1
        elif e.kind == "handler_stop":
            running[key] -= 1
    result: dict[int, set[str]] = defaultdict(set)
    for (shard, identity, pid), count in running.items():
        if count > 0 and pid in alive:
            result[shard].add(identity)
    return dict(result)


class HandlerTracker:
    """Follows ``handler_start`` / ``handler_stop`` lines of every journal file incrementally.

    The recovery check asks "whose handler runs on each shard?" many times; re-reading a ten-minute
    journal (hundreds of thousands of lines) each time would take seconds per poll, so this keeps a
    byte offset per file and parses only the new, complete lines that mention a handler event.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self._running: dict[tuple[int, str, int], int] = defaultdict(int)

    def poll(self) -> None:
        for path in sorted(self.directory.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1  # only complete lines; the rest is read next time
            self._offsets[path] = offset + cut
            for raw in data[:cut].splitlines():
                if b'"handler_' not in raw:
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                key = (int(rec.get("shard", -1)), str(rec.get("identity")), int(rec.get("pid", 0)))
                if rec.get("event") == "handler_start":
                    self._running[key] += 1
                elif rec.get("event") == "handler_stop":
                    self._running[key] -= 1

    def running(self, live_pids: Iterable[int]) -> dict[int, set[str]]:
        """Like :func:`live_handlers`, from what :meth:`poll` has read so far."""
        alive = set(live_pids)
        result: dict[int, set[str]] = defaultdict(set)
        for (shard, identity, pid), count in self._running.items():
            if count > 0 and pid in alive:
                result[shard].add(identity)
        return dict(result)


def work_coverage(entries: Iterable[Entry], start: float, end: float, shards: int) -> float:
    """Fraction of shard-seconds in ``[start, end]`` during which some replica was working."""
    if end <= start:
        return 0.0
    by_shard: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for e in entries:
        if e.kind == "work" and e.end > start and e.start < end:
            by_shard[e.shard].append((max(e.start, start), min(e.end, end)))
    covered = 0.0
    for spans in by_shard.values():
        spans.sort()
        cur_s, cur_e = spans[0]
        for lo, hi in spans[1:]:
            # Gaps shorter than a few slices are the handler's own bookkeeping, not lost service.
            if lo <= cur_e + 0.03:
                cur_e = max(cur_e, hi)
            else:
                covered += cur_e - cur_s
                cur_s, cur_e = lo, hi
        covered += cur_e - cur_s
    return covered / ((end - start) * shards)


def reaction_times(entries: Sequence[Entry], applied: Iterable[Mapping[str, Any]],
                   kinds: Sequence[str] = ("kill", "terminate", "pause", "partition"),
                   horizon: float = 30.0) -> dict[str, dict[str, float]]:
    """How long, after a fault hit a replica, until another replica worked on the shards the victim
    was working on at that moment (its first unit of work there). Per fault kind: how many shards were
    taken over, and the median / 90th percentile / maximum delay in seconds.

    Figures, not checks: other faults running at the same time are not separated out; a takeover
    counts only until the next fault on the same replica (so a pause or partition shorter than the
    lease, after which the victim keeps its shards, adds nothing).
    """
    by_shard: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind == "work":
            by_shard[e.shard].append(e)
    for units in by_shard.values():
        units.sort(key=lambda e: e.start)
    delays: dict[str, list[float]] = defaultdict(list)
    records = sorted(applied, key=lambda f: float(f.get("t", 0.0)))
    for i, fault in enumerate(records):
        kind, pid, t = fault.get("fault"), fault.get("pid"), float(fault.get("t", 0.0))
        if kind not in kinds or pid is None or str(fault.get("note", "")).startswith("skipped"):
            continue
        # Only until the next fault on the same replica (its resume, heal, restart...): a takeover
        # after that is the effect of something else.
        until = next((float(f["t"]) for f in records[i + 1:] if f.get("target") == fault.get("target")),
                     t + horizon)
        limit = min(horizon, until - t)
        for units in by_shard.values():
            if not any(u.pid == pid and u.start <= t and u.end >= t - 0.5 for u in units):
                continue
            after = next((u for u in units if u.pid != pid and u.start >= t), None)
            if after is not None and after.start - t <= limit:
                delays[str(kind)].append(after.start - t)
    result: dict[str, dict[str, float]] = {}
    for kind in kinds:
        values = sorted(delays.get(kind, []))
        if values:
            result[kind] = {"shards": len(values), "median_s": round(values[len(values) // 2], 3),
                            "p90_s": round(values[min(len(values) - 1, int(0.9 * len(values)))], 3),
                            "max_s": round(values[-1], 3)}
    return result


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z ")


_BAD_LINE = re.compile(r"Traceback \(most recent call last\)|Fatal Python error|^\S+ (ERROR|CRITICAL) ")


def log_wall_time(line: str) -> float | None:
    m = _LOG_TIME.match(line)
    if not m:
        return None
    try:
        return _dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        return None


def scan_log(text: str, context: int = 12) -> list[str]:
    """Tracebacks and ERROR/CRITICAL lines in a replica log, each with the lines that follow it."""
    lines = text.splitlines()
    found: list[str] = []
    skip_until = -1
    for i, line in enumerate(lines):
        if i <= skip_until or not _BAD_LINE.search(line):
            continue
        found.append("\n".join(lines[i:i + context]))
        skip_until = i + context - 1
    return found


#: The ERROR line of a process refused because another live process holds its identity's member Lease.
DUPLICATE_REFUSAL = re.compile(r" ERROR +shardlease .*another live process \(incarnation \S+\) holds the member Lease ")


_FAILED_WRITE = re.compile(r"(?: (?P<shard>shard=\d+) | member Lease )(?:\S+ )?"
                           r"(?:renew|acquire|release|create|delete|refresh) failed: ")


def retry_storms(text: str, window: float = 2.0, limit: int = 20) -> list[str]:
    """Bursts of failed writes for one Lease in a replica log: more than ``limit`` within ``window``
    seconds. The runtime's retry policy (manager ``_backoff`` / ``_held_retry_at``) waits at least
    half a retry period between attempts, except "a handful" of attempts 1/8 retry period apart just
    before a renew deadline, and honours Retry-After; with a 0.3 s retry period that is at most about
    18 attempts in 2 s. More is a retry storm against an API server that is already failing."""
    times: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in text.splitlines():
        m = _FAILED_WRITE.search(line)
        if not m:
            continue
        wall = log_wall_time(line)
        if wall is not None:
            times[(m.group("shard") or "member Lease").strip()].append((wall, line))
    found: list[str] = []
    for target, stamps in times.items():
        lo = 0
        for hi in range(len(stamps)):
            while stamps[hi][0] - stamps[lo][0] > window:
                lo += 1
            if hi - lo + 1 > limit:
                # Report the whole burst: extend while attempts follow each other within 0.5 s.
                end = hi
                while end + 1 < len(stamps) and stamps[end + 1][0] - stamps[end][0] < 0.5:
                    end += 1
                burst = stamps[lo:end + 1]
                gap = min(b[0] - a[0] for a, b in zip(burst, burst[1:]))
                found.append(f"{target}: {hi - lo + 1} failed writes within {window:g} s; the burst had "
                             f"{len(burst)} over {burst[-1][0] - burst[0][0]:.1f} s, smallest gap "
                             f"{gap * 1000:.0f} ms, e.g.\n"
                             + "\n".join(line for _, line in burst[:3]) + "\n...\n"
                             + "\n".join(line for _, line in burst[-2:]))
                break
    return found


# --------------------------------------------------------------------------------------------------
# A kept run, judged again from its files
# --------------------------------------------------------------------------------------------------


def recheck_objects(work_dir: str | os.PathLike[str]) -> list[str]:
    """Judge a kept object-workload run again from its files alone: ``plan.json`` (the timings),
    ``faults.jsonl`` (when an operator touched which shard Lease) and ``journal/`` (the handlers'
    starts and stops, every write, the user's changes and the run's markers). Returns the per-object
    and per-shard-fence problems found, the same rules the run applied (empty: it passes)."""
    root = Path(work_dir)
    config = json.loads((root / "plan.json").read_text())["config"]
    timings = config["timings"]
    renew_deadline = float(timings["renew_deadline"])
    margin = float(timings["lease_duration"]) - renew_deadline
    acts: dict[int, list[tuple[float, float]]] = defaultdict(list)
    pauses: list[PauseWindow] = []
    frozen: dict[int, tuple[str, float]] = {}
    faults_log = root / "faults.jsonl"
    if faults_log.exists():
        for line in faults_log.read_text().splitlines():
            record = json.loads(line)
            kind, pid, t = str(record.get("fault", "")), record.get("pid"), float(record.get("t", 0.0))
            if kind.endswith("_lease_done"):
                params = record.get("params") or {}
                for sent, answered in params.get("acts", []):
                    acts[int(params["shard"])].append((float(sent), float(answered)))
            elif kind == "pause" and pid is not None:
                frozen[int(pid)] = (str(record.get("target")), t)
            elif kind in ("resume", "kill", "terminate") and pid is not None and int(pid) in frozen:
                identity, stopped = frozen.pop(int(pid))
                pauses.append(PauseWindow(identity, int(pid), stopped, t, "SIGKILL" if kind == "kill" else "SIGCONT"))
    entries = load_journal(root / "journal")
    journal = load_object_journal(root / "journal")
    starts = [e for e in entries if e.kind == "handler_start"]
    problems = [j.describe() for j in classify_write_overlaps(
        find_write_overlaps(journal.writes), margin=margin, renew_deadline=renew_deadline,
        handler_starts=starts, operator_acts=acts) if not j.excuse]
    problems += check_write_fences(journal.writes) + check_placement(journal.writes)
    problems += [f"shard {v.shard}: {v.detail}" for v in
                 analyse_journal(entries, pauses, float(config["resume_tolerance"]), operator_acts=acts,
                                 renew_deadline=renew_deadline)[0]]
    checked = journal.marker_records.get("reconcile_checked")
    if checked is None:
        problems.append("no reconcile_checked marker: the run ended before its final check")
    else:
        found, _ = check_reconciled(journal, entries, since=float(checked["since"]), bound=float(checked["bound"]),
                                    at=float(checked["at"]), live_pids=checked.get("live_pids"))
        problems += found
    return problems
