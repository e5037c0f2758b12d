"""The chaos engine's view of resharding: reshards in the plan, and a journal check that judges keys
across generations (a barrier bug shows up as two shard ids of different counts working one key)."""

from __future__ import annotations

from typing import Any

from shardlease import shard_for_key
from shardlease.harness.chaos import RESHARD_KEYS, ChaosConfig, PauseWindow, analyse_journal, plan_faults
from shardlease.harness.journal import Entry


def unit(identity: str, shard: int, count: int, generation: int, token: Any, start: float, end: float) -> Entry:
    return Entry(kind="work", identity=identity, pid=sum(map(ord, identity)), shard=shard, token=token,
                 start=start, end=end, source="synthetic", count=count, generation=generation)


def shared_shards() -> tuple[int, int]:
    """A shard of 8 and a shard of 16 with another id that share a key."""
    key = next(k for k in RESHARD_KEYS if shard_for_key(k, 8) != shard_for_key(k, 16))
    return shard_for_key(key, 8), shard_for_key(key, 16)


def test_work_on_one_key_under_two_generations_at_once_is_a_violation_the_per_shard_check_misses() -> None:
    old, new = shared_shards()
    entries = [unit("a", old, 8, 1, 5, 0.0, 1.0), unit("b", new, 16, 2, 0, 0.5, 1.5)]
    per_shard, _ = analyse_journal(entries, [], 0.5)
    by_key, _ = analyse_journal(entries, [], 0.5, keys=RESHARD_KEYS)
    assert per_shard == []
    assert [v.kind for v in by_key] == ["overlap"] and "on keys key-" in by_key[0].detail, by_key


def test_the_old_generation_stopping_before_the_new_one_starts_is_clean() -> None:
    old, new = shared_shards()
    entries = [unit("a", old, 8, 1, 5, 0.0, 1.0), unit("b", new, 16, 2, 0, 1.0, 2.0)]
    violations, _ = analyse_journal(entries, [], 0.5, keys=RESHARD_KEYS)
    assert violations == []


def test_fences_compare_generation_first_so_a_recreated_lease_starting_at_token_0_is_fine() -> None:
    entries = [unit("a", 3, 8, 1, 7, 0.0, 1.0), unit("b", 3, 8, 3, 0, 2.0, 3.0)]
    violations, _ = analyse_journal(entries, [], 0.5)
    assert violations == []
    backwards = [unit("a", 3, 8, 2, 7, 0.0, 1.0), unit("b", 3, 8, 1, 9, 2.0, 3.0)]
    violations, _ = analyse_journal(backwards, [], 0.5)
    assert any(v.kind == "token" for v in violations), violations


def test_a_frozen_old_generation_replica_finishing_its_unit_after_resume_is_fenced_not_a_violation() -> None:
    old, new = shared_shards()
    frozen = unit("a", old, 8, 1, 5, 0.0, 3.1)
    entries = [frozen, unit("b", new, 16, 2, 0, 2.0, 3.0)]
    window = PauseWindow("a", frozen.pid, stopped=0.1, resumed=3.0, ended_by="SIGCONT")
    violations, fenced = analyse_journal(entries, [window], 0.5, keys=RESHARD_KEYS)
    assert violations == [] and fenced


def test_the_planner_reshards_between_half_and_twice_the_count_and_never_to_the_current_one() -> None:
    for seed in range(20):
        config = ChaosConfig(seed=seed, duration=120.0, shards=16, weights={"reshard": 1.0, "scale_up": 0.1})
        counts = [f.params["shards"] for f in plan_faults(config) if f.kind == "reshard"]
        assert counts, f"seed {seed}: no reshard planned"
        current = 16
        for n in counts:
            assert n in (8, 16, 32) and n != current, (seed, counts)
            current = n
