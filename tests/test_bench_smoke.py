"""Smoke test of the benchmark suite: ``bench/run.py --quick`` end to end, as a user would run it.

Why a subprocess: the entry point is a script that starts a dev-server and replica processes and
cleans them up; running it as one proves the command in docs/benchmarks.md works, that it writes the
JSON every scenario promises, and that it leaves no process behind. The values are checked for
sanity (right signs, right order of magnitude, the baseline's known behaviour), not for speed: a
loaded CI machine must not fail it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: Whole benchmark runs take minutes: they run in the slower tier (`pytest -m slow`, which .ci/run runs
#: after the default run), not in the README's default test command.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {"balance", "cold-start", "handoff", "failover", "scale-up", "api-cost", "replica-cost"}


def _leftovers(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (the run's work directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found


def _bench(*args: str, timeout: float) -> float:
    """Run ``bench/run.py ARGS`` as a user would; assert it succeeded and return how long it took."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]
    return time.monotonic() - started


def test_quick_suite_end_to_end(tmp_path: Path) -> None:
    elapsed = _bench("--quick", "--out", str(tmp_path), "--docs", "no", timeout=240)
    assert elapsed < 120, f"the quick suite took {elapsed:.0f} s"

    suite = json.loads((tmp_path / "suite.json").read_text())
    assert (tmp_path / "suite.md").read_text().startswith("# shardlease benchmark suite")
    scenarios = suite["scenarios"]
    assert set(scenarios) >= SCENARIOS, sorted(scenarios)
    assert suite["meta"]["quick"] is True
    if os.path.isdir("/proc"):
        assert not _leftovers(suite["meta"]["work_dir"]), "processes left behind"

    lease = suite["meta"]["profiles"]["scaled"]["lease_duration"]
    assert scenarios["balance"]["cells"], "balance summary is empty"

    def result(name: str, impl: str) -> dict:
        value = scenarios[name]["scaled"][impl]
        assert "error" not in value, f"{name}/{impl}: {value.get('error')}\n{value.get('logs', '')}"
        return value

    ours, base = result("cold-start", "shardlease"), result("cold-start", "baseline")
    for r in (ours, base):
        assert 0 < r["all_held_s"] < 60
    shards, replicas = ours["shards"], ours["replicas"]
    best = math.ceil(shards / replicas) / (shards / replicas)
    assert ours["load"]["peak_over_mean"] <= best + 1e-6  # bounded loads: the best whole shards allow
    assert ours["balanced_s"] >= ours["all_held_s"] - 1e-6

    ours, base = result("handoff", "shardlease"), result("handoff", "baseline")
    assert ours["all_reheld"] and base["all_reheld"]
    assert ours["reheld"]["n"] == ours["victim_shards"] > 0
    assert ours["released"] == ours["victim_shards"]  # graceful: every Lease handed back
    assert 0 <= ours["reheld"]["max"] < lease
    assert base["released"] == 0  # the elector has no release: peers wait out the lease
    assert base["reheld"]["p50"] > 0.5 * lease

    ours, base = result("failover", "shardlease"), result("failover", "baseline")
    for r in (ours, base):
        assert r["all_reheld"] and r["reheld"]["n"] > 0
        assert 0 < r["reheld"]["max"] < lease + 5

    ours, base = result("scale-up", "shardlease"), result("scale-up", "baseline")
    assert ours["newcomer_load_mean"] > 0
    assert base["newcomer_load_mean"] == 0  # no balancing: a latecomer never wins an election

    ours, base = result("api-cost", "shardlease"), result("api-cost", "baseline")
    assert ours["get_per_s"] == 0
    assert 0 < ours["puts_per_held_lease_per_interval"] <= 1.1
    assert base["get_per_s"] > 0

    for impl in ("shardlease", "baseline"):
        r = result("replica-cost", impl)
        assert r["renewals"] > 0 and r["cpu_ms_per_renewal"] > 0
        assert 10 < r["peak_rss_mib"] < 4096

    comparison = suite["comparison"]
    assert {"cold-start", "handoff", "failover", "scale-up", "api-cost", "replica-cost"} <= set(comparison)
    assert any(t["target"] == "steady state: zero GETs" and t["met"] for t in suite["targets"])


def test_quick_api_cost_on_the_real_kube_apiserver(tmp_path: Path) -> None:
    """``--server real``: the API-cost scenario on etcd + kube-apiserver, counted by the server's own
    ``apiserver_request_total`` (the dev-server's counters do not exist there), the baseline on the
    same server, results in ``suite_real.*`` only, no process left behind. Skips without the
    assets (fails under CI=true)."""
    from shardlease.testing import require_kube_assets

    assets = require_kube_assets()
    _bench("--server", "real", "--kube-assets", str(assets), "--quick", "api-cost", "--out", str(tmp_path),
           "--docs", "no", "--no-plots", timeout=180)
    assert not (tmp_path / "suite.json").exists(), "the real-server run must not write the dev-server's suite"
    suite = json.loads((tmp_path / "suite_real.json").read_text())
    assert suite["meta"]["server"]["kind"] == "real"
    assert (tmp_path / "suite_real.md").read_text().startswith("# shardlease benchmark suite on a real kube-apiserver")
    if os.path.isdir("/proc"):
        assert not _leftovers(suite["meta"]["work_dir"]), "processes left behind"

    runs = suite["scenarios"]["api-cost"]["scaled"]
    for impl in ("shardlease", "baseline"):
        assert "error" not in runs[impl], runs[impl].get("error")
        assert runs[impl]["server"] == "real"
        assert runs[impl]["server_cpu_cores"] is not None and runs[impl]["server_cpu_cores"] > 0
    ours, base = runs["shardlease"], runs["baseline"]
    assert ours["get_per_s"] == 0  # one watch per replica, no polling, on kube-apiserver too
    assert 0 < ours["puts_per_held_lease_per_interval"] <= 1.1
    assert base["get_per_s"] > 0  # every elector polls with a GET


