"""Per-shard election decisions: a pure function from what we know to what to do next.

Everything that touches time or the network lives elsewhere (``manager.py`` does the I/O, ``cache.py``
records when each Lease was observed). Keeping the rules in one side-effect-free function means every
timing edge (expiry, renew deadline, handoff, grace fallback, conflicts) can be tested with a fake
clock and no server, and the manager can be read as "ask ``decide``, do what it says".

The rules follow client-go's ``LeaderElector`` where a rule exists there:

* Expiry of a foreign holder is judged from the *local monotonic time at which its record was last
  seen to change* plus its ``leaseDurationSeconds``; the record's ``renewTime`` is never compared with
  our wall clock, so clock offsets between pods do not matter.
* A holder gives up (stops its handler) once ``renew_deadline`` has passed since the *start* of its last
  successful renewal. The start, not the end: the server may have committed the write the instant the
  request left, and peers start counting from whenever they observe it, which is later still. With
  ``renew_deadline < lease_duration`` we therefore stop before anyone may take over.

Decision table (first matching row wins), ``held`` meaning "our last successful write made us the
holder and we have not given it up since":

====  ==========================================================  =================================
held  condition                                                    action
====  ==========================================================  =================================
yes   now >= last renew start + renew_deadline                     LOST (stop handler, drop it)
yes   cached record absent or not ours (another holder, or our
      identity with another process's incarnation)                 LOST (someone overwrote it)
yes   cached record is not the version our last write produced,
      and its writer is unknown (no incarnation to compare)        LOST (written by someone else)
any   a write for this Lease is in flight                          WAIT (until the deadline if held)
any   our last write hit 409 (or, not held, its outcome is
      unknown) and the cache still shows the RV it was sent at     WAIT, then REFRESH after retry_period
yes   held under an older generation (the group resharded) and
      the handler is running / draining / has returned             STOP_HANDLER / RENEW or WAIT /
                                                                   (after any error back-off) ACQUIRE
                                                                   in place if desired here under the
                                                                   new count, else RELEASE
yes   not desired here, but taken as a grace fallback and its
      minimum hold (lease_duration, doubling per repeat) not over   START_HANDLER if it waits to start
                                                                   (a create's confirmation came), else
                                                                   RENEW when due, else WAIT
yes   leaving (not desired here, shutting down, or another live
      process owns our identity) and the handler is running       STOP_HANDLER
yes   leaving and the handler has returned                         RELEASE
yes   desired here, handler returned after a stop (not by itself),
      and the switch to our generation is complete                 START_HANDLER (same tenure)
yes   otherwise (desired here, or handler still draining/stuck)    RENEW when due, else WAIT
no    a handler from an earlier tenure has not returned yet        WAIT (never two handlers)
no    error backoff not over                                       WAIT until retry time
no    record is ours (stale tenure), desired here and eligible     ACQUIRE at once (new token), unless
                                                                   paused after a loss (WAIT)
no    record is ours (stale tenure) and we may not keep it         RELEASE (so the owner need not wait)
no    record stamped with a newer generation than ours             WAIT (we follow the group Lease)
no    record held by someone else and not expired                  WAIT until expiry
no    retired index (>= the running count), free, stamped older,
      during a switch                                              RETIRE if we are the sweeper, else WAIT
no    we may not take shards (not a live member, count mismatch,
      shutting down)                                               WAIT
no    paused after losing the shard (``acquire_after``)            WAIT (never a tight re-take loop)
no    free (absent / released / expired / stale) and desired here  ACQUIRE
no    free, desired elsewhere, grace since it became free is over  ACQUIRE (fallback)
no    free, desired elsewhere, grace not over                      WAIT until free time + grace
====  ==========================================================  =================================

"Ours" means our identity *and* our incarnation (a random id per process, ``records.ANNOTATION_INCARNATION``).
A record with our identity but another incarnation was written by a second process started with the same
identity: it is a foreign holder like any other and must expire before we take the shard. A record
without an incarnation (an older shardlease, another tool) is judged by the identity alone, as before.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardlease.core.records import LeaseRecord
from shardlease.errors import ApiError, Throttled

__all__ = [
    "Action",
    "Decision",
    "HandlerPhase",
    "ShardView",
    "Timing",
    "decide",
    "expiry_of",
    "backoff",
    "held_retry_at",
    "is_ours",
    "member_expiry",
    "rv_of",
]


class Action(enum.Enum):
    WAIT = "wait"
    ACQUIRE = "acquire"
    RENEW = "renew"
    RELEASE = "release"
    STOP_HANDLER = "stop_handler"
    START_HANDLER = "start_handler"
    LOST = "lost"
    REFRESH = "refresh"
    RETIRE = "retire"


class HandlerPhase(enum.Enum):
    """Where this replica's handler for one shard is. ``IDLE`` means no handler code is running."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class Timing:
    """The durations every decision is made from, in seconds (monotonic clock)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    handoff_grace: float = 4.0
    drain_timeout: float = 30.0
    renew_interval: float | None = None
    #: Writes per second this replica's Leases may cost (``None``: no budget), see ``core/writebudget.py``.
    max_write_rate: float | None = None

    @property
    def renew_every(self) -> float:
        """How often a held Lease is renewed when all is well (``renew_interval``, else the retry period)."""
        return self.renew_interval if self.renew_interval is not None else self.retry_period

    @property
    def lease_duration_seconds(self) -> int:
        """What we write into ``leaseDurationSeconds``: an int32 > 0, rounded up so peers wait long enough."""
        return max(1, math.ceil(self.lease_duration))

    @classmethod
    def from_config(cls, config: Any) -> Timing:
        """Build from a ``ShardConfig`` (duck-typed so this module stays free of pydantic)."""
        grace = getattr(config, "effective_handoff_grace", None)
        if grace is None:
            grace = config.handoff_grace if config.handoff_grace is not None else 2 * config.retry_period
        return cls(
            lease_duration=float(config.lease_duration),
            renew_deadline=float(config.renew_deadline),
            retry_period=float(config.retry_period),
            handoff_grace=float(grace),
            drain_timeout=float(config.drain_timeout),
            renew_interval=getattr(config, "renew_interval", None),
            max_write_rate=getattr(config, "max_write_rate", None),
        )


@dataclass(frozen=True, slots=True)
class ShardView:
    """Everything ``decide`` may look at for one shard, frozen at one instant.

    ``observed`` is the monotonic time the record was last seen to change (for an absent record: since
    when it has been known to be absent). ``desired`` is the owner the assignment names, ``None`` when
    no member is live. ``eligible`` is False when this replica must not take shards at all (its member
    Lease is not live, it has not joined a generation of the group yet, or it is shutting down).
    ``incarnation`` is this process's id (``None`` in callers that predate it: identity alone then
    decides what is ours). ``identity_conflict`` is True while another live process holds the member
    Lease of our identity: we then hand back whatever we hold and take nothing. ``acquire_after``
    pauses (re-)acquisition only, after we lost the shard: releasing is never delayed by it.
    """

    identity: str
    record: LeaseRecord | None
    observed: float
    desired: str | None
    eligible: bool = True
    shutting_down: bool = False
    held: bool = False
    renew_started: float | None = None
    handler: HandlerPhase = HandlerPhase.IDLE
    in_flight: bool = False
    retry_at: float = 0.0
    conflict_rv: str | None = None
    conflict_at: float | None = None
    hold_until: float = 0.0
    own_rv: str | None = None
    handler_wanted: bool = True
    incarnation: str | None = None
    identity_conflict: bool = False
    acquire_after: float = 0.0
    generation: int = 1
    """The group generation this replica runs; a Lease stamped lower was last written under an older one."""
    retired: bool = False
    """The shard's index is not below the running count: only an earlier generation used it."""
    may_start: bool = True
    """The switch to our generation is complete (no shard Lease below the span is stamped lower)."""
    sweeper: bool = False
    """We stamp retired Leases nobody holds (the oldest live member does, one writer not N)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now, and (for WAIT) when the answer may change without any new event (``None``: only
    an event such as a cache change, a finished write or a handler exit can change it)."""

    action: Action
    at: float | None = None
    reason: str = ""


