"""Shard elections: one replica's per-shard state, the decisions taken on it, and the answers to its writes.

For each shard the replica tracks what it holds, what is in flight, its back-off and the epoch its Lease
has carried (:class:`ShardState`); the books of the handler run on it are
:class:`~shardlease.core.handlerruns.HandlerRuns`. A pass over a shard asks
:func:`~shardlease.core.elector.decide` what to do given that state and the cached Lease, and turns the
decision into commands: a conditional :class:`~shardlease.core.messages.Write` (acquire, renew, release,
retire, re-read), a :class:`~shardlease.core.messages.StartHandler` or
:class:`~shardlease.core.messages.StopHandler`. The answers come back as
:class:`~shardlease.core.messages.WriteDone`, :class:`~shardlease.core.messages.HandlerExited` and
:class:`~shardlease.core.messages.HandlerRaised`.

The rules kept here rather than in ``decide``, since they span several decisions:

* a grace fallback (a shard taken because its desired owner did not take it) is kept a lease, doubled
  each time the same owner fails again, at most ``FALLBACK_HOLD_MAX_DOUBLINGS`` times;
* losing a shard again and again backs off re-acquiring it (retry period doubled up to a lease), so a
  fight over a Lease does not turn into a tight loop of writes;
* a write whose outcome is unknown is read back before it is decided again, unless the shard is held;
* fencing epochs never go down for a shard: a created Lease starts above the highest epoch seen.

What the rest of the replica decides (the running generation and count, the assignment, eligibility,
stopping, whether handlers may start) comes in as :class:`Standing`, refreshed by the reactor before
each pass and event. Pure: no clock of its own, no I/O.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardlease.core.bodies import Writer
from shardlease.core.cache import LeaseCache, apply_answer
from shardlease.core.clock import Clock
from shardlease.core.elector import Action, HandlerPhase, ShardView, Timing, backoff, decide, held_retry_at, rv_of
from shardlease.core.handlerruns import (
    CRASH_LOOP_ERRORS,
    CRASH_LOOP_WINDOW,
    STUCK_CATCH_UP,
    Exit,
    HandlerRun,
    HandlerRuns,
    Stuck,
)
from shardlease.core.messages import (
    Command,
    ExtendHandler,
    HandlerExited,
    HandlerRaised,
    PublishOwned,
    Write,
    WriteDone,
    WriteKind,
)
from shardlease.core.records import ANNOTATION_EPOCH, LeaseRecord, shard_lease_name
from shardlease.core.writebudget import WriteBudget
from shardlease.errors import ConflictError

__all__ = [
    "CRASH_LOOP_ERRORS",
    "CRASH_LOOP_WINDOW",
    "FALLBACK_HOLD_MAX_DOUBLINGS",
    "STUCK_CATCH_UP",
    "ShardElections",
    "ShardState",
    "Standing",
]

#: A shard taken as a grace fallback is kept a lease, doubled each time the same owner fails again, at
#: most this many times (4 leases: a minute at the defaults). An owner blinded by a passing fault counts
#: as failing too, and the hold then delays recovery after the fault: 6 doublings (64 leases) once held a
#: chaos run's shard away from its recovered owner for 16 s at a 2 s lease.
FALLBACK_HOLD_MAX_DOUBLINGS = 2

@dataclass(slots=True)
class Standing:
    """What the rest of the replica has decided, as the shard elections read it."""

    generation: int = 0
    count: int = 0
    assignment: dict[int, str] = field(default_factory=dict)
    #: This replica may take shards: it runs a generation, is a live member, has no identity clash, and
    #: is not stopping.
    eligible: bool = False
    stopping: bool = False
    identity_conflict: bool = False
    #: The running generation's barrier has passed.
    may_start: bool = False
    adopted_at: float = float("-inf")
    #: The oldest member: it retires the Leases of shards no generation uses any more.
    sweeper: bool = False


@dataclass(slots=True)
class ShardState:
    """Everything this replica knows about one shard beyond its cached Lease record.

    Invariants (checked by :meth:`ShardElections.check_invariants`): a shard is in the held set exactly
    when ``held``; ``renew_started`` is set while held (and those of its ``handler``'s books).
    """

    index: int
    name: str
    #: The books of the handler run on this shard (shared with :class:`HandlerRuns`).
    handler: HandlerRun
    held: bool = False
    renew_started: float | None = None
    token: int | None = None
    in_flight: bool = False
    retry_at: float = 0.0
    failures: int = 0
    conflict_rv: str | None = None
    conflict_at: float | None = None
    hold_until: float = 0.0
    fallback_streak: int = 0
    fallback_owner: str | None = None
    leaving_since: float | None = None
    scheduled: float = float("inf")
    own_rv: str | None = None
    loss_streak: int = 0
    acquire_after: float = 0.0
    acquired_at: float = 0.0
    #: Created (not taken over) at this time and not yet confirmed by a later read of the group Lease:
    #: its handler waits (see :meth:`ShardElections.confirm_created`).
    unconfirmed_since: float | None = None
    #: The highest epoch seen on this shard's Lease (and its annotation text): a Lease we create starts
    #: above it, and one that lost its epoch gets it back, so fencing tokens never go down for the shard.
    epoch_floor: int = 0
    epoch_text: str | None = None
    #: With a write budget: the slot reserved for this shard's next renewal (``None``: none reserved).
    paced_at: float | None = None

    @property
    def errors(self) -> int:
        """How many times the current handler run raised."""
        return self.handler.errors


class ShardElections:
    """Every shard's state on this replica and the per-shard rules (see the module docstring)."""

    def __init__(self, *, group: str, identity: str, incarnation: str, timing: Timing, cache: LeaseCache,
                 clock: Clock, writer: Writer, log: logging.LoggerAdapter[Any] | logging.Logger, metrics: Any,
                 jitter: Callable[[float, float], float], on_held_change: Callable[[], None],
                 on_create: Callable[[], None], load_of: Callable[[int], float | None] | None = None) -> None:
        self._group = group
        self.identity = identity
        self.incarnation = incarnation
        self._timing = timing
        self._cache = cache
        self._clock = clock
        self._writer = writer
        self._log = log
        self._metrics = metrics
        self._jitter = jitter
        self._on_held_change = on_held_change
        self._on_create = on_create
        self._load_of = load_of
        self.ctx = Standing()
        self.states: list[ShardState] = []
        self.index_of: dict[str, int] = {}
        self._timers: list[tuple[float, int, int]] = []
        self._timer_seq = 0
        #: Shards to pass over at the next :meth:`run`.
        self.dirty: set[int] = set()
        self.handlers = HandlerRuns(timing.drain_timeout)
        self._out: list[Command] = []
        self._owned: frozenset[int] = frozenset()
        self.held: set[int] = set()
        self._owned_dirty = False
        #: Renewal spacing under ``max_write_rate`` (``None``: no budget, renew every renew interval).
        self.budget: WriteBudget | None = None
        if timing.max_write_rate is not None:
            self.budget = WriteBudget(timing.max_write_rate, renew_every=timing.renew_every,
                                      renew_deadline=timing.renew_deadline, retry_period=timing.retry_period)
            metrics.write_budget.set(timing.max_write_rate)
            self._report_budget()

    # ------------------------------------------------------------------ passes and events

    def touch_all(self) -> None:
        """Something every shard depends on changed: pass over all of them."""
        self.dirty.update(range(len(self.states)))

    def next_timer(self) -> float:
        return self._timers[0][0] if self._timers else float("inf")

    def run(self, now: float) -> list[Command]:
        """Pass over every shard that changed or whose timer fell due; the commands, in order, and a
        :class:`PublishOwned` last if the held set changed."""
        while self._timers and self._timers[0][0] <= now:
            at, _seq, index = heapq.heappop(self._timers)
            if self.states[index].scheduled == at:
                self.states[index].scheduled = float("inf")
                self.dirty.add(index)
        dirty, self.dirty = self.dirty, set()
        for index in sorted(dirty):
            self._shard_step(self.states[index], now)
        self._publish_owned()
        return self.take()

    def take(self) -> list[Command]:
        """The commands produced since the last call (by events)."""
        out, self._out = self._out, []
        return out

    def on_raised(self, event: HandlerRaised, now: float) -> None:
        self.handlers.raised(event, now)

    def confirm_created(self, started: float) -> None:
        """A read of the group Lease begun at ``started`` showed our generation: the handlers of shards
        created before it may start."""
        for st in self.states:
            if st.unconfirmed_since is not None and st.unconfirmed_since <= started:
                st.unconfirmed_since = None
                self.dirty.add(st.index)

    def settled(self) -> bool:
        """Stopping: no write in flight, nothing held but stuck shards, no lost shard's handler draining."""
        for st in self.states:
            if st.in_flight:
                return False
            if st.held and not st.handler.stuck:
                return False
            if not st.held and st.handler.phase is not HandlerPhase.IDLE and not st.handler.stuck:
                return False  # a lost shard's handler still draining
        return True

    def drop_all(self) -> PublishOwned | None:
        """At exit: nothing counts as held any more (Leases left held simply expire)."""
        for st in self.states:
            self._set_held(st, False)
        self._publish_owned()
        out = self.take()
        return next((c for c in out if isinstance(c, PublishOwned)), None)

    # ------------------------------------------------------------------ queries

    def owned(self) -> frozenset[int]:
        return self._owned

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` if the state contradicts itself (tests call this after every step)."""
        self.handlers.check_invariants()
        for st in self.states:
            assert (st.index in self.held) == st.held, (st.index, "held set out of step")
            assert not st.held or st.renew_started is not None, (st.index, "held without a renewal time")

    def stuck_shards(self) -> frozenset[int]:
        return self.handlers.stuck()

    def crashing_shards(self, now: float) -> list[int]:
        """Shards whose handler raised ``CRASH_LOOP_ERRORS`` times in its current run, the last within
        ``CRASH_LOOP_WINDOW`` (the replica then reports itself not ready)."""
        return self.handlers.crashing(now)

    def running_handlers(self) -> frozenset[int]:
        """Shards with a handler run that has not returned (at exit: the abandoned ones)."""
        return self.handlers.running()

    def oldest_renewal_age(self, now: float) -> float:
        starts = [st.renew_started for st in self.states if st.held and st.renew_started is not None]
        return max(0.0, now - min(starts)) if starts else 0.0

    def record_of(self, index: int) -> LeaseRecord | None:
        """Shard ``index``'s Lease as the cache has it (``None``: absent, or not listed)."""
        cached = self._cache.get(self.states[index].name)
        return cached.record if cached is not None else None

    def ensure(self, n: int) -> None:
        """Track shards ``0..n-1`` (a generation's count or span; never shrinks)."""
        self.handlers.ensure(n)
        for i in range(len(self.states), n):
            st = ShardState(i, shard_lease_name(self._group, i), self.handlers[i])
            self.states.append(st)
            self.index_of[st.name] = i

    def _schedule(self, st: ShardState, at: float | None) -> None:
        drain_at = self.handlers.drain_deadline(st.index)
        if drain_at is not None:
            at = drain_at if at is None else min(at, drain_at)
        if at is None or at >= st.scheduled:
            return
        st.scheduled = at
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, st.index))

    def _submit(self, write: Write) -> None:
        self._out.append(write)

    def on_exit(self, event: HandlerExited, now: float) -> None:
        outcome = self.handlers.exited(event)
        if outcome is Exit.STALE:
            return
        if outcome is Exit.STUCK_RETURNED:
            self._log.warning("stuck handler finally returned", extra={"shard": event.shard})
            self._metrics.stuck_handlers.set(len(self.handlers.stuck()))
        elif outcome is Exit.ON_ITS_OWN:
            self._log.info("handler returned on its own; the shard stays held", extra={"shard": event.shard})
        self.dirty.add(event.shard)

    def _start_handler(self, st: ShardState) -> None:
        assert st.renew_started is not None
        self._out.append(self.handlers.start(st.index, token=st.token or 0, count=self.ctx.count,
                                             valid_until=st.renew_started + self._timing.renew_deadline,
                                             generation=self.ctx.generation))

    def _stop_handler(self, st: ShardState, now: float, reason: str) -> None:
        if st.handler.run is None:
            self.handlers.stop(st.index, now)  # nothing runs: the shard's handler is idle
            return
        self._log.info("stopping handler (%s)", reason, extra={"shard": st.index})
        if st.leaving_since is None:
            st.leaving_since = now
        command = self.handlers.stop(st.index, now)
        if command is not None:
            self._out.append(command)
        self.dirty.add(st.index)

    def _view(self, st: ShardState, now: float) -> ShardView:
        cached = self._cache.get(st.name)
        record = cached.record if cached is not None else None
        if record is not None:
            self._note_epoch(st, record)
        # A Lease a new generation adds has been "absent" since our first list: its grace before a
        # fallback acquisition counts from when we adopted the generation, so its owner gets first go.
        observed = cached.observed if cached is not None else max(self._cache.absent_since(st.name),
                                                                               self.ctx.adopted_at)
        if st.conflict_rv is not None and rv_of(record) != st.conflict_rv:
            st.conflict_rv = None
            st.conflict_at = None
        return ShardView(
            identity=self.identity, record=record, observed=observed, desired=self.ctx.assignment.get(st.index),
            eligible=self.ctx.eligible, shutting_down=self.ctx.stopping, held=st.held,
            renew_started=st.renew_started, handler=st.handler.phase, in_flight=st.in_flight, retry_at=st.retry_at,
            conflict_rv=st.conflict_rv, conflict_at=st.conflict_at, hold_until=st.hold_until,
            own_rv=st.own_rv if st.held else None, handler_wanted=st.handler.wanted,
            incarnation=self.incarnation, identity_conflict=self.ctx.identity_conflict,
            acquire_after=st.acquire_after, generation=self.ctx.generation, retired=st.index >= self.ctx.count,
            may_start=self.ctx.may_start and st.unconfirmed_since is None, sweeper=self.ctx.sweeper)

    @staticmethod
    def _note_epoch(st: ShardState, record: LeaseRecord) -> None:
        """Remember the highest epoch the shard's Lease has carried (compared as text first: the
        annotation is the same on every renewal, so the common case costs one dict lookup)."""
        text = record.annotations.get(ANNOTATION_EPOCH)
        if text is not None and text != st.epoch_text:
            epoch = record.epoch
            if epoch > st.epoch_floor:
                st.epoch_floor, st.epoch_text = epoch, text

    def _shard_step(self, st: ShardState, now: float) -> None:
        if not st.held and not st.in_flight and st.handler.phase is HandlerPhase.IDLE and \
                not self._cache.covers(st.index):
            return  # not listed yet: an empty cache entry would wrongly read as "no Lease"
        for _ in range(4):
            view = self._view(st, now)
            decision = decide(view, now, self._timing)
            action = decision.action
            if action is Action.WAIT:
                self._check_stuck(st, now)
                self._schedule(st, decision.at)
                return
            if self.budget is not None:
                if action is Action.RENEW:
                    at = self._paced(st, now)
                    if at > now:
                        self._check_stuck(st, now)
                        self._schedule(st, at)
                        return
                st.paced_at = None
            if action is Action.LOST:
                self._lose(st, now, decision.reason)
                continue
            if action is Action.STOP_HANDLER:
                self._stop_handler(st, now, decision.reason)
                continue
            if action is Action.START_HANDLER:
                self._log.info("starting handler: %s", decision.reason, extra={"shard": st.index})
                self._start_handler(st)
                continue
            if action is Action.ACQUIRE:
                self._acquire(st, view, decision.reason)
            elif action is Action.RENEW:
                self._renew(st, view)
            elif action is Action.RELEASE:
                self._release(st, view)
            elif action is Action.RETIRE:
                self._retire(st, view)
            elif action is Action.REFRESH:
                st.in_flight = True
                self._submit(Write(WriteKind.REFRESH, st.name, shard=st.index, sent_rv=st.conflict_rv or ""))
            self._check_stuck(st, now)
            if st.held and st.renew_started is not None:
                self._schedule(st, st.renew_started + self._timing.renew_deadline)
            return

    def _paced(self, st: ShardState, now: float) -> float:
        """With a write budget, when a renewal ``decide`` finds due may go (``<= now``: at once): in the
        slot it reserves, never past the bound (``core/writebudget.py``)."""
        budget = self.budget
        assert budget is not None and st.renew_started is not None
        if st.paced_at is not None:
            return st.paced_at
        forced = budget.forced
        at = budget.reserve(now, st.renew_started)
        if budget.forced != forced:
            self._metrics.write_budget_forced.inc()
        if at > now:
            st.paced_at = at
        return at

    def _report_budget(self) -> None:
        """Publish the budget's plan as metrics."""
        assert self.budget is not None
        plan = self.budget.plan
        self._metrics.writes_asked.set(plan.asked)
        self._metrics.writes_planned.set(plan.planned)
        self._metrics.budget_renew_interval.set(plan.interval)
        self._metrics.write_budget_exceeded.set(1 if plan.exceeded else 0)

    def _check_stuck(self, st: ShardState, now: float) -> None:
        stuck, again_at = self.handlers.check_stuck(st.index, now)
        if stuck is Stuck.NOT_YET:
            self._schedule(st, again_at)
            return
        if stuck is not Stuck.NOW:
            return
        self._metrics.stuck_handlers.set(len(self.handlers.stuck()))
        self._log.error("handler did not return within drain_timeout (%.1fs); keeping the shard held and "
                        "reporting not ready", self._timing.drain_timeout, extra={"shard": st.index})

    def _lose(self, st: ShardState, now: float, reason: str) -> None:
        # Rate-limited: whatever made us lose it (a fight over the Lease, an editing tool), taking it back
        # at once, every time, is how a misconfiguration turns into a tight loop of writes and log lines.
        st.loss_streak += 1
        pause = min(self._timing.retry_period * 2 ** min(st.loss_streak - 1, 5), self._timing.lease_duration)
        st.acquire_after = now + pause
        level = logging.WARNING if st.loss_streak <= 3 or st.loss_streak % 10 == 0 else logging.DEBUG
        self._log.log(level, "lost shard: %s%s", reason,
                      f" (lost {st.loss_streak} times in a row; next try in {pause:.1f}s)" if st.loss_streak > 1 else "",
                      extra={"shard": st.index})
        self._metrics.losses.inc()
        self._set_held(st, False)
        st.hold_until = 0.0
        if st.handler.run is not None and st.handler.phase is HandlerPhase.RUNNING:
            self._stop_handler(st, now, "lost")

    def _acquire(self, st: ShardState, view: ShardView, reason: str) -> None:
        record = view.record
        body, _token = self._writer.acquire(st.index, record, self._clock.now(), self.ctx.generation, st.epoch_floor)
        self._log.debug("acquiring (%s)", reason, extra={"shard": st.index})
        st.in_flight = True
        self._submit(Write(WriteKind.CREATE if record is None else WriteKind.ACQUIRE, st.name, shard=st.index,
                           sent_rv=rv_of(record), body=body, fallback=view.desired != self.identity))

    def _renew(self, st: ShardState, view: ShardView) -> None:
        record = view.record
        assert record is not None and st.renew_started is not None
        st.paced_at = None
        lost_epoch = st.epoch_text is not None and record.annotations.get(ANNOTATION_EPOCH) != st.epoch_text
        load = self._load_of(st.index) if self._load_of is not None else None
        body = self._writer.renew(st.index, record, self._clock.now(), st.epoch_floor if lost_epoch else None, load)
        st.in_flight = True
        self._submit(Write(WriteKind.RENEW, st.name, shard=st.index, sent_rv=record.resource_version, body=body,
                           deadline=st.renew_started + self._timing.renew_deadline))

    def _release(self, st: ShardState, view: ShardView) -> None:
        record = view.record
        if record is None:
            self._set_held(st, False)
            return
        body = self._writer.release(st.index, record, self._clock.now(), self.ctx.generation, st.epoch_floor)
        st.in_flight = True
        deadline = st.renew_started + self._timing.renew_deadline if st.held and st.renew_started else None
        self._submit(Write(WriteKind.RELEASE, st.name, shard=st.index, sent_rv=record.resource_version, body=body,
                           deadline=deadline))

    def _retire(self, st: ShardState, view: ShardView) -> None:
        record = view.record
        st.in_flight = True
        self._log.info("retiring the Lease of a shard the group no longer has", extra={"shard": st.index})
        self._submit(Write(WriteKind.RETIRE_CREATE if record is None else WriteKind.RETIRE, st.name, shard=st.index,
                           sent_rv=rv_of(record), body=self._writer.retire(st.index, record, self._clock.now(),
                                                                           self.ctx.generation, st.epoch_floor)))

    def _acquired(self, st: ShardState, record: LeaseRecord | None, done: WriteDone, now: float) -> None:
        if record is None or record.holder != self.identity:
            self._log.warning("acquire response does not name us; ignoring it", extra={"shard": st.index})
            return
        self._set_held(st, True)
        st.renew_started = done.started
        st.acquired_at = done.started
        self._note_epoch(st, record)
        st.token = record.token
        st.hold_until = 0.0
        if done.write.fallback:
            # Taken because its desired owner did not take it. Keep it a while before offering it back,
            # and twice as long each time the same owner fails again, so an owner that is live but not
            # taking shards costs a handler restart every now and then rather than every few seconds.
            owner = self.ctx.assignment.get(st.index)
            st.fallback_streak = st.fallback_streak + 1 if owner == st.fallback_owner else 1
            st.fallback_owner = owner
            doublings = min(st.fallback_streak - 1, FALLBACK_HOLD_MAX_DOUBLINGS)
            st.hold_until = done.started + self._timing.lease_duration * 2 ** doublings
        else:
            st.fallback_streak = 0
            st.fallback_owner = None
        st.leaving_since = None
        self._metrics.acquisitions.inc()
        valid_until = done.started + self._timing.renew_deadline
        if now >= valid_until:
            return  # acquired too late to be safe; decide() reports it lost and we start over
        if st.handler.run is not None:
            return
        if self.ctx.stopping:
            st.handler.wanted = False  # acquired as we began to stop: hand it straight back
            return
        # An update was conditional on what we saw; a create succeeds whatever the group did meanwhile,
        # so its handler waits for a read of the group Lease that confirms our generation.
        created = done.write.kind is WriteKind.CREATE
        st.unconfirmed_since = now if created else None
        waits = ("its handler waits for a read of the group Lease" if created
                 else "its handler waits for the switch to complete" if not self.ctx.may_start else "")
        self._log.info("acquired (token %d, generation %d%s)%s", st.token, self.ctx.generation,
                       ", grace fallback" if done.write.fallback else "", f"; {waits}" if waits else "",
                       extra={"shard": st.index})
        if created:
            self._on_create()
        if waits:
            st.handler.wanted = True  # started by decide() once nothing holds it back
            return
        self._start_handler(st)

    def _on_write_error(self, st: ShardState, done: WriteDone, now: float) -> None:
        err = done.error
        assert err is not None
        kind = done.write.kind
        self._metrics.api_error(err.label)
        if kind is WriteKind.REFRESH:
            st.failures += 1
            # The next read a retry period later; for a shard we do not hold, backing off like any failed
            # write once reads keep failing (lost answers are common while the server is unreachable).
            extra = 0.0 if st.held else backoff(st.failures, err, self._timing, held=False, jitter=self._jitter)
            st.conflict_at = now + max(0.0, extra - self._timing.retry_period)
            return
        # A write that went out without an answer (outcome unknown) may have landed: read back like after a
        # conflict (the watch, else a GET) before deciding again; sent again blindly it would meet itself
        # as a Conflict or AlreadyExists. Not while held: the renew deadline runs, and the conditional
        # write retried as before cannot apply twice (if the first landed, its 409 is read back here).
        unknown = err.outcome_unknown and not st.held
        if isinstance(err, ConflictError) or unknown:
            st.conflict_rv = done.write.sent_rv
            st.conflict_at = now
            self._log.debug("%s %s at resourceVersion %r", kind.value, "may have landed" if unknown else
                            "conflicted", done.write.sent_rv, extra={"shard": st.index})
            return
        st.failures += 1
        delay = backoff(st.failures, err, self._timing, held=st.held, jitter=self._jitter)
        st.retry_at = held_retry_at(now, st.renew_started, delay, self._timing) if st.held else now + delay
        level = logging.DEBUG if kind is WriteKind.ACQUIRE and st.failures < 3 else logging.WARNING
        self._log.log(level, "%s failed: %s", kind.value, err, extra={"shard": st.index})

    def _set_held(self, st: ShardState, held: bool) -> None:
        if not held:
            st.unconfirmed_since = None
            st.paced_at = None
        if st.held != held:
            st.held = held
            self._owned_dirty = True
            self._on_held_change()
            if held:
                self.held.add(st.index)
            else:
                self.held.discard(st.index)

    def _publish_owned(self) -> None:
        if not self._owned_dirty:
            return
        self._owned_dirty = False
        owned = frozenset(self.held)
        if owned == self._owned:
            return
        self._owned = owned
        self._metrics.shards_held.set(len(owned))
        self._out.append(PublishOwned(owned))
        if self.budget is not None:
            turned = self.budget.replan(len(owned))
            self._report_budget()
            if turned is not None and turned.exceeded:
                self._log.warning("write budget cannot be met: %s", turned.describe())
            elif turned is not None:
                self._log.info("write budget met again: %d shard Leases + the member Lease need %.3g writes/s "
                               "(max_write_rate %g), each shard renewed every %.3gs", turned.held, turned.planned,
                               turned.rate, turned.interval)

    def on_write(self, done: WriteDone, now: float) -> None:
        """The answer to a write of shard ``done.write.shard``'s Lease."""
        write, err = done.write, done.error
        assert write.shard is not None
        st = self.states[write.shard]
        st.in_flight = False
        self.dirty.add(st.index)
        if err is not None:
            self._on_write_error(st, done, now)
            return
        st.failures = 0
        st.retry_at = 0.0
        st.conflict_rv = None
        st.conflict_at = None
        if write.kind is WriteKind.REFRESH and done.obj is None:
            self._cache.delete(st.name, "")
            return
        record = apply_answer(self._cache, done)
        if write.kind in (WriteKind.RETIRE, WriteKind.RETIRE_CREATE, WriteKind.REFRESH):
            return
        answered = done.finished if done.finished is not None else now  # latencies end at the answer
        if record is not None:
            st.own_rv = record.resource_version
        if write.kind in (WriteKind.CREATE, WriteKind.ACQUIRE):
            self._acquired(st, record, done, now)
        elif write.kind is WriteKind.RENEW:
            if st.held:
                if st.loss_streak and done.started - st.acquired_at >= self._timing.lease_duration:
                    st.loss_streak = 0  # a tenure that lasted a lease duration: the trouble is over
                st.renew_started = done.started
                self._metrics.renew_seconds.observe(max(0.0, answered - done.started))
                if st.handler.run is not None:
                    self._out.append(ExtendHandler(st.index, st.handler.run, done.started + self._timing.renew_deadline))
        elif write.kind is WriteKind.RELEASE:
            was_held = st.held
            self._set_held(st, False)
            st.hold_until = 0.0
            self._metrics.releases.inc()
            if st.leaving_since is not None:
                self._metrics.handoff_seconds.observe(max(0.0, answered - st.leaving_since))
                st.leaving_since = None
            self._log.info("released" if was_held else "released a stale lease in our name", extra={"shard": st.index})
