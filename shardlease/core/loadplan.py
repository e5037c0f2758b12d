"""The load snapshot protocol: which assignment a replica runs, and when the oldest member rebalances.

Replicas must agree on the owners or they fight over shards, and live loads differ from process to
process (each sees the member Leases at its own moment, and they change at every renewal). So no
replica ever assigns from live loads. Instead:

* every replica publishes the smoothed loads of the shards it holds on its member Lease, and its
  capacity (:mod:`shardlease.core.records`), with the renewals it sends anyway;
* the oldest member (the steward) looks at those loads at most every quarter period (a shard between
  holders, which no member Lease lists for a moment, counts with the load last reported for it; none
  is taken while a shard has never reported, for a period at most after the first report). When
  the busiest replica carries more than ``(1 + threshold)`` x its share with the shards too hot for any
  bound set aside (:func:`~shardlease.core.loadbalance.fixable_imbalance`: such a shard alone is over
  any share, and no move can help it; ``1 + epsilon`` when the assignment in force stopped at its move
  budget with moves left), the last snapshot is at least a ``period`` old, no reshard
  switch is under way, no member left within a lease duration (the reactor's ``may_rebalance``: the
  dead member's shards are failing over to heirs that watched them in advance), and a rebalance would
  move something *and gain from it* (it brings the busiest replica within ``1 + epsilon``, or lowers it
  by at least :data:`MIN_GAIN` of its share, or the load outside the members' bounds by as much, or
  runs out of ``max_moves`` with more to do), it writes a
  new :class:`~shardlease.core.loadbalance.LoadSnapshot` on the group Lease: the quantised loads and the
  owners in force (one conditional write; none at all while the group is balanced);
* every replica, the steward included, assigns from the snapshot of the generation it runs:
  :func:`~shardlease.core.loadbalance.balance` of the live members and their capacities, from the
  snapshot's owners and loads, at most ``max_moves`` moves. Without a snapshot for the running
  generation (no load reported yet, or just after a reshard) it is today's count assignment
  (:func:`~shardlease.core.assignment.assign`), unchanged.

Why it cannot flip-flop: between two snapshots the inputs are fixed (same snapshot, same members: same
owners), ``balance`` never cycles, and the next snapshot is taken only after a period and only when
the imbalance a rebalance can fix is above a threshold that is at least the bound a rebalance aims for:
a group brought within ``1 + epsilon`` stays put until the loads themselves move by more than the gap.
And a rebalance that would gain next to nothing is not published, so a placement the greedy cannot
improve does not turn into a snapshot every period.

Pure: it reads the cache, gets the time passed in, and returns :class:`~shardlease.core.messages.Write`
commands for the reactor to send.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shardlease.core.assignment import EXACT_INHERITABLE_LIMIT, assign, inheritable
from shardlease.core.bodies import put_body
from shardlease.core.cache import LeaseCache, apply_answer
from shardlease.core.clock import Clock
from shardlease.core.loadbalance import (
    Balance,
    LoadSnapshot,
    balance,
    bounds,
    fixable_imbalance,
    imbalance,
    member_loads,
    quantise,
)
from shardlease.core.messages import Write, WriteDone, WriteKind
from shardlease.core.records import (
    ANNOTATION_LOAD_SNAPSHOT,
    ANNOTATION_REBALANCED,
    LeaseRecord,
    format_microtime,
    group_labels,
    group_lease_name,
)
from shardlease.errors import ConflictError, InvalidArgument

__all__ = [
    "MIN_GAIN",
    "LoadPlanner",
    "Rebalance",
    "inheritable_under",
    "live_loads",
    "off_bounds",
    "reported_loads",
    "worth_rebalancing",
]


#: A snapshot whose moves leave the busiest member still over ``1 + epsilon`` (with the shards too hot
#: for any bound aside) must gain at least this much: lower that member's load by this part of its
#: share, or the load outside the members' bounds (:func:`off_bounds`) by this part of a fair share per
#: unit of capacity. Less is noise in the loads, or a placement the greedy cannot improve (a member
#: over its bound whose shards fit nowhere) with small moves elsewhere; not worth their handoffs.
MIN_GAIN = 0.05


def off_bounds(owners: Sequence[str | None], loads: Sequence[float], members: Mapping[str, float],
               epsilon: float) -> float:
    """How far the members are from their bounds (:func:`~shardlease.core.loadbalance.bounds`), in fair
    shares per unit of capacity: the load above each member's bound plus the load missing below each
    member's floor, summed. 0.0 when every member is within."""
    total = float(sum(loads))
    capacity = sum(members[m] for m in sorted(members))
    if total <= 0 or capacity <= 0:
        return 0.0
    limits = bounds(members, owners, loads, epsilon)
    carried = member_loads(owners, loads, members)
    outside = sum(max(0.0, carried[m] - limits.limit[m]) + max(0.0, limits.floor[m] - carried[m])
                  for m in sorted(members))
    return outside / (total / capacity)