def test_object_events_bench_server_filtering_sends_each_replica_less(tmp_path: Path) -> None:
    """``bench/object_events.py`` at tiny sizes, as a user runs it: it writes the JSON and Markdown it
    promises, and with 2 replicas the server-filtered replicas receive less of the churn than the
    client-filtered ones (about half against all of it), every update reaching its shard's holder once."""
    out = tmp_path / "object_events"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "object_events.py"), "--objects", "40", "--replicas", "2",
         "--modes", "server,client", "--churn", "20", "--duration", "1.5", "--shards", "8", "--seed", "7",
         "--out", str(out), "--docs", "no"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]
    assert "reproduce: python bench/object_events.py --objects 40" in proc.stdout
    assert elapsed < 45, f"the tiny object_events run took {elapsed:.0f} s"

    doc = json.loads(out.with_name("object_events.json").read_text())
    assert out.with_name("object_events.md").read_text().startswith("# Items received per replica")
    assert doc["meta"]["seed"] == 7 and doc["meta"]["objects"] == 40
    cells = {r["mode"]: r for r in doc["results"]}
    assert set(cells) == {"server", "client"}, doc["results"]
    for r in cells.values():
        assert "error" not in r, r
        for key in ("updates", "received", "received_stats", "share_stats", "initial_list_items",
                    "lists_before_churn", "lists_in_window", "delivery", "cpu_s_whole_process", "server_filtering"):
            assert key in r, (r["mode"], key)
        assert r["replicas"] == 2 and r["updates"] > 0
        assert r["delivery"]["to_holder_exactly_once"] == r["updates"], r["delivery"]
    server, client = cells["server"], cells["client"]
    assert all(server["server_filtering"].values()) and not any(client["server_filtering"].values())
    assert server["received_stats"]["max"] < client["received_stats"]["min"], (server["received"], client["received"])
    assert client["share_stats"]["min"] == 1.0  # without the gate every replica reads the whole churn


def test_quick_scale_scenario(tmp_path: Path) -> None:
    """``bench/run.py scale --quick``: the scale scenario's figures exist and are sane, and the watch
    events each replica receives follow the targeted-watch model (N + W) / interval rather than every
    renewal of the group; the baseline polls, shardlease does not; nothing is left running."""
    elapsed = _bench("scale", "--quick", "--out", str(tmp_path), "--docs", "no", "--no-plots", timeout=180)
    assert elapsed < 120, f"the quick scale scenario took {elapsed:.0f} s"
    data = json.loads((tmp_path / "scale.json").read_text())
    assert (tmp_path / "scale.md").read_text().startswith("# Scale: cost as shards and replicas grow")
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert "scale" in suite["scenarios"]
    if os.path.isdir("/proc"):
        assert not _leftovers(suite["meta"]["work_dir"]), "processes left behind"

    cases = {(c["impl"], c["replicas"], c["shards"]): c for c in data["cases"]}
    for case in cases.values():
        assert "error" not in case, case.get("error")
        assert case["held"] == case["shards"]
        assert case["holder_changes"] == 0
        assert case["missed_renewals"] == 0
        # a loaded CI machine may fall behind the schedule, but not by half, nor exceed it
        assert 0.5 * case["api_writes_per_s_asked"] <= case["api_writes_per_s"] <= 1.2 * case["api_writes_per_s_asked"]
        assert case["cpu_ms_per_renewal"] > 0
    ours = [c for (impl, _, _), c in cases.items() if impl == "shardlease"]
    assert ours and all(c["api_gets_per_s"] == 0 and c["losses"] == 0 for c in ours)
    assert all(c["api_gets_per_s"] > 0 for (impl, _, _), c in cases.items() if impl == "baseline")

    group = max(ours, key=lambda c: c["replicas"])
    interval = group["renew_interval_s"]
    narrow = [r for r in group["per_replica"] if r["watched_shards_model"] < group["shards"]]
    assert narrow, "the quick plan should have a case where a replica watches only part of the shards"
    for r in group["per_replica"]:
        assert r["watch_events_per_s"] <= 1.25 * r["watch_events_per_s_model"] + 5, r
        assert r["watch_events_per_s"] >= 0.4 * r["watch_events_per_s_model"], r
    for r in narrow:  # targeted: far fewer events than one per renewal of every shard
        assert r["watch_events_per_s"] < 0.8 * (group["shards"] + group["replicas"]) / interval, r
