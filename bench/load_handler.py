"""A light handler for the live load bench (``bench/run.py load --live``): it only reports a load.

Each shard reports ``table[shard]`` from the comma-separated file ``$LOAD_FILE`` (shards past the end
cost 1) every ``$LOAD_INTERVAL`` seconds (default 1), re-reading the file each time so the bench can
shift the loads while the group runs. With ``LOAD_REPORT=0`` it reports nothing, which leaves the group
on the count-only assignment: the baseline. No journal and no simulated work, so that 256 shards on a
2-core machine cost the replicas as little CPU as possible and the figures show the protocol.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any


def _load_of(shard_id: int) -> float:
    try:
        text = Path(os.environ["LOAD_FILE"]).read_text()
    except (KeyError, OSError):
        return 1.0
    table = [float(v) for v in text.strip().split(",") if v]
    return table[shard_id] if shard_id < len(table) else 1.0


def handle(shard: Any) -> None:
    """Report the shard's load until the runtime stops it (or nothing, with ``LOAD_REPORT=0``)."""
    stopped: threading.Event = shard.stopped
    if os.environ.get("LOAD_REPORT", "1") == "0":
        stopped.wait()
        return
    interval = float(os.environ.get("LOAD_INTERVAL", "1"))
    shard.report_load(_load_of(shard.id))
    while not stopped.wait(interval):
        shard.report_load(_load_of(shard.id))