@dataclass(frozen=True, slots=True)
class Rebalance:
    """How the group rebalances by load (``ShardConfig.rebalance_*``, docs/load.md)."""

    period: float = 60.0
    threshold: float = 0.15
    epsilon: float = 0.1
    max_moves: int = 32

    def __post_init__(self) -> None:
        if not self.period > 0:
            raise InvalidArgument(f"rebalance period must be > 0 seconds, got {self.period!r}")
        if not self.threshold >= self.epsilon >= 0:
            raise InvalidArgument(f"rebalance threshold ({self.threshold!r}) must be >= epsilon ({self.epsilon!r}) >= 0")
        if self.max_moves < 2:
            raise InvalidArgument(f"rebalance max_moves must be >= 2, got {self.max_moves!r}")


def worth_rebalancing(owners: Sequence[str], loads: Sequence[float], capacities: Mapping[str, float],
                      settings: Rebalance, *, unfinished: bool = False) -> Balance | None:
    """The rebalance the steward publishes from ``owners`` with ``loads`` (quantised), or ``None``: the
    group is within ``1 + threshold`` by :func:`~shardlease.core.loadbalance.fixable_imbalance`, or a
    rebalance moves nothing, or it gains too little (:data:`MIN_GAIN`; see the module docstring).

    ``unfinished``: ``owners`` is where the rule stopped at its move budget with useful moves left (a
    member joined or changed capacity, and the snapshot in force could not take the group all the way
    in ``max_moves``). Then the bound ``1 + epsilon`` is the trigger, not the threshold: the group is
    not where a rebalance would have left it, and stopping between the two would leave it there for good.
    """
    epsilon = settings.epsilon
    before = fixable_imbalance(owners, loads, capacities, epsilon)
    if before <= 1 + (epsilon if unfinished else settings.threshold):
        return None  # within the threshold, shards too hot for any bound aside (status names those)
    trial = balance(members=capacities, loads=loads, base=owners, epsilon=epsilon, max_moves=settings.max_moves)
    if not trial.moved:
        return None
    if trial.limited:
        return trial  # more to do than one snapshot may move: progress, whatever the figures say yet
    after = fixable_imbalance(trial.owners, loads, capacities, epsilon)
    gain = max(before - after, off_bounds(owners, loads, capacities, epsilon)
               - off_bounds(trial.owners, loads, capacities, epsilon))
    # Moves that barely change the busiest member are not worth their handoffs, and with loads that
    # only wobble they would be taken again and again.
    return trial if after <= 1 + epsilon or gain >= MIN_GAIN else None


def reported_loads(count: int, members: Mapping[str, LeaseRecord], assignment: Mapping[int, str]) -> dict[int, float]:
    """The shards some member Lease reports a load for now, with that load: the report of the member
    the assignment names if it has one (during a handoff the old holder may still list it), else that of
    the first member by name that does."""
    reported: dict[int, float] = {}
    for identity in sorted(members, reverse=True):  # the first by name wins
        for shard, load in members[identity].loads.items():
            if shard < count:
                reported[shard] = load
    for shard, owner in assignment.items():
        record = members.get(owner)
        if record is not None:
            own = record.loads.get(shard)
            if own is not None and shard < count:
                reported[shard] = own
    return reported


