"""The verdict over what a chaos run leaves behind, shared by the live run and the standalone recheck.

A finished run's journals, fault log and replica logs decide most of its verdict: the safety rules over
the journals, every shard of the final generation worked on, each object's final change reconciled
(from the marker the run wrote when it checked), the replicas' exit codes, their logs (errors,
tracebacks, retry storms). These functions take those facts, whether they come from the running
:class:`~shardlease.harness.chaos.run.ChaosRun` or are read back from its work directory
(:mod:`~shardlease.harness.chaos.workdir`), and return the failures with the same wording and the
same evidence, so both give one verdict. What only the live run can see -- the recovery wait against
the API server, the idle-holder watch, processes left behind -- is not here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shardlease.harness.chaos.checkers import (
    DUPLICATE_REFUSAL,
    RESHARD_KEYS,
    FencedEvent,
    PauseWindow,
    Violation,
    analyse_journal,
    log_wall_time,
    reaction_times,
    retry_storms,
    scan_log,
    work_coverage,
)
from shardlease.harness.chaos.plan import ChaosConfig
from shardlease.harness.journal import Entry, shard_history
from shardlease.harness.objectjournal import (
    ObjectJournal,
    ObjectWrite,
    check_placement,
    check_write_fences,
    classify_write_overlaps,
    find_write_overlaps,
    reconcile_delays,
    summarize,
)


class LoggedProcess(Protocol):
    """A replica process as the checks see it: a live :class:`~shardlease.harness.localcluster.Replica`
    or a :class:`ProcessRecord` read back from a work directory."""

    @property
    def identity(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def log_path(self) -> Path: ...

    def log_text(self) -> str: ...


@dataclass(frozen=True)
class ProcessRecord:
    """One replica process of a finished run: who it was, the signals the harness sent it (monotonic
    time, name), how it exited and where its log is."""

    identity: str
    pid: int
    log_path: Path
    code: int | None
    signals: tuple[tuple[float, str], ...] = ()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class Evidence:
    """Builds the evidence attached to a failure: the faults around it and the replicas' log lines,
    with times shown as offsets from the start of the fault window."""

    processes: Sequence[LoggedProcess]
    applied: Sequence[Mapping[str, Any]]
    window_start: float
    #: Monotonic time (journal, fault log) to wall-clock time (replica logs).
    wall_of: Callable[[float], float]
    lease: float

    def faults_between(self, lo: float, hi: float) -> list[str]:
        """The fault log between two monotonic times, one line each."""
        return [f"  +{f['offset']:.3f}s {f['fault']} {f['target'] or ''} {f['params'] or ''} "
                f"{f.get('note', '')}".rstrip() for f in self.applied if lo <= f["t"] <= hi]

    def log_excerpt(self, replica: LoggedProcess, shard: int, lo: float, hi: float, limit: int = 30) -> str:
        """A replica's log lines between two monotonic times that concern ``shard`` or no shard
        (membership, watch, signals), plus the faults applied meanwhile."""
        wlo, whi = self.wall_of(lo), self.wall_of(hi)
        tag = f" shard={shard} "
        lines = [f"--- {replica.identity} pid {replica.pid} log, +{lo - self.window_start:.2f}s.."
                 f"+{hi - self.window_start:.2f}s ({replica.log_path}) ---"]
        picked = []
        for line in replica.log_text().splitlines():
            wall = log_wall_time(line)
            if wall is not None and wlo <= wall <= whi and (tag in line or " shard=" not in line):
                picked.append(line)
        lines.extend(picked[-limit:] or ["(no log lines in that interval)"])
        faults = self.faults_between(lo, hi)
        if faults:
            lines.append("faults applied meanwhile:")
            lines.extend(faults)
        return "\n".join(lines)

    def violation(self, violation: Violation, entries: Sequence[Entry]) -> str:
        """The shard, the replicas, the intervals, the faults around that time and the replicas' log
        lines around that time, for one violation."""
        lease = self.lease
        lo, hi = violation.start - 2 * lease - 1.0, violation.end + lease
        parts = [f"SAFETY ({violation.kind}) shard {violation.shard}: {violation.detail}"]
        for e in violation.entries:
            parts.append(f"  {e.describe()}  (window +{e.start - self.window_start:.3f}s)")
        parts.append(shard_history(entries, violation.shard, limit=12))
        parts.append(f"faults from +{lo - self.window_start:.2f}s to +{hi - self.window_start:.2f}s:")
        near = self.faults_between(lo, hi)
        parts.extend(near)
        if not near:
            parts.append("  (none)")
        pids = {(e.identity, e.pid) for e in violation.entries}
        for replica in self.processes:
            if (replica.identity, replica.pid) in pids:
                parts.append(self.log_excerpt(replica, violation.shard, lo + lease, hi))
        return "\n".join(parts)

    def object_writes(self, title: str, detail: str, writes: Sequence[ObjectWrite]) -> str:
        """A per-object failure with the faults around it and both writers' log lines."""
        lease = self.lease
        lo, hi = min(w.start for w in writes) - 2 * lease - 1.0, max(w.end for w in writes) + lease
        parts = [f"{title}: {detail}", f"faults from +{lo - self.window_start:.2f}s to "
                 f"+{hi - self.window_start:.2f}s:"]
        parts.extend(self.faults_between(lo, hi) or ["  (none)"])
        pids = {(w.identity, w.pid): w.shard for w in writes}
        for replica in self.processes:
            if (replica.identity, replica.pid) in pids:
                parts.append(self.log_excerpt(replica, pids[(replica.identity, replica.pid)], lo + lease, hi))
        return "\n".join(parts)


