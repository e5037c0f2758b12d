"""The replica's decisions as a deterministic state machine: events in, commands out.

``ShardManager`` is a thin threaded shell around a :class:`Reactor`. The shell owns the threads, the
``LeaseStore`` and the handler runners; the reactor owns every rule and every piece of state, and never
sleeps, reads a clock of its own or touches the network. Each call gets ``now`` (monotonic seconds);
wall time, needed only for the ``renewTime`` written into Leases, comes from the injected ``Clock``.

The vocabulary (``core/messages.py``, re-exported here):

* events the shell feeds in: :class:`WriteDone` (a request finished), :class:`HandlerExited`,
  :class:`HandlerRaised`, plus changes of the watch-fed :class:`~shardlease.core.cache.LeaseCache` that the
  reactor reads, and :meth:`Reactor.request_stop`;
* commands it returns from :meth:`Reactor.step`: :class:`Write` (one conditional request),
  :class:`StartHandler`, :class:`StopHandler`, :class:`ExtendHandler` (a renewal pushed
  ``shard.valid()`` further out), :class:`PublishOwned` (the held set changed), and, with ``targeted``,
  :class:`WatchShards` (the shard Leases worth watching changed).

The reactor composes one component per concern, each with its own state and its own table tests, and
routes events to them; it decides only the order in which they are asked:

* :class:`~shardlease.core.member.MemberLease` (``core/member.py``): this replica's member Lease and
  the duplicate-identity rule;
* :class:`~shardlease.core.roster.Roster` (``core/roster.py``): who is in the group, the oldest
  member, and the collection of dead members' Leases;
* :class:`~shardlease.core.groupfollow.GroupFollower` (``core/groupfollow.py``): the group Lease, the
  generation this replica runs, the resharding barrier, confirming created Leases, and the clean-up of
  retired shards;
* the assignment (``core/assignment.py``): which shards are desired here, and which would be inherited;
* :class:`~shardlease.core.elections.ShardElections` (``core/elections.py``): every shard's state, the
  per-shard decisions (:func:`~shardlease.core.elector.decide`) and the answers to shard writes, with
  the books of the handler run on each shard in :class:`~shardlease.core.handlerruns.HandlerRuns`
  (``core/handlerruns.py``);
* :class:`~shardlease.core.watchplan.WatchPlan` (``core/watchplan.py``): which shard Leases to watch.

A shell runs ``handle`` for each event, then ``step``, carries out the commands, and sleeps until
``next_wakeup`` or the next event. Because nothing here waits, the same reactor runs in table tests and
deterministic simulations with a fake clock and an in-memory store (tests/unit/test_reactor.py).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from shardlease.core.bodies import Writer
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import Clock
from shardlease.core.elections import (
    CRASH_LOOP_ERRORS,
    CRASH_LOOP_WINDOW,
    FALLBACK_HOLD_MAX_DOUBLINGS,
    STUCK_CATCH_UP,
    ShardElections,
    ShardState,
    Standing,
)
from shardlease.core.elector import Timing
from shardlease.core.groupfollow import GroupFollower
from shardlease.core.loadplan import LoadPlanner, Rebalance
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
from shardlease.core.records import format_loads, format_problems
from shardlease.core.roster import Roster
from shardlease.core.watchplan import WatchPlan, wanted_shards

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
                 jitter: Callable[[float, float], float] = random.uniform, targeted: bool = False,
                 capacity: float = 1.0, load_of: Callable[[int], float | None] | None = None,
                 rebalance: Rebalance | None = None, weight_of: Callable[[int], float | None] | None = None) -> None:
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
        self._log = log if log is not None else logging.getLogger("shardlease")
        self.metrics = metrics if metrics is not None else _NoMetrics()

        #: The smoothed load of a held shard (``None``: no report), read when renewals are built.
        self._load_of = load_of
        writer = Writer(group, namespace, identity, incarnation, timing.lease_duration_seconds, shards, capacity)
        self._member = MemberLease(group=group, identity=identity, incarnation=incarnation, timing=timing,
                                   cache=cache, clock=clock, writer=writer, log=self._log,
                                   metrics=self.metrics, jitter=jitter)
        self._roster = Roster(group=group, identity=identity, timing=timing, cache=cache, clock=clock,
                              own_member_lease=self._member.name, log=self._log, metrics=self.metrics)
        self._follower = GroupFollower(group=group, namespace=namespace, configured=shards, timing=timing,
                                       cache=cache, clock=clock, log=self._log, metrics=self.metrics)
        self._watch = WatchPlan(lease_duration=timing.lease_duration, enabled=targeted)
        self._elections = ShardElections(group=group, identity=identity, incarnation=incarnation, timing=timing,
                                         cache=cache, clock=clock, writer=writer, log=self._log,
                                         metrics=self.metrics, jitter=jitter, on_held_change=self._watch.mark,
                                         on_create=self._follower.want_check, load_of=load_of)
        self._planner = LoadPlanner(group=group, namespace=namespace, settings=rebalance or Rebalance(), cache=cache,
                                    clock=clock, log=self._log, metrics=self.metrics, weight_of=weight_of)
        self._capacities: dict[str, float] = {}
        #: When a member last left the eligible set (a snapshot waits a lease after it).
        self._member_left_at = float("-inf")
        self.metrics.capacity.set(capacity)

        self._out: list[Command] = []
        #: Monotonic time of the first completed list: a record observed no later has not been seen to change.
        self._synced_at = float("inf")
        self._assignment: dict[int, str] = {}
        self._desired_set: frozenset[int] = frozenset()
        self._stop_at: float | None = None
        self.finished = False
        self._covered_seen: frozenset[int] | None = frozenset()

    # ------------------------------------------------------------------ queries

    @property
    def shards(self) -> int:
        """The count of the generation this replica runs (0 until it has read the group Lease)."""
        return self._follower.count

    @property
    def generation(self) -> int:
        return self._follower.generation

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def owned(self) -> frozenset[int]:
        return self._elections.owned()

    def desired(self) -> frozenset[int]:
        return self._desired_set

    def members(self) -> frozenset[str]:
        return self._roster.eligible

    def stuck_shards(self) -> frozenset[int]:
        return self._elections.stuck_shards()

    def crashing_shards(self, now: float) -> list[int]:
        """Held shards whose handler keeps raising (see :meth:`health`)."""
        return self._elections.crashing_shards(now)

    def running_handlers(self) -> frozenset[int]:
        """Shards with a handler run that has not returned (at exit: the abandoned ones)."""
        return self._elections.running_handlers()

    def oldest_renewal_age(self, now: float) -> float:
        return self._elections.oldest_renewal_age(now)

    # The components' state under the names table tests read and set.
    @property
    def _states(self) -> list[ShardState]:
        return self._elections.states

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
        watching = self._watch.watching
        return {"ready": not failures, "failures": failures, "identity": self.identity,
                "incarnation": self.incarnation, "identity_conflict": conflict,
                "member_lease_held": member_ok, "configured_shards": self.configured,
                "shards": self.shards, "generation": self.generation,
                "switching": self.generation > 0 and not self._follower.may_start, "stuck_shards": stuck,
                "crashing_shards": crashing, "shards_held": sorted(self.owned()),
                "shards_watched": None if watching is None else len(watching),
                "write_budget": self._budget_health()}

    def _budget_health(self) -> dict[str, Any] | None:
        """The write budget's plan for ``/health`` (``None`` without ``max_write_rate``)."""
        budget = self._elections.budget
        if budget is None:
            return None
        plan = budget.plan
        return {"max_write_rate": plan.rate, "writes_asked": round(plan.asked, 3),
                "writes_planned": round(plan.planned, 3), "renew_interval": round(plan.interval, 3),
                "longest_renew_gap": plan.longest, "exceeded": plan.exceeded}

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` if the state contradicts itself (tests call this after every step)."""
        self._elections.check_invariants()

    def next_wakeup(self, now: float) -> float:
        """When :meth:`step` must run again if no event arrives first."""
        next_at = min(self._elections.next_timer(), now + 1.0, self._roster.recheck_at, self._member.due,
                      self._watch.shrink_at, self._follower.wakeup(), self._planner.next_check())
        if self.stopping:
            next_at = min(next_at, now + 0.1)
        return next_at

    # ------------------------------------------------------------------ inputs

    def request_stop(self, now: float) -> None:
        """Hand everything back and finish: member Lease deleted, handlers stopped, shards released."""
        if self._stop_at is None:
            self._stop_at = now

    def handle(self, event: Event, now: float) -> None:
        """Route one event to the component it answers."""
        elections = self._elections
        elections.ctx = self._standing()
        if isinstance(event, WriteDone):
            kind = event.write.kind
            if kind is WriteKind.COLLECT:
                self._roster.on_deleted(event)
            elif kind is WriteKind.GROUP_CHECK:
                if self._follower.on_checked(event, now):
                    elections.confirm_created(event.started)
            elif kind in (WriteKind.GROUP_CREATE, WriteKind.GROUP_UPDATE):
                self._follower.on_written(event, now)
            elif kind is WriteKind.GROUP_SNAPSHOT:
                self._planner.on_written(event, now)
            elif event.write.shard is None:
                self._out.extend(self._member.on_result(event, now))
            else:
                elections.on_write(event, now)
        elif isinstance(event, HandlerExited):
            elections.on_exit(event, now)
        elif isinstance(event, HandlerRaised):
            elections.on_raised(event, now)
        self._out.extend(elections.take())

    def step(self, now: float) -> list[Command]:
        """One pass over whatever may have changed; returns the commands to carry out, in order."""
        self._step(now)
        out, self._out = self._out, []
        budget = self._elections.budget
        if budget is not None:
            # Renewals took their slots when they were paced; every other write takes one as it goes.
            for command in out:
                if isinstance(command, Write) and command.kind is not WriteKind.RENEW \
                        and command.kind.store_call != "get":
                    budget.spend(now)
        return out

    def _step(self, now: float) -> None:
        if not self._cache.synced.is_set():
            if self.stopping:
                self.finished = True
            return
        if self._synced_at == float("inf"):
            self._synced_at = now  # records observed up to now came from the initial list
        elections = self._elections
        # 1. Our member Lease (and whether another process holds our identity).
        writes, conflict_changed = self._member.step(now, stopping=self.stopping, synced_at=self._synced_at,
                                                     problems=lambda: self._problems(now), loads=self._loads_text)
        self._out.extend(writes)
        if conflict_changed:
            elections.touch_all()
        # 2. Who is in the group, then the generation it runs.
        changed = self._cache.take_changed()
        self._update_membership(now, changed)
        self._follow_group(now)
        self._balance_load(now)
        # 3. Which shards to pass over: changed Leases, newly listed ones, everything while stopping.
        for name in changed:
            index = elections.index_of.get(name)
            if index is not None:
                elections.dirty.add(index)
        if self._targeted:
            covered = self._cache.covered
            if covered is not self._covered_seen:
                # Newly listed shards: their state (or the absence of their Lease) is known now.
                fresh = range(len(elections.states)) if covered is None else \
                    {i for i in covered - (self._covered_seen or frozenset()) if i < len(elections.states)}
                elections.dirty.update(fresh)
                self._covered_seen = covered
        if self.stopping:
            elections.touch_all()
        if self._follower.check_barrier(now, elections.record_of, self._cache.covers):
            elections.touch_all()
            self._watch.mark()
        # 4. The shard elections, then what depends on their outcome.
        elections.ctx = self._standing()
        self._out.extend(elections.run(now))
        check = self._follower.check_due(now)
        if check is not None:
            self._out.append(check)
        if self._targeted:
            self._update_watch(now)
        self._out.extend(self._follower.clean_up(
            now, oldest=self._roster.oldest, stopping=self.stopping, member_generations=self._roster.generations,
            record_of=elections.record_of, covers=self._cache.covers, delete=self._roster.delete))
        if self.stopping and self._shutdown_complete(now):
            self.finished = True

    def _standing(self) -> Standing:
        """What the shard elections need to know of the rest of the replica, as of now."""
        conflict = self._member.conflict is not None
        stopping = self.stopping
        return Standing(
            generation=self.generation, count=self.shards, assignment=self._assignment,
            eligible=(self.generation > 0 and not conflict and self.identity in self._roster.eligible
                      and not stopping),
            stopping=stopping, identity_conflict=conflict, may_start=self._follower.may_start,
            adopted_at=self._follower.adopted_at, sweeper=self._roster.oldest)

    # ------------------------------------------------------------------ membership, generation, assignment

    def _update_membership(self, now: float, changed: set[str]) -> None:
        before = self._roster.eligible
        writes, eligible_changed = self._roster.update(now, changed, synced_at=self._synced_at,
                                                       stopping=self.stopping,
                                                       identity_conflict=self._member.conflict is not None)
        self._out.extend(writes)
        if eligible_changed and before - self._roster.eligible:
            self._member_left_at = now
        if eligible_changed or self._roster.capacities != self._capacities:
            self._reassign()
            self._log.info("members now %s; %d of %d shards desired here", sorted(self._roster.eligible),
                           len(self._desired_set), self.shards)
            self.metrics.members.set(len(self._roster.eligible))
            self._elections.touch_all()

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
            self._elections.ensure(max(state.span, state.count))
            self._reassign()
            self._elections.touch_all()
            self._watch.mark()
        self._out.extend(writes)

    def _balance_load(self, now: float) -> None:
        """Follow the load snapshot on the group Lease (a new one: reassign) and, as the oldest member,
        publish the next when one is due (core/loadplan.py)."""
        if self._planner.read(self.generation, self.shards):
            snap = self._planner.snapshot
            self._reassign()
            self._elections.touch_all()
            if snap is not None:
                self.metrics.load_moves.inc(self._planner.last_moves)
                self._log.info("load snapshot %d (%s): %d shard(s) move; %d of %d shards desired here", snap.seq,
                               snap.reason, self._planner.last_moves, len(self._desired_set), self.shards)
        # No new snapshot for a lease after a member left: its shards are failing over to the heirs that
        # watched them in advance, and a snapshot now could hand one to a replica that never looked at
        # its Lease, which would then wait a whole lease from its first look (or a bystander's grace).
        settled = now >= self._member_left_at + self.timing.lease_duration
        self._out.extend(self._planner.step(
            now, steward=self._roster.oldest,
            may_rebalance=self._follower.may_start and not self.stopping and settled,
            generation=self.generation, count=self.shards, assignment=self._assignment,
            members=self._roster.records, capacities=self._roster.capacities))

    def _loads_text(self) -> str:
        """The loads of the shards we hold, for our member Lease (``records.ANNOTATION_LOADS``)."""
        load_of = self._load_of
        if load_of is None:
            return ""
        loads = {i: v for i in self._elections.held if (v := load_of(i)) is not None}
        self.metrics.load.set(sum(loads.values()))
        return format_loads(loads)

    def load_status(self, now_wall: Any) -> dict[str, Any]:
        """The load balance as this replica sees it (``/health``'s ``load``)."""
        return self._planner.status(now_wall, self.shards, self._assignment, self._roster.records,
                                    self._roster.capacities)

    def _reassign(self) -> None:
        """The assignment of the running count over the eligible members, and what follows from it."""
        eligible = self._roster.eligible
        capacities = {m: self._roster.capacities.get(m, 1.0) for m in eligible}
        self._capacities = dict(self._roster.capacities)
        self._assignment = self._planner.owners(self.group, self.shards, capacities, self.load_factor) \
            if eligible and self.shards else {}
        self._desired_set = frozenset(i for i, owner in self._assignment.items() if owner == self.identity)
        if self._targeted:
            self._watch.inheritable = self._planner.inheritable(self.group, self.shards, capacities, self.identity,
                                                                self.load_factor) if eligible and self.shards else frozenset()
            self._watch.mark()
        self.metrics.shards_desired.set(len(self._desired_set))

    def _problems(self, now: float) -> str:
        """This replica's health summary for its member Lease (``records.ANNOTATION_PROBLEMS``)."""
        budget = self._elections.budget
        over = budget.plan if budget is not None and budget.plan.exceeded else None
        return format_problems(crashing=self.crashing_shards(now), stuck=self.stuck_shards(),
                               write_budget=None if over is None else (over.planned, over.rate))

    # ------------------------------------------------------------------ watch plan

    def _update_watch(self, now: float) -> None:
        command = self._watch.update(now, self._watch_wanted, self._follower.span)
        if command is not None:
            self.metrics.shards_watched.set(len(command.shards))
            self._out.append(command)

    def _watch_wanted(self) -> frozenset[int]:
        return wanted_shards(count=self.shards, span=self._follower.span, switching=self._follower.switching,
                             desired=self._desired_set, inheritable=self._watch.inheritable,
                             held=self._elections.held, sweeper=self._roster.oldest)

    # ------------------------------------------------------------------ shutdown

    def _shutdown_complete(self, now: float) -> bool:
        stop_at = self._stop_at if self._stop_at is not None else now
        hard_deadline = stop_at + self.timing.drain_timeout + self.timing.renew_deadline
        if now >= hard_deadline:
            self._log.warning("giving up on shutdown after %.1fs; shards still held: %s", now - stop_at,
                              sorted(self._elections.held))
            return True
        return self._member.settled and self._elections.settled()

    def drop_all(self) -> PublishOwned | None:
        """At exit: nothing counts as held any more (Leases left held simply expire)."""
        self._out = []
        return self._elections.drop_all()
