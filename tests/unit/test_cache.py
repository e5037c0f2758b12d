"""LeaseCache: observation times, resourceVersion ordering, relists and tombstones."""

from __future__ import annotations

from typing import Any

from shardlease.core.cache import LeaseCache, rv_newer
from shardlease.core.clock import FakeClock
from shardlease.core.records import LeaseRecord


def rec(name: str = "g-shard-0", rv: str = "5", holder: str = "a", renew: str = "2026-01-01T00:00:00.000000Z",
        labels: dict[str, str] | None = None) -> LeaseRecord:
    obj: dict[str, Any] = {"metadata": {"name": name, "resourceVersion": rv, "labels": labels or {}},
                           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew}}
    record = LeaseRecord.from_object(obj)
    assert record is not None
    return record


def test_rv_ordering() -> None:
    assert rv_newer("10", "9") and not rv_newer("9", "10") and not rv_newer("7", "7")
    assert rv_newer("abc", "9")  # opaque: arrival order


def test_observed_time_moves_only_when_the_spec_changes() -> None:
    clock = FakeClock()
    wakes: list[int] = []
    cache = LeaseCache(clock, on_change=lambda: wakes.append(1))
    assert cache.apply(rec(rv="5"))
    first = cache.get("g-shard-0")
    assert first is not None and first.observed == clock.monotonic()
    clock.advance(3)
    assert cache.apply(rec(rv="6", labels={"x": "y"}))  # metadata-only change
    same = cache.get("g-shard-0")
    assert same is not None and same.observed == first.observed
    clock.advance(3)
    assert cache.apply(rec(rv="7", renew="2026-01-01T00:00:06.000000Z"))
    moved = cache.get("g-shard-0")
    assert moved is not None and moved.observed == clock.monotonic()
    assert len(wakes) == 3
    assert cache.take_changed() == {"g-shard-0"} and cache.take_changed() == set()


def test_older_or_duplicate_versions_never_roll_back() -> None:
    clock = FakeClock()
    cache = LeaseCache(clock)
    cache.apply(rec(rv="10", holder="new"))
    assert not cache.apply(rec(rv="9", holder="old"))
    assert not cache.apply(rec(rv="10", holder="new"))
    got = cache.get("g-shard-0")
    assert got is not None and got.record.holder == "new"


def test_delete_leaves_a_tombstone_that_blocks_late_older_records() -> None:
    clock = FakeClock()
    cache = LeaseCache(clock)
    cache.apply(rec(rv="10"))
    clock.advance(1)
    assert cache.delete("g-shard-0", "12")
    assert cache.get("g-shard-0") is None
    assert cache.absent_since("g-shard-0") == clock.monotonic()
    assert not cache.apply(rec(rv="11"))
    assert cache.apply(rec(rv="13"))


def test_relist_keeps_unchanged_observation_and_drops_vanished() -> None:
    clock = FakeClock()
    cache = LeaseCache(clock)
    cache.replace_all([rec("a", "1"), rec("b", "2")], "2")
    assert cache.synced.is_set()
    t0 = clock.monotonic()
    clock.advance(5)
    cache.replace_all([rec("a", "1")], "8")
    a = cache.get("a")
    assert a is not None and a.observed == t0
    assert cache.get("b") is None and cache.absent_since("b") == clock.monotonic()


def test_relist_does_not_drop_our_newer_write() -> None:
    clock = FakeClock()
    cache = LeaseCache(clock)
    cache.replace_all([], "5")
    cache.apply(rec("mine", "9"))  # our create, answered after the list was taken
    cache.replace_all([], "7")
    assert cache.get("mine") is not None


def test_absent_since_defaults_to_first_sync() -> None:
    clock = FakeClock()
    cache = LeaseCache(clock)
    cache.replace_all([], "1")
    t0 = clock.monotonic()
    clock.advance(10)
    assert cache.absent_since("never-seen") == t0
