"""The replica's decisions as a deterministic state machine: events in, commands out.

``ShardManager`` is a thin threaded shell around a :class:`Reactor`. The shell owns the threads, the
``LeaseStore`` and the handler runners; the reactor owns every rule and every piece of state, and never
sleeps, reads a clock of its own or touches the network. Each call gets ``now`` (monotonic seconds);
wall time, needed only for the ``renewTime`` written into Leases, comes from the injected ``Clock``.

The vocabulary:

* events the shell feeds in: :class:`WriteDone` (a request finished), :class:`HandlerExited`,
  :class:`HandlerRaised`, plus changes of the watch-fed :class:`~shardlease.core.cache.LeaseCache` that the
  reactor reads, and :meth:`Reactor.request_stop`;
* commands it returns from :meth:`Reactor.step`: :class:`Write` (one conditional request),
  :class:`StartHandler`, :class:`StopHandler`, :class:`ExtendHandler` (a renewal pushed
  ``shard.valid()`` further out), :class:`PublishOwned` (the held set changed), and, with ``targeted``,
  :class:`WatchShards` (the shard Leases worth watching changed).

Targeted watching (issue 9). A replica need not read every renewal of every shard: it watches the
member Leases plus the shard Leases it holds, is assigned, or would inherit if any one peer failed
(:func:`~shardlease.core.assignment.inheritable`), so failover still finds the dead holder's Leases
observed for a whole lease. The set grows at once and shrinks after a lease duration (one relist for a
whole rebalance, not one per released shard). A shard the cache does not cover yet is left alone
unless we hold it: its absence from the cache means "not listed yet", not "does not exist".

A shell runs ``handle`` for each event, then ``step``, carries out the commands, and sleeps until
``next_wakeup`` or the next event. Because nothing here waits, the same reactor runs in table tests and
deterministic simulations with a fake clock and an in-memory store (tests/unit/test_reactor.py).

Per-shard timing decisions are :func:`shardlease.core.elector.decide`'s; membership is
:func:`shardlease.core.membership.compute_membership`'s; Lease bodies are :class:`shardlease.core.bodies.Writer`'s.
This module decides when to ask them and keeps the state they are asked about.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardlease.core.assignment import assign, inheritable
from shardlease.core.bodies import Writer
from shardlease.core.cache import LeaseCache, apply_answer
from shardlease.core.clock import Clock
from shardlease.core.elector import Action, HandlerPhase, ShardView, Timing, backoff, decide, held_retry_at, rv_of
from shardlease.core.groupfollow import GroupFollower
from shardlease.core.member import MemberLease
from shardlease.core.messages import (
    Command,
    Event,
    ExtendHandler,
    HandlerExited,
    HandlerRaised,
    PublishOwned,
    StartHandler,
    StopHandler,
    WatchShards,
    Write,
    WriteDone,
    WriteKind,
)
from shardlease.core.records import (
    ANNOTATION_EPOCH,
    LeaseRecord,
    format_problems,
    shard_lease_name,
)
from shardlease.core.roster import Roster
from shardlease.core.watchplan import WatchPlan, wanted_shards
from shardlease.errors import ConflictError

__all__ = [
    "CRASH_LOOP_ERRORS",
    "CRASH_LOOP_WINDOW",
    "FALLBACK_HOLD_MAX_DOUBLINGS",
    "STUCK_CATCH_UP",
    "Command",
    "Event",
    "ExtendHandler",
    "HandlerExited",
    "HandlerRaised",
    "PublishOwned",
    "Reactor",
    "StartHandler",
    "StopHandler",
    "WatchShards",
    "Write",
    "WriteDone",
    "WriteKind",
]

#: A shard taken as a grace fallback is kept a lease, doubled each time the same owner fails again, at
#: most this many times (4 leases: a minute at the defaults). An owner blinded by a passing fault counts
#: as failing too, and the hold then delays recovery after the fault: 6 doublings (64 leases) once held a
#: chaos run's shard away from its recovered owner for 16 s at a 2 s lease.
FALLBACK_HOLD_MAX_DOUBLINGS = 2

#: How long after the control loop first sees a handler's drain deadline passed it is judged stuck. A
#: process that was frozen (SIGSTOP, a VM or GC pause) sees every deadline pass at once, while its
#: handler threads were frozen too: they get this long (of time, not of loop passes: several passes can
#: run within a millisecond of waking up) to be scheduled and return before they count as stuck.
STUCK_CATCH_UP = 1.0

#: A handler counts as crash-looping after this many raises in one run, while the last was recent.
CRASH_LOOP_ERRORS = 3
CRASH_LOOP_WINDOW = 90.0  # seconds; the runner's restart back-off caps at 30 s



# ------------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _ShardState:
    """Everything this replica knows about one shard beyond its cached Lease record.

    Invariants (checked by :meth:`Reactor.check_invariants`): a running or stopping handler has a run
    number and the run number is cleared with the phase; ``stuck`` only while stopping; a shard is in
    the held set exactly when ``held``; ``renew_started`` is set while held.
    """

    index: int
    name: str
    held: bool = False
    renew_started: float | None = None
    token: int | None = None
    run: int | None = None
    stop_requested_at: float | None = None
    past_drain_seen_at: float | None = None
    phase: HandlerPhase = HandlerPhase.IDLE
    in_flight: bool = False
    retry_at: float = 0.0
    failures: int = 0
    conflict_rv: str | None = None
    conflict_at: float | None = None
    hold_until: float = 0.0
    fallback_streak: int = 0
    fallback_owner: str | None = None
    leaving_since: float | None = None
    stuck: bool = False
    scheduled: float = float("inf")
    own_rv: str | None = None
    handler_wanted: bool = False
    loss_streak: int = 0
    acquire_after: float = 0.0
    acquired_at: float = 0.0
    errors: int = 0
    last_error_at: float = float("-inf")
    #: Created (not taken over) at this time and not yet confirmed by a later read of the group Lease:
    #: its handler waits (see ``Reactor._confirm_creates``).
    unconfirmed_since: float | None = None
    #: The highest epoch seen on this shard's Lease (and its annotation text): a Lease we create starts
    #: above it, and one that lost its epoch gets it back, so fencing tokens never go down for the shard.
    epoch_floor: int = 0
    epoch_text: str | None = None


class _NoMetrics:
    """Stands in for ``ManagerMetrics`` when a caller (a simulation) does not want any."""

    def __getattr__(self, _name: str) -> Any:
        return self

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        return self


class Reactor:
    """One replica's shard ownership as a state machine. See the module docstring."""

    def __init__(self, *, group: str, namespace: str, identity: str, incarnation: str, shards: int,
                 timing: Timing, cache: LeaseCache, clock: Clock, load_factor: float = 1.0,
                 log: logging.LoggerAdapter[Any] | logging.Logger | None = None, metrics: Any = None,
                 jitter: Callable[[float, float], float] = random.uniform, targeted: bool = False) -> None:
        self.group = group
        self._targeted = targeted
        self.namespace = namespace
        self.identity = identity
        self.incarnation = incarnation
        #: The count this replica was started with: its vote on the group's count (docs/resharding.md).
        self.configured = shards
        self.timing = timing
        self.load_factor = load_factor
        self._cache = cache
        self._clock = clock
        self._log = log if log is not None else logging.getLogger("shardlease")
        self.metrics = metrics if metrics is not None else _NoMetrics()
        self._jitter = jitter

        self._states: list[_ShardState] = []
        self._index_of: dict[str, int] = {}
        self._writer = Writer(group, namespace, identity, incarnation, timing.lease_duration_seconds, shards)
        self._member = MemberLease(group=group, identity=identity, incarnation=incarnation, timing=timing,
                                   cache=cache, clock=clock, writer=self._writer, log=self._log,
                                   metrics=self.metrics, jitter=jitter)
        self._follower = GroupFollower(group=group, namespace=namespace, configured=shards, timing=timing,
                                       cache=cache, clock=clock, log=self._log, metrics=self.metrics)
        self._roster = Roster(group=group, identity=identity, timing=timing, cache=cache, clock=clock,
                              own_member_lease=self._member.name, log=self._log, metrics=self.metrics)

        self._timers: list[tuple[float, int, int]] = []
        self._timer_seq = 0
        self._dirty: set[int] = set()
        self._runs = 0
        self._out: list[Command] = []

        #: Monotonic time of the first completed list: a record observed no later has not been seen to change.
        self._synced_at = float("inf")
        self._assignment: dict[int, str] = {}
        self._owned: frozenset[int] = frozenset()
        self._held: set[int] = set()
        self._owned_dirty = False
        self._stop_at: float | None = None
        self.finished = False
        self._desired_set: frozenset[int] = frozenset()
        self._watch = WatchPlan(lease_duration=timing.lease_duration, enabled=targeted)
        self._covered_seen: frozenset[int] | None = frozenset()

    # ------------------------------------------------------------------ queries

    # The watch plan's state under the names table tests read and set.
    @property
    def _watching(self) -> frozenset[int] | None:
        return self._watch.watching

    @property
    def _inheritable(self) -> frozenset[int]:
        return self._watch.inheritable

    @_inheritable.setter
    def _inheritable(self, value: frozenset[int]) -> None:
        self._watch.inheritable = value

    @property
    def _watch_dirty(self) -> bool:
        return self._watch.dirty

    @_watch_dirty.setter
    def _watch_dirty(self, value: bool) -> None:
        self._watch.dirty = value

    @property
    def shards(self) -> int:
        """The count of the generation this replica runs (0 until it has read the group Lease)."""
        return self._follower.count

    @property
    def generation(self) -> int:
        return self._follower.generation

    @property
    def _span(self) -> int:
        return self._follower.span

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def owned(self) -> frozenset[int]:
        return self._owned

    def desired(self) -> frozenset[int]:
        return self._desired_set

    def members(self) -> frozenset[str]:
        return self._roster.eligible

    def stuck_shards(self) -> frozenset[int]:
        return frozenset(st.index for st in self._states if st.stuck)

    def crashing_shards(self, now: float) -> list[int]:
        """Held shards whose handler keeps raising (see :meth:`health`)."""
        return sorted(st.index for st in self._states if st.run is not None and st.errors >= CRASH_LOOP_ERRORS
                      and now - st.last_error_at < CRASH_LOOP_WINDOW)

    def running_handlers(self) -> frozenset[int]:
        """Shards with a handler run that has not returned (at exit: the abandoned ones)."""
        return frozenset(st.index for st in self._states if st.run is not None)

    def oldest_renewal_age(self, now: float) -> float:
        starts = [st.renew_started for st in self._states if st.held and st.renew_started is not None]
        return max(0.0, now - min(starts)) if starts else 0.0

    def health(self, now: float) -> dict[str, Any]:
        """Readiness and its reasons, as ``/readyz`` and ``/health`` report them (docs/operations.md).

        Not ready: not synced or stopping; the member Lease not held and renewed; another live process
        owns our identity; a handler stuck past the drain timeout; a handler crash-looping (it raised
        ``CRASH_LOOP_ERRORS`` times in its current run, the last within ``CRASH_LOOP_WINDOW``). A
        configured count other than the group's is normal during a rolling update that changes it (every
        member runs the group's count, docs/resharding.md): reported, never a reason to be unready.
        """
        member_ok = self._member.held(now)
        conflict = self._member.conflict
        stuck = sorted(self.stuck_shards())
        crashing = self.crashing_shards(now)
        failures: list[str] = []
        if self.stopping:
            failures.append("stopping")
        elif not self._cache.synced.is_set():
            failures.append("watch not synced yet")
        if conflict is not None:
            failures.append(f"identity conflict: another live process (incarnation {conflict}) holds the "
                            f"member Lease of identity {self.identity!r}; give every replica a unique "
                            f"--identity / POD_NAME")
        elif not member_ok and not self.stopping:
            failures.append("member Lease not held")
        if stuck:
            failures.append(f"handlers stuck past drain_timeout: shards {stuck}")
        if crashing:
            failures.append(f"handlers crash-looping: shards {crashing}")
        return {"ready": not failures, "failures": failures, "identity": self.identity,
                "incarnation": self.incarnation, "identity_conflict": conflict,
                "member_lease_held": member_ok, "configured_shards": self.configured,
                "shards": self.shards, "generation": self.generation,
                "switching": self.generation > 0 and not self._follower.may_start, "stuck_shards": stuck,
                "crashing_shards": crashing, "shards_held": sorted(self._owned),
                "shards_watched": None if self._watch.watching is None else len(self._watch.watching)}

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` if the state contradicts itself (tests call this after every step)."""
        for st in self._states:
            assert (st.run is None) == (st.phase is HandlerPhase.IDLE), (st.index, st.run, st.phase)
            assert not st.stuck or st.phase is HandlerPhase.STOPPING, (st.index, "stuck while not stopping")
            assert (st.index in self._held) == st.held, (st.index, "held set out of step")
            assert not st.held or st.renew_started is not None, (st.index, "held without a renewal time")
            assert st.stop_requested_at is None or st.run is not None, (st.index, "stop time without a run")

    def next_wakeup(self, now: float) -> float:
        """When :meth:`step` must run again if no event arrives first."""
        next_at = min(self._timers[0][0] if self._timers else now + 1.0, now + 1.0,
                      self._roster.recheck_at, self._member.due, self._watch.shrink_at)
        next_at = min(next_at, self._follower.wakeup())
        if self.stopping:
            next_at = min(next_at, now + 0.1)
        return next_at

    # ------------------------------------------------------------------ inputs

    def request_stop(self, now: float) -> None:
        """Hand everything back and finish: member Lease deleted, handlers stopped, shards released."""
        if self._stop_at is None:
            self._stop_at = now

    def handle(self, event: Event, now: float) -> None:
        if isinstance(event, WriteDone):
            self._on_write(event, now)
        elif isinstance(event, HandlerExited):
            self._on_exit(event, now)
        elif isinstance(event, HandlerRaised):
            st = self._states[event.shard]
            if st.run == event.run:
                st.errors += 1
                st.last_error_at = now

    def step(self, now: float) -> list[Command]:
        """One pass over whatever may have changed; returns the commands to carry out, in order."""
        self._step(now)
        out, self._out = self._out, []
        return out

    def _step(self, now: float) -> None:
        if not self._cache.synced.is_set():
            if self.stopping:
                self.finished = True
            return
        if self._synced_at == float("inf"):
            self._synced_at = now  # records observed up to now came from the initial list
        writes, conflict_changed = self._member.step(now, stopping=self.stopping, synced_at=self._synced_at,
                                                     problems=lambda: self._problems(now))
        self._out.extend(writes)
        if conflict_changed:
            self._dirty.update(range(len(self._states)))
        changed = self._cache.take_changed()
        self._update_membership(now, changed)
        self._follow_group(now)
        for name in changed:
            index = self._index_of.get(name)
            if index is not None:
                self._dirty.add(index)
        if self._targeted:
            covered = self._cache.covered
            if covered is not self._covered_seen:
                # Newly listed shards: their state (or the absence of their Lease) is known now.
                fresh = range(len(self._states)) if covered is None else \
                    {i for i in covered - (self._covered_seen or frozenset()) if i < len(self._states)}
                self._dirty.update(fresh)
                self._covered_seen = covered
        while self._timers and self._timers[0][0] <= now:
            at, _seq, index = heapq.heappop(self._timers)
            if self._states[index].scheduled == at:
                self._states[index].scheduled = float("inf")
                self._dirty.add(index)
        if self.stopping:
            self._dirty.update(range(len(self._states)))
        if self._follower.check_barrier(now, self._record_of, self._cache.covers):
            self._dirty.update(range(len(self._states)))
            self._watch.mark()
        dirty, self._dirty = self._dirty, set()
        for index in sorted(dirty):
            self._shard_step(self._states[index], now)
        self._publish_owned()
        check = self._follower.check_due(now)
        if check is not None:
            self._submit(check)
        if self._targeted:
            self._update_watch(now)
        self._out.extend(self._follower.clean_up(
            now, oldest=self._roster.oldest, stopping=self.stopping, member_generations=self._roster.generations,
            record_of=self._record_of, covers=self._cache.covers, delete=self._roster.delete))
        if self.stopping and self._shutdown_complete(now):
            self.finished = True

    # ------------------------------------------------------------------ the group's count and generation

    def _follow_group(self, now: float) -> None:
        """Run the group's generation; on adopting a newer one, reassign and revisit every shard (no
        handler of it starts until the barrier has passed)."""
        writes, adopted = self._follower.follow(now, oldest=self._roster.oldest, stopping=self.stopping,
                                                configured_counts=self._roster.configured_counts,
                                                fleet=self._roster.fleet)
        if adopted:
            state = self._follower.state
            assert state is not None
            self._member.generation = state.generation
            self._ensure_states(max(state.span, state.count))
            self._reassign()
            self._dirty.update(range(len(self._states)))
            self._watch.mark()
        self._out.extend(writes)

    def _confirm_creates(self, done: WriteDone, now: float) -> None:
        """The answer to a read of the group Lease made after we created shard Leases: the handlers of
        the shards created before it began may start if it shows our generation (see groupfollow)."""
        if not self._follower.on_checked(done, now):
            return
        for st in self._states:
            if st.unconfirmed_since is not None and st.unconfirmed_since <= done.started:
                st.unconfirmed_since = None
                self._dirty.add(st.index)

    def _record_of(self, index: int) -> LeaseRecord | None:
        """Shard ``index``'s Lease as the cache has it (``None``: absent, or not listed)."""
        cached = self._cache.get(self._states[index].name)
        return cached.record if cached is not None else None

    def _ensure_states(self, n: int) -> None:
        for i in range(len(self._states), n):
            st = _ShardState(i, shard_lease_name(self.group, i))
            self._states.append(st)
            self._index_of[st.name] = i

    def _update_watch(self, now: float) -> None:
        command = self._watch.update(now, self._watch_wanted, self._span)
        if command is not None:
            self.metrics.shards_watched.set(len(command.shards))
            self._out.append(command)

    def _watch_wanted(self) -> frozenset[int]:
        return wanted_shards(count=self.shards, span=self._span, switching=self._follower.switching,
                             desired=self._desired_set, inheritable=self._watch.inheritable, held=self._held,
                             sweeper=self._roster.oldest)

    def _schedule(self, st: _ShardState, at: float | None) -> None:
        if st.phase is HandlerPhase.STOPPING and not st.stuck and st.stop_requested_at is not None:
            drain_at = st.stop_requested_at + self.timing.drain_timeout
            at = drain_at if at is None else min(at, drain_at)
        if at is None or at >= st.scheduled:
            return
        st.scheduled = at
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, st.index))

    def _submit(self, write: Write) -> None:
        self._out.append(write)

    # ------------------------------------------------------------------ handler runs

    def _on_exit(self, event: HandlerExited, now: float) -> None:
        st = self._states[event.shard]
        if st.run != event.run:
            return
        stop_requested = st.stop_requested_at is not None
        st.run = None
        st.stop_requested_at = None
        st.past_drain_seen_at = None
        st.phase = HandlerPhase.IDLE
        if st.stuck:
            self._log.warning("stuck handler finally returned", extra={"shard": st.index})
            st.stuck = False
            self.metrics.stuck_handlers.set(sum(1 for s in self._states if s.stuck))
        elif not stop_requested:
            st.handler_wanted = False  # it finished by itself: do not start it again in this tenure
            self._log.info("handler returned on its own; the shard stays held", extra={"shard": st.index})
        self._dirty.add(st.index)

    def _start_handler(self, st: _ShardState) -> None:
        assert st.renew_started is not None and st.run is None
        self._runs += 1
        st.run = self._runs
        st.stop_requested_at = None
        st.past_drain_seen_at = None
        st.phase = HandlerPhase.RUNNING
        st.handler_wanted = True
        st.errors = 0
        st.last_error_at = float("-inf")
        self._out.append(StartHandler(st.index, st.run, st.token or 0, self.shards,
                                      st.renew_started + self.timing.renew_deadline, self.generation))

    def _stop_handler(self, st: _ShardState, now: float, reason: str) -> None:
        if st.run is None:
            st.phase = HandlerPhase.IDLE
            return
        self._log.info("stopping handler (%s)", reason, extra={"shard": st.index})
        st.phase = HandlerPhase.STOPPING
        if st.leaving_since is None:
            st.leaving_since = now
        if st.stop_requested_at is None:
            st.stop_requested_at = now
            self._out.append(StopHandler(st.index, st.run))
        self._dirty.add(st.index)

    # ------------------------------------------------------------------ membership

    def _update_membership(self, now: float, changed: set[str]) -> None:
        writes, eligible_changed = self._roster.update(now, changed, synced_at=self._synced_at,
                                                       stopping=self.stopping,
                                                       identity_conflict=self._member.conflict is not None)
        self._out.extend(writes)
        if eligible_changed:
            self._reassign()
            self._log.info("members now %s; %d of %d shards desired here", sorted(self._roster.eligible),
                           len(self._desired_set), self.shards)
            self.metrics.members.set(len(self._roster.eligible))
            self._dirty.update(range(len(self._states)))

    def _reassign(self) -> None:
        """The assignment of the running count over the eligible members, and what follows from it."""
        eligible = self._roster.eligible
        self._assignment = assign(self.group, self.shards, eligible, self.load_factor) if eligible and self.shards else {}
        self._desired_set = frozenset(i for i, owner in self._assignment.items() if owner == self.identity)
        if self._targeted:
            self._watch.inheritable = inheritable(self.group, self.shards, eligible, self.identity,
                                                  self.load_factor) if eligible and self.shards else frozenset()
            self._watch.mark()
        self.metrics.shards_desired.set(len(self._desired_set))

    def _eligible(self) -> bool:
        return (self.generation > 0 and self._member.conflict is None and self.identity in self._roster.eligible
                and not self.stopping)

    def _problems(self, now: float) -> str:
        """This replica's health summary for its member Lease (``records.ANNOTATION_PROBLEMS``)."""
        return format_problems(crashing=self.crashing_shards(now), stuck=self.stuck_shards())

    # ------------------------------------------------------------------ per-shard steps

    def _view(self, st: _ShardState, now: float) -> ShardView:
        cached = self._cache.get(st.name)
        record = cached.record if cached is not None else None
        if record is not None:
            self._note_epoch(st, record)
        # A Lease a new generation adds has been "absent" since our first list: its grace before a
        # fallback acquisition counts from when we adopted the generation, so its owner gets first go.
        observed = cached.observed if cached is not None else max(self._cache.absent_since(st.name),
                                                                               self._follower.adopted_at)
        if st.conflict_rv is not None and rv_of(record) != st.conflict_rv:
            st.conflict_rv = None
            st.conflict_at = None
        return ShardView(
            identity=self.identity, record=record, observed=observed, desired=self._assignment.get(st.index),
            eligible=self._eligible(), shutting_down=self.stopping, held=st.held,
            renew_started=st.renew_started, handler=st.phase, in_flight=st.in_flight, retry_at=st.retry_at,
            conflict_rv=st.conflict_rv, conflict_at=st.conflict_at, hold_until=st.hold_until,
            own_rv=st.own_rv if st.held else None, handler_wanted=st.handler_wanted,
            incarnation=self.incarnation, identity_conflict=self._member.conflict is not None,
            acquire_after=st.acquire_after, generation=self.generation, retired=st.index >= self.shards,
            may_start=self._follower.may_start and st.unconfirmed_since is None, sweeper=self._roster.oldest)

    @staticmethod
    def _note_epoch(st: _ShardState, record: LeaseRecord) -> None:
        """Remember the highest epoch the shard's Lease has carried (compared as text first: the
        annotation is the same on every renewal, so the common case costs one dict lookup)."""
        text = record.annotations.get(ANNOTATION_EPOCH)
        if text is not None and text != st.epoch_text:
            epoch = record.epoch
            if epoch > st.epoch_floor:
                st.epoch_floor, st.epoch_text = epoch, text

    def _shard_step(self, st: _ShardState, now: float) -> None:
        if not st.held and not st.in_flight and st.phase is HandlerPhase.IDLE and not self._cache.covers(st.index):
            return  # not listed yet: an empty cache entry would wrongly read as "no Lease"
        for _ in range(4):
            view = self._view(st, now)
            decision = decide(view, now, self.timing)
            action = decision.action
            if action is Action.WAIT:
                self._check_stuck(st, now)
                self._schedule(st, decision.at)
                return
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
                self._schedule(st, st.renew_started + self.timing.renew_deadline)
            return

    def _check_stuck(self, st: _ShardState, now: float) -> None:
        if st.phase is not HandlerPhase.STOPPING or st.stuck or st.run is None or st.stop_requested_at is None:
            return
        due = st.stop_requested_at + self.timing.drain_timeout
        if now < due:
            return
        if st.past_drain_seen_at is None:
            st.past_drain_seen_at = now
        if now < st.past_drain_seen_at + STUCK_CATCH_UP:
            # Had the process been frozen, the handler's exit may be just behind: judge once its thread
            # has had a moment to run and its exit to be drained.
            self._schedule(st, st.past_drain_seen_at + STUCK_CATCH_UP)
            return
        st.stuck = True
        self.metrics.stuck_handlers.set(sum(1 for s in self._states if s.stuck))
        self._log.error("handler did not return within drain_timeout (%.1fs); keeping the shard held and "
                        "reporting not ready", self.timing.drain_timeout, extra={"shard": st.index})

    def _lose(self, st: _ShardState, now: float, reason: str) -> None:
        # Rate-limited: whatever made us lose it (a fight over the Lease, an editing tool), taking it back
        # at once, every time, is how a misconfiguration turns into a tight loop of writes and log lines.
        st.loss_streak += 1
        pause = min(self.timing.retry_period * 2 ** min(st.loss_streak - 1, 5), self.timing.lease_duration)
        st.acquire_after = now + pause
        level = logging.WARNING if st.loss_streak <= 3 or st.loss_streak % 10 == 0 else logging.DEBUG
        self._log.log(level, "lost shard: %s%s", reason,
                      f" (lost {st.loss_streak} times in a row; next try in {pause:.1f}s)" if st.loss_streak > 1 else "",
                      extra={"shard": st.index})
        self.metrics.losses.inc()
        self._set_held(st, False)
        st.hold_until = 0.0
        if st.run is not None and st.phase is HandlerPhase.RUNNING:
            self._stop_handler(st, now, "lost")

    def _acquire(self, st: _ShardState, view: ShardView, reason: str) -> None:
        record = view.record
        body, _token = self._writer.acquire(st.index, record, self._clock.now(), self.generation, st.epoch_floor)
        self._log.debug("acquiring (%s)", reason, extra={"shard": st.index})
        st.in_flight = True
        self._submit(Write(WriteKind.CREATE if record is None else WriteKind.ACQUIRE, st.name, shard=st.index,
                           sent_rv=rv_of(record), body=body, fallback=view.desired != self.identity))

    def _renew(self, st: _ShardState, view: ShardView) -> None:
        record = view.record
        assert record is not None and st.renew_started is not None
        lost_epoch = st.epoch_text is not None and record.annotations.get(ANNOTATION_EPOCH) != st.epoch_text
        body = self._writer.renew(st.index, record, self._clock.now(), st.epoch_floor if lost_epoch else None)
        st.in_flight = True
        self._submit(Write(WriteKind.RENEW, st.name, shard=st.index, sent_rv=record.resource_version, body=body,
                           deadline=st.renew_started + self.timing.renew_deadline))

    def _release(self, st: _ShardState, view: ShardView) -> None:
        record = view.record
        if record is None:
            self._set_held(st, False)
            return
        body = self._writer.release(st.index, record, self._clock.now(), self.generation, st.epoch_floor)
        st.in_flight = True
        deadline = st.renew_started + self.timing.renew_deadline if st.held and st.renew_started else None
        self._submit(Write(WriteKind.RELEASE, st.name, shard=st.index, sent_rv=record.resource_version, body=body,
                           deadline=deadline))

    def _retire(self, st: _ShardState, view: ShardView) -> None:
        record = view.record
        st.in_flight = True
        self._log.info("retiring the Lease of a shard the group no longer has", extra={"shard": st.index})
        self._submit(Write(WriteKind.RETIRE_CREATE if record is None else WriteKind.RETIRE, st.name, shard=st.index,
                           sent_rv=rv_of(record), body=self._writer.retire(st.index, record, self._clock.now(),
                                                                           self.generation, st.epoch_floor)))

    # ------------------------------------------------------------------ write results

    def _on_write(self, done: WriteDone, now: float) -> None:
        write, err = done.write, done.error
        if write.kind is WriteKind.COLLECT:
            self._roster.on_deleted(done)
            return
        if write.kind is WriteKind.GROUP_CHECK:
            self._confirm_creates(done, now)
            return
        if write.kind in (WriteKind.GROUP_CREATE, WriteKind.GROUP_UPDATE):
            self._follower.on_written(done, now)
            return
        if write.shard is None:
            self._out.extend(self._member.on_result(done, now))
            return
        st = self._states[write.shard]
        st.in_flight = False
        self._dirty.add(st.index)
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
                if st.loss_streak and done.started - st.acquired_at >= self.timing.lease_duration:
                    st.loss_streak = 0  # a tenure that lasted a lease duration: the trouble is over
                st.renew_started = done.started
                self.metrics.renew_seconds.observe(max(0.0, answered - done.started))
                if st.run is not None:
                    self._out.append(ExtendHandler(st.index, st.run, done.started + self.timing.renew_deadline))
        elif write.kind is WriteKind.RELEASE:
            was_held = st.held
            self._set_held(st, False)
            st.hold_until = 0.0
            self.metrics.releases.inc()
            if st.leaving_since is not None:
                self.metrics.handoff_seconds.observe(max(0.0, answered - st.leaving_since))
                st.leaving_since = None
            self._log.info("released" if was_held else "released a stale lease in our name", extra={"shard": st.index})

    def _acquired(self, st: _ShardState, record: LeaseRecord | None, done: WriteDone, now: float) -> None:
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
            owner = self._assignment.get(st.index)
            st.fallback_streak = st.fallback_streak + 1 if owner == st.fallback_owner else 1
            st.fallback_owner = owner
            doublings = min(st.fallback_streak - 1, FALLBACK_HOLD_MAX_DOUBLINGS)
            st.hold_until = done.started + self.timing.lease_duration * 2 ** doublings
        else:
            st.fallback_streak = 0
            st.fallback_owner = None
        st.leaving_since = None
        self.metrics.acquisitions.inc()
        valid_until = done.started + self.timing.renew_deadline
        if now >= valid_until:
            return  # acquired too late to be safe; decide() reports it lost and we start over
        if st.run is not None:
            return
        if self.stopping:
            st.handler_wanted = False  # acquired as we began to stop: hand it straight back
            return
        # An update was conditional on what we saw; a create succeeds whatever the group did meanwhile,
        # so its handler waits for a read of the group Lease that confirms our generation.
        created = done.write.kind is WriteKind.CREATE
        st.unconfirmed_since = now if created else None
        waits = ("its handler waits for a read of the group Lease" if created
                 else "its handler waits for the switch to complete" if not self._follower.may_start else "")
        self._log.info("acquired (token %d, generation %d%s)%s", st.token, self.generation,
                       ", grace fallback" if done.write.fallback else "", f"; {waits}" if waits else "",
                       extra={"shard": st.index})
        if created:
            self._follower.want_check()
        if waits:
            st.handler_wanted = True  # started by decide() once nothing holds it back
            return
        self._start_handler(st)

    def _on_write_error(self, st: _ShardState, done: WriteDone, now: float) -> None:
        err = done.error
        assert err is not None
        kind = done.write.kind
        self.metrics.api_error(err.label)
        if kind is WriteKind.REFRESH:
            st.failures += 1
            # The next read a retry period later; for a shard we do not hold, backing off like any failed
            # write once reads keep failing (lost answers are common while the server is unreachable).
            extra = 0.0 if st.held else backoff(st.failures, err, self.timing, held=False, jitter=self._jitter)
            st.conflict_at = now + max(0.0, extra - self.timing.retry_period)
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
        delay = backoff(st.failures, err, self.timing, held=st.held, jitter=self._jitter)
        st.retry_at = held_retry_at(now, st.renew_started, delay, self.timing) if st.held else now + delay
        level = logging.DEBUG if kind is WriteKind.ACQUIRE and st.failures < 3 else logging.WARNING
        self._log.log(level, "%s failed: %s", kind.value, err, extra={"shard": st.index})

    # ------------------------------------------------------------------ owned set, shutdown

    def _set_held(self, st: _ShardState, held: bool) -> None:
        if not held:
            st.unconfirmed_since = None
        if st.held != held:
            st.held = held
            self._owned_dirty = True
            self._watch.mark()
            if held:
                self._held.add(st.index)
            else:
                self._held.discard(st.index)

    def _publish_owned(self) -> None:
        if not self._owned_dirty:
            return
        self._owned_dirty = False
        owned = frozenset(self._held)
        if owned == self._owned:
            return
        self._owned = owned
        self.metrics.shards_held.set(len(owned))
        self._out.append(PublishOwned(owned))

    def _shutdown_complete(self, now: float) -> bool:
        stop_at = self._stop_at if self._stop_at is not None else now
        hard_deadline = stop_at + self.timing.drain_timeout + self.timing.renew_deadline
        if now >= hard_deadline:
            self._log.warning("giving up on shutdown after %.1fs; shards still held: %s", now - stop_at,
                              sorted(st.index for st in self._states if st.held))
            return True
        if not self._member.settled:
            return False
        for st in self._states:
            if st.in_flight:
                return False
            if st.held and not st.stuck:
                return False
            if not st.held and st.phase is not HandlerPhase.IDLE and not st.stuck:
                return False  # a lost shard's handler still draining
        return True

    def drop_all(self) -> PublishOwned | None:
        """At exit: nothing counts as held any more (Leases left held simply expire)."""
        for st in self._states:
            self._set_held(st, False)
        self._publish_owned()
        out, self._out = self._out, []
        return next((c for c in out if isinstance(c, PublishOwned)), None)
