"""The pod benchmark's report (bench/node.py) and its entry in bench/run.py, without a node.

Running the benchmark needs root and the local node, which only one job at a time may start (the e2e
tier holds it); what a user reads from it can be checked on a stored result: the side-by-side table in
docs/benchmarks.md pairs each pod figure with the process-based one at the same timings, the section is
replaced in place between its markers, and ``bench/run.py --server node`` refuses what it cannot do.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import node  # noqa: E402


def result() -> dict[str, Any]:
    figures = {"scale_down_handoff_s": [1.5, 2.0, 1.0], "sigkill_reacquired_s": [19.0, 18.0, 20.0],
               "rollout_restart_unowned_shard_s": [13.3, 16.8, 13.2]}
    return {"machine": {"cpus": 2, "python": "3.11", "kernel": "k", "load_avg_end": 9.0}, "rounds": 3,
            "figures": {k: {"values": v, "median": sorted(v)[1], "max": max(v)} for k, v in figures.items()},
            "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "1", "memory": "256Mi"},
                          "pods": {"podabc": {"cpu_seconds": 1.5, "peak_memory_mib": 62.0}}},
            "rollout_idle_shards": [{"round": 0, "shard": 4, "seen_at_s": [17.3], "unowned_s": 0.85,
                                     "first_seen_utc": "22:43:07"}]}


SUITE = {"scenarios": {"handoff": {"default": {"shardlease": {"reheld": {"p50": 0.034, "max": 0.049}}}},
                       "failover": {"default": {"shardlease": {"reheld": {"p50": 14.34, "max": 14.97}}}}}}


def test_pod_figures_sit_next_to_the_process_figures() -> None:
    section = node.docs_section(result(), SUITE)
    rows = {line.split(" | ")[0]: line for line in section.splitlines() if line.startswith("| ")}
    handoff = next(line for key, line in rows.items() if "(6 -> 4)" in key)
    assert "| 1.5 s | 2.0 s | graceful handoff" in handoff and "| 0.03 s | 0.05 s |" in handoff
    crash = next(line for key, line in rows.items() if "SIGKILL" in key)
    assert "| 19.0 s | 20.0 s |" in crash and "| 14.34 s | 14.97 s |" in crash
    # A figure the run did not measure is left out rather than shown empty.
    assert not any("scale --replicas 6" in key for key in rows)
    assert section.startswith(node.DOCS_BEGIN) and section.rstrip().endswith(node.DOCS_END)
    assert "load average 9.0" in section


def test_the_docs_section_is_replaced_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\nbefore\n\n{node.DOCS_BEGIN}\nold figures\n{node.DOCS_END}\n\n## After\n")
    monkeypatch.setattr(node, "DOCS_PATH", docs)
    node.write_docs(result())
    node.write_docs(result())
    text = docs.read_text()
    assert "old figures" not in text and text.count(node.DOCS_BEGIN) == 1
    assert text.startswith("# Benchmarks\n\nbefore\n\n") and text.endswith("## After\n")


def test_node_md_lists_each_idle_shard_with_its_exact_time() -> None:
    text = node.render(result())
    assert "round 1, shard 4: seen idle at 17.3 s (first at 22:43:07 UTC); unowned 0.85 s" in text


def test_run_py_server_node_takes_no_scenario() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--server", "node", "handoff"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--server node runs bench/node.py's operations" in proc.stderr, proc.stderr