def live_loads(count: int, members: Mapping[str, LeaseRecord], assignment: Mapping[int, str],
               weight_of: Callable[[int], float | None] | None = None,
               remembered: Mapping[int, float] | None = None) -> list[float | None]:
    """Every shard's load as the member Leases report it now (:func:`reported_loads`), else as one was
    last reported (``remembered``), else the static weight, else ``None`` (counted as the mean by
    ``quantise``).

    ``remembered`` covers a shard between holders: its old holder drops it from its member Lease when
    it lets go, and the new one lists it only after its handler's first report reached a renewal. Counted
    as the mean meanwhile, a hot shard in transit would look cold (and the mean shard hot) to a snapshot
    taken then, which would move shards for loads that never changed."""
    reported = reported_loads(count, members, assignment)
    result: list[float | None] = []
    for shard in range(count):
        value = reported.get(shard)
        if value is None and remembered is not None:
            value = remembered.get(shard)
        if value is None and weight_of is not None:
            value = weight_of(shard)
        result.append(value)
    return result


def inheritable_under(snapshot: LoadSnapshot, capacities: Mapping[str, float], member: str) -> frozenset[int]:
    """Shards that would move to ``member`` under ``snapshot`` if any one other live member failed.

    When a snapshot is in force every replica assigns with :meth:`LoadSnapshot.assign` over the live
    members, so the heir of a dead member's shard is whoever that rule names once the member is gone,
    not the count assignment's heir: a replica must watch these shards in advance, or it would time the
    dead holder's expiry from its first look and take the shard over after up to two lease durations.

    Exact (the rule rerun without each other member) up to ``EXACT_INHERITABLE_LIMIT`` members x
    shards (about 40 ms at 16 x 1,024); beyond it every shard this member does not own: there is no
    cheap estimate of where a rebalance sends the orphans, and watching the whole group still keeps
    failover within one lease.
    """
    names = sorted(capacities)
    if member not in capacities or len(names) < 2:
        return frozenset()
    mine = {shard for shard, owner in enumerate(snapshot.assign(capacities).owners) if owner == member}
    if len(names) * snapshot.count > EXACT_INHERITABLE_LIMIT:
        return frozenset(range(snapshot.count)) - mine
    found: set[int] = set()
    for leaving in names:
        if leaving == member:
            continue
        rest = {m: capacities[m] for m in names if m != leaving}
        found.update(shard for shard, owner in enumerate(snapshot.assign(rest).owners) if owner == member)
    return frozenset(found - mine)


