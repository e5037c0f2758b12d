"""What a chaos run did and found, and how it is printed and saved (``chaos-report.json``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardlease.harness.chaos.checkers import FencedEvent
from shardlease.harness.chaos.plan import ChaosConfig, Fault, fault_counts


@dataclass
class ChaosReport:
    """What a run did and found. ``failures`` empty means every check passed."""

    config: ChaosConfig
    work_dir: Path
    plan: list[Fault]
    applied: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fenced: list[FencedEvent] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    exits: list[dict[str, Any]] = field(default_factory=list)
    #: Errors of the dev-server itself (the test harness, not the runtime under test): reported, and
    #: shown in the summary, but not counted as failures of the runtime.
    infrastructure: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        return fault_counts(self.applied)

    def failure_kinds(self) -> dict[str, int]:
        """Failures by category: the prefix of each message (``SAFETY (overlap)``, ``LIVENESS``,
        ``RECOVERY``, ``RETRY STORM``, ``EXIT``, ``LOG ERROR``, ``LEFTOVER``, ``HARNESS``)."""
        kinds: Counter[str] = Counter(f.split(":", 1)[0] for f in self.failures)
        return dict(kinds)

    def reproduce(self) -> str:
        """The bench command that replays this run's plan (every setting the plan depends on)."""
        c, t = self.config, self.config.timings
        server = ""
        if c.devserver == "real":
            server = " --server real" + (f" --apiservers {c.apiservers}" if c.apiservers != 1 else "")
        workload = (f" --workload objects --objects {c.objects} --change-rate {c.change_rate:g}"
                    if c.workload == "objects" else " --workload keys")
        # Weights other than the ones the bench derives from the server and workload (load shifts are
        # opt-in): spelled out, or the rerun would plan other faults.
        derived = ChaosConfig(seed=c.seed, devserver=c.devserver, apiservers=c.apiservers, workload=c.workload,
                              assets=c.assets).weights
        weights = "" if dict(c.weights) == dict(derived) else " --weights " + ",".join(
            f"{kind}={weight:g}" for kind, weight in sorted(c.weights.items()))
        budget = f" --max-write-rate {c.max_write_rate:g}" if c.max_write_rate is not None else ""
        capacities = " --capacities " + ",".join(f"{x:g}" for x in c.capacities) if c.capacities else ""
        return (f"python bench/chaos.py{server} --seed {c.seed} --duration {c.duration:g} --shards {c.shards} "
                f"--initial {c.initial_replicas} --min {c.min_replicas} --max {c.max_replicas} "
                f"--mean-gap {c.mean_gap:g} --lease {t.lease_duration:g} --renew-deadline "
                f"{t.renew_deadline:g} --retry {t.retry_period:g} --drain {c.drain_delay:g}{workload}"
                f"{' --gate' if c.sharded_watch else ''}{weights}{budget}{capacities}")

    def summary(self) -> str:
        lines = [f"chaos seed {self.config.seed}: {'PASS' if self.ok else 'FAIL'} "
                 f"({len(self.failures)} failures{' ' + str(self.failure_kinds()) if self.failures else ''}, "
                 f"{len(self.fenced)} fenced events)",
                 f"faults injected: {self.counts()}",
                 f"reproduce: {self.reproduce()}",
                 f"work dir (journal, faults.jsonl, logs): {self.work_dir}"]
        if self.infrastructure:
            lines.append(f"dev-server errors (harness, not the runtime): {len(self.infrastructure)}; "
                         f"first: {self.infrastructure[0].splitlines()[0][:200]}")
        for key in ("settle_s", "balanced_after_s", "assigned_after_s", "bound_s", "units",
                    "coverage", "max_resume_residual_s", "objects_reconciled_after_s", "write_outcomes",
                    "write_overlaps_excused", "reconcile_delay", "write_budget"):
            if key in self.figures:
                lines.append(f"  {key} = {self.figures[key]}")
        return "\n".join(lines)

    def render_failures(self, limit: int = 8) -> str:
        parts = [self.summary(), ""]
        for i, failure in enumerate(self.failures[:limit], 1):
            parts.append(f"==== failure {i}/{len(self.failures)} ====\n{failure}")
        if len(self.failures) > limit:
            parts.append(f"... and {len(self.failures) - limit} more (see {self.work_dir}/chaos-report.json)")
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.config.seed,
            "ok": self.ok,
            "config": self.config.describe(),
            "fault_counts": self.counts(),
            "planned": len(self.plan),
            "applied": self.applied,
            "failure_kinds": self.failure_kinds(),
            "failures": self.failures,
            "fenced": [f.describe() for f in self.fenced],
            # window_start / window_end are raw monotonic readings, meaningless outside this run.
            "figures": {k: v for k, v in self.figures.items() if k not in ("window_start", "window_end")},
            "exits": self.exits,
            "infrastructure_errors": self.infrastructure,
            "work_dir": str(self.work_dir),
            "reproduce": self.reproduce(),
        }
