"""The shard elections on their own: per-shard decisions and the answers to them, with the rest of the
replica (generation, assignment, eligibility, stopping, the barrier) given as a ``Standing``."""

from __future__ import annotations

import copy
import logging
from typing import Any

from support import RecordingMetrics

from shardlease.core.bodies import Writer
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import FakeClock
from shardlease.core.elections import CRASH_LOOP_ERRORS, ShardElections, Standing
from shardlease.core.elector import Timing
from shardlease.core.messages import (
    Command,
    ExtendHandler,
    HandlerExited,
    HandlerRaised,
    PublishOwned,
    StartHandler,
    StopHandler,
    Write,
    WriteDone,
    WriteKind,
)
from shardlease.errors import Conflict

T = Timing(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3, handoff_grace=0.6, drain_timeout=1.0)


class World:
    def __init__(self, shards: int = 1) -> None:
        self.clock = FakeClock()
        self.cache = LeaseCache(self.clock)
        self.cache.replace_all([], "100")
        self.created = 0
        self.held_changes = 0
        self.rv = 100
        writer = Writer("g", "default", "a", "inc-a", T.lease_duration_seconds, shards)
        self.e = ShardElections(group="g", identity="a", incarnation="inc-a", timing=T, cache=self.cache,
                                clock=self.clock, writer=writer, log=logging.getLogger("test"),
                                metrics=RecordingMetrics(), jitter=lambda low, high: high,
                                on_held_change=self._held_changed, on_create=self._created)
        self.e.ensure(shards)
        self.e.ctx = Standing(generation=1, count=shards, assignment=dict.fromkeys(range(shards), "a"),
                              eligible=True, may_start=True)

    def _held_changed(self) -> None:
        self.held_changes += 1

    def _created(self) -> None:
        self.created += 1

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def run(self) -> list[Command]:
        self.e.touch_all()
        out = self.e.run(self.now)
        self.e.check_invariants()
        return out

    def answer(self, write: Write, error: Any = None) -> list[Command]:
        obj = None
        if write.body is not None and error is None:
            self.rv += 1
            obj = copy.deepcopy(write.body)
            obj["metadata"]["resourceVersion"] = str(self.rv)
        self.e.on_write(WriteDone(write, self.now, obj, error=error), self.now)
        self.e.check_invariants()
        return self.e.take()


def test_a_created_lease_is_held_at_once_but_its_handler_waits_for_the_group_read() -> None:
    w = World()
    (create,) = w.run()
    assert isinstance(create, Write) and create.kind is WriteKind.CREATE and create.shard == 0
    assert w.answer(create) == []
    assert w.created == 1 and w.held_changes == 1
    commands = w.run()
    assert commands == [PublishOwned(frozenset({0}))]           # held, but no handler yet
    w.e.confirm_created(w.now)
    (start,) = w.e.run(w.now)
    assert isinstance(start, StartHandler) and start.shard == 0 and start.generation == 1


def test_a_handler_waits_for_the_barrier_and_starts_once_it_has_passed() -> None:
    w = World()
    w.e.ctx.may_start = False
    (create,) = w.run()
    w.answer(create)
    w.e.confirm_created(w.now)
    assert not [c for c in w.run() if isinstance(c, StartHandler)]
    w.e.ctx.may_start = True
    assert [c for c in w.run() if isinstance(c, StartHandler)]


def test_a_renewal_extends_the_handler_and_stopping_stops_it_then_releases() -> None:
    w = World()
    (create,) = w.run()
    w.answer(create)
    w.e.confirm_created(w.now)
    (start,) = [c for c in w.run() if isinstance(c, StartHandler)]
    w.clock.advance(T.retry_period - 0.01)
    assert w.run() == []                                          # renewed every retry period
    w.clock.advance(0.01)
    (renew,) = w.run()
    assert isinstance(renew, Write) and renew.kind is WriteKind.RENEW
    (extend,) = w.answer(renew)
    assert extend == ExtendHandler(0, start.run, w.now + T.renew_deadline)

    w.e.ctx.stopping = True
    w.e.ctx.eligible = False
    (stop,) = w.run()
    assert stop == StopHandler(0, start.run)
    assert not w.e.settled()
    w.e.on_exit(HandlerExited(0, start.run), w.now)
    (release,) = w.run()
    assert isinstance(release, Write) and release.kind is WriteKind.RELEASE
    assert w.answer(release) == []
    assert w.run() == [PublishOwned(frozenset())] and w.e.settled()


def test_a_handler_that_keeps_raising_counts_as_crash_looping_for_its_current_run_only() -> None:
    w = World()
    (create,) = w.run()
    w.answer(create)
    w.e.confirm_created(w.now)
    (start,) = [c for c in w.run() if isinstance(c, StartHandler)]
    for _ in range(CRASH_LOOP_ERRORS - 1):
        w.e.on_raised(HandlerRaised(0, start.run), w.now)
    w.e.on_raised(HandlerRaised(0, start.run + 1), w.now)        # another run's raise: not counted
    assert w.e.crashing_shards(w.now) == []
    w.e.on_raised(HandlerRaised(0, start.run), w.now)
    assert w.e.crashing_shards(w.now) == [0]


def test_a_conflicting_acquisition_is_read_back_before_deciding_again() -> None:
    w = World()
    (create,) = w.run()
    assert w.answer(create, error=Conflict("exists")) == []
    assert w.run() == []                                          # the watch may bring it first
    w.clock.advance(T.retry_period)
    (refresh,) = w.run()
    assert isinstance(refresh, Write) and refresh.kind is WriteKind.REFRESH and refresh.shard == 0
    assert w.e.owned() == frozenset()