def rv_of(record: LeaseRecord | None) -> str:
    """The resourceVersion a conditional write would be based on; ``""`` stands for "absent"."""
    return record.resource_version if record is not None else ""


def expiry_of(record: LeaseRecord, observed: float, timing: Timing) -> float:
    """When a foreign holder's claim runs out, judged as client-go does.

    An unreadable or non-positive ``leaseDurationSeconds`` (a broken or foreign record) is read as our
    own lease duration: a conservative guess that neither grabs the shard at once nor waits forever.
    """
    duration = record.lease_duration_seconds
    if duration is None or duration <= 0:
        return observed + timing.lease_duration
    return observed + float(duration)


def is_ours(record: LeaseRecord, identity: str, incarnation: str | None) -> bool:
    """The record names this process: our identity, and our incarnation when both sides have one."""
    if record.holder != identity:
        return False
    return incarnation is None or record.incarnation is None or record.incarnation == incarnation


def _holder_state(record: LeaseRecord) -> str:
    """Classify a record's holder: ``free`` (released / field absent), ``self``-less ``other`` otherwise.

    A ``holderIdentity`` of the wrong type (possible only from a non-conforming writer) is treated as a
    holder we do not know, i.e. it must expire before anyone takes over.
    """
    if record.holder == "":
        return "free"
    if record.holder is None:
        spec = record.raw.get("spec")
        if isinstance(spec, dict) and "holderIdentity" in spec and spec["holderIdentity"] is not None:
            return "other"
        return "free"
    return "named"


