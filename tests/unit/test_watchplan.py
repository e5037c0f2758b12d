"""The watch plan on its own: which shard Leases are worth watching, and when a new watch is asked for."""

from __future__ import annotations

import pytest

from shardlease.core.messages import WatchShards
from shardlease.core.watchplan import WatchPlan, wanted_shards

F = frozenset


@pytest.mark.parametrize(("kwargs", "expected"), [
    # Steady state: held, assigned and inheritable shards, nothing else.
    ({"count": 8, "span": 8, "switching": False, "desired": F({1}), "inheritable": F({2}), "held": {3},
      "sweeper": False}, F({1, 2, 3})),
    # During a switch the barrier reads every shard below the span.
    ({"count": 4, "span": 8, "switching": True, "desired": F({1}), "inheritable": F(), "held": set(),
      "sweeper": False}, F(range(8))),
    # The oldest member watches the retired shards until it has deleted them; the others do not.
    ({"count": 4, "span": 6, "switching": False, "desired": F({0}), "inheritable": F(), "held": set(),
      "sweeper": True}, F({0, 4, 5})),
    ({"count": 4, "span": 6, "switching": False, "desired": F({0}), "inheritable": F(), "held": set(),
      "sweeper": False}, F({0})),
])
def test_wanted_shards(kwargs: dict[str, object], expected: frozenset[int]) -> None:
    assert wanted_shards(**kwargs) == expected  # type: ignore[arg-type]


def test_growth_is_asked_at_once_and_shrinking_a_lease_later() -> None:
    plan = WatchPlan(lease_duration=10.0, enabled=True)
    wanted = F({1, 2})
    assert plan.update(0.0, lambda: wanted, 8) == WatchShards(F({1, 2}), 8)
    assert plan.update(1.0, lambda: wanted, 8) is None  # nothing marked: nothing asked

    wanted = F({1, 2, 3})
    plan.mark()
    assert plan.update(2.0, lambda: wanted, 8) == WatchShards(F({1, 2, 3}), 8)

    wanted = F({1})
    plan.mark()
    assert plan.update(3.0, lambda: wanted, 8) is None
    assert plan.update(12.9, lambda: wanted, 8) is None
    assert plan.update(13.0, lambda: wanted, 8) == WatchShards(F({1}), 8)
    assert plan.watching == F({1})


def test_a_shrink_undone_before_it_is_due_asks_for_nothing() -> None:
    plan = WatchPlan(lease_duration=10.0, enabled=True)
    wanted = F({1, 2})
    plan.update(0.0, lambda: wanted, 4)
    wanted = F({1})
    plan.mark()
    assert plan.update(1.0, lambda: wanted, 4) is None
    wanted = F({1, 2})
    plan.mark()
    assert plan.update(2.0, lambda: wanted, 4) is None
    assert plan.update(20.0, lambda: wanted, 4) is None


def test_disabled_plan_never_asks() -> None:
    plan = WatchPlan(lease_duration=10.0, enabled=False)
    plan.mark()
    assert plan.update(0.0, lambda: F({1}), 4) is None
    assert plan.watching is None
