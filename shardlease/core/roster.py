"""The group's members as one replica tracks them, and the collection of dead members' Leases.

:func:`~shardlease.core.membership.compute_membership` says who is live at one instant; a
:class:`Roster` keeps the answer between passes and decides when to ask again (a member Lease changed,
or a live member's Lease is due to expire). From it come the eligible identities the shards are assigned
over, every live member's configured count (its vote on the group's count) and generation (the
clean-up of retired shards waits for all of them), and whether this replica is the oldest member, the
one that does the group's chores.

Dead members' Leases are collected here. A graceful exit deletes its own member Lease; a crash (SIGKILL,
node loss) cannot, and in a Deployment every crashed pod has a new name, so without collection the
group's Lease list would grow forever. Only the oldest live member collects (one writer, not N racing),
only once the Lease has been expired for ``collect_after`` (5 lease durations, far beyond any pause a
live replica could recover from), and each delete is conditional on the resourceVersion seen, so a
replica that comes back and renews in the meantime keeps its Lease.

Pure: :meth:`Roster.update` takes the cache's records and the time and returns the deletes to send.
"""

from __future__ import annotations

import logging
from typing import Any

from shardlease.core.cache import LeaseCache
from shardlease.core.clock import Clock
from shardlease.core.elector import Timing
from shardlease.core.membership import compute_membership
from shardlease.core.messages import Write, WriteDone, WriteKind
from shardlease.core.records import LeaseRecord, member_lease_name
from shardlease.core.resharding import fleet_count
from shardlease.errors import ConflictError, NotFound

__all__ = ["Roster"]


class Roster:
    """Who is in the group, as last computed, and the member Leases being deleted."""

    def __init__(self, *, group: str, identity: str, timing: Timing, cache: LeaseCache, clock: Clock,
                 own_member_lease: str, log: logging.LoggerAdapter[Any] | logging.Logger, metrics: Any) -> None:
        self._group = group
        self._identity = identity
        self._timing = timing
        self._cache = cache
        self._clock = clock
        self._own = own_member_lease
        self._log = log
        self._metrics = metrics
        self._prefix = member_lease_name(group, "")
        #: How long a member Lease must have been expired before the oldest member deletes it.
        self.collect_after = 5 * timing.lease_duration
        #: Identities the shards are assigned over (the live members).
        self.eligible: frozenset[str] = frozenset()
        self._initialised = False
        #: When the answer changes with no new record (a live member's Lease expires, a dead one is due).
        self.recheck_at = float("inf")
        #: Live members' configured counts, oldest first, and the count most of them ask for.
        self.configured_counts: list[int | None] = []
        self.fleet: int | None = None
        #: Live members' generations (``None``: a member from before resharding).
        self.generations: dict[str, int | None] = {}
        #: This replica is the oldest live member that runs a generation (and not an identity clash).
        self.oldest = False
        #: Live members' capacities and member Lease records, by identity (the load balance reads them).
        self.capacities: dict[str, float] = {}
        self.records: dict[str, LeaseRecord] = {}
        #: Names of Leases with a delete in flight (member Leases and retired shard Leases alike).
        self.deleting: set[str] = set()

    def update(self, now: float, changed: set[str], *, synced_at: float, stopping: bool,
               identity_conflict: bool) -> tuple[list[Write], bool]:
        """Recompute membership from the cache if a member Lease changed (``changed`` holds the names of
        the Leases that did) or a recheck is due. Returns the deletes of dead members' Leases to send and whether
        the eligible set changed.
        """
        if now < self.recheck_at and not any(n.startswith(self._prefix) for n in changed) and self._initialised:
            return [], False
        self._initialised = True
        snapshot = self._cache.snapshot()
        membership = compute_membership(self._group, ((c.record, c.observed) for c in snapshot.values()), now,
                                        self._timing, wall_now=self._clock.now(),
                                        seen_change_after=synced_at, collect_after=self.collect_after,
                                        exclude_dead=self._own)
        live, dead = membership.live, membership.dead
        self.recheck_at = membership.recheck_at
        writes: list[Write] = []
        if live and live[0].identity == self._identity and not stopping:
            self.recheck_at = min([self.recheck_at, *(at for at, _ in dead if at > now)])
            for _at, record in (item for item in dead if item[0] <= now):
                write = self.delete(record)
                if write is not None:
                    self._log.info("deleting member Lease %s, expired for over %.0f s", record.name,
                                   self.collect_after)
                    writes.append(write)
        self.configured_counts = [m.declared for m in live]
        self.fleet = fleet_count(self.configured_counts)
        self.generations = {m.identity: m.record.member_generation for m in live}
        self.records = {m.identity: m.record for m in live if m.identity in membership.eligible}
        self.capacities = {identity: record.capacity for identity, record in self.records.items()}
        steward = next((m for m in live if m.record.member_generation is not None), None)
        self.oldest = steward is not None and steward.identity == self._identity and not identity_conflict
        if membership.eligible == self.eligible:
            return writes, False
        self.eligible = membership.eligible
        return writes, True

    def delete(self, record: LeaseRecord) -> Write | None:
        """A conditional delete of ``record``, unless one is already in flight."""
        if record.name in self.deleting:
            return None
        self.deleting.add(record.name)
        return Write(WriteKind.COLLECT, record.name, sent_rv=record.resource_version)

    def on_deleted(self, done: WriteDone) -> None:
        """A delete's answer. Fire and forget: 404 (someone else deleted it) and 409 (it came back) are
        both fine; the next pass retries whatever is still dead."""
        self.deleting.discard(done.write.name)
        err = done.error
        if err is not None and not isinstance(err, (ConflictError, NotFound)):
            self._metrics.api_error(err.label)
            self._log.warning("could not delete member Lease %s: %s", done.write.name, err)
