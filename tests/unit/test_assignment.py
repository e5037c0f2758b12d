"""assign(): every replica must compute the same, balanced mapping, and a membership change must move
few shards (each move is a handover: a handler stopped on one replica and started on another)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uhashring import HashRing

import shardlease
from shardlease.core.assignment import (
    VNODES,
    _ring_for,
    assign,
    capacity,
    desired_owner,
    loads,
    moved_shards,
    normalize_members,
    shards_of,
)
from shardlease.core.records import shard_lease_name

PACKAGE_ROOT = str(Path(shardlease.__file__).resolve().parent.parent)

member_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
member_sets = st.lists(member_names, min_size=1, max_size=40, unique=True)
load_factors = st.sampled_from([1.0, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0])


def test_pinned_example() -> None:
    """A stability contract like shard_for_key's: replicas of different releases must agree during a
    rolling upgrade, so these mappings must never change."""
    assert assign("demo", 8, ["pod-a", "pod-b", "pod-c"]) == {
        0: "pod-c", 1: "pod-a", 2: "pod-c", 3: "pod-b", 4: "pod-c", 5: "pod-b", 6: "pod-b", 7: "pod-a",
    }  # fmt: skip
    assert assign("demo", 8, ["pod-a", "pod-b", "pod-c", "pod-d"]) == {
        0: "pod-d", 1: "pod-a", 2: "pod-c", 3: "pod-b", 4: "pod-d", 5: "pod-c", 6: "pod-b", 7: "pod-a",
    }  # fmt: skip
    assert assign("orders", 10, ["replica-0", "replica-1", "replica-2"], 1.5) == {
        0: "replica-0", 1: "replica-2", 2: "replica-2", 3: "replica-1", 4: "replica-0",
        5: "replica-2", 6: "replica-0", 7: "replica-1", 8: "replica-0", 9: "replica-0",
    }  # fmt: skip


def test_no_members_means_no_assignment() -> None:
    assert assign("g", 16, []) == {}
    assert assign("g", 16, iter(())) == {}


def test_single_member_gets_everything() -> None:
    assert assign("g", 5, ["only"]) == dict.fromkeys(range(5), "only")


@settings(max_examples=60, deadline=None)
@given(
    members=member_sets,
    shards=st.integers(min_value=1, max_value=512),
    load_factor=load_factors,
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_order_and_duplicates_do_not_matter(
    members: list[str], shards: int, load_factor: float, seed: int
) -> None:
    shuffled = members * 2
    random.Random(seed).shuffle(shuffled)
    assert assign("g", shards, shuffled, load_factor) == assign("g", shards, members, load_factor)


@settings(max_examples=150, deadline=None)
@given(members=member_sets, shards=st.integers(min_value=1, max_value=512), load_factor=load_factors)
def test_every_shard_has_a_member_and_no_member_exceeds_the_cap(
    members: list[str], shards: int, load_factor: float
) -> None:
    mapping = assign("g", shards, members, load_factor)
    assert sorted(mapping) == list(range(shards))
    assert set(mapping.values()) <= set(members)
    cap = math.ceil(load_factor * shards / len(members) - 1e-9)
    assert max(loads(mapping).values()) <= cap
    if load_factor == 1.0:
        # The default gives the tightest balance possible with whole shards.
        assert max(loads(mapping).values()) == math.ceil(shards / len(members))


def test_exact_multiple_gives_equal_loads() -> None:
    members = [f"pod-{i}" for i in range(32)]
    assert set(loads(assign("g", 1024, members)).values()) == {32}


# Movement bounds, from measurements over 15,000 random cases (S 1..512, N 1..40): the worst excess
# over 3 * ceil(S/(N+1)) was 16 shards with load factor 1.0 and 9 over 2 * ceil(S/(N+1)) with
# larger load factors (the worst cases have 2-4 shards per member, where every member is at cap).
# The bounds leave a margin over those worst cases; the averages are checked separately below.
def _movement_bound(shards: int, members_after_or_before: int, load_factor: float) -> int:
    share = math.ceil(shards / members_after_or_before)
    return 3 * share + 24 if load_factor == 1.0 else 2 * share + 16


@settings(max_examples=150, deadline=None, derandomize=True)
@given(members=st.lists(member_names, min_size=2, max_size=41, unique=True),
       shards=st.integers(min_value=1, max_value=512), load_factor=load_factors)  # fmt: skip
def test_adding_one_member_moves_few_shards(members: list[str], shards: int, load_factor: float) -> None:
    before = assign("g", shards, members[:-1], load_factor)
    after = assign("g", shards, members, load_factor)
    moved = moved_shards(before, after)
    assert len(moved) <= _movement_bound(shards, len(members), load_factor)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(members=st.lists(member_names, min_size=2, max_size=40, unique=True),
       shards=st.integers(min_value=1, max_value=512), load_factor=load_factors,
       victim=st.integers(min_value=0))  # fmt: skip
def test_removing_one_member_moves_few_shards(
    members: list[str], shards: int, load_factor: float, victim: int
) -> None:
    gone = members[victim % len(members)]
    before = assign("g", shards, members, load_factor)
    after = assign("g", shards, [m for m in members if m != gone], load_factor)
    moved = moved_shards(before, after)
    # Every shard of the departed member must move; others move only to keep loads within cap.
    assert shards_of(before, gone) <= moved
    assert len(moved) <= _movement_bound(shards, len(members), load_factor)


@pytest.mark.parametrize(
    ("shards", "members", "max_avg_ratio"),
    # Prior art (bounded loads, cap ceil(S/N), one-at-a-time placement): 1.25-1.27, 1.33-1.43,
    # 1.25, 1.85-1.95. Measured here with these 20 sets: 1.38, 1.33, 1.22, 1.77.
    [(64, 5, 1.5), (256, 10, 1.5), (1024, 10, 1.4), (256, 30, 2.0)],
)
def test_average_movement_matches_prior_art(shards: int, members: int, max_avg_ratio: float) -> None:
    """Average shards moved on a join, divided by the minimum S/(N+1), over 20 random member sets."""
    rng = random.Random(2026)
    ratios = []
    for _ in range(20):
        names = [f"pod-{rng.getrandbits(40):010x}" for _ in range(members + 1)]
        moved = moved_shards(assign("g", shards, names[:-1]), assign("g", shards, names))
        ratios.append(len(moved) / (shards / (members + 1)))
    assert sum(ratios) / len(ratios) <= max_avg_ratio


def test_joining_member_receives_its_share() -> None:
    """The moves on a join go mostly to the newcomer, not reshuffled among the others."""
    members = [f"replica-{i}" for i in range(8)]
    before = assign("g", 256, members)
    after = assign("g", 256, [*members, "replica-8"])
    gained = shards_of(after, "replica-8")
    moved = moved_shards(before, after)
    assert len(gained) >= 256 - 8 * capacity(256, 9)  # what the cap guarantees
    assert gained <= moved
    assert len(moved - gained) <= len(gained)  # no more reshuffling among the others than transfers


def test_same_result_in_another_process() -> None:
    """md5 positions and sorted members: nothing depends on PYTHONHASHSEED or set iteration order."""
    members = [f"pod-{i}" for i in range(7)]
    here = assign("orders", 100, members)
    code = (
        "import json, sys; from shardlease.core.assignment import assign; "
        "print(json.dumps(assign('orders', 100, json.loads(sys.argv[1]))))"
    )
    for seed in ("1", "999"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=PACKAGE_ROOT)
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(members[::-1])],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert {int(k): v for k, v in json.loads(out.stdout).items()} == here


def test_flattened_ring_is_uhashrings_ring_and_walk_follows_range() -> None:
    """The fast walk must visit members exactly as HashRing.range(key, unique=True) yields them."""
    members = normalize_members(["b", "a", "c", "d"])
    ring = HashRing(nodes=list(members), vnodes=VNODES)
    flat = _ring_for(members)
    assert list(zip(flat.positions, flat.owners)) == ring.get_points()
    for shard in range(20):
        key = shard_lease_name("g", shard)
        expected = [node["nodename"] for node in ring.range(key, unique=True)]
        index, seen = flat.start(ring.get_key(key)), []
        while len(seen) < len(members):
            owner = flat.owners[index % len(flat.owners)]
            if owner not in seen:
                seen.append(owner)
            index += 1
        assert seen == expected
        # With room everywhere (huge load factor), each shard lands on its first choice.
        assert assign("g", 20, members, load_factor=100.0)[shard] == expected[0]


def test_helpers() -> None:
    mapping = {0: "a", 1: "b", 2: "a"}
    assert loads(mapping, ["a", "b", "c"]) == {"a": 2, "b": 1, "c": 0}
    assert shards_of(mapping, "a") == {0, 2}
    assert moved_shards(mapping, {0: "a", 1: "a"}) == {1, 2}
    assert capacity(1024, 32) == 32
    assert capacity(10, 3, 1.5) == 5
    assert capacity(10, 1, 1.1) == 11  # not 12: 1.1 * 10 is 11.000000000000002 in floats
    assert desired_owner("demo", 3, 8, ["pod-a", "pod-b", "pod-c"]) == "pod-b"
    assert desired_owner("demo", 3, 8, []) is None


@pytest.mark.parametrize("bad", [0, -3, True, 1.5, "8"])
def test_invalid_shard_count_names_the_argument(bad: object) -> None:
    with pytest.raises(ValueError, match="shards must be an integer >= 1"):
        assign("g", bad, ["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.99, 0, -1.0, float("nan"), float("inf"), "1.5", True])
def test_invalid_load_factor_names_the_argument(bad: object) -> None:
    with pytest.raises(ValueError, match="load_factor must be"):
        assign("g", 8, ["a"], bad)  # type: ignore[arg-type]


def test_invalid_member_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="members must be non-empty strings"):
        assign("g", 8, ["a", ""])
    with pytest.raises(ValueError, match="members must be non-empty strings"):
        assign("g", 8, ["a", 3])  # type: ignore[list-item]
