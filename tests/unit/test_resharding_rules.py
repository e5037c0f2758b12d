"""The resharding rules (``core/resharding.py``): who decides the group's count, and when a switch is over.

Table tests of the pure functions the replicas, ``shardlease reshard`` and ``shardlease status`` share:
the majority vote, the rollout/rollback rule that cannot flip-flop, the basis a reshard records so that
old members do not undo it, the barrier, and reading the group Lease.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shardlease.core.records import LeaseRecord, group_lease_name
from shardlease.core.resharding import (
    MAX_SHARDS,
    GroupState,
    fleet_count,
    group_lease_body,
    initial_state,
    pending_shards,
    reshard_state,
    rollout_state,
)

WALL = dt.datetime(2026, 11, 28, 10, 0, 0, tzinfo=dt.timezone.utc)


def state(count: int, generation: int, *, span: int | None = None, basis: int | None = None,
          previous: int | None = None) -> GroupState:
    return GroupState(count=count, generation=generation, span=span or count, basis=basis, previous=previous)


def record(obj: dict[str, Any]) -> LeaseRecord:
    parsed = LeaseRecord.from_object(obj)
    assert parsed is not None
    return parsed


def shard_lease(i: int, generation: int | None) -> LeaseRecord:
    annotations = {} if generation is None else {"shardlease.io/generation": str(generation)}
    return record({"metadata": {"name": f"g-shard-{i}", "annotations": annotations,
                                "labels": {"shardlease.io/group": "g", "shardlease.io/role": "shard",
                                           "shardlease.io/shard": str(i)}},
                   "spec": {"holderIdentity": "a"}})


@pytest.mark.parametrize(("votes", "expected"), [
    ([], None),                      # nobody live: no majority
    ([16], 16),
    ([8, 8, 16], 8),                 # strict majority
    ([8, 16], None),                 # a tie changes nothing
    ([8, 8, 16, 16], None),
    ([8, 16, 12], None),             # a plurality is not a majority
    ([8, 8, None], 8),
    ([8, None], None),               # a member without a readable count votes against every majority
    ([None, None, 8], None),         # and unreadable counts are never the answer
])
def test_fleet_count_is_a_strict_majority_of_the_live_members(votes: list[int | None], expected: int | None) -> None:
    assert fleet_count(votes) == expected
    assert fleet_count(iter(votes)) == expected  # any iterable, read once


@pytest.mark.parametrize(("votes", "oldest", "count", "basis"), [
    ([8, 8, 16], 16, 8, 8),          # the majority, even when the oldest member says otherwise
    ([8, 16], 16, 16, None),         # no majority: the oldest member's count, no basis
])
def test_the_first_generation_is_the_majority_else_the_oldest(votes: list[int | None], oldest: int, count: int,
                                                             basis: int | None) -> None:
    first = initial_state(votes, oldest=oldest)
    assert (first.count, first.generation, first.span, first.basis) == (count, 1, count, basis)


def test_a_rollout_switches_once_and_a_rollback_switches_back_once() -> None:
    start = state(8, 1, basis=8)
    assert rollout_state(start, None) is None         # no majority (a tie mid-rollout)
    assert rollout_state(start, 8) is None            # the majority is what the group last changed by

    up = rollout_state(start, 16)
    assert up is not None
    assert (up.count, up.generation, up.span, up.basis, up.previous, up.changed_by) == (16, 2, 16, 16, 8, "rollout")
    assert rollout_state(up, 16) is None              # the rest of the rollout changes nothing

    back = rollout_state(up, 8)                       # rollback: the majority moves back, once
    assert back is not None
    assert (back.count, back.generation, back.span, back.basis, back.previous) == (8, 3, 16, 8, 16)
    assert rollout_state(back, 8) is None


def test_a_majority_matching_the_running_count_only_moves_the_basis() -> None:
    """E.g. a reshard to 16 followed by a rollout that configures every member with 16: no new
    generation, no pause."""
    after_reshard = state(16, 2, basis=8, previous=8)
    moved = rollout_state(after_reshard, 16)
    assert moved is not None
    assert (moved.count, moved.generation, moved.basis) == (16, 2, 16)


def test_a_reshards_basis_stops_members_still_configured_with_the_old_count_from_undoing_it() -> None:
    start = state(8, 1, basis=8)
    resharded = reshard_state(start, 16, fleet=8)
    assert (resharded.count, resharded.generation, resharded.span, resharded.basis, resharded.previous,
            resharded.changed_by) == (16, 2, 16, 8, 8, "reshard")
    assert rollout_state(resharded, 8) is None        # the old configuration is the basis: no switch back

    later = rollout_state(resharded, 12)              # a later rollout to another count wins again
    assert later is not None and (later.count, later.generation, later.basis) == (12, 3, 12)


def test_a_reshard_without_a_majority_keeps_the_basis_and_the_span_only_grows() -> None:
    down = reshard_state(state(16, 4, basis=16), 5, fleet=None)
    assert (down.count, down.generation, down.span, down.basis, down.previous) == (5, 5, 16, 16, 16)
    assert list(down.retired()) == list(range(5, 16))
    up = reshard_state(down, 20, fleet=16)
    assert (up.span, up.basis, list(up.retired())) == (20, 16, [])


def test_pending_shards_waits_for_absent_older_and_unobserved_leases() -> None:
    target = state(4, 3, span=6)
    leases = {0: shard_lease(0, 3), 1: shard_lease(1, 2), 3: shard_lease(3, None), 4: shard_lease(4, 4),
              5: shard_lease(5, 3)}
    # 1 is older, 2 is absent, 3 has no stamp (generation 1); 4 carries a newer generation: passed.
    assert pending_shards(target, leases.get) == [1, 2, 3]
    # not yet observed (e.g. outside the part of the group a replica watches) counts as pending
    assert pending_shards(target, leases.get, covers=lambda i: i != 5) == [1, 2, 3, 5]

    stamped = {i: shard_lease(i, 3) for i in range(6)}
    assert pending_shards(target, stamped.get) == []
    assert pending_shards(target, {i: stamped[i] for i in range(4)}.get) == [4, 5]  # retired ones too


def test_the_first_generation_never_waits() -> None:
    assert pending_shards(state(4, 1), lambda _i: None, covers=lambda _i: False) == []


def group_object(annotations: dict[str, str], acquire: str | None = "2026-11-28T09:59:00.000000Z") -> dict[str, Any]:
    spec = {"acquireTime": acquire} if acquire else {}
    return {"metadata": {"name": group_lease_name("g"), "resourceVersion": "42", "annotations": annotations,
                         "labels": {"shardlease.io/group": "g", "shardlease.io/role": "group"}}, "spec": spec}


FULL = {"shardlease.io/shards": "16", "shardlease.io/generation": "3", "shardlease.io/span": "20",
        "shardlease.io/basis": "8", "shardlease.io/previous-shards": "8", "shardlease.io/changed-by": "reshard"}


def test_group_state_from_a_record() -> None:
    read = GroupState.from_record(record(group_object(FULL)))
    assert read is not None
    assert (read.count, read.generation, read.span, read.basis, read.previous, read.changed_by,
            read.resource_version) == (16, 3, 20, 8, 8, "reshard", "42")
    assert read.changed_at == dt.datetime(2026, 11, 28, 9, 59, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"shardlease.io/generation": None}, None),                 # no generation: unreadable
    ({"shardlease.io/shards": None}, None),
    ({"shardlease.io/shards": "abc"}, None),
    ({"shardlease.io/shards": "0"}, None),
    ({"shardlease.io/shards": str(MAX_SHARDS + 1)}, None),
    ({"shardlease.io/generation": "-1"}, None),
    ({"shardlease.io/span": "4"}, (16, 3, 16)),                 # a span below the count is the count
    ({"shardlease.io/span": None}, (16, 3, 16)),
    ({"shardlease.io/basis": "x", "shardlease.io/previous-shards": None}, (16, 3, 20)),
])
def test_group_state_tolerates_hand_edits(changes: dict[str, str | None],
                                           expected: tuple[int, int, int] | None) -> None:
    annotations = {k: v for k, v in {**FULL, **changes}.items() if v is not None}
    read = GroupState.from_record(record(group_object(annotations)))
    assert (None if read is None else (read.count, read.generation, read.span)) == expected
    if read is not None and "shardlease.io/basis" in changes:
        assert read.basis is None and read.previous is None


def test_group_lease_body_round_trips_and_dates_only_a_new_generation() -> None:
    first = reshard_state(state(8, 1, basis=8), 16, fleet=8)
    created = record(group_lease_body("g", "default", first, WALL))
    assert created.name == "g-group" and created.labels["shardlease.io/role"] == "group" and not created.holder
    back = GroupState.from_record(created)
    assert back is not None and (back.count, back.generation, back.span, back.basis, back.previous,
                                 back.changed_by, back.changed_at) == (16, 2, 16, 8, 8, "reshard", WALL)

    later = WALL + dt.timedelta(minutes=5)
    basis_only = record(group_lease_body("g", "default", GroupState(16, 2, 16, 16, 8, "rollout"), later, created))
    assert basis_only.acquire_time == WALL        # same generation: still "written at" the switch
    switched = record(group_lease_body("g", "default", reshard_state(first, 5, 16), later, created))
    assert switched.acquire_time == later
    assert switched.raw["metadata"]["resourceVersion"] == created.resource_version  # conditional
