"""Judging a chaos run once its cluster has stopped: exits, leftovers, logs and the journals.

Each check appends its failures, with their evidence (the entries, the faults around that time and
the replicas' log lines), to the :class:`~shardlease.harness.chaos.report.ChaosReport`; the rules
themselves are in :mod:`shardlease.harness.chaos.checkers`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from shardlease.harness.chaos.checkers import (
    DUPLICATE_REFUSAL,
    RESHARD_KEYS,
    Violation,
    analyse_journal,
    pause_windows,
    reaction_times,
    retry_storms,
    scan_log,
    work_coverage,
)
from shardlease.harness.chaos.report import ChaosReport
from shardlease.harness.chaos.state import RunState
from shardlease.harness.journal import Entry, load_journal, shard_history
from shardlease.harness.localcluster import child_processes
from shardlease.harness.objectjournal import (
    ObjectWrite,
    check_placement,
    check_write_fences,
    classify_write_overlaps,
    find_write_overlaps,
    load_object_journal,
    reconcile_delays,
    summarize,
)


class RunChecks(RunState):
    """The checks that run after the cluster stopped, filling the report's failures and figures."""

    def _check_routes(self, report: ChaosReport) -> None:
        """Real server: every replica's kubeconfig named the relay (or the second apiserver), never
        kube-apiserver's own port, or the network faults would have missed it."""
        cluster = self.cluster
        if cluster is None or self.proxy_faults is None:
            return
        allowed = {self.proxy_faults.proxy.url}
        if self.proxy_faults.extra is not None:
            allowed.add(self.proxy_faults.extra.url)
        routes: dict[str, str] = {}
        for replica in cluster.replicas:
            argv = replica.argv
            path = Path(argv[argv.index("--kubeconfig") + 1])
            try:
                server = json.loads(path.read_text())["clusters"][0]["cluster"]["server"]
            except (OSError, ValueError, KeyError, IndexError) as exc:
                server = f"unreadable ({exc!r})"
            routes[replica.identity] = server
            if server not in allowed:
                report.failures.append(f"HARNESS: replica {replica.identity}'s kubeconfig {path} points "
                                       f"at {server}, not at the fault relay {sorted(allowed)}")
        report.figures["replica_servers"] = routes

    def _check_processes(self, report: ChaosReport, before: set[int]) -> None:
        cluster = self.cluster
        assert cluster is not None
        left = cluster.leftover_processes()
        if left:
            report.failures.append(f"LEFTOVER: processes left behind: {left}")
        extra = set(child_processes()) - before
        if extra:
            report.failures.append(f"LEFTOVER: child processes still running after stop: {sorted(extra)}")
        for replica in cluster.replicas:
            sent = [name for _, name in replica.signals]
            code = replica.returncode
            report.exits.append({"identity": replica.identity, "pid": replica.pid, "code": code,
                                 "signals": sent, "log": str(replica.log_path)})
            if "SIGKILL" in sent:
                continue  # we killed it: any exit status is ours
            if code == 0 and "SIGTERM" in sent:
                continue
            why = ("exited on its own" if "SIGTERM" not in sent
                   else "did not exit cleanly after SIGTERM (a -9 means stop() had to SIGKILL it)")
            report.failures.append(
                f"EXIT: replica {replica.identity} (pid {replica.pid}) {why}: exit code {code}\n"
                f"--- {replica.log_path} (tail) ---\n{replica.log_tail(40)}")

    def _check_logs(self, report: ChaosReport) -> None:
        cluster = self.cluster
        assert cluster is not None
        refusals = 0
        for replica in cluster.replicas:
            text = replica.log_text()
            if replica.identity in self._duplicates:
                # The refusal of a second process with a live identity is an ERROR by design (a
                # misconfiguration to fix), and this run caused it on purpose: counted, not failed.
                kept = [line for line in text.splitlines() if not DUPLICATE_REFUSAL.search(line)]
                refusals += len(text.splitlines()) - len(kept)
                text = "\n".join(kept)
            for finding in scan_log(text):
                report.failures.append(
                    f"LOG ERROR: replica {replica.identity} (pid {replica.pid}) logged an error or traceback "
                    f"({replica.log_path}):\n{finding}")
            for storm in retry_storms(text):
                report.failures.append(
                    f"RETRY STORM: replica {replica.identity} (pid {replica.pid}) retried a failing "
                    f"write far faster than its retry policy allows ({replica.log_path}):\n{storm}")

        report.figures["duplicate_refusals_logged"] = refusals

    def _check_journal(self, report: ChaosReport) -> None:
        if self.config.workload == "objects":
            self._check_object_journal(report)
            return
        cluster = self.cluster
        assert cluster is not None
        entries = load_journal(cluster.journal_dir)
        work = [e for e in entries if e.kind == "work"]
        report.figures["units"] = len(work)
        report.figures["handler_starts"] = sum(1 for e in entries if e.kind == "handler_start")
        if not work:
            report.failures.append("SAFETY (vacuous): the journal holds no work at all: the check "
                                   "would pass vacuously")
            return
        final = max(work, key=lambda e: (e.generation, e.start))
        count = final.count or self.config.shards
        worked = {e.shard for e in work if e.generation == final.generation}
        missing = set(range(count)) - worked
        if missing:
            report.failures.append(f"LIVENESS: shards of the final generation ({final.generation}, {count} "
                                   f"shards) never worked on: {sorted(missing)}")
        report.figures["reshards"] = self._reshards
        report.figures["generations"] = len({e.generation for e in work})
        pauses = pause_windows(cluster.replicas)
        violations, fenced = analyse_journal(entries, pauses, self.config.resume_tolerance,
                                             keys=RESHARD_KEYS if report.figures["generations"] > 1 else ())
        report.fenced = fenced
        report.figures["fenced"] = len(fenced)
        report.figures["max_resume_residual_s"] = round(max((f.residual for f in fenced), default=0.0), 3)
        if "window_end" in report.figures and report.figures["generations"] == 1:
            report.figures["coverage"] = round(work_coverage(
                entries, report.figures["window_start"], report.figures["window_end"],
                self.config.shards), 4)
        report.figures["takeover_after_fault"] = reaction_times(entries, self._applied)
        for violation in violations[:20]:
            report.failures.append(self.evidence(violation, entries))
        if len(violations) > 20:
            report.failures.append(f"SAFETY (more): {len(violations) - 20} more safety violations")

    def _check_object_journal(self, report: ChaosReport) -> None:
        """The per-object checks (:mod:`shardlease.harness.objectjournal`) over the writes, plus the
        per-shard fence check over the handlers' starts (a new tenure never under a lower fence)."""
        cluster = self.cluster
        assert cluster is not None
        entries = load_journal(cluster.journal_dir)
        journal = load_object_journal(cluster.journal_dir)
        starts = [e for e in entries if e.kind == "handler_start"]
        writes = journal.writes
        outcomes = Counter((w.outcome or "unfinished").split(" ")[0] for w in writes)
        report.figures.update({
            "handler_starts": len(starts), "writes": len(writes), "units": outcomes.get("written", 0),
            "write_outcomes": dict(outcomes), "behind_skips": len(journal.behind),
            "user_changes": len(journal.changes), "objects": len({c.uid for c in journal.changes}),
            "reshards": self._reshards, "generations": len({e.generation for e in starts}),
            "reconcile_delay": summarize(reconcile_delays(journal)),
        })
        if not outcomes.get("written"):
            report.failures.append("SAFETY (vacuous): no write was accepted: the checks would pass vacuously")
            return
        if starts:
            final = max(starts, key=lambda e: (e.generation, e.start))
            count = final.count or self.config.shards
            missing = set(range(count)) - {e.shard for e in starts if e.generation == final.generation}
            if missing:
                report.failures.append(f"LIVENESS: shards of the final generation ({final.generation}, {count} "
                                       f"shards) never had a handler: {sorted(missing)}")
        pauses = pause_windows(cluster.replicas)
        violations, fenced = analyse_journal(entries, pauses, self.config.resume_tolerance,
                                             operator_acts=self.operator_acts,
                                             renew_deadline=self.config.timings.renew_deadline)
        report.fenced = fenced
        for violation in violations[:10]:
            report.failures.append(self.evidence(violation, entries))
        t = self.config.timings
        judged = classify_write_overlaps(find_write_overlaps(writes), margin=t.lease_duration - t.renew_deadline,
                                         renew_deadline=t.renew_deadline, handler_starts=starts,
                                         operator_acts=self.operator_acts)
        excused = Counter(j.excuse for j in judged if j.excuse)
        report.figures["write_overlaps_excused"] = dict(excused)
        report.figures["fenced"] = len(fenced) + sum(excused.values())
        report.figures["excused_examples"] = [j.describe() for j in judged if j.excuse][:5]
        bad = [j for j in judged if not j.excuse]
        for overlap in bad[:10]:
            report.failures.append(self.object_evidence("SAFETY (object overlap)", overlap.describe(),
                                                        (overlap.first, overlap.second)))
        if len(bad) > 10:
            report.failures.append(f"SAFETY (more): {len(bad) - 10} more overlapping writes")
        for problem in check_write_fences(writes)[:10]:
            report.failures.append(f"SAFETY (object fence): {problem}")
        for problem in check_placement(writes)[:10]:
            report.failures.append(f"SAFETY (placement): {problem}")

    def object_evidence(self, title: str, detail: str, writes: Sequence[ObjectWrite]) -> str:
        """A per-object failure with the faults around it and both writers' log lines."""
        cluster = self.cluster
        assert cluster is not None
        lease = self.config.lease
        lo, hi = min(w.start for w in writes) - 2 * lease - 1.0, max(w.end for w in writes) + lease
        parts = [f"{title}: {detail}", f"faults from +{lo - self._window_start:.2f}s to "
                 f"+{hi - self._window_start:.2f}s:"]
        parts.extend(self.faults_between(lo, hi) or ["  (none)"])
        pids = {(w.identity, w.pid): w.shard for w in writes}
        for replica in cluster.replicas:
            if (replica.identity, replica.pid) in pids:
                parts.append(self.log_excerpt(replica, pids[(replica.identity, replica.pid)], lo + lease, hi))
        return "\n".join(parts)

    def evidence(self, violation: Violation, entries: Sequence[Entry]) -> str:
        """The shard, the replicas, the intervals, the faults around that time and the replicas' log
        lines around that time, for one violation."""
        cluster = self.cluster
        assert cluster is not None
        lease = self.config.lease
        lo, hi = violation.start - 2 * lease - 1.0, violation.end + lease
        parts = [f"SAFETY ({violation.kind}) shard {violation.shard}: {violation.detail}"]
        for e in violation.entries:
            parts.append(f"  {e.describe()}  (window +{e.start - self._window_start:.3f}s)")
        parts.append(shard_history(entries, violation.shard, limit=12))
        parts.append(f"faults from +{lo - self._window_start:.2f}s to +{hi - self._window_start:.2f}s:")
        near = self.faults_between(lo, hi)
        parts.extend(near)
        if not near:
            parts.append("  (none)")
        pids = {(e.identity, e.pid) for e in violation.entries}
        for replica in cluster.replicas:
            if (replica.identity, replica.pid) in pids:
                parts.append(self.log_excerpt(replica, violation.shard, lo + lease, hi))
        return "\n".join(parts)
