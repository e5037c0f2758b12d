"""The load snapshot protocol on its own (core/loadplan.py): when the oldest member publishes, and how
every replica assigns from the snapshot and never from live loads."""

from __future__ import annotations

import logging
from typing import Any

from support import RecordingMetrics

from shardlease.core.assignment import assign
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import FakeClock
from shardlease.core.loadbalance import LoadSnapshot, balance
from shardlease.core.loadplan import LoadPlanner, Rebalance, live_loads
from shardlease.core.messages import WriteDone, WriteKind
from shardlease.core.records import (
    ANNOTATION_CAPACITY,
    ANNOTATION_LOAD_SNAPSHOT,
    ANNOTATION_LOADS,
    ANNOTATION_REBALANCED,
    LeaseRecord,
    format_loads,
)
from shardlease.core.resharding import GroupState, group_lease_body
from shardlease.errors import ConflictError

SETTINGS = Rebalance(period=10.0, threshold=0.15, epsilon=0.1, max_moves=8)
MEMBERS = ("a", "b", "c", "d")


def setup(*, generation: int = 1, count: int = 16) -> tuple[FakeClock, LeaseCache, LoadPlanner]:
    clock = FakeClock()
    cache = LeaseCache(clock)
    put_group(cache, clock, generation, count, "1")
    planner = LoadPlanner(group="g", namespace="ns", settings=SETTINGS, cache=cache, clock=clock,
                          log=logging.getLogger("test"), metrics=RecordingMetrics())
    return clock, cache, planner


def put_group(cache: LeaseCache, clock: FakeClock, generation: int, count: int, rv: str,
              annotations: dict[str, str] | None = None) -> LeaseRecord:
    body = group_lease_body("g", "ns", GroupState(count=count, generation=generation, span=count, basis=None), clock.now())
    body["metadata"]["resourceVersion"] = rv
    body["metadata"]["annotations"].update(annotations or {})
    record = LeaseRecord.from_object(body)
    assert record is not None
    cache.apply(record)
    return record


def member(identity: str, loads: dict[int, float], capacity: float = 1.0) -> LeaseRecord:
    record = LeaseRecord.from_object({"metadata": {
        "name": f"g-member-{identity}", "resourceVersion": "5",
        "annotations": {ANNOTATION_LOADS: format_loads(loads), ANNOTATION_CAPACITY: str(capacity)}}, "spec": {}})
    assert record is not None
    return record


def skewed(assignment: dict[int, str], hot_member: str) -> dict[str, LeaseRecord]:
    """Every shard of ``hot_member`` costs 10, every other shard 1."""
    return {m: member(m, {s: (10.0 if m == hot_member else 1.0) for s, o in assignment.items() if o == m})
            for m in MEMBERS}


def step(planner: LoadPlanner, clock: FakeClock, assignment: dict[int, str], members: dict[str, LeaseRecord], *,
         steward: bool = True, may_rebalance: bool = True, generation: int = 1) -> list[Any]:
    caps = {m: r.capacity for m, r in members.items()}
    return planner.step(clock.monotonic(), steward=steward, may_rebalance=may_rebalance, generation=generation,
                        count=len(assignment), assignment=assignment, members=members, capacities=caps)


def publish(cache: LeaseCache, clock: FakeClock, write: Any, rv: str) -> None:
    body = dict(write.body)
    body["metadata"] = {**body["metadata"], "resourceVersion": rv}
    record = LeaseRecord.from_object(body)
    assert record is not None
    cache.apply(record)


def test_without_reports_the_assignment_is_todays_and_nothing_is_published() -> None:
    clock, _cache, planner = setup()
    caps = dict.fromkeys(MEMBERS, 1.0)
    assert not planner.read(1, 16)
    assignment = planner.owners("g", 16, caps, 1.0)
    assert assignment == assign("g", 16, MEMBERS)
    members = {m: member(m, {}) for m in MEMBERS}
    assert step(planner, clock, assignment, members) == []


def test_the_steward_publishes_one_snapshot_when_imbalanced_and_everyone_assigns_from_it() -> None:
    clock, cache, planner = setup()
    caps = dict.fromkeys(MEMBERS, 1.0)
    assignment = planner.owners("g", 16, caps, 1.0)
    members = skewed(assignment, "a")
    (write,) = step(planner, clock, assignment, members)
    assert write.kind is WriteKind.GROUP_SNAPSHOT and write.sent_rv == "1"
    annotations = write.body["metadata"]["annotations"]
    snap = LoadSnapshot.decode(annotations[ANNOTATION_LOAD_SNAPSHOT])
    assert snap is not None and snap.generation == 1 and snap.count == 16 and snap.seq == 1
    assert snap.owners == tuple(assignment[i] for i in range(16))   # the base: the owners in force
    assert "imbalance" in snap.reason and annotations[ANNOTATION_REBALANCED].split(" ")[1].isdigit()
    assert annotations["shardlease.io/generation"] == "1"            # the group's own state kept
    # A non-steward replica with the same snapshot computes the same owners; not those of the live loads.
    publish(cache, clock, write, "2")
    other = LoadPlanner(group="g", namespace="ns", settings=SETTINGS, cache=cache, clock=clock,
                        log=logging.getLogger("test"), metrics=RecordingMetrics())
    assert planner.read(1, 16) and other.read(1, 16)
    mine, theirs = planner.owners("g", 16, caps, 1.0), other.owners("g", 16, caps, 1.0)
    assert mine == theirs == dict(enumerate(balance(members=caps, loads=snap.loads, base=snap.owners,
                                                    epsilon=0.1, max_moves=8).owners))
    assert 0 < planner.last_moves <= SETTINGS.max_moves
    assert sum(1 for s, o in mine.items() if o == "a") < sum(1 for s, o in assignment.items() if o == "a")


