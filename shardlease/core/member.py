"""Our member Lease: the replica's presence in the group, and the one rule for a duplicate identity.

The member Lease says "this replica is alive and declares S shards". It is renewed every renew interval,
retried about every retry period when that fails (like a held shard: it must not lapse), deleted at
shutdown so peers see us leave at once, and never touched when it belongs to another process.

One process per identity: every process writes its random incarnation on the member Lease. A process
that finds the member Lease of its identity held and live under another incarnation refuses to take
part (the reactor then hands back whatever it holds and takes nothing), logs an error naming the fix at
most once per lease duration, and marks the live Lease (``shardlease.io/refused-duplicate``) so that
``shardlease status`` shows the conflict. When the other Lease expires or is deleted, the next
conditional write of the member Lease decides who goes on, so two processes never both win.

Part of the pure core: events in (the cache, write results), writes out, time passed in.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardlease.core.bodies import Writer
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import Clock
from shardlease.core.elector import Timing, backoff, held_retry_at, is_ours, member_expiry, rv_of
from shardlease.core.messages import Write, WriteDone, WriteKind
from shardlease.core.records import ANNOTATION_REFUSED, LeaseRecord, format_refused, member_lease_name
from shardlease.errors import ConflictError, NotFound

__all__ = ["MemberLease"]


@dataclass(slots=True)
class _State:
    in_flight: bool = False
    renew_started: float | None = None
    retry_at: float = 0.0
    failures: int = 0
    deleted: bool = False
    delete_tries: int = 0


class MemberLease:
    """Keeps one replica's member Lease; see the module docstring."""

    def __init__(self, *, group: str, identity: str, incarnation: str, timing: Timing, cache: LeaseCache,
                 clock: Clock, writer: Writer, log: logging.LoggerAdapter[Any] | logging.Logger,
                 metrics: Any, jitter: Callable[[float, float], float] = random.uniform) -> None:
        self.identity = identity
        self.incarnation = incarnation
        self.name = member_lease_name(group, identity)
        self._timing = timing
        self._cache = cache
        self._clock = clock
        self._writer = writer
        self._log = log
        self._metrics = metrics
        self._jitter = jitter
        self._state = _State()
        #: Incarnation of another live process holding our identity's member Lease, if any.
        self.conflict: str | None = None
        self._conflict_logged_at = float("-inf")
        self._conflict_flagged_at = float("-inf")
        self._refused_seen: str | None = None
        #: When :meth:`step` must run again without any new event.
        self.due = float("inf")
        #: The group generation this replica runs, published on the member Lease (0: none yet).
        self.generation = 0

    # ---- queries ----

    @property
    def renew_started(self) -> float | None:
        """Start of our last successful write of it (``None``: not held by us)."""
        return self._state.renew_started

    def held(self, now: float) -> bool:
        started = self._state.renew_started
        return started is not None and now < started + self._timing.renew_deadline

    @property
    def settled(self) -> bool:
        """At shutdown: deleted (or nothing of ours to delete) and no request in flight."""
        return self._state.deleted and not self._state.in_flight

    # ---- steps ----

    def step(self, now: float, *, stopping: bool, synced_at: float,
             problems: Callable[[], str], loads: Callable[[], str] = lambda: "") -> tuple[list[Write], bool]:
        """The writes due now, and whether the identity conflict began or ended (every shard must then
        be looked at again). ``problems`` is asked only when the Lease is written: it scans every shard."""
        st = self._state
        if st.in_flight or st.deleted:
            return [], False
        cached = self._cache.get(self.name)
        if stopping:
            if cached is None or st.delete_tries >= 5 or not is_ours(cached.record, self.identity, self.incarnation):
                st.deleted = True  # nothing of ours to delete (never another process's member Lease)
                return [], False
            if now < st.retry_at:
                return [], False
            st.in_flight = True
            st.delete_tries += 1
            return [Write(WriteKind.MEMBER_DELETE, self.name, sent_rv=cached.record.resource_version)], False
        record = cached.record if cached is not None else None
        before = self.conflict
        if record is not None and cached is not None:
            writes = self._refuse_if_taken(record, cached.observed, now, synced_at)
            if writes is not None:
                return writes, before != self.conflict
        changed = before != self.conflict
        if record is not None and is_ours(record, self.identity, self.incarnation):
            refused = record.annotations.get(ANNOTATION_REFUSED)
            if refused and refused != self._refused_seen:
                self._refused_seen = refused
                self._log.warning("another process with identity %r tried to join and was refused (%s); "
                                  "give every replica a unique --identity / POD_NAME", self.identity, refused)
        due = max(st.retry_at, (st.renew_started + self._timing.renew_every) if st.renew_started else now)
        if now < due:
            self.due = due
            return [], changed
        self.due = float("inf")
        held = record is not None and is_ours(record, self.identity, self.incarnation) and st.renew_started is not None
        body = self._writer.member(record, self._clock.now(), held=held, problems=problems(),
                                   generation=self.generation, loads=loads())
        kind = WriteKind.MEMBER_CREATE if record is None else WriteKind.MEMBER_RENEW
        st.in_flight = True
        # Bound the request by the member's own renew deadline while it is still ahead of us.
        deadline = st.renew_started + self._timing.renew_deadline if st.renew_started is not None else None
        return [Write(kind, self.name, sent_rv=rv_of(record), body=body,
                      deadline=deadline if deadline is not None and deadline > now + 0.05 else None)], changed

    def _refuse_if_taken(self, record: LeaseRecord, observed: float, now: float,
                         synced_at: float) -> list[Write] | None:
        """``None`` unless another live process holds our identity's member Lease; then the writes to
        make (at most a mark per lease duration), with the conflict recorded and logged."""
        other = record.incarnation
        taken = record.holder == self.identity and other is not None and other != self.incarnation
        expires = member_expiry(record, observed, self._timing, wall_now=self._clock.now(),
                                seen_change=observed > synced_at) if taken else now
        if not taken or expires <= now:
            if self.conflict is not None:
                self._log.info("no other live process holds identity %r any more; taking part again", self.identity)
                self.conflict = None
                self._metrics.identity_conflict.set(0)
            return None
        if self.conflict != other:
            self.conflict = other
            self._conflict_logged_at = float("-inf")
            self._state.renew_started = None  # if this was ours, it is not any more
            self._metrics.identity_conflict.set(1)
        if now - self._conflict_logged_at >= self._timing.lease_duration:
            self._conflict_logged_at = now
            self._log.error(
                "another live process (incarnation %s) holds the member Lease %s of identity %r: refusing to "
                "take shards until it is gone; every replica needs a unique identity (set --identity or "
                "SHARDLEASE_IDENTITY per replica, or POD_NAME from the downward API)",
                other, self.name, self.identity)
        writes: list[Write] = []
        if now - self._conflict_flagged_at >= self._timing.lease_duration:
            self._conflict_flagged_at = now
            body = self._writer.mark(record, {ANNOTATION_REFUSED: format_refused(self.incarnation, self._clock.now())})
            writes.append(Write(WriteKind.MEMBER_MARK, self.name, sent_rv=record.resource_version, body=body))
        self.due = min(expires, now + self._timing.lease_duration)
        return writes

    # ---- results ----

    def on_result(self, done: WriteDone, now: float) -> list[Write]:
        """Take in the result of one of our writes; returns a follow-up write, if any."""
        kind, err = done.write.kind, done.error
        if kind is WriteKind.MEMBER_MARK:
            if err is None and done.obj is not None:
                record = LeaseRecord.from_object(done.obj)
                if record is not None:
                    self._cache.apply(record)
            elif err is not None and not isinstance(err, (ConflictError, NotFound)):
                self._metrics.api_error(err.label)
            return []
        st = self._state
        st.in_flight = False
        if err is None:
            st.failures = 0
            st.retry_at = 0.0
            if kind is WriteKind.MEMBER_DELETE:
                st.deleted = True
                self._cache.delete(self.name, "")
                self._log.info("member Lease deleted")
                return []
            if kind is WriteKind.MEMBER_REFRESH and done.obj is None:
                self._cache.delete(self.name, "")  # gone: the next step creates it again
                return []
            record = LeaseRecord.from_object(done.obj or {})
            if record is not None:
                self._cache.apply(record)
            if kind is WriteKind.MEMBER_REFRESH:
                return []
            if st.renew_started is None:
                self._log.info("member Lease %s held", self.name)
            st.renew_started = done.started
            return []
        self._metrics.api_error(err.label)
        if kind is WriteKind.MEMBER_DELETE:
            if isinstance(err, NotFound):
                st.deleted = True
                self._cache.delete(self.name, "")
                return []
            st.retry_at = now + 0.1
            return [self._refresh()] if isinstance(err, ConflictError) else []
        if isinstance(err, ConflictError):
            # Usually our own write whose answer was lost (committed, then the connection reset): the
            # refreshed Lease will carry our incarnation. A real second process with our identity is
            # recognised by its incarnation in step() and reported there, so no warning here.
            self._log.debug("member Lease %s conflicted; reading it again", self.name)
            return [self._refresh()]
        st.failures += 1
        # Like a held shard: keep trying about every retry period, the member Lease must not lapse.
        delay = backoff(st.failures, err, self._timing, held=True, jitter=self._jitter)
        st.retry_at = held_retry_at(now, st.renew_started, delay, self._timing)
        self._log.warning("member Lease %s failed: %s", kind.value.replace("member_", ""), err)
        return []

    def _refresh(self) -> Write:
        self._state.in_flight = True
        return Write(WriteKind.MEMBER_REFRESH, self.name)
