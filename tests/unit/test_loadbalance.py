"""balance(): load-aware owners every replica agrees on, within the bound, with few moves and no
flip-flop; and the load snapshot the replicas share."""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardlease
from shardlease.core.assignment import assign
from shardlease.core.loadbalance import (
    LOAD_SCALE,
    LoadSnapshot,
    balance,
    bounds,
    fixable_imbalance,
    imbalance,
    member_loads,
    min_moves,
    quantise,
)
from shardlease.errors import InvalidArgument

PACKAGE_ROOT = str(Path(shardlease.__file__).resolve().parent.parent)


def zipf_loads(shards: int, exponent: float, seed: int) -> list[int]:
    """Zipf-ranked loads in a seeded random order, quantised as a snapshot carries them."""
    rng = random.Random(seed)
    values = [1 / (rank + 1) ** exponent for rank in range(shards)]
    rng.shuffle(values)
    return list(quantise(values))


def base_of(shards: int, members: dict[str, float]) -> list[str | None]:
    mapping = assign("g", shards, members)
    return [mapping[i] for i in range(shards)]


def within_bounds(owners: tuple[str, ...], loads: list[int], members: dict[str, float], epsilon: float) -> bool:
    limits = bounds(members, owners, loads, epsilon)
    carried = member_loads(owners, loads, members)
    return all(carried[m] <= limits.limit[m] + 1e-9 for m in members)


# ---------------------------------------------------------------- table tests


def test_moves_the_hottest_shard_off_the_overloaded_member() -> None:
    members = {"a": 1.0, "b": 1.0}
    loads = [50, 10, 10, 10]
    result = balance(members=members, loads=loads, base=["a", "a", "b", "b"], epsilon=0.1, max_moves=8)
    # a carries 60 of 80 (fair 40, bound 44): its shards 1 (10) moves, 50 stays as it fits nowhere.
    assert member_loads(result.owners, loads, members) == {"a": 50.0, "b": 30.0}
    assert result.moved == (1,)
    assert result.too_hot == (0,)  # 50 > 44: no member can carry it within its bound


def test_balanced_input_moves_nothing() -> None:
    members = {"a": 1.0, "b": 1.0}
    result = balance(members=members, loads=[10, 10, 10, 10], base=["a", "b", "a", "b"])
    assert result.owners == ("a", "b", "a", "b") and result.moved == () and not result.limited


def test_absent_owners_are_placed_hottest_first_and_not_counted_as_moves() -> None:
    members = {"a": 1.0, "b": 1.0}
    result = balance(members=members, loads=[5, 30, 20, 10], base=["gone", "gone", "gone", "gone"],
                     epsilon=0.1, max_moves=0)
    # 30 -> a (tie by name), 20 -> b, 10 -> b (20+10 below 30+10), 5 -> a? a=30+5 vs b=30+5: a.
    assert result.placed == (1, 2, 3, 0)
    assert result.owners == ("a", "a", "b", "b")
    assert result.moved == ()


def test_capacity_two_gets_twice_the_load() -> None:
    members = {"big": 2.0, "small": 1.0}
    loads = [10] * 12
    result = balance(members=members, loads=loads, base=["small"] * 12, epsilon=0.0, max_moves=100)
    assert member_loads(result.owners, loads, members) == {"big": 80.0, "small": 40.0}


def test_max_moves_caps_the_load_moves_and_says_so() -> None:
    members = {"a": 1.0, "b": 1.0}
    loads = [10] * 10
    result = balance(members=members, loads=loads, base=["a"] * 10, epsilon=0.0, max_moves=2)
    assert len(result.moved) == result.steps == 2 and result.limited
    again = balance(members=members, loads=loads, base=result.owners, epsilon=0.0, max_moves=100)
    assert len(again.moved) == 3 and not again.limited  # the rest, in the same direction


