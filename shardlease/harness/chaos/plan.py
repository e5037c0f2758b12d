"""Fault kinds, the run's configuration and the seeded fault plan.

:func:`plan_faults` is a *pure* function from a :class:`ChaosConfig` (seed included) to the list of
:class:`Fault` s a run applies. It simulates the replica set the runner is going to create (who runs,
who is paused, partitioned, dead) so that every fault is valid when it fires and the replica count
stays within bounds: the same seed and settings always give the same plan. :func:`convergence_bound`
derives from the same settings how long the group may take to recover once the faults stop.
"""

from __future__ import annotations

import heapq
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shardlease.core.reactor import FALLBACK_HOLD_MAX_DOUBLINGS
from shardlease.harness.localcluster import DEFAULT_HANDLER, Timings

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


#: Opt-in faults, in no default weights (so the plans of published seeds stay as they were):
#: ``load_shift`` makes some shards hot (the handlers report loads, docs/load.md), so the group moves
#: shards for load while the other faults run; the checks of exclusion and fences cover those moves.
LOAD_KINDS = ("load_shift",)


ALL_FAULT_KINDS = FAULT_KINDS + REAL_FAULT_KINDS + LOAD_KINDS


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
    #: Install ``shardlease fencing`` for the ConfigMaps (``"real"`` and the object workload only): the
    #: replicas stamp their writes and kube-apiserver refuses a stale holder's; the refusals are counted
    #: (``write_outcomes["fenced"]``, ``refused_by_api_server``).
    fencing: bool = False
    #: Seconds a replica of the object workload spends between its ``valid()`` check and a write.
    write_delay: float = 0.0
    #: The object workload writes with an unconditional patch of its annotations instead of a conditional
    #: PUT: no 409 refuses a stale write, only fencing (``fencing``) can.
    patch_writes: bool = False
    #: Seconds on top of the recovery bound for the final holders to list their objects and write
    #: each one (the object workload's reconcile bound).
    object_allowance: float = 3.0
    #: ``--max-write-rate`` of every replica (``None``: no write budget, renewals every retry period):
    #: the renewals are spaced under the faults, and the runner measures the Lease writes the server
    #: served once the group is stable (``figures["write_budget"]``).
    max_write_rate: float | None = None
    #: ``--capacity`` per replica: ``replica-N`` (a restart or a duplicate of it too) gets
    #: ``capacities[N % len(capacities)]``; empty: every replica the runtime's default. Meaningful with
    #: load shifts (docs/load.md), which is when the group places shards by capacity.
    capacities: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= initial_replicas <= max_replicas")
        if self.devserver not in ("thread", "process", "real"):
            raise ValueError(f"devserver: {self.devserver!r} is not 'thread', 'process' or 'real'")
        if self.apiservers not in (1, 2) or (self.apiservers == 2 and self.devserver != "real"):
            raise ValueError(f"apiservers: {self.apiservers!r}; 1, or 2 with devserver='real' (the "
                             f"high-availability variant)")
        if self.fencing and (self.devserver != "real" or self.workload != "objects"):
            raise ValueError("fencing: needs devserver='real' (the dev-server evaluates no admission policy) and "
                             "the object workload")
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
        if self.max_write_rate is not None:
            member_rate = 1.0 / self.timings.retry_period
            if not (math.isfinite(self.max_write_rate) and self.max_write_rate > member_rate):
                raise ValueError(f"max_write_rate: {self.max_write_rate!r} must be above the member Lease's own "
                                 f"{member_rate:.3g} writes/s (1 / retry_period); raise it or leave it None")
        if any(not (math.isfinite(c) and c > 0) for c in self.capacities):
            raise ValueError(f"capacities: {list(self.capacities)} must all be finite numbers > 0 (e.g. (1, 2, 1)), "
                             f"or empty for the default")
        margin = self.timings.lease_duration - self.timings.renew_deadline
        if self.work_unit >= margin / 2:
            raise ValueError(f"work unit {self.work_unit}s is not well below lease - renew deadline "
                             f"({margin:g}s)")

    @property
    def load_aware(self) -> bool:
        """The run shifts loads: its handlers report them and its replicas rebalance by load."""
        return self.weights.get("load_shift", 0.0) > 0

    @property
    def lease(self) -> float:
        return float(math.ceil(self.timings.lease_duration))

    @property
    def handoff_grace(self) -> float:
        grace = self.timings.handoff_grace
        return float(grace) if grace is not None else 2 * self.timings.retry_period

    def capacity_of(self, identity: str) -> float | None:
        """The ``--capacity`` of ``identity`` (``replica-N``), ``None`` for the runtime's default."""
        suffix = identity.rsplit("-", 1)[-1]
        if not self.capacities or not suffix.isdigit():
            return None
        return self.capacities[int(suffix) % len(self.capacities)]

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
                "load_shift": True,
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
        elif kind == "load_shift":
            hot = sorted(rng.sample(range(config.shards), k=max(1, config.shards // 8)))
            plan.append(Fault(at, "load_shift", None, {"hot": hot, "factor": rng.choice((4, 8))}))
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
