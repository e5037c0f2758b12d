"""Chaos engine: a seeded fault schedule run against a real group, and the checks that judge it.

Used by the default test suite (``tests/chaos``, about two minutes) and by the long benchmark run
(``bench/chaos.py``). It lives in the package, next to :mod:`shardlease.harness.localcluster` and
:mod:`shardlease.harness.journal` that it is built from, so both entry points import one engine without path
tricks; nothing in the runtime imports it. ``docs/chaos.md`` explains the rules in prose.

Three parts:

* :func:`plan_faults` -- a *pure* function from a :class:`ChaosConfig` (seed included) to the list of
  :class:`Fault` s to apply. The planner simulates the replica set it is going to create (who runs,
  who is paused, partitioned, dead) so every fault is valid when it fires and the replica count stays
  within bounds. The same seed and settings always give the same plan; only the runtime's reactions
  vary between runs of one seed (they depend on thread scheduling).
* :class:`ChaosRun` -- starts a :class:`~shardlease.harness.localcluster.LocalCluster` whose replicas run
  the journaling handler, applies the plan in real time while writing a fault log
  (``<work_dir>/faults.jsonl``, next to the ``journal`` directory), then stops the faults and measures
  how the group recovers.
* the checks -- :func:`analyse_journal` (pure) over the merged journals, :class:`IdleHolderWatch`
  while the faults run, the recovery wait afterwards, then the replicas' logs, exit codes and
  processes. Every failure carries its evidence: the shard, the replicas, the intervals, the faults
  around that time and the replicas' log lines around that time.

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

import datetime as _dt
import heapq
import json
import logging
import math
import os
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shardlease.core.groupview import GroupView
from shardlease.core.reactor import FALLBACK_HOLD_MAX_DOUBLINGS
from shardlease.harness.journal import (
    Entry,
    check_tokens,
    find_key_overlaps,
    find_overlaps,
    load_journal,
    shard_history,
)
from shardlease.harness.localcluster import DEFAULT_HANDLER, LocalCluster, Replica, Snapshot, Timings, child_processes
from shardlease.harness.objectjournal import (
    ANNOTATION_BY,
    ANNOTATION_FENCE,
    ANNOTATION_VERSION,
    ENV_DRAIN,
    ENV_KUBECONFIG,
    ENV_NAMESPACE,
    ObjectWrite,
    UserWriter,
    check_placement,
    check_reconciled,
    check_write_fences,
    classify_write_overlaps,
    find_write_overlaps,
    load_object_journal,
    object_shard,
    reconcile_delays,
    summarize,
)

__all__ = [
    "ChaosConfig",
    "ChaosReport",
    "ChaosRun",
    "DRAINING_HANDLER",
    "ENV_SEED",
    "ALL_FAULT_KINDS",
    "DEV_ONLY_KINDS",
    "FAULT_KINDS",
    "HA_WEIGHTS",
    "OBJECT_HANDLER",
    "OPERATOR_KINDS",
    "ProxyFaults",
    "REAL_FAULT_KINDS",
    "REAL_WEIGHTS",
    "Fault",
    "FencedEvent",
    "HandlerTracker",
    "IdleHolderWatch",
    "PauseWindow",
    "RESTART_DELAY",
    "Violation",
    "analyse_journal",
    "convergence_bound",
    "draining_handle",
    "fault_counts",
    "live_handlers",
    "pause_windows",
    "recheck_objects",
    "plan_faults",
    "reaction_times",
    "retry_storms",
    "scan_log",
    "seed_from_env",
    "work_coverage",
]

ENV_SEED = "SHARDLEASE_CHAOS_SEED"

#: Faults the planner draws from. Each "start" fault that lasts has a matching end event in the plan
#: (``resume``, ``heal``, ``latency_end``, ``errors_end``, ``unfreeze_watches``).
FAULT_KINDS = ("kill", "terminate", "pause", "restart", "scale_up", "latency", "errors",
               "cut_watches", "freeze_watches", "partition", "reshard", "delete_lease", "overwrite_lease",
               "duplicate")
END_KINDS = ("resume", "heal", "latency_end", "errors_end", "unfreeze_watches", "duplicate_end")
#: An operator's hand on the group's Leases (``kubectl delete lease`` / ``kubectl edit lease``), and a
#: second process started with a live replica's identity: faults of both servers.
OPERATOR_KINDS = ("delete_lease", "overwrite_lease", "duplicate")

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "kill": 1.0, "terminate": 1.0, "pause": 1.2, "restart": 1.0, "scale_up": 1.0, "latency": 1.0,
    "errors": 1.0, "cut_watches": 0.8, "freeze_watches": 0.5, "partition": 1.0, "reshard": 0.5,
    "delete_lease": 0.5, "overwrite_lease": 0.5, "duplicate": 0.5,
}

#: Faults only the real-server mode injects: toxics on the relay in front of kube-apiserver
#: (``resets``: connections reset by peer; ``timeouts``: connections black-holed, then closed;
#: ``outage``: the relay disabled, longer than the lease), a kube-apiserver crash and restart with etcd
#: kept, and (``apiservers=2``) the second kube-apiserver killed for a while.
REAL_FAULT_KINDS = ("resets", "timeouts", "outage", "apiserver_restart", "apiserver_kill")
REAL_END_KINDS = ("resets_end", "timeouts_end", "outage_end", "apiserver_start")
#: The dev-server's own knobs, which have no equivalent on a real kube-apiserver behind one relay.
DEV_ONLY_KINDS = ("errors", "cut_watches", "freeze_watches", "partition")
ALL_FAULT_KINDS = FAULT_KINDS + REAL_FAULT_KINDS

REAL_WEIGHTS: Mapping[str, float] = {
    "kill": 1.0, "terminate": 1.0, "pause": 1.2, "restart": 1.0, "scale_up": 1.0, "latency": 1.0,
    "resets": 0.8, "timeouts": 0.6, "outage": 0.35, "apiserver_restart": 0.35, "reshard": 0.5,
    "delete_lease": 0.5, "overwrite_lease": 0.5, "duplicate": 0.5,
}
HA_WEIGHTS: Mapping[str, float] = {**REAL_WEIGHTS, "apiserver_kill": 0.6}

#: A dead replica's identity is reused (a container restart keeps the pod name) no sooner than this
#: after it was killed or terminated; the runner also waits for the old process to be gone, since two
#: live processes with one identity is not something Kubernetes does (pod names are unique).
RESTART_DELAY = 3.0

#: Longest the runner waits for a process it is about to SIGTERM to catch the signal (a replica started
#: a moment ago has not installed its handler yet; on a loaded 2-core machine that took up to 10 s).
SIGTERM_READY_TIMEOUT = 20.0

#: Longest a watcher waits between failed attempts (``LeaseWatcher(max_backoff=5.0)`` in cache.py).
WATCH_MAX_BACKOFF = 5.0


def seed_from_env(default: int | None = None) -> int:
    """``$SHARDLEASE_CHAOS_SEED`` if set, else ``default``, else a fresh random seed (printed by the
    callers, so any run can be repeated)."""
    raw = os.environ.get(ENV_SEED, "").strip()
    if raw:
        return int(raw)
    if default is not None:
        return default
    return random.SystemRandom().randrange(1, 2**31)


DRAINING_HANDLER = "shardlease.harness.chaos:draining_handle"
#: The object workload's handler: a ConfigMap controller on ``shard.objects()`` (clean-up included).
OBJECT_HANDLER = "shardlease.harness.objectjournal:handle"


def draining_handle(shard: Any) -> None:
    """The journaling handler followed by ``$SHARDLEASE_CHAOS_DRAIN`` seconds of clean-up once the
    runtime stops it -- a handler that flushes or closes something before returning, which
    ``drain_timeout`` exists for. No unit of work is journaled during the clean-up (the journal's
    ``handler_stop`` is written before it), so it cannot show up as overlapping work; what it does
    is keep the Lease held by a replica that no longer works on the shard for that long."""
    from shardlease.harness.journal import handle

    try:
        handle(shard)
    finally:
        delay = float(os.environ.get(ENV_DRAIN, "0") or 0)
        if delay > 0:
            time.sleep(delay)


# --------------------------------------------------------------------------------------------------
# Configuration and plan
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosConfig:
    """Everything a chaos run depends on. Same config (seed included) -> same fault plan.

    ``duration`` is the fault window only; set-up before it and recovery after it come on top.
    ``mean_gap`` is the mean time between two injected faults (exponentially distributed).
    ``resume_tolerance`` is how long after a SIGCONT a frozen replica may still be finishing the unit
    it was frozen in (see the module docstring); it never excuses anything else.
    ``noise_allowance`` is added to the derived convergence bound because the machine is shared and
    small; it is reported separately so the derived figure stays honest.
    """

    seed: int
    duration: float = 70.0
    shards: int = 16
    initial_replicas: int = 3
    min_replicas: int = 3
    max_replicas: int = 5
    timings: Timings = Timings(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3,
                               drain_timeout=5.0)
    mean_gap: float = 2.0
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    work_unit: float = 0.05
    resume_tolerance: float = 0.5
    noise_allowance: float = 6.0
    stability: float | None = None
    group: str = "chaos"
    #: ``"thread"`` / ``"process"``: the dev-server; ``"real"``: kube-apiserver behind toxiproxy
    #: (the default weights then become :data:`REAL_WEIGHTS`, or :data:`HA_WEIGHTS` with two apiservers).
    devserver: str = "thread"
    #: kube-apiservers on the one etcd (``"real"`` only): 2 is the high-availability variant.
    apiservers: int = 1
    #: The kube-apiserver/etcd/toxiproxy binaries (``"real"`` only; default ``find_assets()``).
    assets: str | None = None
    handler: str = DEFAULT_HANDLER
    #: Seconds each handler spends cleaning up after the runtime stops it (0: return at once). The
    #: runtime keeps the Lease until the handler has returned, so this keeps every handoff window
    #: open long enough for membership to change again in the middle of it (a reversed handoff).
    drain_delay: float = 0.25
    #: ``"objects"``: the replicas reconcile ConfigMaps through ``shard.objects()`` while a user keeps
    #: changing them (:mod:`shardlease.harness.objectjournal`), judged per object; ``"keys"``: the
    #: journaling handler's units of work, judged per shard and per key (the operator faults are then
    #: left out of the default weights, so the plans of its published seeds are unchanged).
    workload: str = "objects"
    #: ConfigMaps of the object workload, and how many changes a second the user makes to them.
    objects: int = 32
    change_rate: float = 4.0
    #: The ``ShardedListAndWatch`` feature gate of the server: the API server filters object streams.
    sharded_watch: bool = False
    #: Seconds on top of the recovery bound for the final holders to list their objects and write
    #: each one (the object workload's reconcile bound).
    object_allowance: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= initial_replicas <= max_replicas")
        if self.devserver not in ("thread", "process", "real"):
            raise ValueError(f"devserver: {self.devserver!r} is not 'thread', 'process' or 'real'")
        if self.apiservers not in (1, 2) or (self.apiservers == 2 and self.devserver != "real"):
            raise ValueError(f"apiservers: {self.apiservers!r}; 1, or 2 with devserver='real' (the "
                             f"high-availability variant)")
        if self.workload not in ("objects", "keys"):
            raise ValueError(f"workload: {self.workload!r} is not 'objects' or 'keys'")
        if self.workload == "objects" and (self.objects < 1 or not self.change_rate > 0):
            raise ValueError(f"objects ({self.objects}) and change_rate ({self.change_rate}) must be positive")
        if self.devserver == "real" and dict(self.weights) == dict(DEFAULT_WEIGHTS):
            object.__setattr__(self, "weights",
                               dict(HA_WEIGHTS if self.apiservers == 2 else REAL_WEIGHTS))
        if self.workload == "keys" and dict(self.weights) in (dict(DEFAULT_WEIGHTS), dict(REAL_WEIGHTS),
                                                              dict(HA_WEIGHTS)):
            object.__setattr__(self, "weights", {k: (0.0 if k in OPERATOR_KINDS else w)
                                                 for k, w in self.weights.items()})
        unknown = set(self.weights) - set(ALL_FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds in weights: {sorted(unknown)}")
        active = {k for k, w in self.weights.items() if w > 0}
        if self.devserver == "real":
            refused = sorted(active & set(DEV_ONLY_KINDS))
            if refused:
                raise ValueError(f"weights: {refused} need the dev-server's fault injection; on the "
                                 f"real server use resets / timeouts / outage (see REAL_WEIGHTS)")
            if "apiserver_kill" in active and self.apiservers != 2:
                raise ValueError("weights: apiserver_kill needs a second kube-apiserver (apiservers=2)")
        else:
            refused = sorted(active & set(REAL_FAULT_KINDS))
            if refused:
                raise ValueError(f"weights: {refused} are real-server faults; pass devserver='real'")
        margin = self.timings.lease_duration - self.timings.renew_deadline
        if self.work_unit >= margin / 2:
            raise ValueError(f"work unit {self.work_unit}s is not well below lease - renew deadline "
                             f"({margin:g}s)")

    @property
    def lease(self) -> float:
        return float(math.ceil(self.timings.lease_duration))

    @property
    def handoff_grace(self) -> float:
        grace = self.timings.handoff_grace
        return float(grace) if grace is not None else 2 * self.timings.retry_period

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["timings"] = {k: v for k, v in vars(self.timings).items() if v is not None}
        data["weights"] = dict(self.weights)
        return data


@dataclass(frozen=True)
class Fault:
    """One planned action, ``at`` seconds after the fault window opened."""

    at: float
    kind: str
    target: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        target = f" {self.target}" if self.target else ""
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"+{self.at:7.3f}s {self.kind}{target}{' ' + params if params else ''}"


def convergence_bound(config: ChaosConfig) -> dict[str, float]:
    """How long after the faults stop the group may take to be whole and balanced again, derived from
    the runtime's rules (see docs/chaos.md, "Recovery bound"):

    * every watcher is listening again after at most ``WATCH_MAX_BACKOFF`` (its capped backoff), while
      Leases of dead replicas (shards and members) expire ``lease`` after they were last seen to
      change; after ``max(watch, lease)`` every replica agrees on the members;
    * a shard taken as a grace fallback before that is kept at most ``lease`` x 2 ** the reactor's
      ``FALLBACK_HOLD_MAX_DOUBLINGS`` longer (the hold doubles while its owner keeps failing, and an
      owner blinded by the faults counts as failing), then released;
    * a free shard waits at most ``handoff_grace`` for its desired owner;
    * moving a shard is a handler stop (plus ``drain_delay`` of clean-up) and two writes: a few
      retry periods.
    """
    t = config.timings
    watch = WATCH_MAX_BACKOFF
    hold = config.lease * 2 ** FALLBACK_HOLD_MAX_DOUBLINGS
    derived = (max(watch, config.lease) + hold + config.handoff_grace + 3 * t.retry_period
               + config.drain_delay)
    return {"derived": derived, "noise_allowance": config.noise_allowance,
            "asserted": derived + config.noise_allowance}


@dataclass
class _Model:
    """The planner's picture of the replica set (what the runner will have created)."""

    alive: dict[str, str] = field(default_factory=dict)  # identity -> "running" | "paused"
    dead: dict[str, float] = field(default_factory=dict)  # identity -> when it was killed/terminated
    partitioned: set[str] = field(default_factory=set)
    next_index: int = 0
    latency_until: float = -1.0
    errors_until: float = -1.0
    frozen_until: float = -1.0
    network_until: float = -1.0   # resets / timeouts / outage: one at a time (real server)
    apiserver_until: float = -1.0  # a restart or kill of a kube-apiserver, plus time to settle
    shards: int = 0                # the group's count after the reshards planned so far
    reshard_until: float = -1.0    # reshards are at least three leases apart
    duplicated: set[str] = field(default_factory=set)  # identities a second process runs under


