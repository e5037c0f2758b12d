"""The Lease bodies shardlease writes: exact fields, conditional on the resourceVersion seen."""

from __future__ import annotations

import datetime as dt

from shardlease.core.bodies import Writer
from shardlease.core.records import (
    ANNOTATION_CAPACITY,
    ANNOTATION_EPOCH,
    ANNOTATION_GENERATION,
    ANNOTATION_INCARNATION,
    ANNOTATION_LOAD,
    ANNOTATION_LOADS,
    ANNOTATION_PROBLEMS,
    ANNOTATION_SHARDS,
    LeaseRecord,
)

WALL = dt.datetime(2026, 11, 28, 10, 0, 0, tzinfo=dt.timezone.utc)
W = Writer("g", "ns", "me", "inc1", 15, 8)


def record(spec: dict[str, object], rv: str = "7", name: str = "g-shard-3", **meta: object) -> LeaseRecord:
    obj = {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, **meta}, "spec": spec}
    parsed = LeaseRecord.from_object(obj)
    assert parsed is not None
    return parsed


WALL_MS = 1_795_860_000_000  # WALL in milliseconds since the Unix epoch


def test_acquire_of_an_absent_lease_creates_it_with_an_epoch_token_and_our_incarnation() -> None:
    body, token = W.acquire(3, None, WALL)
    assert token == WALL_MS << 20          # transitions 0 on top of the creation epoch
    assert body["metadata"]["name"] == "g-shard-3" and "resourceVersion" not in body["metadata"]
    assert body["metadata"]["labels"] == {"shardlease.io/group": "g", "shardlease.io/role": "shard",
                                          "shardlease.io/shard": "3"}
    assert body["metadata"]["annotations"] == {ANNOTATION_INCARNATION: "inc1", ANNOTATION_GENERATION: "1",
                                               ANNOTATION_EPOCH: str(WALL_MS)}
    assert body["spec"] == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-11-28T10:00:00.000000Z",
                            "renewTime": "2026-11-28T10:00:00.000000Z", "leaseTransitions": 0}


def test_every_acquisition_raises_the_token_even_when_the_lease_names_us() -> None:
    body, token = W.acquire(3, record({"holderIdentity": "me", "leaseTransitions": 4}), WALL)
    assert token == 5 and body["spec"]["leaseTransitions"] == 5
    assert body["metadata"]["resourceVersion"] == "7"      # conditional on what we saw


def test_a_recreated_lease_tokens_start_above_every_token_of_the_deleted_one() -> None:
    """leaseTransitions restarts at 0 in a new Lease object; the epoch keeps the token rising: above the
    old Lease's tokens by the clock, and above what the creator saw even when its clock is behind."""
    old_epoch = WALL_MS - 60_000
    old = record({"holderIdentity": "a", "leaseTransitions": 900}, annotations={ANNOTATION_EPOCH: str(old_epoch)})
    _, recreated = W.acquire(3, None, WALL, epoch_floor=old.epoch)
    assert recreated > old.token
    behind = WALL - dt.timedelta(hours=1)                  # the creator's clock is an hour slow
    body, token = W.acquire(3, None, behind, epoch_floor=old.epoch)
    assert token > old.token and body["metadata"]["annotations"][ANNOTATION_EPOCH] == str(old_epoch + 1)
    retired = W.retire(3, None, behind, 2, epoch_floor=old.epoch)
    assert retired["metadata"]["annotations"][ANNOTATION_EPOCH] == str(old_epoch + 1)


def test_a_lease_that_lost_its_epoch_gets_it_back_on_the_next_write() -> None:
    """An operator who replaced the object without the annotation does not send the token back down."""
    stripped = record({"holderIdentity": "a", "leaseTransitions": 3})
    body, token = W.acquire(3, stripped, WALL, epoch_floor=WALL_MS)
    assert token == (WALL_MS << 20) + 4 and body["metadata"]["annotations"][ANNOTATION_EPOCH] == str(WALL_MS)
    assert W.renew(3, stripped, WALL, WALL_MS)["metadata"]["annotations"][ANNOTATION_EPOCH] == str(WALL_MS)
    assert ANNOTATION_EPOCH not in W.renew(3, stripped, WALL)["metadata"]["annotations"]
    kept = record({"holderIdentity": "a", "leaseTransitions": 3}, annotations={ANNOTATION_EPOCH: "77"})
    body, token = W.acquire(3, kept, WALL)
    assert token == (77 << 20) + 4 and body["metadata"]["annotations"][ANNOTATION_EPOCH] == "77"