@dataclass
class Findings:
    """Failures, figures and fenced events found by one of the checks below."""

    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    fenced: list[FencedEvent] = field(default_factory=list)


def judge_exits(processes: Iterable[ProcessRecord]) -> list[str]:
    """Every replica exited as told: killed (any status), or status 0 after SIGTERM; never on its own."""
    failures: list[str] = []
    for replica in processes:
        sent = [name for _, name in replica.signals]
        code = replica.code
        if "SIGKILL" in sent:
            continue  # we killed it: any exit status is ours
        if code == 0 and "SIGTERM" in sent:
            continue
        why = ("exited on its own" if "SIGTERM" not in sent
               else "did not exit cleanly after SIGTERM (a -9 means stop() had to SIGKILL it)")
        failures.append(
            f"EXIT: replica {replica.identity} (pid {replica.pid}) {why}: exit code {code}\n"
            f"--- {replica.log_path} (tail) ---\n{replica.log_tail(40)}")
    return failures


def judge_logs(processes: Iterable[LoggedProcess], duplicated: Collection[str]) -> Findings:
    """Errors, tracebacks and retry storms in the replicas' logs. The refusal of a second process with
    a live identity (the ``duplicate`` fault, on the identities in ``duplicated``) is an ERROR by
    design: counted in ``duplicate_refusals_logged``, not failed."""
    found = Findings()
    refusals = 0
    for replica in processes:
        text = replica.log_text()
        if replica.identity in duplicated:
            kept = [line for line in text.splitlines() if not DUPLICATE_REFUSAL.search(line)]
            refusals += len(text.splitlines()) - len(kept)
            text = "\n".join(kept)
        for finding in scan_log(text):
            found.failures.append(
                f"LOG ERROR: replica {replica.identity} (pid {replica.pid}) logged an error or traceback "
                f"({replica.log_path}):\n{finding}")
        for storm in retry_storms(text):
            found.failures.append(
                f"RETRY STORM: replica {replica.identity} (pid {replica.pid}) retried a failing "
                f"write far faster than its retry policy allows ({replica.log_path}):\n{storm}")
    found.figures["duplicate_refusals_logged"] = refusals
    return found


def judge_key_journal(entries: Sequence[Entry], pauses: Sequence[PauseWindow], config: ChaosConfig,
                      evidence: Evidence, *, reshards: int, window: tuple[float, float] | None) -> Findings:
    """The key workload's journal: work was done, every shard of the final generation was worked on,
    and no overlap or token going backwards beyond the frozen-replica rule
    (:func:`~shardlease.harness.chaos.checkers.analyse_journal`). ``window``: the fault window's
    monotonic start and end, for the coverage figure."""
    found = Findings()
    work = [e for e in entries if e.kind == "work"]
    found.figures["units"] = len(work)
    found.figures["handler_starts"] = sum(1 for e in entries if e.kind == "handler_start")
    if not work:
        found.failures.append("SAFETY (vacuous): the journal holds no work at all: the check "
                              "would pass vacuously")
        return found
    final = max(work, key=lambda e: (e.generation, e.start))
    count = final.count or config.shards
    worked = {e.shard for e in work if e.generation == final.generation}
    missing = set(range(count)) - worked
    if missing:
        found.failures.append(f"LIVENESS: shards of the final generation ({final.generation}, {count} "
                              f"shards) never worked on: {sorted(missing)}")
    found.figures["reshards"] = reshards
    found.figures["generations"] = len({e.generation for e in work})
    violations, fenced = analyse_journal(entries, pauses, config.resume_tolerance,
                                         keys=RESHARD_KEYS if found.figures["generations"] > 1 else ())
    found.fenced = fenced
    found.figures["fenced"] = len(fenced)
    found.figures["max_resume_residual_s"] = round(max((f.residual for f in fenced), default=0.0), 3)
    if window is not None and found.figures["generations"] == 1:
        found.figures["coverage"] = round(work_coverage(entries, window[0], window[1], config.shards), 4)
    found.figures["takeover_after_fault"] = reaction_times(entries, evidence.applied)
    for violation in violations[:20]:
        found.failures.append(evidence.violation(violation, entries))
    if len(violations) > 20:
        found.failures.append(f"SAFETY (more): {len(violations) - 20} more safety violations")
    return found


