"""The membership rule: who is live, the group's shard count, who is in the ring, what may be collected."""

from __future__ import annotations

import datetime as dt

from shardlease.core.elector import Timing
from shardlease.core.membership import compute_membership
from shardlease.core.records import LeaseRecord

T = Timing(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


def member(identity: str, shards: int | None, created: str, *, holder: str | None = None, role: str = "member",
           duration: int = 15, renewed: str = "2026-11-28T10:00:00.000000Z") -> LeaseRecord:
    annotations = {"shardlease.io/shards": str(shards)} if shards is not None else {}
    obj = {"metadata": {"name": f"g-member-{identity}", "resourceVersion": "1", "creationTimestamp": created,
                        "labels": {"shardlease.io/group": "g", "shardlease.io/role": role},
                        "annotations": annotations},
           "spec": {"holderIdentity": identity if holder is None else holder, "leaseDurationSeconds": duration,
                    "renewTime": renewed}}
    parsed = LeaseRecord.from_object(obj)
    assert parsed is not None
    return parsed


def test_members_are_ordered_oldest_first_and_every_live_one_is_in_the_ring_whatever_its_count() -> None:
    """Every member runs the group's count (from the group Lease), so a member configured with another
    count still takes shards: that is what keeps a rolling update that changes the count from idling
    the new pods."""
    obs = [(member("b", 16, "2026-11-28T09:00:02Z"), 100.0), (member("a", 8, "2026-11-28T09:00:01Z"), 100.0),
           (member("c", 8, "2026-11-28T09:00:03Z"), 100.0)]
    m = compute_membership("g", obs, 105.0, T)
    assert [x.identity for x in m.live] == ["a", "b", "c"]
    assert m.group_count == 8 and m.eligible == frozenset({"a", "b", "c"})
    assert m.recheck_at == 115.0


def test_released_expired_and_misnamed_member_leases_are_not_live_and_may_be_collected_later() -> None:
    obs = [(member("a", 8, "2026-11-28T09:00:01Z"), 100.0),
           (member("gone", 8, "2026-11-28T09:00:00Z", holder=""), 50.0),          # released
           (member("old", 8, "2026-11-28T09:00:00Z"), 80.0),                       # expired at 95
           (member("x", 8, "2026-11-28T09:00:00Z", holder="y"), 100.0),            # name and holder disagree
           (member("s", 8, "2026-11-28T09:00:00Z", role="shard"), 100.0)]          # not a member Lease
    m = compute_membership("g", obs, 100.5, T, collect_after=75.0, exclude_dead="g-member-x")
    assert [x.identity for x in m.live] == ["a"] and m.group_count == 8
    dead = {record.name: at for at, record in m.dead}
    assert dead == {"g-member-gone": 50.0 + 15 + 75.0, "g-member-old": 95.0 + 75.0}


def test_a_newcomer_treats_a_stale_renew_time_as_gone_but_never_a_record_seen_to_change() -> None:
    wall = dt.datetime(2026, 11, 28, 10, 0, 30, tzinfo=dt.timezone.utc)   # 30 s after renewTime > renew deadline
    obs = [(member("crashed", 8, "2026-11-28T09:00:00Z"), 100.0), (member("a", 8, "2026-11-28T09:00:01Z"), 101.0)]
    fresh = compute_membership("g", obs, 101.0, T, wall_now=wall, seen_change_after=100.5)
    assert [x.identity for x in fresh.live] == ["a"]      # "crashed" only seen in the initial list: gone
    later = compute_membership("g", obs, 101.0, T, wall_now=wall, seen_change_after=0.0)
    assert [x.identity for x in later.live] == ["crashed", "a"]  # seen to change: client-go's rule alone


def test_a_member_gone_by_the_newcomer_rule_is_collected_no_earlier_than_by_client_gos() -> None:
    """A replica that listed a member Lease once (renewTime 1.3 s old, its renew deadline 1.2 s) treats
    that member as gone at once, but deletes its Lease only after observed + lease + collect_after:
    the shortcut once let the oldest member delete a just-killed peer's Lease a lease too early."""
    short = Timing(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3)
    wall = dt.datetime(2026, 11, 28, 10, 0, 1, 300000, tzinfo=dt.timezone.utc)
    obs = [(member("killed", 8, "2026-11-28T09:00:00Z", duration=2), 100.0),
           (member("a", 8, "2026-11-28T09:00:01Z", duration=2), 101.0)]
    m = compute_membership("g", obs, 101.0, short, wall_now=wall, seen_change_after=100.5, collect_after=10.0)
    assert [x.identity for x in m.live] == ["a"]
    assert {record.name: at for at, record in m.dead} == {"g-member-killed": 100.0 + 2.0 + 10.0}


def test_no_members_no_count() -> None:
    m = compute_membership("g", [], 0.0, T)
    assert m.live == () and m.group_count is None and m.eligible == frozenset()
