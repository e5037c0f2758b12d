"""Following the group Lease: which generation a replica runs, and when its handlers may start.

The rules of the count and generation are :mod:`shardlease.core.resharding`'s (docs/resharding.md); a
:class:`GroupFollower` applies them over time for one replica:

* **follow**: run the generation the group Lease names, adopting a newer one as soon as it is seen;
* **steward** (the oldest member only): create the group Lease, and write the next generation once a
  strict majority of the live members has asked for another count for a whole lease duration;
* **barrier**: after adopting a new generation, start no handler until no shard Lease below the span
  is stamped with an older one (:func:`~shardlease.core.resharding.pending_shards`);
* **confirm creates**: every write of a shard Lease is conditional on what was seen except a create. A
  replica cut off from its watches while the group moved on (a reshard, then the clean-up that deletes
  the Leases of removed shards) would create such a Lease again under its old generation. So a created
  shard's handler waits for a read of the group Lease, begun after the create, that shows our
  generation; a newer one is adopted instead and the Lease handed back;
* **clean-up** (the oldest member only): a lease duration after the barrier passed and once every live
  member runs our generation, delete the Leases of shards the count no longer has, then lower the span.

Pure: it reads the cache and returns :class:`~shardlease.core.messages.Write` commands; the reactor
carries out what adopting a generation means for the shards (new assignment, new states).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shardlease.core.cache import LeaseCache, apply_answer
from shardlease.core.clock import Clock
from shardlease.core.elector import Timing, rv_of
from shardlease.core.messages import Write, WriteDone, WriteKind
from shardlease.core.records import LeaseRecord, group_lease_name
from shardlease.core.resharding import GroupState, group_lease_body, initial_state, pending_shards, rollout_state
from shardlease.errors import ConflictError

__all__ = ["GroupFollower"]


class GroupFollower:
    """The generation this replica runs and the group Lease writes it has in flight."""

    def __init__(self, *, group: str, namespace: str, configured: int, timing: Timing, cache: LeaseCache,
                 clock: Clock, log: logging.LoggerAdapter[Any] | logging.Logger, metrics: Any) -> None:
        self._group = group
        self._namespace = namespace
        self._configured = configured
        self._timing = timing
        self._cache = cache
        self._clock = clock
        self._log = log
        self._metrics = metrics
        self.name = group_lease_name(group)
        #: The generation this replica runs (its count, generation and span); ``None`` until it has read
        #: the group Lease.
        self.state: GroupState | None = None
        #: The barrier of the running generation has passed: its handlers may start.
        self.may_start = False
        #: When the running generation was adopted (a shard it adds counts as absent since then).
        self.adopted_at = float("-inf")
        #: Since when the members' majority has asked for another count (the oldest member's clock).
        self.rollout_since: float | None = None
        self._seen: tuple[str | None, GroupState | None] = (None, None)
        self._in_flight = False
        self._retry_at = 0.0
        self._switch_started: float | None = None
        self._cleanup_after = float("inf")
        self._check_wanted = False
        self._check_in_flight = False
        self._check_at = 0.0

    @property
    def count(self) -> int:
        return self.state.count if self.state is not None else 0

    @property
    def generation(self) -> int:
        return self.state.generation if self.state is not None else 0

    @property
    def span(self) -> int:
        return self.state.span if self.state is not None else 0

    @property
    def switching(self) -> bool:
        """A generation is adopted and its barrier has not passed."""
        return self.state is not None and not self.may_start

    def wakeup(self) -> float:
        """When a pending rollout switch falls due (infinity: none pending)."""
        return float("inf") if self.rollout_since is None else self.rollout_since + self._timing.lease_duration

    # ------------------------------------------------------------------ following and stewarding

    def follow(self, now: float, *, oldest: bool, stopping: bool, configured_counts: list[int | None],
               fleet: int | None) -> tuple[list[Write], bool]:
        """Run the generation the group Lease names; as the oldest member, create it or switch it when
        the members' majority asks for another count. Returns the writes and whether a newer generation
        was adopted."""
        cached = self._cache.get(self.name)
        # Parsed once per version of the group Lease: this runs on every step, renewals included.
        if cached is not None and cached.record.resource_version != self._seen[0]:
            self._seen = (cached.record.resource_version, GroupState.from_record(cached.record))
        state = self._seen[1] if cached is not None else None
        adopted = False
        if state is not None and state.generation > self.generation:
            self._adopt(state, now)
            adopted = True
        elif state is not None and state.generation == self.generation:
            self.state = state  # the same generation, its span lowered once the retired Leases are gone
        if not oldest:
            self.rollout_since = None
        if not oldest or stopping or self._in_flight or now < self._retry_at:
            return [], adopted
        if cached is None:
            first = initial_state(configured_counts, oldest=self._configured)
            self._log.info("creating group Lease %s: %d shards, generation 1", self.name, first.count)
            return [self._write(first, None)], adopted
        if state is None:
            return [], adopted  # unreadable (edited by hand): keep running what we run; status reports it
        target = rollout_state(state, fleet)
        if target is None:
            self.rollout_since = None
            return [], adopted
        if target.generation == state.generation:
            return [self._write(target, cached.record)], adopted  # only the basis moves: no switch, no pause
        if self.rollout_since is None:
            self.rollout_since = now
            self._log.info("most members are configured with %d shards, the group runs %d: switching in %.1fs "
                           "unless that changes", target.count, state.count, self._timing.lease_duration)
        if now >= self.rollout_since + self._timing.lease_duration:
            self.rollout_since = None
            self._log.info("rollout: switching the group from %d to %d shards (generation %d)", state.count,
                           target.count, target.generation)
            return [self._write(target, cached.record)], adopted
        return [], adopted

    def _write(self, state: GroupState, record: LeaseRecord | None) -> Write:
        self._in_flight = True
        body = group_lease_body(self._group, self._namespace, state, self._clock.now(), record)
        kind = WriteKind.GROUP_CREATE if record is None else WriteKind.GROUP_UPDATE
        return Write(kind, self.name, sent_rv=rv_of(record), body=body)

    def _adopt(self, state: GroupState, now: float) -> None:
        """Start following generation ``state.generation``: no handler starts until the barrier has passed."""
        before, before_count = self.generation, self.count
        self.state = state
        self.adopted_at = now
        self.may_start = state.generation <= 1
        self._metrics.generation.set(state.generation)
        self._metrics.shard_count.set(state.count)
        self._metrics.count_mismatch.set(int(self._configured != state.count))
        if before == 0:
            self._log.info("group %r runs %d shards (generation %d)", self._group, state.count, state.generation)
        else:
            self._switch_started = now
            self._metrics.reshards.inc()
            self._log.info("group resharded: generation %d -> %d, %d -> %d shards (%s); handlers of the new "
                           "generation start once every old one has stopped", before, state.generation,
                           before_count, state.count, state.changed_by or "unknown")

    def on_written(self, done: WriteDone, now: float) -> None:
        """The answer to a create or update of the group Lease."""
        self._in_flight = False
        err = done.error
        if err is None:
            apply_answer(self._cache, done)
            return
        # 409/AlreadyExists: another writer won; the watch brings its state. Else retry later.
        self._retry_at = now + self._timing.retry_period
        if not isinstance(err, ConflictError):
            self._metrics.api_error(err.label)
            self._log.warning("could not write the group Lease: %s", err)

    # ------------------------------------------------------------------ barrier

    def check_barrier(self, now: float, record_of: Callable[[int], LeaseRecord | None],
                      covers: Callable[[int], bool]) -> bool:
        """Whether the barrier of the running generation passed just now (no shard Lease below the span
        is stamped lower)."""
        state = self.state
        if self.may_start or state is None or pending_shards(state, record_of, covers):
            return False
        self.may_start = True
        self._cleanup_after = now + self._timing.lease_duration
        if self._switch_started is not None:
            pause = max(0.0, now - self._switch_started)
            self._metrics.reshard_pause.observe(pause)
            self._log.info("switch to generation %d complete after %.3fs: starting its handlers", state.generation,
                           pause)
            self._switch_started = None
        return True

    # ------------------------------------------------------------------ confirming creates

    def want_check(self) -> None:
        """A shard Lease was created: read the group Lease (see the module docstring)."""
        self._check_wanted = True

    def check_due(self, now: float) -> Write | None:
        """The read of the group Lease to send now, if one is wanted and none is in flight."""
        if not self._check_wanted or self._check_in_flight or now < self._check_at:
            return None
        self._check_wanted = False
        self._check_in_flight = True
        return Write(WriteKind.GROUP_CHECK, self.name)

    def on_checked(self, done: WriteDone, now: float) -> bool:
        """The read's answer. True when it shows our generation: shard Leases created before
        ``done.started`` are confirmed. A failed read is retried half a retry period later."""
        self._check_in_flight = False
        if done.error is not None:
            self._metrics.api_error(done.error.label)
            self._check_wanted = True
            self._check_at = now + self._timing.retry_period / 2
            return False
        record = apply_answer(self._cache, done)
        state = GroupState.from_record(record) if record is not None else None
        # A newer generation is adopted at the next step; none readable: wait.
        return state is not None and state.generation == self.generation

    # ------------------------------------------------------------------ clean-up of retired shards

    def clean_up(self, now: float, *, oldest: bool, stopping: bool, member_generations: dict[str, int | None],
                 record_of: Callable[[int], LeaseRecord | None], covers: Callable[[int], bool],
                 delete: Callable[[LeaseRecord], Write | None]) -> list[Write]:
        """As the oldest member, once every live member runs our generation: delete the Leases of shards
        the count no longer has (``delete`` makes the conditional delete, or ``None`` if one is in flight),
        then lower the span on the group Lease."""
        state = self.state
        if not oldest or not self.may_start or now < self._cleanup_after or stopping:
            return []
        if state is None or state.span <= state.count or self._in_flight:
            return []
        generation = state.generation
        if any(gen != generation for gen in member_generations.values()):
            return []
        if not all(covers(index) for index in state.retired()):
            return []
        records = [r for r in map(record_of, state.retired()) if r is not None]
        if any(record.generation > generation for record in records):
            # Written under a newer generation we have not adopted yet (our two watches deliver in
            # their own time): a live shard of it, not a tombstone of ours. Deleting it would let its
            # next holder start its token over within one generation.
            return []
        writes: list[Write] = []
        for record in records:
            if record.is_held or record.generation < generation:
                continue
            write = delete(record)
            if write is not None:
                writes.append(write)
        if not records:
            group = self._cache.get(self.name)
            if group is not None:
                self._log.info("retired shard Leases %d..%d deleted; span now %d", state.count, state.span - 1,
                               state.count)
                writes.append(self._write(replace(state, span=state.count), group.record))
        return writes
