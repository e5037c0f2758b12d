"""The smallest shardlease handler: log which shards this replica holds, and nothing else.

Run it against a local dev-server (see examples/README.md)::

    shardlease run examples.minimal:handle --group demo --shards 8 --kubeconfig dev.kubeconfig

Start a second and a third copy with other ``--identity`` values and watch the shards move: each copy
logs ``took shard`` for the shards it gains and ``gave up shard`` for those it hands over.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation; the runtime passes the object in
    from shardlease import Shard

log = logging.getLogger("examples.minimal")

#: How often a held shard reports that it is still alive, in seconds. Long enough not to flood the
#: log, short enough that a human watching sees the shard being worked on.
HEARTBEAT = 10.0


def handle(shard: Shard) -> None:
    """Run while this replica holds ``shard``; return when the runtime sets ``shard.stopped``.

    The runtime calls this in a thread of its own per shard. Everything a real handler does goes inside
    the loop, in steps short enough that ``stopped`` is noticed quickly: the replica that takes the
    shard over waits until this function has returned (or the drain timeout has passed).
    """
    log.info("took shard %d/%d (token %s)", shard.id, shard.count, shard.token)
    beats = 0
    # wait() returns True as soon as the shard is revoked or the replica shuts down.
    while not shard.stopped.wait(1.0):
        beats += 1
        if beats % int(HEARTBEAT) == 0:
            log.info("working on shard %d (token %s, valid %s)", shard.id, shard.token, shard.valid())
    log.info("gave up shard %d/%d (token %s)", shard.id, shard.count, shard.token)
