"""Smoke test of ``bench/run.py fencing --quick``, as docs/fencing.md tells users to run it: it starts
its own kube-apiserver, writes fencing.json and fencing.md, and its figures make sense (fenced writes
accepted, stale writes refused within a bounded window). Values are not judged for speed: the machine
is shared. Slow tier (~20 s); fails under CI=true without the server's binaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shardlease.testing import require_kube_assets

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fencing_bench_quick_writes_its_results(tmp_path: Path) -> None:
    assets = require_kube_assets()
    done = subprocess.run([sys.executable, "bench/run.py", "fencing", "--quick", "--out", str(tmp_path)], cwd=REPO,
                          env={**os.environ, "KUBEBUILDER_ASSETS": str(assets)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "fencing.json").read_text())["results"]
    assert set(results["counts"]) == {"8", "16"}
    for row in results["counts"].values():
        assert row["latency"]["fenced"]["n"] == 30 and row["latency"]["fenced"]["median_ms"] > 0
        assert 0 < row["window_ms"]["median_ms"] < 5000  # every round ended with the stale write refused
    assert "| 16 |" in (tmp_path / "fencing.md").read_text()
