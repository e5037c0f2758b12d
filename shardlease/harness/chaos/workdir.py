"""Judge a finished chaos run again from its work directory alone.

``python -m shardlease.harness.chaos.workdir WORK_DIR`` (or ``python bench/chaos.py --check WORK_DIR``)
reads what a run leaves behind -- ``plan.json`` (the settings), ``faults.jsonl`` (what was applied and
when), ``journal/`` (handler starts and stops, units of work or object writes, the run's markers),
``logs/`` and the process list in ``chaos-report.json`` (who ran, the signals the harness sent them, how
they exited) -- and runs every check that needs nothing else, with the code the live run uses
(:mod:`shardlease.harness.chaos.judge`): the safety rules over the journals, every shard of the final
generation handled, each object's final change reconciled (object workload), the exit codes, the
logs' errors and retry storms. It prints the verdict and exits 0 when they all pass, 1 otherwise.

Not rechecked, since only the live run could see them: the recovery wait against the API server
(``RECOVERY``), the final ConfigMaps on the server (``RECONCILE (API)``), the idle-holder watch, the
processes left behind (``LEFTOVER``) and the harness's own errors (``HARNESS``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shardlease.harness.chaos.checkers import PauseWindow, pause_windows
from shardlease.harness.chaos.judge import (
    Evidence,
    ProcessRecord,
    judge_exits,
    judge_key_journal,
    judge_logs,
    judge_object_journal,
    reconcile_failures,
)
from shardlease.harness.chaos.plan import ChaosConfig
from shardlease.harness.journal import load_journal
from shardlease.harness.localcluster import Timings
from shardlease.harness.objectjournal import check_reconciled, load_object_journal

__all__ = ["NOT_RECHECKED", "WorkDirVerdict", "config_from_plan", "judge_work_dir", "main"]

#: Failure kinds of a live run that its files cannot decide (see the module docstring).
NOT_RECHECKED = ("RECOVERY", "RECONCILE (API)", "LIVENESS shard", "LEFTOVER", "HARNESS")


@dataclass
class WorkDirVerdict:
    """The failures found in a work directory (empty: every recheckable check passed), and figures."""

    work_dir: Path
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def failure_kinds(self) -> dict[str, int]:
        """Failures by category, as :meth:`~shardlease.harness.chaos.report.ChaosReport.failure_kinds`."""
        kinds: dict[str, int] = defaultdict(int)
        for failure in self.failures:
            kinds[failure.split(":", 1)[0]] += 1
        return dict(kinds)

    def summary(self) -> str:
        kinds = f" {self.failure_kinds()}" if self.failures else ""
        return (f"recheck of {self.work_dir}: {'PASS' if self.ok else 'FAIL'} ({len(self.failures)} "
                f"failures{kinds}); not rechecked from files: {', '.join(NOT_RECHECKED)}")


def config_from_plan(data: dict[str, Any]) -> ChaosConfig:
    """The :class:`ChaosConfig` a run was made with, from ``plan.json``'s ``config``
    (:meth:`ChaosConfig.describe`); settings this version does not know are left out."""
    known = {f.name for f in fields(ChaosConfig)}
    values = {k: v for k, v in data.items() if k in known}
    values["timings"] = Timings(**data.get("timings", {}))
    return ChaosConfig(**values)


def _processes(root: Path, applied: Sequence[dict[str, Any]]) -> list[ProcessRecord]:
    """The replica processes, from ``chaos-report.json``; the signals' times come from its
    ``signal_times`` or, for a report written before it had them, from the fault log."""
    report = root / "chaos-report.json"
    if not report.exists():
        raise FileNotFoundError(f"{report}: missing; the run did not finish (it is written last)")
    exits = json.loads(report.read_text())["exits"]
    records = []
    for item in exits:
        times = item.get("signal_times")
        if times is None:
            times = _signals_from_fault_log(int(item["pid"]), [str(name) for name in item.get("signals", [])], applied)
        records.append(ProcessRecord(str(item["identity"]), int(item["pid"]), Path(item["log"]), item.get("code"),
                                     tuple((float(at), str(name)) for at, name in times)))
    return records


def _signals_from_fault_log(pid: int, names: Sequence[str],
                            applied: Sequence[dict[str, Any]]) -> list[tuple[float, str]]:
    """The signals a process was sent, timed by the fault log (each record is written just after its
    signal); ``names`` (all the signals, untimed) adds those the fault log does not show, such as the
    SIGTERM of the final stop, after everything."""
    timed: list[tuple[float, str]] = []
    for r in applied:
        fault, note = r.get("fault"), str(r.get("note", ""))
        if r.get("pid") != pid or note.startswith("skipped"):
            continue
        if fault == "terminate" and note.startswith("resumed first"):
            timed.append((float(r["t"]), "SIGCONT"))
        signal = {"pause": "SIGSTOP", "resume": "SIGCONT", "kill": "SIGKILL", "terminate": "SIGTERM"}.get(str(fault))
        if signal is not None:
            timed.append((float(r["t"]), signal))
    missing = Counter(names) - Counter(name for _, name in timed)
    for name in names:
        if missing[name] > 0:
            missing[name] -= 1
            timed.append((math.inf, name))
    return timed


def _operator_acts(applied: Sequence[dict[str, Any]]) -> dict[int, list[tuple[float, float]]]:
    acts: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for record in applied:
        if str(record.get("fault", "")).endswith("_lease_done"):
            params = record.get("params") or {}
            for sent, answered in params.get("acts", []):
                acts[int(params["shard"])].append((float(sent), float(answered)))
    return acts


def judge_work_dir(work_dir: str | Path) -> WorkDirVerdict:
    """Every check a finished run's files can decide, in the order the live run makes them."""
    root = Path(work_dir)
    plan = root / "plan.json"
    if not plan.exists():
        raise FileNotFoundError(f"{plan}: missing; WORK_DIR must be a chaos run's work directory (the run "
                                f"prints it as 'work dir (journal, faults.jsonl, logs)')")
    config = config_from_plan(json.loads(plan.read_text())["config"])
    faults_log = root / "faults.jsonl"
    applied = [json.loads(line) for line in faults_log.read_text().splitlines() if line.strip()] \
        if faults_log.exists() else []
    processes = _processes(root, applied)
    # The fault window's start and the wall clock, from any fault record (each has both times).
    anchor = next((r for r in applied if "offset" in r and "wall" in r), None)
    window_start = float(anchor["t"]) - float(anchor["offset"]) if anchor else 0.0
    shift = (_dt.datetime.fromisoformat(anchor["wall"]).timestamp() - float(anchor["t"])) if anchor else 0.0
    cleared = next((float(r["t"]) for r in applied if r.get("fault") == "clear"), None)
    evidence = Evidence(processes, applied, window_start, lambda mono: mono + shift, config.lease)
    reshards = sum(1 for r in applied if r.get("fault") == "reshard_done"
                   and not str(r.get("note", "")).startswith("failed"))
    duplicated = {str(r["target"]) for r in applied if r.get("fault") == "duplicate"}
    verdict = WorkDirVerdict(root)

    entries = load_journal(root / "journal")
    pauses: list[PauseWindow] = pause_windows(processes)
    journal = load_object_journal(root / "journal") if config.workload == "objects" else None
    if journal is not None:
        checked = journal.marker_records.get("reconcile_checked")
        if checked is None:
            verdict.failures.append("RECONCILE: no reconcile_checked marker: the run ended before its final check")
        else:
            problems, _ = check_reconciled(journal, entries, since=float(checked["since"]),
                                           bound=float(checked["bound"]), at=float(checked["at"]),
                                           live_pids=checked.get("live_pids"))
            verdict.failures.extend(reconcile_failures(problems))
    verdict.failures.extend(judge_exits(processes))
    logs = judge_logs(processes, duplicated)
    verdict.failures.extend(logs.failures)
    verdict.figures.update(logs.figures)
    if journal is not None:
        found = judge_object_journal(entries, journal, pauses, config, evidence, reshards=reshards,
                                     operator_acts=_operator_acts(applied))
    else:
        window = (window_start, cleared) if cleared is not None else None
        found = judge_key_journal(entries, pauses, config, evidence, reshards=reshards, window=window)
    verdict.failures.extend(found.failures)
    verdict.figures.update(found.figures)
    return verdict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shardlease.harness.chaos.workdir",
                                     description="Judge a finished chaos run again from its work directory.")
    parser.add_argument("work_dir", metavar="WORK_DIR", help="the run's work directory (plan.json, faults.jsonl, "
                                                            "journal/, logs/, chaos-report.json)")
    parser.add_argument("--limit", type=int, default=8, help="failures to print in full (8)")
    args = parser.parse_args(argv)
    try:
        verdict = judge_work_dir(args.work_dir)
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot recheck {args.work_dir}: {exc}", file=sys.stderr)
        return 2
    print(verdict.summary())
    for i, failure in enumerate(verdict.failures[:args.limit], 1):
        print(f"==== failure {i}/{len(verdict.failures)} ====\n{failure}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
