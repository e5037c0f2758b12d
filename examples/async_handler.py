"""An ``async def`` handler: all shards of a replica share one event loop instead of a thread each.

Run it against a local dev-server (see examples/README.md)::

    shardlease run examples.async_handler:handle --group jobs --shards 16 --kubeconfig dev.kubeconfig

shardlease notices that the handler is a coroutine function and runs one task per held shard on a
single event-loop thread. That suits handlers that mostly wait on I/O (HTTP calls, queues, databases
with async drivers) and holds up better than threads when a replica holds hundreds of shards.

The rules differ a little from a sync handler:

* Revoking the shard sets ``shard.stopped`` **and cancels the task**: the ``CancelledError`` arrives
  at whatever ``await`` the handler is in. Clean up in ``finally`` and let the error propagate; a
  handler that swallows it keeps the shard from being released until the drain timeout.
* Never block the loop (no ``time.sleep``, no blocking client calls): every other shard of the
  replica would stall with it, renewals are not affected, but the handlers are. Push blocking work to
  ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation; the runtime passes the object in
    from shardlease import Shard

log = logging.getLogger("examples.async_handler")

#: Seconds between two batches of one shard. Short, so a test sees several batches per shard.
INTERVAL = 1.0


async def process_batch(shard: Shard, batch: int) -> int:
    """Pretend to fetch and handle one batch of this shard's work; returns how many items it handled."""
    await asyncio.sleep(random.uniform(0.01, 0.05))  # an I/O wait: other shards run meanwhile
    return random.randint(0, 5)


async def handle(shard: Shard) -> None:
    """Process this shard's work in batches until the shard is revoked or the replica stops."""
    log.info("took shard %d/%d (token %s)", shard.id, shard.count, shard.token)
    batches = items = 0
    try:
        while not shard.stopped.is_set():
            handled = await process_batch(shard, batches)
            # Results are committed only while the lease is certainly ours: the await above may have
            # lasted past a lapse of the lease (for instance a long stall of the event loop).
            if shard.valid():
                batches += 1
                items += handled
            else:
                log.warning("shard %d: lease no longer certain; dropped a batch", shard.id)
            await asyncio.sleep(INTERVAL)
    finally:
        # Runs on cancellation too; keep it short and without awaits that could be cancelled again.
        log.info("gave up shard %d/%d (token %s) after %d batches, %d items",
                 shard.id, shard.count, shard.token, batches, items)