def plan_faults(config: ChaosConfig) -> list[Fault]:
    """The fault plan for ``config``: sorted by time, each fault valid in the state it fires in.

    Invariants (tested with hypothesis): the number of live replica processes stays within
    ``[min_replicas, max_replicas]``; a replica is never paused or partitioned twice at once; every
    pause is ended by a resume, kill or terminate, every partition by a heal, every latency / error
    burst / watch freeze by its end event -- at the latest when the window closes.
    """
    rng = random.Random(config.seed)
    lease = config.lease
    model = _Model(shards=config.shards)
    for _ in range(config.initial_replicas):
        model.alive[f"replica-{model.next_index}"] = "running"
        model.next_index += 1
    plan: list[Fault] = []
    pending: list[tuple[float, int, Fault]] = []  # end events, by time
    seq = 0

    def schedule_end(at: float, fault: Fault) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(pending, (min(at, config.duration), seq, fault))

    def apply_end(fault: Fault) -> None:
        target = fault.target
        if fault.kind == "resume":
            if target in model.alive and model.alive[target] == "paused":
                model.alive[target] = "running"
                plan.append(fault)
        elif fault.kind == "heal":
            if target in model.partitioned:
                model.partitioned.discard(target)
                plan.append(fault)
        elif fault.kind == "duplicate_end":
            model.duplicated.discard(target or "")
            plan.append(fault)
        else:
            plan.append(fault)

    def r3(x: float) -> float:
        return round(x, 3)

    def end_at(x: float) -> float:
        return min(r3(x), config.duration)

    t = 0.0
    while True:
        t += max(0.25, rng.expovariate(1.0 / config.mean_gap))
        if t >= config.duration:
            break
        while pending and pending[0][0] <= t:
            apply_end(heapq.heappop(pending)[2])
        alive = sorted(model.alive)
        # A replica running beside a duplicate of its identity is left alone until the duplicate is
        # gone: a signal would reach the newest process of that name.
        usable = [i for i in alive if model.alive[i] == "running" and i not in model.partitioned
                  and i not in model.duplicated]
        killable = [i for i in alive if i not in model.duplicated]
        feasible: dict[str, float] = {}
        for kind, weight in config.weights.items():
            ok = {
                "kill": len(alive) > config.min_replicas and bool(killable),
                "terminate": len(alive) > config.min_replicas and bool(killable),
                "pause": bool(usable) and "paused" not in model.alive.values(),
                "restart": any(t - died >= RESTART_DELAY for died in model.dead.values())
                           and len(alive) < config.max_replicas,
                "scale_up": len(alive) < config.max_replicas,
                "latency": t >= model.latency_until and t >= model.network_until,
                "errors": t >= model.errors_until,
                "cut_watches": True,
                "freeze_watches": t >= model.frozen_until,
                "partition": bool(usable) and not model.partitioned,
                # Not under a latency toxic: toxiproxy 2.12 removing a latency toxic in front of a
                # reset_peer one waits 5 s per link and answers 503 (seen in a 300 s run).
                "resets": t >= model.network_until and t >= model.latency_until,
                "timeouts": t >= model.network_until and t >= model.latency_until,
                "outage": t >= model.network_until and t >= model.latency_until,
                "apiserver_restart": t >= model.apiserver_until,
                "apiserver_kill": t >= model.apiserver_until,
                "reshard": t >= model.reshard_until,
                "delete_lease": True,
                "overwrite_lease": True,
                "duplicate": bool(usable) and not model.duplicated,
            }[kind]
            if ok and weight > 0:
                feasible[kind] = weight
        if not feasible:
            continue
        kinds = sorted(feasible)
        kind = rng.choices(kinds, weights=[feasible[k] for k in kinds])[0]
        at = end_at(t)
        if kind in ("kill", "terminate"):
            target = rng.choice(killable)
            del model.alive[target]
            model.partitioned.discard(target)  # healed by the runner on kill / before a restart
            model.dead[target] = t
            plan.append(Fault(at, kind, target))
        elif kind == "pause":
            target = rng.choice(usable)
            long = rng.random() < 0.8
            seconds = r3(rng.uniform(1.25 * lease, 3.0 * lease) if long
                         else rng.uniform(0.2, config.timings.renew_deadline))
            model.alive[target] = "paused"
            plan.append(Fault(at, "pause", target, {"seconds": seconds}))
            schedule_end(t + seconds, Fault(end_at(t + seconds), "resume", target))
        elif kind == "restart":
            target = rng.choice(sorted(i for i, died in model.dead.items() if t - died >= RESTART_DELAY))
            del model.dead[target]
            model.alive[target] = "running"
            plan.append(Fault(at, "restart", target))
        elif kind == "scale_up":
            target = f"replica-{model.next_index}"
            model.next_index += 1
            model.alive[target] = "running"
            plan.append(Fault(at, "scale_up", target))
        elif kind == "latency":
            severe = rng.random() < 0.2
            seconds = r3(rng.uniform(0.6, 1.0) if severe else rng.uniform(0.05, 0.4))
            jitter = r3(rng.uniform(0.0, 0.3))
            length = r3(rng.uniform(1.0, 2.0 * lease))
            model.latency_until = t + length
            plan.append(Fault(at, "latency", None, {"seconds": seconds, "jitter": jitter,
                                                    "for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "latency_end"))
        elif kind == "errors":
            fraction = r3(rng.uniform(0.2, 0.8))
            code = rng.choice((500, 503, 429))
            length = r3(rng.uniform(1.0, 2.0 * lease))
            model.errors_until = t + length
            params: dict[str, Any] = {"fraction": fraction, "code": code, "for": length}
            if code == 429:
                params["retry_after"] = 1
            plan.append(Fault(at, "errors", None, params))
            schedule_end(t + length, Fault(end_at(t + length), "errors_end"))
        elif kind == "cut_watches":
            plan.append(Fault(at, "cut_watches", None, {"graceful": rng.random() < 0.3}))
        elif kind == "freeze_watches":
            length = r3(rng.uniform(0.5, 1.5 * lease))
            model.frozen_until = t + length
            plan.append(Fault(at, "freeze_watches", None, {"for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "unfreeze_watches"))
        elif kind == "partition":
            target = rng.choice(usable)
            length = r3(rng.uniform(1.25 * lease, 3.0 * lease))
            mode = rng.choice(("error", "drop"))
            model.partitioned.add(target)
            plan.append(Fault(at, "partition", target, {"mode": mode, "for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "heal", target))
        elif kind == "resets":
            length = r3(rng.uniform(0.5, lease))
            fraction = r3(rng.uniform(0.3, 1.0))
            model.network_until = t + length
            plan.append(Fault(at, "resets", None, {"fraction": fraction, "for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "resets_end"))
        elif kind == "timeouts":
            length = r3(rng.uniform(1.0, 1.5 * lease))
            after_ms = int(rng.uniform(500, 2000))
            model.network_until = t + length
            plan.append(Fault(at, "timeouts", None, {"close_after_ms": after_ms, "for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "timeouts_end"))
        elif kind == "outage":
            length = r3(rng.uniform(1.25 * lease, 2.5 * lease))
            model.network_until = t + length
            plan.append(Fault(at, "outage", None, {"for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "outage_end"))
        elif kind == "reshard":
            # Between half and twice the configured count: shards are added, removed, and come back.
            choices = sorted({max(1, config.shards // 2), config.shards, 2 * config.shards} - {model.shards})
            model.shards = rng.choice(choices)
            model.reshard_until = t + 3 * lease
            plan.append(Fault(at, "reshard", None, {"shards": model.shards}))
        elif kind == "delete_lease":
            plan.append(Fault(at, "delete_lease", None, {"shard": rng.randrange(model.shards)}))
        elif kind == "overwrite_lease":
            plan.append(Fault(at, "overwrite_lease", None, {"shard": rng.randrange(model.shards),
                                                            "holder": rng.choice(("stranger", "peer"))}))
        elif kind == "duplicate":
            # Long enough for the second process to start (imports take seconds on a busy machine),
            # find the identity taken and refuse for a while.
            target = rng.choice(usable)
            length = r3(rng.uniform(2.5 * lease, 4.0 * lease))
            model.duplicated.add(target)
            plan.append(Fault(at, "duplicate", target, {"for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "duplicate_end", target))
        elif kind == "apiserver_restart":
            model.apiserver_until = t + 6.0
            plan.append(Fault(at, "apiserver_restart", None, {}))
        elif kind == "apiserver_kill":
            length = r3(rng.uniform(1.25 * lease, 3.0 * lease))
            model.apiserver_until = t + length + 6.0
            plan.append(Fault(at, "apiserver_kill", "apiserver-2", {"for": length}))
            schedule_end(t + length, Fault(end_at(t + length), "apiserver_start", "apiserver-2"))
    while pending:
        apply_end(heapq.heappop(pending)[2])
    plan.sort(key=lambda f: f.at)  # stable: ties keep the order they were planned in
    return plan


def fault_counts(faults: Iterable[Fault | Mapping[str, Any]]) -> dict[str, int]:
    """Injected faults by kind (end events such as ``resume`` or ``heal`` are not faults)."""
    counts: Counter[str] = Counter()
    for fault in faults:
        kind = fault.kind if isinstance(fault, Fault) else str(fault.get("fault"))
        if kind in ALL_FAULT_KINDS:
            counts[kind] += 1
    return {k: counts[k] for k in ALL_FAULT_KINDS if counts[k]}


# --------------------------------------------------------------------------------------------------
# Journal analysis (pure: usable on synthetic entries)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PauseWindow:
    """A SIGSTOP of one process, ended by SIGCONT (or by SIGKILL while frozen)."""

    identity: str
    pid: int
    stopped: float
    resumed: float
    ended_by: str


def pause_windows(replicas: Iterable[Replica], until: float | None = None) -> list[PauseWindow]:
    """The SIGSTOP windows of every replica process, from the signals the cluster sent."""
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


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z ")
_BAD_LINE = re.compile(r"Traceback \(most recent call last\)|Fatal Python error|^\S+ (ERROR|CRITICAL) ")


def _log_wall(line: str) -> float | None:
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
_REFUSAL = re.compile(r" ERROR +shardlease .*another live process \(incarnation \S+\) holds the member Lease ")

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
        wall = _log_wall(line)
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
# The run
# --------------------------------------------------------------------------------------------------


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
        return (f"python bench/chaos.py{server} --seed {c.seed} --duration {c.duration:g} --shards {c.shards} "
                f"--initial {c.initial_replicas} --min {c.min_replicas} --max {c.max_replicas} "
                f"--mean-gap {c.mean_gap:g} --lease {t.lease_duration:g} --renew-deadline "
                f"{t.renew_deadline:g} --retry {t.retry_period:g} --drain {c.drain_delay:g}{workload}"
                f"{' --gate' if c.sharded_watch else ''}")

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
                    "write_overlaps_excused", "reconcile_delay"):
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


class IdleHolderWatch:
    """Samples the group's Leases while the faults run and flags a shard whose holder keeps
    *renewing* it while no handler of that holder's process runs on it.

    A replica renews a shard's Lease only while it believes it holds the shard, and it must run the
    handler for every shard it holds; the only legitimate gaps are the instant between the write and
    the handler start and a stopped handler's clean-up before the release (``drain_delay``). So a
    holder seen renewing without a handler for longer than ``limit`` is a liveness bug (the shard is
    held and nobody works on it), caught while it happens rather than only if it lasts until the end.
    Paused holders (they cannot renew) and dead ones are never flagged. Nor is anything flagged while
    API latency is high (or was, within the last renew deadline plus the longest injected delay): an
    acquisition whose answer arrives after the renew deadline is rightly not given a handler, and the
    replica tries again, renewing nothing but writing the Lease.

    "Kept renewing" must be seen, sample after sample, within one tenure. A failed read (the observer
    is not exempt from injected errors) breaks the chain: across a gap the watch cannot tell one late
    write from a series. A new tenure (other ``leaseTransitions`` or ``acquireTime``) starts a new chain
    even under the same holder: release, re-acquire and lose can all happen between two samples, and
    the seconds before the gap say nothing about the tenure after it. Joining them is how this watch
    once flagged a replica that never renewed without a handler for more than one write (issue 12).

    A reshard is the one designed gap: a replica holds the Leases of the new generation, renewing
    them, and starts no handler until every shard Lease carries that generation (docs/resharding.md),
    which takes up to a lease when a holder died or is cut off, longer under injected errors. So
    nothing is flagged while the group's Leases show a switch in progress, nor for a watch back-off
    plus a lease after it completed: a replica learns of the completion through its watch.
    """

    def __init__(self, run: ChaosRun, limit: float, interval: float = 0.5) -> None:
        self.run = run
        self.limit = limit
        self.interval = interval
        self.findings: list[str] = []
        self.samples = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-idle-holder-watch", daemon=True)
        self._tracker = HandlerTracker(run.cluster.journal_dir) if run.cluster else None
        self._renew: dict[int, tuple[str, str, str]] = {}  # shard -> (holder, tenure, renewTime) last seen
        self._idle_since: dict[int, float] = {}           # shard -> first sample renewed with no handler
        self._reported: set[tuple[int, str, float]] = set()
        self._switching_until = float("-inf")

    def start(self) -> IdleHolderWatch:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10.0)
        return self.findings

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:  # a bug of the watch itself: loud, and it stops watching
                self.findings.append(f"HARNESS: the idle-holder watch failed: {exc!r}")
                return

    def sample(self) -> None:
        cluster = self.run.cluster
        assert cluster is not None and self._tracker is not None
        try:
            leases = cluster.leases()
        except Exception:  # reads fail under injected errors (the observer is not exempt): skip,
            self.skipped += 1  # and forget the chain: nothing is known about the gap
            self._renew.clear()
            self._idle_since.clear()
            return
        now = time.monotonic()
        self._tracker.poll()
        self.samples += 1
        # A reshard whose barrier has not passed, as ``shardlease status`` would show it.
        if GroupView.from_objects(cluster.group, "", leases, _dt.datetime.now(_dt.timezone.utc)).switch_pending:
            self._switching_until = now + WATCH_MAX_BACKOFF + self.run.config.lease
        switching = now < self._switching_until
        for lease in leases:
            labels = (lease.get("metadata") or {}).get("labels") or {}
            if labels.get("shardlease.io/role") != "shard":
                continue
            try:
                shard = int(labels.get("shardlease.io/shard", ""))
            except ValueError:
                continue
            spec = lease.get("spec") or {}
            holder, renewed = str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or "")
            tenure = f"{spec.get('leaseTransitions')}/{spec.get('acquireTime')}"
            previous = self._renew.get(shard)
            self._renew[shard] = (holder, tenure, renewed)
            if not holder or previous is None or previous[:2] != (holder, tenure) or previous[2] == renewed:
                self._idle_since.pop(shard, None)  # no holder, a new holder or tenure, or not renewing
                continue
            # Every live process of that identity: a duplicate started with it runs beside the original.
            processes = [r for r in cluster.replicas if r.identity == holder and r.running]
            if not processes:
                continue
            process = processes[-1]
            if any(p.paused for p in processes):
                self._idle_since.pop(shard, None)
                continue
            working = holder in self._tracker.running([p.pid for p in processes]).get(shard, set())
            if working or switching or not self.run.latency_calm(now):
                self._idle_since.pop(shard, None)
                continue
            since = self._idle_since.setdefault(shard, now)
            key = (shard, holder, since)
            if now - since > self.limit and key not in self._reported:
                self._reported.add(key)
                self.findings.append(
                    f"LIVENESS shard {shard}: {holder} (pid {process.pid}) kept renewing its Lease for "
                    f"{now - since:.1f} s (since window +{since - self.run._window_start:.2f}s) without a "
                    f"handler running on it (journal); limit {self.limit:g} s = clean-up + 2 s\n"
                    + self.run.log_excerpt(process, shard, since - 3.0, now))


def _wait_catching_sigterm(pid: int, timeout: float = 3.0) -> float:
    """Wait until process ``pid`` catches SIGTERM (``SigCgt`` in ``/proc``), at most ``timeout``;
    returns the seconds waited. A replica started a moment ago has not installed its handler yet
    and would die of the signal: no runtime can shut down gracefully before it runs."""
    started = time.monotonic()
    bit = 1 << (signal.SIGTERM - 1)
    while time.monotonic() - started < timeout:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break  # gone, or not Linux: nothing to wait for
        caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), None)
        if caught is None or int(caught, 16) & bit:
            break
        time.sleep(0.01)
    return time.monotonic() - started


class _ErrorCollector(logging.Handler):
    """Keeps ERROR records of the in-process dev-server (and asyncio) while a run lasts: faults in the
    test harness itself, reported next to the results rather than lost in pytest's captured stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.messages.append(text)


class ProxyFaults:
    """The real-server mode's fault knobs: toxics on the toxiproxy relay between the replicas and
    kube-apiserver, and the control plane's own processes. Method names follow the dev-server's
    (``set_latency``, ``heal``, ``clear``) where they mean the same thing, so the runner applies
    either. There is one relay for every replica, so there are no per-client partitions: ``heal`` is
    a no-op and an ``outage`` cuts everyone.

    Toxics are kept as a desired state and never changed on a disabled relay: toxiproxy 2.12 can hang
    an API call that removes a toxic while the proxy is disabled (seen here: the DELETE never
    answered). So an outage takes the toxics off, disables, and puts the wanted ones back on enable.
    """

    def __init__(self, proxy: Any, plane: Any, extra: Any = None) -> None:
        self.proxy = proxy    # shardlease.controlplane.Proxy
        self.plane = plane    # shardlease.controlplane.RealControlPlane
        self.extra = extra    # shardlease.controlplane.ExtraApiServer (apiservers=2) or None
        self.disabled = False
        self._wanted: dict[str, tuple[str, dict[str, float]]] = {}

    def _set(self, name: str, toxic: tuple[str, dict[str, float]] | None) -> None:
        if toxic is None:
            self._wanted.pop(name, None)
        else:
            self._wanted[name] = toxic
        if self.disabled:
            return  # applied when the relay comes back
        self.proxy.remove_toxic(name)
        if toxic is not None:
            self._add(name, toxic)

    def _add(self, name: str, toxic: tuple[str, dict[str, float]]) -> None:
        kind, attributes = toxic
        attrs = dict(attributes)
        toxicity = attrs.pop("toxicity", 1.0)
        self.proxy.add_toxic(name, kind, toxicity=toxicity, **attrs)

    def heal(self, target: str | None = None) -> None:
        """Nothing to heal: partitions are per client, and this mode has none."""

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Each answer delayed by ``seconds`` plus up to ``jitter`` (toxiproxy's jitter is +-, so the
        latency is centred): what the dev-server's latency knob does, on the wire."""
        on = seconds > 0 or jitter > 0
        self._set("latency", ("latency", {"latency": round(1000 * (seconds + jitter / 2)),
                                          "jitter": round(1000 * jitter / 2)}) if on else None)

    def resets(self, fraction: float) -> None:
        """That fraction of connections (new ones and those open) reset by peer as data arrives."""
        self._set("resets", ("reset_peer", {"timeout": 0, "toxicity": fraction}))

    def timeouts(self, close_after_ms: int) -> None:
        """Every connection black-holed (nothing gets through) and closed after ``close_after_ms``."""
        self._set("timeouts", ("timeout", {"timeout": close_after_ms}))

    def end(self, toxic: str) -> None:
        self._set(toxic, None)

    def outage(self, on: bool) -> None:
        """The relay disabled (every connection closed, new ones refused) or enabled again."""
        if on and not self.disabled:
            for name in self._wanted:
                self.proxy.remove_toxic(name)
            self.proxy.disable()
            self.disabled = True
        elif not on and self.disabled:
            self.proxy.enable()
            self.disabled = False
            for name, toxic in self._wanted.items():
                self._add(name, toxic)

    def restart_apiserver(self) -> float:
        """kube-apiserver SIGKILLed and started again (etcd kept); seconds until it was ready."""
        began = time.monotonic()
        self.plane.restart_apiserver()
        return time.monotonic() - began

    def kill_apiserver(self) -> None:
        if self.extra is None:
            raise ValueError("apiserver_kill needs a second kube-apiserver (apiservers=2)")
        self.extra.kill()

    def start_apiserver(self) -> float:
        began = time.monotonic()
        if self.extra is not None and not self.extra.running:
            self.extra.start()
        return time.monotonic() - began

    def clear(self) -> None:
        """Normal service: no toxic, relay enabled, every kube-apiserver running."""
        self._wanted.clear()
        self.outage(False)
        self.proxy.clear()
        self.start_apiserver()


class ChaosRun:
    """Run one :class:`ChaosConfig` end to end and return a :class:`ChaosReport`.

    ``progress`` receives one-line status messages (the bench prints them; the test keeps them for
    the failure report). The cluster is always stopped, even when the run itself raises.
    """

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

    # ---- time conversions ----

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

    # ---- fault log ----

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

    # ---- processes ----

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
        return cluster.add_replica(identity, env=env)

    # ---- applying faults ----

    def _network_fault(self, kind: str, on: bool) -> None:
        if on:
            self._network_faults_on.add(kind)
        else:
            self._network_faults_on.discard(kind)
            self._network_quiet_since = time.monotonic()

    def _apply(self, fault: Fault) -> None:
        if self.proxy_faults is None:
            self._apply_fault(fault)
            return
        from shardlease.controlplane import ControlPlaneError

        try:
            self._apply_fault(fault)
        except ControlPlaneError as exc:  # the relay or the control plane, not the runtime under test
            self.infrastructure.append(f"{fault.describe()}: {exc}")
            self._log_fault(fault.kind, fault.target, fault.params, fault.at, f"failed: {exc}")

    def _apply_fault(self, fault: Fault) -> None:
        cluster = self.cluster
        assert cluster is not None
        faults = self.faults
        kind, target, params = fault.kind, fault.target, fault.params
        note = ""
        if kind in ("kill", "terminate", "pause", "resume"):
            replica = self._process(target or "")
            if not replica.running:
                note = f"skipped: {target} had already exited ({replica.returncode})"
            elif kind == "kill":
                faults.heal(target)
                replica.kill()
            elif kind == "terminate":
                # A partition stays on: the graceful exit must then finish without the API (the
                # manager gives up on releases at the renew deadline). A restart heals it first.
                # A frozen process is continued first: one frozen while still starting (a late
                # schedule fires a scale-up and a pause back to back) never gets to catch SIGTERM.
                if replica.paused:
                    replica.resume()
                    note = "resumed first; "
                waited = _wait_catching_sigterm(replica.pid, timeout=SIGTERM_READY_TIMEOUT)
                if waited > 0.01:
                    note += f"waited {waited:.2f} s for the new process to catch SIGTERM; "
                replica.terminate()
            elif kind == "pause":
                replica.pause()
            elif kind == "resume":
                replica.resume()
        elif kind in ("restart", "scale_up"):
            if kind == "restart":
                old = self._process(target or "")
                if old.running:
                    # Never two live processes with one identity (pod names are unique): wait for the
                    # terminated one to finish its graceful exit, within the runtime's own bound plus
                    # the time a process SIGTERMed while still starting needs to get to its handler
                    # (13 s seen under a load average of 19, when a late schedule fired a scale-up and
                    # its terminate back to back).
                    limit = float(self.config.timings.drain_timeout or 30.0) \
                        + self.config.timings.renew_deadline + 5.0 + SIGTERM_READY_TIMEOUT
                    waited = time.monotonic()
                    if old.wait(limit) is None:
                        self.failures.append(
                            f"EXIT: {target} (pid {old.pid}) was still running {limit:g} s after SIGTERM; "
                            f"restart skipped\n--- log tail ---\n{old.log_tail(40)}")
                        self._log_fault(kind, target, params, fault.at, "skipped: old process alive")
                        return
                    note = f"waited {time.monotonic() - waited:.2f} s for the old process to exit; "
            faults.heal(target)  # a new process must not inherit its predecessor's partition
            replica = self._add_replica(target or "")
            note += f"pid {replica.pid}"
        elif kind == "duplicate":
            # A second process with a live replica's identity (a pod name reused by mistake, or two
            # Deployments with one name): it must refuse, and never work beside the original.
            duplicate = self._add_replica(target or "")
            self._duplicates[target or ""] = duplicate
            self._duplicate_pids.add(duplicate.pid)
            note = f"pid {duplicate.pid} beside pid {self._process(target or '').pid}"
        elif kind == "duplicate_end":
            # In a thread: on a loaded machine the second process may still be starting (seen: 10 s
            # under a load average of 20), and a SIGTERM before it catches the signal kills it; the
            # faults planned after this one must not wait for that.
            duplicate = self._duplicates[target or ""]
            ender = threading.Thread(target=self._terminate_when_ready, args=(duplicate,),
                                     name="chaos-duplicate-end", daemon=True)
            ender.start()
            self._enders.append(ender)
            note = f"pid {duplicate.pid}"
        elif kind in ("delete_lease", "overwrite_lease"):
            # In a thread of its own, like an operator's kubectl beside the faults.
            threading.Thread(target=self._operator, args=(fault,), name=f"chaos-{kind}", daemon=True).start()
            note = "started"
        elif kind == "latency":
            faults.set_latency(float(params["seconds"]), float(params.get("jitter", 0.0)))
            worst = float(params["seconds"]) + float(params.get("jitter", 0.0))
            self._latency = (worst, self._latency[1], self._latency[2])
        elif kind == "latency_end":
            faults.set_latency(0.0)
            worst = self._latency[0]
            if worst >= self.config.timings.renew_deadline / 2:
                self._latency = (0.0, time.monotonic(), worst)
            else:
                self._latency = (0.0, self._latency[1], self._latency[2])
        elif kind == "errors":
            faults.set_errors(float(params["fraction"]), int(params["code"]),
                              int(params.get("retry_after", 1)))
        elif kind == "errors_end":
            faults.set_errors(0.0)
        elif kind == "cut_watches":
            faults.cut_watches(graceful=bool(params.get("graceful")))
        elif kind == "freeze_watches":
            faults.freeze_watches()
        elif kind == "unfreeze_watches":
            faults.unfreeze_watches()
        elif kind == "partition":
            faults.partition(target, str(params.get("mode", "error")))
        elif kind == "heal":
            faults.heal(target)
        elif kind == "reshard":
            # In a thread of its own: an operator's command does not hold up the faults planned
            # after it, whatever the API does to its requests meanwhile.
            threading.Thread(target=self._reshard, args=(int(params["shards"]), fault.at),
                             name="chaos-reshard", daemon=True).start()
            note = "started"
        elif kind in ("resets", "timeouts", "outage", "apiserver_restart", "apiserver_kill") \
                or kind in REAL_END_KINDS:
            note = self._apply_real(kind, params)
        else:  # pragma: no cover - the planner only emits the kinds above
            raise ValueError(f"unknown fault {kind!r}")
        self._log_fault(kind, target, params, fault.at, note)

    def _reshard(self, shards: int, at: float) -> None:
        """Change the group's count as an operator would (``shardlease reshard``), through the
        observer's client, which faults do not partition; injected errors are retried a few times.
        The outcome goes into the fault log as a ``reshard_done`` record."""
        from shardlease.client.leases import LeaseClient
        from shardlease.errors import ApiError
        from shardlease.runtime.reshard import reshard_on

        cluster = self.cluster
        assert cluster is not None
        store = LeaseClient(cluster.api_client(), cluster.namespace)
        note = "failed"
        for attempt in range(8):
            try:
                result = reshard_on(store, cluster.group, shards, namespace=cluster.namespace)
            except ApiError as exc:
                note = f"failed: {exc}"
                if attempt < 7:
                    time.sleep(0.25)
                continue
            self._reshards += 1
            note = (f"generation {result.before.generation} -> {result.state.generation}, "
                    f"{result.before.count} -> {result.state.count} shards")
            break
        self._log_fault("reshard_done", None, {"shards": shards}, at, note)

    def _operator(self, fault: Fault) -> None:
        """An operator's hand on one shard Lease, through the observer's client (as ``kubectl`` would,
        unconditionally): ``delete_lease`` deletes it; ``overwrite_lease`` writes another holder into
        it (``stranger``: a name no replica has; ``peer``: another running replica's identity). The
        shard index is taken modulo the group's count at that moment. The outcome goes into the fault
        log as ``<kind>_done``, with the monotonic times the request was sent and answered, which the
        per-object check uses (:func:`~shardlease.harness.objectjournal.classify_write_overlaps`)."""
        from kubernetes.client import CoordinationV1Api
        from kubernetes.client.exceptions import ApiException

        cluster = self.cluster
        assert cluster is not None
        api: Any = CoordinationV1Api(cluster.api_client())
        note = "failed"
        params: dict[str, Any] = dict(fault.params)
        for attempt in range(8):
            sent: float | None = None
            try:
                state = cluster.group_state()
                count = state.count if state is not None else self.config.shards
                shard = int(fault.params["shard"]) % count
                name = f"{cluster.group}-shard-{shard}"
                params.update({"shard": shard, "lease": name})
                lease = api.read_namespaced_lease(name, cluster.namespace, _request_timeout=5)
                before = (lease.spec.holder_identity or "", lease.spec.lease_transitions)
                sent = time.monotonic()
                if fault.kind == "delete_lease":
                    api.delete_namespaced_lease(name, cluster.namespace, _request_timeout=5)
                    what = "deleted"
                else:
                    holder = "operator-edit"
                    if fault.params.get("holder") == "peer":
                        peers = sorted(set(cluster.running_identities()) - {before[0]})
                        holder = peers[0] if peers else holder
                    lease.spec.holder_identity = holder
                    api.replace_namespaced_lease(name, cluster.namespace, lease, _request_timeout=5)
                    what = f"holder set to {holder!r}"
                answered = time.monotonic()
                self.operator_acts[shard].append((sent, answered))
                params["acts"] = [[round(sent, 4), round(answered, 4)]]
                note = f"{what} (was held by {before[0]!r}, leaseTransitions {before[1]})"
                break
            except ApiException as exc:
                note = f"failed: HTTP {exc.status} {exc.reason}"
                if exc.status == 404:
                    note = "skipped: the Lease was absent"
                    break
            except Exception as exc:  # injected errors and latency reach the operator too
                note = f"failed: {exc!r}"
                if sent is not None:  # no answer: it may have happened all the same
                    act = (sent, time.monotonic())
                    self.operator_acts[int(params["shard"])].append(act)
                    params.setdefault("acts", []).append([round(act[0], 4), round(act[1], 4)])
            if attempt < 7:
                time.sleep(0.25)
        self._log_fault(f"{fault.kind}_done", None, params, fault.at, note)

    def _apply_real(self, kind: str, params: Mapping[str, Any]) -> str:
        """A real-server fault (:class:`ProxyFaults`); returns a note for the fault log."""
        faults = self.proxy_faults
        if faults is None:
            raise ValueError(f"{kind} is a real-server fault; this run uses the dev-server")
        family = kind.removesuffix("_end")
        if kind == "resets":
            faults.resets(float(params["fraction"]))
        elif kind == "timeouts":
            faults.timeouts(int(params["close_after_ms"]))
        elif kind in ("resets_end", "timeouts_end"):
            faults.end(family)
        elif kind in ("outage", "outage_end"):
            faults.outage(kind == "outage")
        elif kind == "apiserver_restart":
            self._network_fault(kind, True)
            took = faults.restart_apiserver()
            self._network_fault(kind, False)
            return f"ready again after {took:.2f} s"
        elif kind == "apiserver_kill":
            faults.kill_apiserver()
            family = "apiserver_kill"
        elif kind == "apiserver_start":
            took = faults.start_apiserver()
            self._network_fault("apiserver_kill", False)
            return f"ready after {took:.2f} s"
        self._network_fault(family, not kind.endswith("_end"))
        return ""

    def _quiesce(self) -> None:
        """End every fault: clear the dev-server's (or the relay's) knobs, then SIGCONT every frozen
        replica."""
        cluster = self.cluster
        assert cluster is not None
        self.faults.clear()
        if self._network_faults_on:
            self._network_faults_on.clear()
            self._network_quiet_since = time.monotonic()
        self._log_fault("clear", None, {}, self.config.duration)
        for replica in cluster.running():
            if replica.paused:
                replica.resume()
                self._log_fault("resume", replica.identity, {}, self.config.duration, "end of window")

    def _terminate_when_ready(self, replica: Replica) -> None:
        if replica.running:
            _wait_catching_sigterm(replica.pid, timeout=SIGTERM_READY_TIMEOUT)
            replica.terminate()

    def _end_duplicates(self) -> None:
        """Every duplicate process gone (its ``duplicate_end`` sent SIGTERM once it could take it)
        before recovery is judged: the group's identities are then its replicas' again."""
        for ender in self._enders:
            ender.join(SIGTERM_READY_TIMEOUT + 1.0)
        for duplicate in self._duplicates.values():
            if duplicate.running and "SIGTERM" not in [name for _, name in duplicate.signals]:
                self._terminate_when_ready(duplicate)
            duplicate.wait(15.0)

    # ---- waiting ----

    def _wait_reconciled(self, report: ChaosReport, since: float, bound: float) -> None:
        """Poll the journals until every object's latest change is written by the holder of its shard
        under the final count (:func:`~shardlease.harness.objectjournal.check_reconciled`), at the
        latest ``since + bound``; then confirm it on the API server (the ConfigMaps' annotations)."""
        cluster = self.cluster
        assert cluster is not None and self.user is not None
        deadline = since + bound
        while True:
            at = time.monotonic()
            live = [r.pid for r in cluster.running()]
            problems, times = check_reconciled(load_object_journal(cluster.journal_dir),
                                               load_journal(cluster.journal_dir), since=since, bound=bound,
                                               at=at, live_pids=live)
            if not problems or at >= deadline:
                break
            time.sleep(0.25)
        self.user.marker("reconcile_checked", at=at, since=since, bound=bound, live_pids=live)
        report.figures["objects_bound_s"] = round(bound, 3)
        if times:
            report.figures["objects_reconciled_after_s"] = round(max(times.values()), 3)
        for problem in problems[:10]:
            report.failures.append(f"RECONCILE: {problem}")
        if len(problems) > 10:
            report.failures.append(f"RECONCILE: ... and {len(problems) - 10} more objects")
        if not problems:
            report.failures.extend(self._api_agrees(at))

    def _api_agrees(self, at: float) -> list[str]:
        """The ConfigMaps as the API server has them carry what the journals say was written last (the
        journals could lie): the final change, stamped by the Lease holder of their shard, with the
        fence of the last write the journals show accepted for them."""
        cluster = self.cluster
        assert cluster is not None and self.user is not None
        try:
            snap = cluster.snapshot()
            items = json.loads(self.user.core.list_namespaced_config_map(
                cluster.namespace, _preload_content=False).data)["items"]
        except Exception as exc:
            return [f"RECONCILE: could not read the ConfigMaps or Leases to confirm: {exc!r}"]
        holders = snap.holders()
        last: dict[str, ObjectWrite] = {}
        for w in load_object_journal(cluster.journal_dir).writes:
            if w.accepted and w.rv is not None and (w.uid not in last or (last[w.uid].rv or 0) < w.rv):
                last[w.uid] = w
        wrong = []
        for item in items:
            meta = item["metadata"]
            if meta["name"] not in self.user.versions:
                continue
            annotations = meta.get("annotations") or {}
            shard = object_shard(meta["uid"], snap.shards)
            journaled = last.get(meta["uid"])
            want = {ANNOTATION_VERSION: str(self.user.versions[meta["name"]]), ANNOTATION_BY: holders.get(shard),
                    ANNOTATION_FENCE: f"{journaled.generation}/{journaled.token}" if journaled else None}
            got = {k: annotations.get(k) for k in want}
            if got != want:
                wrong.append(f"{meta['name']} (shard {shard}/{snap.shards}): {got}, expected {want}")
        return [f"RECONCILE (API): {len(wrong)} ConfigMaps do not carry their final holder's stamp:\n"
                + "\n".join(wrong[:10])] if wrong else []

    def _joined_at(self, replica: Replica) -> float | None:
        """Monotonic time of the replica's first member-Lease success, from its log."""
        for line in replica.log_text().splitlines():
            if " member Lease " in line and line.rstrip().endswith(" held"):
                wall = _log_wall(line)
                return self.mono_of(wall) if wall is not None else time.monotonic()
        return None

    def _wait_joined(self, timeout: float) -> float:
        """Wait until every running replica has held its member Lease once; return when the last did.
        Process start-up (imports, connecting) is not the runtime's reaction to faults, so the
        recovery clock starts only once every process is up."""
        cluster = self.cluster
        assert cluster is not None
        deadline = time.monotonic() + timeout
        while True:
            # A refused duplicate never holds its member Lease; it is being terminated by now.
            running = [r for r in cluster.running() if r.pid not in self._duplicate_pids]
            times = [self._joined_at(r) for r in running]
            if all(t is not None for t in times):
                return max([t for t in times if t is not None], default=time.monotonic())
            if time.monotonic() >= deadline:
                missing = [r.identity for r, t in zip(running, times) if t is None]
                raise AssertionError(f"replicas {missing} never held their member Lease within "
                                     f"{timeout:g} s\n{cluster.diagnostics()}")
            time.sleep(0.1)

    def _whole(self, snap: Snapshot, exact: bool) -> bool:
        """Every shard held by a running replica, every running replica a live member, each holding at
        most ceil(S/N) (``exact``: the shards are where the assignment puts them)."""
        cluster = self.cluster
        assert cluster is not None
        running = set(cluster.running_identities())
        holders = snap.holders()
        if any(h is None or h not in running for h in holders.values()):
            return False
        if set(snap.live_members()) != running:
            return False
        if exact:
            return holders == cluster.desired(sorted(running))
        cap = math.ceil(snap.shards / len(running))
        return all(n <= cap for n in snap.load().values())

    def _handlers_match(self, snap: Snapshot) -> tuple[bool, dict[int, set[str]]]:
        cluster = self.cluster
        assert cluster is not None
        if self._handlers is None:
            self._handlers = HandlerTracker(cluster.journal_dir)
        self._handlers.poll()
        running = self._handlers.running(r.pid for r in cluster.running())
        expected = {s: {h} for s, h in snap.holders().items() if h}
        return running == expected, running

    def _wait_recovered(self, since: float, bound: float, stability: float) -> dict[str, float]:
        """Poll until the group is whole and exactly as assigned, the journal agrees (one handler per
        shard, the holder's), and nothing has moved (holders, ``leaseTransitions``) for ``stability``
        seconds. The recovery time is when that final state was *first* seen; it must be within
        ``bound``. Waiting for a quiet period rather than the first good snapshot matters: requests
        sent under latency just before the faults were cleared can still make a holder miss its renew
        deadline up to ``renew_deadline`` later, and the shard then moves once more.

        Returns ``balanced_after_s`` (first snapshot that was whole and within ceil(S/N)) and
        ``assigned_after_s``; raises :class:`_Unrecovered` with the evidence otherwise."""
        cluster = self.cluster
        assert cluster is not None
        deadline = since + bound + stability
        last: Snapshot | None = None
        handlers: dict[int, set[str]] = {}
        balanced: float | None = None
        state: tuple[Any, ...] | None = None
        state_since = 0.0
        changes: list[str] = []
        previous: Snapshot | None = None
        while True:
            try:
                snap = cluster.snapshot()
                last = snap
                if previous is not None and (snap.holders(), snap.transitions()) != \
                        (previous.holders(), previous.transitions()):
                    # .get: after a reshard the previous snapshot may have fewer shards
                    before, before_t = previous.holders(), previous.transitions()
                    moved = {s: f"{before.get(s)}->{h} (transitions {before_t.get(s)}->{snap.transitions()[s]})"
                             for s, h in snap.holders().items()
                             if h != before.get(s) or snap.transitions()[s] != before_t.get(s)}
                    changes.append(f"+{snap.taken - since:.2f}s: {moved}")
                previous = snap
                good = False
                if self._whole(snap, exact=False):
                    ok, handlers = self._handlers_match(snap)
                    if ok and balanced is None:
                        balanced = snap.taken - since
                    good = ok and self._whole(snap, exact=True)
                key = (tuple(sorted(snap.holders().items())), tuple(sorted(snap.transitions().items())))
                if not good:
                    state = None
                elif key != state:
                    state, state_since = key, snap.taken
                elif snap.taken - state_since >= stability:
                    if state_since - since > bound:
                        break
                    return {"balanced_after_s": balanced if balanced is not None else state_since - since,
                            "assigned_after_s": state_since - since}
            except Exception as exc:  # reads can fail while the server recovers; keep polling
                self.progress(f"snapshot failed: {exc!r}")
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        mismatch = ""
        if last is not None:
            _, handlers = self._handlers_match(last)
            holders = last.holders()
            idle = sorted(s for s, h in holders.items() if h and h not in handlers.get(s, set()))
            extra = {s: sorted(w - {holders.get(s)}) for s, w in handlers.items() if w - {holders.get(s)}}
            wrong = {s: (h, cluster.desired(cluster.running_identities()).get(s))
                     for s, h in holders.items() if h != cluster.desired(cluster.running_identities()).get(s)}
            mismatch = (f"shards held with no handler running in the holder (per journal): {idle}; "
                        f"handlers running on non-holders: {extra}; holder != desired: {wrong}\n")
        raise _Unrecovered(
            "RECOVERY: " + mismatch +
            f"group not whole, as assigned and stable for {stability:g} s within {bound:.1f} s after "
            f"the faults stopped (first balanced: {balanced}; running: {cluster.running_identities()}; "
            f"handlers per journal: { {s: sorted(v) for s, v in sorted(handlers.items())} })\n"
            f"changes seen since: {changes[-15:]}\n" + cluster.diagnostics(last))

    # ---- the whole run ----

    def run(self) -> ChaosReport:
        config = self.config
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "plan.json").write_text(json.dumps(
            {"config": config.describe(), "plan": [asdict(f) for f in self.plan]}, indent=1, default=str))
        report = ChaosReport(config, self.work_dir, self.plan)
        before = set(child_processes())
        handler = config.handler
        if handler == DEFAULT_HANDLER:
            handler = OBJECT_HANDLER if config.workload == "objects" else \
                DRAINING_HANDLER if config.drain_delay > 0 else DEFAULT_HANDLER
        cluster = LocalCluster(
            handler=handler, group=config.group, shards=config.shards, timings=config.timings,
            work_dir=self.work_dir, devserver=config.devserver, faults=config.devserver != "real",
            assets=config.assets if config.devserver == "real" else None,
            feature_gates={"ShardedListAndWatch": True} if config.sharded_watch else None,
            env={"SHARDLEASE_JOURNAL_WORK": f"{config.work_unit:g}", ENV_DRAIN: f"{config.drain_delay:g}"})
        cluster.env[ENV_NAMESPACE] = cluster.namespace
        self.cluster = cluster
        collector = _ErrorCollector()
        watched = [logging.getLogger(name) for name in ("shardlease.devserver", "asyncio")]
        for logger in watched:
            logger.addHandler(collector)
        bound = convergence_bound(config)
        report.figures["bound_s"] = round(bound["asserted"], 3)
        report.figures["bound_derived_s"] = round(bound["derived"], 3)
        outcome: BaseException | None = None
        watch: IdleHolderWatch | None = None
        try:
            started = time.monotonic()
            cluster.start()
            if config.devserver == "real":
                self._start_relay(report)
            if config.workload == "objects":
                from kubernetes.client import CoreV1Api

                self.user = UserWriter(CoreV1Api(cluster.api_client()), cluster.namespace, cluster.journal_dir,
                                       seed=config.seed, rate=config.change_rate)
                self.user.create(config.objects)
            for i in range(config.initial_replicas):
                self._add_replica(f"replica-{i}")
            cluster.wait_working(timeout=60)
            report.figures["settle_s"] = round(time.monotonic() - started, 3)
            self.progress(f"settled with {config.initial_replicas} replicas; {len(self.plan)} planned "
                          f"events over {config.duration:g} s")
            self._window_start = time.monotonic()
            report.figures["window_start"] = self._window_start
            watch = IdleHolderWatch(self, limit=config.drain_delay + 2.0).start()
            if self.user is not None:
                self.user.marker("window_start")
                self.user.start()
            for fault in self.plan:
                due = self._window_start + fault.at
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._apply(fault)
                self.progress(fault.describe())
            remaining = self._window_start + config.duration - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            self._quiesce()
            cleared = time.monotonic()
            if self.user is not None:
                self.user.stop()
                self.user.marker("faults_cleared", at=cleared)
            self._end_duplicates()
            self.failures.extend(watch.stop())
            report.figures["idle_holder_samples"] = watch.samples
            report.figures["idle_holder_samples_failed"] = watch.skipped
            watch = None
            report.figures["window_end"] = cleared
            report.figures["window_overrun_s"] = round(cleared - self._window_start - config.duration, 3)
            since = max(cleared, self._wait_joined(timeout=60))
            report.figures["recovery_clock_start_s"] = round(since - cleared, 3)
            if self.user is not None:
                # The change every object must reach: made once the faults are over and every process
                # is up, so the final holders have something to reconcile after the last move.
                self.user.change_all(timeout=30.0)
                self.user.marker("final_changes", since=since)
                report.figures["final_changes_s"] = round(time.monotonic() - since, 3)
            stability = config.stability if config.stability is not None else config.lease
            try:
                times = self._wait_recovered(since, bound["asserted"], stability)
            finally:
                if self.user is not None:
                    self._wait_reconciled(report, since, bound["asserted"] + config.object_allowance)
            report.figures.update({k: round(v, 3) for k, v in times.items()})
            self.progress(f"recovered: balanced after {times['balanced_after_s']:.2f} s, as assigned "
                          f"and stable after {times['assigned_after_s']:.2f} s (bound "
                          f"{bound['asserted']:.1f} s)")
        except _Unrecovered as exc:
            report.failures.append(str(exc))
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            if watch is not None:  # the run failed half-way: stop sampling before the cluster goes
                watch.stop()
            if self.user is not None:
                self.user.stop()
            grace = 15.0 if outcome is None else 3.0
            stopped = time.monotonic()
            try:
                cluster.stop(grace=grace)
            finally:
                report.figures["stop_s"] = round(time.monotonic() - stopped, 3)
                if self._toxiproxy is not None:
                    self._toxiproxy.stop()
                report.applied = self._applied
                report.failures[:0] = self.failures
                for logger in watched:
                    logger.removeHandler(collector)
                report.infrastructure = list(collector.messages) + self.infrastructure
                server_log = cluster.log_dir / "dev-server.log"
                if server_log.exists():  # devserver="process": its errors are in its own log
                    report.infrastructure += scan_log(server_log.read_text(errors="replace"))
        self._check_routes(report)
        self._check_processes(report, before)
        self._check_logs(report)
        self._check_journal(report)
        (self.work_dir / "chaos-report.json").write_text(json.dumps(report.to_json(), indent=1,
                                                                    default=str))
        return report

    def _start_relay(self, report: ChaosReport) -> None:
        """Real server: toxiproxy in front of kube-apiserver and (``apiservers=2``) a second
        kube-apiserver on the same etcd; the replicas' kubeconfigs name the relay (replicas with an
        odd index: the second apiserver, directly), while snapshots read kube-apiserver directly, so
        the observer never suffers the faults it judges."""
        from shardlease.controlplane import Toxiproxy

        cluster = self.cluster
        assert cluster is not None
        plane = cluster.control_plane
        self._toxiproxy = Toxiproxy(plane.assets_dir, self.work_dir).start()
        proxy = self._toxiproxy.proxy("kube-apiserver", upstream=plane.url)
        proxied = proxy.write_kubeconfig(plane, self.work_dir / "kubeconfig-via-toxiproxy",
                                         cluster.namespace)
        extra = None
        if self.config.apiservers == 2:
            extra = plane.add_apiserver()
            second = extra.write_kubeconfig(self.work_dir / "kubeconfig-apiserver-2", cluster.namespace)
            report.figures["apiserver_2_url"] = extra.url

            def route(identity: str) -> str:
                suffix = identity.rsplit("-", 1)[-1]
                return str(second) if suffix.isdigit() and int(suffix) % 2 else str(proxied)
            cluster.replica_kubeconfig = route
        else:
            cluster.replica_kubeconfig = proxied
        self.proxy_faults = ProxyFaults(proxy, plane, extra)
        report.figures["apiserver_url"] = plane.url
        report.figures["proxy_url"] = proxy.url
        report.figures["kube_version"] = plane.version

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

    # ---- checks after the run ----

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
                kept = [line for line in text.splitlines() if not _REFUSAL.search(line)]
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

    def faults_between(self, lo: float, hi: float) -> list[str]:
        """The fault log between two monotonic times, one line each."""
        return [f"  +{f['offset']:.3f}s {f['fault']} {f['target'] or ''} {f['params'] or ''} "
                f"{f.get('note', '')}".rstrip() for f in self._applied if lo <= f["t"] <= hi]

    def log_excerpt(self, replica: Replica, shard: int, lo: float, hi: float, limit: int = 30) -> str:
        """A replica's log lines between two monotonic times that concern ``shard`` or no shard
        (membership, watch, signals), plus the faults applied meanwhile."""
        wlo, whi = self.wall_of(lo), self.wall_of(hi)
        tag = f" shard={shard} "
        lines = [f"--- {replica.identity} pid {replica.pid} log, +{lo - self._window_start:.2f}s.."
                 f"+{hi - self._window_start:.2f}s ({replica.log_path}) ---"]
        picked = []
        for line in replica.log_text().splitlines():
            wall = _log_wall(line)
            if wall is not None and wlo <= wall <= whi and (tag in line or " shard=" not in line):
                picked.append(line)
        lines.extend(picked[-limit:] or ["(no log lines in that interval)"])
        faults = self.faults_between(lo, hi)
        if faults:
            lines.append("faults applied meanwhile:")
            lines.extend(faults)
        return "\n".join(lines)


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


class _Unrecovered(AssertionError):
    """The group did not recover within the bound (a liveness failure, reported, not raised)."""
