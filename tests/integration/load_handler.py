"""A journaling handler that reports a fixed load per shard (``LOAD_TABLE``: comma-separated loads by
shard index; shards beyond it cost 1), for the load-aware assignment tests."""

from __future__ import annotations

import os

from shardlease.harness import journal


def handle(shard: journal._ShardLike) -> None:
    table = [float(v) for v in os.environ.get("LOAD_TABLE", "").split(",") if v]
    shard.report_load(table[shard.id] if shard.id < len(table) else 1.0)  # type: ignore[attr-defined]
    journal.handle(shard)