def test_renew_keeps_tenure_fields_and_foreign_metadata() -> None:
    seen = record({"holderIdentity": "me", "leaseTransitions": 4, "acquireTime": "2026-11-28T09:00:00.000000Z"},
                  labels={"team": "x"}, annotations={"note": "kept"})
    body = W.renew(3, seen, WALL)
    assert body["spec"]["leaseTransitions"] == 4 and body["spec"]["acquireTime"] == "2026-11-28T09:00:00.000000Z"
    assert body["spec"]["renewTime"] == "2026-11-28T10:00:00.000000Z"
    assert body["metadata"]["labels"]["team"] == "x" and body["metadata"]["annotations"]["note"] == "kept"
    assert body["metadata"]["annotations"][ANNOTATION_INCARNATION] == "inc1"


def test_renew_carries_the_smoothed_load_and_nothing_else_changes() -> None:
    seen = record({"holderIdentity": "me", "leaseTransitions": 4}, annotations={ANNOTATION_LOAD: "3"})
    with_load = W.renew(3, seen, WALL, load=12.345678)
    assert with_load["metadata"]["annotations"][ANNOTATION_LOAD] == "12.35"
    without = W.renew(3, seen, WALL)
    assert without["metadata"]["annotations"][ANNOTATION_LOAD] == "3"  # the last value stays until the next
    assert {k: v for k, v in with_load.items() if k != "metadata"} == {k: v for k, v in without.items() if k != "metadata"}


def test_member_lease_publishes_capacity_and_loads() -> None:
    from shardlease.core.records import format_loads

    writer = Writer("g", "ns", "me", "inc1", 15, 8, capacity=2.5)
    body = writer.member(None, WALL, held=False, loads=format_loads({7: 0.25, 3: 1234.5678}))
    parsed = LeaseRecord.from_object(body)
    assert parsed is not None
    assert body["metadata"]["annotations"][ANNOTATION_LOADS] == "3=1235,7=0.25"
    assert parsed.capacity == 2.5 and parsed.loads == {3: 1235.0, 7: 0.25}


def test_unreadable_capacity_and_loads_read_as_defaults() -> None:
    bad = record({}, name="g-member-x", annotations={ANNOTATION_CAPACITY: "-2", ANNOTATION_LOADS: "a=1,2=x,3=-1,4=5"})
    assert bad.capacity == 1.0 and bad.loads == {4: 5.0}
    assert record({}, name="g-member-y").capacity == 1.0


def test_release_empties_the_holder_keeps_the_token_and_expires_in_one_second() -> None:
    body = W.release(3, record({"holderIdentity": "me", "leaseTransitions": 4, "leaseDurationSeconds": 15}), WALL)
    assert body["spec"]["holderIdentity"] == "" and body["spec"]["leaseDurationSeconds"] == 1
    assert body["spec"]["leaseTransitions"] == 4


def test_member_lease_declares_count_generation_incarnation_and_problems() -> None:
    created = W.member(None, WALL, held=False, problems="crashing=1", generation=3)
    assert created["metadata"]["name"] == "g-member-me"
    assert created["metadata"]["annotations"] == {ANNOTATION_SHARDS: "8", ANNOTATION_INCARNATION: "inc1",
                                                  ANNOTATION_GENERATION: "3", ANNOTATION_PROBLEMS: "crashing=1",
                                                  ANNOTATION_CAPACITY: "1", ANNOTATION_LOADS: ""}
    seen = record({"holderIdentity": "me", "leaseTransitions": 2, "acquireTime": "2026-11-28T09:00:00.000000Z"},
                  name="g-member-me")
    renewed = W.member(seen, WALL, held=True)
    assert renewed["spec"]["leaseTransitions"] == 2 and renewed["spec"]["acquireTime"] == "2026-11-28T09:00:00.000000Z"
    taken = W.member(record({"holderIdentity": "other", "leaseTransitions": 2}, name="g-member-me"), WALL, held=False)
    assert taken["spec"]["leaseTransitions"] == 3 and taken["spec"]["acquireTime"] == "2026-11-28T10:00:00.000000Z"


def test_member_annotations_round_trip_through_their_one_format() -> None:
    """What a replica writes on its member Lease is what `shardlease status` reads back."""
    from shardlease.core.records import format_problems, format_refused, parse_problems, parse_refused

    text = format_problems(crashing=[5, 3], stuck=[2])
    assert text == "crashing=3,5;stuck=2"
    assert parse_problems(text) == [("crashing", "3,5"), ("stuck", "2")]
    # What versions before resharding wrote is still read (status skips it now).
    assert parse_problems(text + ";count-mismatch=8/16")[-1] == ("count-mismatch", "8/16")
    assert format_problems() == "" and parse_problems("") == []
    assert parse_refused(format_refused("abc123", WALL)) == ("abc123", WALL)
    assert parse_refused("") is None and parse_refused("abc123 yesterday") is None
