"""Our member Lease on its own: renew, retry, delete at shutdown, and the duplicate-identity rule."""

from __future__ import annotations

import copy
import logging
from typing import Any

from shardlease.core.bodies import Writer
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import FakeClock
from shardlease.core.elector import Timing
from shardlease.core.member import MemberLease
from shardlease.core.messages import WriteDone, WriteKind
from shardlease.core.records import LeaseRecord
from shardlease.errors import RequestTimeout
from shardlease.runtime.metrics import ManagerMetrics

T = Timing(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3, handoff_grace=0.6, drain_timeout=1.0)


def conflict_gauge(metrics: ManagerMetrics) -> float:
    value = metrics.registry.get_sample_value("shardlease_identity_conflict", {"group": "g", "identity": "a"})
    assert value is not None
    return value


def member(incarnation: str = "mine") -> tuple[MemberLease, LeaseCache, FakeClock, ManagerMetrics]:
    clock = FakeClock()
    cache = LeaseCache(clock)
    cache.replace_all([], "1")
    metrics = ManagerMetrics("g", "a")
    keeper = MemberLease(group="g", identity="a", incarnation=incarnation, timing=T, cache=cache, clock=clock,
                         writer=Writer("g", "default", "a", incarnation, 2, 4), log=logging.getLogger("test"),
                         metrics=metrics, jitter=lambda low, high: high)
    return keeper, cache, clock, metrics


def stored(body: dict[str, Any], rv: str) -> dict[str, Any]:
    obj = copy.deepcopy(body)
    obj["metadata"]["resourceVersion"] = rv
    return obj


def test_created_renewed_every_interval_and_retried_while_failing() -> None:
    keeper, _cache, clock, _ = member()
    (create,), _ = keeper.step(clock.monotonic(), stopping=False, synced_at=0.0, problems=str)
    assert create.kind is WriteKind.MEMBER_CREATE and create.body is not None
    keeper.on_result(WriteDone(create, clock.monotonic(), stored(create.body, "2")), clock.monotonic())
    assert keeper.held(clock.monotonic())
    assert keeper.step(clock.monotonic(), stopping=False, synced_at=0.0, problems=str)[0] == []
    clock.advance(0.3)
    (renew,), _ = keeper.step(clock.monotonic(), stopping=False, synced_at=0.0, problems=str)
    assert renew.kind is WriteKind.MEMBER_RENEW and renew.sent_rv == "2"
    keeper.on_result(WriteDone(renew, clock.monotonic(), error=RequestTimeout("timed out")), clock.monotonic())
    clock.advance(0.2)
    assert keeper.step(clock.monotonic(), stopping=False, synced_at=0.0, problems=str)[0] == []
    clock.advance(0.11)
    assert keeper.step(clock.monotonic(), stopping=False, synced_at=0.0, problems=str)[0]  # retried
    clock.advance(1.0)
    assert not keeper.held(clock.monotonic())              # past the renew deadline


def test_a_live_member_lease_of_another_incarnation_is_refused_marked_once_and_released_when_gone() -> None:
    keeper, cache, clock, metrics = member("mine")
    theirs = Writer("g", "default", "a", "theirs", 2, 4).member(None, clock.now(), held=False)
    record = LeaseRecord.from_object(stored(theirs, "5"))
    assert record is not None
    cache.apply(record)
    writes, changed = keeper.step(clock.monotonic(), stopping=False, synced_at=0.0, problems=str)
    assert changed and keeper.conflict == "theirs" and conflict_gauge(metrics) == 1
    assert [w.kind for w in writes] == [WriteKind.MEMBER_MARK]
    clock.advance(1.0)
    assert keeper.step(clock.monotonic(), stopping=False, synced_at=0.0, problems=str) == ([], False)
    # At shutdown a refused process never deletes the other's member Lease.
    assert keeper.step(clock.monotonic(), stopping=True, synced_at=0.0, problems=str) == ([], False)
    assert keeper.settled
    # A fresh keeper sees the other Lease expire (2 s without change) and takes part again.
    keeper2, cache2, clock2, metrics2 = member("mine")
    cache2.apply(record)
    keeper2.step(clock2.monotonic(), stopping=False, synced_at=0.0, problems=str)
    assert conflict_gauge(metrics2) == 1
    clock2.advance(2.01)
    writes, changed = keeper2.step(clock2.monotonic(), stopping=False, synced_at=0.0, problems=str)
    assert changed and keeper2.conflict is None and conflict_gauge(metrics2) == 0
    assert [w.kind for w in writes] == [WriteKind.MEMBER_RENEW]   # conditional on the expired Lease's version
    assert writes[0].sent_rv == "5"
