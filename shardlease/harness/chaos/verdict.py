"""Judging a chaos run once its cluster has stopped: exits, leftovers, logs and the journals.

Each check appends its failures, with their evidence (the entries, the faults around that time and
the replicas' log lines), to the :class:`~shardlease.harness.chaos.report.ChaosReport`. The judging
over journals and logs is :mod:`shardlease.harness.chaos.judge`, the same code the standalone recheck of
a work directory runs (:mod:`shardlease.harness.chaos.workdir`); the rules themselves are in
:mod:`shardlease.harness.chaos.checkers`.
"""

from __future__ import annotations

import json
from pathlib import Path

from shardlease.harness.chaos.checkers import pause_windows
from shardlease.harness.chaos.judge import (
    ProcessRecord,
    judge_exits,
    judge_key_journal,
    judge_logs,
    judge_object_journal,
)
from shardlease.harness.chaos.report import ChaosReport
from shardlease.harness.chaos.state import RunState
from shardlease.harness.journal import load_journal
from shardlease.harness.localcluster import child_processes
from shardlease.harness.objectjournal import load_object_journal


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

    def process_records(self) -> list[ProcessRecord]:
        """Every replica process of the run, as the checks (and ``chaos-report.json``) record it."""
        cluster = self.cluster
        assert cluster is not None
        return [ProcessRecord(r.identity, r.pid, r.log_path, r.returncode, tuple(r.signals))
                for r in cluster.replicas]

    def _check_processes(self, report: ChaosReport, before: set[int]) -> None:
        cluster = self.cluster
        assert cluster is not None
        left = cluster.leftover_processes()
        if left:
            report.failures.append(f"LEFTOVER: processes left behind: {left}")
        extra = set(child_processes()) - before
        if extra:
            report.failures.append(f"LEFTOVER: child processes still running after stop: {sorted(extra)}")
        records = self.process_records()
        for replica in records:
            # The signals with their times too: the standalone recheck rebuilds the freezes from them.
            report.exits.append({"identity": replica.identity, "pid": replica.pid, "code": replica.code,
                                 "signals": [name for _, name in replica.signals],
                                 "signal_times": [[at, name] for at, name in replica.signals],
                                 "log": str(replica.log_path)})
        report.failures.extend(judge_exits(records))

    def _check_logs(self, report: ChaosReport) -> None:
        cluster = self.cluster
        assert cluster is not None
        found = judge_logs(cluster.replicas, set(self._duplicates))
        report.failures.extend(found.failures)
        report.figures.update(found.figures)

    def _check_journal(self, report: ChaosReport) -> None:
        cluster = self.cluster
        assert cluster is not None
        entries = load_journal(cluster.journal_dir)
        pauses = pause_windows(cluster.replicas)
        if self.config.workload == "objects":
            found = judge_object_journal(entries, load_object_journal(cluster.journal_dir), pauses, self.config,
                                         self.evidence(), reshards=self._reshards,
                                         operator_acts=self.operator_acts)
        else:
            window = (report.figures["window_start"], report.figures["window_end"]) \
                if "window_end" in report.figures else None
            found = judge_key_journal(entries, pauses, self.config, self.evidence(), reshards=self._reshards,
                                      window=window)
        report.figures.update(found.figures)
        report.fenced = found.fenced
        report.failures.extend(found.failures)
