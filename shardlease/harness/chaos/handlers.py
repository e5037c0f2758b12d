"""The handlers a chaos run's replicas run (named by ``module:function`` on their command line)."""

from __future__ import annotations

import importlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from shardlease.harness.objectjournal import ENV_DRAIN

DRAINING_HANDLER = "shardlease.harness.chaos.handlers:draining_handle"


#: A handler that reports each shard's load (``$SHARDLEASE_CHAOS_LOADS``, a file the ``load_shift`` fault
#: rewrites) while it runs the handler named by ``$SHARDLEASE_CHAOS_INNER`` (``module:function``).
LOADED_HANDLER = "shardlease.harness.chaos.handlers:loaded_handle"
ENV_LOADS = "SHARDLEASE_CHAOS_LOADS"
ENV_INNER = "SHARDLEASE_CHAOS_INNER"
#: The loads file in a run's work directory: comma-separated loads by shard index.
LOADS_FILE = "loads"


def write_loads(path: Path, loads: list[float]) -> None:
    """Replace the loads file in one step (a reader never sees half of it)."""
    partial = path.with_suffix(".partial")
    partial.write_text(",".join(f"{v:g}" for v in loads))
    partial.replace(path)


def _load_of(path: str, shard_id: int) -> float:
    try:
        values = [float(v) for v in Path(path).read_text().split(",") if v]
    except (OSError, ValueError):
        return 1.0
    return values[shard_id] if shard_id < len(values) else 1.0


def loaded_handle(shard: Any) -> None:
    """Report the shard's load from the loads file every 0.2 s until it stops, and run the inner handler."""
    path = os.environ.get(ENV_LOADS, "")
    module, _, name = os.environ.get(ENV_INNER, "shardlease.harness.journal:handle").partition(":")
    inner = getattr(importlib.import_module(module), name)
    if path:
        shard.report_load(_load_of(path, shard.id))

        def keep_reporting() -> None:
            while not shard.stopped.wait(0.2):
                shard.report_load(_load_of(path, shard.id))

        threading.Thread(target=keep_reporting, name=f"chaos-load-{shard.id}", daemon=True).start()
    inner(shard)


#: The object workload's handler: a ConfigMap controller on ``shard.objects()`` (clean-up included).
OBJECT_HANDLER = "shardlease.harness.objectjournal:handle"


def draining_handle(shard: Any) -> None:
    """The journaling handler followed by ``$SHARDLEASE_CHAOS_DRAIN`` seconds of clean-up once the
    runtime stops it -- a handler that flushes or closes something before returning, which
    ``drain_timeout`` exists for. No unit of work is journaled during the clean-up (the journal's
    ``handler_stop`` is written before it), so it cannot show up as overlapping work; what it does
    is keep the Lease held by a replica that no longer works on the shard for that long."""
    from shardlease.harness.journal import handle

    try:
        handle(shard)
    finally:
        delay = float(os.environ.get(ENV_DRAIN, "0") or 0)
        if delay > 0:
            time.sleep(delay)