def _renew_or_wait(view: ShardView, now: float, timing: Timing, deadline: float, why: str) -> Decision:
    assert view.renew_started is not None
    due = max(view.renew_started + timing.renew_every, view.retry_at)
    if now >= due:
        return Decision(Action.RENEW, reason=why)
    return Decision(Action.WAIT, at=min(due, deadline), reason=f"renew later ({why})")


def decide(view: ShardView, now: float, timing: Timing) -> Decision:
    """The next step for one shard. Pure: no I/O, no clock reads, no mutation."""
    record = view.record

    if view.held:
        started = view.renew_started if view.renew_started is not None else -math.inf
        deadline = started + timing.renew_deadline
        if now >= deadline:
            return Decision(Action.LOST, reason="renew deadline passed without a successful renewal")
        if not view.in_flight and (record is None or not is_ours(record, view.identity, view.incarnation)):
            # Not while a write is in flight: our own write may be what the cache is about to show.
            if record is None:
                who = "deleted"
            elif record.holder == view.identity:
                who = f"by another process with our identity, incarnation {record.incarnation!r}"
            else:
                who = f"now held by {record.holder!r}"
            return Decision(Action.LOST, reason=f"lease was overwritten ({who})")
        if not view.in_flight and view.own_rv is not None and record is not None \
                and record.resource_version != view.own_rv \
                and (view.incarnation is None or record.incarnation is None):
            # Still our name, but a write whose writer we cannot tell: another process with our identity
            # (from a version without incarnations), or a tool editing the Lease. Give it up rather than
            # risk two handlers. With our incarnation on it, it can only be a write of ours that landed
            # after we stopped waiting for its answer: the Lease is still ours.
            return Decision(Action.LOST, reason="lease was written by someone else under our identity")
        if view.in_flight:
            return Decision(Action.WAIT, at=deadline, reason="write in flight")
        conflict = _conflict_pending(view, now, timing)
        if conflict is not None:
            if conflict.action is Action.WAIT:
                return Decision(Action.WAIT, at=min(conflict.at or deadline, deadline), reason=conflict.reason)
            return conflict
        must_leave = view.shutting_down or view.identity_conflict
        leaving = must_leave or view.desired != view.identity
        if record is not None and record.generation < view.generation:
            # Held under the generation before a reshard: its keys are not this shard's any more. Stop
            # the old run, then stamp the Lease with our generation: in place when the new count keeps
            # the shard here (a new tenure and token), else by releasing it.
            if view.handler is HandlerPhase.RUNNING:
                return Decision(Action.STOP_HANDLER, reason=f"the group switched to generation {view.generation}")
            if view.handler is HandlerPhase.STOPPING:
                return _renew_or_wait(view, now, timing, deadline, "handler draining before a reshard")
            if now < view.retry_at:
                return Decision(Action.WAIT, at=min(view.retry_at, deadline), reason="backoff after an error")
            if leaving:
                return Decision(Action.RELEASE, reason=f"hand it over under generation {view.generation}")
            return Decision(Action.ACQUIRE, reason=f"take it again under generation {view.generation}")
        if leaving and not must_leave and now < view.hold_until:
            # Taken as a grace fallback: keep it a little while so a slow owner does not cause churn.
            if view.handler is HandlerPhase.IDLE and view.handler_wanted and view.may_start:
                # Its handler could not start on the acquisition (a create waits for a read of the group
                # Lease): it starts now, or the shard would be held without work for the whole hold.
                return Decision(Action.START_HANDLER, reason="fallback hold: its handler may start now")
            decision = _renew_or_wait(view, now, timing, deadline, "fallback hold")
            if decision.action is Action.WAIT:
                return Decision(Action.WAIT, at=min(decision.at or deadline, view.hold_until), reason=decision.reason)
            return decision
        if leaving:
            if view.handler is HandlerPhase.RUNNING:
                why = ("shutting down" if view.shutting_down
                       else "another process owns our identity" if view.identity_conflict else "shard moves away")
                return Decision(Action.STOP_HANDLER, reason=why)
            if view.handler is HandlerPhase.IDLE:
                if now < view.retry_at:
                    return Decision(Action.WAIT, at=min(view.retry_at, deadline), reason="release backoff")
                return Decision(Action.RELEASE, reason="handler returned; hand the shard over")
            # Handler still draining (or stuck past drain_timeout): keep the Lease so nobody else runs it.
            return _renew_or_wait(view, now, timing, deadline, "handler draining")
        if view.handler is HandlerPhase.IDLE and view.handler_wanted and view.may_start:
            # Desired here again after a stop (a short membership flap): the old run has returned, so a
            # new one may start within the same tenure (same token: the holder did not change).
            return Decision(Action.START_HANDLER, reason="held and desired here, its handler not running (after a "
                                                         "stop, a switch or a create's confirmation)")
        return _renew_or_wait(view, now, timing, deadline, "holder")

    # ---- not held by us (locally) ----
    if view.in_flight:
        return Decision(Action.WAIT, reason="write in flight")
    if view.handler is not HandlerPhase.IDLE:
        return Decision(Action.WAIT, reason="previous handler has not returned")
    conflict = _conflict_pending(view, now, timing)
    if conflict is not None:
        return conflict
    if now < view.retry_at:
        return Decision(Action.WAIT, at=view.retry_at, reason="backoff after an error")

    if record is not None and record.generation > view.generation:
        return Decision(Action.WAIT, reason=f"written under generation {record.generation}, newer than ours")
    if record is None:
        free_at = view.observed
    else:
        state = _holder_state(record)
        if state == "named" and is_ours(record, view.identity, view.incarnation):
            # Ours, but not our current tenure (a renewal that landed after we gave up, or a restart of a
            # version without incarnations).
            if view.shutting_down or not view.eligible or view.desired != view.identity:
                return Decision(Action.RELEASE, reason="stale lease in our name")
            if now < view.acquire_after:
                return Decision(Action.WAIT, at=view.acquire_after, reason="paused after losing it")
            return Decision(Action.ACQUIRE, reason="lease names us from an earlier tenure")
        if state == "free":
            free_at = view.observed
        else:
            expires = expiry_of(record, view.observed, timing)
            if now < expires:
                return Decision(Action.WAIT, at=expires, reason=f"held by {record.holder!r}")
            free_at = expires

    if view.retired:
        if view.sweeper and not view.may_start and not view.shutting_down \
                and (record is None or record.generation < view.generation):
            return Decision(Action.RETIRE, reason=f"retired by generation {view.generation}; nobody holds it")
        return Decision(Action.WAIT, reason="retired shard")
    if not view.eligible or view.shutting_down:
        return Decision(Action.WAIT, reason="not taking shards")
    if now < view.acquire_after:
        return Decision(Action.WAIT, at=view.acquire_after, reason="paused after losing it")
    if view.desired == view.identity:
        return Decision(Action.ACQUIRE, reason="free and desired here")
    if view.desired is None:
        return Decision(Action.WAIT, reason="no live members")
    fallback_at = free_at + timing.handoff_grace
    if now >= fallback_at:
        return Decision(Action.ACQUIRE, reason=f"desired owner {view.desired!r} did not take it within the grace")
    return Decision(Action.WAIT, at=fallback_at, reason=f"free, waiting for {view.desired!r}")


