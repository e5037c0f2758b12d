"""The group's shard count and generation, and the rules that change them (docs/resharding.md).

The count is group state, not per-replica configuration: it lives on one Lease per group (the *group
Lease*, ``<group>-group``) with a generation number that only grows. Every member runs the count of the
current generation whatever ``--shards`` it was started with, so during a rolling update that changes
the count the old and the new pods all take shards; nobody waits idle for the last old pod to leave.

What changes it, "the latest intent wins":

* a **rollout**: each member still declares its configured count on its member Lease. When a strict
  majority of the live members declares a count other than the group's *basis* (the count most
  members were configured with when the group last changed) and keeps doing so for ``settle``
  seconds, the oldest live member writes the next generation with that count. A rolling update moves
  the majority once (the old ReplicaSet only shrinks while the new one grows); a tie changes nothing;
  a rollback moves the majority back, once. One old pod restarted mid-rollout is one vote, not a switch.
* a **command**: ``shardlease reshard --shards N`` (or :func:`shardlease.reshard`) writes the next
  generation with count N and records the current majority as the basis, so members still configured
  with their old count do not undo it. A later rollout to another count wins over it again.

Both write the group Lease conditionally on its resourceVersion, so two writers never both win.

What makes a switch safe is the barrier (:func:`pending_shards`): a member starts no handler of
generation g until every shard Lease below the *span* (one past the highest index any generation may
still use) carries generation >= g. Each member stamps a Lease with g only after the handler it ran for
it under the old generation has returned (a release, or a re-acquisition in place), the sweeper (the
oldest member) stamps the Leases of removed shards whose holders are gone, and a writer of an older
generation never overwrites a newer stamp. So no key, whatever shard either count maps it to, is handled
under two generations at once. Fencing tokens compare as ``(generation, token)``.

Pure: records in, states and decisions out.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from shardlease.core.bodies import put_body
from shardlease.core.records import (
    ANNOTATION_BASIS,
    ANNOTATION_CHANGED_BY,
    ANNOTATION_GENERATION,
    ANNOTATION_PREVIOUS,
    ANNOTATION_SHARDS,
    ANNOTATION_SPAN,
    LEASE_API_VERSION,
    LeaseRecord,
    format_microtime,
    group_labels,
    group_lease_name,
)

__all__ = [
    "MAX_SHARDS",
    "GroupState",
    "fleet_count",
    "group_lease_body",
    "initial_state",
    "pending_shards",
    "reshard_state",
    "rollout_state",
]

#: The largest shard count the group Lease accepts: ``ShardConfig``'s bound, so a reshard never
#: asks for a count no replica could be started with.
MAX_SHARDS = 16384


def _positive(annotations: Mapping[str, str], key: str) -> int | None:
    value = annotations.get(key)
    if value is not None and value.isdigit() and 0 < int(value) <= 1 << 31:
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class GroupState:
    """One generation of the group: its shard count and what a switch to it must wait for."""

    count: int
    generation: int
    span: int
    """One past the highest shard index a Lease may exist for from this or an earlier generation."""
    basis: int | None
    """The count most members were configured with when this state was written (``None``: no majority)."""
    previous: int | None = None
    changed_by: str = ""
    changed_at: _dt.datetime | None = None
    resource_version: str = ""

    @classmethod
    def from_record(cls, record: LeaseRecord) -> GroupState | None:
        """The state on a group Lease; ``None`` when its count or generation is unreadable (a Lease
        edited by hand): members then keep the generation they run and report it."""
        ann = record.annotations
        count = _positive(ann, ANNOTATION_SHARDS)
        generation = _positive(ann, ANNOTATION_GENERATION)
        if count is None or generation is None or count > MAX_SHARDS:
            return None
        span = max(count, _positive(ann, ANNOTATION_SPAN) or count)
        return cls(count=count, generation=generation, span=span, basis=_positive(ann, ANNOTATION_BASIS),
                   previous=_positive(ann, ANNOTATION_PREVIOUS), changed_by=ann.get(ANNOTATION_CHANGED_BY, ""),
                   changed_at=record.acquire_time, resource_version=record.resource_version)

    def annotations(self) -> dict[str, str]:
        out = {ANNOTATION_SHARDS: str(self.count), ANNOTATION_GENERATION: str(self.generation),
               ANNOTATION_SPAN: str(self.span), ANNOTATION_CHANGED_BY: self.changed_by}
        if self.basis is not None:
            out[ANNOTATION_BASIS] = str(self.basis)
        if self.previous is not None:
            out[ANNOTATION_PREVIOUS] = str(self.previous)
        return out

    def retired(self) -> range:
        """Indices whose Leases an earlier generation may have used but this one does not."""
        return range(self.count, self.span)


def group_lease_body(group: str, namespace: str, state: GroupState, wall: _dt.datetime,
                     record: LeaseRecord | None = None) -> dict[str, Any]:
    """The group Lease carrying ``state``: a create when ``record`` is ``None``, else the object as last
    seen with the state replaced (its resourceVersion makes the write conditional). It has no holder:
    nobody holds the group, ``acquireTime`` is when this state was written."""
    stamp = format_microtime(wall)
    if record is None:
        return {"apiVersion": LEASE_API_VERSION, "kind": "Lease",
                "metadata": {"name": group_lease_name(group), "namespace": namespace,
                             "labels": group_labels(group), "annotations": state.annotations()},
                "spec": {"acquireTime": stamp, "renewTime": stamp}}
    prior = GroupState.from_record(record)
    spec = {"renewTime": stamp}
    if prior is None or prior.generation != state.generation:
        spec["acquireTime"] = stamp
    return put_body(record, spec, group_labels(group), state.annotations())


def fleet_count(configured: Iterable[int | None]) -> int | None:
    """The count a strict majority of the live members is configured with; ``None`` without one
    (members without a readable count count against every majority)."""
    votes = list(configured)
    if not votes:
        return None
    (count, n), = Counter(votes).most_common(1)
    return count if count is not None and 2 * n > len(votes) else None


def initial_state(configured: Iterable[int | None], *, oldest: int) -> GroupState:
    """The first generation of a group: the members' majority count, else the oldest member's."""
    votes = list(configured)
    fleet = fleet_count(votes)
    count = fleet if fleet is not None else oldest
    return GroupState(count=count, generation=1, span=count, basis=fleet,
                      changed_by="initial")


def rollout_state(state: GroupState, fleet: int | None) -> GroupState | None:
    """The state a rollout calls for, or ``None`` when the majority's count is the one the group last
    changed by (or there is no majority). A majority that matches the running count only updates the
    basis: no new generation, no pause."""
    if fleet is None or fleet == state.basis:
        return None
    if fleet == state.count:
        return replace(state, basis=fleet, changed_by="rollout")
    return GroupState(count=fleet, generation=state.generation + 1, span=max(state.span, fleet), basis=fleet,
                      previous=state.count, changed_by="rollout")


def reshard_state(state: GroupState, shards: int, fleet: int | None, by: str = "reshard") -> GroupState:
    """The next generation with ``shards`` shards, as ``shardlease reshard`` writes it. The basis
    becomes the members' current majority, so their configuration does not switch the group back."""
    return GroupState(count=shards, generation=state.generation + 1, span=max(state.span, shards),
                      basis=fleet if fleet is not None else state.basis, previous=state.count, changed_by=by)


def pending_shards(state: GroupState, lease_of: Callable[[int], LeaseRecord | None],
                   covers: Callable[[int], bool] = lambda _i: True) -> list[int]:
    """The barrier: indices below the span whose Lease is absent, not yet observed (``covers``), or
    not yet stamped with ``state.generation``. Handlers of the generation may start when it is empty.
    The first generation has no predecessor and never waits."""
    if state.generation <= 1:
        return []
    return [i for i in range(state.span)
            if not covers(i) or (rec := lease_of(i)) is None or rec.generation < state.generation]
