"""The chaos checks run on a work directory alone (``python -m shardlease.harness.chaos.workdir WORK_DIR``,
``python bench/chaos.py --check WORK_DIR``): a journal, fault log and logs written by hand, judged like a
run's. The same command on a real run's directory is asserted in ``test_chaos.py`` (same verdict as the
run that wrote it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shardlease.harness.chaos import ChaosConfig
from shardlease.harness.chaos.workdir import judge_work_dir, main

#: Two shards, the key workload: small enough to write every unit by hand.
CONFIG = ChaosConfig(seed=1, shards=2, workload="keys")


def _unit(unit: int, identity: str, pid: int, shard: int, token: int, start: float, end: float) -> list[dict[str, Any]]:
    begin = {"event": "begin", "unit": unit, "t": start, "identity": identity, "pid": pid, "shard": shard,
             "token": token, "count": CONFIG.shards, "generation": 1}
    return [begin, {"event": "end", "unit": unit, "t": end, "identity": identity, "pid": pid, "shard": shard,
                    "token": token}]


def _work_dir(root: Path, units: dict[tuple[str, int], list[dict[str, Any]]],
              signals: dict[int, list[tuple[float, str]]] | None = None,
              faults: list[dict[str, Any]] | None = None, log_lines: dict[str, str] | None = None) -> Path:
    """A finished run's files: plan.json, faults.jsonl, journal/, logs/ and chaos-report.json's exits."""
    (root / "journal").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "plan.json").write_text(json.dumps({"config": CONFIG.describe(), "plan": []}, default=str))
    records = [{"t": 100.0, "offset": 0.0, "wall": "2026-01-01T00:00:00+00:00", "fault": "clear", "target": None,
                "params": {}}] + (faults or [])
    (root / "faults.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    exits = []
    for (identity, pid), lines in units.items():
        (root / "journal" / f"{identity}.{pid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        log = root / "logs" / f"{identity}.log"
        log.write_text((log_lines or {}).get(identity, "2026-01-01T00:00:01.000Z INFO    shardlease stopped\n"))
        sent = (signals or {}).get(pid, [(200.0, "SIGTERM")])
        exits.append({"identity": identity, "pid": pid, "code": 0, "signals": [name for _, name in sent],
                      "signal_times": [[at, name] for at, name in sent], "log": str(log)})
    (root / "chaos-report.json").write_text(json.dumps({"exits": exits}))
    return root


def test_a_clean_journal_passes(tmp_path: Path) -> None:
    units = {("a", 11): _unit(1, "a", 11, 0, 1, 10.0, 10.05) + _unit(2, "a", 11, 0, 1, 10.1, 10.15),
             ("b", 12): _unit(1, "b", 12, 1, 1, 10.0, 10.05)}
    verdict = judge_work_dir(_work_dir(tmp_path, units))
    assert verdict.ok, verdict.failures
    assert verdict.figures["units"] == 3


def test_a_planted_overlap_is_a_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two processes working on shard 0 at once, neither frozen: overlapping work, reported with its
    evidence, and the command exits 1."""
    units = {("a", 11): _unit(1, "a", 11, 0, 1, 10.0, 10.5) + _unit(2, "a", 11, 1, 1, 10.0, 10.05),
             ("b", 12): _unit(1, "b", 12, 0, 2, 10.2, 10.25)}
    work_dir = _work_dir(tmp_path, units)
    verdict = judge_work_dir(work_dir)
    assert verdict.failure_kinds() == {"SAFETY (overlap) shard 0": 1}, verdict.failures
    assert "simultaneous work by a (pid 11" in verdict.failures[0]
    assert main([str(work_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "SAFETY (overlap) shard 0" in out


def test_an_overlap_inside_a_freeze_is_fenced_not_failed(tmp_path: Path) -> None:
    """The same overlap when the stale process was frozen (SIGSTOP) through it, with a lower token: the
    fencing rule excuses it, from the signal times the run recorded."""
    units = {("a", 11): _unit(1, "a", 11, 0, 1, 10.0, 10.5) + _unit(2, "a", 11, 1, 1, 10.0, 10.05),
             ("b", 12): _unit(1, "b", 12, 0, 2, 10.2, 10.25)}
    frozen = {11: [(10.1, "SIGSTOP"), (10.45, "SIGCONT"), (200.0, "SIGTERM")]}
    verdict = judge_work_dir(_work_dir(tmp_path, units, signals=frozen))
    assert verdict.ok, verdict.failures
    assert verdict.figures["fenced"] == 1


def test_log_errors_and_unexpected_exits_are_failures(tmp_path: Path) -> None:
    units = {("a", 11): _unit(1, "a", 11, 0, 1, 10.0, 10.05) + _unit(2, "a", 11, 1, 1, 10.0, 10.05)}
    work_dir = _work_dir(tmp_path, units, log_lines={"a": "2026-01-01T00:00:01.000Z ERROR   shardlease boom\n"})
    report = json.loads((work_dir / "chaos-report.json").read_text())
    report["exits"][0].update(signals=[], signal_times=[], code=1)  # never told to stop, yet it exited
    (work_dir / "chaos-report.json").write_text(json.dumps(report))
    verdict = judge_work_dir(work_dir)
    assert set(verdict.failure_kinds()) == {"EXIT", "LOG ERROR"}, verdict.failures


def test_a_directory_that_is_not_a_run_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert "plan.json: missing" in capsys.readouterr().err
