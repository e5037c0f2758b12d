"""The handler every shardlease replica in the benchmark runs: hold the shard, do nothing.

Why not the journaling handler: it writes a line per unit of work per shard, which at 1,024 shards
would measure file I/O instead of the runtime. A handler that just waits for ``stopped`` costs one
parked thread per held shard, the least any real handler costs, and returns at once when revoked, so
handoff times show the protocol and not a slow handler.
"""

from __future__ import annotations

from typing import Any


def handle(shard: Any) -> None:
    """Wait until the shard is revoked (``stopped`` is a ``threading.Event``)."""
    shard.stopped.wait()
