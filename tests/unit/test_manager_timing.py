"""Manager retry timing that is not part of ``decide``: honouring Retry-After while a Lease is held."""

from __future__ import annotations

import pytest

from shardlease.config import ShardConfig
from shardlease.core.elector import Timing, backoff, held_retry_at
from shardlease.errors import ServerError, Throttled
from shardlease.runtime.manager import ShardManager


@pytest.fixture()
def manager() -> ShardManager:
    config = ShardConfig(group="g", shards=2, namespace="default", identity="me", lease_duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
    return ShardManager(config, lambda shard: None)


def test_retry_after_is_honoured_while_the_deadline_is_far(manager: ShardManager) -> None:
    throttled = Throttled("429", status=429, retry_after=3.0)
    delay = backoff(1, throttled, manager._timing, held=True)
    assert delay == 3.0
    assert held_retry_at(102.0, 100.0, delay, Timing.from_config(manager.config)) == 105.0


def test_unheld_backoff_grows_and_is_jittered(manager: ShardManager) -> None:
    err = ServerError("503", status=503)
    values = [backoff(n, err, manager._timing, held=False) for n in (1, 2, 3, 4, 5, 9)]
    assert all(0 < v <= 15.0 for v in values)
    assert max(backoff(9, err, manager._timing, held=False) for _ in range(50)) > 2.0
