"""``shardlease demo``: the README's first command must show rebalancing, handoff and failover,
and must leave no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from shardlease.commands.demo import Step, parse_script
from shardlease.localcluster import child_processes


def _demo(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardlease", "demo", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def test_scripted_demo_shows_rebalance_handoff_and_failover() -> None:
    result = _demo("--replicas", "2", "--shards", "8", "--lease-duration", "2",
                   "--renew-deadline", "1.2", "--retry-period", "0.3",
                   "--script", "settle; add; settle; term; settle; kill; settle")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.count("settled:") == 4, out
    assert "settled: 3 replicas" in out and "settled: 1 replicas" in out, out
    handoff = re.search(r"SIGTERM replica-\d: its \d+ shards re-held by others ([\d.]+) s", out)
    failover = re.search(r"SIGKILL replica-\d: its \d+ shards re-held by others ([\d.]+) s", out)
    assert handoff and failover, out
    # Graceful handoff does not wait for the lease; a crash cannot be noticed before it expires
    # (the killed replica renewed at most one retry period before the signal).
    assert float(handoff.group(1)) < 2.0, out
    assert 2.0 - 0.3 <= float(failover.group(1)) < 2.0 + 10, out
    assert "no shard ever ran in two replicas at once" in out, out


def test_demo_stops_every_process_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "shardlease", "demo", "--replicas", "2", "--shards", "4",
         "--script", "wait 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(child_processes(process.pid)) < 2:
            time.sleep(0.1)
        replicas = child_processes(process.pid)
        assert len(replicas) >= 2, "the demo did not start its replicas"
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for pid in replicas:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z", \
            f"replica process {pid} outlived the demo"


def test_script_parsing_names_the_bad_step() -> None:
    assert parse_script("settle; add, wait 1.5; term replica-1; kill") == [
        Step("settle"), Step("add"), Step("wait", "1.5"), Step("term", "replica-1"), Step("kill")]
    with pytest.raises(ValueError, match=r"cannot read step 'explode'.*'add'"):
        parse_script("add; explode")
    with pytest.raises(ValueError, match="'wait' needs seconds"):
        parse_script("wait soon")


def test_bad_script_fails_before_starting_anything() -> None:
    result = _demo("--script", "add; jump", timeout=30)
    assert result.returncode == 2
    assert "cannot read step 'jump'" in result.stderr
