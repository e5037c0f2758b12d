"""The group follower on its own: creating and following the group Lease, the rollout switch, the
barrier, confirming created shard Leases, and the clean-up of retired shards."""

from __future__ import annotations

import logging

import pytest
from support import RecordingMetrics

from shardlease.core.cache import LeaseCache
from shardlease.core.clock import FakeClock
from shardlease.core.elector import Timing
from shardlease.core.groupfollow import GroupFollower
from shardlease.core.messages import Write, WriteDone, WriteKind
from shardlease.core.records import LeaseRecord
from shardlease.core.resharding import GroupState, group_lease_body
from shardlease.errors import ConflictError, ServerError

T = Timing(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


def setup(configured: int = 4) -> tuple[FakeClock, LeaseCache, GroupFollower, RecordingMetrics]:
    clock = FakeClock()
    cache = LeaseCache(clock)
    metrics = RecordingMetrics()
    follower = GroupFollower(group="g", namespace="ns", configured=configured, timing=T, cache=cache, clock=clock,
                             log=logging.getLogger("test"), metrics=metrics)
    return clock, cache, follower, metrics


def put_group(cache: LeaseCache, clock: FakeClock, count: int, generation: int, rv: str, *,
              span: int | None = None, basis: int | None = None) -> LeaseRecord:
    state = GroupState(count=count, generation=generation, span=span or count, basis=basis)
    body = group_lease_body("g", "ns", state, clock.now())
    body["metadata"]["resourceVersion"] = rv
    record = LeaseRecord.from_object(body)
    assert record is not None
    cache.apply(record)
    return record


def shard(i: int, generation: int, *, holder: str = "") -> LeaseRecord:
    record = LeaseRecord.from_object(
        {"metadata": {"name": f"g-shard-{i}", "resourceVersion": f"{100 + i}",
                      "annotations": {"shardlease.io/generation": str(generation)},
                      "labels": {"shardlease.io/group": "g", "shardlease.io/role": "shard",
                                 "shardlease.io/shard": str(i)}},
         "spec": {"holderIdentity": holder}})
    assert record is not None
    return record


def follow(f: GroupFollower, now: float, *, oldest: bool = True, votes: list[int | None] | None = None,
           fleet: int | None = None) -> tuple[list[Write], bool]:
    return f.follow(now, oldest=oldest, stopping=False, configured_counts=votes or [4], fleet=fleet)


def test_only_the_oldest_member_creates_the_group_lease_once_and_retries_after_a_failure() -> None:
    clock, _cache, f, metrics = setup(configured=4)
    now = clock.monotonic()
    assert follow(f, now, oldest=False) == ([], False)
    (write,), adopted = follow(f, now, votes=[6, 6, 4])  # the majority, not its own count
    assert write.kind is WriteKind.GROUP_CREATE and write.name == "g-group" and not adopted
    assert write.body is not None and write.body["metadata"]["annotations"]["shardlease.io/shards"] == "6"
    assert follow(f, now) == ([], False)                          # one write in flight at a time
    f.on_written(WriteDone(write, now, error=ServerError("boom", status=500)), now)
    assert len(metrics.errors) == 1
    assert follow(f, now + T.retry_period - 0.1) == ([], False)   # retried a retry period later
    assert len(follow(f, now + T.retry_period)[0]) == 1
    # A conflict means another writer won: retried later too, but not counted as an API error.
    f.on_written(WriteDone(write, now, error=ConflictError("taken")), now)
    assert len(metrics.errors) == 1


def test_a_newer_generation_is_adopted_and_its_handlers_wait_for_the_barrier() -> None:
    clock, cache, f, _ = setup()
    now = clock.monotonic()
    put_group(cache, clock, 4, 1, "1")
    assert follow(f, now, oldest=False) == ([], True)
    assert (f.count, f.generation, f.span, f.may_start, f.switching) == (4, 1, 4, True, False)
    assert follow(f, now, oldest=False) == ([], False)             # the same version: nothing new

    put_group(cache, clock, 2, 2, "2", span=4)
    assert follow(f, now + 1, oldest=False) == ([], True)
    assert (f.count, f.generation, f.span, f.switching, f.adopted_at) == (2, 2, 4, True, now + 1)

    leases = {0: shard(0, 2), 1: shard(1, 2), 2: shard(2, 2), 3: shard(3, 1)}
    assert not f.check_barrier(now + 2, leases.get, lambda i: True)   # shard 3 still stamped lower
    leases[3] = shard(3, 2)
    assert not f.check_barrier(now + 2, leases.get, lambda i: i != 3)  # not listed yet: unknown
    assert f.check_barrier(now + 3, leases.get, lambda i: True)
    assert f.may_start and not f.check_barrier(now + 4, leases.get, lambda i: True)  # passes once


def test_a_rollout_switches_once_the_majority_has_asked_for_a_lease_duration() -> None:
    clock, cache, f, _ = setup()
    now = clock.monotonic()
    group = put_group(cache, clock, 4, 1, "1", basis=4)
    follow(f, now, fleet=4)
    assert follow(f, now + 1, fleet=8) == ([], False)
    assert f.wakeup() == now + 1 + T.lease_duration
    assert follow(f, now + 1 + T.lease_duration - 0.1, fleet=8) == ([], False)
    (write,), _ = follow(f, now + 1 + T.lease_duration, fleet=8)
    assert write.kind is WriteKind.GROUP_UPDATE and write.sent_rv == group.resource_version
    assert write.body is not None and write.body["metadata"]["annotations"]["shardlease.io/generation"] == "2"
    assert f.wakeup() == float("inf")


def test_a_majority_that_goes_back_before_the_lease_duration_switches_nothing() -> None:
    clock, cache, f, _ = setup()
    now = clock.monotonic()
    put_group(cache, clock, 4, 1, "1", basis=4)
    follow(f, now, fleet=8)
    assert follow(f, now + 1, fleet=4) == ([], False) and f.rollout_since is None
    assert follow(f, now + 2 * T.lease_duration, fleet=4) == ([], False)


@pytest.mark.parametrize(("answer_generation", "confirmed"), [(1, True), (2, False)])
def test_confirming_created_shard_leases(answer_generation: int, confirmed: bool) -> None:
    clock, cache, f, metrics = setup()
    now = clock.monotonic()
    put_group(cache, clock, 4, 1, "1")
    follow(f, now, oldest=False)
    assert f.check_due(now) is None                                # nothing created: no read
    f.want_check()
    check = f.check_due(now)
    assert check == Write(WriteKind.GROUP_CHECK, "g-group")
    f.want_check()
    assert f.check_due(now) is None                                # one read in flight at a time
    assert not f.on_checked(WriteDone(check, now, error=ServerError("boom", status=500)), now)
    assert len(metrics.errors) == 1
    assert f.check_due(now + T.retry_period / 2 - 0.01) is None    # a failed read is retried a bit later
    again = f.check_due(now + T.retry_period / 2)
    assert again is not None
    answer = put_group(LeaseCache(clock), clock, 4, answer_generation, "5")
    assert f.on_checked(WriteDone(again, now, obj=answer.raw), now) is confirmed
    assert cache.get("g-group") is not None and cache.get("g-group").record.resource_version == "5"  # type: ignore[union-attr]


def test_the_oldest_member_deletes_retired_shard_leases_then_lowers_the_span() -> None:
    clock, cache, f, _ = setup()
    now = clock.monotonic()
    put_group(cache, clock, 2, 2, "1", span=4)
    follow(f, now, oldest=False)
    leases = {0: shard(0, 2), 1: shard(1, 2), 2: shard(2, 2), 3: shard(3, 2)}
    assert f.check_barrier(now, leases.get, lambda i: True)
    deleted: list[str] = []

    def delete(record: LeaseRecord) -> Write | None:
        deleted.append(record.name)
        return Write(WriteKind.COLLECT, record.name, sent_rv=record.resource_version)

    def clean_up(at: float, *, oldest: bool = True, generations: dict[str, int | None] | None = None) -> list[Write]:
        return f.clean_up(at, oldest=oldest, stopping=False, member_generations=generations or {"a": 2},
                          record_of=leases.get, covers=lambda i: True, delete=delete)

    later = now + T.lease_duration
    assert clean_up(later - 0.1) == []                             # a lease duration after the barrier
    assert clean_up(later, oldest=False) == []
    assert clean_up(later, generations={"a": 2, "b": 1}) == []     # a member still runs generation 1
    leases[3] = shard(3, 3)
    assert clean_up(later) == []                                   # a newer generation's live Lease: kept
    leases[3] = shard(3, 2)
    writes = clean_up(later)
    assert [w.name for w in writes] == ["g-shard-2", "g-shard-3"]
    del leases[2], leases[3]
    (lower,) = clean_up(later)
    assert lower.kind is WriteKind.GROUP_UPDATE
    assert lower.body is not None and lower.body["metadata"]["annotations"]["shardlease.io/span"] == "2"
