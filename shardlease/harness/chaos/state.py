"""The state one chaos run shares between its parts, and the small helpers they all use.

:class:`~shardlease.harness.chaos.run.ChaosRun` is assembled from one class per concern -- applying
faults (:mod:`~shardlease.harness.chaos.faults`), waiting for recovery
(:mod:`~shardlease.harness.chaos.recovery`), judging the run once it is over
(:mod:`~shardlease.harness.chaos.verdict`) -- that all act on the same run: its cluster, its fault log,
its clock anchors. That state lives here, once, with the helpers every part needs (the fault log,
the time conversions between the journal's monotonic clock and the replicas' wall-clock logs, log
excerpts for evidence).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shardlease.harness.chaos.checkers import HandlerTracker
from shardlease.harness.chaos.judge import Evidence
from shardlease.harness.chaos.plan import ChaosConfig, plan_faults
from shardlease.harness.chaos.proxy import ProxyFaults
from shardlease.harness.localcluster import LocalCluster, Replica
from shardlease.harness.objectjournal import ENV_KUBECONFIG, UserWriter


class RunState:
    """One run's configuration, cluster, fault log and bookkeeping, shared by the parts of
    :class:`~shardlease.harness.chaos.run.ChaosRun`."""

    def __init__(self, config: ChaosConfig, work_dir: str | os.PathLike[str],
                 progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.work_dir = Path(work_dir)
        self.progress = progress or (lambda message: None)
        self.plan = plan_faults(config)
        self.fault_log_path = self.work_dir / "faults.jsonl"
        self.cluster: LocalCluster | None = None
        # One anchor pairing the monotonic clock (journal, fault log) with the wall clock (replica logs).
        self._mono0 = time.monotonic()
        self._wall0 = time.time()
        self._window_start = 0.0
        self._applied: list[dict[str, Any]] = []
        self._fault_log_lock = threading.Lock()  # a reshard logs its outcome from a thread of its own
        self._reshards = 0
        self._handlers: HandlerTracker | None = None
        #: (injected latency + jitter now, when the last strong spike ended, how strong it was),
        #: for :meth:`latency_calm`.
        self._latency: tuple[float, float, float] = (0.0, -math.inf, 0.0)
        #: Failures noticed while the faults run (reported with the others at the end).
        self.failures: list[str] = []
        #: Real-server mode: the relay's knobs, the toxiproxy server, and when the last network or
        #: apiserver fault ended (``inf`` while one is on) for :meth:`latency_calm`.
        self.proxy_faults: ProxyFaults | None = None
        self._toxiproxy: Any = None
        self._network_quiet_since = -math.inf
        self._network_faults_on: set[str] = set()
        #: Errors of the relay or control plane while applying faults (harness, not runtime).
        self.infrastructure: list[str] = []
        #: Processes started with a live replica's identity (``duplicate``), by that identity.
        self._duplicates: dict[str, Replica] = {}
        self._duplicate_pids: set[int] = set()
        self._enders: list[threading.Thread] = []
        #: Per shard id, (sent, answered) monotonic times of an operator's delete or overwrite of its Lease.
        self.operator_acts: dict[int, list[tuple[float, float]]] = defaultdict(list)
        self.user: UserWriter | None = None

    @property
    def faults(self) -> Any:
        """The knobs faults are applied with: the dev-server's, or the relay's on the real server."""
        if self.proxy_faults is not None:
            return self.proxy_faults
        assert self.cluster is not None
        return self.cluster.faults

    def wall_of(self, mono: float) -> float:
        return self._wall0 + (mono - self._mono0)

    def mono_of(self, wall: float) -> float:
        return self._mono0 + (wall - self._wall0)

    def latency_calm(self, now: float) -> bool:
        """No injected latency of half the renew deadline or more is on, and the last such spike
        ended longer ago than the renew deadline plus the delay it could still add to a request
        that was in flight when it ended."""
        current, last_strong_end, strong = self._latency
        threshold = self.config.timings.renew_deadline / 2
        if current >= threshold:
            return False
        # Resets, black holes, outages and apiserver crashes (real server) lose answers to writes
        # that did happen, like a strong latency spike: the same grace after the last one ended.
        if self._network_faults_on or now - self._network_quiet_since < \
                self.config.timings.renew_deadline + 2.0:
            return False
        return now - last_strong_end >= self.config.timings.renew_deadline + strong

    def _log_fault(self, kind: str, target: str | None, params: Mapping[str, Any], planned: float | None,
                   note: str = "") -> dict[str, Any]:
        now = time.monotonic()
        record = {
            "t": round(now, 4),
            "offset": round(now - self._window_start, 4),
            "planned": planned,
            "wall": _dt.datetime.fromtimestamp(self.wall_of(now), _dt.timezone.utc).isoformat(),
            "fault": kind, "target": target, "params": dict(params),
        }
        if target and self.cluster is not None:
            try:
                record["pid"] = (self._duplicates[target].pid if kind.startswith("duplicate")
                                 else self._process(target).pid)
            except KeyError:
                pass
        if note:
            record["note"] = note
        with self._fault_log_lock:
            self._applied.append(record)
            with open(self.fault_log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        return record

    def _process(self, identity: str) -> Replica:
        """The newest process of a replica identity, duplicates left aside."""
        assert self.cluster is not None
        for replica in reversed(self.cluster.replicas):
            if replica.identity == identity and replica.pid not in self._duplicate_pids:
                return replica
        raise KeyError(identity)

    def _add_replica(self, identity: str) -> Replica:
        """Start a replica process; the object workload's writes go where its Lease requests go (the
        relay on the real server), so the network faults reach them too."""
        cluster = self.cluster
        assert cluster is not None
        env = {ENV_KUBECONFIG: str(cluster.kubeconfig_of(identity))} if self.config.workload == "objects" else {}
        capacity = self.config.capacity_of(identity)
        extra = ["--capacity", f"{capacity:g}"] if capacity is not None else []
        return cluster.add_replica(identity, env=env, extra_args=extra)

    def evidence(self) -> Evidence:
        """The evidence builder over this run's processes and fault log so far."""
        return Evidence(self.cluster.replicas if self.cluster is not None else [], self._applied,
                        self._window_start, self.wall_of, self.config.lease)

    def log_excerpt(self, replica: Replica, shard: int, lo: float, hi: float, limit: int = 30) -> str:
        """A replica's log lines between two monotonic times that concern ``shard`` or no shard, plus
        the faults applied meanwhile (:meth:`~shardlease.harness.chaos.judge.Evidence.log_excerpt`)."""
        return self.evidence().log_excerpt(replica, shard, lo, hi, limit)