def judge_object_journal(entries: Sequence[Entry], journal: ObjectJournal, pauses: Sequence[PauseWindow],
                         config: ChaosConfig, evidence: Evidence, *, reshards: int,
                         operator_acts: Mapping[int, Sequence[tuple[float, float]]]) -> Findings:
    """The object workload: the per-object checks (:mod:`shardlease.harness.objectjournal`) over the
    writes, plus the per-shard fence check over the handlers' starts (a new tenure never under a lower
    fence) and every shard of the final generation given a handler."""
    found = Findings()
    starts = [e for e in entries if e.kind == "handler_start"]
    writes = journal.writes
    outcomes = Counter((w.outcome or "unfinished").split(" ")[0] for w in writes)
    found.figures.update({
        "handler_starts": len(starts), "writes": len(writes), "units": outcomes.get("written", 0),
        "write_outcomes": dict(outcomes), "behind_skips": len(journal.behind),
        "refused_by_api_server": outcomes.get("fenced", 0),
        "user_changes": len(journal.changes), "objects": len({c.uid for c in journal.changes}),
        "reshards": reshards, "generations": len({e.generation for e in starts}),
        "reconcile_delay": summarize(reconcile_delays(journal)),
    })
    if not outcomes.get("written"):
        found.failures.append("SAFETY (vacuous): no write was accepted: the checks would pass vacuously")
        return found
    if starts:
        final = max(starts, key=lambda e: (e.generation, e.start))
        count = final.count or config.shards
        missing = set(range(count)) - {e.shard for e in starts if e.generation == final.generation}
        if missing:
            found.failures.append(f"LIVENESS: shards of the final generation ({final.generation}, {count} "
                                  f"shards) never had a handler: {sorted(missing)}")
    violations, fenced = analyse_journal(entries, pauses, config.resume_tolerance,
                                         operator_acts=operator_acts,
                                         renew_deadline=config.timings.renew_deadline)
    found.fenced = fenced
    for violation in violations[:10]:
        found.failures.append(evidence.violation(violation, entries))
    t = config.timings
    judged = classify_write_overlaps(find_write_overlaps(writes), margin=t.lease_duration - t.renew_deadline,
                                     renew_deadline=t.renew_deadline, handler_starts=starts,
                                     operator_acts=operator_acts)
    excused = Counter(j.excuse for j in judged if j.excuse)
    found.figures["write_overlaps_excused"] = dict(excused)
    found.figures["fenced"] = len(fenced) + sum(excused.values())
    found.figures["excused_examples"] = [j.describe() for j in judged if j.excuse][:5]
    bad = [j for j in judged if not j.excuse]
    for overlap in bad[:10]:
        found.failures.append(evidence.object_writes("SAFETY (object overlap)", overlap.describe(),
                                                     (overlap.first, overlap.second)))
    if len(bad) > 10:
        found.failures.append(f"SAFETY (more): {len(bad) - 10} more overlapping writes")
    for problem in check_write_fences(writes)[:10]:
        found.failures.append(f"SAFETY (object fence): {problem}")
    for problem in check_placement(writes)[:10]:
        found.failures.append(f"SAFETY (placement): {problem}")
    return found


def reconcile_failures(problems: Sequence[str]) -> list[str]:
    """The failures for objects not reconciled in time (the first ten, then how many more)."""
    failures = [f"RECONCILE: {problem}" for problem in problems[:10]]
    if len(problems) > 10:
        failures.append(f"RECONCILE: ... and {len(problems) - 10} more objects")
    return failures