def test_a_new_member_is_fed_even_when_nobody_is_over_the_bound() -> None:
    old = {f"m{i}": 1.0 for i in range(8)}
    loads = [LOAD_SCALE] * 64
    base = base_of(64, old)
    members = {**old, "new": 1.0}
    # 8 per member is 8/ (64/9) = 1.125 of the new share: within a bound of 1.2, but "new" has nothing.
    result = balance(members=members, loads=loads, base=base, epsilon=0.2, max_moves=64)
    carried = member_loads(result.owners, loads, members)
    assert carried["new"] >= bounds(members, result.owners, loads, 0.2).floor["new"]


def test_no_load_reported_balances_counts() -> None:
    members = {"a": 1.0, "b": 1.0}
    result = balance(members=members, loads=[0, 0, 0, 0], base=["a"] * 4, epsilon=0.0, max_moves=10)
    assert sorted(result.owners) == ["a", "a", "b", "b"]


def test_no_members_means_no_owners() -> None:
    assert balance(members={}, loads=[1, 2], base=["a", "b"]).owners == ("", "")


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"members": {"a": 0.0}}, "capacity of member 'a'"),
    ({"members": {"a": float("nan")}}, "capacity of member 'a'"),
    ({"loads": [1, -1]}, "load of shard 1"),
    ({"loads": [1, float("inf")]}, "load of shard 1"),
    ({"base": ["a"]}, "give one owner per shard"),
    ({"epsilon": -0.1}, "epsilon"),
    ({"max_moves": -1}, "max_moves"),
    ({"max_moves": 1.5}, "max_moves"),
])
def test_bad_inputs_name_the_field(kwargs: dict[str, object], needle: str) -> None:
    args: dict[str, object] = {"members": {"a": 1.0}, "loads": [1, 2], "base": ["a", "a"]}
    args.update(kwargs)
    with pytest.raises(InvalidArgument, match=needle):
        balance(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the bench figures, as regressions


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_zipf_group_reaches_the_bound_in_two_periods_of_32_moves(seed: int) -> None:
    """S=256 Zipf 1.1 over 8 equal members from today's count assignment: the hottest shard alone is
    above a fair share (it cannot be helped); every other member ends within 1.1 of its share."""
    members = {f"r{i}": 1.0 for i in range(8)}
    loads = zipf_loads(256, 1.1, seed)
    base = base_of(256, members)
    first = balance(members=members, loads=loads, base=base, epsilon=0.1, max_moves=32)
    second = balance(members=members, loads=loads, base=first.owners, epsilon=0.1, max_moves=32)
    assert not second.limited
    assert within_bounds(second.owners, loads, members, 0.1)
    assert len(second.too_hot) == 1
    # max load over fair share is the hot shard's member, holding nothing else
    hot = second.too_hot[0]
    assert [s for s, o in enumerate(second.owners) if o == second.owners[hot]] == [hot]
    total_moves = len(first.moved) + len(second.moved)
    assert total_moves <= 2 * min_moves(base, loads, members, 0.1), (total_moves, min_moves(base, loads, members, 0.1))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_capacity_two_member_gets_its_share_within_ten_percent(seed: int) -> None:
    members = {f"r{i}": 1.0 for i in range(8)}
    loads = zipf_loads(256, 1.1, seed)
    settled = balance(members=members, loads=loads, base=base_of(256, members), epsilon=0.1, max_moves=1000)
    members["r3"] = 2.0
    result = balance(members=members, loads=loads, base=settled.owners, epsilon=0.1, max_moves=1000)
    share = member_loads(result.owners, loads, members)["r3"] / sum(loads)
    assert abs(share - 2 / 9) <= 0.1 * 2 / 9, share


# ---------------------------------------------------------------- properties

capacities = st.sampled_from([0.5, 1.0, 1.0, 1.0, 2.0, 3.0])
groups = st.dictionaries(st.sampled_from([f"m{i}" for i in range(12)]), capacities, min_size=1, max_size=8)
load_lists = st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=80)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, float], list[int], list[str | None], float, int]:
    members = draw(groups)
    loads = draw(load_lists)
    pool = [*sorted(members), "gone", None]
    base = draw(st.lists(st.sampled_from(pool), min_size=len(loads), max_size=len(loads)))
    epsilon = draw(st.sampled_from([0.0, 0.05, 0.1, 0.25]))
    moves = draw(st.integers(min_value=0, max_value=40))
    return members, loads, base, epsilon, moves


