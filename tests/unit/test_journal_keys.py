"""The journal's per-key checks, on hand-made journals: when the shard count changes a key moves to
another shard id, so exclusion and fencing must be judged per key, not per shard id."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shardlease import shard_for_key
from shardlease.harness import journal
from shardlease.harness.journal import (
    Entry,
    assert_key_fences_increase,
    assert_no_key_overlaps,
    check_key_fences,
    check_tokens,
    find_key_overlaps,
    find_overlaps,
    generation_switches,
    key_history,
    load_journal,
)

KEYS = [f"tenant-{i}" for i in range(200)]


def unit(identity: str, shard: int, count: int | None, generation: int, token: Any, start: float, end: float,
         pid: int = 0, kind: str = "work") -> Entry:
    return Entry(kind=kind, identity=identity, pid=pid or sum(map(ord, identity)), shard=shard, token=token,
                 start=start, end=end, source="synthetic", count=count, generation=generation)


def covered(shard: int, count: int) -> set[str]:
    return {k for k in KEYS if shard_for_key(k, count) == shard}


def moved_key(old: int, new: int) -> tuple[str, int, int]:
    """A key whose shard id differs between the two counts: (key, old shard, new shard)."""
    for key in KEYS:
        a, b = shard_for_key(key, old), shard_for_key(key, new)
        if a != b:
            return key, a, b
    raise AssertionError(f"no key of {len(KEYS)} moves between {old} and {new} shards")


# ---------------------------------------------------------------- overlaps


def test_overlap_across_generations_that_per_shard_checks_miss() -> None:
    key, old_shard, new_shard = moved_key(8, 16)
    old = unit("a", old_shard, 8, 1, 4, 10.0, 10.05)
    new = unit("b", new_shard, 16, 2, 0, 10.03, 10.08)
    assert find_overlaps([old, new]) == []  # different shard ids: invisible per shard
    (o,) = find_key_overlaps([new, old], KEYS)
    assert (o.first, o.second) == (old, new)
    assert key in o.keys and set(o.keys) == covered(old_shard, 8) & covered(new_shard, 16)
    assert o.seconds == pytest.approx(0.02)
    with pytest.raises(AssertionError) as info:
        assert_no_key_overlaps([old, new], KEYS)
    text = str(info.value)
    assert "work overlapping on keys: 1 found" in text and "generation 2" in text
    assert f"shard {old_shard}/8 generation 1: a" in text and f"shard {new_shard}/16 generation 2: b" in text


def test_units_of_disjoint_shards_under_different_counts_may_overlap_in_time() -> None:
    # Shard 3 of 16 holds only keys of shard 3 of 5 (jump hash), so shard 4 of 5 shares none with it.
    assert covered(3, 16) and not covered(3, 16) & covered(4, 5)
    entries = [unit("a", 3, 16, 2, 1, 0.0, 1.0), unit("b", 4, 5, 3, 1, 0.5, 1.5)]
    assert find_key_overlaps(entries, KEYS) == []


def test_two_handlers_of_one_process_on_one_key_are_an_overlap() -> None:
    # The old handler of a process still runs when its new-generation handler begins elsewhere.
    _key, old_shard, new_shard = moved_key(8, 16)
    entries = [unit("a", old_shard, 8, 1, 2, 0.0, 1.0, pid=7), unit("a", new_shard, 16, 2, 0, 0.5, 1.5, pid=7)]
    assert len(find_key_overlaps(entries, KEYS)) == 1


def test_one_tenure_and_touching_units_are_not_overlaps() -> None:
    entries = [unit("a", 2, 8, 1, 3, 0.0, 0.05), unit("a", 2, 8, 1, 3, 0.05, 0.1),  # one handler
               unit("b", 2, 8, 1, 4, 0.1, 0.15)]  # the next holder begins as the last one ended
    assert find_key_overlaps(entries, KEYS) == []


def test_a_replacement_in_the_same_process_still_counts() -> None:
    # Same process and shard, a new tenure (token) while the old one still works: two handlers.
    entries = [unit("a", 2, 8, 1, 3, 0.0, 1.0, pid=9), unit("a", 2, 8, 1, 4, 0.5, 0.6, pid=9)]
    assert len(find_key_overlaps(entries, KEYS)) == 1


def test_a_clean_reshard_up_and_down_passes_and_its_pauses_are_measured() -> None:
    entries: list[Entry] = []
    for shard in range(8):
        entries += [unit(f"r{shard % 4}", shard, 8, 1, 1, t / 10, t / 10 + 0.05) for t in range(10)]
    for shard in range(16):  # generation 2 starts 0.1 s after the last unit of generation 1 ended
        entries += [unit(f"r{shard % 4}", shard, 16, 2, 2, 1.05 + t / 10 + shard / 1000,
                         1.1 + t / 10) for t in range(10)]
    for shard in range(5):  # retired Leases deleted and recreated later start their tokens over
        entries.append(unit(f"r{shard % 4}", shard, 5, 3, 0, 2.2 + shard / 100, 2.3, kind="handler_start"))
        entries += [unit(f"r{shard % 4}", shard, 5, 3, 0, 2.2 + shard / 100 + t / 10, 2.25 + t / 10)
                    for t in range(5)]
    assert find_key_overlaps(entries, KEYS) == [] and check_key_fences(entries, KEYS) == []
    assert_no_key_overlaps(entries, KEYS)
    assert_key_fences_increase(entries, KEYS)
    assert check_tokens(entries) == []  # per shard too: (generation, token), not the token alone
    two, three = generation_switches(entries)
    assert (two.generation, two.count, two.shards, three.count, three.shards) == (2, 16, 16, 5, 5)
    assert two.pause == pytest.approx(0.1) and two.until_all == pytest.approx(0.115)
    assert three.last_old_end == pytest.approx(2.0) and three.pause == pytest.approx(0.2)
    assert three.until_all == pytest.approx(0.24)


def test_a_switch_not_yet_complete_has_no_all_begun() -> None:
    entries = [unit("a", 0, 2, 1, 1, 0.0, 1.0), unit("a", 0, 3, 2, 2, 1.5, 2.0)]
    (switch,) = generation_switches(entries)
    assert switch.shards == 1 and switch.all_begun is None and switch.until_all is None


# ---------------------------------------------------------------- fences


def test_fence_going_down_across_a_switch() -> None:
    # A holder of the old generation works on after a new-generation holder of the key has begun.
    key, old_shard, new_shard = moved_key(8, 16)
    new = unit("b", new_shard, 16, 2, 0, 2.0, 3.0)
    stale = unit("a", old_shard, 8, 1, 7, 4.0, 5.0)
    assert check_tokens([new, stale]) == []  # different shard ids: invisible per shard
    (v,) = check_key_fences([stale, new], KEYS)
    assert (v.earlier, v.later) == (new, stale) and key in v.keys
    assert "went backwards" in v.problem and "(1, 7)" in v.problem and "(2, 0)" in v.problem
    with pytest.raises(AssertionError, match="fence violations on keys: 1 found"):
        assert_key_fences_increase([new, stale], KEYS)


def test_a_larger_generation_wins_over_a_larger_token() -> None:
    key, old_shard, new_shard = moved_key(8, 5)
    entries = [unit("a", old_shard, 8, 1, 41, 0.0, 1.0), unit("b", new_shard, 5, 2, 0, 2.0, 3.0)]
    assert check_key_fences(entries, KEYS) == []
    # The same tokens within one generation would be a violation (the count is the same there).
    same = [unit("a", 1, 8, 1, 41, 0.0, 1.0), unit("b", 1, 8, 1, 0, 2.0, 3.0)]
    (v,) = check_key_fences(same, KEYS)
    assert "41 used after" not in v.problem and "0 used after 41" in v.problem
    assert set(v.keys) == covered(1, 8)


def test_a_fence_reused_by_another_holder_of_the_key() -> None:
    entries = [unit("a", 1, 8, 2, 5, 0.0, 1.0), unit("b", 1, 8, 2, 5, 2.0, 3.0)]
    (v,) = check_key_fences(entries, KEYS)
    assert "reused by a different holder in generation 2" in v.problem


def test_keys_no_unit_covers_have_no_history() -> None:
    assert "0 tenures" in key_history([unit("a", 0, 8, 1, 1, 0, 1)],
                                      next(k for k in KEYS if shard_for_key(k, 8) != 0))


# ---------------------------------------------------------------- old journals and the writer


def test_old_journal_lines_load_and_need_a_count_for_key_checks(tmp_path: Path) -> None:
    lines = [
        {"event": "begin", "unit": 0, "identity": "a", "pid": 1, "shard": 2, "token": 7, "t": 1.0, "work": 0.05},
        {"event": "end", "unit": 0, "identity": "a", "pid": 1, "shard": 2, "token": 7, "t": 1.05},
        {"event": "begin", "unit": 1, "identity": "a", "pid": 1, "shard": 2, "token": 7, "t": 1.1, "work": 0.05},
    ]
    (tmp_path / "a.1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    entries = load_journal(tmp_path)
    assert [(e.count, e.generation, e.complete) for e in entries] == [(None, 1, True), (None, 1, False)]
    with pytest.raises(ValueError, match="records no shard count .* pass count="):
        find_key_overlaps(entries, KEYS)
    assert find_key_overlaps(entries, KEYS, count=4) == [] and check_key_fences(entries, KEYS, count=4) == []


def test_checks_stay_fast_for_thousands_of_units() -> None:
    entries: list[Entry] = []
    t = 0.0
    for generation, count in enumerate((8, 16, 5, 12, 8), start=1):
        for step in range(120):
            for shard in range(count):
                entries.append(unit(f"r{shard % 5}", shard, count, generation, step // 40,
                                    t + step * 0.06 + shard * 1e-4, t + step * 0.06 + 0.05))
        t += 120 * 0.06 + 0.1
    assert len(entries) > 5000
    began = time.perf_counter()
    assert find_key_overlaps(entries, KEYS) == [] and check_key_fences(entries, KEYS) == []
    elapsed = time.perf_counter() - began
    assert elapsed < 5.0, f"key checks over {len(entries)} units x {len(KEYS)} keys took {elapsed:.2f} s"


class GenerationShard:
    """Just what the journaling handler reads from a runtime ``Shard``."""

    def __init__(self, count: int | None, generation: int | None) -> None:
        self.id = 1
        self.token = 3
        self.identity = "fake"
        self.stopped = threading.Event()
        if count is not None:
            self.count = count
        if generation is not None:
            self.generation = generation

    def valid(self) -> bool:
        return not self.stopped.is_set()


@pytest.mark.parametrize(("count", "generation", "expected"), [(16, 3, (16, 3)), (None, None, (None, 1))])
def test_the_handler_records_count_and_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  count: int | None, generation: int | None,
                                                  expected: tuple[int | None, int]) -> None:
    monkeypatch.setattr(journal, "_writer", None)
    monkeypatch.setenv(journal.ENV_DIR, str(tmp_path))
    shard = GenerationShard(count, generation)
    thread = threading.Thread(target=journal.handle, args=(shard,))
    thread.start()
    time.sleep(0.1)
    shard.stopped.set()
    thread.join(2)
    assert journal._writer is not None
    journal._writer.close()
    entries = load_journal(tmp_path)
    starts = [e for e in entries if e.kind in ("work", "handler_start")]
    assert any(e.kind == "work" for e in starts)
    assert {(e.count, e.generation) for e in starts} == {expected}