class LoadPlanner:
    """The snapshot this replica assigns from, and (as the oldest member) when to publish the next."""

    def __init__(self, *, group: str, namespace: str, settings: Rebalance, cache: LeaseCache, clock: Clock,
                 log: logging.LoggerAdapter[Any] | logging.Logger, metrics: Any,
                 weight_of: Callable[[int], float | None] | None = None) -> None:
        self._group = group
        self._namespace = namespace
        self.settings = settings
        self._cache = cache
        self._clock = clock
        self._log = log
        self._metrics = metrics
        self._weight_of = weight_of
        self._name = group_lease_name(group)
        self._seen_rv: str | None = None
        #: The snapshot on the group Lease, as last read (any generation); ``None``: none or unreadable.
        self.published: LoadSnapshot | None = None
        #: The snapshot the assignment uses: ``published`` when it is for the running generation and count.
        self.snapshot: LoadSnapshot | None = None
        self._in_flight = False
        self._check_at = 0.0
        #: What the last assignment from a snapshot did (``status`` and ``/health`` show it).
        self.last_moves = 0
        self.last_too_hot: tuple[int, ...] = ()
        #: It stopped at the snapshot's ``max_moves`` with useful moves left: the next snapshot is due at
        #: ``1 + epsilon`` already (see ``worth_rebalancing``).
        self.last_limited = False
        self.last_imbalance: float | None = None
        #: The same with the shards too hot for any bound aside (:func:`fixable_imbalance`): what the
        #: steward compares with the threshold.
        self.last_fixable: float | None = None
        self.last_reason = ""
        # The last load reported for each shard of the running generation (see ``live_loads``).
        self._remembered: dict[int, float] = {}
        self._remembered_for: tuple[int, int] = (-1, -1)
        self._first_load_at = math.inf

    # ------------------------------------------------------------------ following

    def read(self, generation: int, count: int) -> bool:
        """Read the group Lease's snapshot; True when the snapshot the assignment uses changed."""
        cached = self._cache.get(self._name)
        rv = cached.record.resource_version if cached is not None else None
        if rv != self._seen_rv:
            self._seen_rv = rv
            text = cached.record.annotations.get(ANNOTATION_LOAD_SNAPSHOT) if cached is not None else None
            self.published = LoadSnapshot.decode(text)
        usable = self.published
        if usable is not None and (usable.generation != generation or usable.count != count):
            usable = None
        if usable == self.snapshot:
            return False
        self.snapshot = usable
        return True

    def owners(self, group: str, count: int, capacities: Mapping[str, float], load_factor: float) -> dict[int, str]:
        """The assignment of the running count over the live members (``capacities``: identity -> capacity):
        from the snapshot when there is one for this count, else today's count assignment."""
        if not capacities or not count:
            return {}
        snap = self.snapshot
        if snap is None or snap.count != count:
            self.last_limited = False
            return assign(group, count, capacities, load_factor)
        result = snap.assign(capacities)
        self.last_moves = len(result.moved)
        self.last_limited = result.limited
        self.last_too_hot = result.too_hot
        return dict(enumerate(result.owners))

    def inheritable(self, group: str, count: int, capacities: Mapping[str, float], member: str,
                    load_factor: float) -> frozenset[int]:
        """The shards worth watching in advance: those ``member`` would take over if any one other live
        member failed, under the same rule as :meth:`owners` (the snapshot's when one is in force for
        this count, else the count assignment's)."""
        if not capacities or not count:
            return frozenset()
        snap = self.snapshot
        if snap is None or snap.count != count:
            return inheritable(group, count, capacities, member, load_factor)
        return inheritable_under(snap, capacities, member)

    # ------------------------------------------------------------------ stewarding

    def _remember(self, now: float, generation: int, count: int, members: Mapping[str, LeaseRecord],
                  assignment: Mapping[int, str]) -> dict[int, float]:
        """The last load seen reported for each shard, this step's reports included; forgotten when the
        generation or the count changes (the same index then names another shard).

        Also notes when the first report was seen: handlers start reporting as their shards are taken,
        and a snapshot taken while most shards are still unknown (counted as the mean) would move shards
        on guesses, and leave the group on an assignment computed from them. So no snapshot while a
        shard's load is unknown, for at most a period after the first report (a shard whose handler
        never reports then counts as the mean)."""
        if self._remembered_for != (generation, count):
            self._remembered = {}
            self._remembered_for = (generation, count)
            self._first_load_at = math.inf
        reported = reported_loads(count, members, assignment)
        if reported and not self._remembered:
            self._first_load_at = now
        self._remembered.update(reported)
        return self._remembered

    def next_check(self) -> float:
        return self._check_at

    def step(self, now: float, *, steward: bool, may_rebalance: bool, generation: int, count: int,
             assignment: Mapping[int, str], members: Mapping[str, LeaseRecord],
             capacities: Mapping[str, float]) -> list[Write]:
        """As the oldest member, the snapshot to publish now, if one is due (see the module docstring).
        ``may_rebalance``: no reshard switch under way and not stopping."""
        if now < self._check_at or not count or not capacities or len(assignment) != count:
            return []
        self._check_at = now + self.settings.period / 4
        remembered = self._remember(now, generation, count, members, assignment)
        loads = live_loads(count, members, assignment, self._weight_of, remembered)
        if all(v is None for v in loads):
            self.last_imbalance = self.last_fixable = None
            self._metrics.load_imbalance.set(0)
            return []
        quantised = quantise(loads)
        current = [assignment.get(i, "") for i in range(count)]
        ratio = imbalance(current, quantised, capacities)
        epsilon = self.settings.epsilon
        fixable = fixable_imbalance(current, quantised, capacities, epsilon)
        self.last_imbalance = ratio
        self.last_fixable = fixable
        self._metrics.load_imbalance.set(ratio)
        if not steward or not may_rebalance or self._in_flight:
            return []
        cached = self._cache.get(self._name)
        if cached is None:
            return []
        wall = self._clock.now()
        last = self.published
        if last is not None and last.generation == generation and \
                (wall - last.taken_at).total_seconds() < self.settings.period:
            return []
        if any(v is None for v in loads) and now < self._first_load_at + self.settings.period:
            return []  # wait for the first reports of every shard, a period at most (see _remember)
        limit = 1 + (epsilon if self.last_limited else self.settings.threshold)
        trial = worth_rebalancing(current, quantised, capacities, self.settings, unfinished=self.last_limited)
        if trial is None:
            if fixable > limit:
                self._log.debug("no load rebalance at imbalance %.2f > %.2f: no move gains %.2f of a share",
                                fixable, limit, MIN_GAIN)
            return []
        reason = f"imbalance {fixable:.2f} > {limit:.2f}" + (" (moves left over)" if self.last_limited else "")
        seq = last.seq + 1 if last is not None else 1
        snap = LoadSnapshot(generation=generation, count=count, seq=seq, taken_at=wall, loads=quantised,
                            owners=tuple(current), reason=reason, epsilon=self.settings.epsilon,
                            max_moves=self.settings.max_moves)
        body = put_body(cached.record, {}, group_labels(self._group), {
            ANNOTATION_LOAD_SNAPSHOT: snap.encode(),
            ANNOTATION_REBALANCED: f"{format_microtime(wall)} {len(trial.moved)} {reason}"})
        self._in_flight = True
        self._log.info("load rebalance %d: %s; moving %d shard(s)%s", seq, reason, len(trial.moved),
                       " (more next period)" if trial.limited else "")
        return [Write(WriteKind.GROUP_SNAPSHOT, self._name, sent_rv=cached.record.resource_version, body=body)]

    def on_written(self, done: WriteDone, now: float) -> None:
        """The answer to a snapshot write: on success it is applied to the cache (read at the next step);
        a conflict (another write of the group Lease) or failure is retried at the next check."""
        self._in_flight = False
        if done.error is None:
            apply_answer(self._cache, done)
            self._metrics.load_rebalances.inc()
            return
        self._check_at = min(self._check_at, now + 1.0)
        if not isinstance(done.error, ConflictError):
            self._metrics.api_error(done.error.label)
            self._log.warning("could not publish the load snapshot: %s", done.error)

    # ------------------------------------------------------------------ reporting

    def status(self, now_wall: Any, count: int, assignment: Mapping[int, str], members: Mapping[str, LeaseRecord],
               capacities: Mapping[str, float]) -> dict[str, Any]:
        """What ``/health`` shows of the load balance: per member capacity, load and share; the snapshot."""
        snap = self.snapshot
        remembered = self._remembered if self._remembered_for[1] == count else None
        loads = live_loads(count, members, assignment, self._weight_of, remembered) if count else []
        known = any(v is not None for v in loads)
        quantised = list(quantise(loads)) if known else []
        current = [assignment.get(i, "") for i in range(count)]
        carried = member_loads(current, quantised, capacities) if known else {}
        total = sum(quantised) or 1
        limits = bounds(capacities, current, quantised, self.settings.epsilon) if known and capacities else None
        return {
            "mode": "load" if snap is not None else "count",
            "imbalance": None if self.last_imbalance is None else round(self.last_imbalance, 3),
            "fixable_imbalance": None if self.last_fixable is None else round(self.last_fixable, 3),
            "members": {m: {"capacity": capacities[m],
                            "share": round(carried.get(m, 0.0) / total, 4) if known else None,
                            "fair_share": round(limits.share[m] / total, 4) if limits is not None else None}
                        for m in sorted(capacities)},
            "snapshot": None if snap is None else {
                "seq": snap.seq, "age_seconds": round((now_wall - snap.taken_at).total_seconds(), 1),
                "reason": snap.reason},
            "last_moves": self.last_moves,
            "too_hot": list(self.last_too_hot),
        }