@settings(max_examples=150, deadline=None)
@given(cases())
def test_property_deterministic_whatever_the_order_of_members(case: tuple) -> None:  # type: ignore[type-arg]
    members, loads, base, epsilon, moves = case
    one = balance(members=members, loads=loads, base=base, epsilon=epsilon, max_moves=moves)
    shuffled = dict(reversed(list(members.items())))
    two = balance(members=shuffled, loads=list(loads), base=list(base), epsilon=epsilon, max_moves=moves)
    assert one == two
    assert all(owner in members for owner in one.owners)
    assert len(one.moved) <= one.steps <= moves
    assert one.moved == tuple(s for s in range(len(loads)) if base[s] in members and one.owners[s] != base[s])


@settings(max_examples=150, deadline=None)
@given(cases())
def test_property_no_oscillation_under_constant_loads(case: tuple) -> None:  # type: ignore[type-arg]
    """Run again and again on its own output with the same loads, the moves only continue in one
    direction and then stop: once settled (not limited), nothing moves for 10 more periods."""
    members, loads, base, epsilon, moves = case
    owners: tuple[str, ...] | list[str | None] = base
    settled_at = None
    history = []
    for period in range(40):
        result = balance(members=members, loads=loads, base=owners, epsilon=epsilon, max_moves=max(moves, 1))
        history.append(len(result.moved))
        owners = result.owners
        if not result.limited and settled_at is None:
            settled_at = period
        if settled_at is not None and period >= settled_at + 10:
            break
    assert settled_at is not None, history
    assert all(n == 0 for n in history[settled_at + 1:]), history


@settings(max_examples=150, deadline=None)
@given(cases())
def test_property_never_worse_and_within_bound_when_a_plain_greedy_is(case: tuple) -> None:  # type: ignore[type-arg]
    """Moves never raise the busiest member's load per capacity among members present from the start."""
    members, loads, base, epsilon, _moves = case
    if any(owner not in members for owner in base):
        return
    result = balance(members=members, loads=loads, base=base, epsilon=epsilon, max_moves=1000)
    def peak(owners: tuple[str, ...] | list[str | None]) -> float:
        weights = loads if sum(loads) > 0 else [1] * len(loads)
        carried = member_loads(owners, weights, members)
        return float(max(carried[m] / members[m] for m in members))
    assert peak(result.owners) <= peak(base) + 1e-9


def test_seeded_moves_against_the_minimum() -> None:
    """Random groups of lognormal loads (seed printed), at least 10 shards per member: the bound is a bin
    packing, so a greedy misses it now and then; measured at 98% over 1,200 groups, asserted >= 90%.
    Moves stay within 1.5x the lower bound in total (measured 1.21x)."""
    seed = int(os.environ.get("SHARDLEASE_TEST_SEED", random.randrange(1 << 30)))
    print(f"SHARDLEASE_TEST_SEED={seed}")
    rng = random.Random(seed)
    moved = bound = reached = 0
    runs = 60
    for _ in range(runs):
        members = {f"m{i}": rng.choice([1.0, 1.0, 2.0]) for i in range(rng.randint(2, 10))}
        shards = rng.randint(10 * len(members), 200)
        loads = list(quantise([rng.lognormvariate(0, 1) for _ in range(shards)]))
        base = base_of(shards, members)
        result = balance(members=members, loads=loads, base=base, epsilon=0.1, max_moves=10_000)
        assert not result.limited
        reached += within_bounds(result.owners, loads, members, 0.1)
        moved += len(result.moved)
        bound += min_moves(base, loads, members, 0.1)
    assert reached >= 0.9 * runs, reached
    assert moved <= 1.5 * max(bound, 1), (moved, bound)


