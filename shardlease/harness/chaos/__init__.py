"""Chaos engine: a seeded fault schedule run against a real group, and the checks that judge it.

Used by the default test suite (``tests/chaos``, about two minutes) and by the long benchmark run
(``bench/chaos.py``). It lives in the package, next to :mod:`shardlease.harness.localcluster` and
:mod:`shardlease.harness.journal` that it is built from, so both entry points import one engine without path
tricks; nothing in the runtime imports it. ``docs/chaos.md`` explains the rules in prose.

One module per role; this package re-exports the names the tests and the bench use:

* :mod:`~shardlease.harness.chaos.plan` -- the fault kinds, :class:`ChaosConfig`, and
  :func:`plan_faults`, a *pure* function from a config (seed included) to the list of :class:`Fault` s
  to apply. The planner simulates the replica set it is going to create (who runs, who is paused,
  partitioned, dead) so every fault is valid when it fires and the replica count stays within bounds.
  The same seed and settings always give the same plan; only the runtime's reactions vary between
  runs of one seed (they depend on thread scheduling). :func:`convergence_bound` is the recovery bound.
* :mod:`~shardlease.harness.chaos.run` -- :class:`ChaosRun` starts a
  :class:`~shardlease.harness.localcluster.LocalCluster` whose replicas run the journaling handler
  (:mod:`~shardlease.harness.chaos.handlers`), applies the plan in real time while writing a fault log
  (``<work_dir>/faults.jsonl``, next to the ``journal`` directory), then stops the faults and measures
  how the group recovers. It is made of one part per concern: applying faults
  (:mod:`~shardlease.harness.chaos.faults`, with :mod:`~shardlease.harness.chaos.proxy` for the real
  server), waiting for recovery (:mod:`~shardlease.harness.chaos.recovery`) and judging the finished
  run (:mod:`~shardlease.harness.chaos.verdict`), over one shared state
  (:mod:`~shardlease.harness.chaos.state`).
* the checks -- :mod:`~shardlease.harness.chaos.checkers` (pure, or reading files only):
  :func:`analyse_journal` over the merged journals with the rule for frozen replicas, the log scans,
  the figures; :class:`IdleHolderWatch` (:mod:`~shardlease.harness.chaos.idlewatch`) while the faults
  run; the recovery wait afterwards; then the replicas' logs, exit codes and processes. Every failure
  carries its evidence: the shard, the replicas, the intervals, the faults around that time and the
  replicas' log lines around that time. :class:`ChaosReport` (:mod:`~shardlease.harness.chaos.report`)
  holds the outcome.

Two servers. With ``devserver="thread"``/``"process"`` the faults are the dev-server's own knobs. With
``devserver="real"`` the group runs on a real etcd + kube-apiserver and the replicas reach it through
``toxiproxy`` (:class:`ProxyFaults`): latency, connection resets, black-holed connections that time out
and a total outage are toxics on that relay, and restarting kube-apiserver (etcd kept) is a fault of
its own. ``apiservers=2`` (the high-availability variant) adds a second kube-apiserver on the same etcd
that half the replicas use directly, and a fault that kills it for a while. The dev-server-only kinds
(injected HTTP errors, watch cuts and freezes, per-client partitions) are refused there: toxiproxy works
on TCP, below HTTP, and there is one relay for every replica (see docs/chaos.md, "Real-server mode").
"""

from __future__ import annotations

from shardlease.harness.chaos.checkers import (
    RESHARD_KEYS,
    FencedEvent,
    HandlerTracker,
    PauseWindow,
    Violation,
    analyse_journal,
    live_handlers,
    pause_windows,
    reaction_times,
    recheck_objects,
    retry_storms,
    scan_log,
    work_coverage,
)
from shardlease.harness.chaos.handlers import DRAINING_HANDLER, OBJECT_HANDLER, draining_handle
from shardlease.harness.chaos.idlewatch import IdleHolderWatch
from shardlease.harness.chaos.plan import (
    ALL_FAULT_KINDS,
    DEFAULT_WEIGHTS,
    DEV_ONLY_KINDS,
    END_KINDS,
    ENV_SEED,
    FAULT_KINDS,
    HA_WEIGHTS,
    LOAD_KINDS,
    OPERATOR_KINDS,
    REAL_END_KINDS,
    REAL_FAULT_KINDS,
    REAL_WEIGHTS,
    RESTART_DELAY,
    WATCH_MAX_BACKOFF,
    ChaosConfig,
    Fault,
    convergence_bound,
    fault_counts,
    plan_faults,
    seed_from_env,
)
from shardlease.harness.chaos.proxy import ProxyFaults
from shardlease.harness.chaos.report import ChaosReport
from shardlease.harness.chaos.run import ChaosRun

__all__ = [
    "ALL_FAULT_KINDS",
    "DEFAULT_WEIGHTS",
    "DEV_ONLY_KINDS",
    "DRAINING_HANDLER",
    "END_KINDS",
    "ENV_SEED",
    "FAULT_KINDS",
    "HA_WEIGHTS",
    "LOAD_KINDS",
    "OBJECT_HANDLER",
    "OPERATOR_KINDS",
    "REAL_END_KINDS",
    "REAL_FAULT_KINDS",
    "REAL_WEIGHTS",
    "RESHARD_KEYS",
    "RESTART_DELAY",
    "WATCH_MAX_BACKOFF",
    "ChaosConfig",
    "ChaosReport",
    "ChaosRun",
    "Fault",
    "FencedEvent",
    "HandlerTracker",
    "IdleHolderWatch",
    "PauseWindow",
    "ProxyFaults",
    "Violation",
    "analyse_journal",
    "convergence_bound",
    "draining_handle",
    "fault_counts",
    "live_handlers",
    "pause_windows",
    "plan_faults",
    "reaction_times",
    "recheck_objects",
    "retry_storms",
    "scan_log",
    "seed_from_env",
    "work_coverage",
]
