"""The object -> shard mapping: FNV-1a over metadata.uid and the KEP-5866 hash ranges (a public contract)."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardlease.core.objects import (
    fnv1a_64,
    merge_ranges,
    object_hash,
    selector_for_shards,
    shard_for_hash,
    shard_for_object,
    shard_range,
)
from shardlease.errors import InvalidArgument

# Produced by Go's hash/fnv New64a (the function kube-apiserver's sharding package calls), run once on
# this machine; the last two UIDs were also placed by a real kube-apiserver v1.36.3 with the gate on.
GO_FNV1A_64 = [
    ("", 0xCBF29CE484222325),
    ("a", 0xAF63DC4C8601EC8C),
    ("foobar", 0x85944171F73967E8),
    ("default", 0xEBADA5168620C5FE),
    ("kube-system", 0xDF65C7BC1D82B35E),
    ("日本", 0x121D7E35A6D3CE91),
    ("660ff166-3728-4b67-b4d1-e935c48cc801", 0xAE51633CED04DE84),
    ("d7bbc480-29c4-4e1b-a7f8-7fc573b7a203", 0x00619D59D1CA6E51),
]


@pytest.mark.parametrize(("text", "expected"), GO_FNV1A_64)
def test_fnv1a_64_matches_go(text: str, expected: int) -> None:
    assert fnv1a_64(text) == expected
    assert fnv1a_64(text.encode()) == expected


def test_ranges_are_the_apis_examples_and_tile_the_space() -> None:
    # The ListOptions.shardSelector documentation's 2- and 4-shard splits.
    assert [shard_range(i, 2) for i in range(2)] == [(0, 1 << 63), (1 << 63, 1 << 64)]
    assert [shard_range(i, 4)[0] for i in range(4)] == [0, 0x4000000000000000, 0x8000000000000000,
                                                        0xC000000000000000]
    for count in (1, 3, 7, 1000, 4097):
        ranges = [shard_range(i, count) for i in range(count)]
        assert ranges[0][0] == 0 and ranges[-1][1] == 1 << 64
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))


@given(value=st.integers(0, (1 << 64) - 1), count=st.integers(1, 5000))
def test_shard_for_hash_is_the_range_that_holds_it(value: int, count: int) -> None:
    starts = [shard_range(i, count)[0] for i in range(count)]
    assert shard_for_hash(value, count) == bisect.bisect_right(starts, value) - 1


@given(count=st.integers(1, 5000), data=st.data())
def test_range_bounds_belong_to_their_own_shard(count: int, data: st.DataObject) -> None:
    shard = data.draw(st.integers(0, count - 1))
    start, end = shard_range(shard, count)
    assert shard_for_hash(start, count) == shard
    assert shard_for_hash(end - 1, count) == shard


def test_shard_for_object_by_uid_and_by_namespace() -> None:
    cm = {"metadata": {"name": "x", "namespace": "default", "uid": "d7bbc480-29c4-4e1b-a7f8-7fc573b7a203"}}
    assert shard_for_object(cm, 2) == 0 and shard_for_object(cm, 1 << 20) == 0x00619D59D1CA6E51 * (1 << 20) >> 64
    assert object_hash(cm, "namespace") == 0xEBADA5168620C5FE
    assert shard_for_object(cm, 4, by="namespace") == 3
    cluster_scoped = {"metadata": {"name": "n", "uid": "u"}}
    assert object_hash(cluster_scoped, "namespace") == fnv1a_64("")


@pytest.mark.parametrize(("obj", "by", "message"), [
    ({"metadata": {"name": "new"}}, "uid", "has no metadata.uid"),
    ({"kind": "ConfigMap"}, "uid", "object has no metadata"),
    ({"metadata": {"uid": "u"}}, "name", "by must be 'uid' or 'namespace'"),
])
def test_objects_that_cannot_be_placed_are_refused_clearly(obj: dict, by: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        shard_for_object(obj, 4, by=by)  # type: ignore[arg-type]


@pytest.mark.parametrize(("shard", "count"), [(4, 4), (-1, 4), (0, 0), (True, 4)])
def test_bad_shard_or_count_is_refused(shard: int, count: int) -> None:
    with pytest.raises(InvalidArgument, match="shard"):
        shard_range(shard, count)


def test_selector_merges_adjacent_ranges_in_the_servers_canonical_form() -> None:
    assert merge_ranges([3, 0, 1], 4) == [(0, 1 << 63), (0xC000000000000000, 1 << 64)]
    assert selector_for_shards([0, 1, 3], 4) == (
        "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000') || "
        "shardRange(object.metadata.uid, '0xc000000000000000', '0x10000000000000000')")
    assert selector_for_shards(range(8), 8) == \
        "shardRange(object.metadata.uid, '0x0000000000000000', '0x10000000000000000')"
    assert selector_for_shards([1], 3, "namespace").startswith("shardRange(object.metadata.namespace, '0x5555")
    assert selector_for_shards([], 4) == ""