def test_same_owners_in_another_process_with_another_hash_seed() -> None:
    members = {f"r{i}": 1.0 + (i % 3) for i in range(7)}
    loads = zipf_loads(128, 1.1, 5)
    base = base_of(128, dict.fromkeys(members, 1.0))
    here = balance(members=members, loads=loads, base=base, epsilon=0.1, max_moves=20).owners
    code = ("import json,sys; from shardlease.core.loadbalance import balance; a=json.load(sys.stdin); "
            "print(json.dumps(balance(members=a['m'], loads=a['l'], base=a['b'], epsilon=0.1, max_moves=20).owners))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps({"m": dict(reversed(members.items())),
                         "l": loads, "b": base}), capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": PACKAGE_ROOT})
    assert tuple(json.loads(out.stdout)) == here


@pytest.mark.parametrize(("owners", "loads", "members", "expected"), [
    (["a", "b"], [10, 10], {"a": 1.0, "b": 1.0}, 1.0),
    (["a", "a", "b"], [8, 7, 5], {"a": 1.0, "b": 1.0}, 1.5),        # no shard too hot: the plain ratio
    (["a", "b", "b"], [30, 5, 5], {"a": 1.0, "b": 1.0}, 1.0),       # 30 > 1.1 x 20: a carries it alone
    (["a", "a", "b"], [30, 5, 5], {"a": 1.0, "b": 1.0}, 35 / 30),   # ... and 5 beside it that could move
    (["a", "b", "c"], [30, 4, 6], {"a": 1.0, "b": 1.0, "c": 1.0}, 6 / 5),  # the rest's share is 5
    (["a", "b"], [0, 0], {"a": 1.0, "b": 1.0}, 0.0),
    (["a"], [5], {}, 0.0),
])
def test_fixable_imbalance_sets_the_shards_too_hot_for_any_bound_aside(owners: list[str], loads: list[int],
                                                                       members: dict[str, float],
                                                                       expected: float) -> None:
    assert fixable_imbalance(owners, loads, members, 0.1) == pytest.approx(expected)


def test_a_settled_zipf_group_reads_within_the_bound_though_its_hottest_shard_is_over_any_share() -> None:
    members = {f"m{i}": 1.0 for i in range(8)}
    loads = zipf_loads(256, 1.1, 2026)
    owners: tuple[str, ...] = tuple(base_of(256, members))  # type: ignore[arg-type]
    for _ in range(4):
        owners = balance(members=members, loads=loads, base=owners, epsilon=0.1, max_moves=32).owners
    assert within_bounds(owners, loads, members, 0.1)
    assert imbalance(owners, loads, members) > 1.6       # the hottest shard alone
    assert fixable_imbalance(owners, loads, members, 0.1) <= 1.1 + 1e-9


# ---------------------------------------------------------------- snapshot and quantising


def test_quantise_puts_the_mean_at_the_scale_and_fills_missing_reports() -> None:
    assert quantise([1.0, 3.0]) == (500, 1500)
    assert quantise([2.0, None]) == (1000, 1000)  # unreported counts as the mean of the reported
    assert quantise([2.0, None], fill=6.0) == (500, 1500)
    assert quantise([None, None]) == (LOAD_SCALE, LOAD_SCALE)
    assert quantise([0.0, 0.0]) == (LOAD_SCALE, LOAD_SCALE)
    with pytest.raises(InvalidArgument, match="load of shard 0"):
        quantise([-1.0])


def test_snapshot_round_trips_and_rejects_damage() -> None:
    snap = LoadSnapshot(generation=2, count=3, seq=7,
                        taken_at=_dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=_dt.timezone.utc),
                        loads=(10, 0, 2000), owners=("b", "a", "b"), reason="imbalance 1.31 > 1.15",
                        epsilon=0.2, max_moves=7)
    text = snap.encode()
    assert LoadSnapshot.decode(text) == snap
    data = json.loads(text)
    assert data["members"] == ["a", "b"] and data["owners"] == [1, 0, 1]
    for broken in ("", "not json", "[]", text.replace('"v":1', '"v":2'), text.replace("[10,0,2000]", "[10,0]"),
                   text.replace("[10,0,2000]", "[10,-1,2000]"), text.replace("[1,0,1]", "[1,0,5]"),
                   text.replace('"max_moves":7', '"max_moves":-7'), text.replace('"epsilon":0.2', '"epsilon":"x"')):
        assert LoadSnapshot.decode(broken) is None, broken
