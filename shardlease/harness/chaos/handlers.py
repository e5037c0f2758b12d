"""The handlers a chaos run's replicas run (named by ``module:function`` on their command line)."""

from __future__ import annotations

import os
import time
from typing import Any

from shardlease.harness.objectjournal import ENV_DRAIN

DRAINING_HANDLER = "shardlease.harness.chaos.handlers:draining_handle"


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
