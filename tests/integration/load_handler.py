"""A journaling handler that reports a load per shard, for the load-aware assignment tests.

The loads are comma-separated by shard index (shards beyond the list cost 1), read from the file
``$LOAD_FILE`` when set (re-read every 0.2 s, so a test can shift the loads while the group runs), else
from ``$LOAD_TABLE``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from shardlease.harness import journal


def _table() -> list[float]:
    path = os.environ.get("LOAD_FILE")
    text = os.environ.get("LOAD_TABLE", "")
    if path:
        try:
            text = Path(path).read_text()
        except OSError:
            text = ""
    return [float(v) for v in text.strip().split(",") if v]


def _load_of(shard_id: int) -> float:
    table = _table()
    return table[shard_id] if shard_id < len(table) else 1.0


def handle(shard: journal._ShardLike) -> None:
    report = shard.report_load  # type: ignore[attr-defined]
    report(_load_of(shard.id))
    if os.environ.get("LOAD_FILE"):
        stopped: threading.Event = shard.stopped

        def keep_reporting() -> None:
            while not stopped.wait(0.2):
                report(_load_of(shard.id))

        threading.Thread(target=keep_reporting, name=f"load-{shard.id}", daemon=True).start()
    journal.handle(shard)