def test_at_most_one_snapshot_per_period_and_none_once_balanced() -> None:
    clock, cache, planner = setup()
    caps = dict.fromkeys(MEMBERS, 1.0)
    assignment = planner.owners("g", 16, caps, 1.0)
    (write,) = step(planner, clock, assignment, skewed(assignment, "a"))
    planner.on_written(WriteDone(write, clock.monotonic(), None, None), clock.monotonic())
    publish(cache, clock, write, "2")
    planner.read(1, 16)
    moved = planner.owners("g", 16, caps, 1.0)
    # Loads shift again at once: not within the period.
    for _ in range(8):
        clock.advance(1.0)
        assert step(planner, clock, moved, skewed(moved, "b")) == []
    clock.advance(3.0)
    assert len(step(planner, clock, moved, skewed(moved, "b"))) == 1
    # Balanced loads (every shard the same): nothing, period after period.
    for _ in range(10):
        clock.advance(10.0)
        assert step(planner, clock, moved, {m: member(m, {s: 1.0 for s, o in moved.items() if o == m})
                                            for m in MEMBERS}) == []


def test_only_the_steward_publishes_and_never_during_a_switch() -> None:
    clock, _cache, planner = setup()
    caps = dict.fromkeys(MEMBERS, 1.0)
    assignment = planner.owners("g", 16, caps, 1.0)
    members = skewed(assignment, "a")
    assert step(planner, clock, assignment, members, steward=False) == []
    clock.advance(5.0)
    assert step(planner, clock, assignment, members, may_rebalance=False) == []
    clock.advance(5.0)
    assert len(step(planner, clock, assignment, members)) == 1


def test_a_snapshot_of_another_generation_or_count_is_ignored() -> None:
    clock, cache, planner = setup()
    caps = dict.fromkeys(MEMBERS, 1.0)
    assignment = planner.owners("g", 16, caps, 1.0)
    (write,) = step(planner, clock, assignment, skewed(assignment, "a"))
    publish(cache, clock, write, "2")
    assert planner.read(1, 16) and planner.snapshot is not None
    # The group resharded to 8 shards, generation 2: the old snapshot no longer applies.
    text = cache.get("g-group").record.annotations[ANNOTATION_LOAD_SNAPSHOT]  # type: ignore[union-attr]
    put_group(cache, clock, 2, 8, "3", {ANNOTATION_LOAD_SNAPSHOT: text})
    assert planner.read(2, 8) and planner.snapshot is None
    assert planner.owners("g", 8, caps, 1.0) == assign("g", 8, MEMBERS)


def test_an_unreadable_snapshot_falls_back_to_the_count_assignment() -> None:
    clock, cache, planner = setup()
    put_group(cache, clock, 1, 16, "2", {ANNOTATION_LOAD_SNAPSHOT: "{broken"})
    assert not planner.read(1, 16)
    assert planner.owners("g", 16, dict.fromkeys(MEMBERS, 1.0), 1.0) == assign("g", 16, MEMBERS)


def test_a_conflicting_write_is_retried_at_the_next_check() -> None:
    clock, _cache, planner = setup()
    caps = dict.fromkeys(MEMBERS, 1.0)
    assignment = planner.owners("g", 16, caps, 1.0)
    members = skewed(assignment, "a")
    (write,) = step(planner, clock, assignment, members)
    assert step(planner, clock, assignment, members) == []     # one in flight
    planner.on_written(WriteDone(write, clock.monotonic(), None, ConflictError("409")), clock.monotonic())
    clock.advance(1.0)
    assert len(step(planner, clock, assignment, members)) == 1


def test_live_loads_prefer_the_assigned_owner_then_weights_then_unknown() -> None:
    members = {"a": member("a", {0: 5.0, 1: 7.0}), "b": member("b", {1: 9.0})}
    weights = {2: 3.0}
    assert live_loads(4, members, {0: "a", 1: "b", 2: "a", 3: "b"}, weights.get) == [5.0, 9.0, 3.0, None]
    assert live_loads(4, members, {0: "a", 1: "a", 2: "a", 3: "b"}) == [5.0, 7.0, None, None]
    assert live_loads(2, {"a": member("a", {5: 1.0})}, {}) == [None, None]  # beyond the count: ignored
