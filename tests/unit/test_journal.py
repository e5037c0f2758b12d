"""The journaling handler and its checkers, on synthetic journals and a fake shard."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardlease.harness import journal
from shardlease.harness.journal import (
    Entry,
    JournalError,
    assert_no_overlaps,
    assert_tokens_increase,
    check_tokens,
    find_overlaps,
    handler_starts,
    last_work_end,
    load_journal,
    shard_history,
    takeovers,
)


def work(identity: str, shard: int, token: Any, start: float, end: float, pid: int = 0) -> Entry:
    return Entry(kind="work", identity=identity, pid=pid or hash(identity) % 10000, shard=shard,
                 token=token, start=start, end=end, source="synthetic")


def write_lines(path: Path, records: list[dict[str, Any]], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")


# ---------------------------------------------------------------- overlaps


def test_sequential_holders_do_not_overlap() -> None:
    entries = [work("a", 0, 1, 0.0, 1.0), work("b", 0, 2, 1.0, 2.0), work("a", 0, 3, 2.5, 3.0)]
    assert find_overlaps(entries) == []


def test_overlap_between_replicas_is_found_with_evidence() -> None:
    a, b = work("a", 3, 1, 10.0, 10.05), work("b", 3, 2, 10.04, 10.09)
    overlaps = find_overlaps([b, a])
    assert len(overlaps) == 1
    (o,) = overlaps
    assert (o.first, o.second) == (a, b)
    assert o.seconds == pytest.approx(0.01)
    text = str(o)
    assert "shard 3" in text and "10.0 ms" in text and "by a" in text and "by b" in text
    with pytest.raises(AssertionError, match="overlapping work: 1 found"):
        assert_no_overlaps([a, b])


def test_same_process_and_other_shards_never_overlap() -> None:
    entries = [work("a", 0, 1, 0.0, 1.0), work("a", 0, 1, 0.5, 1.5),  # same process
               work("b", 1, 1, 0.2, 0.8)]  # other shard
    assert find_overlaps(entries) == []


def test_overlap_found_behind_a_long_unit() -> None:
    # The long unit of "a" covers several short units of "b"; each of them is an overlap.
    entries = [work("a", 0, 1, 0.0, 5.0), work("b", 0, 2, 1.0, 1.1), work("b", 0, 2, 2.0, 2.1)]
    assert len(find_overlaps(entries)) == 2


def test_handler_events_are_not_work() -> None:
    start = Entry(kind="handler_start", identity="a", pid=1, shard=0, token=1, start=0.5, end=0.5)
    assert find_overlaps([work("b", 0, 2, 0.0, 1.0), start]) == []


# ---------------------------------------------------------------- tokens


def test_increasing_tokens_pass() -> None:
    entries = [work("a", 0, 1, 0, 1), work("a", 0, 1, 1, 2), work("b", 0, 2, 3, 4),
               work("a", 0, 5, 5, 6), work("c", 1, 1, 0, 1)]
    assert check_tokens(entries) == []
    assert_tokens_increase(entries)


def test_token_reused_by_another_holder() -> None:
    entries = [work("a", 0, 4, 0, 1), work("b", 0, 4, 2, 3)]
    (v,) = check_tokens(entries)
    assert "reused" in v.problem and v.earlier.identity == "a" and v.later.identity == "b"


def test_token_going_backwards_and_stale_work() -> None:
    entries = [work("a", 0, 4, 0, 1), work("b", 0, 5, 2, 3), work("a", 0, 4, 3.5, 4)]
    (v,) = check_tokens(entries)
    assert "backwards" in v.problem and v.later.identity == "a"
    with pytest.raises(AssertionError, match="shard 0 history"):
        assert_tokens_increase(entries)


def test_numeric_strings_compare_as_numbers() -> None:
    assert check_tokens([work("a", 0, "9", 0, 1), work("b", 0, "10", 2, 3)]) == []


def test_missing_token_is_a_violation() -> None:
    (v,) = check_tokens([work("a", 0, None, 0, 1)])
    assert v.problem == "no fencing token"


# ---------------------------------------------------------------- files


def test_load_pairs_begin_and_end_and_tolerates_torn_tail(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.1.jsonl", [
        {"event": "handler_start", "identity": "a", "pid": 1, "shard": 2, "token": 7, "t": 1.0},
        {"event": "begin", "unit": 0, "identity": "a", "pid": 1, "shard": 2, "token": 7, "t": 1.1,
         "work": 0.05},
        {"event": "end", "unit": 0, "identity": "a", "pid": 1, "shard": 2, "token": 7, "t": 1.15,
         "aborted": False},
        {"event": "begin", "unit": 1, "identity": "a", "pid": 1, "shard": 2, "token": 7, "t": 1.2,
         "work": 0.05},
    ], tail='{"event": "end", "unit": 1, "ide')  # SIGKILL mid-write
    write_lines(tmp_path / "b.2.jsonl", [
        {"event": "begin", "unit": 0, "identity": "b", "pid": 2, "shard": 2, "token": 8, "t": 2.0,
         "work": 0.05},
        {"event": "end", "unit": 0, "identity": "b", "pid": 2, "shard": 2, "token": 8, "t": 2.05,
         "aborted": True},
    ])
    entries = load_journal(tmp_path)
    kinds = [(e.kind, e.identity, e.complete) for e in entries]
    assert kinds == [("handler_start", "a", True), ("work", "a", True), ("work", "a", False),
                     ("work", "b", True)]
    unfinished = entries[2]
    assert unfinished.end == pytest.approx(1.25)  # begin + declared unit length: the cautious end
    assert entries[3].aborted
    assert handler_starts(entries) == {(2, "a"): 1}
    assert find_overlaps(entries) == [] and check_tokens(entries) == []
    assert "a (pid 1) token 7, 2 units" in shard_history(entries, 2)


def test_damage_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.1.jsonl").write_text('garbage\n{"event": "handler_start"}\n')
    with pytest.raises(JournalError, match="x.1.jsonl:1"):
        load_journal(tmp_path)


# ---------------------------------------------------------------- the handler


class FakeShard:
    def __init__(self, shard_id: int, token: int, valid_for: float) -> None:
        self.id = shard_id
        self.count = 4
        self.token = token
        self.identity = "fake-replica"
        self.stopped = threading.Event()
        self._valid_until = time.monotonic() + valid_for

    def valid(self) -> bool:
        return time.monotonic() < self._valid_until and not self.stopped.is_set()


@pytest.fixture
def journal_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(journal.ENV_DIR, str(tmp_path))
    monkeypatch.setenv(journal.ENV_WORK, "0.02")
    monkeypatch.setattr(journal, "_writer", None)
    yield tmp_path
    if journal._writer is not None:
        journal._writer.close()


def test_handler_works_only_while_valid_and_records_everything(journal_env: Path) -> None:
    shard = FakeShard(1, 3, valid_for=0.3)
    thread = threading.Thread(target=journal.handle, args=(shard,))
    thread.start()
    time.sleep(0.5)  # validity ran out at 0.3 s; the handler must have stopped working
    shard.stopped.set()
    thread.join(2)
    assert not thread.is_alive()

    entries = load_journal(journal_env)
    units = [e for e in entries if e.kind == "work"]
    assert len(units) >= 3
    assert all(e.identity == "fake-replica" and e.token == 3 and e.complete for e in units)
    valid_until = shard._valid_until
    # No unit starts after validity ended, and each stops within about a slice of it.
    assert all(e.start < valid_until for e in units)
    assert max(e.end for e in units) < valid_until + 0.05
    assert [e.kind for e in entries if e.kind != "work"] == ["handler_start", "handler_stop"]
    stop = entries[-1]
    assert stop.extra["units"] == len(units) and stop.extra["reason"] == "stopped"


def test_handler_refuses_to_run_without_a_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(journal.ENV_DIR, raising=False)
    monkeypatch.setattr(journal, "_writer", None)
    with pytest.raises(RuntimeError, match=journal.ENV_DIR):
        journal.handle(FakeShard(0, 1, 1.0))


def test_takeovers_and_last_work_end() -> None:
    def start(identity: str, shard: int, t: float) -> Entry:
        return Entry(kind="handler_start", identity=identity, pid=1, shard=shard, token=1, start=t, end=t)

    entries = [start("a", 0, 1.0), work("a", 0, 1, 1.0, 4.9), start("b", 0, 5.5), start("c", 0, 7.0),
               start("a", 1, 1.0)]
    found = takeovers(entries, [0, 1], previous="a", after=5.0)
    assert found[0] is not None and found[0].identity == "b" and found[1] is None
    assert last_work_end(entries, 0, "a") == 4.9 and last_work_end(entries, 0, "b") is None


def test_lingering_handler_keeps_working_after_stop(journal_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(journal.ENV_LINGER, "0.2")
    shard = FakeShard(2, 5, valid_for=60)
    thread = threading.Thread(target=journal.handle, args=(shard,))
    thread.start()
    time.sleep(0.1)
    stopped_at = time.monotonic()
    shard.stopped.set()
    thread.join(2)
    units = [e for e in load_journal(journal_env) if e.kind == "work"]
    lingering = [e for e in units if e.extra.get("linger")]
    assert lingering and all(e.start >= stopped_at - 0.001 for e in lingering)
    assert max(e.end for e in units) >= stopped_at + 0.19
    assert "lingering after stop" in lingering[0].describe()
