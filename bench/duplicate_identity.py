"""Several processes started with one identity: overlapping work and log volume.

Usage::

    python bench/duplicate_identity.py --processes 2 --seconds 12

Starts a dev-server and N ``shardlease run`` processes that all use ``--identity same`` (8 shards, lease
3 s, renew deadline 2 s, retry 0.5 s, the journaling handler checking ``shard.valid()`` around each
unit), lets them run, stops them, and counts overlapping work intervals of different processes on one
shard, fencing-token violations, the highest token and the log lines per process per second. Writes
``bench/results/duplicate_identity.json``. Runs against whatever shardlease is importable, so the same
command measures an older checkout too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from shardlease.harness.journal import check_tokens, find_overlaps  # noqa: E402
from shardlease.harness.localcluster import LocalCluster, Timings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "duplicate_identity.json"))
    args = parser.parse_args()
    timings = Timings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
    with LocalCluster(group="dup", shards=8, timings=timings, env={"SHARDLEASE_JOURNAL_WORK": "0.05"}) as cluster:
        cluster.start()
        replicas = [cluster.add_replica("same") for _ in range(args.processes)]
        time.sleep(args.seconds)
        snapshot = cluster.snapshot()
        cluster.stop(grace=10.0)
        entries = cluster.journal()
    overlaps = find_overlaps(entries)
    tokens = [e.token for e in entries if e.kind == "work" and isinstance(e.token, int)]
    lines = {r.pid: len(r.log_text().splitlines()) for r in replicas}
    result = {
        "processes": args.processes, "seconds": args.seconds,
        "overlaps": len(overlaps), "token_violations": len(check_tokens(entries)),
        "max_token": max(tokens, default=None),
        "working_processes": len({e.pid for e in entries if e.kind == "work"}),
        "shards_held_at_end": len([s for s, h in snapshot.holders().items() if h]),
        "log_lines_per_second": {str(pid): round(n / args.seconds, 1) for pid, n in lines.items()},
        "exit_codes": [r.returncode for r in replicas],
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