def _conflict_pending(view: ShardView, now: float, timing: Timing) -> Decision | None:
    """After a 409 we re-read through the watch cache; only if it has not moved on do we GET."""
    if view.conflict_rv is None:
        return None
    if rv_of(view.record) != view.conflict_rv:
        return None  # the cache has moved past the version we conflicted on
    since = view.conflict_at if view.conflict_at is not None else now
    if now >= since + timing.retry_period:
        return Decision(Action.REFRESH, reason="cache did not move past the conflicting version")
    return Decision(Action.WAIT, at=since + timing.retry_period, reason="waiting for the watch after a conflict")


def held_retry_at(now: float, renew_started: float | None, backoff: float, timing: Timing) -> float:
    """When to retry a failed renewal of something we hold (a shard or our member Lease).

    Normally ``now + backoff`` (back-off and 429 Retry-After are honoured). In the last half retry
    period before the renew deadline we retry every eighth of a retry period instead -- a handful of
    requests at most -- because losing the Lease costs a handoff, more requests and a handler restart.
    Once the deadline has passed the Lease is lost anyway and the plain back-off applies again:
    retrying fast for ever against a partitioned API server would be a retry storm.
    """
    retry_at = now + backoff
    if renew_started is None:
        return retry_at
    deadline = renew_started + timing.renew_deadline
    if now >= deadline:
        return retry_at
    last_window = deadline - timing.retry_period / 2
    if retry_at > last_window:
        retry_at = max(min(retry_at, last_window), now + timing.retry_period / 8)
    return retry_at


def member_expiry(record: LeaseRecord, observed: float, timing: Timing, *,
                  wall_now: _dt.datetime | None, seen_change: bool) -> float:
    """When a member Lease stops counting as live (monotonic time; ``<= now`` means not live).

    The rule is client-go's: observed change + ``leaseDurationSeconds``. It has one blind spot: a
    replica that has just started sees every member Lease for the first time at its initial list,
    so a member that died a lease duration ago looks alive for another whole lease duration. Its
    ring then disagrees with its peers' and the group stays unbalanced that long (measured: 19 s to
    balance after crash + scale-up at the default timings). So, for a record never seen to change
    since we started, we also look at ``renewTime``: one older than the renew deadline by our wall
    clock belongs to a member that has not renewed in time and is treated as gone.

    This reads the wall clock, which the shard rules never do, and that is safe here: membership
    only shapes the assignment (who *should* own a shard); who *may* take a shard Lease is still
    decided by ``decide`` from observed times alone. A skewed clock can at worst misjudge a live
    member until its next renewal is seen, one retry period later.
    """
    expires = expiry_of(record, observed, timing)
    if seen_change or wall_now is None or record.renew_time is None:
        return expires
    age = (wall_now - record.renew_time).total_seconds()
    if age > timing.renew_deadline:
        return min(expires, observed)
    return expires


def backoff(failures: int, err: ApiError, timing: Timing, *, held: bool,
            jitter: Callable[[float, float], float] = random.uniform) -> float:
    """The one retry policy: how long to wait after the ``failures``-th failure in a row.

    A 429's Retry-After is honoured as given. While we hold what failed, retry about every retry period
    (client-go does, and :func:`held_retry_at` tightens it near the deadline); otherwise back off
    exponentially from the retry period up to the lease duration. Jittered to spread a fleet's retries.
    """
    if isinstance(err, Throttled) and err.retry_after is not None:
        return float(err.retry_after)
    base = timing.retry_period
    if held:
        return base * jitter(0.5, 1.0)
    return min(base * 2.0 ** min(failures - 1, 4), max(base, timing.lease_duration)) * jitter(0.5, 1.0)
